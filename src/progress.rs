//! Transfer progress: on a terminal, one bar per blob and one for the whole push (bytes, rate,
//! ETA) through `indicatif`; elsewhere (CI) nothing here — a log line per finished blob says it.

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
        BlobProgress { bar, total: self.bars.as_ref().map(|b| b.1.clone()) }
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
