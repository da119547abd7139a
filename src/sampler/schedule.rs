//! The training noise schedule and the scheduler configuration (`scheduler_config.json`).
//!
//! Every scheduler is built from the same JSON a diffusers pipeline folder carries; keys a
//! scheduler does not know are ignored and missing keys take that scheduler's own default,
//! exactly as diffusers' `SchedulerCls.from_config(pipe.scheduler.config)` does.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::Path;

/// What the noise predictor was trained to output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// ε, the added noise (SD 1.x, SD 2.x base, SDXL).
    #[default]
    Epsilon,
    /// v = α·ε − σ·x0 (SD 2.x 768).
    VPrediction,
    /// The clean sample itself.
    Sample,
}

/// How inference timesteps are spread over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// Evenly spaced from 0 to T−1, rounded.
    Linspace,
    /// Multiples of `T / N` from 0, plus `steps_offset`.
    Leading,
    /// Multiples of `T / N` counted back from T, minus one.
    Trailing,
}

fn default_train_timesteps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> String {
    "linear".into()
}
fn default_clip_range() -> f64 {
    1.0
}

/// The union of the scheduler settings that DDIM, Euler and DPM-Solver++ read.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    /// Number of training timesteps T.
    #[serde(default = "default_train_timesteps")]
    pub num_train_timesteps: usize,
    /// First β of the schedule.
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    /// Last β of the schedule.
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    /// Explicit β values, overriding the schedule.
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// What the model predicts.
    #[serde(default)]
    pub prediction_type: PredictionType,
    /// Timestep spacing; `None` means the scheduler's own default.
    #[serde(default)]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Offset added to `leading` timesteps.
    #[serde(default)]
    pub steps_offset: usize,
    /// DDIM: use ᾱ = 1 after the last step (`None`: DDIM's default, true).
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    /// DDIM: clip the predicted x0 (`None`: DDIM's default, true).
    #[serde(default)]
    pub clip_sample: Option<bool>,
    /// DDIM: the clipping range.
    #[serde(default = "default_clip_range")]
    pub clip_sample_range: f64,
    /// Zero-terminal-SNR rescaling (not supported).
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// Karras σ spacing (not supported).
    #[serde(default)]
    pub use_karras_sigmas: Option<bool>,
    /// Thresholding of x0 (not supported).
    #[serde(default)]
    pub thresholding: Option<bool>,
}

impl SchedulerConfig {
    /// The schedule Stable Diffusion 1.x and 2.x were trained with (scaled linear,
    /// β from 0.00085 to 0.012, `steps_offset` 1), as their `scheduler_config.json` says.
    pub fn stable_diffusion() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: None,
            steps_offset: 1,
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            clip_sample_range: 1.0,
            rescale_betas_zero_snr: false,
            use_karras_sigmas: None,
            thresholding: None,
        }
    }

    /// Parse a diffusers `scheduler_config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a diffusers `scheduler_config.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scheduler config {}", path.display()))?;
        Self::from_json(&text)
            .with_context(|| format!("invalid scheduler config {}", path.display()))
    }

    /// Reject settings this implementation does not reproduce, with the field named.
    pub fn validate(&self) -> Result<()> {
        if self.num_train_timesteps < 2 {
            bail!("num_train_timesteps must be at least 2");
        }
        if self.rescale_betas_zero_snr {
            bail!("rescale_betas_zero_snr = true is not supported");
        }
        if self.use_karras_sigmas == Some(true) {
            bail!("use_karras_sigmas = true is not supported");
        }
        if self.thresholding == Some(true) {
            bail!("thresholding = true is not supported");
        }
        if let Some(b) = &self.trained_betas
            && b.len() != self.num_train_timesteps
        {
            bail!(
                "trained_betas has {} values but num_train_timesteps is {}",
                b.len(),
                self.num_train_timesteps
            );
        }
        match self.beta_schedule.as_str() {
            "linear" | "scaled_linear" | "squaredcos_cap_v2" => Ok(()),
            other => bail!(
                "beta_schedule '{other}' is not supported (use linear, scaled_linear or squaredcos_cap_v2)"
            ),
        }
    }

    /// β_t for every training timestep.
    pub fn betas(&self) -> Vec<f64> {
        let n = self.num_train_timesteps;
        if let Some(b) = &self.trained_betas {
            return b.clone();
        }
        match self.beta_schedule.as_str() {
            "scaled_linear" => linspace(self.beta_start.sqrt(), self.beta_end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            "squaredcos_cap_v2" => {
                let alpha_bar = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let t1 = i as f64 / n as f64;
                        let t2 = (i + 1) as f64 / n as f64;
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                    })
                    .collect()
            }
            _ => linspace(self.beta_start, self.beta_end, n),
        }
    }

    /// ᾱ_t = ∏ (1 − β) for every training timestep.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let mut acc = 1.0;
        self.betas()
            .into_iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect()
    }
}

