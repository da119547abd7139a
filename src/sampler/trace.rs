//! The per-step trace: one serde type shared by the CLI's JSON, the GUI plots, benchmark
//! reports and PNG metadata.

use serde::{Deserialize, Serialize};

/// Why a step did or did not call the noise predictor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// One of the first four steps of an adaptive run, which always compute.
    Warmup,
    /// The noise predictor was called (baseline, or the third-order test said so).
    Computed,
    /// The previous raw prediction was reused with guidance re-applied.
    Reused,
    /// Computed because the last C_max decisions were all skips.
    Forced,
    /// A partial call: DeepCache's shallow branch, the deep modules from the cache.
    Partial,
    /// No call: the method forecast the prediction from earlier ones (adaptive+forecast's
    /// extrapolation, Spectrum's fit, SADA's x0 from its third-order prediction).
    Forecast,
}

impl Decision {
    /// True when the noise predictor ran at this step.
    pub fn computed(self) -> bool {
        !matches!(self, Decision::Reused | Decision::Forecast)
    }
}

/// Everything measured at one denoising step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step index, 0-based in sampling order.
    pub index: usize,
    /// The timestep given to the noise predictor.
    pub timestep: f64,
    /// The noise level σ at this step.
    pub sigma: f64,
    /// Whether the noise predictor ran.
    pub computed: bool,
    /// Why (warmup, computed, reused, forced).
    pub decision: Decision,
    /// d = mean |x_i − x_{i−1}| after this step (absent at step 0).
    pub d: Option<f64>,
    /// |(d_i + d_{i−2})/2 − d_{i−1}|, the third-order value tested after this step.
    pub third_order: Option<f64>,
    /// δ · d_{i−1}: the step after this one is skipped when `third_order ≤ threshold`.
    pub threshold: Option<f64>,
    /// The decision signal of a method other than AdaptiveDiffusion at this step (`ucache`:
    /// the accumulated error), when it was tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<f64>,
    /// The limit `signal` was tested against: the step was skipped when `signal < limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_limit: Option<f64>,
    /// ‖x_i − x_{i−1}‖₂ / ‖x_{i−1}‖₂, the early-stop criterion.
    pub rel_change: f64,
    /// Wall time of the noise-predictor call (0 when reused), milliseconds.
    pub predictor_ms: f64,
    /// Wall time of the skip controller and early-stop bookkeeping, milliseconds.
    pub controller_ms: f64,
    /// Wall time of the whole step, milliseconds.
    pub step_ms: f64,
}

/// A whole run: settings, totals and every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTrace {
    /// The method that ran (serialised as `mode`, `delta`, `max_skips`).
    #[serde(flatten)]
    pub method: super::Method,
    /// Scheduler name (`ddim`, `euler`, `dpm++`).
    pub scheduler: String,
    /// The step budget.
    pub budget: usize,
    /// Classifier-free guidance scale.
    pub guidance: f64,
    /// Early-stop settings, when enabled.
    pub early_stop: Option<super::EarlyStop>,
    /// Step index after which the run stopped early, if it did.
    pub stopped_early_at: Option<usize>,
    /// Noise-predictor calls (one classifier-free-guidance batch counts once).
    pub unet_calls: usize,
    /// Multiply-accumulates of the noise-predictor calls (when the model counts them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unet_macs: Option<u64>,
    /// `unet_macs` in full-call equivalents: one classifier-free-guidance call of SD 1.5 at
    /// 512×512 is 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unet_cost: Option<f64>,
    /// Steps executed (computed or reused).
    pub steps_run: usize,
    /// Wall time of the denoising loop, milliseconds (VAE decode excluded).
    pub elapsed_ms: f64,
    /// Every executed step.
    pub steps: Vec<StepRecord>,
}

impl RunTrace {
    /// Fraction of the budget's noise-predictor calls that were avoided.
    pub fn skipped_fraction(&self) -> f64 {
        if self.budget == 0 {
            return 0.0;
        }
        1.0 - self.unet_calls as f64 / self.budget as f64
    }

    /// Comma-separated table of the steps, one row per step, with a header.
    pub fn steps_csv(&self) -> String {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:e}")).unwrap_or_default();
        let mut s = String::from(
            "index,timestep,sigma,computed,decision,d,third_order,threshold,rel_change,predictor_ms,controller_ms,step_ms\n",
        );
        for r in &self.steps {
            let decision = serde_json::to_value(r.decision)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{:e},{:.3},{:.4},{:.3}\n",
                r.index,
                r.timestep,
                r.sigma,
                r.computed,
                decision,
                opt(r.d),
                opt(r.third_order),
                opt(r.threshold),
                r.rel_change,
                r.predictor_ms,
                r.controller_ms,
                r.step_ms
            ));
        }
        s
    }
}

