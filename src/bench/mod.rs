//! `adiff bench` and `adiff calibrate`: how much faster the adaptive pipeline is over a
//! prompt set, and what it costs in quality.
//!
//! For each prompt × seed × scheduler the baseline runs once, then every adaptive setting,
//! all from the same prepared inputs (encoded prompt, initial noise). Each finished run is
//! appended to `runs.csv` at once; `summary.json`, `report.md` and the plots are rebuilt
//! from it ([`report`]). An interrupted benchmark continues where it stopped when resumed
//! ([`BenchOptions::resume`]).
//!
//! * [`plan`] — the options, the settings and the runs they plan.
//! * [`runner`] — running the planned runs, one prompt × seed × scheduler group at a time.
//! * [`observer`] — what a run tells its front end (notes, warnings, progress), as data.
//! * [`prompts`] — text and COCO-caption prompt sets.
//! * [`records`] — the `runs.csv` rows.
//! * [`summary`] — per-setting aggregates and the Pareto front.
//! * [`plots`] — SVG/PNG plots.
//! * [`shard`] — the K-th of N parts of a plan (`OUT/shards/K-of-N/`), from Slurm's array
//!   variables or given.
//! * [`merge`] — the parts checked against each other and merged into one benchmark.
//! * [`slurm`] — the sbatch array and merge scripts, and their submission.
//! * [`calibrate`] — the largest δ and smallest budget per prompt that keep a PSNR target,
//!   and the complexity → budget mapping fitted from them.

pub mod calibrate;
pub mod labels;
pub mod merge;
pub mod observer;
pub mod plan;
pub mod plots;
pub mod prompts;
pub mod records;
pub mod report;
pub mod runner;
pub mod shard;
pub mod slurm;
pub mod summary;

use crate::field::{Field, FieldError, NAME};
use crate::sampler::{Decision, EarlyStop, RunTrace};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use observer::{BenchEvent, BenchObserver};
pub use plan::{BenchOptions, Setting};
pub use runner::run_bench;

/// The rows file.
pub const RUNS_CSV: &str = "runs.csv";
/// Settings, machine and command of the benchmark.
pub const BENCH_JSON: &str = "bench.json";
/// Folder of the saved images.
pub const IMAGES_DIR: &str = "images";

/// The settings that define a benchmark; resuming requires the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchSettings {
    /// The prompt file.
    pub prompts_file: PathBuf,
    /// Prompts used.
    pub prompt_count: usize,
    /// Model origin.
    pub model: String,
    /// The VAE file used instead of the model's own (`--vae`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<String>,
    /// The LoRAs merged (`--lora`), as `FILE:SCALE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<String>,
    /// The prediction type given (`--prediction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
    /// Scheduler names.
    pub schedulers: Vec<String>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Baseline steps (and the adaptive budget with `--budget fixed`).
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Negative prompt.
    pub negative: String,
    /// Requested width.
    pub width: Option<usize>,
    /// Requested height.
    pub height: Option<usize>,
    /// Frames of each clip (a video model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<usize>,
    /// δ values.
    pub deltas: Vec<f64>,
    /// Further methods (`--method`, sweeps expanded; `steps:n=match` when asked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// C_max.
    pub max_skips: usize,
    /// `fixed` or `auto`.
    pub budget: String,
    /// The complexity scorer (`heuristic`, `ollama`).
    pub scorer: String,
    /// δ and C_max scaled per complexity level.
    pub scale_policy: bool,
    /// Early stop of the non-baseline runs.
    pub early_stop: Option<EarlyStop>,
    /// The CLIP model asked for (`None`: `--no-clip`).
    pub clip: Option<String>,
}

/// The machine a benchmark ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical cores available to the process.
    pub cores: usize,
    /// Total memory, GiB.
    pub memory_gib: Option<f64>,
    /// Operating system.
    pub os: String,
    /// Architecture.
    pub arch: String,
}

impl Machine {
    /// Describe this machine.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let memory_gib =
            crate::proc_info::memory_total_bytes().map(|b| b as f64 / (1u64 << 30) as f64);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib,
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
        }
    }
}

/// Whether CLIP alignment was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipStatus {
    /// True when the CLIP model loaded.
    pub measured: bool,
    /// The model that scored.
    pub model: Option<String>,
    /// Why not, when not.
    pub note: String,
}

