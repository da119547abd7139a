//! `sada`: SADA's step criterion and x0 replacement (Ting-Justin-Jiang/sada-icml @bbbadce7,
//! `sada/solver.py` `patch_solver`, applied by `sada/patch.py` `apply_patch`), ported from
//! that code for the schedulers it patches for UNets: Euler and DPM-Solver++. The
//! token-pruning half of SADA is not part of it (the official code with `max_downsample=0`).
//!
//! At step n, after the scheduler's step, the code forms the ODE drift of the step's guided
//! output ε (in the variance-preserving frame, `x_vp` = the latents times α_n for Euler, the
//! latents for DPM-Solver++): `f_n = ½βN·(ε/σ_n − x_vp)` for ε models, `f_n = ½βN·α_n·v/σ_n`
//! for v models (β = the training β at `int(t_n)`, N the step count, σ_n = σ·α_n), a
//! third-order Adams-style prediction of the next latents
//! `x̂ = (x_vp − δ(0.625 f_n + 0.75 f_{n−1} − 0.375 f_{n−2})) / b` (δ = 1/N; b = α_{n+1} for
//! Euler, 1 for DPM-Solver++) and the criterion
//! `m = mean[(x_{n+1} − x̂) ⊙ (f_n − 2f_{n−1} + f_{n−2})]`. The decision made at step n is
//! for step n + 1:
//! - if the last `max_interval` decisions were skips, compute (checked before the sign test);
//! - without Lagrange terms: skip when `m ≤ 0` and `n ∈ [acc_start, acc_end)` (acc_start is
//!   raised to at least 3: the predictor is third order);
//! - with `lagrange_term` > 0: the sign test only for `n < lagrange_step`; from
//!   `lagrange_step` to `acc_end` a fixed schedule skips unless `n % lagrange_int == 0`.
//!
//! A skipped step calls no model: its ε is the last computed raw [uncond; cond] output with
//! guidance re-applied, and its x0 estimate is replaced by the one the criterion's prediction
//! gives, `pred_x0(ε, n + 1, x̂)` (for v models on Euler, the code uses the actual latents
//! instead of x̂), or on a Lagrange step by the Lagrange polynomial through the x0 estimates
//! stored at the steps with `n % lagrange_int == 1` (the last `lagrange_term` of them; Euler
//! stores x0/α_n and scales the value by α_{n+1}). The scheduler then steps with the model
//! output whose x0 estimate is that.
//!
//! The trace records `m` as each tested step's signal, with 0 as its limit.
//!
//! The drift needs the model's training β at `int(t_n)` and its prediction type, both from
//! the run ([`RunInfo::betas`], [`RunInfo::prediction`]); sample-predicting models are
//! refused.
//!
//! Pinned to the official code run on the tiny pipeline (`tools/reference/make_sada_reference.py`,
//! `tests/fixtures/reference/sada.{json,safetensors}`).

use super::{Choice, Key, KeyKind, MethodDef, Notes, RunInfo, SliderMax, Step, StepRule};
use crate::sampler::denoise::RawPrediction;
use crate::sampler::method::{Method, MethodError};
use crate::sampler::schedule::PredictionType;
use crate::sampler::scheduler::{SchedulerKind, StepOutput};
use crate::sampler::trace::Decision;
use anyhow::{Result, bail};
use candle_core::{DType, Tensor};

/// `apply_patch`'s argument names (`acc_range`'s two ends as `acc_start` and `acc_end`) and
/// defaults; `lagrange_int` and `lagrange_step` (default `None`) are 0 when unused.
const KEYS: [Key; 6] = [
    Key::new("acc_start", KeyKind::Count, 10.0, 0.0, f64::INFINITY)
        .described(
            "acc start",
            "acc_range[0]: the first step whose test may skip the next step (raised to at least 3)",
        )
        .slider(0.0, SliderMax::Steps, false),
    Key::new("acc_end", KeyKind::Count, 47.0, 0.0, f64::INFINITY)
        .described(
            "acc end",
            "acc_range[1]: tests from this step on never skip",
        )
        .slider(0.0, SliderMax::Steps, false),
    Key::new("max_interval", KeyKind::Count, 4.0, 1.0, f64::INFINITY)
        .described("max interval", "the longest run of skipped steps before a compute")
        .slider(1.0, SliderMax::Value(8.0), false),
    Key::new("lagrange_term", KeyKind::Count, 0.0, 0.0, 16.0).described(
        "Lagrange terms",
        "stored x0 estimates in the Lagrange extrapolation (0: off)",
    ),
    Key::new("lagrange_int", KeyKind::Count, 0.0, 0.0, f64::INFINITY).described(
        "Lagrange interval",
        "with Lagrange terms: x0 is stored at steps n % lagrange_int == 1 and computed at n % lagrange_int == 0",
    ),
    Key::new("lagrange_step", KeyKind::Count, 0.0, 0.0, f64::INFINITY).described(
        "Lagrange step",
        "with Lagrange terms: the fixed schedule replaces the sign test from this step on",
    ),
];

