//! Download progress of a hub model, polled from the Hugging Face cache folder while the
//! model loads.

use super::protocol::{Event, JobId};
use crossbeam_channel::Sender;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Polls the Hugging Face cache folder of a hub model while it downloads.
pub(super) struct DownloadPoller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DownloadPoller {
    pub(super) fn start(model: crate::model::HubModel, job: JobId, tx: Sender<Event>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("adiff-download-poll".into())
            .spawn(move || {
                let Ok(cache_dir) = crate::model::HubOptions::default().resolved_cache_dir() else {
                    return;
                };
                let files = model.files();
                let repo_dir: PathBuf =
                    cache_dir.join(format!("models--{}", model.repo().replace('/', "--")));
                let cache = hf_hub::Cache::new(cache_dir);
                let cached = cache.model(model.repo().to_string());
                while !flag.load(Ordering::SeqCst) {
                    let files_done = files.iter().filter(|f| cached.get(f).is_some()).count();
                    let bytes = dir_size(&repo_dir.join("blobs"));
                    if tx
                        .send(Event::Download {
                            job,
                            files_done,
                            files_total: files.len(),
                            bytes,
                        })
                        .is_err()
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for DownloadPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
