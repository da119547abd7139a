//! AdaptiveDiffusion's third-order skip rule, a faithful port of the authors' published
//! code: `d_j` is the mean absolute change of the latent made by step `j` (the initial noise
//! never enters); after step `i ≥ 3` decision number `k = i − 3` decides step `i + 1`:
//! forced compute when `k ≥ 5` and none of the last `C_max` decisions computed, otherwise
//! skip when `|(d_i + d_{i−2})/2 − d_{i−1}| ≤ δ·d_{i−1}`, otherwise compute. Steps 0–3
//! always compute. The same decisions drive `adaptive+forecast`.

use super::method::Method;
use super::trace::Decision;
use anyhow::Result;
use candle_core::{DType, Tensor};

/// Number of leading steps that always call the noise predictor.
pub const WARMUP_STEPS: usize = 4;

/// The numbers behind one decision, recorded in the trace.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    /// d_i = mean |x_i − x_{i−1}|, absent after step 0.
    pub d: Option<f64>,
    /// |(d_i + d_{i−2})/2 − d_{i−1}|, from step 3 on.
    pub third_order: Option<f64>,
    /// δ · d_{i−1}, from step 3 on (adaptive only).
    pub threshold: Option<f64>,
}

/// Per-image state of a skip policy. Create one per image: state never leaks across images.
#[derive(Debug)]
pub struct SkipController {
    method: Method,
    /// δ and C_max of the third-order rule (`None`: every step computes).
    rule: Option<(f64, usize)>,
    last_latents: Option<Tensor>,
    d: Vec<f64>,
    /// Decisions so far: `Some(true)` computed, forced or not (`forced` tracked alongside).
    decisions: Vec<(bool, bool)>,
}

impl SkipController {
    /// Fresh state for one image.
    pub fn new(method: Method) -> Self {
        Self {
            method,
            rule: method.adaptive_rule(),
            last_latents: None,
            d: Vec::new(),
            decisions: Vec::new(),
        }
    }

    /// The method this controller applies.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Whether step `i` calls the noise predictor, and why.
    pub fn decide(&self, i: usize) -> Decision {
        match self.rule {
            None => Decision::Computed,
            Some(_) => {
                if i < WARMUP_STEPS {
                    return Decision::Warmup;
                }
                match self.decisions.last() {
                    Some((true, true)) => Decision::Forced,
                    Some((true, false)) | None => Decision::Computed,
                    Some((false, _)) => Decision::Reused,
                }
            }
        }
    }

    /// Record the latent after step `i` and, from step 3 on, decide step `i + 1`.
    pub fn observe(&mut self, i: usize, latents: &Tensor) -> Result<Observation> {
        let mut obs = Observation::default();
        if let Some(prev) = &self.last_latents {
            let d = (latents.to_dtype(DType::F64)? - prev.to_dtype(DType::F64)?)?
                .abs()?
                .mean_all()?
                .to_scalar::<f64>()?;
            self.d.push(d);
            obs.d = Some(d);
        }
        self.last_latents = Some(latents.clone());
        if i + 1 < WARMUP_STEPS || self.d.len() < 3 {
            return Ok(obs);
        }
        let n = self.d.len();
        let (cur, prev, pp) = (self.d[n - 1], self.d[n - 2], self.d[n - 3]);
        let third = ((cur + pp) / 2.0 - prev).abs();
        obs.third_order = Some(third);
        if let Some((delta, max_skips)) = self.rule {
            let threshold = prev * delta;
            obs.threshold = Some(threshold);
            let k = self.decisions.len();
            let recent_all_skipped = self
                .decisions
                .iter()
                .rev()
                .take(max_skips)
                .all(|(computed, _)| !computed);
            let decision = if k > 4 && recent_all_skipped {
                (true, true)
            } else if third <= threshold {
                (false, false)
            } else {
                (true, false)
            };
            self.decisions.push(decision);
        }
        Ok(obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Feed latents whose successive changes are `ds` and return the decisions per step.
    fn run(method: Method, ds: &[f64]) -> Vec<Decision> {
        let mut c = SkipController::new(method);
        let mut x = 0.0f64;
        let mut out = Vec::new();
        for (i, step) in std::iter::once(0.0).chain(ds.iter().copied()).enumerate() {
            out.push(c.decide(i));
            x += step;
            let t = Tensor::new(&[x as f32, x as f32], &Device::Cpu).unwrap();
            c.observe(i, &t).unwrap();
        }
        out
    }

    #[test]
    fn baseline_always_computes() {
        let ds = vec![1.0; 12];
        assert!(
            run(Method::Baseline, &ds)
                .iter()
                .all(|d| *d == Decision::Computed)
        );
    }

    #[test]
    fn constant_change_skips_after_warmup_then_forces() {
        // Constant d_k: the third-order value is 0 ≤ δ·d, so every test says skip. The first
        // run of skips is 5 long (decisions 0..=4), then the C_max cap forces a compute.
        let ds = vec![1.0; 15];
        let got = run(
            Method::Adaptive {
                delta: 0.01,
                max_skips: 4,
            },
            &ds,
        );
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
        let got = run(
            Method::Adaptive {
                delta: 0.01,
                max_skips: 4,
            },
            &ds,
        );
        assert!(got[4..].iter().all(|d| *d == Decision::Computed), "{got:?}");
    }
}
