//! Retention (`[recording] keep_days`): a janitor deletes recordings past their time, hourly.
//!
//! Only what can be replaced or is done with goes: a recording must be exported (`ready`) and,
//! when `[recording] upload` is on, uploaded. One still recording, exporting, failed, or left
//! by a server that died (until the next start exports it) is kept, whatever its age, so
//! nobody loses the only copy of a class by a timer. The decision is [`expired`], a
//! pure function of the recording and the time.

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use super::manifest::{Manifest, Status};
use super::{Recorder, store, unix_ms};

/// How often the janitor looks.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// What retention keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub keep: Duration,
    /// Whether recordings are uploaded, so must be before they may go.
    pub upload: bool,
}

/// Whether `recording` may be deleted at `now_unix_ms`: exported (and uploaded, if uploads are
/// on) and started more than `keep` ago.
pub fn expired(recording: &Manifest, policy: Policy, now_unix_ms: u64) -> bool {
    let done =
        recording.state == Status::Ready && (!policy.upload || recording.uploaded_to.is_some());
    let keep_ms = u64::try_from(policy.keep.as_millis()).unwrap_or(u64::MAX);
    done && now_unix_ms.saturating_sub(recording.started_at_unix_ms) > keep_ms
}

/// The ids of the recordings under `root` that `expired` says may go. Blocks.
pub fn expired_ids(root: &Path, policy: Policy, now_unix_ms: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for summary in store::list(root).unwrap_or_default() {
        let dir = root.join(&summary.id);
        if let Ok(recording) = super::manifest::read(&dir)
            && expired(&recording, policy, now_unix_ms)
        {
            ids.push(summary.id);
        }
    }
    ids
}

impl Recorder {
    /// Starts the janitor if `[recording] keep_days` is set; it stops with `shutdown`.
    pub fn spawn_janitor(&self, mut shutdown: watch::Receiver<bool>) {
        let Some(days) = self.inner.config.keep_days else {
            return;
        };
        let policy = Policy {
            keep: Duration::from_secs(u64::from(days) * 24 * 3600),
            upload: self.inner.uploader.is_some(),
        };
        let recorder = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => recorder.sweep(policy, unix_ms()).await,
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    /// Deletes the recordings that are past their time at `now_unix_ms`, each claimed first so
    /// that none is deleted while it records or exports.
    pub(super) async fn sweep(&self, policy: Policy, now_unix_ms: u64) {
        let root = self.inner.config.dir.clone();
        let ids = tokio::task::spawn_blocking(move || expired_ids(&root, policy, now_unix_ms))
            .await
            .unwrap_or_default();
        for id in ids {
            match self.delete(&id, "retention").await {
                Ok(()) => tracing::info!(recording = id, "deleted by retention"),
                Err(e) => tracing::warn!(recording = id, "retention could not delete it: {e}"),
            }
        }
        self.refresh_disk_bytes().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::manifest;

    const DAY_MS: u64 = 24 * 3600 * 1000;
    const WEEK: Policy = Policy {
        keep: Duration::from_secs(7 * 24 * 3600),
        upload: false,
    };

    fn recording(state: Status, started_days_ago: u64, now: u64) -> Manifest {
        let mut m = manifest::sample("RC_aaaaaaaaaaaa");
        m.state = state;
        m.started_at_unix_ms = now - started_days_ago * DAY_MS;
        m
    }

    #[test]
    fn only_exported_recordings_past_their_time_expire() {
        let now = 1_000 * DAY_MS;
        assert!(expired(&recording(Status::Ready, 8, now), WEEK, now));
        assert!(!expired(&recording(Status::Ready, 6, now), WEEK, now));
        assert!(
            !expired(&recording(Status::Ready, 7, now), WEEK, now),
            "exactly 7 days"
        );
        for kept in [Status::Recording, Status::Exporting, Status::Failed] {
            assert!(!expired(&recording(kept, 30, now), WEEK, now), "{kept:?}");
        }
    }

    #[test]
    fn with_uploads_on_only_uploaded_recordings_expire() {
        let now = 1_000 * DAY_MS;
        let policy = Policy {
            upload: true,
            ..WEEK
        };
        let mut old = recording(Status::Ready, 30, now);
        assert!(!expired(&old, policy, now));
        old.uploaded_to = Some("s3://b/p/RC_aaaaaaaaaaaa".into());
        assert!(expired(&old, policy, now));
    }

    #[test]
    fn the_sweep_picks_old_exported_recordings_only() {
        let root = std::env::temp_dir().join(format!("aula-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let now = 1_000 * DAY_MS;
        let mut old = recording(Status::Ready, 10, now);
        old.id = "RC_oldoldoldold".into();
        let mut recent = recording(Status::Ready, 1, now);
        recent.id = "RC_recentrecent".into();
        let mut running = recording(Status::Recording, 10, now);
        running.id = "RC_runningrunn".into();
        for m in [&old, &recent, &running] {
            manifest::write(&root.join(&m.id), m).unwrap();
        }
        let ids = expired_ids(&root, WEEK, now);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(ids, [old.id]);
    }
}
