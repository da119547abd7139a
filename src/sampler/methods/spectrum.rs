//! `spectrum`: Spectrum's forecast of the denoised output, as stable-diffusion.cpp runs it
//! for UNets (leejet/stable-diffusion.cpp @97d29908, `src/runtime/spectrum.hpp`,
//! `SpectrumState`; paper: tingyu215/Spectrum, CVPR 2026), ported from that code.
//!
//! The rule works on the step's denoised output D, the x0 estimate of the *guided*
//! prediction (stable-diffusion.cpp hooks it in its `denoise` function, once per step, before
//! any condition runs). `cnt` counts the steps, computed or forecast, and `τ(cnt) =
//! 2·cnt/50 − 1` (the 50 is fixed in the C++). A step is forecast iff `cnt ≥ warmup`,
//! `cnt < ⌊stop·N⌋` (when that is > 0), at least two outputs are stored and
//! `(num_cached + 1) % max(1, ⌊ws⌋) ≠ 0`; otherwise the model runs, D is stored with its τ
//! (the last `K = max(m + 1, 6)` are kept), `ws += flex` once past the warm-up and
//! `num_cached = 0`. The forecast fits the stored outputs with Chebyshev polynomials of
//! degree ≤ m in τ by ridge regression, `(XᵀX + λI) v = x*` (`X[k][j] = T_j(τ_k)`,
//! `x*_j = T_j(τ(cnt))`, solved by Cholesky; when a pivot is ≤ 0, `1e-4·trace/(m+1)` is added
//! to the diagonal), and blends the fit `D_cheb = Σ_k (X v)_k D_k` with a Taylor step
//! `D_taylor = D_last + ½(D_last − D_prev)`: `D = (1 − w)·D_taylor + w·D_cheb`. The
//! scheduler then steps with the model output whose x0 estimate is D.
//!
//! The fit is done in f32 scalars in the C++'s order of operations. There is no Python
//! reference: `tools/reference/spectrum_reference.py` re-derives the state in NumPy from the
//! C++ and pins it (`tests/fixtures/reference/spectrum.{json,safetensors}`).

use super::{Choice, Key, KeyKind, MethodDef, Notes, RunInfo, SliderMax, Step, StepRule};
use crate::sampler::denoise::RawPrediction;
use crate::sampler::method::Method;
use crate::sampler::trace::Decision;
use anyhow::Result;
use candle_core::Tensor;

/// The largest Chebyshev degree: the fit keeps `max(m + 1, 6)` outputs, and higher degrees
/// only fit noise.
const MAX_DEGREE: f64 = 8.0;

/// stable-diffusion.cpp's option names and defaults (`SpectrumConfig`).
const KEYS: [Key; 7] = [
    Key::new("w", KeyKind::Number, 0.40, 0.0, 1.0)
        .described(
            "w",
            "blend weight of the Chebyshev fit against the Taylor step (0: Taylor only, 1: Chebyshev only)",
        )
        .slider(0.0, SliderMax::Value(1.0), false),
    Key::new("m", KeyKind::Count, 3.0, 0.0, MAX_DEGREE)
        .described("m", "degree of the Chebyshev polynomials fitted to the stored outputs"),
    Key::new("lam", KeyKind::Number, 1.0, 0.0, 1e6)
        .described("λ", "ridge regularisation of the fit"),
    Key::new("window", KeyKind::Count, 2.0, 1.0, 100.0)
        .described(
            "window",
            "initial window: every window-th step past the warm-up calls the model",
        )
        .slider(1.0, SliderMax::Value(8.0), false),
    Key::new("flex", KeyKind::Number, 0.5, 0.0, 10.0)
        .described("flex", "growth of the window at each computed step past the warm-up"),
    Key::new("warmup", KeyKind::Count, 4.0, 0.0, f64::INFINITY)
        .described("warm-up", "steps that always call the model before forecasting starts")
        .unit("steps")
        .slider(0.0, SliderMax::Steps, false),
    Key::new("stop", KeyKind::Number, 0.9, 0.0, 1.0)
        .described("stop", "no forecasts from this share of the steps on")
        .unit("share of steps"),
];

