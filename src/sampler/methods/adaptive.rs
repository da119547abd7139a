//! AdaptiveDiffusion's third-order skip rule, a faithful port of the authors' published
//! code (UniModal4Reasoning/AdaptiveDiffusion): `d_j` is the mean absolute change of the
//! latent made by step `j` (the initial noise never enters); after step `i ≥ 3` decision
//! number `k = i − 3` decides step `i + 1`: forced compute when `k ≥ 5` and none of the last
//! `C_max` decisions computed, otherwise skip when `|(d_i + d_{i−2})/2 − d_{i−1}| ≤ δ·d_{i−1}`,
//! otherwise compute. Steps 0–3 always compute. A skipped step reuses the last computed raw
//! prediction (both guidance halves) with guidance re-applied. The same decisions drive
//! `adaptive+forecast` ([`super::forecast`]).

use super::{Change, Choice, Key, KeyKind, MethodDef, Notes, RunInfo, SliderMax, Step, StepRule};
use crate::sampler::denoise::RawPrediction;
use crate::sampler::method::Method;
use crate::sampler::scheduler::StepOutput;
use crate::sampler::trace::Decision;
use anyhow::Result;
use candle_core::Tensor;

/// Number of leading steps that always call the noise predictor.
pub const WARMUP_STEPS: usize = 4;

/// δ and C_max, shared with `adaptive+forecast`.
pub const KEYS: [Key; 2] = [
    // At 10 the test passes unless consecutive latent changes differ tenfold; above it only
    // C_max decides.
    Key::new("delta", KeyKind::Number, 0.01, 0.0, 10.0)
        .described(
            "δ threshold",
            "Skip the next step when |d_k − 2d_(k−1) + d_(k−2)|/2 ≤ δ·d_(k−1)",
        )
        .slider(0.0, SliderMax::Value(0.2), true),
    Key::new("max_skips", KeyKind::Count, 4.0, 1.0, f64::INFINITY)
        .aliases(&["cmax"])
        .described("C_max", "At most this many skipped steps in a row")
        .unit("steps")
        .slider(1.0, SliderMax::Value(10.0), false),
];

/// AdaptiveDiffusion (reuse).
pub struct Adaptive;

impl MethodDef for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }
    fn title(&self) -> &'static str {
        "AdaptiveDiffusion (reuse)"
    }
    fn short(&self) -> &'static str {
        "Adaptive"
    }
    fn about(&self) -> &'static str {
        "AdaptiveDiffusion (Ye et al., NeurIPS 2024; UniModal4Reasoning/AdaptiveDiffusion): skip a step when the third-order latent difference is small, reusing the last noise prediction"
    }
    fn keys(&self) -> &'static [Key] {
        &KEYS
    }
    fn describe(&self, m: &Method) -> String {
        format!("δ {} · C_max {}", m.shown("delta"), m.shown("max_skips"))
    }
    fn rule(&self, m: &Method, _: &RunInfo) -> Result<Box<dyn StepRule>> {
        Ok(Box::new(ThirdOrderRule::new(m, false)))
    }
}

/// The per-run state of the third-order rule.
#[derive(Debug)]
pub struct ThirdOrderRule {
    delta: f64,
    max_skips: usize,
    forecast: bool,
    /// Decisions so far: (computed, forced).
    decisions: Vec<(bool, bool)>,
}

impl ThirdOrderRule {
    /// Fresh state for one run of `m` (δ and C_max); with `forecast`, a skipped step
    /// extrapolates instead of reusing.
    pub fn new(m: &Method, forecast: bool) -> Self {
        Self {
            delta: m.num("delta"),
            max_skips: m.count("max_skips"),
            forecast,
            decisions: Vec::new(),
        }
    }

    /// Whether step `i` calls the noise predictor, and why.
    pub fn decide(&self, i: usize) -> Decision {
        if i < WARMUP_STEPS {
            return Decision::Warmup;
        }
        match self.decisions.last() {
            Some((true, true)) => Decision::Forced,
            Some((true, false)) | None => Decision::Computed,
            Some((false, _)) => Decision::Reused,
        }
    }

    /// Decide the next step from the change the last one made; the threshold δ·d_{i−1}.
    pub fn observe(&mut self, change: &Change) -> Option<f64> {
        let (third, prev) = (change.third_order?, change.prev_d?);
        let threshold = prev * self.delta;
        let recent_all_skipped = self
            .decisions
            .iter()
            .rev()
            .take(self.max_skips)
            .all(|(computed, _)| !computed);
        let decision = if self.decisions.len() > 4 && recent_all_skipped {
            (true, true)
        } else if third <= threshold {
            (false, false)
        } else {
            (true, false)
        };
        self.decisions.push(decision);
        Some(threshold)
    }
}

