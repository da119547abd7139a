//! The latent change every step makes, measured for every run: `d_i = mean |x_{i+1} − x_i|`
//! and AdaptiveDiffusion's third-order value `|(d_i + d_{i−2})/2 − d_{i−1}|` (the app's
//! curves show both for any method; AdaptiveDiffusion's rule tests the second).

use anyhow::Result;
use candle_core::{DType, Tensor};

/// The change one step made.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Change {
    /// d_i = mean |x_{i+1} − x_i| (absent at step 0: the initial noise never enters).
    pub d: Option<f64>,
    /// d of the step before (absent at steps 0 and 1).
    pub prev_d: Option<f64>,
    /// |(d_i + d_{i−2})/2 − d_{i−1}|, from step 3 on.
    pub third_order: Option<f64>,
}

/// The latents of the last step and every d so far.
#[derive(Debug, Default)]
pub struct ChangeTracker {
    last: Option<Tensor>,
    d: Vec<f64>,
}

impl ChangeTracker {
    /// Record the latents after a step.
    pub fn observe(&mut self, latents: &Tensor) -> Result<Change> {
        let mut change = Change::default();
        if let Some(prev) = &self.last {
            let d = (latents.to_dtype(DType::F64)? - prev.to_dtype(DType::F64)?)?
                .abs()?
                .mean_all()?
                .to_scalar::<f64>()?;
            self.d.push(d);
            change.d = Some(d);
        }
        self.last = Some(latents.clone());
        let n = self.d.len();
        if n >= 2 {
            change.prev_d = Some(self.d[n - 2]);
        }
        if n >= 3 {
            let (cur, prev, pp) = (self.d[n - 1], self.d[n - 2], self.d[n - 3]);
            change.third_order = Some(((cur + pp) / 2.0 - prev).abs());
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn d_and_the_third_order_value_follow_the_latents() {
        let mut t = ChangeTracker::default();
        let mut got = vec![];
        for x in [0.0f32, 1.0, 3.0, 4.0, 8.0] {
            got.push(
                t.observe(&Tensor::new(&[x, -x], &Device::Cpu).unwrap())
                    .unwrap(),
            );
        }
        assert_eq!(got[0], Change::default());
        assert_eq!(got[1].d, Some(1.0));
        assert_eq!(got[2].prev_d, Some(1.0));
        assert_eq!(got[2].third_order, None);
        // d = 1, 2, 1: |(1 + 1)/2 − 2| = 1; then d = 2, 1, 4: |(4 + 2)/2 − 1| = 2.
        assert_eq!(got[3].third_order, Some(1.0));
        assert_eq!(got[4].third_order, Some(2.0));
    }
}
