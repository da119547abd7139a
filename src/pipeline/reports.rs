//! The JSON written by `adiff generate --trace` and `adiff compare --trace` (and the app's
//! export): the settings that reproduce a run, its trace, and what the method saved.

use super::{Generation, LoadedModel, Prepared};
use crate::complexity::ComplexityBudget;
use crate::field::Wording;
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
    /// The UNet's number format (`f32`, `f16`, `bf16 (CPU, AMX kernels)`).
    #[serde(default)]
    pub precision: String,
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
    /// The settings of `job` as run on `model`, with the complexity budget it was given;
    /// the model's notes in `wording`'s terms.
    pub fn new(
        model: &LoadedModel,
        job: &Job,
        prepared: &Prepared,
        budget: Option<&ComplexityBudget>,
        wording: &dyn Wording,
    ) -> Self {
        Self {
            adiff_version: env!("CARGO_PKG_VERSION").into(),
            model: model.origin.clone(),
            vae: job.vae.clone(),
            loras: job.loras.iter().map(|l| l.to_string()).collect(),
            model_notes: model.sd.notes().iter().map(|n| n.worded(wording)).collect(),
            device: format!("{:?}", model.sd.device().location()),
            precision: model.sd.precision(),
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

/// A run's role in a comparison: its two sides, and the full-step baseline both are
/// measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The left side (`compare --left`; the app's reference side).
    Left,
    /// The right side (`compare --right`; the app's method side).
    Right,
    /// The full-step baseline of the same prompt, seed and scheduler.
    Reference,
}

impl Role {
    /// `left`, `right` or `reference`, as the JSON writes it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Left => "left",
            Role::Right => "right",
            Role::Reference => "reference",
        }
    }
}

/// One run of a comparison in the JSON written by `adiff compare --trace`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SideReport {
    /// The method spec it ran (as `--method` takes it); empty in reports written before
    /// sides carried their spec.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spec: String,
    /// The reference only: the side that is the full-step baseline, whose one run this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_run_as: Option<Role>,
    /// The run's trace.
    #[serde(flatten)]
    pub trace: RunTrace,
    /// VAE decode time, milliseconds.
    pub decode_ms: f64,
}

/// One run measured against another (the measured run against its standard): what it
/// saved and cost, and how close its image came.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareSummary {
    /// Noise-predictor calls avoided (0 when the run made more).
    pub unet_calls_saved: usize,
    /// The standard's calls / the run's calls (below 1: the run made more).
    pub nfe_speedup: f64,
    /// The standard's multiply-accumulates / the run's (partial calls count for what they
    /// compute), when both were counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_speedup: Option<f64>,
    /// The standard's loop time / the run's (wall clock, same process).
    pub wall_speedup: f64,
    /// PSNR of the run's image against the standard's, dB (0–255 scale); for a clip, over
    /// all its frames. JSON `null`: the images are identical.
    #[serde(deserialize_with = "psnr_or_identical")]
    pub psnr_db: f64,
    /// SSIM of the run's image against the standard's (a clip: the mean over its frames);
    /// absent in reports written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssim: Option<f64>,
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

/// A PSNR that JSON wrote as `null` (no NaN or ∞ in JSON) is that of identical images.
fn psnr_or_identical<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// The JSON written by `adiff compare --trace`: the sides by role, each with its method
/// spec. Reports written before the reference was run read too: `baseline` and
/// `adaptive` are the left and right sides, and the reference is absent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    /// Settings.
    #[serde(flatten)]
    pub info: RunInfo,
    /// The left side.
    #[serde(alias = "baseline")]
    pub left: SideReport,
    /// The right side.
    #[serde(alias = "adaptive")]
    pub right: SideReport,
    /// The full-step baseline of the same prompt, seed and scheduler (when a side is it,
    /// its run again, with `same_run_as` naming the side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<SideReport>,
    /// The right side against the left.
    pub summary: CompareSummary,
    /// The left side against the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_vs_reference: Option<CompareSummary>,
    /// The right side against the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right_vs_reference: Option<CompareSummary>,
}

impl CompareReport {
    /// The report of a finished comparison run with the settings `info`.
    pub fn of(info: RunInfo, c: &super::Comparison) -> Self {
        let mut reference = SideReport::of(c.reference());
        reference.same_run_as = c.reference_side();
        Self {
            info,
            left: SideReport::of(&c.left),
            right: SideReport::of(&c.right),
            reference: Some(reference),
            summary: c.summary.clone(),
            left_vs_reference: Some(c.left_vs_reference.clone()),
            right_vs_reference: Some(c.right_vs_reference.clone()),
        }
    }
}

impl CompareSummary {
    /// The run `fast` against the run `base`, its standard.
    pub fn of(base: &Generation, fast: &Generation) -> Result<Self> {
        if !base.frames.is_empty() {
            // A clip: PSNR over all its frames (not over the filmstrip, whose gaps would
            // count as agreeing pixels).
            let video = VideoQuality::of(&base.frames, &fast.frames)?;
            let mut s = Self::of_traces(&base.trace, &fast.trace, video.psnr_clip_db());
            s.ssim = Some(video.ssim_mean);
            s.video = Some(video);
            return Ok(s);
        }
        let psnr_db = crate::metrics::psnr(&fast.image, &base.image)?;
        let mut s = Self::of_traces(&base.trace, &fast.trace, psnr_db);
        s.ssim = Some(crate::metrics::ssim(&fast.image, &base.image)?);
        Ok(s)
    }

    /// From the two traces and the PSNR of `fast`'s image against `base`'s (no SSIM).
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
            ssim: None,
            video: None,
        }
    }
}

impl SideReport {
    /// The report of one finished run.
    pub fn of(g: &Generation) -> Self {
        Self {
            spec: crate::job::method_spec::format(&g.trace.method),
            same_run_as: None,
            trace: g.trace.clone(),
            decode_ms: g.decode_ms,
        }
    }
}
