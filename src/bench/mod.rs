//! `adiff bench` and `adiff calibrate`: how much faster the adaptive pipeline is over a
//! prompt set, and what it costs in quality.
//!
//! For each prompt × seed × scheduler the baseline runs once, then every adaptive setting,
//! all from the same prepared inputs (encoded prompt, initial noise). Each finished run is
//! appended to `runs.csv` at once; `summary.json`, `report.md` and the plots are rebuilt
//! from it ([`report`]). An interrupted benchmark continues with `--resume`.
//!
//! * [`prompts`] — text and COCO-caption prompt sets.
//! * [`records`] — the `runs.csv` rows.
//! * [`summary`] — per-setting aggregates and the Pareto front.
//! * [`plots`] — SVG/PNG plots.
//! * [`calibrate`] — the largest δ and smallest budget per prompt that keep a PSNR target,
//!   and the complexity → budget mapping fitted from them.

pub mod args;
pub mod calibrate;
pub mod plots;
pub mod prompts;
pub mod records;
pub mod report;
pub mod summary;

use crate::complexity::{BudgetMode, Complexity, ComplexityBudget, ScoringArgs, warn_fallback};
use crate::metrics::{ClipScorer, ClipSource};
use crate::model::{HubOptions, ModelSource};
use crate::pipeline::{self, Generation, LoadedModel, Request};
use crate::sampler::{Decision, EarlyStop, RunTrace, SchedulerKind, SkipPolicy};
use anyhow::{Context, Result, bail};
use image::RgbImage;
use prompts::BenchPrompt;
use records::{CsvAppender, RunRow, read_rows};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The rows file.
pub const RUNS_CSV: &str = "runs.csv";
/// Settings, machine and command of the benchmark.
pub const BENCH_JSON: &str = "bench.json";
/// Folder of the saved images.
pub const IMAGES_DIR: &str = "images";

/// The settings that define a benchmark; `--resume` requires the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchSettings {
    /// The prompt file.
    pub prompts_file: PathBuf,
    /// Prompts used.
    pub prompt_count: usize,
    /// Model origin.
    pub model: String,
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
    /// δ values.
    pub deltas: Vec<f64>,
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
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| kb / (1024.0 * 1024.0));
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
}

/// A validated benchmark request.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The prompts.
    pub prompts: Vec<BenchPrompt>,
    /// The prompt file (for the report).
    pub prompts_file: PathBuf,
    /// The model.
    pub model: ModelSource,
    /// Schedulers.
    pub schedulers: Vec<SchedulerKind>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Baseline steps.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Negative prompt.
    pub negative: String,
    /// Width.
    pub width: Option<usize>,
    /// Height.
    pub height: Option<usize>,
    /// δ values.
    pub deltas: Vec<f64>,
    /// C_max.
    pub max_skips: usize,
    /// Fixed or complexity budget.
    pub budget: BudgetMode,
    /// Scorer and mapping.
    pub scoring: ScoringArgs,
    /// Early stop of the non-baseline runs.
    pub early_stop: Option<EarlyStop>,
    /// CLIP model (`None`: not measured).
    pub clip: Option<ClipSource>,
    /// Save every image, not only the baselines.
    pub save_images: bool,
    /// Continue an interrupted benchmark.
    pub resume: bool,
    /// Truncate long prompts.
    pub truncate: bool,
    /// Stay on the CPU.
    pub force_cpu: bool,
    /// Output folder.
    pub out: PathBuf,
    /// Draw a progress bar.
    pub progress: bool,
    /// The command line, for the report.
    pub command: String,
}

/// One setting run for every prompt × seed × scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// `baseline`, `budget` or `delta=…`.
    pub label: String,
    /// What runs.
    pub kind: SettingKind,
}

/// The kinds of setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SettingKind {
    /// The full-step baseline.
    Baseline,
    /// The complexity budget without skipping (`--budget auto`).
    BudgetOnly,
    /// Step skipping with this δ (on the complexity budget with `--budget auto`).
    Adaptive(f64),
}

