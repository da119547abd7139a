//! `ucache`: stable-diffusion.cpp's UNet cache (leejet/stable-diffusion.cpp,
//! `src/runtime/ucache.hpp`, `UCacheState`), ported from that code to this sampler.
//!
//! A whole-model rule. Each guidance half ("condition") caches `diff = ε − in` (`in` the
//! scaled model input) whenever it is computed; a skipped step returns `in + diff` for every
//! half. The cache is active only for steps whose σ lies in `(σ[⌊end·N⌋], σ[⌊start·N⌋]]`.
//! On an active step the anchor (the conditional half) estimates the change of its output
//! from the change of its input since the last computed step,
//! `r = k · mean|in − in_last| / sqrt(max(mean|ε_last|, 1e-6) · max(1.6·ema, 1e-6))`
//! (`k` the last measured output-to-input change ratio, `ema` a running mean of the output
//! changes; without `relative`, `r = k · mean|in − in_last|` against a threshold scaled by
//! `mean|ε_last|`), lengthens it with the skip streak (`r ·= 1 + 0.5·streak`), accumulates
//! `E = E·decay + r`, and skips while `E` stays below the threshold — halved while fewer than
//! 20 % of the steps have been computed, raised 1.5× past 80 %. A computed step clears `E`
//! (with `reset`). Steps without enough history compute.
//!
//! There is no Python reference: `tests` pins the rule with hand-checked sequences.

use super::{Choice, Key, KeyKind, MethodDef, Notes, RunInfo, SliderMax, Step, StepRule};
use crate::sampler::denoise::RawPrediction;
use crate::sampler::method::{Method, MethodError};
use crate::sampler::trace::Decision;
use anyhow::Result;
use candle_core::{DType, Tensor};

/// stable-diffusion.cpp's option names (shortened) and defaults.
const KEYS: [Key; 6] = [
    Key::new("threshold", KeyKind::Number, 1.0, f64::MIN_POSITIVE, f64::INFINITY)
        .aliases(&["ucache.threshold"])
        .described(
            "threshold",
            "reuse_threshold: skip while the accumulated estimate of the output's change stays below it",
        )
        .slider(0.05, SliderMax::Value(5.0), true),
    Key::new("start", KeyKind::Number, 0.15, 0.0, 1.0)
        .aliases(&["ucache.start"])
        .described("start", "start_percent: the cache is active from this share of the steps…")
        .unit("share of steps"),
    Key::new("end", KeyKind::Number, 0.95, 0.0, 1.0)
        .aliases(&["ucache.end"])
        .described("end", "end_percent: …up to this share")
        .unit("share of steps"),
    Key::new("decay", KeyKind::Number, 1.0, 0.0, f64::INFINITY)
        .aliases(&["ucache.decay"])
        .described(
            "decay",
            "error_decay_rate: the accumulated error is multiplied by it at each test",
        ),
    Key::new("relative", KeyKind::Flag, 1.0, 0.0, 1.0)
        .aliases(&["ucache.relative"])
        .described(
            "relative",
            "use_relative_threshold: the change estimate is relative to the output's size",
        ),
    Key::new("reset", KeyKind::Flag, 1.0, 0.0, 1.0)
        .aliases(&["ucache.reset"])
        .described(
            "reset",
            "reset_error_on_compute: a computed step clears the accumulated error",
        ),
];

/// stable-diffusion.cpp's UNet cache.
pub struct UCacheMethod;

impl MethodDef for UCacheMethod {
    fn name(&self) -> &'static str {
        "ucache"
    }
    fn title(&self) -> &'static str {
        "ucache (stable-diffusion.cpp)"
    }
    fn short(&self) -> &'static str {
        "ucache"
    }
    fn about(&self) -> &'static str {
        "stable-diffusion.cpp's UNet cache (leejet/stable-diffusion.cpp @97d29908, src/runtime/ucache.hpp): skip while an accumulated estimate of the output's change stays below a threshold, returning the input plus the cached difference"
    }
    fn keys(&self) -> &'static [Key] {
        &KEYS
    }
    fn check(&self, m: &Method) -> Result<(), MethodError> {
        let (start, end) = (m.num("start"), m.num("end"));
        if start >= end {
            return Err(MethodError {
                method: self.name(),
                key: "start",
                problem: format!("must be below end (got {start} ≥ {end})"),
            });
        }
        Ok(())
    }
    fn describe(&self, m: &Method) -> String {
        format!("ucache · threshold {}", m.shown("threshold"))
    }
    fn rule(&self, m: &Method, run: &RunInfo) -> Result<Box<dyn StepRule>> {
        Ok(Box::new(UCache::new(UCacheSettings::of(m), &run.sigmas)))
    }
}

