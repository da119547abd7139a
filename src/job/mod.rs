//! One description of a run: [`Job`]. The command line, the desktop app and the benchmark
//! each build a `Job` from their own inputs, [`Job::validate`] checks it once (its errors
//! name the *setting*, each front end words them), and [`crate::pipeline`] runs it. The
//! defaults of every setting live here, in [`defaults`], and nowhere else.
//!
//! A job compares the fixed-step baseline with one acceleration [`Method`]; what actually
//! runs is a list of [`Pass`]es: the baseline's, and the method's (with the step budget the
//! prompt's complexity chose, when [`Job::budget`] asks for one).

pub mod method_spec;

use crate::complexity::{ComplexityBudget, Scoring};
use crate::field::{Field, FieldError};
use crate::model::ModelSource;
use crate::model::lora::LoraSpec;
use crate::sampler::{EarlyStop, Method, PredictionType, SchedulerKind};
use candle_core::DType;
use std::path::PathBuf;

/// The default of every setting of a run.
pub mod defaults {
    use crate::sampler::{Method, SchedulerKind};

    /// Denoising steps.
    pub const STEPS: usize = 50;
    /// Classifier-free guidance scale.
    pub const GUIDANCE: f64 = 7.5;
    /// Seed of the initial noise.
    pub const SEED: u64 = 42;
    /// δ of AdaptiveDiffusion (the published default; its key's default in the registry).
    pub const DELTA: f64 = crate::sampler::methods::adaptive::KEYS[0].default;
    /// C_max of AdaptiveDiffusion (the published default; its key's default in the registry).
    pub const MAX_SKIPS: usize = crate::sampler::methods::adaptive::KEYS[1].default as usize;
    /// τ of the early stop.
    pub const EARLY_STOP_TAU: f64 = 0.03;
    /// The scheduler.
    pub const SCHEDULER: SchedulerKind = SchedulerKind::Ddim;
    /// AdaptiveDiffusion with its published δ and C_max.
    pub const ADAPTIVE: Method = Method::adaptive(DELTA, MAX_SKIPS);
}

/// The largest values of the settings that can still give a finite, meaningful image.
pub mod limits {
    /// Classifier-free guidance: at 100 the guided prediction is already a hundred times
    /// the model's own text direction and every image saturates; far beyond it the f32
    /// latents overflow (a black image).
    pub const GUIDANCE: f64 = 100.0;
    /// δ: at 10 the third-order test (which is never larger than the largest of the last
    /// three latent changes) passes unless consecutive changes differ tenfold; above it
    /// only C_max decides.
    pub const DELTA: f64 = 10.0;
    /// τ: a relative change of 1 means the latent moved by its own size; τ ≥ 1 stops at
    /// the first armed step whatever the image does.
    pub const EARLY_STOP_TAU: f64 = 1.0;
    /// Image side in pixels: larger than any supported model was trained for many times
    /// over (SDXL: 1024).
    pub const SIDE: usize = 8192;
    /// Frames of a clip: a video UNet runs them as one batch, and motion modules carry at
    /// most 32 positions.
    pub const FRAMES: usize = 128;
}

/// Everything that defines one run (or one baseline/method comparison).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Where the weights come from.
    pub model: ModelSource,
    /// A VAE file (original or diffusers layout) replacing the model's own VAE weights.
    pub vae: Option<PathBuf>,
    /// LoRA files merged into the weights at load, in order.
    pub loras: Vec<LoraSpec>,
    /// What the UNet predicts, when the user says (`None`: the model's scheduler config,
    /// or a checkpoint family's default).
    pub prediction: Option<PredictionType>,
    /// Stay on the CPU even when a GPU is available.
    pub force_cpu: bool,
    /// The UNet's number format (`None`: f32 on the CPU, f16 on GPUs).
    pub dtype: Option<DType>,
    /// The prompt.
    pub prompt: String,
    /// The negative prompt ("" = none).
    pub negative: String,
    /// The scheduler.
    pub scheduler: SchedulerKind,
    /// The step budget.
    pub steps: usize,
    /// Classifier-free guidance scale (≤ 1 turns guidance off).
    pub guidance: f64,
    /// Seed of the initial noise.
    pub seed: u64,
    /// Width in pixels (`None`: the model's native width, or the initial latents').
    pub width: Option<usize>,
    /// Height in pixels.
    pub height: Option<usize>,
    /// The acceleration method compared with the reference (or the only run of `generate`).
    pub method: Method,
    /// The reference it is compared with: the full-step baseline unless a front end asks
    /// for another (`compare --left`).
    pub reference: Method,
    /// Early stop of the method's run.
    pub early_stop: Option<EarlyStop>,
    /// Take the method's step budget from the prompt's complexity (the baseline keeps
    /// `steps`); `None`: every run has `steps`.
    pub budget: Option<Scoring>,
    /// Initial latents from a file instead of seeded noise.
    pub init_latents: Option<PathBuf>,
    /// Truncate over-long prompts (with a warning) instead of failing.
    pub truncate: bool,
    /// Frames of a video model's clip (`None`: the model's default); an image model refuses
    /// any.
    pub frames: Option<usize>,
    /// An AnimateDiff motion module added to the (SD 1.x) model: it then makes video.
    pub motion: Option<PathBuf>,
}

