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
}

impl Decision {
    /// True when the noise predictor ran at this step.
    pub fn computed(self) -> bool {
        !matches!(self, Decision::Reused)
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
    /// `baseline` or `adaptive`.
    pub mode: String,
    /// Scheduler name (`ddim`, `euler`, `dpm++`).
    pub scheduler: String,
    /// The step budget.
    pub budget: usize,
    /// Classifier-free guidance scale.
    pub guidance: f64,
    /// δ, for adaptive runs.
    pub delta: Option<f64>,
    /// C_max, for adaptive runs.
    pub max_skips: Option<usize>,
    /// Early-stop settings, when enabled.
    pub early_stop: Option<super::EarlyStop>,
    /// Step index after which the run stopped early, if it did.
    pub stopped_early_at: Option<usize>,
    /// Noise-predictor calls (one classifier-free-guidance batch counts once).
    pub unet_calls: usize,
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
