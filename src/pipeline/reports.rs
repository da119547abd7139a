//! The JSON written by `adiff generate --trace` and `adiff compare --trace` (and the app's
//! export): the settings that reproduce a run, its trace, and what the method saved.

use super::{Generation, LoadedModel, Prepared};
use crate::complexity::ComplexityBudget;
use crate::job::Job;
use crate::sampler::RunTrace;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The settings echoed into every JSON report, so a result can be reproduced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// `adiff` version.
    pub adiff_version: String,
    /// Model origin (folder, checkpoint file or hub repository).
    pub model: String,
    /// The VAE file used instead of the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<PathBuf>,
    /// The LoRAs merged, as `FILE:SCALE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<String>,
    /// What loading found: the checkpoint family detected, each LoRA's modules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_notes: Vec<String>,
    /// Device name.
    pub device: String,
    /// The prompt.
    pub prompt: String,
    /// The negative prompt.
    pub negative: String,
    /// Seed of the initial noise.
    pub seed: u64,
    /// File the initial latents came from, if any.
    pub init_latents: Option<PathBuf>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Model load time, milliseconds.
    pub load_ms: f64,
    /// `--budget auto`: score, factors, rationale, the scorer that decided (and any
    /// fallback) and the adaptive side's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity: Option<ComplexityBudget>,
}

impl RunInfo {
    /// The settings of `job` as run on `model`, with the complexity budget it was given.
    pub fn new(
        model: &LoadedModel,
        job: &Job,
        prepared: &Prepared,
        budget: Option<&ComplexityBudget>,
    ) -> Self {
        Self {
            adiff_version: env!("CARGO_PKG_VERSION").into(),
            model: model.origin.clone(),
            vae: job.vae.clone(),
            loras: job.loras.iter().map(|l| l.to_string()).collect(),
            model_notes: model.sd.notes().to_vec(),
            device: format!("{:?}", model.sd.device().location()),
            prompt: job.prompt.clone(),
            negative: job.negative.clone(),
            seed: job.seed,
            init_latents: job.init_latents.clone(),
            width: prepared.size.0,
            height: prepared.size.1,
            load_ms: model.load_ms,
            complexity: budget.cloned(),
        }
    }
}

/// The JSON written by `adiff generate --trace`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateReport {
    /// Settings.
    #[serde(flatten)]
    pub info: RunInfo,
    /// The run's trace (`unet_calls`, `elapsed_ms`, `steps`, ...).
    #[serde(flatten)]
    pub trace: RunTrace,
    /// VAE decode time, milliseconds.
    pub decode_ms: f64,
}

/// One side of a comparison in the JSON written by `adiff compare --trace`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SideReport {
    /// The run's trace.
    #[serde(flatten)]
    pub trace: RunTrace,
    /// VAE decode time, milliseconds.
    pub decode_ms: f64,
}

/// What the method saved and cost, relative to the baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareSummary {
    /// Noise-predictor calls avoided.
    pub unet_calls_saved: usize,
    /// Baseline calls / adaptive calls.
    pub nfe_speedup: f64,
    /// Baseline multiply-accumulates / the method's (partial calls count for what they
    /// compute), when both were counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_speedup: Option<f64>,
    /// Baseline loop time / adaptive loop time (wall clock, same process).
    pub wall_speedup: f64,
    /// PSNR of the adaptive image against the baseline image, dB (0–255 scale); for a
    /// clip, over all its frames.
    pub psnr_db: f64,
    /// A clip's quality frame by frame, as the paper's video evaluation reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoQuality>,
}

/// Two clips compared frame by frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VideoQuality {
    /// Frames per clip.
    pub frames: usize,
    /// PSNR of each frame, dB (JSON `null`: the frames are identical).
    pub psnr_per_frame_db: Vec<f64>,
    /// Mean of the finite per-frame PSNRs (`inf` when every frame is identical).
    pub psnr_mean_db: f64,
    /// The worst (lowest) frame PSNR and its frame index.
    pub psnr_worst_db: f64,
    /// Index of the worst frame.
    pub worst_frame: usize,
    /// Mean SSIM over the frames.
    pub ssim_mean: f64,
}

