//! `adiff train ...`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::{Args, Subcommand};

use crate::model::unet::UNet;
use crate::train::{Arch, TrainConfig, Trainer};

/// `adiff train`.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// What to train.
    #[command(subcommand)]
    pub what: TrainCommand,
}

/// The training subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TrainCommand {
    /// Train the built-in "shapes" model (resumes when --out holds a checkpoint).
    Shapes(ShapesArgs),
    /// Export a checkpoint folder as a diffusers-style model folder (EMA weights).
    Export(ExportArgs),
    /// Time one guided (batch-2) UNet call and one training step of an architecture.
    Measure(MeasureArgs),
    /// Generate held-out prompts with a model folder and score them with the checker.
    Eval(EvalArgs),
    /// Probe whether a shapes model reads the position words: where the guided prediction
    /// at a noisy timestep puts the named colour, for each of the five positions (seconds).
    Probe(ProbeArgs),
    /// Copy a checkpoint folder with the AdamW moments in bf16 (small enough to commit).
    Pack(PackArgs),
    /// Train the tiny CLIP alignment scorer of the shapes world (resumable; create the file
    /// OUT/STOP to stop at the next step with a checkpoint).
    Clip(ClipArgs),
    /// Rank held-out renders' true captions among random ones with a CLIP folder.
    ClipEval(ClipEvalArgs),
    /// Train the shapes model's motion module (the image model frozen; resumable; create
    /// OUT/STOP to stop at the next step with a checkpoint).
    Motion(MotionArgs),
    /// Generate held-out motion prompts as clips and judge each: motion, objects, flicker.
    MotionEval(MotionEvalArgs),
}

/// `adiff train motion`.
#[derive(Debug, Clone, Args)]
pub struct MotionArgs {
    /// The image model the module is trained for (new runs only).
    #[arg(long, default_value = "assets/models/shapes")]
    pub base: PathBuf,
    /// Checkpoint folder (created; resumed from when it holds a checkpoint).
    #[arg(long, default_value = "target/shapes-motion-train")]
    pub out: PathBuf,
    /// Train until this many steps in total.
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// Clips per batch (new runs only).
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Peak learning rate (new runs only).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Share of the noise a clip's frames share, 0..1 (new runs only).
    #[arg(long, default_value_t = 0.5)]
    pub shared_noise: f64,
    /// Cosine learning-rate decay FROM:TO (steps); given, it also changes a resumed run.
    #[arg(long, value_parser = parse_lr_decay)]
    pub lr_decay: Option<LrDecay>,
    /// Seed (new runs only).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How often the run logs and checkpoints.
    #[command(flatten)]
    pub progress: ProgressArgs,
    /// After training, export the module (EMA weights) into this folder, e.g.
    /// assets/models/shapes/motion.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Export the raw weights instead of the EMA.
    #[arg(long)]
    pub raw: bool,
}

/// `adiff train motion-eval`.
#[derive(Debug, Clone, Args)]
pub struct MotionEvalArgs {
    /// Model folder (its `motion/` module makes the clips).
    #[arg(long, default_value = "assets/models/shapes")]
    pub model: PathBuf,
    /// One-object prompts.
    #[arg(long, default_value_t = 40)]
    pub single: usize,
    /// Two-object prompts.
    #[arg(long, default_value_t = 20)]
    pub pairs: usize,
    /// Frames per clip.
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Seed of the prompt set and the clips' noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write each clip (a filmstrip PNG) and summary.json here.
    #[arg(long)]
    pub clips: Option<PathBuf>,
}

/// `adiff train clip`.
#[derive(Debug, Clone, Args)]
pub struct ClipArgs {
    /// Checkpoint folder (created; resumed from when it holds a checkpoint).
    #[arg(long, default_value = "target/shapes-clip-train")]
    pub out: PathBuf,
    /// Train until this many steps in total.
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// Contrastive batch size (new runs only).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Peak learning rate (new runs only).
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// Architecture: standard or tiny (new runs only).
    #[arg(long, default_value = "standard")]
    pub arch: String,
    /// Seed of the data stream (new runs only).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How often the run logs and checkpoints.
    #[command(flatten)]
    pub progress: ProgressArgs,
    /// After training, export a transformers CLIPModel folder here (for `--clip DIR`).
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Train on the CPU even when a GPU is available.
    #[arg(long)]
    pub cpu: bool,
}

