//! DPM-Solver++ 2M, matching diffusers' `DPMSolverMultistepScheduler` with its defaults
//! (`algorithm_type = "dpmsolver++"`, `solver_order = 2`, `solver_type = "midpoint"`,
//! `lower_order_final = true`, `final_sigmas_type = "zero"`).

use super::schedule::{
    PredictionType, SchedulerConfig, TimestepSpacing, check_steps, interp, linspace,
    round_half_even, train_sigmas,
};
use super::scheduler::{Scheduler, StepOutput};
use anyhow::{Result, bail};
use candle_core::Tensor;

/// The multistep DPM-Solver++ of order 2.
#[derive(Debug, Clone)]
pub struct DpmPlusPlus2M {
    timesteps: Vec<f64>,
    /// σ per step, with a final 0.
    sigmas: Vec<f64>,
    prediction: PredictionType,
    /// x0 predictions of the previous step (the solver history).
    previous_x0: Option<Tensor>,
    /// Index of the step `previous_x0` belongs to, to detect out-of-order use.
    previous_index: Option<usize>,
}

fn dpm_timesteps(cfg: &SchedulerConfig, steps: usize) -> Vec<f64> {
    let t = cfg.num_train_timesteps;
    match cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace) {
        TimestepSpacing::Linspace => linspace(0.0, (t - 1) as f64, steps + 1)
            .into_iter()
            .rev()
            .take(steps)
            .map(round_half_even)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = t / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + cfg.steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t as f64 / steps as f64;
            (0..steps)
                .map(|i| round_half_even(t as f64 - i as f64 * ratio) - 1.0)
                .collect()
        }
    }
}

/// (α_t, σ_t) of the variance-preserving process for an EDM-style σ.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// λ = log α − log σ (+∞ at σ = 0).
fn lambda(sigma: f64) -> f64 {
    let (a, s) = alpha_sigma(sigma);
    a.ln() - s.ln()
}

impl DpmPlusPlus2M {
    /// Configure DPM-Solver++ 2M for `steps` inference steps.
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.validate()?;
        check_steps(steps, cfg)?;
        let table = train_sigmas(&cfg.alphas_cumprod());
        let timesteps = dpm_timesteps(cfg, steps);
        if timesteps.windows(2).any(|w| w[0] == w[1]) {
            bail!(
                "{steps} steps are too many for DPM-Solver++ with this timestep spacing (timesteps repeat)"
            );
        }
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&ts| interp(&table, ts)).collect();
        sigmas.push(0.0);
        Ok(Self {
            timesteps,
            sigmas,
            prediction: cfg.prediction_type,
            previous_x0: None,
            previous_index: None,
        })
    }

    fn convert_to_x0(&self, model_output: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        let (alpha, sigma) = alpha_sigma(self.sigmas[i]);
        Ok(match self.prediction {
            PredictionType::Epsilon => ((x - (model_output * sigma)?)? * (1.0 / alpha))?,
            PredictionType::VPrediction => ((x * alpha)? - (model_output * sigma)?)?,
            PredictionType::Sample => model_output.clone(),
        })
    }
}

impl Scheduler for DpmPlusPlus2M {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn sigma(&self, i: usize) -> f64 {
        self.sigmas[i]
    }

    fn scale_model_input(&self, x: &Tensor, _i: usize) -> Result<Tensor> {
        Ok(x.clone())
    }

    fn pred_x0(&self, output: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        self.convert_to_x0(output, i, x)
    }

    fn output_for_x0(&self, x0: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        let (alpha, sigma) = alpha_sigma(self.sigmas[i]);
        Ok(match self.prediction {
            PredictionType::Epsilon => (x - (x0 * alpha)?)?.affine(1.0 / sigma, 0.0)?,
            PredictionType::VPrediction => ((x * alpha)? - x0)?.affine(1.0 / sigma, 0.0)?,
            PredictionType::Sample => x0.clone(),
        })
    }

    fn step(&mut self, model_output: &Tensor, i: usize, x: &Tensor) -> Result<StepOutput> {
        let n = self.timesteps.len();
        let x0 = self.convert_to_x0(model_output, i, x)?;
        let (s0, t) = (self.sigmas[i], self.sigmas[i + 1]);
        let (alpha_t, sigma_t) = alpha_sigma(t);
        let sigma_s0 = alpha_sigma(s0).1;
        let h = lambda(t) - lambda(s0);
        // exp(−h) − 1, which is −1 at the final σ = 0.
        let em1 = (-h).exp() - 1.0;
        let ratio = if t == 0.0 { 0.0 } else { sigma_t / sigma_s0 };
        // The final step is first order (lower_order_final with final_sigmas_type "zero").
        let history = match (&self.previous_x0, self.previous_index) {
            (Some(prev), Some(j)) if j + 1 == i && i + 1 < n => Some(prev),
            _ => None,
        };
        let prev_sample = match history {
            None => ((x * ratio)? - (&x0 * (alpha_t * em1))?)?,
            Some(m1) => {
                let s1 = self.sigmas[i - 1];
                let h0 = lambda(s0) - lambda(s1);
                let r0 = h0 / h;
                // D1 = (m0 − m1)/r0 ; x = ratio·x − α(e^{−h}−1)·D0 − ½α(e^{−h}−1)·D1
                let d1 = ((&x0 - m1)? * (1.0 / r0))?;
                (((x * ratio)? - (&x0 * (alpha_t * em1))?)? - (d1 * (0.5 * alpha_t * em1))?)?
            }
        };
        self.previous_x0 = Some(x0.clone());
        self.previous_index = Some(i);
        Ok(StepOutput {
            prev_sample,
            pred_original: x0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_timesteps_drop_zero() {
        let d = DpmPlusPlus2M::new(&SchedulerConfig::stable_diffusion(), 10).unwrap();
        // linspace(0, 999, 11) reversed without the last entry.
        assert_eq!(
            d.timesteps,
            vec![
                999.0, 899.0, 799.0, 699.0, 599.0, 500.0, 400.0, 300.0, 200.0, 100.0
            ]
        );
        assert_eq!(d.sigmas.len(), 11);
    }

    #[test]
    fn final_step_lands_on_x0() {
        let mut d = DpmPlusPlus2M::new(&SchedulerConfig::stable_diffusion(), 2).unwrap();
        let dev = candle_core::Device::Cpu;
        let x = Tensor::new(&[3.0f32, -2.0], &dev).unwrap();
        let eps = Tensor::new(&[0.1f32, 0.2], &dev).unwrap();
        d.step(&eps, 0, &x).unwrap();
        let out = d.step(&eps, 1, &x).unwrap();
        let a: Vec<f32> = out.prev_sample.to_vec1().unwrap();
        let b: Vec<f32> = out.pred_original.to_vec1().unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5, "{a:?} {b:?}");
        }
    }
}
