//! AnimateDiff motion modules (diffusers `MotionAdapter`): temporal transformers inserted
//! into an SD 1.x UNet, which then denoises a clip's frames as one batch.
//!
//! A module (`AnimateDiffTransformer3D` in diffusers 0.42.1) works on `(batch·frames, c, h,
//! w)`: GroupNorm (ε 1e-6) over the clip `(batch, c, frames, h, w)` — all frames together,
//! as diffusers does —, each pixel's frames as a sequence of tokens, `proj_in`, one
//! transformer block whose two attentions are self-attention over frames with a sinusoidal
//! position table added to the output of `norm1` and `norm2`, a GEGLU feed-forward,
//! `proj_out`, plus the input. Modules sit after each ResNet/attention pair of the down
//! blocks (`motion_layers_per_block`), after each of the up blocks (one more), and (v2, v3
//! with `use_motion_mid_block`) between the mid block's attention and its last ResNet.
//!
//! Files: a diffusers `MotionAdapter` folder (`config.json` +
//! `diffusion_pytorch_model.safetensors`) or its weights file, or an original AnimateDiff
//! file (`mm_sd_v15_v2.safetensors`: `…motion_modules.M.temporal_transformer.…`,
//! `attention_blocks.{0,1}`, `norms.{0,1}`, `ff_norm`, `pos_encoder.pe`), renamed in place
//! the way diffusers' converter does. What the weights cannot show (heads, groups) comes
//! from a `config.json` beside the file, else from the published modules (8 heads, 32
//! groups).

use crate::model::checkpoint::{self, CheckedFile, TensorInfo};
use crate::model::clip_layout::to_clip;
use crate::model::error::ModelError;
use crate::model::layers::{Kernels, Linear, Norm, linear};
use crate::model::unet::{ModuleCache, TransformerBlock};
use anyhow::{Context, Result, bail};
use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::path::Path;

type CResult<T> = candle_core::Result<T>;

/// What shapes a motion adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionConfig {
    /// Channels of each down block (the UNet's `block_out_channels`).
    pub block_out_channels: Vec<usize>,
    /// Modules per down block (up blocks have one more).
    pub layers_per_block: usize,
    /// Attention heads of every module.
    pub heads: usize,
    /// GroupNorm groups of every module.
    pub groups: usize,
    /// Frames the position table covers.
    pub max_seq_length: usize,
    /// A module in the mid block (v2, v3).
    pub mid_block: bool,
    /// Share of the variance of each frame's initial noise that all frames of a clip
    /// share (`ε_f = √s·ε_shared + √(1−s)·ε_f'`, the "mixed noise" prior of Ge et al.,
    /// ICCV 2023), as the module was trained: 0 (independent frames, AnimateDiff's) unless
    /// its `config.json` says `"shared_noise"` — the built-in shapes module does.
    pub shared_noise: f64,
    /// Prompt words that move the shared noise with the clip's content (warped noise, as
    /// the module was trained: [`crate::sampler::noise_motion`]); empty unless its
    /// `config.json` lists `"noise_motion"` rules — the built-in shapes module does.
    pub noise_motion: Vec<crate::sampler::noise_motion::NoiseMotionRule>,
    /// The shared noise as multi-resolution noise with this discount
    /// ([`crate::sampler::noise::add_pyramid`]), as the module was trained; 0 (plain
    /// Gaussian) unless its `config.json` says `"noise_pyramid"`.
    pub noise_pyramid: f64,
    /// How often the module animated each motion right on held-out prompts, as
    /// `adiff train motion-eval --record` measured it (empty unless its `config.json`
    /// says `"evaluated"`); a prompt asking for a motion it mostly fails is warned about.
    pub evaluated: Vec<MotionScore>,
    /// The command and date of that measurement (`"evaluated_by"`).
    pub evaluated_by: Option<String>,
}

/// How often a motion module animated one motion right on held-out prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MotionScore {
    /// The motion's words, as prompts name it ("moving right", "growing", "turning").
    pub words: String,
    /// Clips judged right.
    pub right: usize,
    /// Clips judged.
    pub clips: usize,
}

impl MotionScore {
    /// Whether fewer than half of the clips were right.
    pub fn mostly_fails(&self) -> bool {
        self.right * 2 < self.clips
    }
}