/// How often `adiff train shapes` and `adiff train clip` log and checkpoint.
#[derive(Debug, Clone, Args)]
pub struct ProgressArgs {
    /// Log the mean loss every N steps.
    #[arg(long, default_value_t = 50)]
    pub log_every: usize,
    /// Checkpoint every N minutes (and at the end).
    #[arg(long, default_value_t = 3.0)]
    pub ckpt_minutes: f64,
}

impl ProgressArgs {
    /// A run of `total_steps` logged and checkpointed as these options say.
    pub fn schedule(&self, total_steps: usize) -> crate::train::steps::Schedule {
        crate::train::steps::Schedule {
            total_steps,
            log_every: self.log_every,
            ckpt_every_s: self.ckpt_minutes * 60.0,
        }
    }
}

/// `adiff train clip-eval`.
#[derive(Debug, Clone, Args)]
pub struct ClipEvalArgs {
    /// CLIP folder (transformers CLIPModel format).
    #[arg(long, default_value = "assets/models/shapes-clip")]
    pub model: PathBuf,
    /// Single-object held-out renders.
    #[arg(long, default_value_t = 60)]
    pub single: usize,
    /// Two-object held-out renders.
    #[arg(long, default_value_t = 40)]
    pub pairs: usize,
    /// Captions per render (the true one included).
    #[arg(long, default_value_t = 32)]
    pub candidates: usize,
    /// Seed of the distractor captions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `adiff train pack`.
#[derive(Debug, Clone, Args)]
pub struct PackArgs {
    /// Checkpoint folder.
    #[arg(long, default_value = "target/shapes-train")]
    pub from: PathBuf,
    /// Where to write the packed copy.
    #[arg(long, default_value = "assets/models/shapes/checkpoint")]
    pub to: PathBuf,
}

/// `adiff train shapes`.
#[derive(Debug, Clone, Args)]
pub struct ShapesArgs {
    /// Checkpoint folder (created; resumed from when it holds a checkpoint).
    #[arg(long, default_value = "target/shapes-train")]
    pub out: PathBuf,
    /// Train until this many steps in total.
    #[arg(long, default_value_t = 20000)]
    pub steps: usize,
    /// Batch size (new runs only).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak learning rate (default 1e-3 for new runs; given, it also changes a resumed run).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Architecture: standard, tiny, or channels C1,C2,C3 optionally followed by /TEXT (text
    /// width) and @ATTN (blocks with attention), e.g. 16,32,64/64@1 (new runs only).
    #[arg(long, default_value = "standard")]
    pub arch: String,
    /// Seed (new runs only).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Offset-noise standard deviation (default 0.15 for new runs; given, it also changes
    /// a resumed run from here on).
    #[arg(long)]
    pub offset_noise: Option<f64>,
    /// Cosine learning-rate decay FROM:TO (steps), down to 5 % of the peak rate; given, it
    /// also changes a resumed run. `none` removes a decay.
    #[arg(long, value_parser = parse_lr_decay)]
    pub lr_decay: Option<LrDecay>,
    /// Weigh each sample's ε loss by min(1/ᾱ_t, K): K > 1 stresses the noisiest steps,
    /// where the layout is decided (1 = the plain ε loss); given, it also changes a
    /// resumed run.
    #[arg(long, value_name = "K")]
    pub high_noise_weight: Option<f64>,
    /// FROM:SHARE — a SHARE (0..1) of the samples draws its timestep from FROM..999
    /// instead of 0..999, spending more of each batch where only the caption can place
    /// the objects (e.g. 600:0.5); given, it also changes a resumed run. `none` removes it.
    #[arg(long, value_parser = parse_focus)]
    pub high_noise_focus: Option<Focus>,
    /// Discount D of multi-resolution ("pyramid") training noise: normal grids at 1/2,
    /// 1/4, … of the image size, level k weighted D^k, upsampled and added (0 = plain
    /// noise, the default for new runs; e.g. 0.9). Hides where large objects are from
    /// x_t at the noisiest steps, so the model must place them by the caption; given, it
    /// also changes a resumed run.
    #[arg(long, value_name = "D")]
    pub pyramid_noise: Option<f64>,
    /// P1,P2,P3 — shares of training scenes with 1, 2 and 3 objects, summing to 1
    /// (default 0.5,0.3,0.2 for new runs); more two- and three-object scenes train the
    /// binding of each colour and shape to its place. Given, it also changes a resumed run.
    #[arg(long, value_parser = parse_objects, value_name = "P1,P2,P3")]
    pub objects: Option<ObjectMix>,
    /// How often the run logs and checkpoints.
    #[command(flatten)]
    pub progress: ProgressArgs,
    /// After training, export the EMA weights here.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Train on the CPU even when a GPU is available (builds with `--features cuda` or
    /// `metal` train on the GPU by default).
    #[arg(long)]
    pub cpu: bool,
}

/// `adiff train export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Checkpoint folder.
    #[arg(long, default_value = "target/shapes-train")]
    pub from: PathBuf,
    /// Model folder to write.
    #[arg(long, default_value = "assets/models/shapes")]
    pub to: PathBuf,
    /// Export the raw weights instead of the EMA.
    #[arg(long)]
    pub raw: bool,
}

