//! UI state: the persisted settings and the live session (what the worker reported for
//! the current job). Plain data, no egui and no candle, so it is easy to test.

use super::method_params::MethodParams;
use super::protocol::{Comparison, Event, Frames, JobId, ModelInfo, Side, SideResult};
use crate::complexity::{ComplexityBudget, ScorerKind, Scoring};
use crate::job::{self, Job, defaults};
use crate::model::lora::LoraSpec;
use crate::model::{HubModel, ModelSource};
use crate::sampler::{Method, MethodKind, SchedulerKind, StepRecord};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Which model the user picked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ModelChoice {
    /// A pipeline folder that ships with the app (`assets/models/NAME`, or the tiny test
    /// pipeline).
    Builtin(PathBuf),
    /// A known hub model, by its `--model` name.
    Hub(String),
    /// A local diffusers-format folder.
    Local(PathBuf),
    /// A local single-file checkpoint (`.safetensors`, original layout).
    LocalFile(PathBuf),
}

/// A LoRA in the app's list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraEntry {
    /// The file.
    pub path: PathBuf,
    /// Its scale.
    pub scale: f64,
    /// Merged into the next load (unticked ones stay listed).
    pub enabled: bool,
}

impl ModelChoice {
    /// The model source, or why there is none.
    pub fn source(&self) -> anyhow::Result<ModelSource> {
        Ok(match self {
            ModelChoice::Builtin(p) | ModelChoice::Local(p) => {
                if p.as_os_str().is_empty() {
                    anyhow::bail!("no local model folder chosen: pick one with Browse…");
                }
                ModelSource::Local(p.clone())
            }
            ModelChoice::LocalFile(p) => {
                if p.as_os_str().is_empty() {
                    anyhow::bail!("no checkpoint file chosen: pick one with Browse…");
                }
                ModelSource::Local(p.clone())
            }
            ModelChoice::Hub(name) => ModelSource::Hub(name.parse::<HubModel>()?),
        })
    }

    /// A short label for menus.
    pub fn label(&self) -> String {
        match self {
            ModelChoice::Builtin(p) => builtin_label(p),
            ModelChoice::Hub(name) => match name.parse::<HubModel>() {
                Ok(m) => hub_label(m).to_string(),
                Err(_) => name.clone(),
            },
            ModelChoice::Local(p) if p.as_os_str().is_empty() => "Local folder…".into(),
            ModelChoice::Local(p) => format!("Local: {}", short_path(p)),
            ModelChoice::LocalFile(p) if p.as_os_str().is_empty() => "Local file…".into(),
            ModelChoice::LocalFile(p) => format!("File: {}", short_path(p)),
        }
    }
}

/// Menu label of a hub model.
pub fn hub_label(m: HubModel) -> &'static str {
    match m {
        HubModel::Sd15 => "SD 1.5 (hub download, ~5 GB)",
        HubModel::Sd21 => "SD 2.1 base (hub download, ~5 GB)",
        HubModel::Sdxl => "SDXL base 1.0 (hub download, ~10 GB)",
        HubModel::SdTurbo => "SD-Turbo (hub download, ~5 GB)",
        HubModel::ModelScopeT2v => "ModelScope T2V 1.7B (video; hub download, several GB)",
    }
}

fn builtin_label(p: &Path) -> String {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string());
    if name == "tiny-sd" {
        "Built-in: tiny-sd (random weights, test pipeline: noise images)".into()
    } else {
        format!("Built-in: {name}")
    }
}

fn short_path(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars().count() > 40 {
        let tail: String = s
            .chars()
            .rev()
            .take(38)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    } else {
        s
    }
}

/// Pipeline folders shipped with the app: subfolders of `assets/models/` (next to the
/// executable, in the working directory, in `$ADIFF_MODELS_DIR`, or in the source tree),
/// and the tiny random-weight test pipeline of the source tree.
pub fn builtin_models() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = vec![];
    if let Some(d) = std::env::var_os("ADIFF_MODELS_DIR").filter(|d| !d.is_empty()) {
        roots.push(PathBuf::from(d));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.push(dir.join("assets/models"));
    }
    roots.push(PathBuf::from("assets/models"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    roots.push(src.join("assets/models"));
    let mut found: Vec<PathBuf> = vec![];
    for root in roots {
        let Ok(rd) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.join("unet/config.json").is_file())
            .collect();
        dirs.sort();
        for d in dirs {
            let d = d.canonicalize().unwrap_or(d);
            if !found.contains(&d) {
                found.push(d);
            }
        }
    }
    let tiny = src.join("tests/fixtures/tiny-sd");
    if tiny.join("unet/config.json").is_file() {
        let tiny = tiny.canonicalize().unwrap_or(tiny);
        if !found.contains(&tiny) {
            found.push(tiny);
        }
    }
    found
}