/// Spectrum: Chebyshev ridge fit blended with a Taylor step on the denoised output.
pub struct Spectrum;

impl MethodDef for Spectrum {
    fn name(&self) -> &'static str {
        "spectrum"
    }
    fn title(&self) -> &'static str {
        "Spectrum (forecast)"
    }
    fn short(&self) -> &'static str {
        "Spectrum"
    }
    fn about(&self) -> &'static str {
        "Spectrum as in stable-diffusion.cpp (leejet/stable-diffusion.cpp @97d29908, src/runtime/spectrum.hpp): between computed steps, forecast the denoised output by a Chebyshev ridge fit over the last outputs blended with a Taylor step; the computed steps thin out as the window grows"
    }
    fn keys(&self) -> &'static [Key] {
        &KEYS
    }
    fn rule(&self, m: &Method, run: &RunInfo) -> Result<Box<dyn StepRule>> {
        Ok(Box::new(SpectrumState::new(
            SpectrumSettings::of(m),
            run.steps,
        )))
    }
}

/// The settings of `spectrum` (`SpectrumConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpectrumSettings {
    /// `w`: weight of the Chebyshev fit in the blend.
    pub w: f32,
    /// `m`: the polynomials' degree.
    pub m: usize,
    /// `lam`: ridge λ.
    pub lam: f32,
    /// `window_size`.
    pub window: usize,
    /// `flex_window`.
    pub flex: f32,
    /// `warmup_steps`.
    pub warmup: usize,
    /// `stop_percent`.
    pub stop: f32,
}

impl SpectrumSettings {
    /// The settings of a `spectrum` method.
    pub fn of(m: &Method) -> Self {
        Self {
            w: m.num("w") as f32,
            m: m.count("m"),
            lam: m.num("lam") as f32,
            window: m.count("window"),
            flex: m.num("flex") as f32,
            warmup: m.count("warmup"),
            stop: m.num("stop") as f32,
        }
    }
}

/// `SpectrumState`: the stored outputs and the window.
pub struct SpectrumState {
    cfg: SpectrumSettings,
    /// Steps so far, computed or forecast.
    cnt: usize,
    /// Forecasts since the last computed step.
    num_cached: usize,
    curr_ws: f32,
    /// How many outputs are kept.
    k: usize,
    stop_step: usize,
    /// The stored denoised outputs and their τ, oldest first.
    outputs: Vec<(f32, Tensor)>,
}

/// τ of step count `cnt`: `(cnt / 50) · 2 − 1` in f32.
pub fn tau(cnt: usize) -> f32 {
    (cnt as f32 / 50.0) * 2.0 - 1.0
}

/// `T_0(τ) … T_{n−1}(τ)`.
fn chebyshev(tau: f32, n: usize) -> Vec<f32> {
    let mut row = vec![1.0f32];
    if n > 1 {
        row.push(tau);
    }
    for j in 2..n {
        row.push(2.0 * tau * row[j - 1] - row[j - 2]);
    }
    row.truncate(n);
    row
}

