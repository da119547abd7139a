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
//!
//! * [`config`] — the transformers `config.json`, read into candle's CLIP configs.
//! * [`preprocess`] — `CLIPImageProcessor`'s steps, Pillow's bicubic resize included.
//! * Here: the scorer, its sources (a folder, the hub) and the alignment conventions.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::ClipTextTransformer;
use candle_transformers::models::clip::vision_model::ClipVisionTransformer;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::model::{ClipTokenizer, HubOptions};

pub mod config;
pub mod preprocess;

pub use config::ClipModelConfig;
pub use preprocess::{ClipPreprocess, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, pil_bicubic_resize};

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
