//! Download progress of a hub model (or a motion module) while it loads: the hub's
//! [`DownloadEvent`]s summed into [`Event::Download`]s for the load status, at most one
//! every 100 ms. The bytes count what each repository's cache folder held when its first
//! download started, and what the downloads added.

use super::protocol::{Event, JobId};
use crate::model::{DownloadEvent, Downloads};
use crossbeam_channel::Sender;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the load status hears of a download.
const EVERY: Duration = Duration::from_millis(100);

/// What the downloads of one load have done so far.
#[derive(Debug, Default)]
struct Tally {
    files_done: usize,
    files_total: usize,
    bytes: u64,
    repos: Vec<String>,
    sent: Option<Instant>,
}

impl Tally {
    /// Take one event; whether to send the tally now.
    fn take(&mut self, event: &DownloadEvent) -> bool {
        match event {
            DownloadEvent::Start {
                repo,
                files_done,
                files_total,
                ..
            } => {
                if !self.repos.contains(repo) {
                    self.bytes += cached_bytes(repo);
                    self.repos.push(repo.clone());
                }
                self.files_done = *files_done;
                self.files_total = *files_total;
                true
            }
            DownloadEvent::Progress { bytes } => {
                self.bytes += bytes;
                self.sent.is_none_or(|t| t.elapsed() >= EVERY)
            }
            DownloadEvent::Finish => {
                self.files_done = (self.files_done + 1).min(self.files_total.max(1));
                true
            }
        }
    }
}

/// What the hub cache holds of `repo` (finished and partial files).
fn cached_bytes(repo: &str) -> u64 {
    let Ok(cache) = crate::model::HubOptions::default().resolved_cache_dir() else {
        return 0;
    };
    let blobs = cache
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("blobs");
    std::fs::read_dir(blobs)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Where the worker's loads for `job` report their downloads: to the UI, as
/// [`Event::Download`].
pub(super) fn reporter(job: JobId, tx: Sender<Event>) -> Downloads {
    let tally = Mutex::new(Tally::default());
    Downloads::to(move |event| {
        let mut t = tally.lock().unwrap_or_else(PoisonError::into_inner);
        if t.take(event) {
            t.sent = Some(Instant::now());
            let _ = tx.send(Event::Download {
                job,
                files_done: t.files_done,
                files_total: t.files_total,
                bytes: t.bytes,
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_become_throttled_load_status_events() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let d = reporter(7, tx);
        let start = |files_done| DownloadEvent::Start {
            repo: "adiff-test/not-in-any-cache".into(),
            file: "f".into(),
            bytes: 10,
            files_done,
            files_total: 3,
        };
        d.report(&start(1));
        for _ in 0..5 {
            d.report(&DownloadEvent::Progress { bytes: 2 });
        }
        d.report(&DownloadEvent::Finish);
        let got: Vec<(usize, usize, u64)> = rx
            .try_iter()
            .map(|e| match e {
                Event::Download {
                    files_done,
                    files_total,
                    bytes,
                    ..
                } => (files_done, files_total, bytes),
                other => panic!("{other:?}"),
            })
            .collect();
        // The start, then the progress within 100 ms of it is held back, then the finish.
        assert_eq!(got, [(1, 3, 0), (2, 3, 10)]);
    }
}