impl BenchOptions {
    /// The settings: baseline, (budget), one per δ.
    pub fn settings(&self) -> Vec<Setting> {
        let mut v = vec![Setting {
            label: "baseline".into(),
            kind: SettingKind::Baseline,
        }];
        if self.budget == BudgetMode::Auto {
            v.push(Setting {
                label: "budget".into(),
                kind: SettingKind::BudgetOnly,
            });
        }
        for &d in &self.deltas {
            v.push(Setting {
                label: format!("delta={d}"),
                kind: SettingKind::Adaptive(d),
            });
        }
        v
    }

    /// The settings recorded in `bench.json`.
    pub fn bench_settings(&self) -> BenchSettings {
        BenchSettings {
            prompts_file: self.prompts_file.clone(),
            prompt_count: self.prompts.len(),
            model: self.model.to_string(),
            schedulers: self
                .schedulers
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
            seeds: self.seeds.clone(),
            steps: self.steps,
            guidance: self.guidance,
            negative: self.negative.clone(),
            width: self.width,
            height: self.height,
            deltas: self.deltas.clone(),
            max_skips: self.max_skips,
            budget: match self.budget {
                BudgetMode::Fixed => "fixed".into(),
                BudgetMode::Auto => "auto".into(),
            },
            scorer: self.scoring.scorer.name().into(),
            scale_policy: self.scoring.scale_policy,
            early_stop: self.early_stop,
            clip: self.clip.as_ref().map(ToString::to_string),
        }
    }

    /// Runs planned.
    pub fn expected_runs(&self) -> usize {
        self.prompts.len() * self.seeds.len() * self.schedulers.len() * self.settings().len()
    }
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

/// Reset the kernel's peak-RSS counter of this process (Linux); false when unsupported.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident memory since the last reset, MiB (Linux).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The per-step pattern of a trace: `W` warm-up, `C` computed, `F` forced, `S` skipped.
pub fn pattern(trace: &RunTrace) -> String {
    trace
        .steps
        .iter()
        .map(|s| match s.decision {
            Decision::Warmup => 'W',
            Decision::Computed => 'C',
            Decision::Forced => 'F',
            Decision::Reused => 'S',
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

fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    crate::output::write_atomic_with(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        img.write_to(&mut w, image::ImageFormat::Png)
            .with_context(|| format!("cannot encode {}", path.display()))?;
        Ok(())
    })
}

/// Compare settings of a resumed benchmark with the stored ones; name what differs.
fn check_same_settings(old: &BenchSettings, new: &BenchSettings) -> Result<()> {
    let a = serde_json::to_value(old)?;
    let b = serde_json::to_value(new)?;
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Ok(());
    };
    let diffs: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}: was {v}, now {}",
                b.get(k).cloned().unwrap_or_default()
            )
        })
        .collect();
    if !diffs.is_empty() {
        bail!(
            "--resume with different settings than the benchmark in this folder ({}); use the original options or another --out",
            diffs.join("; ")
        );
    }
    Ok(())
}

/// The model, the optional CLIP scorer and per-prompt complexity, shared by the runs.
struct Shared<'a> {
    model: &'a LoadedModel,
    clip: Option<&'a ClipScorer>,
}

/// What one run measured.
struct Measured {
    output: Generation,
    peak_rss_mb: Option<f64>,
    clip_cosine: Option<f64>,
}

fn run_one(
    cx: &Shared<'_>,
    req: &Request,
    prepared: &pipeline::Prepared,
    policy: SkipPolicy,
    early_stop: Option<EarlyStop>,
    prompt: &str,
) -> Result<Measured> {
    let rss = reset_peak_rss();
    let output = pipeline::generate(cx.model, req, prepared, policy, early_stop, &mut |_| {
        ControlFlow::Continue(())
    })?;
    let peak_rss_mb = if rss { peak_rss_mb() } else { None };
    let clip_cosine = match cx.clip {
        Some(c) => Some(c.score(&output.image, prompt)?.cosine),
        None => None,
    };
    Ok(Measured {
        output,
        peak_rss_mb,
        clip_cosine,
    })
}