/// `adiff train measure`.
#[derive(Debug, Clone, Args)]
pub struct MeasureArgs {
    /// Architecture: standard, tiny, or channels C1,C2,C3 optionally followed by /TEXT (text
    /// width) and @ATTN (blocks with attention), e.g. 16,32,64/64@1.
    #[arg(long, default_value = "standard")]
    pub arch: String,
    /// Timed UNet calls.
    #[arg(long, default_value_t = 20)]
    pub calls: usize,
    /// Training batch (0: skip the training-step measurement).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Timed training steps.
    #[arg(long, default_value_t = 3)]
    pub train_steps: usize,
}

/// `adiff train eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Model folder.
    #[arg(long, default_value = "assets/models/shapes")]
    pub model: PathBuf,
    /// Single-object prompts.
    #[arg(long, default_value_t = 40)]
    pub single: usize,
    /// Two-object prompts.
    #[arg(long, default_value_t = 20)]
    pub pairs: usize,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Write the images (and a summary.json) here.
    #[arg(long)]
    pub images: Option<PathBuf>,
}

/// `adiff train probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Model folder.
    #[arg(long, default_value = "assets/models/shapes")]
    pub model: PathBuf,
    /// Seeds (1..=N); each gives five prompts.
    #[arg(long, default_value_t = 8)]
    pub seeds: u64,
    /// Timesteps to probe at, comma-separated (999 = pure noise).
    #[arg(long, value_delimiter = ',', default_value = "999,900,800,600")]
    pub timesteps: Vec<usize>,
    /// Guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
}

/// A `--lr-decay` value: `FROM:TO` steps, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LrDecay(pub Option<(usize, usize)>);

/// A parsed `--high-noise-focus` (`None`: remove the focus).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Focus(pub Option<(usize, f64)>);

fn parse_focus(s: &str) -> std::result::Result<Focus, String> {
    match none_or_pair::<usize, f64>(s) {
        Ok(None) => Ok(Focus(None)),
        Ok(Some((from, share))) if from <= 999 && (0.0..=1.0).contains(&share) => {
            Ok(Focus(Some((from, share))))
        }
        _ => Err(format!(
            "--high-noise-focus {s:?}: give FROM:SHARE with FROM a timestep in 0..=999 and SHARE in 0..=1 (e.g. 600:0.5), or none"
        )),
    }
}

/// `--objects`: shares of 1-, 2- and 3-object scenes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectMix(pub [f64; 3]);

