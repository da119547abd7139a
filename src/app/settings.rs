//! The persisted settings of the app: the model, the prompt and run settings, each side's
//! method, the view preferences. Plain data, no egui and no candle, so it is easy to test.

use super::method_params::MethodParams;
use crate::complexity::{ScorerKind, Scoring};
use crate::job::{self, Job, defaults};
use crate::model::lora::LoraSpec;
use crate::model::{HubModel, ModelSource};
use crate::sampler::{Method, MethodKind, SchedulerKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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

/// The UNet's number format, as the app offers it (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// f32 on the CPU, f16 on a GPU.
    Default,
    F32,
    /// bf16: on the CPU, bf16 weights for the products (on AMX or AVX512-bf16 kernels
    /// where the CPU has them) with f32 activations.
    Bf16,
    F16,
}

impl Precision {
    /// Every choice, in menu order.
    pub const ALL: [Precision; 4] = [
        Precision::Default,
        Precision::F32,
        Precision::Bf16,
        Precision::F16,
    ];

    /// The job's dtype by name (`None`: the device's default).
    pub fn dtype_name(self) -> Option<&'static str> {
        match self {
            Precision::Default => None,
            Precision::F32 => Some("f32"),
            Precision::Bf16 => Some("bf16"),
            Precision::F16 => Some("f16"),
        }
    }

    /// The menu's words; bf16 names the CPU kernels it runs on here.
    pub fn label(self) -> String {
        match self {
            Precision::Default => "default (f32 on the CPU, f16 on a GPU)".into(),
            Precision::F32 => "f32".into(),
            Precision::Bf16 => format!(
                "bf16 (on the CPU: {} kernels)",
                crate::model::kernels::bf16::current_path()
            ),
            Precision::F16 => "f16 (slow on the CPU)".into(),
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
    /// The UNet's number format.
    pub precision: Precision,
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
            precision: Precision::Default,
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

/// The right side's method values of settings saved before the method registry, under
/// their old flat keys (read from the same saved text as [`Settings`], which ignores them).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LegacyKeys {
    #[serde(deserialize_with = "present")]
    delta: Option<f64>,
    #[serde(deserialize_with = "present")]
    max_skips: Option<f64>,
    #[serde(deserialize_with = "present")]
    steps_n: Option<f64>,
    #[serde(deserialize_with = "present")]
    ucache_threshold: Option<f64>,
    #[serde(deserialize_with = "present")]
    deepcache_interval: Option<f64>,
    #[serde(deserialize_with = "present")]
    deepcache_branch: Option<f64>,
    #[serde(deserialize_with = "present")]
    tgate_gate: Option<f64>,
}

/// A number that was saved (a plain number: RON would want `Some(…)` for an `Option`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    f64::deserialize(d).map(Some)
}

impl LegacyKeys {
    /// `(method, registry key, value)` for every old key present.
    fn values(&self) -> Vec<(&'static str, &'static str, f64)> {
        [
            ("adaptive", "delta", self.delta),
            ("adaptive", "max_skips", self.max_skips),
            ("steps", "n", self.steps_n),
            ("ucache", "threshold", self.ucache_threshold),
            ("deepcache", "interval", self.deepcache_interval),
            ("deepcache", "branch", self.deepcache_branch),
            ("tgate", "gate_step", self.tgate_gate),
        ]
        .into_iter()
        .filter_map(|(m, k, v)| v.map(|v| (m, k, v)))
        .collect()
    }
}