/// `n` evenly spaced values from `start` to `end` inclusive (numpy's `linspace`).
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            (0..n)
                .map(|i| {
                    if i == n - 1 {
                        end
                    } else {
                        start + step * i as f64
                    }
                })
                .collect()
        }
    }
}

/// σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) for every training timestep.
pub fn train_sigmas(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// Piecewise-linear interpolation of `table` (indexed by integer timestep) at `t` (`np.interp`).
pub fn interp(table: &[f64], t: f64) -> f64 {
    if t <= 0.0 {
        return table[0];
    }
    let last = table.len() - 1;
    if t >= last as f64 {
        return table[last];
    }
    let lo = t.floor() as usize;
    let frac = t - lo as f64;
    table[lo] + (table[lo + 1] - table[lo]) * frac
}

/// Round half to even, as numpy's `round`.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// Check an inference step count against the training schedule.
pub fn check_steps(steps: usize, cfg: &SchedulerConfig) -> Result<()> {
    if steps < 1 {
        bail!("a run needs at least 1 step");
    }
    if steps > cfg.num_train_timesteps {
        bail!(
            "{steps} steps exceed the model's {} training timesteps",
            cfg.num_train_timesteps
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_schedule_matches_known_values() {
        let ac = SchedulerConfig::stable_diffusion().alphas_cumprod();
        assert_eq!(ac.len(), 1000);
        // ᾱ_0 = 1 − 0.00085 and ᾱ_999 ≈ 0.0047 for SD's scaled-linear schedule.
        assert!((ac[0] - 0.99915).abs() < 1e-9);
        assert!((ac[999] - 0.004_660_5).abs() < 1e-5, "{}", ac[999]);
    }

    #[test]
    fn parses_sd15_scheduler_json_and_defaults() {
        let json = r#"{"_class_name":"PNDMScheduler","beta_end":0.012,"beta_schedule":"scaled_linear",
            "beta_start":0.00085,"num_train_timesteps":1000,"set_alpha_to_one":false,
            "skip_prk_steps":true,"steps_offset":1,"trained_betas":null,"clip_sample":false}"#;
        let cfg = SchedulerConfig::from_json(json).unwrap();
        assert_eq!(cfg.steps_offset, 1);
        assert_eq!(cfg.timestep_spacing, None);
        assert_eq!(cfg.prediction_type, PredictionType::Epsilon);
        assert_eq!(cfg.set_alpha_to_one, Some(false));
    }

    #[test]
    fn rejects_unsupported_settings_by_name() {
        let err = SchedulerConfig::from_json(r#"{"beta_schedule":"sigmoid"}"#).unwrap_err();
        assert!(err.to_string().contains("sigmoid"), "{err}");
        let err = SchedulerConfig::from_json(r#"{"use_karras_sigmas":true}"#).unwrap_err();
        assert!(err.to_string().contains("use_karras_sigmas"), "{err}");
    }

    #[test]
    fn numpy_style_helpers() {
        assert_eq!(linspace(0.0, 999.0, 4), vec![0.0, 333.0, 666.0, 999.0]);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(-2.5), -2.0);
        assert_eq!(round_half_even(2.4), 2.0);
        let table = [0.0, 10.0, 20.0];
        assert_eq!(interp(&table, 0.5), 5.0);
        assert_eq!(interp(&table, 5.0), 20.0);
    }
}
