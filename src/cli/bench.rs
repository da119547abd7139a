//! Command-line options of `adiff bench` and `adiff calibrate`, and the two commands.

use super::complexity::ScoringArgs;
use super::progress::BenchBar;
use super::run_args::ModelArgs;
use crate::bench::prompts::{self, PromptFormat};
use crate::bench::shard::{SHARDS_DIR, ShardSpec};
use crate::bench::slurm;
use crate::bench::{BenchOptions, calibrate::CalibrateOptions};
use crate::complexity::BudgetMode;
use crate::job::{self, Job, defaults, method_spec};
use crate::metrics::ClipSource;
use crate::metrics::clip::DEFAULT_CLIP_REPO;
use crate::model::ModelSource;
use crate::sampler::{Method, SchedulerKind};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

/// Where the prompts and the model come from (shared by `bench` and `calibrate`).
#[derive(Debug, Clone, Args)]
pub struct BenchInputArgs {
    /// Prompt file: one prompt per line (`#` comments, optional `GRADE<TAB>` prefix), or
    /// COCO captions JSON (e.g. captions_val2017.json: the first caption of each image).
    // An `Option` only so that `adiff bench merge` parses without it; required otherwise.
    #[arg(long, required = true)]
    pub prompts: Option<PathBuf>,
    /// How to read --prompts (auto: .json is COCO captions, anything else text).
    #[arg(long, value_enum, default_value_t = PromptFormat::Auto)]
    pub prompt_format: PromptFormat,
    /// Use only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Seeds of the initial noise (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [defaults::SEED])]
    pub seeds: Vec<u64>,
    /// Steps of the full-step baseline (and of the adaptive runs with --budget fixed).
    #[arg(long, default_value_t = defaults::STEPS, allow_negative_numbers = true)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = defaults::GUIDANCE, allow_negative_numbers = true)]
    pub guidance: f64,
    /// Negative prompt.
    #[arg(long, default_value = "")]
    pub negative: String,
    /// Image width (multiple of 8; default: the model's).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height (multiple of 8; default: the model's).
    #[arg(long)]
    pub height: Option<usize>,
    /// Frames of each clip, for a video model [default: the model's, 16].
    #[arg(long, allow_negative_numbers = true)]
    pub frames: Option<usize>,
    /// C_max, the most consecutive skipped steps.
    #[arg(long, default_value_t = defaults::MAX_SKIPS, allow_negative_numbers = true)]
    pub max_skips: usize,
    /// Truncate prompts longer than 77 tokens instead of failing.
    #[arg(long)]
    pub truncate: bool,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    pub cpu: bool,
}

impl BenchInputArgs {
    /// The prompt file.
    pub fn prompts_file(&self) -> Result<&PathBuf> {
        self.prompts
            .as_ref()
            .context("--prompts is missing: give the prompt file")
    }

    fn check(&self) -> Result<()> {
        if self.seeds.is_empty() {
            bail!("--seeds is empty");
        }
        if self.limit == Some(0) {
            bail!("--limit must be at least 1");
        }
        Ok(())
    }

    /// The template job of every run (prompt and seed are set per run), validated.
    fn job(
        &self,
        scheduler: SchedulerKind,
        early_stop: Option<crate::sampler::EarlyStop>,
    ) -> Result<Job> {
        let mut job = Job::new(
            ModelSource::Local(PathBuf::new()),
            "(each prompt of the set)",
        );
        job.scheduler = scheduler;
        job.steps = self.steps;
        job.guidance = self.guidance;
        job.negative = self.negative.clone();
        job.width = self.width;
        job.height = self.height;
        job.frames = self.frames;
        job.method = Method::adaptive(defaults::DELTA, self.max_skips);
        job.early_stop = early_stop;
        job.truncate = self.truncate;
        job.force_cpu = self.cpu;
        job.validate()?;
        self.model.apply_to(&mut job)?;
        Ok(job)
    }
}