impl Settings {
    /// Move the right side's method values saved under the old flat keys (settings written
    /// before the method registry) into the right side's methods, where a saved setting of
    /// the registry's own does not already say otherwise.
    pub fn take_legacy(&mut self, legacy: &LegacyKeys) {
        for (name, key, v) in legacy.values() {
            let Some(kind) = MethodKind::named(name) else {
                continue;
            };
            if self.right.get(kind, key) == MethodParams::default().get(kind, key) {
                self.right.set(kind, key, v);
            }
        }
    }

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
        job.set_dtype_name(self.precision.dtype_name());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_number_format_reaches_the_job_and_names_the_bf16_path() {
        let mut s = Settings::default();
        assert_eq!(s.job(10).unwrap().dtype, None);
        let names: Vec<Option<&str>> = Precision::ALL.iter().map(|p| p.dtype_name()).collect();
        assert_eq!(names, [None, Some("f32"), Some("bf16"), Some("f16")]);
        s.precision = Precision::Bf16;
        assert_eq!(s.job(10).unwrap().dtype, Some(candle_core::DType::BF16));
        s.precision = Precision::F16;
        assert_eq!(s.job(10).unwrap().dtype, Some(candle_core::DType::F16));
        let path = crate::model::kernels::bf16::current_path();
        assert!(
            Precision::Bf16.label().contains(&format!("{path} kernels")),
            "{}",
            Precision::Bf16.label()
        );
        // Old settings files (without the field) read as the default.
        let old: Settings = serde_json::from_str(r#"{"force_cpu": true}"#).unwrap();
        assert_eq!(old.precision, Precision::Default);
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

    /// eframe keeps the settings between sessions as RON: every method's values per side
    /// must come back from it.
    #[test]
    fn settings_round_trip_through_eframe_s_ron() {
        let mut s = Settings {
            method: MethodKind::named("spectrum").unwrap(),
            left_method: MethodKind::named("steps").unwrap(),
            ..Settings::default()
        };
        s.right.set(MethodKind::ADAPTIVE, "delta", 0.05);
        s.right
            .set(MethodKind::named("ucache").unwrap(), "relative", 0.0);
        s.left.set(MethodKind::named("steps").unwrap(), "n", 7.0);
        let ron = ron::ser::to_string(&s).unwrap();
        let back: Settings = ron::from_str(&ron).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.left_method().own_steps(), Some(7));
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
        // Settings saved before the method registry (flat right-side keys) still load, and
        // their method values move to the right side's methods (JSON and eframe's RON).
        let text = r#"{"delta":0.05,"steps_n":9,"max_skips":3,"tgate_gate":6}"#;
        let mut old: Settings = serde_json::from_str(text).unwrap();
        assert_eq!(old.right, MethodParams::default());
        old.take_legacy(&serde_json::from_str(text).unwrap());
        let adaptive = old.right.method(MethodKind::ADAPTIVE);
        assert_eq!(adaptive.delta(), Some(0.05));
        assert_eq!(old.right.get(MethodKind::ADAPTIVE, "max_skips"), 3.0);
        assert_eq!(
            old.right
                .method(MethodKind::named("steps").unwrap())
                .own_steps(),
            Some(9)
        );
        assert_eq!(
            old.right
                .get(MethodKind::named("tgate").unwrap(), "gate_step"),
            6.0
        );
        assert_eq!(old.left, MethodParams::default());
        let ron_text = "(prompt: \"x\", delta: 0.2, deepcache_interval: 5)";
        let mut from_ron: Settings = ron::from_str(ron_text).unwrap();
        from_ron.take_legacy(&ron::from_str(ron_text).unwrap());
        assert_eq!(from_ron.prompt, "x");
        assert_eq!(from_ron.right.get(MethodKind::ADAPTIVE, "delta"), 0.2);
        let deepcache = MethodKind::named("deepcache").unwrap();
        assert_eq!(from_ron.right.get(deepcache, "interval"), 5.0);
        // A registry value saved beside an old key wins.
        let both = r#"{"delta":0.05,"right":{"adaptive":{"mode":"adaptive","delta":0.3}}}"#;
        let mut newer: Settings = serde_json::from_str(both).unwrap();
        newer.take_legacy(&serde_json::from_str(both).unwrap());
        assert_eq!(newer.right.get(MethodKind::ADAPTIVE, "delta"), 0.3);
    }
}