/// How the two results are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewMode {
    /// Baseline left, adaptive right.
    SideBySide,
    /// |adaptive − baseline|, amplified.
    Difference,
    /// Alternate between the two.
    Blink,
    /// One image, a slider splits baseline (left) and adaptive (right).
    Wipe,
}

impl ViewMode {
    /// All modes, in menu order.
    pub const ALL: [ViewMode; 4] = [
        ViewMode::SideBySide,
        ViewMode::Difference,
        ViewMode::Blink,
        ViewMode::Wipe,
    ];

    /// Menu label.
    pub fn label(self) -> &'static str {
        match self {
            ViewMode::SideBySide => "Side by side",
            ViewMode::Difference => "Difference",
            ViewMode::Blink => "Blink",
            ViewMode::Wipe => "Wipe",
        }
    }
}

/// The settings remembered between launches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt.
    pub negative: String,
    /// The model.
    pub model: ModelChoice,
    /// The last local model folder chosen (kept while another model is picked).
    pub local_folder: PathBuf,
    /// The last single-file checkpoint chosen (kept while another model is picked).
    pub local_file: PathBuf,
    /// A VAE file used instead of the model's own.
    pub vae: Option<PathBuf>,
    /// LoRAs merged into the model at load.
    pub loras: Vec<LoraEntry>,
    /// An AnimateDiff motion module added to the model at load: it then makes video.
    pub motion: Option<PathBuf>,
    /// Frames of a clip (a model that makes video).
    pub frames: usize,
    /// Make a clip with a model that makes images or clips (the built-in shapes model).
    pub clip: bool,
    /// Playback (and exported GIF) frame rate, frames per second.
    pub fps: f64,
    /// Playback starts over at the end.
    pub loop_playback: bool,
    /// The scheduler.
    pub scheduler: SchedulerKind,
    /// Step budget.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Seed.
    pub seed: u64,
    /// Use a custom size instead of the model's native one.
    pub custom_size: bool,
    /// Custom width.
    pub width: usize,
    /// Custom height.
    pub height: usize,
    /// The right side's method.
    pub method: MethodKind,
    /// The left (reference) side's method: the full-step baseline unless another is
    /// chosen, with its own settings (`left`).
    pub left_method: MethodKind,
    /// The right side's settings of every method (keys and defaults from the registry).
    pub right: MethodParams,
    /// The left side's own method settings.
    pub left: MethodParams,
    /// Early stop on the adaptive side.
    pub early_stop: bool,
    /// τ of the early stop.
    pub early_stop_tau: f64,
    /// Take the adaptive step budget from the prompt-complexity scorer.
    pub complexity_budget: bool,
    /// Which complexity scorer.
    pub scorer: ScorerKind,
    /// Ollama server of the Ollama scorer.
    pub ollama_url: String,
    /// Ollama model of the Ollama scorer.
    pub ollama_model: String,
    /// Also scale δ and C_max with the complexity level.
    pub scale_policy: bool,
    /// Re-run the adaptive side as soon as δ or C_max change (when a baseline exists).
    pub auto_rerun: bool,
    /// Stay on the CPU.
    pub force_cpu: bool,
    /// How results are shown.
    pub view: ViewMode,
    /// Amplification of the difference view.
    pub diff_gain: f32,
    /// Where exports go.
    pub export_dir: PathBuf,
    /// UI zoom (1.0 = egui's default; larger reads better on a projector).
    pub ui_scale: f32,
}

impl Default for Settings {
    fn default() -> Self {
        let model = builtin_models()
            .into_iter()
            .next()
            .map(ModelChoice::Builtin)
            .unwrap_or_else(|| ModelChoice::Hub("sd15".into()));
        // The built-in shapes model knows only its own world's words.
        let shapes = matches!(&model, ModelChoice::Builtin(p)
            if p.file_name().is_some_and(|n| n == crate::model::BUILTIN_SHAPES));
        let prompt = if shapes {
            "a large red circle at the top left and a small blue square in the center on a gray background"
        } else {
            "a watercolor painting of a lighthouse on a cliff at sunset"
        };
        let scoring = Scoring::default();
        Self {
            prompt: prompt.into(),
            negative: String::new(),
            model,
            local_folder: PathBuf::new(),
            local_file: PathBuf::new(),
            vae: None,
            loras: vec![],
            motion: None,
            frames: 8,
            clip: false,
            fps: 8.0,
            loop_playback: true,
            scheduler: defaults::SCHEDULER,
            steps: defaults::STEPS,
            guidance: defaults::GUIDANCE,
            seed: defaults::SEED,
            custom_size: false,
            width: 512,
            height: 512,
            method: MethodKind::ADAPTIVE,
            left_method: MethodKind::BASELINE,
            right: MethodParams::default(),
            left: MethodParams::default(),
            early_stop: false,
            early_stop_tau: defaults::EARLY_STOP_TAU,
            complexity_budget: false,
            scorer: scoring.scorer,
            ollama_url: scoring.ollama_url,
            ollama_model: scoring.ollama_model,
            scale_policy: scoring.scale_policy,
            auto_rerun: true,
            force_cpu: false,
            view: ViewMode::SideBySide,
            diff_gain: 4.0,
            export_dir: default_export_dir(),
            ui_scale: 1.15,
        }
    }
}

