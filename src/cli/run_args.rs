//! The options of `generate` and `compare`, and the [`Job`] they describe.

use super::complexity::ScoringArgs;
use crate::complexity::{BudgetMode, ComplexityBudget, Scoring};
use crate::job::{self, Job, defaults, method_spec};
use crate::model::lora::LoraSpec;
use crate::model::{HubOptions, ModelSource};
use crate::sampler::{Method, MethodKind, PredictionType, SchedulerKind};
use anyhow::{Result, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

/// Where the weights come from (shared by every command that loads a pipeline).
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A local model: a single-file checkpoint (SD 1.x, 2.x or SDXL, e.g.
    /// v1-5-pruned-emaonly.safetensors, as AUTOMATIC1111 / ComfyUI keep them) or a
    /// diffusers-format pipeline folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long, conflicts_with = "model")]
    pub weights: Option<PathBuf>,
    /// A model from the Hugging Face hub: sd15, sd21, sdxl or sd-turbo; or `shapes`, the
    /// built-in offline model (assets/models/shapes), the default when neither --model nor
    /// --weights is given and Stable Diffusion 1.5 is not in the hub cache.
    #[arg(long)]
    pub model: Option<String>,
    /// A VAE weights file used instead of the model's own: a standalone VAE in the
    /// original layout (e.g. vae-ft-mse-840000-ema-pruned.safetensors), a diffusers VAE's
    /// diffusion_pytorch_model.safetensors, or a single-file checkpoint (its VAE is taken).
    #[arg(long, value_name = "FILE")]
    pub vae: Option<PathBuf>,
    /// A LoRA merged into the weights at load, with its scale (default 1): kohya /
    /// AUTOMATIC1111 (lora_unet_*, lora_te_*), diffusers / PEFT (unet.*.lora_A.weight) or
    /// LyCORIS LoHa / LoKr. Repeat for several.
    #[arg(long = "lora", value_name = "FILE[:SCALE]", value_parser = parse_lora)]
    pub loras: Vec<LoraSpec>,
    /// What the model predicts, when its config does not say or says wrong: `v` for SD 2.x
    /// 768-px and other v-prediction models, `epsilon` for the rest. Single-file SD 2.x
    /// checkpoints are taken as `v` unless told.
    #[arg(long, value_enum)]
    pub prediction: Option<PredictionArg>,
    /// An AnimateDiff motion module added to an SD 1.x model, which then makes video: a
    /// diffusers MotionAdapter folder or its .safetensors, or an original AnimateDiff file
    /// (mm_sd_v15_v2.safetensors, v3).
    #[arg(long, value_name = "PATH")]
    pub motion: Option<PathBuf>,
}

/// `--prediction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PredictionArg {
    /// The noise ε (SD 1.x, SD 2.x base, SDXL).
    Epsilon,
    /// v = α·ε − σ·x₀ (SD 2.x 768-px).
    V,
}

fn parse_lora(s: &str) -> Result<LoraSpec, String> {
    s.parse()
}

impl ModelArgs {
    /// Set the job's model, VAE, LoRAs and prediction type from these options.
    pub fn apply_to(&self, job: &mut Job) -> Result<()> {
        job.model = self.source()?;
        job.vae = self.vae.clone();
        job.loras = self.loras.clone();
        job.motion = self.motion.clone();
        job.prediction = self.prediction.map(|p| match p {
            PredictionArg::Epsilon => PredictionType::Epsilon,
            PredictionArg::V => PredictionType::VPrediction,
        });
        Ok(())
    }
}

impl ModelArgs {
    /// The model these options name; without either, the default model, with a note on
    /// stderr saying which and why.
    pub fn source(&self) -> Result<ModelSource> {
        Ok(match (&self.weights, &self.model) {
            (Some(dir), _) => ModelSource::Local(dir.clone()),
            (None, Some(name)) => ModelSource::from_name(name)?,
            (None, None) => {
                let (source, why) = ModelSource::default_for(&HubOptions::default());
                let hint = match &source {
                    ModelSource::Local(_) => {
                        " (pass --model sd15 to download Stable Diffusion 1.5)"
                    }
                    ModelSource::Hub(_) => "",
                };
                eprintln!("note: no --model or --weights given: {why}{hint}");
                source
            }
        })
    }
}

/// A number format for the model weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