#[derive(Deserialize)]
struct AdapterJson {
    #[serde(rename = "_class_name")]
    class: Option<String>,
    block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    motion_layers_per_block: usize,
    #[serde(default = "one")]
    motion_transformer_layers_per_block: usize,
    #[serde(default = "eight")]
    motion_num_attention_heads: usize,
    #[serde(default = "thirty_two")]
    motion_norm_num_groups: usize,
    #[serde(default = "thirty_two")]
    motion_max_seq_length: usize,
    #[serde(default = "yes")]
    use_motion_mid_block: bool,
    #[serde(default)]
    shared_noise: f64,
    #[serde(default)]
    noise_motion: Vec<crate::sampler::noise_motion::NoiseMotionRule>,
    #[serde(default)]
    noise_pyramid: f64,
    #[serde(default)]
    evaluated: Vec<MotionScore>,
    #[serde(default)]
    evaluated_by: Option<String>,
    conv_in_channels: Option<usize>,
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn eight() -> usize {
    8
}
fn thirty_two() -> usize {
    32
}
fn yes() -> bool {
    true
}

/// A motion adapter's validated weights (under diffusers' names) and its configuration.
#[derive(Debug, Clone)]
pub struct MotionPart {
    /// The configuration.
    pub config: MotionConfig,
    /// The weights, diffusers' names.
    pub file: CheckedFile,
    /// What was loaded, for messages.
    pub origin: String,
}

/// The largest move a `noise_motion` rule may name, in cells (its canvas grows by it).
const MAX_NOISE_MOTION: u64 = 1024;

/// Published AnimateDiff modules: 8 heads, 32 groups.
const DEFAULT_HEADS: usize = 8;
const DEFAULT_GROUPS: usize = 32;

/// The published motion adapters `--motion` takes by name: (name, hub repository).
pub const HUB_MODULES: [(&str, &str); 2] = [
    (
        "animatediff-v1-5-2",
        "guoyww/animatediff-motion-adapter-v1-5-2",
    ),
    (
        "animatediff-v1-5-3",
        "guoyww/animatediff-motion-adapter-v1-5-3",
    ),
];

/// The hub repository of a motion adapter name (`animatediff-v1-5-2`, `v1-5-3`, …).
pub fn hub_repo(name: &str) -> Option<&'static str> {
    let key: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    HUB_MODULES.iter().find_map(|(n, repo)| {
        let short: String = n.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        (key == short || format!("animatediff{key}") == short).then_some(*repo)
    })
}

/// A motion module by path, or by a published name (downloaded like `--model`: the
/// adapter's `config.json` and weights into the Hugging Face cache).
pub fn resolve(path: &Path, opts: &crate::model::HubOptions) -> Result<MotionPart> {
    if std::fs::symlink_metadata(path).is_err()
        && let Some(repo) = path.to_str().and_then(hub_repo)
    {
        let files = crate::model::hub::fetch_files(
            repo,
            vec![
                "config.json".into(),
                "diffusion_pytorch_model.safetensors".into(),
            ],
            opts,
        )?;
        let weights = &files["diffusion_pytorch_model.safetensors"];
        let config = &files["config.json"];
        // The cache keeps both files in one snapshot folder.
        if weights.parent() == config.parent() {
            return read(weights);
        }
        bail!("the hub cache holds {repo}'s files in different folders");
    }
    read(path)
}

/// Read a motion module: a diffusers `MotionAdapter` folder or weights file, or an original
/// AnimateDiff file. Pickles are refused unopened; anything else that is no motion module
/// (an image checkpoint, a LoRA) is named as such.
pub fn read(path: &Path) -> Result<MotionPart> {
    crate::model::single_file::refuse_pickle(path, crate::model::error::PickleKind::Model)?;
    if let Some(problem) = crate::input_path::problem(path, crate::input_path::Want::FileOrFolder) {
        let names: Vec<&str> = HUB_MODULES.iter().map(|(n, _)| *n).collect();
        bail!(
            "the motion module {} {problem} (give a MotionAdapter folder, an mm_*.safetensors file, or a published name: {})",
            path.display(),
            names.join(", ")
        );
    }
    let (weights, config_file) = if path.is_dir() {
        let w = path.join("diffusion_pytorch_model.safetensors");
        if !w.is_file() {
            bail!(
                "{} holds no diffusion_pytorch_model.safetensors: a motion module is a diffusers MotionAdapter folder, its .safetensors file, or an original AnimateDiff .safetensors file (mm_sd_v15_v2.safetensors)",
                path.display()
            );
        }
        (w, Some(path.join("config.json")))
    } else {
        let beside = path.parent().map(|d| d.join("config.json"));
        (path.to_path_buf(), beside)
    };
    let checked = checkpoint::check_safetensors(&weights)?;
    let original = checked
        .tensors
        .keys()
        .any(|k| k.contains(".temporal_transformer."));
    let file = if original {
        as_diffusers(&checked)?
    } else {
        checked
    };
    let modules = file
        .tensors
        .keys()
        .filter(|k| k.contains("motion_modules."))
        .count();
    if modules == 0 {
        let found: Vec<String> = file
            .tensors
            .keys()
            .filter_map(|k| k.split('.').next().map(String::from))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .take(6)
            .collect();
        bail!(
            "{} is not a motion module: it has no motion_modules.* tensors (found {}); give an AnimateDiff motion module (a MotionAdapter folder or an mm_*.safetensors file)",
            weights.display(),
            found.join(", ")
        );
    }
    let json: Option<AdapterJson> = config_file
        .filter(|c| c.is_file())
        .map(|c| crate::model::config::read_json::<AdapterJson>(&c))
        .transpose()?
        .filter(|j| j.class.as_deref().is_none_or(|c| c == "MotionAdapter"));
    let config = config_of(&file, json.as_ref())?;
    Ok(MotionPart {
        config,
        origin: weights.display().to_string(),
        file,
    })
}