impl Job {
    /// Set the UNet dtype by name (`f32`, `f16`, `bf16`; `None` or another name: the
    /// device's default).
    pub fn set_dtype_name(&mut self, name: Option<&str>) {
        self.dtype = match name {
            Some("f32") => Some(DType::F32),
            Some("f16") => Some(DType::F16),
            Some("bf16") => Some(DType::BF16),
            _ => None,
        };
    }

    /// A job with every setting at its default.
    pub fn new(model: ModelSource, prompt: impl Into<String>) -> Self {
        Self {
            model,
            vae: None,
            loras: vec![],
            prediction: None,
            force_cpu: false,
            dtype: None,
            prompt: prompt.into(),
            negative: String::new(),
            scheduler: defaults::SCHEDULER,
            steps: defaults::STEPS,
            guidance: defaults::GUIDANCE,
            seed: defaults::SEED,
            width: None,
            height: None,
            method: defaults::ADAPTIVE,
            reference: Method::BASELINE,
            early_stop: None,
            budget: None,
            init_latents: None,
            truncate: false,
            frames: None,
            motion: None,
        }
    }

    /// Check every setting that needs no model; the first problem, named by its field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.prompt.trim().is_empty() {
            return Err(FieldError::new(
                Field::Prompt,
                "is empty: describe the image to generate, e.g. \"a red fox in the snow\"",
            ));
        }
        if self.steps < 1 {
            return Err(FieldError::new(
                Field::Steps,
                format!("must be at least 1 (got {})", self.steps),
            ));
        }
        if !(self.guidance.is_finite() && (0.0..=limits::GUIDANCE).contains(&self.guidance)) {
            return Err(FieldError::new(
                Field::Guidance,
                format!(
                    "must be a number from 0 to {} (got {}): larger scales saturate every image and overflow the latents; typical values are 1–15",
                    limits::GUIDANCE,
                    self.guidance
                ),
            ));
        }
        for (field, v) in [(Field::Width, self.width), (Field::Height, self.height)] {
            if let Some(v) = v
                && (v == 0 || v % 8 != 0)
            {
                return Err(FieldError::new(
                    field,
                    format!(
                        "{v} is not a positive multiple of 8 (try {})",
                        (v / 8).max(1) * 8
                    ),
                ));
            }
            if let Some(v) = v
                && v > limits::SIDE
            {
                return Err(FieldError::new(
                    field,
                    format!(
                        "{v} is larger than {} pixels, many times what any supported model was trained for",
                        limits::SIDE
                    ),
                ));
            }
        }
        if let Some(f) = self.frames
            && !(1..=limits::FRAMES).contains(&f)
        {
            return Err(FieldError::new(
                Field::Frames,
                format!(
                    "must be from 1 to {} (got {f}): a clip's frames are one batch of the video UNet",
                    limits::FRAMES
                ),
            ));
        }
        for m in [&self.method, &self.reference] {
            validate_method(m)?;
            validate_scheduler(m, self.scheduler)?;
        }
        if let Some(es) = &self.early_stop {
            validate_early_stop(es)?;
        }
        Ok(())
    }

    /// The full-step baseline: every one of [`Job::steps`] computed, no early stop; what
    /// `compare` measures both sides against.
    pub fn full_step_pass(&self) -> Pass {
        Pass {
            method: Method::BASELINE,
            steps: self.steps,
            early_stop: None,
        }
    }

    /// The reference run: the full-step baseline unless [`Job::reference`] says otherwise.
    pub fn baseline_pass(&self) -> Pass {
        Pass {
            method: self.reference,
            steps: self.reference.own_steps().unwrap_or(self.steps),
            early_stop: None,
        }
    }

    /// The method's run: with the complexity budget's steps (and, when it scales them, its
    /// δ and C_max) when there is one.
    pub fn method_pass(&self, budget: Option<&ComplexityBudget>) -> Pass {
        match budget {
            Some(b) => Pass {
                method: b.budget.method(self.method),
                steps: b.budget.steps,
                early_stop: self.early_stop,
            },
            None => Pass {
                method: self.method,
                steps: self.method.own_steps().unwrap_or(self.steps),
                early_stop: self.early_stop,
            },
        }
    }

    /// What makes two baselines identical (the method's settings do not enter).
    pub fn baseline_key(&self) -> BaselineKey {
        BaselineKey {
            inputs: self.inputs_key(),
            scheduler: self.scheduler,
            steps: self.steps,
            reference: crate::job::method_spec::format(&self.reference),
        }
    }

    /// What makes two jobs' encoded prompt and initial noise identical.
    pub fn inputs_key(&self) -> InputsKey {
        InputsKey {
            model: self.model_key(),
            prompt: self.prompt.clone(),
            negative: self.negative.clone(),
            guidance_bits: self.guidance.to_bits(),
            seed: self.seed,
            width: self.width,
            height: self.height,
            init_latents: self.init_latents.clone(),
            frames: self.frames,
        }
    }

    /// The files and folders the job reads, each with what it is (for messages): a
    /// command's outputs must not land on any of them.
    pub fn input_files(&self) -> Vec<(String, PathBuf)> {
        let mut v = vec![];
        if let ModelSource::Local(p) = &self.model {
            v.push(("the model".to_string(), p.clone()));
        }
        v.extend(self.vae.iter().map(|p| ("the VAE".to_string(), p.clone())));
        v.extend(
            self.motion
                .iter()
                .map(|p| ("the motion module".to_string(), p.clone())),
        );
        v.extend(
            self.loras
                .iter()
                .map(|l| ("a LoRA".to_string(), l.path.clone())),
        );
        v.extend(
            self.init_latents
                .iter()
                .map(|p| ("the initial latents".to_string(), p.clone())),
        );
        v
    }

    /// What makes two jobs' loaded model identical.
    /// The motion module the job runs: the one it names, else — when frames are asked of a
    /// model folder that carries one in `motion/` (the built-in shapes model does) — that one.
    pub fn motion_module(&self) -> Option<PathBuf> {
        if self.motion.is_some() {
            return self.motion.clone();
        }
        match (&self.model, self.frames) {
            (ModelSource::Local(dir), Some(_)) => {
                let m = dir.join("motion");
                m.join("config.json").is_file().then_some(m)
            }
            _ => None,
        }
    }

    pub fn model_key(&self) -> ModelKey {
        ModelKey {
            source: self.model.clone(),
            vae: self.vae.clone(),
            motion: self.motion_module(),
            loras: self
                .loras
                .iter()
                .map(|l| (l.path.clone(), l.scale.to_bits()))
                .collect(),
            prediction: self.prediction,
            force_cpu: self.force_cpu,
            dtype: self.dtype.map(|d| d.as_str()),
        }
    }
}

