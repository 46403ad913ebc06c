//! gzip on every core, the same bytes whatever the number of threads: pigz's construction.
//! The input is cut into blocks of a fixed size; each block is compressed on its own as raw
//! deflate, primed with the 32 KiB of input before it as its dictionary, and ended with a sync
//! flush (an empty stored block, so the next block starts on a byte boundary); the last block
//! ends the stream. The blocks concatenated are one deflate stream, wrapped in one gzip member
//! with the CRC-32 and length of the whole input. Which thread compresses a block changes
//! nothing in its bytes, so the output — and the layer's digest — depends only on the input,
//! the level and the deflate implementation (zlib-rs, pinned by Cargo.lock).

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress, Status};

/// Input per block: pigz's default.
pub const BLOCK: usize = 128 * 1024;
/// The window deflate can refer back to: each block is primed with this much of the input
/// before it.
const DICTIONARY: usize = 32 * 1024;
/// gzip's fixed header: no name, no time (0), no extra flags, OS unknown (as Go writes it).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// A writer that compresses into `inner` as gzip on `threads` threads.
pub struct ParallelGz<W: Write> {
    inner: W,
    level: u32,
    threads: usize,
    /// Input not yet compressed: whole blocks, and the start of the next.
    pending: Vec<u8>,
    /// The last `DICTIONARY` bytes of input already compressed.
    dictionary: Vec<u8>,
    crc: crc32fast::Hasher,
    size: u64,
    header_written: bool,
}

impl<W: Write> ParallelGz<W> {
    pub fn new(inner: W, level: u32, threads: usize) -> ParallelGz<W> {
        ParallelGz {
            inner,
            level: level.min(9),
            threads: threads.max(1),
            pending: Vec::with_capacity(BLOCK * (threads.max(1) + 1)),
            dictionary: Vec::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
            header_written: false,
        }
    }

    /// Compresses up to `count` blocks from the front of `pending` and writes them in order;
    /// with `last`, the final one ends the stream.
    fn compress_blocks(&mut self, count: usize, last: bool) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&HEADER)?;
            self.header_written = true;
        }
        let data = &self.pending[..(count * BLOCK).min(self.pending.len())];
        let blocks: Vec<&[u8]> = if data.is_empty() { vec![data] } else { data.chunks(BLOCK).collect() };
        let n = blocks.len();
        let level = self.level;
        let mut primes = Vec::with_capacity(n);
        for i in 0..n {
            primes.push(if i == 0 {
                self.dictionary.as_slice()
            } else {
                let before = blocks[i - 1];
                &before[before.len().saturating_sub(DICTIONARY)..]
            });
        }
        let outputs: Vec<io::Result<Vec<u8>>> = std::thread::scope(|scope| {
            let work: Vec<_> = blocks
                .iter()
                .zip(&primes)
                .enumerate()
                .map(|(i, (block, prime))| {
                    let is_last = last && i + 1 == n;
                    std::thread::Builder::new().spawn_scoped(scope, move || deflate_block(block, prime, level, is_last))
                })
                .collect();
            work.into_iter()
                .map(|h| match h {
                    Ok(h) => h.join().unwrap_or_else(|_| Err(io::Error::other("a compression thread panicked"))),
                    Err(e) => Err(e),
                })
                .collect()
        });
        for out in outputs {
            self.inner.write_all(&out?)?;
        }
        let used = data.len();
        let tail = &self.pending[used.saturating_sub(DICTIONARY)..used];
        if used >= DICTIONARY {
            self.dictionary = tail.to_vec();
        } else {
            self.dictionary.extend_from_slice(tail);
            let excess = self.dictionary.len().saturating_sub(DICTIONARY);
            self.dictionary.drain(..excess);
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// Ends the stream (the last block, then CRC-32 and length) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        // At most `threads` blocks at a time; the last batch ends the stream.
        while self.pending.len() > self.threads * BLOCK {
            self.compress_blocks(self.threads, false)?;
        }
        self.compress_blocks(self.threads, true)?;
        self.inner.write_all(&self.crc.clone().finalize().to_le_bytes())?;
        self.inner.write_all(&(self.size as u32).to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        self.crc.update(buf);
        self.size += buf.len() as u64;
        // A batch goes once there is more input after it: a block is known not to be the last
        // only when something follows it.
        while self.pending.len() > self.threads * BLOCK {
            self.compress_blocks(self.threads, false)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One block as raw deflate, primed with `dictionary`: ended by a sync flush, or (the last
/// block) by the end of the stream.
fn deflate_block(block: &[u8], dictionary: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dictionary.is_empty() {
        c.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    let mut out = Vec::with_capacity(block.len() / 2 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let status = c.compress_vec(&block[consumed..], &mut out, flush).map_err(io::Error::other)?;
        let done = c.total_in() as usize == block.len();
        match status {
            Status::StreamEnd => return Ok(out),
            // A sync flush is complete once all input is in and the output did not fill up.
            Status::Ok | Status::BufError if !last && done && out.len() < out.capacity() => return Ok(out),
            Status::Ok | Status::BufError => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], level: u32, threads: usize, write_size: usize) -> Vec<u8> {
        let mut w = ParallelGz::new(Vec::new(), level, threads);
        for piece in data.chunks(write_size.max(1)) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    /// Text-like bytes that compress, with some noise.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if i % 7 == 0 { (x >> 56) as u8 } else { b"lib/x86_64-linux-gnu/libc.so.6 "[i % 31] }
            })
            .collect()
    }

    #[test]
    fn the_same_bytes_on_1_2_and_8_threads_and_gunzip_reads_them_back() {
        for len in [0, 1, 1000, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK, 5 * BLOCK + 12_345] {
            let data = sample(len, len as u64);
            let one = gzip(&data, 6, 1, 64 * 1024);
            assert_eq!(gunzip(&one), data, "len {len}");
            for threads in [2, 8] {
                for write_size in [1000, 200_000] {
                    assert_eq!(gzip(&data, 6, threads, write_size), one, "len {len}, {threads} threads");
                }
            }
        }
    }

    #[test]
    fn blocks_refer_back_across_their_boundary() {
        // 16 KiB of noise, repeated over four blocks: one stream stores it once; blocks primed
        // with the input before them do too, where unprimed ones would store it once a block.
        let noise: Vec<u8> = (0..16 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let data: Vec<u8> = noise.iter().copied().cycle().take(4 * BLOCK).collect();
        let gz = gzip(&data, 6, 2, BLOCK);
        assert_eq!(gunzip(&gz), data);
        let mut one = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        one.write_all(&data).unwrap();
        let one = one.finish().unwrap();
        assert!(gz.len() < one.len() + 2048, "parallel {} bytes, one stream {}", gz.len(), one.len());
    }

    proptest::proptest! {
        // Each case compresses up to 384 KiB twice, unoptimised in tests: fewer, larger cases.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn any_input_round_trips_identically_on_any_thread_count(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..(3 * BLOCK)),
            threads in 1usize..5,
            level in 0u32..10,
        ) {
            let gz = gzip(&data, level, threads, 50_000);
            proptest::prop_assert_eq!(&gunzip(&gz), &data);
            proptest::prop_assert_eq!(gz, gzip(&data, level, 1, 7_000));
        }
    }
}