impl VideoQuality {
    /// PSNR over the whole clip: from the mean of the frames' squared errors (the frames
    /// are the same size).
    pub fn psnr_clip_db(&self) -> f64 {
        let peak = 255.0f64 * 255.0;
        let mse = self
            .psnr_per_frame_db
            .iter()
            .map(|p| peak / 10f64.powf(p / 10.0))
            .sum::<f64>()
            / self.frames as f64;
        10.0 * (peak / mse).log10()
    }

    /// Clip `fast` against clip `base`, frame by frame.
    pub fn of(base: &[image::RgbImage], fast: &[image::RgbImage]) -> Result<Self> {
        anyhow::ensure!(
            base.len() == fast.len() && !base.is_empty(),
            "cannot compare clips of {} and {} frames",
            base.len(),
            fast.len()
        );
        let psnr: Vec<f64> = base
            .iter()
            .zip(fast)
            .map(|(b, f)| crate::metrics::psnr(f, b))
            .collect::<Result<_>>()?;
        let ssim: Vec<f64> = base
            .iter()
            .zip(fast)
            .map(|(b, f)| crate::metrics::ssim(f, b))
            .collect::<Result<_>>()?;
        let finite: Vec<f64> = psnr.iter().copied().filter(|p| p.is_finite()).collect();
        let (worst_frame, psnr_worst_db) =
            psnr.iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f64::INFINITY),
                    |(i, w), (j, p)| if p < w { (j, p) } else { (i, w) },
                );
        Ok(Self {
            frames: base.len(),
            psnr_mean_db: if finite.is_empty() {
                f64::INFINITY
            } else {
                finite.iter().sum::<f64>() / finite.len() as f64
            },
            psnr_worst_db,
            worst_frame,
            ssim_mean: ssim.iter().sum::<f64>() / ssim.len() as f64,
            psnr_per_frame_db: psnr,
        })
    }
}

/// The JSON written by `adiff compare --trace`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    /// Settings.
    #[serde(flatten)]
    pub info: RunInfo,
    /// The fixed-step baseline.
    pub baseline: SideReport,
    /// The adaptive pipeline.
    pub adaptive: SideReport,
    /// Savings and quality.
    pub summary: CompareSummary,
}

impl CompareSummary {
    /// The method's run `fast` against the baseline run `base`.
    pub fn of(base: &Generation, fast: &Generation) -> Result<Self> {
        if !base.frames.is_empty() {
            // A clip: PSNR over all its frames (not over the filmstrip, whose gaps would
            // count as agreeing pixels).
            let video = VideoQuality::of(&base.frames, &fast.frames)?;
            let mut s = Self::of_traces(&base.trace, &fast.trace, video.psnr_clip_db());
            s.video = Some(video);
            return Ok(s);
        }
        let psnr_db = crate::metrics::psnr(&fast.image, &base.image)?;
        Ok(Self::of_traces(&base.trace, &fast.trace, psnr_db))
    }

    /// From the two traces and the PSNR of the method's image against the baseline's.
    pub fn of_traces(base: &RunTrace, fast: &RunTrace, psnr_db: f64) -> Self {
        Self {
            unet_calls_saved: base.unet_calls.saturating_sub(fast.unet_calls),
            nfe_speedup: base.unet_calls as f64 / fast.unet_calls.max(1) as f64,
            macs_speedup: match (base.unet_macs, fast.unet_macs) {
                (Some(b), Some(f)) if f > 0 => Some(b as f64 / f as f64),
                _ => None,
            },
            wall_speedup: base.elapsed_ms / fast.elapsed_ms.max(1e-9),
            psnr_db,
            video: None,
        }
    }
}

impl SideReport {
    /// The report of one finished run.
    pub fn of(g: &Generation) -> Self {
        Self {
            trace: g.trace.clone(),
            decode_ms: g.decode_ms,
        }
    }
}
