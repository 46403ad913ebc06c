//! Transfer progress: on a terminal, one bar per blob and one for the whole push (bytes, rate,
//! ETA) through `indicatif`; elsewhere (CI), a blob or a compression that takes longer than 30 s
//! logs a line every 30 s (done so far, rate, time left), and a log line per finished blob.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncRead, ReadBuf};

/// The bars on screen, shared so log lines can be printed above them.
static MULTI: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();

/// A log line written to stderr above the progress bars (they are redrawn below it).
pub struct LogLine(Vec<u8>);

impl LogLine {
    pub fn new() -> LogLine {
        LogLine(Vec::new())
    }
}

impl Default for LogLine {
    fn default() -> Self {
        Self::new()
    }
}

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.0);
        let write = || {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), &line);
        };
        match MULTI.get() {
            Some(multi) => multi.suspend(write),
            None => write(),
        }
    }
}

/// Bars for one push, or nothing when stderr is not a terminal.
#[derive(Clone)]
pub struct Reporter {
    bars: Option<Arc<(MultiProgress, ProgressBar)>>,
}

impl Reporter {
    /// A reporter for `total` bytes; bars only when stderr is a terminal.
    pub fn new(label: &str, total: u64) -> Reporter {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Reporter { bars: None };
        }
        let multi = MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())).clone();
        let bar = multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Reporter { bars: Some(Arc::new((multi, bar))) }
    }

    /// A bar for one blob; dropped bars vanish.
    pub fn blob(&self, label: &str, size: u64) -> BlobProgress {
        let bar = self.bars.as_ref().map(|b| {
            let bar = b.0.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template("  {msg} [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(label.to_string());
            bar
        });
        // Without bars (CI), a long blob says how it is going every `PACE_EVERY`.
        let pace = self.bars.is_none().then(|| Arc::new(Pace::new(format!("sending blob {label}"), size)));
        BlobProgress { bar, total: self.bars.as_ref().map(|b| b.1.clone()), pace }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            b.1.finish_and_clear();
        }
    }
}

/// Counts the bytes of one blob as they are read.
#[derive(Clone)]
pub struct BlobProgress {
    bar: Option<ProgressBar>,
    total: Option<ProgressBar>,
    pace: Option<Arc<Pace>>,
}

impl BlobProgress {
    /// Wraps a reader so that what it yields moves the bars.
    pub fn wrap<R: AsyncRead + Unpin>(&self, inner: R) -> Counting<R> {
        Counting { inner, progress: self.clone() }
    }

    /// Counts `n` more bytes sent.
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if let Some(t) = &self.total {
            t.inc(n);
        }
        if let Some(p) = &self.pace {
            p.add(n, "");
        }
    }

    pub fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub struct Counting<R> {
    inner: R,
    progress: BlobProgress,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            self.progress.add((buf.filled().len() - before) as u64);
        }
        poll
    }
}

/// How often a long piece of work says how it is going where there are no bars.
pub const PACE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Progress as log lines, for logs that are read later (CI): nothing for work that ends within
/// `PACE_EVERY`, then a line every `PACE_EVERY`.
pub struct Pace {
    what: String,
    total: u64,
    started: std::time::Instant,
    /// Bytes done, and when the last line was written.
    state: std::sync::Mutex<(u64, std::time::Instant)>,
}

impl Pace {
    pub fn new(what: String, total: u64) -> Pace {
        let now = std::time::Instant::now();
        Pace { what, total, started: now, state: std::sync::Mutex::new((0, now)) }
    }

    /// Counts `n` more bytes done; logs a line when one is due (`detail` is added to it).
    pub fn add(&self, n: u64, detail: &str) {
        if let Some(line) = self.add_at(n, std::time::Instant::now(), detail) {
            tracing::info!("{line}");
        }
    }

    /// `add` at `now`: the line, when one is due.
    fn add_at(&self, n: u64, now: std::time::Instant, detail: &str) -> Option<String> {
        let mut state = self.state.lock().ok()?;
        state.0 += n;
        if now.duration_since(state.1) < PACE_EVERY {
            return None;
        }
        state.1 = now;
        // Bytes sent again after a retry count for the rate, not past the total.
        let done = state.0.min(self.total);
        let elapsed = now.duration_since(self.started).as_secs_f64().max(0.001);
        let rate = state.0 as f64 / elapsed;
        let left = if rate > 0.0 && self.total > done {
            let secs = ((self.total - done) as f64 / rate) as u64;
            if secs >= 120 {
                format!(", about {} min left", secs.div_ceil(60))
            } else {
                format!(", about {secs} s left")
            }
        } else {
            String::new()
        };
        Some(format!(
            "{}: {} of {}{detail}, {}/s{left}",
            self.what,
            crate::types::ByteSize(done),
            crate::types::ByteSize(self.total),
            crate::types::ByteSize(rate as u64),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_every_30_seconds_with_what_is_done_the_rate_and_the_time_left() {
        let p = Pace::new("sending blob sha256:abcd".into(), 9_000_000_000);
        let t0 = p.started;
        assert_eq!(p.add_at(100_000_000, t0 + Duration::from_secs(10), ""), None, "nothing before 30 s");
        let line = p.add_at(800_000_000, t0 + Duration::from_secs(30), "").unwrap();
        assert_eq!(line, "sending blob sha256:abcd: 900.0 MB of 9.0 GB, 30.0 MB/s, about 5 min left");
        assert_eq!(p.add_at(1, t0 + Duration::from_secs(45), ""), None, "not again within 30 s");
        let line = p.add_at(1_799_999_999, t0 + Duration::from_secs(90), ", 1.1 GB compressed").unwrap();
        assert!(
            line.starts_with("sending blob sha256:abcd: 2.7 GB of 9.0 GB, 1.1 GB compressed, 30.0 MB/s, about"),
            "{line}"
        );
    }
}