fn default_export_dir() -> PathBuf {
    std::env::home_dir()
        .map(|h| h.join("Pictures").join("adiff"))
        .unwrap_or_else(|| PathBuf::from("adiff-exports"))
}

impl Settings {
    /// The right side's method with its settings.
    pub fn right_method(&self) -> Method {
        self.right.method(self.method)
    }

    /// The left side's method with its settings.
    pub fn left_method(&self) -> Method {
        self.left.method(self.left_method)
    }

    /// The built-in shapes model has its own small architecture: no LoRA or VAE made for
    /// Stable Diffusion fits it. Refused here, in words, before anything is loaded (and
    /// before the results on screen are cleared).
    fn check_weight_files(&self) -> anyhow::Result<()> {
        let ModelChoice::Builtin(p) = &self.model else {
            return Ok(());
        };
        if p.file_name()
            .is_none_or(|n| n != crate::model::BUILTIN_SHAPES)
        {
            return Ok(());
        }
        if let Some(l) = self.loras.iter().find(|l| l.enabled) {
            anyhow::bail!(
                "the LoRA {} does not fit the built-in model (its own small architecture; \
                 LoRAs fit SD 1.x / 2.x / SDXL checkpoints): untick it or choose another model",
                l.path.file_name().map_or_else(
                    || l.path.display().to_string(),
                    |n| n.to_string_lossy().into_owned()
                )
            );
        }
        if let Some(v) = &self.vae {
            anyhow::bail!(
                "the VAE {} does not fit the built-in model (it draws pixels, without a VAE): \
                 remove it or choose another model",
                v.file_name().map_or_else(
                    || v.display().to_string(),
                    |n| n.to_string_lossy().into_owned()
                )
            );
        }
        Ok(())
    }

    /// The job these settings describe (with `steps` as the budget), validated.
    pub fn job(&self, steps: usize) -> anyhow::Result<Job> {
        self.check_weight_files()?;
        let mut job = Job::new(self.model.source()?, self.prompt.clone());
        job.vae = self.vae.clone();
        job.motion = self.motion.clone();
        job.frames = self.clip_frames();
        job.loras = self
            .loras
            .iter()
            .filter(|l| l.enabled)
            .map(|l| LoraSpec {
                path: l.path.clone(),
                scale: l.scale,
            })
            .collect();
        job.force_cpu = self.force_cpu;
        job.negative = self.negative.clone();
        job.scheduler = self.scheduler;
        job.steps = steps;
        job.guidance = self.guidance;
        job.seed = self.seed;
        job.width = self.custom_size.then_some(self.width);
        job.height = self.custom_size.then_some(self.height);
        job.method = self.right_method();
        job.reference = self.left_method();
        job.early_stop = job::early_stop(self.early_stop, self.early_stop_tau);
        job.budget = self.complexity_budget.then(|| Scoring {
            scorer: self.scorer,
            ollama_url: self.ollama_url.clone(),
            ollama_model: self.ollama_model.clone(),
            scale_policy: self.scale_policy,
            ..Scoring::default()
        });
        // The app truncates with a visible note rather than refusing to run.
        job.truncate = true;
        job.validate()?;
        Ok(job)
    }
}

/// Whether a model makes clips, as far as the settings tell before it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Video {
    /// Images only.
    No,
    /// Images, or clips when asked (the built-in shapes model).
    Optional,
    /// Clips only: a motion module is set, or the model is a video UNet.
    Always,
}

impl Settings {
    /// Whether the chosen model (with its motion module) makes clips.
    pub fn video(&self) -> Video {
        if self.motion.is_some() {
            return Video::Always;
        }
        match &self.model {
            ModelChoice::Hub(name) => match name.parse::<HubModel>() {
                Ok(HubModel::ModelScopeT2v) => Video::Always,
                _ => Video::No,
            },
            ModelChoice::Builtin(p)
                if p.file_name()
                    .is_some_and(|n| n == crate::model::BUILTIN_SHAPES) =>
            {
                Video::Optional
            }
            ModelChoice::Builtin(p) | ModelChoice::Local(p) if is_video_folder(p) => Video::Always,
            // A folder that carries its own motion module (`motion/`) makes clips when asked.
            ModelChoice::Builtin(p) | ModelChoice::Local(p)
                if p.join("motion").join("config.json").is_file() =>
            {
                Video::Optional
            }
            _ => Video::No,
        }
    }

