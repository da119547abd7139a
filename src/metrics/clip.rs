//! CLIP alignment of an image with its prompt: the cosine of CLIP's projected image and
//! text embeddings (transformers `CLIPModel.get_image_features` / `get_text_features`).
//!
//! * The model is candle's CLIP ([`candle_transformers::models::clip`]) built from a
//!   transformers `config.json` of any size (OpenAI CLIP family: `quick_gelu`, layer-norm
//!   ε 1e-5), weights from a local folder or the Hugging Face hub
//!   (`openai/clip-vit-base-patch32` by default).
//! * The text is tokenised with the model layer's CLIP tokenizer, truncated to
//!   `BOS + 75 tokens + EOS` and read at the EOS token, as transformers does.
//! * The image goes through transformers' `CLIPImageProcessor` steps: shortest side to the
//!   model size with Pillow's bicubic filter (emulated bit for bit: 8-bit fixed-point
//!   separable passes), centre crop, `x/255`, `(x − mean)/std` in f32.
//!
//! Three conventions are reported: the raw cosine, CLIPScore `100·max(cos, 0)`
//! (torchmetrics / Hessel et al.) and `(cos + 1)/2` (what the reference project printed).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};
use candle_transformers::models::clip::vision_model::{ClipVisionConfig, ClipVisionTransformer};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{ClipTokenizer, HubOptions};

/// The default CLIP model for alignment scores.
pub const DEFAULT_CLIP_REPO: &str = "openai/clip-vit-base-patch32";
/// The revision of [`DEFAULT_CLIP_REPO`] that has `model.safetensors` (its `main` branch
/// only has pickled PyTorch weights).
pub const DEFAULT_CLIP_REVISION: &str = "refs/pr/15";

/// CLIP alignment of one image with one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClipAlignment {
    /// Cosine of the projected image and text embeddings, in [−1, 1].
    pub cosine: f64,
    /// CLIPScore: `100 · max(cosine, 0)`.
    pub clip_score: f64,
    /// `(cosine + 1) / 2`, the reference project's convention.
    pub half_cosine: f64,
}

impl ClipAlignment {
    /// All conventions from the cosine.
    pub fn from_cosine(cosine: f64) -> Self {
        Self {
            cosine,
            clip_score: 100.0 * cosine.max(0.0),
            half_cosine: (cosine + 1.0) / 2.0,
        }
    }
}

/// Where the CLIP weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClipSource {
    /// A local transformers folder (`config.json`, `model.safetensors`, tokenizer files,
    /// optionally `preprocessor_config.json`).
    Dir(PathBuf),
    /// A Hugging Face repository, optionally at a revision (`owner/name@revision`).
    Hub {
        /// `owner/name`.
        repo: String,
        /// Branch, tag, commit or `refs/pr/N`.
        revision: Option<String>,
    },
}

impl Default for ClipSource {
    fn default() -> Self {
        ClipSource::Hub {
            repo: DEFAULT_CLIP_REPO.into(),
            revision: None,
        }
    }
}

impl std::fmt::Display for ClipSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClipSource::Dir(d) => write!(f, "{}", d.display()),
            ClipSource::Hub {
                repo,
                revision: Some(r),
            } => write!(f, "{repo}@{r}"),
            ClipSource::Hub {
                repo,
                revision: None,
            } => write!(f, "{repo}"),
        }
    }
}

impl FromStr for ClipSource {
    type Err = anyhow::Error;