fn parse_objects(s: &str) -> std::result::Result<ObjectMix, String> {
    let err = || {
        format!(
            "--objects {s:?}: give three shares P1,P2,P3 in 0..=1 that sum to 1 (e.g. 0.3,0.45,0.25)"
        )
    };
    let parts = s
        .split(',')
        .map(|p| p.trim().parse::<f64>().map_err(|_| err()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mix: [f64; 3] = parts.try_into().map_err(|_| err())?;
    let sum: f64 = mix.iter().sum();
    if mix.iter().all(|p| (0.0..=1.0).contains(p)) && (sum - 1.0).abs() < 1e-6 {
        Ok(ObjectMix(mix))
    } else {
        Err(err())
    }
}

/// `none` (any case) or `A:B`; `Err(())` when it is neither.
fn none_or_pair<A: std::str::FromStr, B: std::str::FromStr>(
    s: &str,
) -> std::result::Result<Option<(A, B)>, ()> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let (a, b) = s.split_once(':').ok_or(())?;
    Ok(Some((
        a.trim().parse().map_err(|_| ())?,
        b.trim().parse().map_err(|_| ())?,
    )))
}

fn parse_lr_decay(s: &str) -> std::result::Result<LrDecay, String> {
    match none_or_pair::<usize, usize>(s) {
        Ok(None) => Ok(LrDecay(None)),
        Ok(Some((from, to))) if from < to => Ok(LrDecay(Some((from, to)))),
        _ => Err(format!(
            "--lr-decay {s:?}: give FROM:TO in steps with FROM < TO (e.g. 10800:14000), or none"
        )),
    }
}

/// Run `adiff train ...`.
pub fn run(args: &TrainArgs) -> Result<()> {
    // `main` keeps freed memory in the process for every command
    // (`malloc_tuning::keep_freed_memory`), training's many large temporaries included.
    match &args.what {
        TrainCommand::Shapes(a) => train_shapes(a),
        TrainCommand::Export(a) => export(a),
        TrainCommand::Clip(a) => train_clip(a),
        TrainCommand::ClipEval(a) => clip_eval(a),
        TrainCommand::Measure(a) => measure(a),
        TrainCommand::Pack(a) => pack(a),
        TrainCommand::Probe(a) => probe(a),
        TrainCommand::Eval(a) => eval(a),
        TrainCommand::Motion(a) => train_motion(a),
        TrainCommand::MotionEval(a) => motion_eval(a),
    }
}

/// `adiff train motion`.
fn train_motion(a: &MotionArgs) -> Result<()> {
    use crate::train::motion::{MotionTrainConfig, MotionTrainer};
    ensure!(a.batch >= 1, "--batch must be at least 1 (got {})", a.batch);
    ensure!(
        (0.0..1.0).contains(&a.shared_noise),
        "--shared-noise {} is out of range: give a share in 0..1 (e.g. 0.5)",
        a.shared_noise
    );
    let config = MotionTrainConfig {
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        shared_noise: a.shared_noise,
        ..Default::default()
    };
    let mut t = MotionTrainer::open(&a.out, &a.base, config)?;
    if let Some(LrDecay(d)) = a.lr_decay {
        t.config.lr_decay = d;
    }
    eprintln!(
        "motion module: {} parameters trained, step {} of {}, {} clips × {} frames per batch, {:.0} s trained so far; checkpoints in {}",
        t.num_parameters(),
        t.step,
        a.steps,
        t.config.batch,
        t.config.frames,
        t.train_seconds,
        a.out.display()
    );
    t.run(
        &a.out,
        &a.progress.schedule(a.steps),
        &crate::train::steps::stop_file(&a.out),
        &mut |line| eprintln!("{line}"),
    )?;
    if let Some(out) = &a.export {
        t.export(out, !a.raw)?;
        eprintln!("exported the motion module to {}", out.display());
    }
    Ok(())
}

/// `adiff train motion-eval`.
fn motion_eval(a: &MotionEvalArgs) -> Result<()> {
    use crate::train::motion_eval::{MotionEvalOptions, evaluate};
    if let Some(d) = &a.clips {
        std::fs::create_dir_all(d)?;
    }
    let opts = MotionEvalOptions {
        single: a.single,
        pairs: a.pairs,
        frames: a.frames,
        steps: a.steps,
        guidance: a.guidance,
        seed: a.seed,
    };
    let report = evaluate(
        &a.model,
        &opts,
        &mut |i, prompt, frames| {
            if let Some(d) = &a.clips {
                let strip = crate::output::clip::filmstrip(frames);
                let name = format!("{i:03}-{}.png", prompt.replace(' ', "_"));
                crate::output::write_png(&d.join(name), &strip)?;
            }
            Ok(())
        },
        &mut |line| eprintln!("{line}"),
    )?;
    println!("{}", report.single.line("one object"));
    println!("{}", report.pairs.line("two objects"));
    println!("{:.2} s per clip", report.seconds_per_clip);
    if let Some(d) = &a.clips {
        crate::output::write_json(&d.join("summary.json"), &report)?;
    }
    Ok(())
}

/// `adiff train shapes`: start or resume the run in `--out`, apply the options that also
/// change a resumed run, train until `--steps` (or until a file STOP appears in `--out`),
/// then export if asked.
fn train_shapes(a: &ShapesArgs) -> Result<()> {
    ensure!(a.batch >= 1, "--batch must be at least 1 (got {})", a.batch);
    let config = TrainConfig {
        arch: Arch::parse(&a.arch).context("--arch")?,
        batch: a.batch,
        lr: a.lr.unwrap_or(1e-3),
        seed: a.seed,
        ..TrainConfig::default()
    };
    if let Some(o) = a.offset_noise {
        ensure!(
            (0.0..=1.0).contains(&o),
            "--offset-noise {o} is out of range: give a standard deviation in 0..=1 (e.g. 0.15)"
        );
    }
    let device = super::device(a.cpu);
    let on = if device.is_cpu() { "CPU" } else { "GPU" };
    let mut t = Trainer::open_on(&a.out, config, device)?;
    apply_run_options(&mut t.config, a)?;
    eprintln!("{}", shapes_run_summary(&t, a, on));
    t.run(
        &a.out,
        &a.progress.schedule(a.steps),
        &crate::train::steps::stop_file(&a.out),
        &mut |line| eprintln!("{line}"),
    )?;
    eprintln!(
        "stopped at step {} ({:.0} s trained)",
        t.step, t.train_seconds
    );
    if let Some(dir) = &a.export {
        t.export(dir, true)?;
        eprintln!("exported the EMA weights to {}", dir.display());
    }
    Ok(())
}

/// Set the options of `adiff train shapes` that, given, also change a resumed run (whose
/// `config` comes from its checkpoint); checks their ranges (`--offset-noise` is checked
/// before the run is opened).
fn apply_run_options(config: &mut TrainConfig, a: &ShapesArgs) -> Result<()> {
    if let Some(o) = a.offset_noise {
        config.offset_noise = o;
    }
    if let Some(LrDecay(d)) = a.lr_decay {
        config.lr_decay = d;
    }
    if let Some(lr) = a.lr {
        ensure!(
            lr.is_finite() && lr > 0.0 && lr <= 0.1,
            "--lr {lr} is out of range: give a learning rate in (0, 0.1] (e.g. 1e-3)"
        );
        config.lr = lr;
    }
    if let Some(d) = a.pyramid_noise {
        ensure!(
            (0.0..1.0).contains(&d),
            "--pyramid-noise {d} is out of range: give a discount in 0..1 (0 = plain noise, e.g. 0.9)"
        );
        config.pyramid_noise = d;
    }
    if let Some(Focus(f)) = a.high_noise_focus {
        config.high_noise_focus = f;
    }
    if let Some(ObjectMix(m)) = a.objects {
        config.objects = m;
    }
    if let Some(k) = a.high_noise_weight {
        ensure!(
            k.is_finite() && (1.0..=1000.0).contains(&k),
            "--high-noise-weight {k} is out of range: give a cap in 1..=1000 (1 = the plain ε loss, e.g. 50)"
        );
        config.high_noise_weight = k;
    }
    Ok(())
}

/// The line that opens a shapes run: its size, where it stands and its settings.
fn shapes_run_summary(t: &Trainer, a: &ShapesArgs, on: &str) -> String {
    let c = &t.config;
    let focus = match c.high_noise_focus {
        Some((from, share)) => {
            format!("{:.0} % of timesteps from {from}..999", share * 100.0)
        }
        None => "uniform timesteps".into(),
    };
    let decay = match c.lr_decay {
        Some((from, to)) => format!("cosine decay {from}→{to}"),
        None => "no decay".into(),
    };
    let [p1, p2, p3] = c.objects;
    format!(
        "{} parameters; step {} of {}; batch {}; scenes with 1/2/3 objects {p1}/{p2}/{p3}; offset noise {}; pyramid noise {}; high-noise weight cap {}; {focus}; lr {:.1e}, {decay}; on the {on}; checkpoints in {}",
        t.num_parameters(),
        t.step,
        a.steps,
        c.batch,
        c.offset_noise,
        c.pyramid_noise,
        c.high_noise_weight,
        c.lr,
        a.out.display()
    )
}

/// `adiff train export`.
fn export(a: &ExportArgs) -> Result<()> {
    crate::train::export_from_checkpoint(&a.from, &a.to, !a.raw)?;
    eprintln!("exported {} to {}", a.from.display(), a.to.display());
    Ok(())
}

/// `adiff train pack`.
fn pack(a: &PackArgs) -> Result<()> {
    crate::train::pack_checkpoint(&a.from, &a.to)?;
    eprintln!("packed {} into {}", a.from.display(), a.to.display());
    Ok(())
}

/// `adiff train clip`: start or resume the tiny-CLIP run in `--out`, train, export if asked.
fn train_clip(a: &ClipArgs) -> Result<()> {
    ensure!(a.batch >= 1, "--batch must be at least 1 (got {})", a.batch);
    let device = super::device(a.cpu);
    let config = crate::train::clip::ClipTrainConfig {
        arch: crate::train::clip::ClipArch::parse(&a.arch).context("--arch")?,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        ..Default::default()
    };
    let mut t = crate::train::clip::ClipTrainer::open(&a.out, config, device)?;
    eprintln!(
        "tiny CLIP: {} parameters; step {} of {}; batch {}; checkpoints in {}",
        t.num_parameters(),
        t.step,
        a.steps,
        t.config.batch,
        a.out.display()
    );
    t.run(&a.out, &a.progress.schedule(a.steps), &mut |line| {
        eprintln!("{line}")
    })?;
    if let Some(dir) = &a.export {
        t.export(dir)?;
        eprintln!("exported the CLIP to {}", dir.display());
    }
    Ok(())
}

/// `adiff train clip-eval`: how often each held-out render's true caption ranks first.
fn clip_eval(a: &ClipEvalArgs) -> Result<()> {
    let scorer = crate::metrics::clip::ClipScorer::from_dir(&a.model, &Device::Cpu)?;
    let scores =
        crate::train::clip::rank_accuracy(&scorer, a.single, a.pairs, a.candidates, a.seed)?;
    for s in &scores {
        println!(
            "{:<6} true caption first among {}: {} / {} ({:.1} %)",
            s.group,
            s.candidates,
            s.top1,
            s.renders,
            100.0 * s.top1 as f64 / s.renders.max(1) as f64
        );
    }
    let (top1, n) = scores
        .iter()
        .fold((0, 0), |(a, b), s| (a + s.top1, b + s.renders));
    println!(
        "all    {top1} / {n} ({:.1} %)",
        100.0 * top1 as f64 / n.max(1) as f64
    );
    Ok(())
}

/// `adiff train probe`: one line per probed timestep.
fn probe(a: &ProbeArgs) -> Result<()> {
    let g = crate::train::eval::Generator::load(&a.model)?;
    let rows = crate::train::probe::probe(&g, a.seeds, &a.timesteps, a.guidance)?;
    println!(
        "position probe of {} ({} seeds × 5 positions, guidance {}): distance (px) from the colour's centre to the named position",
        a.model.display(),
        a.seeds,
        a.guidance
    );
    for r in &rows {
        println!(
            "t {:>3}: distance {:>5.2} (if the words were ignored: {:>5.2})  moved by the words {:>5.2}  nearest the named position {:>3}/{}  corners' sides {:>3}/{}  | from a render's trace in x_t, no position words: nearest the rendered position {:>3}/{}",
            r.timestep,
            r.distance,
            r.distance_if_ignored,
            r.spread,
            r.nearest_right,
            r.prompts,
            r.sides_right,
            r.sides,
            r.trace_right,
            r.prompts
        );
    }
    Ok(())
}

/// `adiff train eval`: score held-out prompts; with `--images`, keep each image (named by
/// its verdict and prompt) and the scores as `summary.json`.
fn eval(a: &EvalArgs) -> Result<()> {
    let g = crate::train::eval::Generator::load(&a.model)?;
    if let Some(d) = &a.images {
        std::fs::create_dir_all(d)?;
    }
    let scores = crate::train::eval::score_held_out(
        &g,
        a.single,
        a.pairs,
        a.steps,
        a.guidance,
        &mut |prompt, i, img, ok| {
            if let Some(d) = &a.images {
                save_eval_image(d, prompt, i, img, ok);
            }
        },
    )?;
    for s in &scores {
        println!("{}", eval_score_line(s));
    }
    if let Some(d) = &a.images {
        std::fs::write(
            d.join("summary.json"),
            serde_json::to_string_pretty(&scores)?,
        )?;
    }
    Ok(())
}

/// Write one evaluated image into `dir` as `ok|bad-III-PROMPT.png` (a failure is a warning).
fn save_eval_image(dir: &Path, prompt: &str, i: usize, img: &image::RgbImage, ok: bool) {
    let name = format!(
        "{}-{i:03}-{}.png",
        if ok { "ok" } else { "bad" },
        prompt.replace(' ', "_")
    );
    if let Err(e) = img.save(dir.join(&name)) {
        eprintln!("warning: could not write {name} to {}: {e}", dir.display());
    }
}

/// One group's line of `adiff train eval`.
fn eval_score_line(s: &crate::train::eval::GroupScore) -> String {
    format!(
        "{:<7} {:>3} images: all right {:>5.1} %  background {:>5.1} %  objects {:>5.1} %  extra objects {:.2}/image  {:.2} s/image{}",
        s.group,
        s.images,
        100.0 * s.all_right as f64 / s.images as f64,
        100.0 * s.background_right as f64 / s.images as f64,
        100.0 * s.objects_right as f64 / s.objects.max(1) as f64,
        s.extra_objects as f64 / s.images as f64,
        s.seconds_per_image,
        if s.corner_sides > 0 {
            format!(
                "  corners' sides {:.1} % (one side of two: 50 %)",
                100.0 * s.corner_sides_right as f64 / s.corner_sides as f64
            )
        } else {
            String::new()
        }
    )
}

/// `adiff train measure`: time a guided UNet call and, unless `--batch 0`, a training step.
fn measure(a: &MeasureArgs) -> Result<()> {
    let arch = Arch::parse(&a.arch).context("--arch")?;
    measure_unet_call(&arch, a.calls)?;
    if a.batch > 0 {
        measure_train_step(arch, a.batch, a.train_steps)?;
    }
    Ok(())
}

/// Time a batch-2 UNet call of `arch` (`calls` times with each convolution path).
fn measure_unet_call(arch: &Arch, calls: usize) -> Result<()> {
    let (ucfg, _) = arch.configs()?;
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let unet = UNet::new(VarBuilder::from_varmap(&vm, DType::F32, &dev), &ucfg)?;
    let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &dev)?;
    let ctx = Tensor::randn(
        0f32,
        1.0,
        (2, crate::shapes::vocab::MAX_LEN, arch.text_hidden),
        &dev,
    )?;
    // Two untimed rounds first, one with each path.
    let secs = time_both_convolutions(calls.max(1), 2, || {
        unet.forward(&x, 500.0, &ctx, None)?;
        Ok(())
    })?;
    let ms = secs.map(|s| s * 1e3);
    println!(
        "arch {:?}: UNet {n} parameters; batch-2 call {:.2} ms; 50 guided steps ≈ {:.2} s \
         (candle's own CPU convolution: {:.2} ms, {:.2}× slower)",
        arch.block_out_channels,
        ms[0],
        ms[0] * 50.0 / 1e3,
        ms[1],
        ms[1] / ms[0]
    );
    Ok(())
}

