//! The denoising loop: scheduler × method × early stop over any [`Denoiser`].

use super::SchedulerConfig;
use super::change::ChangeTracker;
use super::denoise::{Denoiser, RawPrediction};
use super::early_stop::{EarlyStop, EarlyStopState};
use super::method::Method;
use super::methods::{Choice, Notes, RunInfo, Step};
use super::scheduler::{SchedulerKind, build_scheduler};
use super::trace::{RunTrace, StepRecord};
use anyhow::{Result, bail};
use candle_core::{DType, Tensor};
use std::ops::ControlFlow;
use std::time::Instant;

/// The settings of one sampling run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// Which scheduler.
    pub scheduler: SchedulerKind,
    /// Step budget.
    pub steps: usize,
    /// Classifier-free guidance scale (≤ 1 disables guidance).
    pub guidance: f64,
    /// How steps may skip the noise predictor.
    pub method: Method,
    /// Early stop, when enabled.
    pub early_stop: Option<EarlyStop>,
}

/// What one step reports to an observer while the run goes on.
pub struct StepEvent<'a> {
    /// The step just finished.
    pub record: &'a StepRecord,
    /// The latent after the step.
    pub latents: &'a Tensor,
    /// The scheduler's predicted x0 at the step (for previews).
    pub pred_x0: &'a Tensor,
    /// The step budget.
    pub budget: usize,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The latents to decode: the final latent, or the predicted x0 at an early stop.
    pub latents: Tensor,
    /// The trace of the run.
    pub trace: RunTrace,
}

/// The run was cancelled by its observer between two steps.
#[derive(Debug, thiserror::Error)]
#[error("run cancelled after step {after_step}")]
pub struct Cancelled {
    /// Steps completed before the cancel.
    pub after_step: usize,
}

/// The noise-predictor calls of a run: their count and cost, and the last two computed
/// predictions (for reuse and first-order forecasts).
struct Calls {
    count: usize,
    macs: Option<u64>,
    last_ms: f64,
    /// `(step, prediction)` of the last two computed steps, oldest first.
    history: Vec<(usize, RawPrediction)>,
}

impl Default for Calls {
    fn default() -> Self {
        Self {
            count: 0,
            macs: Some(0),
            last_ms: 0.0,
            history: Vec::new(),
        }
    }
}

impl Calls {
    /// Call the noise predictor for step `i`.
    fn predict(
        &mut self,
        denoiser: &mut dyn Denoiser,
        model_in: &Tensor,
        t: f64,
        i: usize,
    ) -> Result<RawPrediction> {
        let t0 = Instant::now();
        let p = denoiser.predict(model_in, t)?;
        self.last_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.count += 1;
        self.macs = self
            .macs
            .zip(denoiser.call_macs(model_in))
            .map(|(a, b)| a + b);
        if self.history.len() == 2 {
            self.history.remove(0);
        }
        self.history.push((i, p.clone()));
        Ok(p)
    }
}

/// A step produced latents that are not finite numbers.
#[derive(Debug, thiserror::Error)]
#[error(
    "step {step} of {steps} produced latents that are not finite numbers (NaN or ∞): the guidance scale or the initial latents are too large for this model, or the model's weights are broken"
)]
pub struct NonFinite {
    /// The step, 1-based.
    pub step: usize,
    /// Steps of the run.
    pub steps: usize,
}

/// Fail with [`NonFinite`] when `x` (the latents after step `i`) holds NaN or ∞: one
/// reduction in f64, where any non-finite value (or an f32 value too large to square and
/// add) makes the sum non-finite.
fn check_finite(x: &Tensor, i: usize, steps: usize) -> Result<()> {
    let energy = x
        .to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?;
    if energy.is_finite() {
        Ok(())
    } else {
        Err(NonFinite { step: i + 1, steps }.into())
    }
}

