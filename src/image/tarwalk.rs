//! A tar read front to back, without seeking: what a stream (the Docker daemon's export) can
//! be read as.

use std::io::Read;

/// The largest PAX or GNU long-name header read.
const MAX_EXTENDED: u64 = 1024 * 1024;

/// A tar read front to back, entry by entry, without seeking: regular files are returned with
/// their sizes; directories, links, PAX and GNU long-name headers are read past (a long name
/// names the entry after it).
pub struct TarWalk<R> {
    inner: R,
    /// Bytes of the current entry not read yet, and the padding after them.
    left: u64,
    pad: u64,
}

impl<R: Read> TarWalk<R> {
    pub fn new(inner: R) -> TarWalk<R> {
        TarWalk { inner, left: 0, pad: 0 }
    }

    /// The next regular file: its path (without a leading `./`) and size. `None` at the end.
    /// A PAX extended header's `path` and `size` (how Go's archive/tar, and so Docker, writes a
    /// long name or a file over 8 GiB) and a GNU long name apply to the entry after them.
    pub fn next_entry(&mut self) -> std::io::Result<Option<(String, u64)>> {
        let mut long_name: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        loop {
            self.skip_rest()?;
            let mut header = [0u8; 512];
            if !read_full(&mut self.inner, &mut header)? {
                // A stream cut between two entries is not a whole archive.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the export ended without tar's end-of-archive blocks",
                ));
            }
            if header.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let size = number(&header[124..136])?;
            let kind = header[156];
            self.left = size;
            self.pad = (512 - size % 512) % 512;
            match kind {
                b'L' | b'x' => {
                    if size > MAX_EXTENDED {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "a tar extended header over 1 MiB",
                        ));
                    }
                    let mut text = Vec::new();
                    (&mut self.inner).take(size).read_to_end(&mut text)?;
                    self.left -= text.len() as u64;
                    if kind == b'L' {
                        long_name = Some(String::from_utf8_lossy(&text).trim_end_matches('\0').to_string());
                    } else {
                        for (key, value) in pax_records(&text) {
                            match key.as_str() {
                                "path" => long_name = Some(value),
                                "size" => pax_size = value.parse().ok(),
                                _ => {}
                            }
                        }
                    }
                }
                b'0' | 0 | b'7' => {
                    if let Some(n) = pax_size {
                        self.left = n;
                        self.pad = (512 - n % 512) % 512;
                    }
                    let name = long_name.take().unwrap_or_else(|| ustar_name(&header));
                    return Ok(Some((name.trim_start_matches("./").to_string(), self.left)));
                }
                _ => {
                    long_name = None;
                    pax_size = None;
                }
            }
        }
    }

    /// The current entry's bytes.
    pub fn data(&mut self) -> impl Read + '_ {
        Data { walk: self }
    }

    /// The underlying reader, at the start of the current entry's bytes.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn skip_rest(&mut self) -> std::io::Result<()> {
        let n = self.left + self.pad;
        let skipped = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())?;
        if skipped != n {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the export ended inside an entry"));
        }
        self.left = 0;
        self.pad = 0;
        Ok(())
    }
}

struct Data<'a, R> {
    walk: &'a mut TarWalk<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min(self.walk.left as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.walk.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the export ended inside an entry"));
        }
        self.walk.left -= n as u64;
        Ok(n)
    }
}

/// Fills `buf`; false when the reader ended before its first byte.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        let n = r.read(&mut buf[at..])?;
        if n == 0 {
            return if at == 0 {
                Ok(false)
            } else {
                Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the export ended inside a tar header"))
            };
        }
        at += n;
    }
    Ok(true)
}

/// PAX records: `LEN key=value\n`, one after another.
fn pax_records(text: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(space) = rest.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..space]).ok().and_then(|l| l.parse::<usize>().ok()) else { break };
        if len <= space || len > rest.len() {
            break;
        }
        let record = String::from_utf8_lossy(&rest[space + 1..len]).trim_end_matches('\n').to_string();
        if let Some((k, v)) = record.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        }
        rest = &rest[len..];
    }
    out
}