    /// The frame count the job asks for: the Frames control's when the model makes clips
    /// (or, for a model that may, when a clip of more than one frame is asked for: one frame
    /// is its image).
    pub fn clip_frames(&self) -> Option<usize> {
        match self.video() {
            Video::Always => Some(self.frames),
            Video::Optional if self.clip && self.frames > 1 => Some(self.frames),
            _ => None,
        }
    }
}

/// Whether a pipeline folder's UNet is a video UNet (`unet/config.json` names
/// `UNet3DConditionModel`). Read once per folder: the settings ask every frame.
fn is_video_folder(p: &Path) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashMap<PathBuf, bool>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(v) = seen.lock().ok().and_then(|m| m.get(p).copied()) {
        return v;
    }
    let video = std::fs::read_to_string(p.join("unet/config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["_class_name"].as_str() == Some("UNet3DConditionModel"));
    if let Ok(mut m) = seen.lock() {
        m.insert(p.to_path_buf(), video);
    }
    video
}

/// Where one side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideStatus {
    /// Nothing yet.
    Idle,
    /// Waiting for its turn (model load, the other side).
    Waiting,
    /// Running.
    Running,
    /// Done.
    Done,
    /// Stopped before the end.
    Cancelled,
    /// The job failed.
    Failed,
}

/// What the UI knows about one side of the current job.
#[derive(Debug, Clone)]
pub struct SideView {
    /// Status.
    pub status: SideStatus,
    /// Step budget.
    pub budget: usize,
    /// The steps so far.
    pub steps: Vec<StepRecord>,
    /// The latest preview (live) or the final image.
    pub image: Option<Arc<image::RgbImage>>,
    /// A clip's frames: the latest preview (live) or the final frames.
    pub frames: Option<Frames>,
    /// Bumped whenever `image` or `frames` change (the panel re-uploads the texture).
    pub image_version: u64,
    /// The final result.
    pub result: Option<Arc<SideResult>>,
    /// Served from the cache: computed for an earlier job.
    pub from_cache: bool,
    /// When it started (for the live clock).
    pub started: Option<Instant>,
    /// The job on screen when its result was computed.
    pub finished_during: Option<JobId>,
}

impl Default for SideView {
    fn default() -> Self {
        Self {
            status: SideStatus::Idle,
            budget: 0,
            steps: vec![],
            image: None,
            frames: None,
            image_version: 0,
            result: None,
            from_cache: false,
            started: None,
            finished_during: None,
        }
    }
}

impl SideView {
    fn reset(&mut self, status: SideStatus) {
        let version = self.image_version + 1;
        *self = SideView {
            status,
            image_version: version,
            ..SideView::default()
        };
    }

    /// Noise-predictor calls so far.
    pub fn calls(&self) -> usize {
        self.steps.iter().filter(|r| r.computed).count()
    }

    /// Loop time so far (or of the finished run), milliseconds.
    pub fn elapsed_ms(&self) -> f64 {
        match &self.result {
            Some(r) => r.trace.elapsed_ms,
            // (`+ 0.0`: an empty float sum is −0.)
            None => self.steps.iter().map(|r| r.step_ms).sum::<f64>() + 0.0,
        }
    }

    /// Progress in 0..=1.
    pub fn progress(&self) -> f32 {
        if self.status == SideStatus::Done {
            return 1.0;
        }
        if self.budget == 0 {
            0.0
        } else {
            self.steps.len() as f32 / self.budget as f32
        }
    }
}

/// The overall phase of the current job.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// No job yet.
    Idle,
    /// Loading (or downloading) the model.
    Loading {
        /// Which model.
        model: String,
    },
    /// Running a side.
    Running,
    /// Both sides done.
    Done,
    /// Cancelled by the user.
    Cancelled,
    /// Failed.
    Failed,
}

/// Download progress of a hub model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Download {
    /// Files already in the cache.
    pub files_done: usize,
    /// Files needed.
    pub files_total: usize,
    /// Bytes in the cache folder.
    pub bytes: u64,
    /// Bytes when loading began (to show what this download added).
    pub bytes_at_start: u64,
    /// When the first progress report arrived.
    pub since: Instant,
}

