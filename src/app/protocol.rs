//! What the UI and the worker say to each other: [`Command`]s in, [`Event`]s out, each
//! tagged with the [`JobId`] it belongs to. Plain data (RGB images, [`StepRecord`]s,
//! strings): the UI never touches candle.

use crate::complexity::ComplexityBudget;
use crate::job::Job;
use crate::pipeline::VideoQuality;
use crate::sampler::{RunTrace, StepRecord};
use image::RgbImage;
use std::sync::Arc;

/// A clip's frames, in order (shared: the UI, the exports and the cache hold the same).
pub type Frames = Arc<Vec<RgbImage>>;

/// Identifies one Generate request; every event carries the id of the job it belongs to.
pub type JobId = u64;

/// Which side of the comparison: the full-step baseline (left) or the job's method (right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Every step calls the noise predictor.
    Baseline,
    /// The job's acceleration method.
    Adaptive,
}

impl Side {
    /// `"baseline"` or `"adaptive"`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Baseline => "baseline",
            Side::Adaptive => "adaptive",
        }
    }
}

/// What the worker tells the UI about the loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Where it came from.
    pub origin: String,
    /// Device, e.g. `Cpu` or `Cuda`.
    pub device: String,
    /// The UNet's number format, e.g. `f32` or `bf16 (CPU, AMX kernels)`.
    pub precision: String,
    /// Load time, milliseconds.
    pub load_ms: f64,
    /// The model's native image size (width, height).
    pub native_size: (usize, usize),
    /// SDXL (two text encoders) or not.
    pub sdxl: bool,
    /// What loading found: the checkpoint detected, each LoRA merged.
    pub notes: Vec<String>,
}

/// One finished side.
#[derive(Debug, Clone)]
pub struct SideResult {
    /// Which side.
    pub side: Side,
    /// The decoded image (a clip: its frames in a grid).
    pub image: RgbImage,
    /// A clip's frames, in order (empty for an image).
    pub frames: Frames,
    /// The run's trace.
    pub trace: RunTrace,
    /// VAE decode time, milliseconds.
    pub decode_ms: f64,
    /// Model origin.
    pub model: String,
    /// When the run ended (a result served from a cache keeps its own time).
    pub computed_at: std::time::Instant,
}

/// Adaptive vs baseline, computed on the worker once both sides are done.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// PSNR of the adaptive image against the baseline, dB.
    pub psnr_db: f64,
    /// SSIM of the adaptive image against the baseline (when the metric is available).
    pub ssim: Option<f64>,
    /// |adaptive − baseline| per channel.
    pub diff: Arc<RgbImage>,
    /// A clip's quality frame by frame (`psnr_db` is then the clip's, `ssim` the mean).
    pub video: Option<VideoQuality>,
    /// A clip's |adaptive − baseline| frame by frame.
    pub frame_diffs: Vec<Arc<RgbImage>>,
}

/// Both sides against the full-step baseline of the same prompt, seed and scheduler, when
/// neither side is it (the left side's numbers against the right are [`Comparison`]).
#[derive(Debug, Clone)]
pub struct ReferenceComparison {
    /// The full-step baseline's run.
    pub reference: Arc<SideResult>,
    /// The left side against it.
    pub left: Comparison,
    /// The right side against it.
    pub right: Comparison,
}

/// Commands to the worker.
#[derive(Debug, Clone)]
pub enum Command {
    /// Run a comparison; supersedes whatever runs.
    Generate(JobId, Box<Job>),
    /// Stop this job at the next step boundary.
    Cancel(JobId),
    /// Stop the worker.
    Shutdown,
}

/// Events from the worker, each tagged with its job.
#[derive(Debug, Clone)]
pub enum Event {
    /// The job's model is being loaded (or downloaded).
    Loading {
        /// The job.
        job: JobId,
        /// The model being loaded.
        model: String,
    },
    /// Download progress of a hub model (or a motion module), as its downloads report it.
    Download {
        /// The job.
        job: JobId,
        /// Files of the model already in the cache.
        files_done: usize,
        /// Files the model needs.
        files_total: usize,
        /// Bytes of the repository in the cache: what it held when the download started,
        /// and what the download added.
        bytes: u64,
    },
    /// The model is loaded.
    ModelReady {
        /// The job.
        job: JobId,
        /// About the model.
        info: ModelInfo,
    },
    /// Something the user should know about the job (not an error).
    Warning {
        /// The job.
        job: JobId,
        /// The message.
        message: String,
    },
    /// The prompt's complexity and the adaptive budget chosen from it.
    Budget {
        /// The job.
        job: JobId,
        /// Score, scorer (and any fallback) and budget.
        budget: Box<ComplexityBudget>,
    },
    /// A side starts (from scratch, not from the cache).
    Started {
        /// The job.
        job: JobId,
        /// Which side.
        side: Side,
        /// The step budget.
        budget: usize,
    },
    /// A side finished one step.
    Step {
        /// The job.
        job: JobId,
        /// Which side.
        side: Side,
        /// The step's numbers.
        record: StepRecord,
        /// A cheap preview of the predicted clean image, now and then.
        preview: Option<Arc<RgbImage>>,
        /// A clip's cheap preview, frame by frame, now and then.
        preview_frames: Option<Frames>,
    },
    /// A side is done.
    Finished {
        /// The job.
        job: JobId,
        /// The result.
        result: Arc<SideResult>,
        /// Served from the baseline cache.
        from_cache: bool,
    },
    /// Both sides are done; the quality numbers.
    Compared {
        /// The job.
        job: JobId,
        /// The numbers.
        comparison: Comparison,
    },
    /// The full-step reference finished a step (neither side is the full-step baseline).
    ReferenceStep {
        /// The job.
        job: JobId,
        /// Steps done.
        done: usize,
        /// Steps of the run.
        steps: usize,
    },
    /// Both sides measured against the full-step reference.
    Referenced {
        /// The job.
        job: JobId,
        /// The reference and the numbers.
        reference: Box<ReferenceComparison>,
    },
    /// The job is complete.
    Done {
        /// The job.
        job: JobId,
    },
    /// The job stopped early: cancelled, or superseded by a newer job.
    Cancelled {
        /// The job.
        job: JobId,
        /// Superseded by a newer Generate (rather than an explicit cancel).
        superseded: bool,
    },
    /// The job failed.
    Failed {
        /// The job.
        job: JobId,
        /// What went wrong, on one line.
        message: String,
    },
}

impl Event {
    /// The job an event belongs to.
    pub fn job(&self) -> JobId {
        match self {
            Event::Loading { job, .. }
            | Event::Download { job, .. }
            | Event::ModelReady { job, .. }
            | Event::Budget { job, .. }
            | Event::Warning { job, .. }
            | Event::Started { job, .. }
            | Event::Step { job, .. }
            | Event::Finished { job, .. }
            | Event::Compared { job, .. }
            | Event::ReferenceStep { job, .. }
            | Event::Referenced { job, .. }
            | Event::Done { job }
            | Event::Cancelled { job, .. }
            | Event::Failed { job, .. } => *job,
        }
    }
}
