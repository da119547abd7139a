//! The Hugging Face hub: its cache folder, the one client setup (`HF_ENDPOINT`, `HF_TOKEN`),
//! and downloads that report their progress to the caller's observer ([`Downloads`]) — the
//! command line draws a bar from it, the app shows it beside the load status; nothing here
//! draws.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::model::error::ModelError;

/// One step of a hub download, for the caller to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadEvent {
    /// A file starts downloading.
    Start {
        /// The repository (`owner/name`).
        repo: String,
        /// The file's path in it.
        file: String,
        /// Its size in bytes (0 when the hub does not say).
        bytes: u64,
        /// Files of the request already here (in the cache, or downloaded).
        files_done: usize,
        /// Files in the request.
        files_total: usize,
    },
    /// `bytes` more of the file arrived.
    Progress {
        /// How many.
        bytes: u64,
    },
    /// The file is complete.
    Finish,
}

/// A download observer, shared by the threads that download.
type Observer = Arc<dyn Fn(&DownloadEvent) + Send + Sync>;

/// Where download progress goes: nowhere (the default), or the caller's observer.
#[derive(Clone, Default)]
pub struct Downloads(Option<Observer>);

impl Downloads {
    /// Progress to `observer`.
    pub fn to(observer: impl Fn(&DownloadEvent) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(observer)))
    }

    /// Tell the observer, if any.
    pub fn report(&self, event: &DownloadEvent) {
        if let Some(observe) = &self.0 {
            observe(event);
        }
    }
}

impl std::fmt::Debug for Downloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Downloads(observed)"
        } else {
            "Downloads(quiet)"
        })
    }
}

/// hf-hub's progress hook, forwarding to a [`Downloads`].
struct Hook {
    downloads: Downloads,
    repo: String,
    files_done: usize,
    files_total: usize,
}

impl hf_hub::api::Progress for Hook {
    fn init(&mut self, size: usize, filename: &str) {
        self.downloads.report(&DownloadEvent::Start {
            repo: self.repo.clone(),
            file: filename.to_string(),
            bytes: size as u64,
            files_done: self.files_done,
            files_total: self.files_total,
        });
    }

    fn update(&mut self, size: usize) {
        self.downloads
            .report(&DownloadEvent::Progress { bytes: size as u64 });
    }

    fn finish(&mut self) {
        self.downloads.report(&DownloadEvent::Finish);
    }
}

/// Settings for hub access.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The hub cache folder (`.../huggingface/hub`). Default: `$HF_HUB_CACHE`, else
    /// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network (also set by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Where each download's progress goes (default: nowhere).
    pub downloads: Downloads,
}

impl Default for HubOptions {
    fn default() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"));
        Self {
            cache_dir: None,
            offline,
            downloads: Downloads::default(),
        }
    }
}

impl HubOptions {
    /// The defaults, with progress going to `downloads`.
    pub fn reporting(downloads: &Downloads) -> Self {
        Self {
            downloads: downloads.clone(),
            ..Self::default()
        }
    }

    /// The cache folder these options use.
    pub fn resolved_cache_dir(&self) -> Result<PathBuf> {
        if let Some(d) = &self.cache_dir {
            return Ok(d.clone());
        }
        if let Some(d) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(d));
        }
        if let Some(d) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(d).join("hub"));
        }
        let home = std::env::home_dir().context(
            "no home directory to hold the Hugging Face cache; set HF_HOME or HF_HUB_CACHE",
        )?;
        Ok(home.join(".cache").join("huggingface").join("hub"))
    }
}

/// The hub client over `cache`: `HF_ENDPOINT` and `HF_TOKEN` honoured, hf-hub's own bars
/// off (progress goes to [`HubOptions::downloads`]).
pub fn api(
    cache: &hf_hub::Cache,
) -> std::result::Result<hf_hub::api::sync::Api, hf_hub::api::sync::ApiError> {
    let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone()).with_progress(false);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(token) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        builder = builder.with_token(Some(token.trim().to_string()));
    }
    builder.build()
}

/// Download `file` of `repo` (named `repo_id`) into the cache, reporting to
/// `opts.downloads`; `files_done` of `files_total` files of the request are here already.
pub fn download(
    repo: &hf_hub::api::sync::ApiRepo,
    repo_id: &str,
    file: &str,
    opts: &HubOptions,
    (files_done, files_total): (usize, usize),
) -> std::result::Result<PathBuf, hf_hub::api::sync::ApiError> {
    repo.download_with_progress(
        file,
        Hook {
            downloads: opts.downloads.clone(),
            repo: repo_id.to_string(),
            files_done,
            files_total,
        },
    )
}