/// The live session: the current job and what its events said.
#[derive(Debug)]
pub struct Session {
    /// The job whose adaptive side (and whose overall state) is shown.
    pub job: Option<JobId>,
    /// The job whose baseline events are shown: the current job, or an older job that is
    /// still computing the very baseline the current job needs.
    pub baseline_job: Option<JobId>,
    /// The current job's settings.
    pub spec: Option<Job>,
    /// Phase.
    pub phase: Phase,
    /// Baseline side.
    pub baseline: SideView,
    /// Adaptive side.
    pub adaptive: SideView,
    /// PSNR / SSIM / difference, once both are done.
    pub comparison: Option<Comparison>,
    /// Bumped whenever `comparison` changes.
    pub comparison_version: u64,
    /// The loaded model.
    pub model: Option<ModelInfo>,
    /// Download progress while a hub model loads.
    pub download: Option<Download>,
    /// The latest error, shown until dismissed.
    pub error: Option<String>,
    /// Warnings about the current job (e.g. prompt words the model does not know).
    pub warnings: Vec<String>,
    /// The prompt's complexity and the adaptive budget, when the scorer decided it.
    pub budget: Option<ComplexityBudget>,
    /// Events of older jobs that were dropped (never mixed into the view).
    pub stale_events: usize,
    /// The finished comparison that was on screen when the current job started, until the
    /// job produces a side: a job that fails before that (a model that does not load, a
    /// LoRA that does not fit) puts it back instead of leaving both sides empty.
    shown_before: Option<Box<Shown>>,
}

/// A finished comparison as it was on screen.
#[derive(Debug)]
struct Shown {
    spec: Option<Job>,
    baseline_job: Option<JobId>,
    baseline: SideView,
    adaptive: SideView,
    comparison: Option<Comparison>,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            job: None,
            baseline_job: None,
            spec: None,
            phase: Phase::Idle,
            baseline: SideView::default(),
            adaptive: SideView::default(),
            comparison: None,
            comparison_version: 0,
            model: None,
            download: None,
            error: None,
            warnings: vec![],
            budget: None,
            stale_events: 0,
            shown_before: None,
        }
    }
}

impl Session {
    /// Whether a job is in flight.
    pub fn is_busy(&self) -> bool {
        matches!(self.phase, Phase::Loading { .. } | Phase::Running)
    }

    /// A new job was submitted. When the previous job is still computing the same
    /// baseline, its baseline keeps being shown (the worker lets it finish).
    pub fn start_job(&mut self, job: JobId, spec: Job) {
        let same_baseline = self
            .spec
            .as_ref()
            .is_some_and(|s| s.baseline_key() == spec.baseline_key());
        let baseline_running = self.is_busy()
            && matches!(
                self.baseline.status,
                SideStatus::Running | SideStatus::Waiting
            );
        let baseline_done = self.baseline.status == SideStatus::Done;
        if self.results().is_some() && self.comparison.is_some() {
            self.shown_before = Some(Box::new(Shown {
                spec: self.spec.clone(),
                baseline_job: self.baseline_job,
                baseline: self.baseline.clone(),
                adaptive: self.adaptive.clone(),
                comparison: self.comparison.clone(),
            }));
        }
        if same_baseline && baseline_running {
            // Keep following the older job's baseline.
        } else {
            self.baseline_job = Some(job);
            if !(same_baseline && baseline_done) {
                self.baseline.reset(SideStatus::Waiting);
            }
        }
        self.job = Some(job);
        self.spec = Some(spec);
        self.phase = Phase::Running;
        self.adaptive.reset(SideStatus::Waiting);
        self.comparison = None;
        self.comparison_version += 1;
        self.error = None;
        self.warnings.clear();
        self.budget = None;
    }

    /// How long the job has left, from the time of its computed steps so far: the running
    /// side's remaining steps plus a waiting adaptive side's budget.
    pub fn estimate(&self) -> Option<crate::sampler::Estimate> {
        let running = [&self.baseline, &self.adaptive]
            .into_iter()
            .find(|v| v.status == SideStatus::Running)?;
        let mut left = running.budget.saturating_sub(running.steps.len());
        if std::ptr::eq(running, &self.baseline) && self.adaptive.status == SideStatus::Waiting {
            left += self
                .adaptive
                .budget
                .max(self.spec.as_ref().map_or(0, |s| s.steps));
        }
        crate::sampler::Estimate::from_steps(&running.steps, left)
            .or_else(|| crate::sampler::Estimate::from_steps(&self.baseline.steps, left))
    }