    /// An existing folder, else `owner/name[@revision]`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let p = Path::new(s);
        if p.is_dir() {
            return Ok(ClipSource::Dir(p.to_path_buf()));
        }
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) => (r, Some(rev.to_string())),
            None => (s, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) || s.starts_with('.') {
            return Err(crate::field::FieldError::new(
                crate::field::Field::Clip,
                format!("'{s}' is neither an existing folder nor a hub repository 'owner/name[@revision]' (default {DEFAULT_CLIP_REPO})"),
            )
            .into());
        }
        Ok(ClipSource::Hub {
            repo: repo.to_string(),
            revision,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

fn d_text_vocab() -> usize {
    49408
}
fn d_text_hidden() -> usize {
    512
}
fn d_text_inter() -> usize {
    2048
}
fn d_twelve() -> usize {
    12
}
fn d_eight() -> usize {
    8
}
fn d_77() -> usize {
    77
}
fn d_vis_hidden() -> usize {
    768
}
fn d_vis_inter() -> usize {
    3072
}
fn d_three() -> usize {
    3
}
fn d_224() -> usize {
    224
}
fn d_32() -> usize {
    32
}
fn d_proj() -> usize {
    512
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}
fn d_logit() -> f64 {
    2.6592
}

/// `text_config` of a transformers `CLIPConfig` (transformers' defaults when absent).
#[derive(Debug, Clone, Deserialize)]
struct TextJson {
    #[serde(default = "d_text_vocab")]
    vocab_size: usize,
    #[serde(default = "d_text_hidden")]
    hidden_size: usize,
    #[serde(default = "d_text_inter")]
    intermediate_size: usize,
    #[serde(default = "d_twelve")]
    num_hidden_layers: usize,
    #[serde(default = "d_eight")]
    num_attention_heads: usize,
    #[serde(default = "d_77")]
    max_position_embeddings: usize,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
}

/// `vision_config` of a transformers `CLIPConfig`.
#[derive(Debug, Clone, Deserialize)]
struct VisionJson {
    #[serde(default = "d_vis_hidden")]
    hidden_size: usize,
    #[serde(default = "d_vis_inter")]
    intermediate_size: usize,
    #[serde(default = "d_twelve")]
    num_hidden_layers: usize,
    #[serde(default = "d_twelve")]
    num_attention_heads: usize,
    #[serde(default = "d_three")]
    num_channels: usize,
    #[serde(default = "d_224")]
    image_size: usize,
    #[serde(default = "d_32")]
    patch_size: usize,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
}

/// A transformers `CLIPConfig` (`config.json` of a `CLIPModel`).
#[derive(Debug, Clone, Deserialize)]
struct ClipJson {
    text_config: Option<TextJson>,
    vision_config: Option<VisionJson>,
    #[serde(default = "d_proj")]
    projection_dim: usize,
    #[serde(default = "d_logit")]
    #[allow(dead_code)]
    logit_scale_init_value: f64,
}

/// Remove `null` members of every object, so that serde's defaults apply to them.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|_, x| !x.is_null());
            o.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The resolved sizes of a CLIP model.
#[derive(Debug, Clone)]
pub struct ClipModelConfig {
    text: ClipTextConfig,
    vision: ClipVisionConfig,
    /// Shared embedding size of the two projections.
    pub projection_dim: usize,
    /// Side of the square input image.
    pub image_size: usize,
    /// Text positions.
    pub max_position_embeddings: usize,
}

impl ClipModelConfig {
    /// Read and validate a transformers `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read CLIP config {}", path.display()))?;
        let mut raw: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        // old configs write unset fields as null and may carry `*_config_dict` instead
        drop_nulls(&mut raw);
        if let Some(o) = raw.as_object_mut() {
            for k in ["text_config", "vision_config"] {
                if !o.contains_key(k)
                    && let Some(d) = o.get(&format!("{k}_dict")).cloned()
                {
                    o.insert(k.to_string(), d);
                }
            }
        }
        let j: ClipJson = serde_json::from_value(raw)
            .with_context(|| format!("{} is not a transformers CLIPConfig", path.display()))?;
        let t = j.text_config.clone().unwrap_or_else(|| {
            serde_json::from_value(Value::Object(Default::default())).expect("defaults")
        });
        let v = j.vision_config.clone().unwrap_or_else(|| {
            serde_json::from_value(Value::Object(Default::default())).expect("defaults")
        });
        for (tower, act, eps) in [
            ("text", &t.hidden_act, t.layer_norm_eps),
            ("vision", &v.hidden_act, v.layer_norm_eps),
        ] {
            if act != "quick_gelu" {
                bail!(
                    "{}: the {tower} tower uses hidden_act '{act}'; candle's CLIP supports the OpenAI CLIP family (quick_gelu) only",
                    path.display()
                );
            }
            if (eps - 1e-5).abs() > 1e-12 {
                bail!(
                    "{}: the {tower} tower's layer_norm_eps is {eps}; candle's CLIP uses 1e-5",
                    path.display()
                );
            }
        }
        if t.num_attention_heads == 0 || !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            bail!(
                "{}: text num_attention_heads does not divide hidden_size",
                path.display()
            );
        }
        if v.num_attention_heads == 0
            || !v.hidden_size.is_multiple_of(v.num_attention_heads)
            || v.patch_size == 0
            || !v.image_size.is_multiple_of(v.patch_size)
        {
            bail!(
                "{}: vision heads/patch size do not divide hidden_size/image_size",
                path.display()
            );
        }
        Ok(Self {
            text: ClipTextConfig {
                vocab_size: t.vocab_size,
                embed_dim: t.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: t.intermediate_size,
                max_position_embeddings: t.max_position_embeddings,
                pad_with: None,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                projection_dim: j.projection_dim,
            },
            vision: ClipVisionConfig {
                embed_dim: v.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: v.intermediate_size,
                num_hidden_layers: v.num_hidden_layers,
                num_attention_heads: v.num_attention_heads,
                projection_dim: j.projection_dim,
                num_channels: v.num_channels,
                image_size: v.image_size,
                patch_size: v.patch_size,
            },
            projection_dim: j.projection_dim,
            image_size: v.image_size,
            max_position_embeddings: t.max_position_embeddings,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Image preprocessing
// ---------------------------------------------------------------------------------------

/// transformers' `OPENAI_CLIP_MEAN` (written as transformers writes it).
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// transformers' `OPENAI_CLIP_STD`.
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The `CLIPImageProcessor` settings: resize the shortest side, centre crop, normalise.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPreprocess {
    /// The shortest side after resizing.
    pub shortest_edge: usize,
    /// Crop (width, height).
    pub crop: (usize, usize),
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
    /// The rescale factor (1/255).
    pub rescale: f64,
}

impl Default for ClipPreprocess {
    /// `openai/clip-vit-base-patch32`'s processor: 224, bicubic, crop 224.
    fn default() -> Self {
        Self::square(224)
    }
}

fn size_field(v: Option<&Value>, keys: &[&str]) -> Option<usize> {
    let v = v?;
    if let Some(n) = v.as_u64() {
        return Some(n as usize);
    }
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_u64))
        .map(|n| n as usize)
}

impl ClipPreprocess {
    /// Resize to `side` and crop `side × side` with the OpenAI mean/std.
    pub fn square(side: usize) -> Self {
        Self {
            shortest_edge: side,
            crop: (side, side),
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
            rescale: 1.0 / 255.0,
        }
    }

    /// Read a `preprocessor_config.json` (old integer and new dict forms of `size` and
    /// `crop_size`). Only the bicubic filter (`resample` 3) is implemented.
    pub fn from_file(path: &Path, image_size: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let j: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        if let Some(r) = j.get("resample").and_then(Value::as_u64)
            && r != 3
        {
            bail!(
                "{}: resample {r} is not implemented (only 3, bicubic)",
                path.display()
            );
        }
        let mut p = Self::square(image_size);
        if let Some(s) = size_field(j.get("size"), &["shortest_edge"]) {
            p.shortest_edge = s;
        }
        if let Some(c) = j.get("crop_size") {
            let w = size_field(Some(c), &["width"]).unwrap_or(image_size);
            let h = size_field(Some(c), &["height"]).unwrap_or(image_size);
            p.crop = (w, h);
        }
        let triple = |key: &str| -> Option<[f32; 3]> {
            let a = j.get(key)?.as_array()?;
            (a.len() == 3).then(|| {
                [
                    a[0].as_f64().unwrap_or(0.0) as f32,
                    a[1].as_f64().unwrap_or(0.0) as f32,
                    a[2].as_f64().unwrap_or(1.0) as f32,
                ]
            })
        };
        if let Some(m) = triple("image_mean") {
            p.mean = m;
        }
        if let Some(s) = triple("image_std") {
            p.std = s;
        }
        if let Some(r) = j.get("rescale_factor").and_then(Value::as_f64) {
            p.rescale = r;
        }
        Ok(p)
    }

    /// The resized size (width, height) for an input size: transformers'
    /// `get_resize_output_image_size(default_to_square=False)`.
    pub fn resized_size(&self, w: usize, h: usize) -> (usize, usize) {
        let (short, long) = if w <= h { (w, h) } else { (h, w) };
        if short == self.shortest_edge {
            return (w, h);
        }
        let new_long = ((self.shortest_edge * long) as f64 / short as f64) as usize;
        if w <= h {
            (self.shortest_edge, new_long)
        } else {
            (new_long, self.shortest_edge)
        }
    }

    /// Resize (Pillow bicubic) and centre-crop: the 8-bit stage of the processor.
    pub fn resize_crop(&self, img: &RgbImage) -> Result<RgbImage> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            bail!("cannot score an empty image");
        }
        let (rw, rh) = self.resized_size(w, h);
        let resized = pil_bicubic_resize(img, rw, rh);
        let (cw, ch) = self.crop;
        if cw > rw || ch > rh {
            bail!("CLIP crop {cw}x{ch} is larger than the resized image {rw}x{rh}");
        }
        let top = (rh - ch) / 2;
        let left = (rw - cw) / 2;
        Ok(
            image::imageops::crop_imm(&resized, left as u32, top as u32, cw as u32, ch as u32)
                .to_image(),
        )
    }

    /// The normalised `(1, 3, H, W)` f32 tensor of an already resized and cropped image.
    pub fn normalize(&self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0f32; 3 * w * h];
        for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
            for c in 0..3 {
                // transformers: float64 x·(1/255) → float32, then (x − mean)/std in float32
                let x = (f64::from(p[c]) * self.rescale) as f32;
                data[c * w * h + i] = (x - self.mean[c]) / self.std[c];
            }
        }
        Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
    }

    /// The whole processor: `pixel_values` of one image.
    pub fn pixel_values(&self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        self.normalize(&self.resize_crop(img)?, device)
    }
}