/// The schedulers the official code patches for UNets.
const SCHEDULERS: [SchedulerKind; 2] = [SchedulerKind::Euler, SchedulerKind::DpmPlusPlus];

/// SADA's stability criterion with x0 replacement.
pub struct Sada;

impl MethodDef for Sada {
    fn name(&self) -> &'static str {
        "sada"
    }
    fn title(&self) -> &'static str {
        "SADA (stability criterion)"
    }
    fn short(&self) -> &'static str {
        "SADA"
    }
    fn about(&self) -> &'static str {
        "SADA's step skipping (Ting-Justin-Jiang/sada-icml @bbbadce7, sada/solver.py): skip the next step when a third-order prediction's residual points along the drift's second difference (mean ≤ 0), replacing its x0 by the prediction's; Euler and DPM-Solver++ only"
    }
    fn keys(&self) -> &'static [Key] {
        &KEYS
    }
    fn schedulers(&self) -> Option<&'static [SchedulerKind]> {
        Some(&SCHEDULERS)
    }
    fn check(&self, m: &Method) -> Result<(), MethodError> {
        let err = |key, problem: String| MethodError {
            method: "sada",
            key,
            problem,
        };
        let (start, end) = (m.count("acc_start"), m.count("acc_end"));
        if start >= end {
            return Err(err(
                "acc_start",
                format!("must be below acc_end (got {start} ≥ {end})"),
            ));
        }
        let term = m.count("lagrange_term");
        if term > 0 {
            let (int, step) = (m.count("lagrange_int"), m.count("lagrange_step"));
            if int == 0 {
                return Err(err(
                    "lagrange_int",
                    "must be at least 1 when lagrange_term is set".into(),
                ));
            }
            if step % int != 0 {
                return Err(err(
                    "lagrange_step",
                    format!("must be a multiple of lagrange_int (got {step} and {int})"),
                ));
            }
            if int > 1 && step / int < term {
                return Err(err(
                    "lagrange_step",
                    format!(
                        "must leave lagrange_term stored x0 estimates before it: at least lagrange_term × lagrange_int = {} (got {step})",
                        term * int
                    ),
                ));
            }
        }
        Ok(())
    }
    fn rule(&self, m: &Method, run: &RunInfo) -> Result<Box<dyn StepRule>> {
        Ok(Box::new(SadaRule::new(SadaSettings::of(m), run)?))
    }
}

/// The settings of `sada`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SadaSettings {
    /// `acc_range[0]`.
    pub acc_start: usize,
    /// `acc_range[1]`.
    pub acc_end: usize,
    /// `max_interval`.
    pub max_interval: usize,
    /// `lagrange_term` (0: no Lagrange steps).
    pub lagrange_term: usize,
    /// `lagrange_int`.
    pub lagrange_int: usize,
    /// `lagrange_step`.
    pub lagrange_step: usize,
}

impl SadaSettings {
    /// The settings of a `sada` method.
    pub fn of(m: &Method) -> Self {
        Self {
            acc_start: m.count("acc_start"),
            acc_end: m.count("acc_end"),
            max_interval: m.count("max_interval"),
            lagrange_term: m.count("lagrange_term"),
            lagrange_int: m.count("lagrange_int"),
            lagrange_step: m.count("lagrange_step"),
        }
    }
}

/// What the model predicts, as far as the criterion cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Epsilon,
    V,
}