/// The configuration: shapes from the weights, heads and groups from the folder's config
/// (or the published defaults).
fn config_of(file: &CheckedFile, json: Option<&AdapterJson>) -> Result<MotionConfig> {
    let shape = |name: &str| file.tensors.get(name).map(|t| t.shape.clone());
    let mut block_out_channels = vec![];
    let mut layers_per_block = 0;
    while let Some(s) = shape(&format!(
        "down_blocks.{}.motion_modules.0.proj_in.weight",
        block_out_channels.len()
    )) {
        if block_out_channels.is_empty() {
            while shape(&format!(
                "down_blocks.0.motion_modules.{layers_per_block}.proj_in.weight"
            ))
            .is_some()
            {
                layers_per_block += 1;
            }
        }
        block_out_channels.push(s[0]);
    }
    if block_out_channels.is_empty() {
        bail!(
            "{} has no down_blocks.0.motion_modules.0: not a motion module adiff reads",
            file.path.display()
        );
    }
    let pe = shape("down_blocks.0.motion_modules.0.transformer_blocks.0.pos_embed.pe")
        .with_context(|| {
            format!(
                "{} has no position table (pos_embed.pe): adiff reads AnimateDiff v1–v3 modules with sinusoidal positions",
                file.path.display()
            )
        })?;
    let mid_block = shape("mid_block.motion_modules.0.proj_in.weight").is_some();
    if let Some(j) = json {
        if j.block_out_channels != block_out_channels {
            bail!(
                "the motion module's config.json says blocks {:?} but its weights are {:?}",
                j.block_out_channels,
                block_out_channels
            );
        }
        if j.motion_transformer_layers_per_block != 1 || j.conv_in_channels.is_some() {
            bail!(
                "motion modules with several transformer layers or their own conv_in are not supported"
            );
        }
        if j.motion_layers_per_block != layers_per_block || j.use_motion_mid_block != mid_block {
            bail!("the motion module's config.json does not describe its weights");
        }
        if !(0.0..1.0).contains(&j.noise_pyramid) {
            bail!(
                "the motion module's config.json says noise_pyramid {}: give a discount in 0..1 (0 = plain Gaussian noise)",
                j.noise_pyramid
            );
        }
        for score in &j.evaluated {
            if score.words.split_whitespace().next().is_none()
                || score.clips == 0
                || score.right > score.clips
            {
                bail!(
                    "the motion module's config.json has an evaluated entry {:?} with {} of {} clips right: give it words and 0 ≤ right ≤ clips, clips ≥ 1",
                    score.words,
                    score.right,
                    score.clips
                );
            }
        }
        for rule in &j.noise_motion {
            use crate::sampler::noise_motion::NoiseMotion;
            let cells = match rule.motion {
                NoiseMotion::Shift { dx, dy } => dx.unsigned_abs().max(dy.unsigned_abs()),
                NoiseMotion::Apart { d } => d.unsigned_abs(),
            };
            if rule.words.split_whitespace().next().is_none() || cells > MAX_NOISE_MOTION {
                bail!(
                    "the motion module's config.json has a noise_motion rule {:?} moving {cells} cells: give it words and at most {MAX_NOISE_MOTION} cells",
                    rule.words
                );
            }
        }
    }
    Ok(MotionConfig {
        block_out_channels,
        layers_per_block,
        heads: json.map_or(DEFAULT_HEADS, |j| j.motion_num_attention_heads),
        groups: json.map_or(DEFAULT_GROUPS, |j| j.motion_norm_num_groups),
        max_seq_length: json.map_or(pe[1], |j| j.motion_max_seq_length.min(pe[1])),
        mid_block,
        shared_noise: json.map_or(0.0, |j| j.shared_noise),
        noise_motion: json.map_or_else(Vec::new, |j| j.noise_motion.clone()),
        noise_pyramid: json.map_or(0.0, |j| j.noise_pyramid),
        evaluated: json.map_or_else(Vec::new, |j| j.evaluated.clone()),
        evaluated_by: json.and_then(|j| j.evaluated_by.clone()),
    })
}