/// `bench.json`: what ran, where, how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchMeta {
    /// `adiff` version.
    pub adiff_version: String,
    /// The command line.
    pub command: String,
    /// When the benchmark started (UTC).
    pub started_utc: String,
    /// When it was resumed (UTC).
    #[serde(default)]
    pub resumed_utc: Vec<String>,
    /// The machine.
    pub machine: Machine,
    /// The device the model ran on.
    pub device: String,
    /// Image size (width, height).
    pub image_size: Option<(usize, usize)>,
    /// Settings.
    pub settings: BenchSettings,
    /// CLIP status.
    pub clip: ClipStatus,
    /// Runs planned.
    pub expected_runs: usize,
    /// The part of a larger plan this folder ran (`OUT/shards/K-of-N/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<shard::ShardRecord>,
    /// The parts this benchmark was merged from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergeRecord>,
}

/// How a merged benchmark ran: its parts and the machines that ran them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// Parts merged.
    pub shards: usize,
    /// The hosts that ran them (each once, sorted).
    pub hosts: Vec<String>,
    /// Rows found more than once (a requeued part's), counted once.
    pub duplicates: usize,
    /// When the merge was written (UTC).
    pub merged_utc: String,
}

/// The resume key of a run.
pub fn run_id(prompt_index: usize, seed: u64, scheduler: &str, setting: &str) -> String {
    format!("p{prompt_index}-s{seed}-{scheduler}-{setting}")
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_from_unix(secs)
}

/// Format Unix seconds as UTC (proleptic Gregorian calendar).
pub fn utc_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Peak resident memory since the last reset, MiB (Linux).
pub(crate) fn peak_rss_mb() -> Option<f64> {
    crate::proc_info::peak_rss_bytes().map(|b| b as f64 / (1u64 << 20) as f64)
}

/// The per-step pattern of a trace: `W` warm-up, `C` computed, `F` forced, `S` skipped,
/// `P` partial (DeepCache).
pub fn pattern(trace: &RunTrace) -> String {
    trace
        .steps
        .iter()
        .map(|s| match s.decision {
            Decision::Warmup => 'W',
            Decision::Computed => 'C',
            Decision::Forced => 'F',
            Decision::Reused | Decision::Forecast => 'S',
            Decision::Partial => 'P',
        })
        .collect()
}

/// Shell-like rendering of the command line.
pub fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        let name = Path::new(first.as_str())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        if let Some(n) = name {
            *first = n;
        }
    }
    args.iter()
        .map(|a| {
            if a.is_empty()
                || a.contains(|c: char| c.is_whitespace() || "\"'$`\\|&;<>()*?!#".contains(c))
            {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compare settings of a resumed benchmark with the stored ones; name what differs.
pub(crate) fn check_same_settings(old: &BenchSettings, new: &BenchSettings) -> Result<()> {
    let diffs = settings_diff(old, new)?;
    if !diffs.is_empty() {
        return Err(FieldError::new(
            Field::Out,
            format!(
                "resuming with different settings than the benchmark in this folder ({}); use the original options or another {NAME}",
                diffs.join("; ")
            ),
        )
        .into());
    }
    Ok(())
}

/// What differs between two benchmarks' settings, one `key: was A, now B` each.
pub(crate) fn settings_diff(old: &BenchSettings, new: &BenchSettings) -> Result<Vec<String>> {
    let a = serde_json::to_value(old)?;
    let b = serde_json::to_value(new)?;
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Ok(Vec::new());
    };
    // Keys in either (a setting written only when used, such as `vae`, counts too).
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: was {}, now {}",
                a.get(k).cloned().unwrap_or_default(),
                b.get(k).cloned().unwrap_or_default()
            )
        })
        .collect();
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_from_unix(1_763_923_935), "2025-11-23T18:52:15Z");
    }

    #[test]
    fn resuming_with_another_vae_is_refused_either_way() {
        let settings: BenchSettings = serde_json::from_value(serde_json::json!({
            "prompts_file": "p.txt", "prompt_count": 2, "model": "tiny", "schedulers": ["ddim"],
            "seeds": [42], "steps": 10, "guidance": 7.5, "negative": "", "width": null,
            "height": null, "deltas": [0.01], "max_skips": 4, "budget": "fixed",
            "scorer": "heuristic", "scale_policy": false, "early_stop": null, "clip": null
        }))
        .unwrap();
        assert!(check_same_settings(&settings, &settings).is_ok());
        let with_vae = BenchSettings {
            vae: Some("v.safetensors".into()),
            ..settings.clone()
        };
        for (old, new) in [(&settings, &with_vae), (&with_vae, &settings)] {
            let msg = check_same_settings(old, new).unwrap_err().to_string();
            assert!(msg.contains("vae: was"), "{msg}");
        }
    }

    #[test]
    fn run_ids() {
        assert_eq!(
            run_id(3, 42, "dpm++", "delta=0.01"),
            "p3-s42-dpm++-delta=0.01"
        );
    }
}