/// Time a training step of `arch` on a batch of `batch` (`steps` times with each
/// convolution path), in a throw-away checkpoint folder.
fn measure_train_step(arch: Arch, batch: usize, steps: usize) -> Result<()> {
    let dir = tempfile_dir()?;
    let mut t = Trainer::new(
        TrainConfig {
            arch,
            batch,
            ..TrainConfig::default()
        },
        &dir,
    )?;
    t.train_step()?;
    // The slow path is the convolution composed of basic ops.
    let secs = time_both_convolutions(steps.max(1), 0, || t.train_step().map(drop))?;
    println!(
        "training: {} parameters in all; batch {}: {:.3} s/step = {:.2} steps/s \
         (convolutions composed of basic ops: {:.3} s/step, {:.2}× slower)",
        t.num_parameters(),
        batch,
        secs[0],
        1.0 / secs[0],
        secs[1],
        secs[1] / secs[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Mean seconds of one `f()` with the CPU patch-op convolution and without it
/// (`[with, without]`), `runs` of each, alternating the two so that both see the same
/// machine load, after `untimed` rounds (alternating too). Leaves the patch-op convolution on.
fn time_both_convolutions(
    runs: usize,
    untimed: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<[f64; 2]> {
    let mut secs = [0.0f64; 2];
    for round in 0..2 * runs + untimed {
        let fast = round % 2 == 0;
        crate::model::cpu_conv::set_enabled(fast);
        let t0 = Instant::now();
        f()?;
        if round >= untimed {
            secs[usize::from(!fast)] += t0.elapsed().as_secs_f64() / runs as f64;
        }
    }
    crate::model::cpu_conv::set_enabled(true);
    Ok(secs)
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("adiff-measure-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_noise_focus_parses_a_start_and_share_and_rejects_the_rest() {
        assert_eq!(parse_focus("600:0.5"), Ok(Focus(Some((600, 0.5)))));
        assert_eq!(parse_focus(" 0 : 1 "), Ok(Focus(Some((0, 1.0)))));
        assert_eq!(parse_focus("NONE"), Ok(Focus(None)));
        for bad in ["1000:0.5", "600:1.5", "600:-0.1", "600", "a:0.5", "600:x"] {
            let e = parse_focus(bad).unwrap_err();
            assert!(e.contains("FROM:SHARE"), "{bad}: {e}");
        }
    }

    #[test]
    fn object_mix_parses_three_shares_summing_to_one_and_rejects_the_rest() {
        assert_eq!(
            parse_objects("0.3,0.45,0.25"),
            Ok(ObjectMix([0.3, 0.45, 0.25]))
        );
        assert_eq!(parse_objects(" 1 , 0 , 0 "), Ok(ObjectMix([1.0, 0.0, 0.0])));
        for bad in [
            "0.5,0.3",
            "0.5,0.3,0.3",
            "1.5,-0.5,0",
            "a,b,c",
            "0.2,0.3,0.3,0.2",
            "",
        ] {
            let e = parse_objects(bad).unwrap_err();
            assert!(e.contains("P1,P2,P3"), "{bad}: {e}");
        }
    }

    #[test]
    fn lr_decay_parses_steps_and_none_and_rejects_the_rest() {
        assert_eq!(
            parse_lr_decay("10800:14000"),
            Ok(LrDecay(Some((10800, 14000))))
        );
        assert_eq!(parse_lr_decay("none"), Ok(LrDecay(None)));
        for bad in ["14000:10800", "5:5", "10800", "a:b", "1:-2"] {
            let e = parse_lr_decay(bad).unwrap_err();
            assert!(e.contains("FROM:TO"), "{bad}: {e}");
        }
    }
}