/// A method's settings, named as fields: δ and C_max (which have their own flags and
/// controls), any other key as the method.
pub fn validate_method(method: &Method) -> Result<(), FieldError> {
    method.validate().map_err(|e| match e.key {
        "delta" => FieldError::new(Field::Delta, e.problem),
        "max_skips" => FieldError::new(Field::MaxSkips, e.problem),
        "" => FieldError::new(Field::Method, format!("{}: {}", e.method, e.problem)),
        key => FieldError::new(Field::Method, format!("{}: {key} {}", e.method, e.problem)),
    })
}

/// Whether `method` runs on `scheduler`; if not, the schedulers it runs on.
pub fn validate_scheduler(method: &Method, scheduler: SchedulerKind) -> Result<(), FieldError> {
    match method.refuses(scheduler) {
        Some(supported) => Err(FieldError::new(
            Field::Scheduler,
            format!(
                "'{}' does not run {} (its authors' code supports {supported})",
                scheduler.name(),
                method.name(),
            ),
        )),
        None => Ok(()),
    }
}

/// τ (and the fixed settings) of an early stop, named as a field.
pub fn validate_early_stop(es: &EarlyStop) -> Result<(), FieldError> {
    if es.tau >= limits::EARLY_STOP_TAU {
        return Err(FieldError::new(
            Field::EarlyStopTau,
            format!(
                "must be below {} (got {}): a relative change of 1 means the latent moved by its own size, so τ ≥ 1 stops at the first armed step whatever the image does",
                limits::EARLY_STOP_TAU,
                es.tau
            ),
        ));
    }
    es.validate()
        .map_err(|e| FieldError::new(Field::EarlyStopTau, format!("is not usable: {e}")))
}

/// The early stop a front end's "on" switch and τ describe.
pub fn early_stop(enabled: bool, tau: f64) -> Option<EarlyStop> {
    enabled.then(|| EarlyStop::with_tau(tau))
}