/// Pillow's bits of fixed-point precision in 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel (a = −0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole input range: per
/// output pixel the first input index, the tap count and the fixed-point taps.
fn pil_coeffs(in_size: usize, out_size: usize) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate towards zero
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kv) in k.iter_mut().enumerate().take(xmax) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kv = w;
            ww += w;
        }
        for (x, kv) in k.iter().enumerate().take(xmax) {
            let v = if ww != 0.0 { kv / ww } else { *kv };
            let f = v * f64::from(1u32 << PRECISION_BITS);
            kk[xx * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    (bounds, kk, ksize)
}

fn clip8(ss: i64) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `Image.resize((w, h), Image.BICUBIC)` of Pillow on an RGB image, bit for bit: a
/// horizontal then a vertical 8-bit fixed-point pass (each skipped when its size is
/// unchanged).
pub fn pil_bicubic_resize(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let mut cur: Vec<u8> = img.as_raw().clone();
    let mut cur_w = in_w;
    if out_w != in_w {
        let (bounds, kk, ksize) = pil_coeffs(in_w, out_w);
        let mut out = vec![0u8; out_w * in_h * 3];
        for y in 0..in_h {
            for (xx, &(xmin, xmax)) in bounds.iter().enumerate() {
                let k = &kk[xx * ksize..xx * ksize + xmax];
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, &kv) in k.iter().enumerate() {
                        ss += i64::from(cur[(y * in_w + xmin + x) * 3 + c]) * i64::from(kv);
                    }
                    out[(y * out_w + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = out;
        cur_w = out_w;
    }
    if out_h != in_h {
        let (bounds, kk, ksize) = pil_coeffs(in_h, out_h);
        let mut out = vec![0u8; cur_w * out_h * 3];
        for (yy, &(ymin, ymax)) in bounds.iter().enumerate() {
            let k = &kk[yy * ksize..yy * ksize + ymax];
            for x in 0..cur_w {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (y, &kv) in k.iter().enumerate() {
                        ss += i64::from(cur[((ymin + y) * cur_w + x) * 3 + c]) * i64::from(kv);
                    }
                    out[(yy * cur_w + x) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = out;
    }
    RgbImage::from_raw(cur_w as u32, out_h as u32, cur).expect("buffer size matches")
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// A loaded CLIP model with its tokenizer and image processor.
pub struct ClipScorer {
    text: ClipTextTransformer,
    vision: ClipVisionTransformer,
    text_projection: candle_nn::Linear,
    visual_projection: candle_nn::Linear,
    tokenizer: ClipTokenizer,
    preprocess: ClipPreprocess,
    config: ClipModelConfig,
    device: Device,
    origin: String,
}

impl std::fmt::Debug for ClipScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipScorer")
            .field("origin", &self.origin)
            .field("image_size", &self.config.image_size)
            .field("projection_dim", &self.config.projection_dim)
            .finish_non_exhaustive()
    }
}

/// The files a CLIP folder must have.
const REQUIRED: [&str; 2] = ["config.json", "model.safetensors"];
/// Files fetched when present.
const OPTIONAL: [&str; 6] = [
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
];

impl ClipScorer {
    /// Load from a local folder or the hub. Weights are f32 (scores are a measurement).
    pub fn load(source: &ClipSource, hub: &HubOptions, device: &Device) -> Result<Self> {
        match source {
            ClipSource::Dir(d) => Self::from_dir(d, device),
            ClipSource::Hub { repo, revision } => {
                let dir = fetch_hub(repo, revision.as_deref(), hub)?;
                let mut s = Self::from_dir(&dir, device)?;
                s.origin = source.to_string();
                Ok(s)
            }
        }
    }

    /// Load a transformers CLIP folder.
    pub fn from_dir(dir: &Path, device: &Device) -> Result<Self> {
        for f in REQUIRED {
            if !dir.join(f).is_file() {
                bail!(
                    "CLIP folder {} has no {f} (a transformers CLIPModel folder with config.json, model.safetensors and tokenizer files)",
                    dir.display()
                );
            }
        }
        let config = ClipModelConfig::from_file(&dir.join("config.json"))?;
        let mut tokenizer = ClipTokenizer::from_dir(dir)
            .with_context(|| format!("cannot load the CLIP tokenizer in {}", dir.display()))?;
        tokenizer.clamp_max_len(config.max_position_embeddings);
        let pp = dir.join("preprocessor_config.json");
        let preprocess = if pp.is_file() {
            ClipPreprocess::from_file(&pp, config.image_size)?
        } else {
            ClipPreprocess::square(config.image_size)
        };
        if preprocess.crop != (config.image_size, config.image_size) {
            bail!(
                "{}: crop {:?} does not match the model's image_size {}",
                pp.display(),
                preprocess.crop,
                config.image_size
            );
        }
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only; it is not modified while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .with_context(|| format!("cannot map {}", weights.display()))?;
        let build = || -> candle_core::Result<_> {
            Ok((
                ClipTextTransformer::new(vb.pp("text_model"), &config.text)?,
                ClipVisionTransformer::new(vb.pp("vision_model"), &config.vision)?,
                candle_nn::linear_no_bias(
                    config.text.embed_dim,
                    config.projection_dim,
                    vb.pp("text_projection"),
                )?,
                candle_nn::linear_no_bias(
                    config.vision.embed_dim,
                    config.projection_dim,
                    vb.pp("visual_projection"),
                )?,
            ))
        };
        let (text, vision, text_projection, visual_projection) = build()
            .with_context(|| format!("{} is not a CLIPModel checkpoint", weights.display()))?;
        Ok(Self {
            text,
            vision,
            text_projection,
            visual_projection,
            tokenizer,
            preprocess,
            config,
            device: device.clone(),
            origin: dir.display().to_string(),
        })
    }

    /// Where the model came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The image processor settings.
    pub fn preprocess(&self) -> &ClipPreprocess {
        &self.preprocess
    }

    /// The model sizes.
    pub fn config(&self) -> &ClipModelConfig {
        &self.config
    }

    /// `BOS, tokens…, EOS`, truncated to the text model's length (transformers'
    /// `truncation=True`, no padding).
    pub fn token_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let content = self.tokenizer.content_ids(prompt)?;
        let keep = self
            .tokenizer
            .max_len()
            .saturating_sub(2)
            .min(content.len());
        let mut ids = Vec::with_capacity(keep + 2);
        ids.push(self.tokenizer.bos_id());
        ids.extend_from_slice(&content[..keep]);
        ids.push(self.tokenizer.eos_id());
        Ok(ids)
    }

    /// The projected text embedding `(1, projection_dim)` of token ids (read at the last
    /// position, the EOS token).
    pub fn text_features_from_ids(&self, ids: &[u32]) -> Result<Tensor> {
        let n = ids.len();
        if n == 0 || n > self.config.max_position_embeddings {
            bail!(
                "{n} CLIP tokens (1..={} allowed)",
                self.config.max_position_embeddings
            );
        }
        let t = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let hidden = self.text.forward_with_mask(&t, usize::MAX)?;
        let pooled = hidden.i((.., n - 1, ..))?;
        Ok(self.text_projection.forward(&pooled)?)
    }

    /// The projected text embedding of a prompt.
    pub fn text_features(&self, prompt: &str) -> Result<Tensor> {
        self.text_features_from_ids(&self.token_ids(prompt)?)
    }

    /// The projected image embedding `(B, projection_dim)` of preprocessed pixels.
    pub fn image_features_from_pixels(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let x = pixel_values.to_device(&self.device)?.to_dtype(DType::F32)?;
        Ok(self.visual_projection.forward(&self.vision.forward(&x)?)?)
    }

    /// The projected image embedding of an image.
    pub fn image_features(&self, img: &RgbImage) -> Result<Tensor> {
        let pv = self.preprocess.pixel_values(img, &self.device)?;
        self.image_features_from_pixels(&pv)
    }

    /// Alignment of an image with a prompt.
    pub fn score(&self, img: &RgbImage, prompt: &str) -> Result<ClipAlignment> {
        let a = self.image_features(img)?;
        let b = self.text_features(prompt)?;
        Ok(ClipAlignment::from_cosine(cosine(&a, &b)?))
    }
}

/// Cosine of two `(1, D)` (or `(D,)`) embeddings, computed in f64.
pub fn cosine(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let b = b.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    if a.len() != b.len() {
        bail!("embedding sizes differ ({} vs {})", a.len(), b.len());
    }
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    // torch.nn.functional.cosine_similarity clamps each norm at eps = 1e-8
    Ok(dot / (na.max(1e-8) * nb.max(1e-8)))
}

/// Download (or find in the cache) a CLIP repository's files; returns the snapshot folder.
fn fetch_hub(repo_id: &str, revision: Option<&str>, opts: &HubOptions) -> Result<PathBuf> {
    let revision = revision.map(str::to_string).unwrap_or_else(|| {
        if repo_id == DEFAULT_CLIP_REPO {
            DEFAULT_CLIP_REVISION.to_string()
        } else {
            "main".to_string()
        }
    });
    let cache_dir = opts.resolved_cache_dir()?;
    let cache = hf_hub::Cache::new(cache_dir.clone());
    let repo = hf_hub::Repo::with_revision(
        repo_id.to_string(),
        hf_hub::RepoType::Model,
        revision.clone(),
    );
    let cached = cache.repo(repo.clone());
    let mut api_repo = None;
    let mut dir = None;
    let wanted: Vec<(&str, bool)> = REQUIRED
        .iter()
        .map(|f| (*f, true))
        .chain(OPTIONAL.iter().map(|f| (*f, false)))
        .collect();
    let total = wanted.len();
    for (k, (file, required)) in wanted.into_iter().enumerate() {
        let path = match cached.get(file) {
            Some(p) => Some(p),
            None if opts.offline => None,
            None => {
                if api_repo.is_none() {
                    let api = crate::model::hub::api(&cache).map_err(|e| {
                        anyhow::anyhow!("cannot reach the Hugging Face hub for {repo_id}: {e}")
                    })?;
                    api_repo = Some(api.repo(repo.clone()));
                }
                let r = api_repo.as_ref().expect("just set");
                match crate::model::hub::download(r, repo_id, file, opts, (k, total)) {
                    Ok(p) => Some(p),
                    Err(e) if required => {
                        let cause = e.to_string();
                        let short = cause.rsplit(": ").next().unwrap_or(&cause).trim();
                        bail!("cannot download {repo_id}@{revision}/{file} ({short})")
                    }
                    Err(_) => None,
                }
            }
        };
        match path {
            Some(p) if dir.is_none() => dir = p.parent().map(Path::to_path_buf),
            Some(_) => {}
            None if required => bail!(
                "{repo_id}@{revision}/{file} is not in the Hugging Face cache {} and the hub is offline (HF_HUB_OFFLINE)",
                cache_dir.display()
            ),
            None => {}
        }
    }
    dir.context("no CLIP files resolved")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            "openai/clip-vit-large-patch14"
                .parse::<ClipSource>()
                .unwrap(),
            ClipSource::Hub {
                repo: "openai/clip-vit-large-patch14".into(),
                revision: None
            }
        );
        assert_eq!(
            "a/b@refs/pr/1".parse::<ClipSource>().unwrap(),
            ClipSource::Hub {
                repo: "a/b".into(),
                revision: Some("refs/pr/1".into())
            }
        );
        assert!("nonsense".parse::<ClipSource>().is_err());
        assert!("./not/here".parse::<ClipSource>().is_err());
    }

    #[test]
    fn old_style_configs_with_nulls_and_dicts_parse() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"projection_dim": 512, "logit_scale_init_value": 2.6592,
                "text_config": {"hidden_size": 512, "layer_norm_eps": null, "bos_token_id": 0},
                "text_config_dict": null,
                "vision_config_dict": {"hidden_size": 768, "patch_size": 32, "hidden_act": null}}"#,
        )
        .unwrap();
        let c = ClipModelConfig::from_file(&p).unwrap();
        assert_eq!(c.image_size, 224);
        assert_eq!(c.projection_dim, 512);
        assert_eq!(c.max_position_embeddings, 77);
        std::fs::write(&p, r#"{"text_config": {"hidden_act": "gelu"}}"#).unwrap();
        let err = ClipModelConfig::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("quick_gelu"), "{err}");
    }

    #[test]
    fn alignment_conventions() {
        let a = ClipAlignment::from_cosine(0.31);
        assert!((a.clip_score - 31.0).abs() < 1e-12);
        assert!((a.half_cosine - 0.655).abs() < 1e-12);
        assert_eq!(ClipAlignment::from_cosine(-0.2).clip_score, 0.0);
    }

    #[test]
    fn resized_size_follows_transformers() {
        let p = ClipPreprocess::default();
        assert_eq!(p.resized_size(96, 80), (268, 224));
        assert_eq!(p.resized_size(33, 47), (224, 319));
        assert_eq!(p.resized_size(224, 500), (224, 500));
        assert_eq!(p.resized_size(512, 512), (224, 224));
    }

    #[test]
    fn resize_identity_and_constant() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 50, 9]));
        assert_eq!(pil_bicubic_resize(&img, 7, 5), img);
        let flat = RgbImage::from_pixel(9, 6, image::Rgb([77, 0, 255]));
        let up = pil_bicubic_resize(&flat, 31, 17);
        assert!(up.pixels().all(|p| p.0 == [77, 0, 255]));
        let down = pil_bicubic_resize(&flat, 4, 3);
        assert!(down.pixels().all(|p| p.0 == [77, 0, 255]));
    }
}