impl StepRule for ThirdOrderRule {
    fn before(&mut self, step: &Step<'_>, _: &mut Notes) -> Result<Choice> {
        let decision = self.decide(step.index);
        if decision.computed() || step.history.is_empty() {
            // Nothing to reuse yet (cannot happen after warm-up): compute instead.
            let decision = if decision.computed() {
                decision
            } else {
                Decision::Computed
            };
            return Ok(Choice::Call {
                decision,
                plan: None,
            });
        }
        // With two computed steps to extrapolate from, adaptive+forecast forecasts.
        let decision = if self.forecast && step.history.len() == 2 {
            Decision::Forecast
        } else {
            decision
        };
        Ok(Choice::Skip {
            prediction: reuse(step.history, step.index, self.forecast)?,
            decision,
        })
    }

    fn after(
        &mut self,
        _: &Step<'_>,
        _: &StepOutput,
        change: &Change,
        notes: &mut Notes,
    ) -> Result<()> {
        notes.threshold = self.observe(change);
        Ok(())
    }
}

/// The prediction of skipped step `s` from the computed ones (`history`, oldest first): the
/// last, or with `forecast` (and two computed steps `c′ < c`) each half extrapolated to first
/// order, `ε_c + (ε_c − ε_c′)·(s − c)/(c − c′)`.
pub fn reuse(
    history: &[(usize, RawPrediction)],
    s: usize,
    forecast: bool,
) -> Result<RawPrediction> {
    let Some((c, last)) = history.last() else {
        anyhow::bail!("step {s} reuses a prediction, but no step has been computed yet");
    };
    let [(c0, first), _] = history else {
        return Ok(last.clone());
    };
    if !forecast {
        return Ok(last.clone());
    }
    let w = (s - c) as f64 / (c - c0) as f64;
    let ahead = |a: &Tensor, b: &Tensor| -> Result<Tensor> { Ok((a + ((a - b)? * w)?)?) };
    let uncond = match (&last.uncond, &first.uncond) {
        (Some(a), Some(b)) => Some(ahead(a, b)?),
        _ => None,
    };
    Ok(RawPrediction {
        uncond,
        cond: ahead(&last.cond, &first.cond)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::change::ChangeTracker;
    use candle_core::Device;

    /// Feed latents whose successive changes are `ds` and return the decisions per step.
    fn run(delta: f64, max_skips: usize, ds: &[f64]) -> Vec<Decision> {
        let mut c = ThirdOrderRule::new(&Method::adaptive(delta, max_skips), false);
        let mut tracker = ChangeTracker::default();
        let mut x = 0.0f64;
        let mut out = Vec::new();
        for (i, step) in std::iter::once(0.0).chain(ds.iter().copied()).enumerate() {
            out.push(c.decide(i));
            x += step;
            let t = Tensor::new(&[x as f32, x as f32], &Device::Cpu).unwrap();
            c.observe(&tracker.observe(&t).unwrap());
        }
        out
    }

    #[test]
    fn constant_change_skips_after_warmup_then_forces() {
        // Constant d_k: the third-order value is 0 ≤ δ·d, so every test says skip. The first
        // run of skips is 5 long (decisions 0..=4), then the C_max cap forces a compute.
        let got = run(0.01, 4, &[1.0; 15]);
        use Decision::*;
        let want = vec![
            Warmup, Warmup, Warmup, Warmup, Reused, Reused, Reused, Reused, Reused, Forced, Reused,
            Reused, Reused, Reused, Forced, Reused,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn changing_latents_compute() {
        // Alternating changes make the third-order value large: never skip.
        let ds: Vec<f64> = (0..12)
            .map(|i| if i % 2 == 0 { 1.0 } else { 3.0 })
            .collect();
        let got = run(0.01, 4, &ds);
        assert!(got[4..].iter().all(|d| *d == Decision::Computed), "{got:?}");
    }

    #[test]
    fn a_forecast_extrapolates_each_half_from_the_last_two_computed_steps() {
        let t = |v: f32| Tensor::new(&[v], &Device::Cpu).unwrap();
        let pred = |c: f32, u: f32| RawPrediction {
            uncond: Some(t(u)),
            cond: t(c),
        };
        let mut history = vec![(2, pred(1.0, 10.0)), (4, pred(2.0, 14.0))];
        // Step 7: three steps past the last computed one, at the slope (2 − 1)/(4 − 2).
        let f = reuse(&history, 7, true).unwrap();
        assert_eq!(f.cond.to_vec1::<f32>().unwrap(), [3.5]);
        assert_eq!(f.uncond.unwrap().to_vec1::<f32>().unwrap(), [20.0]);
        // Plain reuse, or one computed step only: the last prediction.
        let plain = reuse(&history, 7, false).unwrap();
        assert_eq!(plain.cond.to_vec1::<f32>().unwrap(), [2.0]);
        history.remove(0);
        let one = reuse(&history, 7, true).unwrap();
        assert_eq!(one.cond.to_vec1::<f32>().unwrap(), [2.0]);
        assert!(reuse(&[], 7, true).is_err());
    }
}
