//! The flags of `adiff train`'s subcommands, and the parsers of their compound values
//! (`--lr-decay`, `--high-noise-focus`, `--objects`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

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
    /// Probe whether a shapes model follows its noise: the same noise shifted by k px,
    /// does the object move k px? (What warped noise needs of the image model.)
    ShiftProbe(ShiftProbeArgs),
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
    /// A motion-module checkpoint's loss per band of noise levels, with its modules and
    /// with them switched off (`proj_out` zeroed), on the same batches: where it helps.
    MotionLoss(MotionLossArgs),
}

/// `adiff train motion-loss`.
#[derive(Debug, Clone, Args)]
pub struct MotionLossArgs {
    /// Checkpoint folder of `adiff train motion`.
    #[arg(long, default_value = "target/shapes-motion-train")]
    pub out: PathBuf,
    /// Batches per band (each the run's batch size of clips).
    #[arg(long, default_value_t = 8)]
    pub batches: usize,
    /// Seed of the batches.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
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
    /// Extra loss weight where a clip changes (a pixel weighs 1 + K·|its change from the
    /// clip's mean|; 0 = plain ε loss); given, it also changes a resumed run.
    #[arg(long)]
    pub motion_weight: Option<f64>,
    /// FROM:SHARE — a SHARE (0..1) of the clips draws its timestep from FROM..999 instead
    /// of 0..999 (new runs: 600:0.5), spending the steps where a clip's layout is decided
    /// (e.g. 800:1); given, it also changes a resumed run. `none` removes it.
    #[arg(long, value_parser = parse_focus)]
    pub high_noise_focus: Option<Focus>,
    /// Train the image UNet too, at this share of the learning rate (a domain adapter:
    /// the module folder then carries its own `unet/`). Given, it also changes a resumed run
    /// (the UNet joins at the checkpoint's step; a run that trains it keeps training it).
    #[arg(long, value_name = "SHARE")]
    pub adapt_base: Option<f64>,
    /// Warped noise with this SHARE (0..=1) of the noise shared: a clip's shared noise moves
    /// with its objects (each frame a window of one larger canvas), and the exported module
    /// moves it by the prompt's motion words at generation (Go-with-the-Flow's prior).
    /// Given, it also changes a resumed run (`--shared-noise` then does not apply).
    #[arg(long, value_name = "SHARE")]
    pub warped_noise: Option<f64>,
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
    /// Record the clips right per motion in the module's `motion/config.json`
    /// (`"evaluated"`), with this command and DATE (e.g. 2026-12-07): prompts asking for a
    /// motion the module mostly fails are then warned about.
    #[arg(long, value_name = "DATE")]
    pub record: Option<String>,
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
    /// Share (0..=1) of training scenes whose objects are drawn anywhere in the picture,
    /// their captions naming no position (0, the default for new runs: every object at one
    /// of the five nominal places). Meant for an image model under a motion module, whose
    /// clips put the object between those places (tried: not enough by itself, see the
    /// motion module's TRAINING.md). Given, it also changes a resumed run.
    #[arg(long, value_name = "SHARE")]
    pub free_placement: Option<f64>,
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

/// `adiff train shift-probe`.
#[derive(Debug, Clone, Args)]
pub struct ShiftProbeArgs {
    /// Model folder.
    #[arg(long, default_value = "assets/models/shapes")]
    pub model: PathBuf,
    /// Seeds (1..=N); each one noise canvas and prompt.
    #[arg(long, default_value_t = 12)]
    pub seeds: u64,
    /// Shifts of the noise to the right, px, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,12")]
    pub shifts: Vec<usize>,
    /// DDIM steps.
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    /// Guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Pyramid discount of the noise (0: plain Gaussian noise, as an image starts from;
    /// a motion module's shared noise is drawn with 0.9).
    #[arg(long, default_value_t = 0.0)]
    pub pyramid: f64,
}

/// A `--lr-decay` value: `FROM:TO` steps, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LrDecay(pub Option<(usize, usize)>);

/// A parsed `--high-noise-focus` (`None`: remove the focus).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Focus(pub Option<(usize, f64)>);

pub(super) fn parse_focus(s: &str) -> std::result::Result<Focus, String> {
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

pub(super) fn parse_objects(s: &str) -> std::result::Result<ObjectMix, String> {
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
pub(super) fn none_or_pair<A: std::str::FromStr, B: std::str::FromStr>(
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

pub(super) fn parse_lr_decay(s: &str) -> std::result::Result<LrDecay, String> {
    match none_or_pair::<usize, usize>(s) {
        Ok(None) => Ok(LrDecay(None)),
        Ok(Some((from, to))) if from < to => Ok(LrDecay(Some((from, to)))),
        _ => Err(format!(
            "--lr-decay {s:?}: give FROM:TO in steps with FROM < TO (e.g. 10800:14000), or none"
        )),
    }
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