/// Run (or continue) a benchmark and write its reports.
pub fn run_bench(opts: &BenchOptions) -> Result<report::Summary> {
    let out = &opts.out;
    let csv_path = out.join(RUNS_CSV);
    if csv_path.exists() && !opts.resume {
        bail!(
            "{} already holds a benchmark (runs.csv); pass --resume to continue it, or choose another --out",
            out.display()
        );
    }
    std::fs::create_dir_all(out.join(IMAGES_DIR))
        .with_context(|| format!("cannot create {}", out.join(IMAGES_DIR).display()))?;

    // complexity of every prompt (cheap for the heuristic; cached for Ollama)
    let engine = opts.scoring.engine()?;
    let map = opts.scoring.mapping()?;
    let mut warned = false;
    let complexities: Vec<Complexity> = opts
        .prompts
        .iter()
        .map(|p| {
            let c = engine.score(&p.text);
            if !warned && c.fallback.is_some() {
                warn_fallback(&c);
                warned = true;
            }
            c
        })
        .collect();

    let settings = opts.settings();
    let bench_settings = opts.bench_settings();
    let meta_path = out.join(BENCH_JSON);
    let previous: Option<BenchMeta> = if opts.resume && meta_path.exists() {
        let text = std::fs::read_to_string(&meta_path)?;
        let m: BenchMeta = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bench.json", meta_path.display()))?;
        check_same_settings(&m.settings, &bench_settings)?;
        Some(m)
    } else {
        None
    };
    let done: HashMap<String, RunRow> = if csv_path.exists() {
        read_rows(&csv_path)?
            .into_iter()
            .map(|r| (r.run_id.clone(), r))
            .collect()
    } else {
        HashMap::new()
    };
    for r in done.values() {
        match opts.prompts.get(r.prompt_index) {
            Some(p) if p.text == r.prompt => {}
            _ => bail!(
                "runs.csv row {} has prompt #{} \"{}\", which is not prompt #{} of {} any more; use the original prompt file or another --out",
                r.run_id,
                r.prompt_index,
                r.prompt,
                r.prompt_index,
                opts.prompts_file.display()
            ),
        }
    }
    let expected = opts.expected_runs();
    let planned_done = opts
        .prompts
        .iter()
        .enumerate()
        .flat_map(|(pi, _)| {
            opts.seeds.iter().flat_map(move |&seed| {
                opts.schedulers.iter().flat_map(move |sch| {
                    opts.settings()
                        .into_iter()
                        .map(move |s| run_id(pi, seed, sch.name(), &s.label))
                })
            })
        })
        .filter(|id| done.contains_key(id))
        .count();
    let remaining = expected - planned_done;

    let mut meta = previous.clone().unwrap_or_else(|| BenchMeta {
        adiff_version: env!("CARGO_PKG_VERSION").into(),
        command: opts.command.clone(),
        started_utc: utc_now(),
        resumed_utc: Vec::new(),
        machine: Machine::detect(),
        device: String::new(),
        image_size: None,
        settings: bench_settings.clone(),
        clip: ClipStatus {
            measured: false,
            model: None,
            note: "no run yet".into(),
        },
        expected_runs: expected,
    });
    if previous.is_some() {
        meta.resumed_utc.push(utc_now());
    }
    if remaining == 0 {
        crate::output::write_atomic(&meta_path, serde_json::to_string_pretty(&meta)?.as_bytes())?;
        let rows = read_rows(&csv_path).unwrap_or_default();
        return report::write_reports_from(out, meta, &rows);
    }

    let model = pipeline::load_model(&opts.model, opts.force_cpu, None)?;
    model.print_device_note();
    meta.device = format!("{:?}", model.sd.device().location());
    meta.machine = Machine::detect();
    let clip = match &opts.clip {
        None => {
            meta.clip = ClipStatus {
                measured: false,
                model: None,
                note: "disabled with --no-clip".into(),
            };
            None
        }
        Some(src) => {
            let hub = HubOptions {
                progress: opts.progress,
                ..HubOptions::default()
            };
            match ClipScorer::load(src, &hub, model.sd.device()) {
                Ok(c) => {
                    meta.clip = ClipStatus {
                        measured: true,
                        model: Some(c.origin().to_string()),
                        note: String::new(),
                    };
                    Some(c)
                }
                Err(e) => {
                    let why = crate::cli::one_line(&e);
                    eprintln!(
                        "warning: CLIP alignment not measured: {why} (give --clip a local transformers CLIP folder, or --no-clip)"
                    );
                    meta.clip = ClipStatus {
                        measured: false,
                        model: None,
                        note: format!("no CLIP weights could be loaded: {why}"),
                    };
                    None
                }
            }
        }
    };
    crate::output::write_atomic(&meta_path, serde_json::to_string_pretty(&meta)?.as_bytes())?;
    let cx = Shared {
        model: &model,
        clip: clip.as_ref(),
    };

    let bar = indicatif::ProgressBar::new(expected as u64);
    if opts.progress {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "bench [{bar:30}] {pos}/{len} runs, {elapsed} elapsed, ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_position((expected - remaining) as u64);
    bar.reset_eta();

    let mut csv = CsvAppender::open(&csv_path)?;
    let mut warmed = false;
    let mut last_report = Instant::now();
    for (pi, prompt) in opts.prompts.iter().enumerate() {
        let complexity = &complexities[pi];
        for &seed in &opts.seeds {
            for &sch in &opts.schedulers {
                let ids: Vec<String> = settings
                    .iter()
                    .map(|s| run_id(pi, seed, sch.name(), &s.label))
                    .collect();
                if ids.iter().all(|id| done.contains_key(id)) {
                    continue;
                }
                let req = Request {
                    model: opts.model.clone(),
                    prompt: prompt.text.clone(),
                    negative: opts.negative.clone(),
                    scheduler: sch,
                    steps: opts.steps,
                    guidance: opts.guidance,
                    seed,
                    width: opts.width,
                    height: opts.height,
                    policy: SkipPolicy::Baseline,
                    early_stop: None,
                    init_latents: None,
                    truncate: opts.truncate,
                    force_cpu: opts.force_cpu,
                    dtype: None,
                    budget: None,
                };
                let prepared = pipeline::prepare(&model, &req).with_context(|| {
                    format!("prompt #{pi} ({}): \"{}\"", prompt.origin, prompt.text)
                })?;
                meta.image_size.get_or_insert(prepared.size);
                for w in &prepared.warnings {
                    eprintln!("warning: prompt #{pi}: {w}");
                }
                if !warmed {
                    pipeline::warm_up(&model, &req, &prepared)?;
                    warmed = true;
                }
                let base_png = out.join(IMAGES_DIR).join(format!("{}.png", ids[0]));
                // the baseline: run and record it, or reload it for the remaining settings
                let (base_img, base_cos) = match done.get(&ids[0]) {
                    Some(row) if base_png.is_file() => {
                        let img = image::open(&base_png)
                            .with_context(|| format!("cannot read {}", base_png.display()))?
                            .to_rgb8();
                        (img, row.clip_cosine)
                    }
                    prev => {
                        let m = run_one(
                            &cx,
                            &req,
                            &prepared,
                            SkipPolicy::Baseline,
                            None,
                            &prompt.text,
                        )?;
                        save_png(&base_png, &m.output.image)?;
                        if prev.is_none() {
                            let row = make_row(
                                pi,
                                prompt,
                                complexity,
                                seed,
                                sch,
                                &settings[0],
                                &m,
                                None,
                                None,
                            )?;
                            csv.append(&row)?;
                            bar.inc(1);
                        }
                        (m.output.image, m.clip_cosine)
                    }
                };
                for (s, id) in settings.iter().zip(&ids).skip(1) {
                    if done.contains_key(id) {
                        continue;
                    }
                    let (req_s, policy) = match s.kind {
                        SettingKind::Baseline => unreachable!("first setting"),
                        SettingKind::BudgetOnly => {
                            let b = map.decide(complexity.score, opts.steps, SkipPolicy::Baseline);
                            (
                                Request {
                                    steps: b.steps,
                                    ..req.clone()
                                },
                                SkipPolicy::Baseline,
                            )
                        }
                        SettingKind::Adaptive(delta) => {
                            let policy = SkipPolicy::Adaptive {
                                delta,
                                max_skips: opts.max_skips,
                            };
                            match opts.budget {
                                BudgetMode::Fixed => (req.clone(), policy),
                                BudgetMode::Auto => {
                                    let b = map.decide(complexity.score, opts.steps, policy);
                                    let p = b.policy();
                                    (
                                        Request {
                                            policy: p,
                                            budget: Some(ComplexityBudget {
                                                complexity: complexity.clone(),
                                                budget: b,
                                            }),
                                            ..req.clone()
                                        },
                                        p,
                                    )
                                }
                            }
                        }
                    };
                    let m = run_one(
                        &cx,
                        &req_s,
                        &prepared,
                        policy,
                        opts.early_stop,
                        &prompt.text,
                    )?;
                    if opts.save_images {
                        save_png(
                            &out.join(IMAGES_DIR).join(format!("{id}.png")),
                            &m.output.image,
                        )?;
                    }
                    let row = make_row(
                        pi,
                        prompt,
                        complexity,
                        seed,
                        sch,
                        s,
                        &m,
                        Some(&base_img),
                        base_cos,
                    )?;
                    csv.append(&row)?;
                    bar.set_message(format!(
                        "last: {} {} {} calls, PSNR {}",
                        sch.name(),
                        s.label,
                        row.unet_calls,
                        row.psnr_db.map_or("-".into(), |p| format!("{p:.1}"))
                    ));
                    bar.inc(1);
                }
                if last_report.elapsed() > Duration::from_secs(60) {
                    let rows = read_rows(&csv_path)?;
                    report::write_reports_from(out, meta.clone(), &rows)?;
                    last_report = Instant::now();
                }
            }
        }
    }
    bar.finish_and_clear();
    crate::output::write_atomic(&meta_path, serde_json::to_string_pretty(&meta)?.as_bytes())?;
    let rows = read_rows(&csv_path)?;
    report::write_reports_from(out, meta, &rows)
}

#[allow(clippy::too_many_arguments)]
fn make_row(
    pi: usize,
    prompt: &BenchPrompt,
    complexity: &Complexity,
    seed: u64,
    sch: SchedulerKind,
    setting: &Setting,
    m: &Measured,
    base: Option<&RgbImage>,
    base_cos: Option<f64>,
) -> Result<RunRow> {
    let t = &m.output.trace;
    let (psnr_db, ssim) = match base {
        Some(b) => (
            Some(crate::metrics::psnr(&m.output.image, b)?),
            Some(crate::metrics::ssim(&m.output.image, b)?),
        ),
        None => (None, None),
    };
    Ok(RunRow {
        run_id: run_id(pi, seed, sch.name(), &setting.label),
        prompt_index: pi,
        prompt: prompt.text.clone(),
        grade: prompt.grade,
        complexity: Some(complexity.score),
        seed,
        scheduler: sch.name().into(),
        setting: setting.label.clone(),
        mode: t.mode.clone(),
        delta: t.delta,
        max_skips: t.max_skips,
        early_stop: t.early_stop.is_some(),
        budget: t.budget,
        steps_run: t.steps_run,
        unet_calls: t.unet_calls,
        stopped_early_at: t.stopped_early_at,
        loop_ms: t.elapsed_ms,
        decode_ms: m.output.decode_ms,
        total_ms: t.elapsed_ms + m.output.decode_ms,
        peak_rss_mb: m.peak_rss_mb,
        psnr_db,
        ssim,
        clip_cosine: m.clip_cosine,
        clip_score: m
            .clip_cosine
            .map(|c| crate::metrics::ClipAlignment::from_cosine(c).clip_score),
        clip_delta: match (m.clip_cosine, base_cos, base) {
            (Some(c), Some(b), Some(_)) => Some(c - b),
            _ => None,
        },
        pattern: pattern(t),
        finished_at: utc_now(),
    })
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
    fn run_ids() {
        assert_eq!(
            run_id(3, 42, "dpm++", "delta=0.01"),
            "p3-s42-dpm++-delta=0.01"
        );
    }
}