/// The decision `step(n)` leaves for step n + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Call the model.
    Compute,
    /// Call the model: the last `max_interval` decisions were skips.
    Forced,
    /// Skip, with x0 from the criterion's prediction.
    Skip,
    /// Skip, with x0 from the Lagrange extrapolation.
    Lagrange,
}

/// What the sign test and the schedule decide at step `n` (the official branch order). With
/// Lagrange terms the sign test stops at `lagrange_step`, where the fixed schedule starts.
pub fn decide(s: &SadaSettings, n: usize, criterion: f64, consecutive_skips: usize) -> Next {
    let acc_start = s.acc_start.max(3);
    let lagrange = s.lagrange_term > 0;
    let sign_test_end = if lagrange { s.lagrange_step } else { s.acc_end };
    if consecutive_skips >= s.max_interval {
        Next::Forced
    } else if criterion <= 0.0 && (acc_start..sign_test_end).contains(&n) {
        Next::Skip
    } else if lagrange
        && !n.is_multiple_of(s.lagrange_int)
        && (s.lagrange_step..s.acc_end).contains(&n)
    {
        Next::Lagrange
    } else {
        Next::Compute
    }
}

/// The Lagrange polynomial through `(t_k, x_k)` at `t` (`lagrange_skip`).
pub fn lagrange(points: &[(usize, Tensor)], t: usize) -> Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    for (i, (ti, xi)) in points.iter().enumerate() {
        let mut factor = 1.0f64;
        for (j, (tj, _)) in points.iter().enumerate() {
            if i != j {
                factor *= (t as f64 - *tj as f64) / (*ti as f64 - *tj as f64);
            }
        }
        let term = (xi * factor)?;
        sum = Some(match sum {
            None => term,
            Some(s) => (s + term)?,
        });
    }
    sum.ok_or_else(|| anyhow::anyhow!("sada: no stored x0 estimate to extrapolate"))
}

/// The per-run state of the patched solver (the official `CacheBus`, reset per run).
pub struct SadaRule {
    cfg: SadaSettings,
    euler: bool,
    steps: usize,
    /// β at `int(t_n)` for every step.
    betas: Vec<f64>,
    sigmas: Vec<f64>,
    output: Output,
    /// The last computed step's guided output.
    eps_last: Option<Tensor>,
    /// f_{n−2}, f_{n−1}.
    prev_f: [Option<Tensor>; 2],
    next: Next,
    /// x0 of the next step when it is skipped.
    next_x0: Option<Tensor>,
    consecutive_skips: usize,
    /// `(step, x0 / a_n)` stored for the Lagrange steps, oldest first.
    lagrange_x0: Vec<(usize, Tensor)>,
}

impl SadaRule {
    /// The state at the start of a run.
    pub fn new(cfg: SadaSettings, run: &RunInfo) -> Result<Self> {
        let euler = match run.scheduler {
            SchedulerKind::Euler => true,
            SchedulerKind::DpmPlusPlus => false,
            other => bail!("sada runs on euler and dpm++ only (got {other})"),
        };
        let output = match run.prediction {
            PredictionType::Epsilon => Output::Epsilon,
            PredictionType::VPrediction => Output::V,
            PredictionType::Sample => bail!(
                "sada supports ε- and v-prediction models only (the official criterion is written for those)"
            ),
        };
        let train = &run.betas;
        let betas = run
            .timesteps
            .iter()
            .map(|&t| train[(t.max(0.0) as usize).min(train.len() - 1)])
            .collect();
        Ok(Self {
            cfg,
            euler,
            steps: run.steps,
            betas,
            sigmas: run.sigmas.clone(),
            output,
            eps_last: None,
            prev_f: [None, None],
            next: Next::Compute,
            next_x0: None,
            consecutive_skips: 0,
            lagrange_x0: Vec::new(),
        })
    }

    /// α = 1/√(σ² + 1) at step `i` (0 past the last step).
    fn alpha(&self, i: usize) -> f64 {
        match self.sigmas.get(i) {
            Some(s) => 1.0 / (s * s + 1.0).sqrt(),
            None => 1.0,
        }
    }

    /// The frame factor of step `i`'s latents: α_i for Euler (whose latents are x/α), 1 for
    /// DPM-Solver++.
    fn frame(&self, i: usize) -> f64 {
        if self.euler { self.alpha(i) } else { 1.0 }
    }