    /// Apply one worker event; events of other jobs are dropped.
    pub fn apply(&mut self, ev: Event) {
        let job = ev.job();
        if !self.is_relevant(&ev) {
            self.stale_events += 1;
            return;
        }
        match ev {
            Event::Loading { model, .. } => {
                self.phase = Phase::Loading { model };
                self.download = None;
            }
            Event::Download {
                files_done,
                files_total,
                bytes,
                ..
            } => self.downloaded(files_done, files_total, bytes),
            Event::ModelReady { info, .. } => {
                self.model = Some(info);
                self.download = None;
                self.phase = Phase::Running;
            }
            Event::Started { side, budget, .. } => {
                self.shown_before = None;
                if side == Side::Baseline {
                    self.baseline_job = Some(job);
                }
                let v = self.side_mut(side);
                v.reset(SideStatus::Running);
                v.budget = budget;
                v.started = Some(Instant::now());
                self.phase = Phase::Running;
            }
            Event::Step {
                side,
                record,
                preview,
                preview_frames,
                ..
            } => {
                let v = self.side_mut(side);
                v.status = SideStatus::Running;
                v.steps.push(record);
                if let Some(p) = preview {
                    v.image = Some(p);
                    v.image_version += 1;
                }
                if let Some(f) = preview_frames {
                    v.frames = Some(f);
                    v.image_version += 1;
                }
            }
            Event::Finished {
                result, from_cache, ..
            } => self.finished(job, result, from_cache),
            Event::Warning { message, .. } => {
                if !self.warnings.contains(&message) {
                    self.warnings.push(message);
                }
            }
            Event::Budget { budget, .. } => {
                self.budget = Some(*budget);
            }
            Event::Compared { comparison, .. } => {
                self.comparison = Some(comparison);
                self.comparison_version += 1;
            }
            Event::Done { .. } => {
                self.phase = Phase::Done;
            }
            Event::Cancelled { superseded, .. } => {
                if !superseded {
                    self.phase = Phase::Cancelled;
                    self.end_unfinished(SideStatus::Cancelled);
                    self.restore_shown();
                }
            }
            Event::Failed { message, .. } => {
                self.phase = Phase::Failed;
                self.download = None;
                self.error = Some(message);
                self.end_unfinished(SideStatus::Failed);
                self.restore_shown();
            }
        }
    }

    /// Whether an event is about what is on screen: the current job, or (for the baseline
    /// side) the job whose baseline is shown. The current job starting or finishing its own
    /// baseline takes over the baseline view.
    fn is_relevant(&self, ev: &Event) -> bool {
        let job = ev.job();
        let current = self.job == Some(job);
        let baseline_source = self.baseline_job == Some(job);
        match ev {
            Event::Started { side, .. } => match side {
                Side::Baseline => baseline_source || current,
                Side::Adaptive => current,
            },
            Event::Step { side, .. } => match side {
                Side::Baseline => baseline_source,
                Side::Adaptive => current,
            },
            Event::Finished { result, .. } => match result.side {
                Side::Baseline => baseline_source || current,
                Side::Adaptive => current,
            },
            _ => current,
        }
    }

    /// Download progress (the first report sets where the count started).
    fn downloaded(&mut self, files_done: usize, files_total: usize, bytes: u64) {
        let d = self.download.get_or_insert(Download {
            files_done,
            files_total,
            bytes,
            bytes_at_start: bytes,
            since: Instant::now(),
        });
        d.files_done = files_done;
        d.files_total = files_total;
        d.bytes = bytes;
    }