/// An original AnimateDiff file under diffusers' names, as diffusers' converter renames it
/// (nothing copied): `.temporal_transformer` dropped, `attention_blocks.{0,1}` → `attn1/2`,
/// `norms.{0,1}` → `norm1/2`, `ff_norm` → `norm3`; the first attention's `pos_encoder.pe`
/// becomes the block's `pos_embed.pe` (the second's is the same table, dropped).
pub fn as_diffusers(file: &CheckedFile) -> Result<CheckedFile, ModelError> {
    file.relabel("motion module", |name: &str, info: &TensorInfo| {
        Ok(rename_original(name)
            .map(|n| vec![(n, info.clone())])
            .unwrap_or_default())
    })
}

/// The diffusers name of an original-layout key; `None` for the dropped second position
/// table.
fn rename_original(name: &str) -> Option<String> {
    let name = name.replace(".temporal_transformer.", ".");
    if name.ends_with("attention_blocks.1.pos_encoder.pe") {
        return None;
    }
    Some(
        name.replace("attention_blocks.0.pos_encoder.pe", "pos_embed.pe")
            .replace(".attention_blocks.0.", ".attn1.")
            .replace(".attention_blocks.1.", ".attn2.")
            .replace(".norms.0.", ".norm1.")
            .replace(".norms.1.", ".norm2.")
            .replace(".ff_norm.", ".norm3."),
    )
}

/// One motion module.
pub struct MotionModule {
    norm: Norm,
    proj_in: Linear,
    block: TransformerBlock,
    proj_out: Linear,
}

impl MotionModule {
    fn new(vb: VarBuilder, c: usize, cfg: &MotionConfig, kernels: Kernels) -> CResult<Self> {
        let tb = vb.pp("transformer_blocks").pp(0);
        let pe = tb.pp("pos_embed").get((1, cfg.max_seq_length, c), "pe")?;
        Ok(Self {
            norm: Norm::new(cfg.groups, c, 1e-6, vb.pp("norm"))?,
            proj_in: Linear::new(c, c, vb.pp("proj_in"))?,
            block: TransformerBlock::double_self(tb, c, cfg.heads, kernels)?.with_positions(pe),
            proj_out: Linear::new(c, c, vb.pp("proj_out"))?,
        })
    }

    /// `x` `(batch·frames, c, h, w)`.
    pub(super) fn forward(&self, x: &Tensor, frames: usize, kernels: Kernels) -> CResult<Tensor> {
        let (bf, c, h, w) = x.dims4()?;
        let b = bf / frames;
        let normed = self.norm.forward(&to_clip(x, frames)?, false, kernels)?;
        let tokens =
            normed
                .permute((0, 3, 4, 2, 1))?
                .contiguous()?
                .reshape((b * h * w, frames, c))?;
        let t = linear(&self.proj_in, &tokens, kernels)?;
        let t = self.block.forward(&t, &t, &mut ModuleCache::default())?;
        let t = linear(&self.proj_out, &t, kernels)?;
        let out = t
            .reshape((b, h, w, frames, c))?
            .permute((0, 3, 4, 1, 2))?
            .contiguous()?
            .reshape((bf, c, h, w))?;
        out + x
    }
}

/// Every motion module of an adapter, where the UNet runs them.
pub struct MotionModules {
    /// Per down block, one after each ResNet/attention pair.
    pub(super) down: Vec<Vec<MotionModule>>,
    /// Between the mid block's attention and its last ResNet.
    pub(super) mid: Option<MotionModule>,
    /// Per up block (execution order), one after each ResNet/attention pair.
    pub(super) up: Vec<Vec<MotionModule>>,
    config: MotionConfig,
    kernels: Kernels,
}

