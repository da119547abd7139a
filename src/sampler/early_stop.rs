//! Latent-convergence early stopping.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Stop when `‖x_k − x_{k−1}‖₂ / ‖x_{k−1}‖₂ < tau` for `patience` consecutive steps, once at
/// least `min_steps` steps ran and `arm_fraction` of the budget is done. The output is then
/// the scheduler's predicted x0 (or the still-noisy latent when `output_x0` is false, as the
/// reference project did).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyStop {
    /// τ, the relative-change threshold.
    pub tau: f64,
    /// Consecutive steps below τ needed to stop.
    pub patience: usize,
    /// Never stop before this many steps ran.
    pub min_steps: usize,
    /// Only count once this fraction of the step budget ran.
    pub arm_fraction: f64,
    /// Output the predicted x0 at the stop (default) instead of the current latent.
    pub output_x0: bool,
}

impl EarlyStop {
    /// The criterion with threshold `tau` and the published patience (3 steps), minimum
    /// (8 steps), arming point (75 % of the budget) and predicted-x0 output.
    pub fn with_tau(tau: f64) -> Self {
        Self {
            tau,
            patience: 3,
            min_steps: 8,
            arm_fraction: 0.75,
            output_x0: true,
        }
    }

    /// Check the settings.
    pub fn validate(&self) -> Result<()> {
        if !(self.tau > 0.0 && self.tau.is_finite()) {
            bail!(
                "early-stop tau must be a positive number (got {})",
                self.tau
            );
        }
        if self.patience == 0 {
            bail!("early-stop patience must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.arm_fraction) {
            bail!(
                "early-stop arm fraction must be within 0..1 (got {})",
                self.arm_fraction
            );
        }
        Ok(())
    }
}

/// Running state of the early-stop test for one image.
#[derive(Debug, Clone)]
pub struct EarlyStopState {
    cfg: EarlyStop,
    budget: usize,
    below: usize,
}

impl EarlyStopState {
    /// Fresh state for a run of `budget` steps.
    pub fn new(cfg: EarlyStop, budget: usize) -> Self {
        Self {
            cfg,
            budget,
            below: 0,
        }
    }

    /// Record the relative change of step `i`; true when the run should stop after it.
    pub fn observe(&mut self, i: usize, rel_change: f64) -> bool {
        let done = i + 1;
        let armed = done as f64 >= self.cfg.arm_fraction * self.budget as f64;
        if armed && rel_change < self.cfg.tau {
            self.below += 1;
        } else {
            self.below = 0;
        }
        done >= self.cfg.min_steps && self.below >= self.cfg.patience && done < self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_only_when_armed_and_patient() {
        let mut s = EarlyStopState::new(EarlyStop::with_tau(0.03), 20);
        // 75 % of 20 = 15 steps must have run before counting starts.
        let mut stop_at = None;
        for i in 0..20 {
            if s.observe(i, 0.001) {
                stop_at = Some(i);
                break;
            }
        }
        // counting from step index 14 (15 done): 14, 15, 16 → stop after index 16.
        assert_eq!(stop_at, Some(16));
    }

    #[test]
    fn a_large_change_resets_patience() {
        // Budget 24: counting starts once 18 steps ran (index 17).
        let mut s = EarlyStopState::new(EarlyStop::with_tau(0.03), 24);
        let changes = [0.001, 0.001, 0.5, 0.001, 0.001, 0.001, 0.001];
        let stop_at = changes
            .iter()
            .enumerate()
            .find(|(k, c)| s.observe(17 + k, **c))
            .map(|(k, _)| 17 + k);
        assert_eq!(stop_at, Some(22));
    }

    #[test]
    fn never_stops_above_tau() {
        let mut s = EarlyStopState::new(EarlyStop::with_tau(0.03), 10);
        assert!((0..10).all(|i| !s.observe(i, 0.2)));
    }
}