fn dedup<T: PartialEq + Clone>(v: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in v {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

/// The methods of `--method` (sweeps expanded, repeats dropped) and whether
/// `steps:n=match` was asked for.
fn bench_methods(specs: &[String]) -> Result<(Vec<Method>, bool)> {
    let mut methods: Vec<Method> = Vec::new();
    let mut match_steps = false;
    for spec in specs {
        if spec.trim() == "steps:n=match" {
            match_steps = true;
            continue;
        }
        for one in method_spec::expand_sweep(spec) {
            let m = method_spec::parse(&one)?;
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
    }
    Ok((methods, match_steps))
}

fn check_deltas(deltas: &[f64], max_skips: usize) -> Result<()> {
    for &delta in deltas {
        job::validate_method(&Method::adaptive(delta, max_skips))?;
    }
    Ok(())
}

/// `adiff bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Prompts, model, seeds, steps.
    #[command(flatten)]
    pub input: BenchInputArgs,
    /// Schedulers (comma-separated): ddim, euler, dpm++.
    #[arg(long, value_delimiter = ',', default_value = "ddim")]
    pub schedulers: Vec<String>,
    /// δ values of the adaptive settings (comma-separated); each runs against the baseline
    /// [default: 0.005,0.01,0.02 unless --method is given].
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub deltas: Option<Vec<f64>>,
    /// A method to run against the baseline, as for `generate --method`; repeatable. A key
    /// with several values separated by `/` sweeps them (`ucache:threshold=0.5/1/2`).
    /// `steps:n=match` adds, after every setting that saves work, the fewer-steps control
    /// with as many steps as that setting's run called the noise predictor (partial calls:
    /// their multiply-accumulates in full calls).
    #[arg(long = "method")]
    pub methods: Vec<String>,
    /// fixed: every run has --steps; auto: the adaptive runs get the prompt's complexity
    /// budget (and a "budget" setting runs that budget without skipping).
    #[arg(long, value_enum, default_value_t = BudgetMode::Fixed)]
    pub budget: BudgetMode,
    /// Complexity scorer and budget mapping (the complexity is recorded for every prompt).
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Early stopping on the non-baseline runs (latent convergence, predicted-x0 output).
    #[arg(long)]
    pub early_stop: bool,
    /// τ of the early stop (with --early-stop).
    #[arg(long, default_value_t = defaults::EARLY_STOP_TAU, requires = "early_stop")]
    pub early_stop_tau: f64,
    /// CLIP model for prompt alignment: a hub repository (owner/name, or
    /// owner/name@revision) or a local transformers CLIP folder. Default: for a local model
    /// folder NAME with a sibling folder NAME-clip (the built-in shapes model's
    /// assets/models/shapes-clip), that one; else openai/clip-vit-base-patch32. When it
    /// cannot be loaded, CLIP is reported "not measured".
    #[arg(long)]
    pub clip: Option<String>,
    /// Do not measure CLIP alignment.
    #[arg(long)]
    pub no_clip: bool,
    /// Save every image to OUT/images/ (baseline images are always saved).
    #[arg(long)]
    pub save_images: bool,
    /// Continue the benchmark in --out, skipping the runs already in runs.csv.
    #[arg(long)]
    pub resume: bool,
    /// Run only part K of N of the planned runs (whole prompt × seed × scheduler groups,
    /// balanced by planned work), into OUT/shards/K-of-N/; `auto` reads K and N from a
    /// Slurm array task (SLURM_ARRAY_TASK_ID, _COUNT, _MIN, _MAX). `adiff bench merge OUT`
    /// merges the parts.
    #[arg(long, value_name = "K/N|auto", value_parser = parse_shard)]
    pub shard: Option<ShardSpec>,
    /// Output folder: runs.csv, summary.json, report.md, plots, images/.
    // An `Option` only so that `adiff bench merge` parses without it; required otherwise.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
}

fn parse_shard(s: &str) -> Result<ShardSpec, String> {
    s.parse()
        .map_err(|e: crate::bench::shard::ShardError| e.to_string())
}

impl BenchArgs {
    /// The output folder.
    pub fn out_dir(&self) -> Result<&PathBuf> {
        self.out
            .as_ref()
            .context("--out is missing: give the output folder")
    }

    /// Validate and load the prompts (no model is loaded here).
    pub fn to_options(&self) -> Result<BenchOptions> {
        let i = &self.input;
        i.check()?;
        let out_arg = self.out_dir()?;
        let schedulers: Vec<SchedulerKind> = dedup(&self.schedulers)
            .iter()
            .map(|s| s.trim().parse().map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?;
        if schedulers.is_empty() {
            bail!("--schedulers is empty");
        }
        let deltas = match &self.deltas {
            Some(d) => dedup(d),
            None if self.methods.is_empty() => vec![0.005, 0.01, 0.02],
            None => vec![],
        };
        let (methods, match_steps) = bench_methods(&self.methods)?;
        if deltas.is_empty() && methods.is_empty() && self.budget == BudgetMode::Fixed {
            bail!("--deltas is empty: give at least one δ (e.g. --deltas 0.01) or a --method");
        }
        check_deltas(&deltas, i.max_skips)?;
        let job = i.job(
            schedulers[0],
            job::early_stop(self.early_stop, self.early_stop_tau),
        )?;
        // fail on a bad scorer/mapping before loading anything
        let scoring = self.scoring.scoring();
        scoring.engine()?;
        scoring.mapping()?;
        let clip = if self.no_clip {
            None
        } else {
            Some(match &self.clip {
                Some(c) => c.parse::<ClipSource>()?,
                None => default_clip(&job.model)?,
            })
        };
        let prompts = prompts::load(i.prompts_file()?, i.prompt_format, i.limit)?;
        if let Some(p) = out_arg.parent()
            && !p.as_os_str().is_empty()
            && !p.is_dir()
        {
            bail!(
                "--out {}: the folder {} does not exist",
                out_arg.display(),
                p.display()
            );
        }
        if out_arg.is_file() {
            bail!("--out {} is a file; give a folder", out_arg.display());
        }
        let seeds = dedup(&i.seeds);
        let shard = match self.shard {
            None => None,
            Some(spec) => {
                let shard = spec
                    .resolve(|k| std::env::var(k).ok())
                    .map_err(|e| anyhow::anyhow!("--shard: {e}"))?;
                let groups = prompts.len() * seeds.len() * schedulers.len();
                if shard.count > groups {
                    bail!(
                        "--shard {}: the plan has {groups} prompt × seed × scheduler groups, and each part needs one; split it into at most {groups} parts",
                        shard.spec()
                    );
                }
                Some(shard)
            }
        };
        let out = match shard {
            Some(s) => out_arg.join(SHARDS_DIR).join(s.dir_name()),
            None => out_arg.clone(),
        };
        Ok(BenchOptions {
            job,
            prompts,
            prompts_file: i.prompts_file()?.clone(),
            schedulers,
            seeds,
            deltas,
            methods,
            match_steps,
            max_skips: i.max_skips,
            budget: self.budget,
            scoring,
            clip,
            save_images: self.save_images,
            resume: self.resume,
            out,
            command: crate::bench::command_line(),
            args: std::env::args().collect(),
            shard,
        })
    }
}

/// `adiff calibrate`.
#[derive(Debug, Clone, Args)]
pub struct CalibrateArgs {
    /// Prompts, model, seeds, steps.
    #[command(flatten)]
    pub input: BenchInputArgs,
    /// The scheduler.
    #[arg(long, default_value = defaults::SCHEDULER.name())]
    pub scheduler: String,
    /// The PSNR (dB, vs the full-step baseline) every kept setting must reach.
    #[arg(long, default_value_t = 25.0)]
    pub psnr_target: f64,
    /// δ grid searched at the full budget (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.0025,0.005,0.01,0.02,0.04,0.08"
    )]
    pub deltas: Vec<f64>,
    /// δ of the adaptive runs in the budget search (what `--budget auto` runs with).
    #[arg(long, default_value_t = defaults::DELTA)]
    pub delta: f64,
    /// Budgets searched (comma-separated step counts; default: 20 %, 30 %, … 100 % of --steps).
    #[arg(long, value_delimiter = ',')]
    pub budgets: Vec<usize>,
    /// Complexity scorer and the mapping whose levels are refitted.
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Output folder: calibration.json, calibration.csv and budget_map.json (for
    /// `--budget auto --budget-map OUT/budget_map.json`).
    #[arg(long)]
    pub out: PathBuf,
}

impl CalibrateArgs {
    /// Validate and load the prompts.
    pub fn to_options(&self) -> Result<CalibrateOptions> {
        let i = &self.input;
        i.check()?;
        let scheduler: SchedulerKind = self.scheduler.trim().parse().map_err(anyhow::Error::msg)?;
        let job = i.job(scheduler, None)?;
        if !(self.psnr_target.is_finite() && self.psnr_target > 0.0) {
            bail!(
                "--psnr-target must be a positive number of dB (got {})",
                self.psnr_target
            );
        }
        let mut deltas = dedup(&self.deltas);
        deltas.sort_by(f64::total_cmp);
        if deltas.is_empty() {
            bail!("--deltas is empty");
        }
        check_deltas(&deltas, i.max_skips)?;
        check_deltas(&[self.delta], i.max_skips)?;
        let mut budgets = if self.budgets.is_empty() {
            (2..=10)
                .map(|k| ((job.steps * k) as f64 / 10.0).round().max(1.0) as usize)
                .collect()
        } else {
            dedup(&self.budgets)
        };
        if let Some(&b) = budgets.iter().find(|&&b| b == 0 || b > job.steps) {
            bail!("--budgets {b} is outside 1..={}", job.steps);
        }
        budgets.sort_unstable();
        budgets.dedup();
        let scoring = self.scoring.scoring();
        scoring.engine()?;
        scoring.mapping()?;
        let prompts = prompts::load(i.prompts_file()?, i.prompt_format, i.limit)?;
        if self.out.is_file() {
            bail!("--out {} is a file; give a folder", self.out.display());
        }
        Ok(CalibrateOptions {
            job,
            prompts,
            seeds: dedup(&i.seeds),
            max_skips: i.max_skips,
            psnr_target: self.psnr_target,
            deltas,
            delta: self.delta,
            budgets,
            scoring,
            out: self.out.clone(),
        })
    }
}

/// Stop a benchmark between runs on SIGUSR1 (what a Slurm task gets before its time limit).
fn stop_on_usr1() {
    extern "C" fn on_usr1(_: libc::c_int) {
        crate::bench::runner::request_stop();
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            on_usr1 as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// `adiff bench`: run, then print where the report is. Stopped by SIGUSR1 with runs left,
/// it exits with [`slurm::EXIT_STOPPED`] (a Slurm task then requeues itself).
pub fn run_bench_cmd(a: &BenchArgs) -> Result<()> {
    let opts = a.to_options()?;
    stop_on_usr1();
    let s = crate::bench::run_bench(&opts, &mut BenchBar::bench())?;
    if crate::bench::runner::stop_requested() && !s.complete {
        eprintln!(
            "stopped on request (SIGUSR1) after {} of {} runs; run the same command with --resume to continue",
            s.runs_done, s.meta.expected_runs
        );
        std::process::exit(slurm::EXIT_STOPPED);
    }
    print_groups(&s);
    eprintln!(
        "{} of {} runs; wrote {}/runs.csv, summary.json, report.md and plots",
        s.runs_done,
        s.meta.expected_runs,
        opts.out.display()
    );
    Ok(())
}

/// One line per setting and scheduler: speedup, NFE, PSNR, SSIM.
fn print_groups(s: &crate::bench::report::Summary) {
    for g in s
        .groups
        .iter()
        .filter(|g| g.setting != crate::bench::plan::BASELINE)
    {
        eprintln!(
            "{} {}: {} runs, speedup {}, NFE {:.1}, PSNR {}, SSIM {}",
            g.scheduler,
            g.setting,
            g.runs,
            g.speedup.map_or("-".into(), |x| format!("{x:.2}x")),
            g.nfe.mean.unwrap_or(0.0),
            match (g.psnr_db.mean, g.identical) {
                (Some(p), _) => format!("{p:.2} dB"),
                (None, n) if n > 0 => "identical".into(),
                _ => "-".into(),
            },
            g.ssim.mean.map_or("-".into(), |x| format!("{x:.4}"))
        );
    }
}

/// `adiff calibrate`.
pub fn run_calibrate_cmd(a: &CalibrateArgs) -> Result<()> {
    let opts = a.to_options()?;
    let cal = crate::bench::calibrate::run_calibrate(&opts, &mut BenchBar::calibrate())?;
    print_summary(&cal, &opts.out);
    Ok(())
}

/// Print the fit, and how to use it.
fn print_summary(cal: &crate::bench::calibrate::Calibration, out: &std::path::Path) {
    println!(
        "PSNR target {} dB vs the {}-step {} baseline, {} prompt×seed samples ({} scorer)",
        cal.psnr_target,
        cal.steps,
        cal.scheduler,
        cal.prompts.len(),
        cal.scorer
    );
    println!("level  min score  samples  fitted budget  budget  largest δ");
    for l in &cal.levels {
        println!(
            "{:>5}  {:>9.2}  {:>7}  {:>13}  {:>6}  {}",
            l.level,
            l.min_score,
            l.samples,
            l.fitted_steps.map_or("-".into(), |s| s.to_string()),
            l.steps,
            l.largest_delta.map_or("-".into(), |d| d.to_string())
        );
    }
    if let Some(d) = cal.suggested_delta {
        println!("median largest δ keeping the target: {d}");
    }
    println!(
        "wrote {0}/calibration.json, {0}/calibration.csv and {0}/budget_map.json; use it with: --budget auto --budget-map {0}/budget_map.json",
        out.display()
    );
}

/// The CLIP scorer used when `--clip` is not given: a local model folder's sibling
/// `NAME-clip` folder when it holds a CLIP model (the built-in shapes model ships one),
/// else the OpenAI CLIP of the hub.
pub fn default_clip(model: &ModelSource) -> Result<ClipSource> {
    if let ModelSource::Local(dir) = model
        && let Some(name) = dir.file_name()
    {
        let mut sibling_name = name.to_os_string();
        sibling_name.push("-clip");
        let sibling = dir.with_file_name(sibling_name);
        if sibling.join("config.json").is_file() {
            return Ok(ClipSource::Dir(sibling));
        }
    }
    DEFAULT_CLIP_REPO.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_folders_sibling_clip_is_the_default_scorer() {
        let root = std::env::temp_dir().join(format!("adiff-default-clip-{}", std::process::id()));
        let model = root.join("mymodel");
        std::fs::create_dir_all(&model).unwrap();
        let hub = DEFAULT_CLIP_REPO.parse::<ClipSource>().unwrap();
        let source = ModelSource::Local(model.clone());
        assert_eq!(default_clip(&source).unwrap(), hub);
        let clip = root.join("mymodel-clip");
        std::fs::create_dir_all(&clip).unwrap();
        std::fs::write(clip.join("config.json"), "{}").unwrap();
        assert_eq!(default_clip(&source).unwrap(), ClipSource::Dir(clip));
        let hub_model = ModelSource::Hub(crate::model::HubModel::Sd15);
        assert_eq!(default_clip(&hub_model).unwrap(), hub);
        std::fs::remove_dir_all(&root).ok();
    }
}