/// A tar number field: octal, or base-256 (the high bit of its first byte set) for values the
/// octal field cannot hold (GNU tar and Go's archive/tar for files over 8 GiB).
fn number(field: &[u8]) -> std::io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n.checked_mul(256).and_then(|n| n.checked_add(u64::from(b))).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "a tar size field beyond 64 bits")
            })?;
        }
        return Ok(n);
    }
    let text = String::from_utf8_lossy(field);
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(digits, 8)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad tar size field {digits:?}")))
}

/// A ustar header's path: its prefix and name.
fn ustar_name(header: &[u8; 512]) -> String {
    let field = |b: &[u8]| String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or_default()).to_string();
    let name = field(&header[0..100]);
    // POSIX ustar (`ustar\0` `00`) has a prefix there; GNU's `ustar  ` keeps times there.
    let prefix = if &header[257..265] == b"ustar\x0000" { field(&header[345..500]) } else { String::new() };
    if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::TarWalk;
    use std::io::Read;

    /// Sizes over 8 GiB: base-256 in the header, or a PAX `size` record.
    #[test]
    fn large_sizes_are_read_in_base_256_and_from_pax() {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[7..].copy_from_slice(&[0x02, 0x36, 0x0b, 0x0a, 0x00]);
        assert_eq!(super::number(&field).unwrap(), 0x02_360b_0a00);
        assert_eq!(super::number(b"00000001750\0").unwrap(), 0o1750);
        let records = super::pax_records(b"20 size=10240000000\n28 path=blobs/sha256/abcdef\n");
        assert_eq!(records[0], ("size".into(), "10240000000".into()));
        assert_eq!(records[1], ("path".into(), "blobs/sha256/abcdef".into()));
    }

    /// The walker finds every regular file of a tar the `tar` crate writes — long GNU names,
    /// PAX headers, directories and links among them — with its bytes, in order.
    #[test]
    fn the_walker_reads_what_tar_writes() {
        let mut t = tar::Builder::new(Vec::new());
        let files: Vec<(String, Vec<u8>)> = vec![
            ("a/layer.tar".into(), vec![1; 1000]),
            (format!("{}/long", "d".repeat(150)), vec![2; 512]),
            ("empty".into(), Vec::new()),
            ("./dotted.json".into(), b"{}".to_vec()),
        ];
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_cksum();
        t.append_data(&mut dir, "a/", std::io::empty()).unwrap();
        t.append_pax_extensions([("comment", b"x".as_slice())]).unwrap();
        // A PAX path for the entry after it (as Go's archive/tar writes long names).
        t.append_pax_extensions([("path", b"pax/named.tar".as_slice())]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        t.append_data(&mut h, "short", &b"abc"[..]).unwrap();
        for (name, data) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            t.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        t.append_link(&mut link, "l", "a/layer.tar").unwrap();
        let bytes = t.into_inner().unwrap();
        let mut walk = TarWalk::new(&bytes[..]);
        let mut seen = Vec::new();
        while let Some((name, size)) = walk.next_entry().unwrap() {
            let mut data = Vec::new();
            if name != "empty" {
                walk.data().read_to_end(&mut data).unwrap();
            }
            assert_eq!(data.len() as u64, if name == "empty" { 0 } else { size });
            seen.push((name, data));
        }
        let mut want: Vec<(String, Vec<u8>)> = vec![("pax/named.tar".into(), b"abc".to_vec())];
        want.extend(files.into_iter().map(|(n, d)| (n.trim_start_matches("./").to_string(), d)));
        assert_eq!(seen, want);
        // Cut short: an error, not a short entry.
        let mut walk = TarWalk::new(&bytes[..1500]);
        let mut failed = false;
        while let Ok(Some(_)) = walk.next_entry().map_err(|_| failed = true) {
            if walk.data().read_to_end(&mut Vec::new()).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "a tar cut inside an entry is an error");
        // Cut between two entries, before the end-of-archive blocks: an error too.
        let mut walk = TarWalk::new(&bytes[..1024 + 512]);
        let mut ends = Vec::new();
        while let Ok(Some(_)) = walk.next_entry().map_err(|e| ends.push(e.kind())) {}
        assert_eq!(ends, [std::io::ErrorKind::UnexpectedEof], "a tar cut between entries is not whole");
    }
}