/// One sampling run of a job: what the sampler is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pass {
    /// The method.
    pub method: Method,
    /// The step budget.
    pub steps: usize,
    /// Early stop, when enabled.
    pub early_stop: Option<EarlyStop>,
}

/// Identifies a loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelKey {
    source: ModelSource,
    vae: Option<PathBuf>,
    motion: Option<PathBuf>,
    loras: Vec<(PathBuf, u64)>,
    prediction: Option<PredictionType>,
    force_cpu: bool,
    dtype: Option<&'static str>,
}

/// Identifies the encoded prompt and the initial latents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputsKey {
    frames: Option<usize>,
    model: ModelKey,
    prompt: String,
    negative: String,
    guidance_bits: u64,
    seed: u64,
    width: Option<usize>,
    height: Option<usize>,
    init_latents: Option<PathBuf>,
}

/// Identifies a baseline run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineKey {
    inputs: InputsKey,
    scheduler: SchedulerKind,
    steps: usize,
    /// The reference method's spec (f64 settings make `Method` not `Eq`).
    reference: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        let mut j = Job::new(ModelSource::Local("x".into()), "a fox");
        j.force_cpu = true;
        j.steps = 10;
        j.seed = 1;
        j
    }

    #[test]
    fn baseline_key_ignores_the_method_settings_only() {
        let a = job();
        let mut b = a.clone();
        b.method = Method::adaptive(0.05, 2);
        b.early_stop = early_stop(true, 0.03);
        assert_eq!(a.baseline_key(), b.baseline_key());
        for change in [
            |s: &mut Job| s.seed += 1,
            |s: &mut Job| s.steps += 1,
            |s: &mut Job| s.guidance += 0.5,
            |s: &mut Job| s.prompt.push('!'),
            |s: &mut Job| s.negative.push('x'),
            |s: &mut Job| s.scheduler = SchedulerKind::Euler,
            |s: &mut Job| s.width = Some(64),
            |s: &mut Job| s.model = ModelSource::Local("y".into()),
            |s: &mut Job| s.force_cpu = false,
            // A bf16 side is never compared with (or served from the cache of) an f32 one.
            |s: &mut Job| s.set_dtype_name(Some("bf16")),
            |s: &mut Job| s.init_latents = Some("l.safetensors".into()),
        ] {
            let mut c = a.clone();
            change(&mut c);
            assert_ne!(a.baseline_key(), c.baseline_key(), "{c:?}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let field = |f: fn(&mut Job)| {
            let mut j = job();
            f(&mut j);
            j.validate().unwrap_err().field
        };
        assert_eq!(field(|j| j.prompt = "  ".into()), Field::Prompt);
        assert_eq!(field(|j| j.steps = 0), Field::Steps);
        assert_eq!(field(|j| j.guidance = f64::NAN), Field::Guidance);
        assert_eq!(field(|j| j.guidance = 1e30), Field::Guidance);
        assert_eq!(field(|j| j.guidance = -1.0), Field::Guidance);
        assert_eq!(field(|j| j.width = Some(100_000)), Field::Width);
        assert_eq!(field(|j| j.method = Method::adaptive(1e6, 4)), Field::Delta);
        assert_eq!(
            field(|j| j.early_stop = early_stop(true, 2.0)),
            Field::EarlyStopTau
        );
        assert_eq!(field(|j| j.width = Some(65)), Field::Width);
        assert_eq!(field(|j| j.height = Some(0)), Field::Height);
        assert_eq!(
            field(|j| j.method = Method::adaptive(-1.0, 4)),
            Field::Delta
        );
        assert_eq!(
            field(|j| j.method = Method::adaptive(0.01, 0)),
            Field::MaxSkips
        );
        assert_eq!(
            field(|j| j.early_stop = early_stop(true, 0.0)),
            Field::EarlyStopTau
        );
        let mut j = job();
        j.width = Some(100);
        let e = j.validate().unwrap_err();
        assert_eq!(
            e.worded("--width"),
            "--width 100 is not a positive multiple of 8 (try 96)"
        );
        assert!(job().validate().is_ok());
    }

    #[test]
    fn the_method_pass_takes_the_complexity_budget() {
        let j = job();
        assert_eq!(j.baseline_pass().method, Method::BASELINE);
        assert_eq!(j.baseline_pass().steps, 10);
        assert_eq!(j.method_pass(None).method, defaults::ADAPTIVE);
        let engine = crate::complexity::ComplexityEngine::heuristic();
        let map = crate::complexity::BudgetMap::default();
        let b = Scoring::decide(&engine, &map, "a red circle", 10, j.method);
        let pass = j.method_pass(Some(&b));
        assert_eq!(pass.steps, b.budget.steps);
        assert!(pass.steps < 10, "a simple prompt gets a smaller budget");
    }
}