/// The lower Cholesky factor of the n×n row-major `a`, or `None` when a pivot is ≤ 0.
fn cholesky(a: &[f32], n: usize) -> Option<Vec<f32>> {
    let mut l = vec![0.0f32; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut sum = 0.0f32;
            for k in 0..j {
                sum += l[i * n + k] * l[j * n + k];
            }
            if i == j {
                let diag = a[i * n + i] - sum;
                if diag <= 0.0 {
                    return None;
                }
                l[i * n + j] = diag.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - sum) / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solve `L Lᵀ x = b`.
fn cholesky_solve(l: &[f32], b: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; n];
    for i in 0..n {
        let mut sum = 0.0f32;
        for j in 0..i {
            sum += l[i * n + j] * y[j];
        }
        y[i] = (b[i] - sum) / l[i * n + i];
    }
    let mut x = vec![0.0f32; n];
    for i in (0..n).rev() {
        let mut sum = 0.0f32;
        for j in i + 1..n {
            sum += l[j * n + i] * x[j];
        }
        x[i] = (y[i] - sum) / l[i * n + i];
    }
    x
}

/// The weights of the stored outputs (at `taus`) in the ridge fit's value at `tau_at`, and
/// whether the Cholesky factorisation needed the diagonal raised.
pub fn fit_weights(taus: &[f32], tau_at: f32, m: usize, lam: f32) -> (Vec<f32>, bool) {
    let m1 = m + 1;
    let x: Vec<Vec<f32>> = taus.iter().map(|&t| chebyshev(t, m1)).collect();
    let x_star = chebyshev(tau_at, m1);
    let mut xtx = vec![0.0f32; m1 * m1];
    for i in 0..m1 {
        for j in 0..m1 {
            let mut sum = 0.0f32;
            for row in &x {
                sum += row[i] * row[j];
            }
            xtx[i * m1 + j] = sum + if i == j { lam } else { 0.0 };
        }
    }
    let (l, fallback) = match cholesky(&xtx, m1) {
        Some(l) => (l, false),
        None => {
            let trace: f32 = (0..m1).map(|i| xtx[i * m1 + i]).sum();
            for i in 0..m1 {
                xtx[i * m1 + i] += 1e-4 * trace / m1 as f32;
            }
            // As in the C++, the second factorisation is used whatever it gives (zeros past a
            // failed pivot make the solve non-finite, which the run reports).
            (
                cholesky(&xtx, m1).unwrap_or_else(|| vec![0.0; m1 * m1]),
                true,
            )
        }
    };
    let v = cholesky_solve(&l, &x_star, m1);
    let weights = x
        .iter()
        .map(|row| row.iter().zip(&v).map(|(a, b)| a * b).sum())
        .collect();
    (weights, fallback)
}

impl SpectrumState {
    /// The state at the start of an `steps`-step run (`SpectrumState::init`).
    pub fn new(cfg: SpectrumSettings, steps: usize) -> Self {
        Self {
            cfg,
            cnt: 0,
            num_cached: 0,
            curr_ws: cfg.window as f32,
            k: (cfg.m + 1).max(6),
            stop_step: (cfg.stop * steps as f32) as usize,
            outputs: Vec::new(),
        }
    }

    /// Whether this step is forecast (`should_predict`).
    pub fn should_predict(&self) -> bool {
        if self.cnt < self.cfg.warmup
            || (self.stop_step > 0 && self.cnt >= self.stop_step)
            || self.outputs.len() < 2
        {
            return false;
        }
        let ws = (self.curr_ws.floor() as usize).max(1);
        !(self.num_cached + 1).is_multiple_of(ws)
    }

    /// Store a computed step's denoised output (`update`).
    pub fn update(&mut self, denoised: &Tensor) {
        self.outputs.push((tau(self.cnt), denoised.clone()));
        if self.outputs.len() > self.k {
            self.outputs.remove(0);
        }
        if self.cnt >= self.cfg.warmup {
            self.curr_ws += self.cfg.flex;
        }
        self.num_cached = 0;
        self.cnt += 1;
    }

    /// Forecast this step's denoised output (`predict`).
    pub fn predict(&mut self) -> Result<Tensor> {
        let taus: Vec<f32> = self.outputs.iter().map(|(t, _)| *t).collect();
        let (weights, _) = fit_weights(&taus, tau(self.cnt), self.cfg.m, self.cfg.lam);
        let mut cheb: Option<Tensor> = None;
        for ((_, d), w) in self.outputs.iter().zip(weights) {
            let term = (d * f64::from(w))?;
            cheb = Some(match cheb {
                None => term,
                Some(c) => (c + term)?,
            });
        }
        let cheb = cheb.expect("at least two stored outputs");
        let n = self.outputs.len();
        let (last, prev) = (&self.outputs[n - 1].1, &self.outputs[n - 2].1);
        let taylor = (last + ((last - prev)? * 0.5)?)?;
        let w = f64::from(self.cfg.w);
        let out = ((taylor * (1.0 - w))? + (cheb * w)?)?;
        self.num_cached += 1;
        self.cnt += 1;
        Ok(out)
    }
}

impl StepRule for SpectrumState {
    fn before(&mut self, step: &Step<'_>, _notes: &mut Notes) -> Result<Choice> {
        if self.should_predict() {
            let d = self.predict()?;
            let cond = step.scheduler.output_for_x0(&d, step.index, step.latents)?;
            return Ok(Choice::Skip {
                prediction: RawPrediction { uncond: None, cond },
                decision: Decision::Forecast,
            });
        }
        let decision = if self.cnt < self.cfg.warmup {
            Decision::Warmup
        } else {
            Decision::Computed
        };
        Ok(Choice::Call {
            decision,
            plan: None,
        })
    }

    fn computed(&mut self, step: &Step<'_>, prediction: &RawPrediction) -> Result<()> {
        let guided = prediction.guided(step.guidance)?;
        let d = step.scheduler.pred_x0(&guided, step.index, step.latents)?;
        self.update(&d);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::denoise::Denoiser;
    use crate::sampler::{RunSettings, SchedulerConfig, SchedulerKind, run};
    use candle_core::Device;
    use std::collections::HashMap;
    use std::ops::ControlFlow;

    fn settings(v: &serde_json::Value) -> SpectrumSettings {
        let n = |k: &str| v[k].as_f64().unwrap();
        SpectrumSettings {
            w: n("w") as f32,
            m: n("m") as usize,
            lam: n("lam") as f32,
            window: n("window") as usize,
            flex: n("flex") as f32,
            warmup: n("warmup") as usize,
            stop: n("stop") as f32,
        }
    }

    fn fixture() -> (serde_json::Value, HashMap<String, Tensor>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
        let meta = serde_json::from_slice(&std::fs::read(dir.join("spectrum.json")).unwrap());
        let tensors =
            candle_core::safetensors::load(dir.join("spectrum.safetensors"), &Device::Cpu);
        (meta.unwrap(), tensors.unwrap())
    }

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn tau_and_the_chebyshev_rows_follow_the_cpp() {
        assert_eq!(tau(0), -1.0);
        assert_eq!(tau(25), 0.0);
        assert_eq!(tau(50), 1.0);
        assert_eq!(chebyshev(0.5, 4), [1.0, 0.5, -0.5, -1.0]);
        assert_eq!(chebyshev(0.5, 1), [1.0]);
    }

    #[test]
    fn a_singular_system_gets_its_diagonal_raised() {
        // λ = 0, three coefficients, two points: XᵀX has rank 2.
        let (w, fallback) = fit_weights(&[-1.0, -0.96], -0.92, 2, 0.0);
        assert!(fallback && w.iter().all(|v| v.is_finite()), "{w:?}");
        let (w, fallback) = fit_weights(&[-1.0, -0.96], -0.92, 1, 0.0);
        // A line through two points, extrapolated: weights −1 and 2.
        assert!(!fallback);
        assert!(
            (w[0] + 1.0).abs() < 1e-3 && (w[1] - 2.0).abs() < 1e-3,
            "{w:?}"
        );
    }

    /// Every synthetic sequence of the NumPy re-derivation: the same decisions, fit weights,
    /// fallbacks and forecasts.
    #[test]
    fn the_state_matches_the_numpy_re_derivation_on_synthetic_sequences() {
        let (meta, tensors) = fixture();
        let cases = meta["synthetic"].as_array().unwrap();
        assert_eq!(cases.len(), 5);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let steps = case["steps"].as_u64().unwrap() as usize;
            let outputs = &tensors[case["tensor"].as_str().unwrap()];
            let mut state = SpectrumState::new(settings(&case["settings"]), steps);
            let mut fits = case["fits"].as_array().unwrap().iter();
            let mut decisions = String::new();
            for i in 0..steps {
                let want = outputs.get(i).unwrap();
                if state.should_predict() {
                    decisions.push('P');
                    let fit = fits.next().unwrap();
                    let taus: Vec<f32> = state.outputs.iter().map(|(t, _)| *t).collect();
                    let want_taus: Vec<f32> = fit["taus"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_f64().unwrap() as f32)
                        .collect();
                    assert_eq!(taus, want_taus, "{name} step {i}");
                    let (w, fallback) = fit_weights(&taus, tau(i), state.cfg.m, state.cfg.lam);
                    assert_eq!(fallback, fit["fallback"].as_bool().unwrap(), "{name} {i}");
                    for (a, b) in w.iter().zip(fit["weights"].as_array().unwrap()) {
                        let b = b.as_f64().unwrap() as f32;
                        assert!(
                            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                            "{name} {i}: {w:?}"
                        );
                    }
                    let ours = state.predict().unwrap();
                    let diff = max_abs(&(&ours - &want).unwrap());
                    assert!(
                        diff <= 1e-4 * max_abs(&want).max(1.0),
                        "{name} step {i}: {diff}"
                    );
                } else {
                    decisions.push('C');
                    state.update(&want);
                }
            }
            assert_eq!(decisions, case["decisions"].as_str().unwrap(), "{name}");
            assert!(fits.next().is_none(), "{name}");
        }
    }

    /// ε = x/3 − t/2000 (no guidance).
    struct Drift;

    impl Denoiser for Drift {
        fn predict(&mut self, x: &Tensor, t: f64) -> Result<RawPrediction> {
            Ok(RawPrediction {
                uncond: None,
                cond: x.affine(1.0 / 3.0, -t / 2000.0)?,
            })
        }
    }

    /// In a run, a forecast step's x0 (what the scheduler steps with) is the forecast made
    /// from the x0 of the computed steps, on every scheduler.
    #[test]
    fn a_forecast_step_steps_with_the_forecast_x0() {
        let dev = Device::Cpu;
        for kind in SchedulerKind::ALL {
            let cfg = SpectrumSettings::of(&Method::of(&Spectrum));
            let settings = RunSettings {
                scheduler: kind,
                steps: 20,
                guidance: 1.0,
                method: Method::of(&Spectrum),
                early_stop: None,
            };
            let init = Tensor::new(&[[1.5f32, -0.5], [0.25, 2.0]], &dev).unwrap();
            let mut shadow = SpectrumState::new(cfg, 20);
            let mut decisions = String::new();
            let sd = SchedulerConfig::stable_diffusion();
            let out = run(&mut Drift, &sd, &settings, &init, &mut |ev| {
                if ev.record.computed {
                    decisions.push('C');
                    shadow.update(ev.pred_x0);
                } else {
                    decisions.push('P');
                    assert!(shadow.should_predict());
                    let want = shadow.predict().unwrap();
                    let diff = max_abs(&(ev.pred_x0 - &want).unwrap());
                    assert!(
                        diff <= 1e-4 * max_abs(&want).max(1.0),
                        "{kind} {}",
                        ev.record.index
                    );
                }
                ControlFlow::Continue(())
            })
            .unwrap();
            assert_eq!(decisions, "CCCCPCPCPPCPPCPPPCCC", "{kind}");
            assert_eq!(out.trace.unet_calls, 11);
            assert_eq!(out.trace.steps[0].decision, Decision::Warmup);
            assert_eq!(out.trace.steps[4].decision, Decision::Forecast);
        }
    }
}
