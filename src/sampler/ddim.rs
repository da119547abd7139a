//! DDIM (η = 0), matching diffusers' `DDIMScheduler`.

use super::schedule::{
    PredictionType, SchedulerConfig, TimestepSpacing, check_steps, linspace, round_half_even,
};
use super::scheduler::{Scheduler, StepOutput};
use anyhow::Result;
use candle_core::Tensor;

/// Deterministic DDIM sampling.
#[derive(Debug, Clone)]
pub struct Ddim {
    timesteps: Vec<usize>,
    timesteps_f: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    step_ratio: usize,
    prediction: PredictionType,
    clip: Option<f64>,
}

impl Ddim {
    /// Configure DDIM for `steps` inference steps.
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.validate()?;
        check_steps(steps, cfg)?;
        let t = cfg.num_train_timesteps;
        let alphas_cumprod = cfg.alphas_cumprod();
        let timesteps: Vec<usize> = match cfg.timestep_spacing.unwrap_or(TimestepSpacing::Leading) {
            TimestepSpacing::Linspace => linspace(0.0, (t - 1) as f64, steps)
                .into_iter()
                .rev()
                .map(|x| round_half_even(x) as usize)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = t / steps;
                (0..steps)
                    .rev()
                    .map(|i| (i * ratio + cfg.steps_offset).min(t - 1))
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = t as f64 / steps as f64;
                (0..steps)
                    .map(|i| {
                        let x = round_half_even(t as f64 - i as f64 * ratio) as usize;
                        x.saturating_sub(1)
                    })
                    .collect()
            }
        };
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            timesteps_f: timesteps.iter().map(|&x| x as f64).collect(),
            timesteps,
            alphas_cumprod,
            final_alpha_cumprod,
            step_ratio: t / steps,
            prediction: cfg.prediction_type,
            clip: cfg
                .clip_sample
                .unwrap_or(true)
                .then_some(cfg.clip_sample_range),
        })
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps_f
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn sigma(&self, i: usize) -> f64 {
        let a = self.alphas_cumprod[self.timesteps[i]];
        ((1.0 - a) / a).sqrt()
    }

    fn scale_model_input(&self, x: &Tensor, _i: usize) -> Result<Tensor> {
        Ok(x.clone())
    }

    fn pred_x0(&self, output: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        let a = self.alphas_cumprod[self.timesteps[i]];
        let b = 1.0 - a;
        Ok(match self.prediction {
            PredictionType::Epsilon => ((x - (output * b.sqrt())?)? * (1.0 / a.sqrt()))?,
            PredictionType::VPrediction => ((x * a.sqrt())? - (output * b.sqrt())?)?,
            PredictionType::Sample => output.clone(),
        })
    }

    fn output_for_x0(&self, x0: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        let a = self.alphas_cumprod[self.timesteps[i]];
        let b = 1.0 - a;
        Ok(match self.prediction {
            PredictionType::Epsilon => ((x - (x0 * a.sqrt())?)? * (1.0 / b.sqrt()))?,
            PredictionType::VPrediction => (((x * a.sqrt())? - x0)? * (1.0 / b.sqrt()))?,
            PredictionType::Sample => x0.clone(),
        })
    }

    fn step(&mut self, model_output: &Tensor, i: usize, x: &Tensor) -> Result<StepOutput> {
        let t = self.timesteps[i];
        let a_t = self.alphas_cumprod[t];
        let a_prev = match t.checked_sub(self.step_ratio) {
            Some(p) => self.alphas_cumprod[p],
            None => self.final_alpha_cumprod,
        };
        let b_t = 1.0 - a_t;
        let (mut x0, eps) = match self.prediction {
            PredictionType::Epsilon => {
                let x0 = ((x - (model_output * b_t.sqrt())?)? * (1.0 / a_t.sqrt()))?;
                (x0, model_output.clone())
            }
            PredictionType::VPrediction => {
                let x0 = ((x * a_t.sqrt())? - (model_output * b_t.sqrt())?)?;
                let eps = ((model_output * a_t.sqrt())? + (x * b_t.sqrt())?)?;
                (x0, eps)
            }
            PredictionType::Sample => {
                let eps = ((x - (model_output * a_t.sqrt())?)? * (1.0 / b_t.sqrt()))?;
                (model_output.clone(), eps)
            }
        };
        if let Some(r) = self.clip {
            x0 = x0.clamp(-r, r)?;
        }
        let prev = ((&x0 * a_prev.sqrt())? + (eps * (1.0 - a_prev).sqrt())?)?;
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
    fn sd15_leading_timesteps() {
        let d = Ddim::new(&SchedulerConfig::stable_diffusion(), 10).unwrap();
        assert_eq!(
            d.timesteps,
            vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
        );
        let d = Ddim::new(&SchedulerConfig::stable_diffusion(), 50).unwrap();
        assert_eq!(d.timesteps[0], 981);
        assert_eq!(*d.timesteps.last().unwrap(), 1);
    }

    #[test]
    fn trailing_and_linspace_spacing() {
        let mut cfg = SchedulerConfig::stable_diffusion();
        cfg.timestep_spacing = Some(TimestepSpacing::Trailing);
        let d = Ddim::new(&cfg, 4).unwrap();
        assert_eq!(d.timesteps, vec![999, 749, 499, 249]);
        cfg.timestep_spacing = Some(TimestepSpacing::Linspace);
        let d = Ddim::new(&cfg, 4).unwrap();
        assert_eq!(d.timesteps, vec![999, 666, 333, 0]);
    }

    #[test]
    fn exact_noise_recovers_clean_sample() {
        // x_t = sqrt(ā) x0 + sqrt(1-ā) ε; with the true ε, the predicted x0 is exact and the
        // step lands on the prior marginal at the previous timestep.
        let cfg = SchedulerConfig::stable_diffusion();
        let mut d = Ddim::new(&cfg, 10).unwrap();
        let dev = candle_core::Device::Cpu;
        let x0 = Tensor::new(&[0.5f32, -0.25, 1.0], &dev).unwrap();
        let eps = Tensor::new(&[1.0f32, -1.0, 0.3], &dev).unwrap();
        let a = d.alphas_cumprod[901];
        let xt = ((&x0 * a.sqrt()).unwrap() + (&eps * (1.0 - a).sqrt()).unwrap()).unwrap();
        let out = d.step(&eps, 0, &xt).unwrap();
        let got: Vec<f32> = out.pred_original.to_vec1().unwrap();
        for (g, w) in got.iter().zip([0.5f32, -0.25, 1.0]) {
            assert!((g - w).abs() < 1e-4, "{got:?}");
        }
        let ap = d.alphas_cumprod[801];
        let want = ((&x0 * ap.sqrt()).unwrap() + (&eps * (1.0 - ap).sqrt()).unwrap()).unwrap();
        let diff: f32 = (out.prev_sample - want)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-4);
    }
}