/// `dir/stem.fp16.safetensors` for `dir/stem.safetensors`.
pub(crate) fn fp16_variant(rel: &str) -> Option<String> {
    rel.strip_suffix(".safetensors")
        .filter(|stem| !stem.ends_with(".fp16"))
        .map(|stem| format!("{stem}.fp16.safetensors"))
}

/// `files` of the hub repository `repo_id`, from the cache or downloaded into it (a
/// weights file only kept as its `.fp16` variant is fetched as that, under its own name);
/// relative path → local path.
pub fn fetch_files(
    repo_id: &str,
    files: Vec<String>,
    opts: &HubOptions,
) -> Result<std::collections::HashMap<String, PathBuf>> {
    let cache_dir = opts.resolved_cache_dir()?;
    let cache = hf_hub::Cache::new(cache_dir.clone());
    let cached = cache.model(repo_id.to_string());
    let mut api_repo = None;
    let mut found = std::collections::HashMap::new();
    let total = files.len();
    for (k, rel) in files.into_iter().enumerate() {
        if let Some(p) = cached.get(&rel) {
            found.insert(rel, p);
            continue;
        }
        // Some repositories keep only the half-precision variant of a weights file.
        let variant = fp16_variant(&rel);
        if let Some(p) = variant.as_ref().and_then(|v| cached.get(v)) {
            found.insert(variant.expect("matched"), p);
            continue;
        }
        // special_tokens_map.json only backs up tokenizer_config.json; a repo may lack it.
        let optional = rel.ends_with("special_tokens_map.json");
        if opts.offline && optional {
            continue;
        }
        if opts.offline {
            return Err(ModelError::Download {
                repo: repo_id.into(),
                file: rel.clone(),
                cause: format!(
                    "offline mode (HF_HUB_OFFLINE) and the file is not in the cache {}",
                    cache_dir.display()
                ),
            }
            .into());
        }
        if api_repo.is_none() {
            let api = api(&cache).map_err(|e| ModelError::Download {
                repo: repo_id.into(),
                file: rel.clone(),
                cause: e.to_string(),
            })?;
            api_repo = Some(api.model(repo_id.to_string()));
        }
        let repo = api_repo.as_ref().expect("just set");
        // Files of the request before this one are here (or optional and skipped).
        let at = (k, total);
        let result = download(repo, repo_id, &rel, opts, at);
        let result = match (result, &variant) {
            (Err(e), Some(v)) => match download(repo, repo_id, v, opts, at) {
                Ok(path) => {
                    found.insert(v.clone(), path);
                    continue;
                }
                Err(_) => Err(e),
            },
            (r, _) => r,
        };
        match result {
            Ok(path) => {
                found.insert(rel, path);
            }
            Err(e) if optional => {
                tracing::warn!("skipping optional {repo_id}/{rel}: {e}");
            }
            Err(e) => {
                return Err(ModelError::Download {
                    repo: repo_id.into(),
                    file: rel.clone(),
                    cause: e.to_string(),
                }
                .into());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_variants_are_named_beside_the_file() {
        assert_eq!(
            fp16_variant("unet/diffusion_pytorch_model.safetensors").unwrap(),
            "unet/diffusion_pytorch_model.fp16.safetensors"
        );
        assert_eq!(fp16_variant("unet/x.fp16.safetensors"), None);
        assert_eq!(fp16_variant("vae/config.json"), None);
    }

    #[test]
    fn downloads_reach_the_observer_and_default_to_nowhere() {
        use std::sync::Mutex;
        let seen = Arc::new(Mutex::new(vec![]));
        let sink = seen.clone();
        let d = Downloads::to(move |e| sink.lock().unwrap().push(e.clone()));
        let mut hook = Hook {
            downloads: d.clone(),
            repo: "o/r".into(),
            files_done: 1,
            files_total: 3,
        };
        use hf_hub::api::Progress;
        hook.init(10, "a.json");
        hook.update(4);
        hook.finish();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                DownloadEvent::Start {
                    repo: "o/r".into(),
                    file: "a.json".into(),
                    bytes: 10,
                    files_done: 1,
                    files_total: 3
                },
                DownloadEvent::Progress { bytes: 4 },
                DownloadEvent::Finish
            ]
        );
        assert_eq!(format!("{d:?}"), "Downloads(observed)");
        let quiet = HubOptions::default().downloads;
        quiet.report(&DownloadEvent::Finish);
        assert_eq!(format!("{quiet:?}"), "Downloads(quiet)");
    }
}