/// How long the rest of a run will take, estimated from the steps so far: every step left
/// is costed at the mean time of the steps that called the noise predictor (an upper bound
/// for an adaptive run, which skips some). `None` before the first computed step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Mean milliseconds of a computed step so far.
    pub step_ms: f64,
    /// Steps still to run (of this run and any queued after it).
    pub steps_left: usize,
}

impl Estimate {
    /// From the records so far and the steps still to run.
    pub fn from_steps(steps: &[StepRecord], steps_left: usize) -> Option<Self> {
        let computed: Vec<f64> = steps
            .iter()
            .filter(|r| r.computed)
            .map(|r| r.step_ms)
            .collect();
        if computed.is_empty() {
            return None;
        }
        Some(Self {
            step_ms: computed.iter().sum::<f64>() / computed.len() as f64,
            steps_left,
        })
    }

    /// Milliseconds left at most.
    pub fn left_ms(&self) -> f64 {
        self.step_ms * self.steps_left as f64
    }

    /// A sentence for runs long enough to matter (over 30 s left), else `None`:
    /// "about 12 min left (48 steps at 14.2 s each; steps that skip the noise predictor are
    /// faster)".
    pub fn long_run_note(&self) -> Option<String> {
        let left = self.left_ms() / 1e3;
        if left < 30.0 {
            return None;
        }
        Some(format!(
            "about {} left ({} steps at {:.1} s each; steps that skip the noise predictor are faster)",
            human_duration(left),
            self.steps_left,
            self.step_ms / 1e3
        ))
    }
}

/// "45 s", "12 min", "1 h 05 min".
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s < 90 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", (s + 30) / 60)
    } else {
        let m = (s + 30) / 60;
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

#[cfg(test)]
mod estimate_tests {
    use super::*;

    fn record(computed: bool, step_ms: f64) -> StepRecord {
        StepRecord {
            index: 0,
            timestep: 999.0,
            sigma: 1.0,
            computed,
            decision: if computed {
                Decision::Computed
            } else {
                Decision::Reused
            },
            d: None,
            third_order: None,
            threshold: None,
            signal: None,
            signal_limit: None,
            rel_change: 0.0,
            predictor_ms: 0.0,
            controller_ms: 0.0,
            step_ms,
        }
    }

    #[test]
    fn costs_the_steps_left_at_the_computed_steps_mean() {
        assert_eq!(Estimate::from_steps(&[], 10), None);
        assert_eq!(Estimate::from_steps(&[record(false, 1.0)], 10), None);
        let e = Estimate::from_steps(
            &[
                record(true, 10_000.0),
                record(false, 5.0),
                record(true, 14_000.0),
            ],
            97,
        )
        .unwrap();
        assert_eq!(e.step_ms, 12_000.0);
        assert_eq!(e.left_ms(), 97.0 * 12_000.0);
        let note = e.long_run_note().unwrap();
        assert!(
            note.starts_with("about 19 min left (97 steps at 12.0 s each"),
            "{note}"
        );
        let short = Estimate::from_steps(&[record(true, 100.0)], 50).unwrap();
        assert_eq!(short.long_run_note(), None);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(44.6), "45 s");
        assert_eq!(human_duration(700.0), "12 min");
        assert_eq!(human_duration(3900.0), "1 h 05 min");
    }
}

#[cfg(test)]
mod json_tests {
    use super::*;
    use crate::sampler::Method;

    /// A trace as every earlier version wrote it: the method as `mode`, `delta`, `max_skips`.
    fn old_json(mode: &str, delta: &str, max_skips: &str) -> String {
        format!(
            r#"{{"mode":"{mode}","scheduler":"ddim","budget":2,"guidance":7.5,"delta":{delta},"max_skips":{max_skips},"early_stop":null,"stopped_early_at":null,"unet_calls":2,"steps_run":0,"elapsed_ms":1.0,"steps":[]}}"#
        )
    }

    #[test]
    fn the_method_reads_and_writes_the_keys_of_earlier_traces() {
        for (json, method) in [
            (old_json("baseline", "null", "null"), Method::BASELINE),
            (old_json("adaptive", "0.02", "3"), Method::adaptive(0.02, 3)),
        ] {
            let t: RunTrace = serde_json::from_str(&json).unwrap();
            assert_eq!(t.method, method);
            let back: serde_json::Value = serde_json::to_value(&t).unwrap();
            let want: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(back, want);
        }
        let bad = old_json("adaptive", "null", "3");
        let e = serde_json::from_str::<RunTrace>(&bad).unwrap_err();
        assert!(e.to_string().contains("delta"), "{e}");
        let unknown = old_json("warp", "null", "null");
        assert!(serde_json::from_str::<RunTrace>(&unknown).is_err());
    }
}