    /// A side's result. A cache hit for the current job replaces the older job's baseline
    /// view only when that one is not already complete.
    fn finished(&mut self, job: JobId, result: Arc<SideResult>, from_cache: bool) {
        self.shown_before = None;
        let side = result.side;
        let current = self.job;
        if side == Side::Baseline
            && from_cache
            && self.baseline.status == SideStatus::Done
            && self
                .baseline
                .result
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &result))
        {
            self.baseline_job = Some(job);
            // Computed while this job was already on screen (it took over the older job's
            // run of the same side): not a result of an earlier run.
            self.baseline.from_cache = self.baseline.finished_during != Some(job);
            return;
        }
        let v = self.side_mut(side);
        v.status = SideStatus::Done;
        v.budget = result.trace.budget;
        v.steps = result.trace.steps.clone();
        v.image = Some(Arc::new(result.image.clone()));
        v.frames = (!result.frames.is_empty()).then(|| result.frames.clone());
        v.image_version += 1;
        v.from_cache = from_cache;
        if !from_cache {
            v.finished_during = current;
        }
        v.result = Some(result);
        if side == Side::Baseline {
            self.baseline_job = Some(job);
        }
    }

    /// Put back the comparison that was on screen before a job that failed without
    /// producing a side.
    fn restore_shown(&mut self) {
        let Some(shown) = self.shown_before.take() else {
            return;
        };
        let Shown {
            spec,
            baseline_job,
            mut baseline,
            mut adaptive,
            comparison,
        } = *shown;
        // New versions, so that the panel uploads the images again.
        baseline.image_version = self.baseline.image_version + 1;
        adaptive.image_version = self.adaptive.image_version + 1;
        self.spec = spec;
        self.baseline_job = baseline_job;
        self.baseline = baseline;
        self.adaptive = adaptive;
        self.comparison = comparison;
        self.comparison_version += 1;
    }

    /// Mark the sides still running or waiting as ended with `status`.
    fn end_unfinished(&mut self, status: SideStatus) {
        for v in [&mut self.baseline, &mut self.adaptive] {
            if matches!(v.status, SideStatus::Running | SideStatus::Waiting) {
                v.status = status;
            }
        }
    }

    /// One side's view.
    pub fn side(&self, side: Side) -> &SideView {
        match side {
            Side::Baseline => &self.baseline,
            Side::Adaptive => &self.adaptive,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut SideView {
        match side {
            Side::Baseline => &mut self.baseline,
            Side::Adaptive => &mut self.adaptive,
        }
    }

    /// Frames of the clip on screen (0: an image): both sides' when both have frames (the
    /// fewer, should they differ), else the one side's that has.
    pub fn clip_len(&self) -> usize {
        let len = |v: &SideView| v.frames.as_ref().map(|f| f.len());
        match (len(&self.baseline), len(&self.adaptive)) {
            (Some(a), Some(b)) => a.min(b),
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => 0,
        }
    }

    /// Whether the job on screen makes a clip.
    pub fn is_clip(&self) -> bool {
        self.clip_len() > 0
            || self
                .spec
                .as_ref()
                .is_some_and(|s| s.frames.is_some() || s.motion.is_some())
    }

    /// Both results, when both sides are done.
    pub fn results(&self) -> Option<(Arc<SideResult>, Arc<SideResult>)> {
        Some((self.baseline.result.clone()?, self.adaptive.result.clone()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::{Decision, RunTrace};

    fn spec(delta: f64) -> Job {
        let mut s = Settings {
            model: ModelChoice::Local("m".into()),
            ..Settings::default()
        };
        s.right.set(MethodKind::ADAPTIVE, "delta", delta);
        s.job(10).unwrap()
    }

    fn record(i: usize) -> StepRecord {
        StepRecord {
            index: i,
            timestep: 0.0,
            sigma: 0.0,
            computed: true,
            decision: Decision::Computed,
            d: None,
            third_order: None,
            threshold: None,
            signal: None,
            signal_limit: None,
            rel_change: 0.0,
            predictor_ms: 1.0,
            controller_ms: 0.0,
            step_ms: 1.0,
        }
    }

    fn result(side: Side) -> Arc<SideResult> {
        Arc::new(SideResult {
            side,
            image: image::RgbImage::new(2, 2),
            frames: Arc::default(),
            trace: RunTrace {
                method: Method::BASELINE,
                scheduler: "ddim".into(),
                budget: 10,
                guidance: 7.5,
                early_stop: None,
                stopped_early_at: None,
                unet_calls: 10,
                unet_macs: None,
                unet_cost: None,
                steps_run: 10,
                elapsed_ms: 1.0,
                steps: (0..10).map(record).collect(),
            },
            decode_ms: 0.0,
            model: "m".into(),
            computed_at: Instant::now(),
        })
    }

    #[test]
    fn warnings_show_once_per_job_and_clear_on_the_next() {
        let mut s = Session::default();
        s.start_job(1, spec(0.01));
        for _ in 0..2 {
            s.apply(Event::Warning {
                job: 1,
                message: "unknown word".into(),
            });
        }
        s.apply(Event::Warning {
            job: 7,
            message: "another job's".into(),
        });
        assert_eq!(s.warnings, vec!["unknown word".to_string()]);
        s.start_job(2, spec(0.02));
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn events_of_older_jobs_never_reach_the_view() {
        let mut s = Session::default();
        s.start_job(1, spec(0.01));
        s.apply(Event::Started {
            job: 1,
            side: Side::Baseline,
            budget: 10,
        });
        // Job 2 with another seed: baseline of job 1 is no longer followed.
        let mut other = spec(0.01);
        other.seed += 1;
        s.start_job(2, other);
        s.apply(Event::Step {
            job: 1,
            side: Side::Baseline,
            record: record(0),
            preview: None,
            preview_frames: None,
        });
        s.apply(Event::Finished {
            job: 1,
            result: result(Side::Adaptive),
            from_cache: false,
        });
        assert!(s.baseline.steps.is_empty());
        assert!(s.adaptive.result.is_none());
        assert_eq!(s.stale_events, 2);
    }

    #[test]
    fn a_slow_first_step_gives_the_whole_job_an_estimate() {
        let mut s = Session::default();
        s.start_job(1, spec(0.01));
        assert_eq!(s.estimate(), None);
        s.apply(Event::Started {
            job: 1,
            side: Side::Baseline,
            budget: 10,
        });
        assert_eq!(s.estimate(), None, "no step timed yet");
        let mut slow = record(0);
        slow.step_ms = 20_000.0;
        s.apply(Event::Step {
            job: 1,
            side: Side::Baseline,
            record: slow,
            preview: None,
            preview_frames: None,
        });
        // 9 baseline steps left, then the adaptive side's 10.
        let e = s.estimate().unwrap();
        assert_eq!(e.steps_left, 19);
        assert_eq!(e.left_ms(), 19.0 * 20_000.0);
        assert!(e.long_run_note().unwrap().starts_with("about 6 min left"));
    }

    #[test]
    fn same_baseline_keeps_following_the_running_one() {
        let mut s = Session::default();
        s.start_job(1, spec(0.01));
        s.apply(Event::Started {
            job: 1,
            side: Side::Baseline,
            budget: 10,
        });
        s.apply(Event::Step {
            job: 1,
            side: Side::Baseline,
            record: record(0),
            preview: None,
            preview_frames: None,
        });
        s.start_job(2, spec(0.05));
        assert_eq!(s.baseline_job, Some(1));
        s.apply(Event::Step {
            job: 1,
            side: Side::Baseline,
            record: record(1),
            preview: None,
            preview_frames: None,
        });
        assert_eq!(s.baseline.steps.len(), 2);
        let r = result(Side::Baseline);
        s.apply(Event::Finished {
            job: 1,
            result: r.clone(),
            from_cache: false,
        });
        s.apply(Event::Cancelled {
            job: 1,
            superseded: true,
        });
        s.apply(Event::Finished {
            job: 2,
            result: r,
            from_cache: true,
        });
        assert_eq!(s.baseline.status, SideStatus::Done);
        assert!(
            !s.baseline.from_cache,
            "computed while job 2 was on screen: not a result of an earlier run"
        );
        assert_eq!(s.baseline_job, Some(2));
        assert!(s.is_busy());
        s.apply(Event::Started {
            job: 2,
            side: Side::Adaptive,
            budget: 10,
        });
        assert_eq!(s.adaptive.status, SideStatus::Running);
    }

    #[test]
    fn frames_reach_the_job_only_when_the_model_makes_clips() {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut s = Settings {
            model: ModelChoice::Local(fx.join("tiny-sd")),
            frames: 4,
            clip: true,
            ..Settings::default()
        };
        // An image model: no frames, whatever the check box says.
        assert_eq!(s.video(), Video::No);
        assert_eq!(s.job(10).unwrap().frames, None);
        // A motion module makes it a video model.
        s.motion = Some(fx.join("tiny-animatediff/motion_adapter"));
        assert_eq!(s.video(), Video::Always);
        let j = s.job(10).unwrap();
        assert_eq!(j.frames, Some(4));
        assert_eq!(j.motion, s.motion);
        // A video UNet by itself, on disk or on the hub.
        s.motion = None;
        s.model = ModelChoice::Local(fx.join("tiny-modelscope"));
        assert_eq!(s.video(), Video::Always);
        assert_eq!(s.job(10).unwrap().frames, Some(4));
        s.model = ModelChoice::Hub(HubModel::ModelScopeT2v.name().into());
        assert_eq!(s.video(), Video::Always);
        s.model = ModelChoice::Hub(HubModel::Sd15.name().into());
        assert_eq!(s.video(), Video::No);
        // The built-in shapes model: a clip when asked for.
        s.model =
            ModelChoice::Builtin(PathBuf::from("assets/models").join(crate::model::BUILTIN_SHAPES));
        assert_eq!(s.video(), Video::Optional);
        assert_eq!(s.job(10).unwrap().frames, Some(4));
        s.frames = 1;
        assert_eq!(s.job(10).unwrap().frames, None, "one frame: its image");
        s.frames = 4;
        s.clip = false;
        assert_eq!(s.job(10).unwrap().frames, None);
    }

    #[test]
    fn the_clip_on_screen_is_as_long_as_the_shorter_side() {
        let mut s = Session::default();
        assert_eq!((s.clip_len(), s.is_clip()), (0, false));
        s.start_job(1, spec(0.01));
        let frames = |n: usize| Arc::new(vec![image::RgbImage::new(2, 2); n]);
        s.apply(Event::Step {
            job: 1,
            side: Side::Baseline,
            record: record(0),
            preview: None,
            preview_frames: Some(frames(6)),
        });
        assert_eq!((s.clip_len(), s.is_clip()), (6, true));
        s.adaptive.frames = Some(frames(5));
        assert_eq!(s.clip_len(), 5);
    }

    #[test]
    fn settings_round_trip_and_tolerate_missing_fields() {
        let s = Settings::default();
        let json = serde_json::to_string(&s).unwrap();
        let back: Settings = serde_json::from_str(&json).unwrap();
        assert_eq!(s, back);
        let partial: Settings = serde_json::from_str(r#"{"prompt":"x","steps":12}"#).unwrap();
        assert_eq!(partial.prompt, "x");
        assert_eq!(partial.steps, 12);
        assert_eq!(partial.right_method(), crate::job::defaults::ADAPTIVE);
        // Settings saved before the method registry (flat right-side keys) still load; their
        // method values take the registry's defaults.
        let old: Settings = serde_json::from_str(r#"{"delta":0.05,"steps_n":9}"#).unwrap();
        assert_eq!(old.right, MethodParams::default());
        assert_eq!(old.left, MethodParams::default());
    }
}
