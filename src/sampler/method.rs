//! Acceleration methods: the fixed-step baseline and the AdaptiveDiffusion third-order rule.
//!
//! [`Method`] is the one description of *how* a run saves work; every front end (command
//! line, desktop app, benchmark) builds it, the sampler runs it, and the trace records it
//! (as `mode`, `delta`, `max_skips`, the JSON of every earlier version). A new method is a
//! new variant here, a new [`MethodKind`], and its rule in the sampler loop.
//!
//! The adaptive rule is a faithful port of the authors' published code: `d_j` is the mean
//! absolute change of the latent made by step `j` (the initial noise never enters); after
//! step `i ≥ 3` decision number `k = i − 3` decides step `i + 1`: forced compute when
//! `k ≥ 5` and none of the last `C_max` decisions computed, otherwise skip when
//! `|(d_i + d_{i−2})/2 − d_{i−1}| ≤ δ·d_{i−1}`, otherwise compute. Steps 0–3 always compute.

use super::trace::Decision;
use anyhow::Result;
use candle_core::{DType, Tensor};

/// Number of leading steps that always call the noise predictor.
pub const WARMUP_STEPS: usize = 4;

/// How a run may save noise-predictor calls.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "MethodFields", try_from = "MethodFields")]
pub enum Method {
    /// Every step calls the noise predictor.
    Baseline,
    /// The third-order rule with threshold δ and at most `max_skips` (C_max) skips in a row.
    Adaptive {
        /// δ, relative threshold on the third-order latent difference.
        delta: f64,
        /// C_max, the longest run of skips before a compute is forced.
        max_skips: usize,
    },
}

/// The kinds of [`Method`], without their settings (what `--mode` and CSV columns name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    /// [`Method::Baseline`].
    Baseline,
    /// [`Method::Adaptive`].
    Adaptive,
}

impl MethodKind {
    /// Every kind, in menu order.
    pub const ALL: [MethodKind; 2] = [MethodKind::Baseline, MethodKind::Adaptive];

    /// `"baseline"` or `"adaptive"`.
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Baseline => "baseline",
            MethodKind::Adaptive => "adaptive",
        }
    }
}

impl std::fmt::Display for MethodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MethodKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MethodKind::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = MethodKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown method '{s}' (expected {})", names.join(" or "))
            })
    }
}

/// A setting of a [`Method`] that cannot run, named by what it is (each front end words it
/// with its own name for the setting: a flag, a slider).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MethodError {
    /// δ is negative or not finite.
    #[error("δ must be a finite number ≥ 0 (got {0})")]
    Delta(f64),
    /// C_max is 0.
    #[error(
        "C_max must be at least 1 (it caps consecutive skipped steps; the baseline never skips)"
    )]
    MaxSkips,
}

impl Method {
    /// Check the method's settings.
    pub fn validate(&self) -> Result<(), MethodError> {
        if let Method::Adaptive { delta, max_skips } = *self {
            if !(delta >= 0.0 && delta.is_finite()) {
                return Err(MethodError::Delta(delta));
            }
            if max_skips == 0 {
                return Err(MethodError::MaxSkips);
            }
        }
        Ok(())
    }

    /// Which kind of method.
    pub fn kind(&self) -> MethodKind {
        match self {
            Method::Baseline => MethodKind::Baseline,
            Method::Adaptive { .. } => MethodKind::Adaptive,
        }
    }

    /// `"baseline"` or `"adaptive"`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// δ of an adaptive method.
    pub fn delta(&self) -> Option<f64> {
        match *self {
            Method::Adaptive { delta, .. } => Some(delta),
            Method::Baseline => None,
        }
    }

    /// C_max of an adaptive method.
    pub fn max_skips(&self) -> Option<usize> {
        match *self {
            Method::Adaptive { max_skips, .. } => Some(max_skips),
            Method::Baseline => None,
        }
    }
}

/// The serialised form of a [`Method`]: the `mode`, `delta` and `max_skips` keys of every
/// trace, report and PNG metadata since the first version (`null` where a method has no
/// such setting).
#[derive(serde::Serialize, serde::Deserialize)]
struct MethodFields {
    mode: MethodKind,
    #[serde(default)]
    delta: Option<f64>,
    #[serde(default)]
    max_skips: Option<usize>,
}

impl From<Method> for MethodFields {
    fn from(m: Method) -> Self {
        MethodFields {
            mode: m.kind(),
            delta: m.delta(),
            max_skips: m.max_skips(),
        }
    }
}

impl TryFrom<MethodFields> for Method {
    type Error = String;
    fn try_from(f: MethodFields) -> Result<Self, String> {
        match (f.mode, f.delta, f.max_skips) {
            (MethodKind::Baseline, _, _) => Ok(Method::Baseline),
            (MethodKind::Adaptive, Some(delta), Some(max_skips)) => {
                Ok(Method::Adaptive { delta, max_skips })
            }
            (MethodKind::Adaptive, _, _) => {
                Err("an adaptive run needs both `delta` and `max_skips`".into())
            }
        }
    }
}

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
        match self.method {
            Method::Baseline => Decision::Computed,
            Method::Adaptive { .. } => {
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
        if let Method::Adaptive { delta, max_skips } = self.method {
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

    #[test]
    fn validation_names_the_setting() {
        let e = Method::Adaptive {
            delta: -0.1,
            max_skips: 4,
        }
        .validate()
        .unwrap_err();
        assert_eq!(e, MethodError::Delta(-0.1));
        let e = Method::Adaptive {
            delta: 0.1,
            max_skips: 0,
        }
        .validate()
        .unwrap_err();
        assert_eq!(e, MethodError::MaxSkips);
    }
}