impl std::fmt::Debug for MotionModules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotionModules")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MotionModules {
    /// Build from diffusers-named weights.
    pub fn new(vb: VarBuilder, cfg: &MotionConfig) -> Result<Self> {
        Self::build(vb, cfg, Kernels::Fused)
    }

    /// As [`MotionModules::new`], for training: only ops with a backward pass.
    pub fn new_trainable(vb: VarBuilder, cfg: &MotionConfig) -> Result<Self> {
        Self::build(vb, cfg, Kernels::Autograd)
    }

    fn build(vb: VarBuilder, cfg: &MotionConfig, kernels: Kernels) -> Result<Self> {
        let build = || -> CResult<Self> {
            let n = cfg.block_out_channels.len();
            let mut down = vec![];
            for (i, &c) in cfg.block_out_channels.iter().enumerate() {
                let vb = vb.pp("down_blocks").pp(i).pp("motion_modules");
                down.push(
                    (0..cfg.layers_per_block)
                        .map(|j| MotionModule::new(vb.pp(j), c, cfg, kernels))
                        .collect::<CResult<Vec<_>>>()?,
                );
            }
            let mid = if cfg.mid_block {
                let c = cfg.block_out_channels[n - 1];
                Some(MotionModule::new(
                    vb.pp("mid_block").pp("motion_modules").pp(0),
                    c,
                    cfg,
                    kernels,
                )?)
            } else {
                None
            };
            let mut up = vec![];
            for i in 0..n {
                let c = cfg.block_out_channels[n - 1 - i];
                let vb = vb.pp("up_blocks").pp(i).pp("motion_modules");
                up.push(
                    (0..=cfg.layers_per_block)
                        .map(|j| MotionModule::new(vb.pp(j), c, cfg, kernels))
                        .collect::<CResult<Vec<_>>>()?,
                );
            }
            Ok(Self {
                down,
                mid,
                up,
                config: cfg.clone(),
                kernels,
            })
        };
        build().context("the motion module's weights do not match its configuration")
    }

    /// The configuration.
    pub fn config(&self) -> &MotionConfig {
        &self.config
    }
}

/// The motion modules of one UNet call and the clip's frame count.
#[derive(Clone, Copy)]
pub struct Temporal<'a> {
    /// The modules.
    pub modules: &'a MotionModules,
    /// Frames per clip in the batch.
    pub frames: usize,
}

impl Temporal<'_> {
    /// Down block `b`'s module after layer `i`.
    pub(super) fn down(&self, b: usize, i: usize, x: Tensor) -> CResult<Tensor> {
        match self.modules.down.get(b).and_then(|m| m.get(i)) {
            Some(m) => m.forward(&x, self.frames, self.modules.kernels),
            None => Ok(x),
        }
    }

    /// The mid block's module.
    pub(super) fn mid(&self, x: Tensor) -> CResult<Tensor> {
        match &self.modules.mid {
            Some(m) => m.forward(&x, self.frames, self.modules.kernels),
            None => Ok(x),
        }
    }

    /// Up block `b` (execution order)'s module after layer `j`.
    pub(super) fn up(&self, b: usize, j: usize, x: Tensor) -> CResult<Tensor> {
        match self.modules.up.get(b).and_then(|m| m.get(j)) {
            Some(m) => m.forward(&x, self.frames, self.modules.kernels),
            None => Ok(x),
        }
    }
}