/// The settings of `ucache` (stable-diffusion.cpp's `UCacheConfig`, its names shortened).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UCacheSettings {
    /// `reuse_threshold`.
    pub threshold: f64,
    /// `start_percent`.
    pub start: f64,
    /// `end_percent`.
    pub end: f64,
    /// `error_decay_rate`.
    pub decay: f64,
    /// `use_relative_threshold`.
    pub relative: bool,
    /// `reset_error_on_compute`.
    pub reset: bool,
}

impl UCacheSettings {
    /// The settings of a `ucache` method.
    pub fn of(m: &Method) -> Self {
        Self {
            threshold: m.num("threshold"),
            start: m.num("start"),
            end: m.num("end"),
            decay: m.num("decay"),
            relative: m.flag("relative"),
            reset: m.flag("reset"),
        }
    }
}

impl Default for UCacheSettings {
    /// stable-diffusion.cpp's defaults.
    fn default() -> Self {
        Self::of(&Method::of(&UCacheMethod))
    }
}

impl StepRule for UCache {
    fn before(&mut self, step: &Step<'_>, notes: &mut Notes) -> Result<Choice> {
        Ok(match self.verdict(step.sigma, step.model_in)? {
            Verdict::Skip { error, threshold } => {
                notes.signal = Some(error);
                notes.signal_limit = Some(threshold);
                let (cond, uncond) = self.reuse(step.model_in)?;
                Choice::Skip {
                    prediction: RawPrediction { uncond, cond },
                    decision: Decision::Reused,
                }
            }
            verdict => {
                if let Verdict::ComputeTested { error, threshold } = verdict {
                    notes.signal = Some(error);
                    notes.signal_limit = Some(threshold);
                }
                Choice::compute()
            }
        })
    }

    fn computed(&mut self, step: &Step<'_>, p: &RawPrediction) -> Result<()> {
        self.record(step.model_in, &p.cond, p.uncond.as_ref())
    }
}

/// stable-diffusion.cpp's fixed settings of the adaptive threshold and the relative scale.
const EARLY_MULTIPLIER: f64 = 0.5;
const LATE_MULTIPLIER: f64 = 1.5;
const RELATIVE_NORM_GAIN: f64 = 1.6;

/// What `before` decided for a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Outside the active window, or not enough history: compute.
    Compute,
    /// Active and tested: compute (the accumulated error reached the threshold).
    ComputeTested { error: f64, threshold: f64 },
    /// Active and tested: skip, every half is `in + diff`.
    Skip { error: f64, threshold: f64 },
}

/// The cache state of one image.
#[derive(Debug)]
pub struct UCache {
    cfg: UCacheSettings,
    start_sigma: f64,
    end_sigma: f64,
    expected_total_steps: usize,
    active: bool,
    /// `ε − in` of the conditional and the unconditional half.
    diffs: Option<(Tensor, Option<Tensor>)>,
    prev_input: Option<Tensor>,
    prev_output: Option<Tensor>,
    output_prev_norm: f64,
    relative_transformation_rate: Option<f64>,
    last_input_change: Option<f64>,
    output_change_ema: Option<f64>,
    steps_computed_since_active: usize,
    consecutive_skipped_steps: usize,
    accumulated_error: f64,
}

fn mean_abs(x: &Tensor) -> Result<f64> {
    Ok(x.to_dtype(DType::F64)?
        .abs()?
        .mean_all()?
        .to_scalar::<f64>()?)
}

fn mean_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    mean_abs(&(a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?)
}

impl UCache {
    /// The state for a run whose step `i` has noise level `sigmas[i]` (`N` steps).
    pub fn new(cfg: UCacheSettings, sigmas: &[f64]) -> Self {
        let n = sigmas.len();
        let step = |p: f64| ((p * n as f64) as usize).min(n.saturating_sub(1));
        let (mut start_sigma, mut end_sigma) = if n == 0 {
            (f64::MAX, 0.0)
        } else {
            (sigmas[step(cfg.start)], sigmas[step(cfg.end)])
        };
        if start_sigma < end_sigma {
            std::mem::swap(&mut start_sigma, &mut end_sigma);
        }
        Self {
            cfg,
            start_sigma,
            end_sigma,
            expected_total_steps: n,
            active: false,
            diffs: None,
            prev_input: None,
            prev_output: None,
            output_prev_norm: 0.0,
            relative_transformation_rate: None,
            last_input_change: None,
            output_change_ema: None,
            steps_computed_since_active: 0,
            consecutive_skipped_steps: 0,
            accumulated_error: 0.0,
        }
    }

