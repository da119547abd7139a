//! The scheduler interface shared by DDIM, Euler and DPM-Solver++.

use anyhow::Result;
use candle_core::Tensor;

/// What one scheduler step produces.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The latent after this step, `x_{t-1}`.
    pub prev_sample: Tensor,
    /// The scheduler's prediction of the clean sample `x_0` at this step.
    pub pred_original: Tensor,
}

/// A diffusion scheduler configured for a fixed number of inference steps.
///
/// Every method takes the step *index* `i` (0-based, in sampling order), so a reused noise
/// prediction is handled exactly like a fresh one.
pub trait Scheduler: Send {
    /// Timesteps passed to the noise predictor, in sampling order.
    fn timesteps(&self) -> &[f64];
    /// The standard deviation the initial noise is scaled by.
    fn init_noise_sigma(&self) -> f64;
    /// The noise level σ = sqrt((1 − ᾱ)/ᾱ) at step `i`.
    fn sigma(&self, i: usize) -> f64;
    /// Scale the latent before it goes into the noise predictor at step `i`.
    fn scale_model_input(&self, x: &Tensor, i: usize) -> Result<Tensor>;
    /// Advance `x` from step `i` to step `i + 1` with the (guided) noise prediction `eps`.
    fn step(&mut self, eps: &Tensor, i: usize, x: &Tensor) -> Result<StepOutput>;
    /// The clean-sample estimate x0 that the model output `output` gives at step `i` from
    /// latents `x` (before any clipping): what `step` would use.
    fn pred_x0(&self, output: &Tensor, i: usize, x: &Tensor) -> Result<Tensor>;
    /// The inverse of [`Scheduler::pred_x0`]: the model output whose x0 estimate at step `i`
    /// from `x` is `x0` (how a method that forecasts x0 hands it to the scheduler).
    fn output_for_x0(&self, x0: &Tensor, i: usize, x: &Tensor) -> Result<Tensor>;
}

/// The schedulers the command line and the GUI offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SchedulerKind {
    /// DDIM (η = 0), as diffusers' `DDIMScheduler`.
    #[serde(rename = "ddim")]
    Ddim,
    /// Euler discrete, as diffusers' `EulerDiscreteScheduler`.
    #[serde(rename = "euler")]
    Euler,
    /// DPM-Solver++ 2M, as diffusers' `DPMSolverMultistepScheduler` with its SD defaults.
    #[serde(rename = "dpm++")]
    DpmPlusPlus,
}

impl SchedulerKind {
    /// Every kind, in menu order.
    pub const ALL: [SchedulerKind; 3] = [Self::Ddim, Self::Euler, Self::DpmPlusPlus];

    /// The name used on the command line and in traces.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Euler => "euler",
            Self::DpmPlusPlus => "dpm++",
        }
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ddim" => Ok(Self::Ddim),
            "euler" => Ok(Self::Euler),
            "dpm++" | "dpmpp" | "dpm-solver++" => Ok(Self::DpmPlusPlus),
            other => Err(format!(
                "unknown scheduler '{other}': choose one of ddim, euler, dpm++"
            )),
        }
    }
}

/// Build a scheduler of `kind` from a pipeline's scheduler config for `steps` steps.
pub fn build_scheduler(
    kind: SchedulerKind,
    cfg: &super::SchedulerConfig,
    steps: usize,
) -> Result<Box<dyn Scheduler>> {
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(super::ddim::Ddim::new(cfg, steps)?),
        SchedulerKind::Euler => Box::new(super::euler::Euler::new(cfg, steps)?),
        SchedulerKind::DpmPlusPlus => Box::new(super::dpm::DpmPlusPlus2M::new(cfg, steps)?),
    })
}