/// Whether a motion module fits a UNet of these down-block widths, and the frames its
/// position table allows.
pub fn check_fit(cfg: &MotionConfig, unet_blocks: &[usize], layers: usize) -> Result<()> {
    if cfg.block_out_channels != unet_blocks || cfg.layers_per_block != layers {
        bail!(
            "does not fit this model: its blocks are {:?} wide with {} modules each, the UNet's {:?} with {} layers (AnimateDiff modules for SD 1.x fit SD 1.x checkpoints)",
            cfg.block_out_channels,
            cfg.layers_per_block,
            unet_blocks,
            layers
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::UNetConfig;
    use crate::model::unet::UNet;
    use candle_core::{DType, Device};

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    #[test]
    fn published_modules_are_named() {
        assert_eq!(
            hub_repo("animatediff-v1-5-2"),
            Some("guoyww/animatediff-motion-adapter-v1-5-2")
        );
        assert_eq!(
            hub_repo("v1-5-3"),
            Some("guoyww/animatediff-motion-adapter-v1-5-3")
        );
        assert_eq!(hub_repo("animatediff-v2"), None);
        // Offline and not cached: the error names the repository and the file.
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::model::HubOptions {
            cache_dir: Some(dir.path().to_path_buf()),
            offline: true,
            ..crate::model::HubOptions::default()
        };
        let e = resolve(Path::new("animatediff-v1-5-2"), &opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("guoyww/animatediff-motion-adapter-v1-5-2") && e.contains("config.json"),
            "{e}"
        );
    }

    #[test]
    fn the_original_layout_loads_to_the_adapters_tensors() {
        let dir = fixtures().join("tiny-animatediff");
        let original = read(&dir.join("mm_tiny_v2.safetensors")).unwrap();
        let adapter = read(&dir.join("motion_adapter")).unwrap();
        assert_eq!(original.config.block_out_channels, vec![32, 64]);
        assert_eq!(adapter.config.heads, 2);
        // No config beside the original file: the published modules' 8 heads and 32 groups.
        assert_eq!(original.config.heads, 8);
        assert!(original.config.mid_block && original.config.max_seq_length == 32);
        let names = |p: &MotionPart| p.file.tensors.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&original), names(&adapter));
        let load = |p: &MotionPart| {
            candle_nn::VarBuilder::from_backend(
                Box::new(checkpoint::ReadBackend::open(std::slice::from_ref(&p.file)).unwrap()),
                DType::F32,
                Device::Cpu,
            )
        };
        let (a, b) = (load(&original), load(&adapter));
        for (name, info) in &adapter.file.tensors {
            let x = a.get(info.shape.clone(), name).unwrap();
            let y = b.get(info.shape.clone(), name).unwrap();
            let d: f32 = (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(d, 0.0, "{name}");
        }
    }

    #[test]
    fn a_unet_with_motion_modules_matches_diffusers_unet_motion_model() {
        let sd = fixtures().join("tiny-sd/unet");
        let cfg = UNetConfig::from_file(&sd.join("config.json")).unwrap();
        let files =
            checkpoint::check_all(&[sd.join("diffusion_pytorch_model.safetensors")]).unwrap();
        let unet = UNet::new(
            checkpoint::var_builder(&files, DType::F32, &Device::Cpu).unwrap(),
            &cfg,
        )
        .unwrap();
        let part = read(&fixtures().join("tiny-animatediff/motion_adapter")).unwrap();
        let modules = MotionModules::new(
            checkpoint::var_builder(std::slice::from_ref(&part.file), DType::F32, &Device::Cpu)
                .unwrap(),
            &part.config,
        )
        .unwrap();
        let r = candle_core::safetensors::load(
            fixtures().join("reference/animatediff/unet_call.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let (b, c, f, h, w) = r["sample"].dims5().unwrap();
        let x = r["sample"]
            .permute((0, 2, 1, 3, 4))
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b * f, c, h, w))
            .unwrap();
        let t = r["timestep"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        let ts = Tensor::full(t, b * f, &Device::Cpu).unwrap();
        let ctx = crate::model::clip_layout::per_frame(&r["encoder_hidden_states"], f).unwrap();
        let out = unet
            .forward_motion(
                &x,
                &ts,
                &ctx,
                Temporal {
                    modules: &modules,
                    frames: f,
                },
                &mut ModuleCache::default(),
            )
            .unwrap()
            .reshape((b, f, c, h, w))
            .unwrap()
            .permute((0, 2, 1, 3, 4))
            .unwrap();
        let want = &r["out"];
        let diff = (&out - want).unwrap().sqr().unwrap().sum_all().unwrap();
        let norm = want.sqr().unwrap().sum_all().unwrap();
        let rel = (diff.to_scalar::<f32>().unwrap() / norm.to_scalar::<f32>().unwrap()).sqrt();
        assert!(rel < 1e-5, "relative L2 difference {rel}");
        // The modules matter: without them the output is far off.
        let plain = unet.forward_t(&x, &ts, &ctx, None).unwrap();
        let plain = plain
            .reshape((b, f, c, h, w))
            .unwrap()
            .permute((0, 2, 1, 3, 4))
            .unwrap();
        let d = (&plain - want).unwrap().sqr().unwrap().sum_all().unwrap();
        let rel_plain = (d.to_scalar::<f32>().unwrap() / norm.to_scalar::<f32>().unwrap()).sqrt();
        assert!(rel_plain > 0.1, "{rel_plain}");
    }
}