/// The early-stop criterion ‖x − prev‖₂ / ‖prev‖₂ (computed in f64).
pub fn rel_change(x: &Tensor, prev: &Tensor) -> Result<f64> {
    let x = x.to_dtype(DType::F64)?;
    let prev = prev.to_dtype(DType::F64)?;
    let num = (&x - &prev)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let den = prev.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok(if den > 0.0 { num / den } else { f64::INFINITY })
}

/// Run the denoising loop from `init_latents` (already scaled by the scheduler's initial σ).
///
/// `observe` sees every finished step; returning `ControlFlow::Break` cancels the run, which
/// then returns a [`Cancelled`] error.
pub fn run(
    denoiser: &mut dyn Denoiser,
    schedule: &SchedulerConfig,
    settings: &RunSettings,
    init_latents: &Tensor,
    observe: &mut dyn FnMut(StepEvent<'_>) -> ControlFlow<()>,
) -> Result<RunOutput> {
    settings.validate()?;
    let mut scheduler = build_scheduler(settings.scheduler, schedule, settings.steps)?;
    let timesteps = scheduler.timesteps().to_vec();
    let info = RunInfo {
        scheduler: settings.scheduler,
        steps: settings.steps,
        sigmas: (0..timesteps.len()).map(|i| scheduler.sigma(i)).collect(),
        timesteps: timesteps.clone(),
        guidance: settings.guidance,
        betas: schedule.betas(),
        prediction: schedule.prediction_type,
    };
    let mut rule = settings.method.def().rule(&settings.method, &info)?;
    let mut change = ChangeTracker::default();
    let mut stopper = settings
        .early_stop
        .map(|es| EarlyStopState::new(es, settings.steps));

    let start = Instant::now();
    let mut x = init_latents.clone();
    let mut calls = Calls::default();
    let mut records = Vec::with_capacity(settings.steps);
    let mut stopped_early_at = None;
    let mut output = None;
    let mut planned = false;

    for (i, &t) in timesteps.iter().enumerate() {
        let step_start = Instant::now();
        let model_in = scheduler.scale_model_input(&x, i)?;
        let history = calls.history.clone();
        // The step as the rule sees it: before the call, and again after the scheduler stepped
        // (which needed the scheduler mutably in between).
        macro_rules! step {
            () => {
                Step {
                    index: i,
                    steps: timesteps.len(),
                    timestep: t,
                    sigma: info.sigmas[i],
                    latents: &x,
                    model_in: &model_in,
                    guidance: settings.guidance,
                    scheduler: scheduler.as_ref(),
                    history: &history,
                }
            };
        }
        let step = step!();
        let mut notes = Notes::default();
        let (pred, decision, predictor_ms) = match rule.before(&step, &mut notes)? {
            Choice::Skip {
                prediction,
                decision,
            } => (prediction, decision, 0.0),
            Choice::Call { decision, plan } => {
                // A plan holds for one call: clear the last one before a plain call.
                if plan.is_some() || planned {
                    denoiser.plan_call(plan)?;
                }
                planned = plan.is_some();
                let pred = calls.predict(denoiser, &model_in, t, i)?;
                rule.computed(&step, &pred)?;
                (pred, decision, calls.last_ms)
            }
        };
        let eps = pred.guided(settings.guidance)?;
        let out = scheduler.step(&eps, i, &x)?;
        check_finite(&out.prev_sample, i, timesteps.len())?;

        let c0 = Instant::now();
        let measured = change.observe(&out.prev_sample)?;
        let step = step!();
        rule.after(&step, &out, &measured, &mut notes)?;
        let rel = rel_change(&out.prev_sample, &x)?;
        let stop = stopper.as_mut().is_some_and(|s| s.observe(i, rel));
        let controller_ms = c0.elapsed().as_secs_f64() * 1e3;

        x = out.prev_sample;
        let record = StepRecord {
            index: i,
            timestep: t,
            sigma: info.sigmas[i],
            computed: decision.computed(),
            decision,
            d: measured.d,
            third_order: measured.third_order,
            threshold: notes.threshold,
            signal: notes.signal,
            signal_limit: notes.signal_limit,
            rel_change: rel,
            predictor_ms,
            controller_ms,
            step_ms: step_start.elapsed().as_secs_f64() * 1e3,
        };
        let flow = observe(StepEvent {
            record: &record,
            latents: &x,
            pred_x0: &out.pred_original,
            budget: settings.steps,
        });
        records.push(record);
        if stop {
            stopped_early_at = Some(i);
            let x0 = settings.early_stop.is_none_or(|es| es.output_x0);
            output = Some(if x0 { out.pred_original } else { x.clone() });
            break;
        }
        if flow.is_break() && i + 1 < timesteps.len() {
            return Err(Cancelled { after_step: i + 1 }.into());
        }
    }

    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(RunOutput {
        latents: output.unwrap_or(x),
        trace: settings.trace(&calls, records, stopped_early_at, elapsed_ms),
    })
}

impl RunSettings {
    /// The run's own preconditions (the front ends check more, with their wording).
    fn validate(&self) -> Result<()> {
        self.method.validate()?;
        if let Some(supported) = self.method.refuses(self.scheduler) {
            bail!(
                "{} does not run with the {} scheduler (it supports {supported})",
                self.method.name(),
                self.scheduler.name(),
            );
        }
        if let Some(es) = &self.early_stop {
            es.validate()?;
        }
        if !self.guidance.is_finite() || self.guidance < 0.0 {
            bail!(
                "the guidance scale must be a finite number ≥ 0 (got {})",
                self.guidance
            );
        }
        Ok(())
    }

    /// The trace of a finished run of these settings.
    fn trace(
        &self,
        calls: &Calls,
        steps: Vec<StepRecord>,
        stopped_early_at: Option<usize>,
        elapsed_ms: f64,
    ) -> RunTrace {
        RunTrace {
            method: self.method,
            scheduler: self.scheduler.name().into(),
            budget: self.steps,
            guidance: self.guidance,
            early_stop: self.early_stop,
            stopped_early_at,
            unet_calls: calls.count,
            unet_macs: calls.macs,
            unet_cost: None,
            steps_run: steps.len(),
            elapsed_ms,
            steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::{Method, SchedulerKind};
    use candle_core::Device;

    /// Predicts `value` everywhere from step `from` on, zero before.
    struct Fixed {
        calls: usize,
        from: usize,
        value: f32,
    }

    impl Denoiser for Fixed {
        fn predict(&mut self, x: &Tensor, _: f64) -> Result<RawPrediction> {
            let v = if self.calls >= self.from {
                self.value
            } else {
                0.0
            };
            self.calls += 1;
            Ok(RawPrediction {
                uncond: None,
                cond: (x.zeros_like()? + f64::from(v))?,
            })
        }
    }

    fn run_with(value: f32, from: usize) -> Result<RunOutput> {
        let settings = RunSettings {
            scheduler: SchedulerKind::Ddim,
            steps: 10,
            guidance: 1.0,
            method: Method::BASELINE,
            early_stop: None,
        };
        let init = Tensor::ones((1, 4, 8, 8), DType::F32, &Device::Cpu)?;
        let mut d = Fixed {
            calls: 0,
            from,
            value,
        };
        run(
            &mut d,
            &SchedulerConfig::stable_diffusion(),
            &settings,
            &init,
            &mut |_| ControlFlow::Continue(()),
        )
    }

    #[test]
    fn a_non_finite_step_is_an_error_naming_the_step() {
        assert!(run_with(0.5, 0).is_ok());
        let e = run_with(f32::NAN, 3).unwrap_err();
        let nf = e.downcast_ref::<NonFinite>().expect("a NonFinite error");
        assert_eq!((nf.step, nf.steps), (4, 10));
        assert!(e.to_string().contains("step 4 of 10"), "{e}");
        let e = run_with(f32::INFINITY, 0).unwrap_err();
        assert!(e.downcast_ref::<NonFinite>().is_some(), "{e}");
    }
}