impl DTypeArg {
    /// The candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            DTypeArg::F32 => candle_core::DType::F32,
            DTypeArg::F16 => candle_core::DType::F16,
            DTypeArg::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// Options shared by `generate` and `compare`.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// The negative prompt (empty: unconditional).
    #[arg(long, default_value = "")]
    pub negative: String,
    /// The model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Scheduler: ddim, euler or dpm++.
    #[arg(long, default_value = defaults::SCHEDULER.name())]
    pub scheduler: String,
    /// Number of denoising steps (the budget).
    #[arg(long, default_value_t = defaults::STEPS, allow_negative_numbers = true)]
    pub steps: usize,
    /// Classifier-free guidance scale (≤ 1 turns guidance off).
    #[arg(long, default_value_t = defaults::GUIDANCE, allow_negative_numbers = true)]
    pub guidance: f64,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = defaults::SEED, allow_negative_numbers = true)]
    pub seed: u64,
    /// Image width in pixels (multiple of 8; default: the model's native size).
    #[arg(long, allow_negative_numbers = true)]
    pub width: Option<usize>,
    /// Image height in pixels (multiple of 8; default: the model's native size).
    #[arg(long, allow_negative_numbers = true)]
    pub height: Option<usize>,
    /// δ, the adaptive rule's relative threshold.
    #[arg(long, default_value_t = defaults::DELTA, allow_negative_numbers = true)]
    pub delta: f64,
    /// C_max, the most consecutive skipped steps.
    #[arg(long, default_value_t = defaults::MAX_SKIPS, allow_negative_numbers = true)]
    pub max_skips: usize,
    /// Stop when the latent has converged (relative change below τ for 3 steps, armed after
    /// 75 % of the budget) and output the predicted clean image.
    #[arg(long)]
    pub early_stop: bool,
    /// τ of the early stop (with --early-stop).
    #[arg(
        long,
        default_value_t = defaults::EARLY_STOP_TAU,
        requires = "early_stop",
        allow_negative_numbers = true
    )]
    pub early_stop_tau: f64,
    /// Start from these latents (safetensors, f32 NCHW tensor `latents`, already scaled by
    /// the scheduler's initial σ) instead of seeded noise.
    #[arg(long)]
    pub init_latents: Option<PathBuf>,
    /// Write the final latents (before VAE decoding) to this safetensors file.
    #[arg(long)]
    pub latents_out: Option<PathBuf>,
    /// Truncate prompts longer than the text encoder's 77 tokens instead of failing.
    #[arg(long)]
    pub truncate: bool,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    pub cpu: bool,
    /// The UNet's number format [default: f32 on the CPU, f16 on a GPU].
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
    /// The output image (.png, .jpg or .webp); for a video model, .gif writes the clip as a
    /// looping animation (`compare`: both clips side by side) and an image format writes
    /// the frames in a grid.
    #[arg(long)]
    pub out: PathBuf,
    /// Frames of a video model's clip [default: the model's, 16].
    #[arg(long, allow_negative_numbers = true)]
    pub frames: Option<usize>,
    /// Frames per second of a written clip.
    #[arg(long, default_value_t = 8.0, allow_negative_numbers = true)]
    pub fps: f64,
    /// Write a video model's frames here as frame_000.png, … (`compare`: DIR/left/ and
    /// DIR/right/).
    #[arg(long, value_name = "DIR")]
    pub frames_out: Option<PathBuf>,
    /// Write the per-step trace as JSON here.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Step budget of the adaptive run: fixed (--steps) or auto (from the prompt's
    /// complexity score, relative to --steps; the baseline keeps --steps).
    #[arg(long, value_enum, default_value_t = BudgetMode::Fixed)]
    pub budget: BudgetMode,
    /// Complexity scorer and budget mapping (used with --budget auto).
    #[command(flatten)]
    pub scoring: ScoringArgs,
}

/// `--mode`: the old spelling of `--method` for its first two methods.
fn mode_parser() -> impl TypedValueParser<Value = MethodKind> {
    PossibleValuesParser::new([MethodKind::BASELINE, MethodKind::ADAPTIVE].map(MethodKind::name))
        .try_map(|s| s.parse::<MethodKind>())
}

