//! Live counters the shards bump and the progress bar reads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Errors kept verbatim; past this many only the count grows.
const ERRORS_KEPT: usize = 100;

#[derive(Debug, Default)]
pub struct Progress {
    pub datagrams_received: AtomicU64,
    pub participants_joined: AtomicU64,
    pub publishers_connected: AtomicU64,
    pub subscribers_with_media: AtomicU64,
    pub failed_peers: AtomicU64,
    errors: Mutex<Vec<String>>,
    error_count: AtomicU64,
}

impl Progress {
    pub fn record_error(&self, error: String) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut errors) = self.errors.lock()
            && errors.len() < ERRORS_KEPT
        {
            errors.push(error);
        }
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// One line for the bar: who has media, how fast datagrams arrive, failures.
    fn line(&self, subscribers: u64, rate: f64) -> String {
        format!(
            "joined {} | media at {}/{} subscribers | {:.0} datagrams/s | failed peers {} | errors {}",
            self.participants_joined.load(Ordering::Relaxed),
            self.subscribers_with_media.load(Ordering::Relaxed),
            subscribers,
            rate,
            self.failed_peers.load(Ordering::Relaxed),
            self.error_count.load(Ordering::Relaxed),
        )
    }
}

/// A bar for one phase, drawn on stderr (hidden when `quiet`, e.g. with `--json`).
pub fn bar(length: u64, prefix: &'static str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {elapsed} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Updates `bar`'s message from `progress` every quarter second until `done` resolves.
pub async fn follow<F: std::future::Future>(
    bar: &ProgressBar,
    progress: &Progress,
    subscribers: u64,
    done: F,
) -> F::Output {
    tokio::pin!(done);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = progress.datagrams_received.load(Ordering::Relaxed);
    let mut last_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            out = &mut done => return out,
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                let total = progress.datagrams_received.load(Ordering::Relaxed);
                let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
                bar.set_message(progress.line(subscribers, (total - last) as f64 / secs));
                (last, last_at) = (total, now);
            }
        }
    }
}