    /// The threshold, halved early and raised late in the active steps computed so far.
    fn adaptive_threshold(&self) -> f64 {
        let total = if self.expected_total_steps > 0 {
            self.expected_total_steps
        } else {
            20.max(self.steps_computed_since_active * 2)
        };
        let progress = (self.steps_computed_since_active as f64 / total as f64).clamp(0.0, 1.0);
        let multiplier = if progress < 0.2 {
            EARLY_MULTIPLIER
        } else if progress > 0.8 {
            LATE_MULTIPLIER
        } else {
            1.0
        };
        self.cfg.threshold * multiplier
    }

    /// Decide a step at noise level `sigma` whose scaled model input is `input`.
    pub fn verdict(&mut self, sigma: f64, input: &Tensor) -> Result<Verdict> {
        self.last_input_change = None;
        self.active = sigma <= self.start_sigma && sigma > self.end_sigma;
        if !self.active {
            return Ok(Verdict::Compute);
        }
        let (Some(prev_input), Some(_), Some(_)) =
            (&self.prev_input, &self.prev_output, &self.diffs)
        else {
            return Ok(Verdict::Compute);
        };
        let dx = mean_abs_diff(input, prev_input)?;
        self.last_input_change = Some(dx);
        let Some(rate) = self.relative_transformation_rate else {
            return Ok(Verdict::Compute);
        };
        if !(dx > 0.0 && self.output_prev_norm > 0.0) {
            return Ok(Verdict::Compute);
        }
        let approx_change = rate * dx;
        let mut r = if self.cfg.relative {
            let base = self.output_prev_norm.max(1e-6);
            let dynamic = match self.output_change_ema {
                Some(ema) => (ema * RELATIVE_NORM_GAIN.max(1.0)).max(1e-6),
                None => base,
            };
            approx_change / (base * dynamic).sqrt()
        } else {
            approx_change
        };
        r *= 1.0 + 0.5 * self.consecutive_skipped_steps as f64;
        self.accumulated_error = self.accumulated_error * self.cfg.decay + r;
        let mut threshold = self.adaptive_threshold();
        if !self.cfg.relative {
            threshold *= self.output_prev_norm;
        }
        let error = self.accumulated_error;
        if error < threshold {
            self.consecutive_skipped_steps += 1;
            return Ok(Verdict::Skip { error, threshold });
        }
        if self.cfg.reset {
            self.accumulated_error = 0.0;
        }
        Ok(Verdict::ComputeTested { error, threshold })
    }

    /// The halves of a skipped step: `in + diff` each.
    pub fn reuse(&self, input: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let (dc, du) = self.diffs.as_ref().expect("a skip needs a cache");
        let cond = (input + dc)?;
        let uncond = du.as_ref().map(|d| input + d).transpose()?;
        Ok((cond, uncond))
    }