/// `adiff generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// baseline or adaptive (with --delta and --max-skips); --method names any method.
    #[arg(long, value_parser = mode_parser(), conflicts_with = "method")]
    pub mode: Option<MethodKind>,
    /// The acceleration method as NAME[:KEY=VALUE,…], e.g. adaptive:delta=0.02,max_skips=3,
    /// steps:n=25, deepcache:interval=3 (`adiff methods` lists every method with its keys,
    /// defaults and ranges) [default: adaptive with --delta and --max-skips].
    #[arg(long, conflicts_with_all = ["delta", "max_skips"])]
    pub method: Option<String>,
}

impl GenerateArgs {
    /// The method of the run: `--method`, or `--mode` with `--delta` / `--max-skips`.
    pub fn method(&self) -> Result<Method> {
        Ok(match (&self.method, self.mode) {
            (Some(spec), _) => method_spec::parse(spec)?,
            (None, Some(k)) if k == MethodKind::BASELINE => Method::BASELINE,
            (None, _) => self.common.adaptive(),
        })
    }
}

/// `adiff compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The left (reference) side's method, as for `generate --method`.
    #[arg(long, default_value = "baseline")]
    pub left: String,
    /// The right side's method [default: adaptive with --delta and --max-skips].
    #[arg(long, conflicts_with_all = ["delta", "max_skips"])]
    pub right: Option<String>,
}

impl CompareArgs {
    /// The left and right methods.
    pub fn methods(&self) -> Result<(Method, Method)> {
        let left = method_spec::parse(&self.left)?;
        let right = match &self.right {
            Some(spec) => method_spec::parse(spec)?,
            None => self.common.adaptive(),
        };
        Ok((left, right))
    }
}

impl CommonArgs {
    /// AdaptiveDiffusion with `--delta` and `--max-skips`.
    pub fn adaptive(&self) -> Method {
        Method::adaptive(self.delta, self.max_skips)
    }

    /// The job these options describe, validated: every check that needs no model happens
    /// here, before anything is loaded.
    pub fn to_job(&self, method: Method) -> Result<Job> {
        let scheduler: SchedulerKind = self.scheduler.parse().map_err(anyhow::Error::msg)?;
        let mut job = Job::new(ModelSource::Local(PathBuf::new()), self.prompt.clone());
        job.negative = self.negative.clone();
        job.scheduler = scheduler;
        job.steps = self.steps;
        job.guidance = self.guidance;
        job.seed = self.seed;
        job.width = self.width;
        job.height = self.height;
        job.method = method;
        job.early_stop = job::early_stop(self.early_stop, self.early_stop_tau);
        job.init_latents = self.init_latents.clone();
        job.truncate = self.truncate;
        job.force_cpu = self.cpu;
        job.dtype = self.dtype.map(DTypeArg::dtype);
        job.frames = self.frames;
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 100.0) {
            bail!(
                "--fps must be a number of frames per second above 0 and at most 100 (got {})",
                self.fps
            );
        }
        if self.budget == BudgetMode::Auto {
            if method.adaptive_rule().is_none() {
                bail!(
                    "--budget auto chooses the adaptive run's steps; with --mode baseline give the budget with --steps"
                );
            }
            job.budget = Some(self.scoring.scoring());
        }
        job.validate()?;
        self.model.apply_to(&mut job)?;
        Ok(job)
    }

    /// The output files of the command, each with its flag.
    pub fn outputs(&self) -> Vec<(&'static str, &Path)> {
        let mut v = vec![("--out", self.out.as_path())];
        v.extend(self.trace.as_deref().map(|p| ("--trace", p)));
        v.extend(self.latents_out.as_deref().map(|p| ("--latents-out", p)));
        v
    }
}

/// `--budget auto`: score the prompt and choose the method's budget; print the decision
/// (and any fallback warning) on stderr.
pub fn decide_budget(job: &Job) -> Result<Option<ComplexityBudget>> {
    let Some(scoring) = &job.budget else {
        return Ok(None);
    };
    let (engine, map) = (scoring.engine()?, scoring.mapping()?);
    let decision = Scoring::decide(&engine, &map, &job.prompt, job.steps, job.method);
    super::complexity::warn_fallback(&decision.complexity);
    let (c, b) = (&decision.complexity, &decision.budget);
    eprintln!(
        "complexity {:.2} (level {} of {}, {}): {} → adaptive budget {} of {} steps",
        c.score,
        b.level,
        b.levels,
        c.scorer.name(),
        c.factors.describe(),
        b.steps,
        b.baseline_steps
    );
    Ok(Some(decision))
}
