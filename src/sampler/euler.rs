//! Euler discrete (no churn), matching diffusers' `EulerDiscreteScheduler`.

use super::schedule::{
    PredictionType, SchedulerConfig, TimestepSpacing, check_steps, interp, linspace,
    round_half_even, train_sigmas,
};
use super::scheduler::{Scheduler, StepOutput};
use anyhow::{Result, bail};
use candle_core::Tensor;

/// The Euler method on the probability-flow ODE in σ.
#[derive(Debug, Clone)]
pub struct Euler {
    timesteps: Vec<f64>,
    /// σ per step, with a final 0.
    sigmas: Vec<f64>,
    init_sigma: f64,
    prediction: PredictionType,
}

/// Timesteps shared by the σ-space schedulers (Euler's rules).
pub(crate) fn euler_timesteps(cfg: &SchedulerConfig, steps: usize) -> Vec<f64> {
    let t = cfg.num_train_timesteps;
    match cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace) {
        // numpy computes this linspace in float32.
        TimestepSpacing::Linspace => linspace(0.0, (t - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|x| x as f32 as f64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = t / steps;
            (0..steps)
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

impl Euler {
    /// Configure Euler for `steps` inference steps.
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.validate()?;
        check_steps(steps, cfg)?;
        if cfg.prediction_type == PredictionType::Sample {
            bail!("the Euler scheduler does not support prediction_type 'sample'");
        }
        let table = train_sigmas(&cfg.alphas_cumprod());
        let timesteps = euler_timesteps(cfg, steps);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&ts| interp(&table, ts)).collect();
        sigmas.push(0.0);
        let max_sigma = sigmas.iter().cloned().fold(0.0, f64::max);
        let init_sigma = match cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace) {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(Self {
            timesteps,
            sigmas,
            init_sigma,
            prediction: cfg.prediction_type,
        })
    }
}

impl Scheduler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_sigma
    }

    fn sigma(&self, i: usize) -> f64 {
        self.sigmas[i]
    }

    fn scale_model_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        let s = self.sigmas[i];
        Ok((x * (1.0 / (s * s + 1.0).sqrt()))?)
    }

    fn pred_x0(&self, output: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        let sigma = self.sigmas[i];
        Ok(match self.prediction {
            PredictionType::Epsilon => (x - (output * sigma)?)?,
            _ => {
                let c = sigma * sigma + 1.0;
                ((output * (-sigma / c.sqrt()))? + (x * (1.0 / c))?)?
            }
        })
    }

    fn output_for_x0(&self, x0: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        let sigma = self.sigmas[i];
        Ok(match self.prediction {
            PredictionType::Epsilon => ((x - x0)? * (1.0 / sigma))?,
            _ => {
                let c = sigma * sigma + 1.0;
                (((x * (1.0 / c))? - x0)? * (c.sqrt() / sigma))?
            }
        })
    }

    fn step(&mut self, model_output: &Tensor, i: usize, x: &Tensor) -> Result<StepOutput> {
        let sigma = self.sigmas[i];
        let x0 = self.pred_x0(model_output, i, x)?;
        // x_{i+1} = x + (x − x0)/σ · (σ_{i+1} − σ)
        let dt = self.sigmas[i + 1] - sigma;
        let derivative = ((x - &x0)? * (1.0 / sigma))?;
        let prev = (x + (derivative * dt)?)?;
        Ok(StepOutput {
            prev_sample: prev,
            pred_original: x0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_defaults_use_linspace() {
        let e = Euler::new(&SchedulerConfig::stable_diffusion(), 10).unwrap();
        assert_eq!(e.timesteps[0], 999.0);
        assert_eq!(e.timesteps[9], 0.0);
        assert_eq!(e.timesteps[1], 888.0);
        // σ_max of SD ≈ 14.61; linspace spacing → init sigma = σ_max.
        assert!((e.init_sigma - 14.6146).abs() < 1e-3, "{}", e.init_sigma);
        assert_eq!(*e.sigmas.last().unwrap(), 0.0);
    }

    #[test]
    fn final_step_returns_x0() {
        let mut e = Euler::new(&SchedulerConfig::stable_diffusion(), 3).unwrap();
        let dev = candle_core::Device::Cpu;
        let x = Tensor::new(&[1.0f32, 2.0], &dev).unwrap();
        let eps = Tensor::new(&[0.5f32, -0.5], &dev).unwrap();
        let out = e.step(&eps, 2, &x).unwrap();
        let a: Vec<f32> = out.prev_sample.to_vec1().unwrap();
        let b: Vec<f32> = out.pred_original.to_vec1().unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5);
        }
    }
}