    /// Record a computed step of an active window: the halves' caches and the anchor's
    /// statistics.
    pub fn record(&mut self, input: &Tensor, cond: &Tensor, uncond: Option<&Tensor>) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        let dc = (cond - input)?;
        let du = uncond.map(|u| u - input).transpose()?;
        self.diffs = Some((dc, du));
        self.steps_computed_since_active += 1;
        self.consecutive_skipped_steps = 0;
        self.prev_input = Some(input.clone());
        let output_change = match &self.prev_output {
            Some(prev) => mean_abs_diff(cond, prev)?,
            None => 0.0,
        };
        if output_change.is_finite() && output_change > 0.0 {
            self.output_change_ema = Some(match self.output_change_ema {
                None => output_change,
                Some(ema) => 0.8 * ema + 0.2 * output_change,
            });
        }
        self.prev_output = Some(cond.clone());
        self.output_prev_norm = mean_abs(cond)?;
        if let Some(dx) = self.last_input_change
            && dx > 0.0
            && output_change > 0.0
        {
            let rate = output_change / dx;
            if rate.is_finite() {
                self.relative_transformation_rate = Some(rate);
            }
        }
        self.last_input_change = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: f32) -> Tensor {
        Tensor::new(&[v, -v], &Device::Cpu).unwrap()
    }

    /// Drive the cache over inputs `xs` whose computed outputs are `f(x)`; the verdict of
    /// every step.
    fn drive(
        cfg: UCacheSettings,
        sigmas: &[f64],
        xs: &[f32],
        f: impl Fn(f32) -> f32,
    ) -> Vec<Verdict> {
        let mut c = UCache::new(cfg, sigmas);
        let mut out = Vec::new();
        for (&s, &x) in sigmas.iter().zip(xs) {
            let input = t(x);
            let v = c.verdict(s, &input).unwrap();
            if !matches!(v, Verdict::Skip { .. }) {
                c.record(&input, &t(f(x)), None).unwrap();
            }
            out.push(v);
        }
        out
    }

    #[test]
    fn the_window_follows_the_step_shares() {
        // N = 20 steps, σ = 20, 19, …, 1: start step ⌊0.15·20⌋ = 3 (σ 17), end step
        // ⌊0.95·20⌋ = 19 (σ 1): active for 1 < σ ≤ 17, i.e. steps 3..=18.
        let sigmas: Vec<f64> = (0..20).map(|i| 20.0 - i as f64).collect();
        let c = UCache::new(UCacheSettings::default(), &sigmas);
        assert_eq!((c.start_sigma, c.end_sigma), (17.0, 1.0));
        let v = drive(UCacheSettings::default(), &sigmas, &[1.0; 20], |x| x);
        // Constant input: no change to measure (dx = 0), so every step computes.
        assert!(
            v.iter().all(|v| !matches!(v, Verdict::Skip { .. })),
            "{v:?}"
        );
    }

    #[test]
    fn a_slowly_moving_input_skips_and_the_error_accumulates() {
        // Inputs x = 1.00, 1.01, 1.02, … with outputs 2x. Step 3 (the first active one)
        // computes and caches; step 4 measures dx = 0.01, computes, and learns k = 0.02/0.01
        // = 2, ema = 0.02, mean|ε_last| = 2·1.04 = 2.08; step 5 is the first test:
        // r = 2·0.01 / sqrt(2.08 · 1.6·0.02) = 0.0775 < ½ (the early threshold) → skip.
        // Step 6: dx = 0.02 from the last computed input, r = 0.155·1.5 → E = 0.310, skip;
        // step 7: r = 0.2325·2 → E = 0.775 ≥ 0.5 → compute (and E resets).
        let sigmas: Vec<f64> = (0..20).map(|i| 20.0 - i as f64).collect();
        let xs: Vec<f32> = (0..20).map(|i| 1.0 + 0.01 * i as f32).collect();
        let v = drive(UCacheSettings::default(), &sigmas, &xs, |x| 2.0 * x);
        // Steps 0–2 inactive, 3 and 4 build the history (cache, then rate), 5 is tested.
        assert!(v[..5].iter().all(|v| *v == Verdict::Compute), "{v:?}");
        let Verdict::Skip { error, threshold } = v[5] else {
            panic!("step 5 should skip: {v:?}");
        };
        let want = 2.0 * 0.01 / (2.08f64 * (1.6 * 0.02)).sqrt();
        assert!((error - want).abs() < 1e-3, "{error} vs {want}");
        // Two of 20 steps computed in the window so far: the early multiplier ½.
        assert!((threshold - 0.5).abs() < 1e-12);
        let Verdict::Skip { error, .. } = v[6] else {
            panic!("step 6 should skip: {v:?}");
        };
        assert!((error - 0.3101).abs() < 2e-3, "{error}");
        let Verdict::ComputeTested { error, .. } = v[7] else {
            panic!("step 7 should compute: {v:?}");
        };
        assert!((error - 0.7752).abs() < 4e-3, "{error}");
        // Past the window (σ ≤ 1: the last step) the cache is off.
        assert_eq!(v[19], Verdict::Compute);
    }

    #[test]
    fn a_skip_returns_input_plus_the_cached_difference() {
        let sigmas = [5.0, 4.0, 3.0];
        let mut c = UCache::new(
            UCacheSettings {
                start: 0.0,
                end: 0.9,
                ..UCacheSettings::default()
            },
            &sigmas,
        );
        c.verdict(5.0, &t(1.0)).unwrap();
        c.record(&t(1.0), &t(3.0), Some(&t(0.5))).unwrap();
        let (cond, uncond) = c.reuse(&t(2.0)).unwrap();
        assert_eq!(cond.to_vec1::<f32>().unwrap(), [4.0, -4.0]);
        assert_eq!(uncond.unwrap().to_vec1::<f32>().unwrap(), [1.5, -1.5]);
    }
}