    /// The drift f_n of step `i`'s guided output `eps` at latents `x`.
    fn drift(&self, i: usize, x: &Tensor, eps: &Tensor, output: Output) -> Result<Tensor> {
        let alpha = self.alpha(i);
        let sigma_vp = self.sigmas[i] * alpha;
        let c = 0.5 * self.betas[i] * self.steps as f64;
        Ok(match output {
            Output::Epsilon => ((eps * (c / sigma_vp))? - (x * (c * self.frame(i)))?)?,
            Output::V => (eps * (c / sigma_vp * alpha))?,
        })
    }
}

impl StepRule for SadaRule {
    fn before(&mut self, step: &Step<'_>, _notes: &mut Notes) -> Result<Choice> {
        let next = std::mem::replace(&mut self.next, Next::Compute);
        if let (Next::Skip | Next::Lagrange, Some(x0)) = (next, self.next_x0.take())
            && self.eps_last.is_some()
        {
            let cond = step
                .scheduler
                .output_for_x0(&x0, step.index, step.latents)?;
            return Ok(Choice::Skip {
                prediction: RawPrediction { uncond: None, cond },
                decision: Decision::Forecast,
            });
        }
        let decision = match next {
            Next::Forced => Decision::Forced,
            _ => Decision::Computed,
        };
        Ok(Choice::Call {
            decision,
            plan: None,
        })
    }

    fn computed(&mut self, step: &Step<'_>, prediction: &RawPrediction) -> Result<()> {
        self.eps_last = Some(prediction.guided(step.guidance)?);
        Ok(())
    }

    fn after(
        &mut self,
        step: &Step<'_>,
        out: &StepOutput,
        _change: &super::Change,
        notes: &mut Notes,
    ) -> Result<()> {
        let n = step.index;
        let output = self.output;
        let eps = self
            .eps_last
            .clone()
            .ok_or_else(|| anyhow::anyhow!("sada: no computed step before step {n}"))?;
        let x = step.latents;
        let cfg = self.cfg;
        if cfg.lagrange_term > 0 && cfg.lagrange_int > 0 && n % cfg.lagrange_int == 1 {
            if self.lagrange_x0.len() == cfg.lagrange_term {
                self.lagrange_x0.remove(0);
            }
            let stored = (&out.pred_original * (1.0 / self.frame(n)))?;
            self.lagrange_x0.push((n, stored));
        }
        let f = self.drift(n, x, &eps, output)?;
        if let [Some(f2), Some(f1)] = &self.prev_f
            && n + 1 < self.steps
        {
            let delta = 1.0 / self.steps as f64;
            let ahead = (((&f * 0.625)? + (f1 * 0.75)?)? - (f2 * 0.375)?)?;
            let x_vp = (x * self.frame(n))?;
            let x_hat = ((x_vp - (ahead * delta)?)? * (1.0 / self.frame(n + 1)))?;
            let curvature = ((&f - (f1 * 2.0)?)? + f2)?;
            let criterion = ((&out.prev_sample - &x_hat)? * curvature)?
                .to_dtype(DType::F64)?
                .mean_all()?
                .to_scalar::<f64>()?;
            notes.signal = Some(criterion);
            notes.signal_limit = Some(0.0);
            self.next = decide(&cfg, n, criterion, self.consecutive_skips);
            match self.next {
                Next::Compute | Next::Forced => self.consecutive_skips = 0,
                Next::Skip => {
                    self.consecutive_skips += 1;
                    let at = if self.euler && output == Output::V {
                        &out.prev_sample
                    } else {
                        &x_hat
                    };
                    self.next_x0 = Some(step.scheduler.pred_x0(&eps, n + 1, at)?);
                }
                Next::Lagrange => {
                    self.consecutive_skips += 1;
                    let p = lagrange(&self.lagrange_x0, n + 1)?;
                    self.next_x0 = Some((p * self.frame(n + 1))?);
                }
            }
        }
        self.prev_f = [self.prev_f[1].take(), Some(f)];
        Ok(())
    }
}

#[cfg(test)]
#[path = "sada_tests.rs"]
mod tests;
