//! A loaded Stable Diffusion pipeline (1.x, 2.x, SD-Turbo, SDXL): prompt encoding, the
//! noise predictor behind the sampler's [`Denoiser`] trait, and VAE decoding.
//!
//! * [`device`] — the device and dtype a pipeline runs on.
//! * [`predict`] — the UNet call per family (image, video, motion) and [`SdDenoiser`].
//! * [`decode`] — the VAE decode (checked, redone in f32 when it overflows) and the RGB
//!   images.
//! * Here: loading (the parts checked to fit), the family seam `Backbone`, prompt encoding.

use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};

use super::config::{UNetConfig, VaeConfig};
use super::error::ModelError;
use super::hub::HubOptions;
use super::kernels::bf16::mixed_bf16;
use super::motion::MotionModules;
use super::parts::Parts;
use super::source::{ModelFiles, ModelSource};
use super::text_encoder::ClipTextEncoder;
use super::tokenizer::{ClipTokenizer, Truncated};
use super::unet::{ModuleCache, UNet};
use super::unet3d::UNet3D;
use super::vae::VaeDecoder;
use crate::sampler::SchedulerConfig;

pub mod decode;
pub mod device;
pub mod predict;

use decode::non_finite_count;
pub use decode::{latent_shape, to_rgb};
pub use device::{best_device_noted, default_dtype, device};
pub use predict::SdDenoiser;

/// Which prompt a truncation report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptRole {
    /// The prompt.
    Positive,
    /// The negative prompt.
    Negative,
}

/// A truncation report: which prompt, which tokenizer (0, or 1 for SDXL's second), what
/// was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncationReport {
    /// The prompt that was cut.
    pub role: PromptRole,
    /// Which tokenizer (0 or 1).
    pub tokenizer: usize,
    /// What was cut.
    pub truncated: Truncated,
}

/// Encoded prompts bound for the UNet.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// Encoder states in the UNet dtype: `(2, seq, dim)` uncond first when guided, else
    /// `(1, seq, dim)`.
    pub context: Tensor,
    /// SDXL: pooled text embeddings, batch as `context`.
    pub pooled: Option<Tensor>,
    /// Whether classifier-free guidance is on (both halves are evaluated).
    pub guided: bool,
    /// Prompts that were longer than the tokenizer allows.
    pub truncation: Vec<TruncationReport>,
}

impl Conditioning {
    /// The negative prompt's half of a guided conditioning, unguided (T-GATE past its gate).
    pub fn negative_only(&self) -> Result<Conditioning> {
        Ok(Conditioning {
            context: self.context.narrow(0, 0, 1)?,
            pooled: self
                .pooled
                .as_ref()
                .map(|p| p.narrow(0, 0, 1))
                .transpose()?,
            guided: false,
            truncation: vec![],
        })
    }
}

/// The SD family a loaded pipeline belongs to (informational).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// One text encoder (SD 1.x, 2.x, SD-Turbo and the like).
    Sd,
    /// Two text encoders and added conditioning.
    Sdxl,
}

/// The noise predictor of a pipeline: an image UNet, or a video UNet whose latents have a
/// frame axis (`(batch, channels, frames, h, w)`).
enum Backbone {
    Image(UNet),
    Video(UNet3D),
    /// An image UNet with AnimateDiff motion modules.
    Motion(UNet, Box<MotionModules>),
}

impl Backbone {
    /// The 2-D layers' configuration (a video UNet's without its temporal layers).
    fn config(&self) -> &UNetConfig {
        match self {
            Backbone::Image(u) | Backbone::Motion(u, _) => u.config(),
            Backbone::Video(u) => &u.config().base,
        }
    }
}

/// The frames of a video model's clip when the user does not say (ModelScope's and
/// AnimateDiff's published default).
pub const DEFAULT_FRAMES: usize = 16;

/// A loaded pipeline.
pub struct StableDiffusion {
    device: Device,
    dtype: DType,
    vae_dtype: DType,
    tokenizers: Vec<ClipTokenizer>,
    text_encoders: Vec<ClipTextEncoder>,
    unet: Backbone,
    /// `None`: pixel space (decode is the identity).
    vae: Option<(VaeDecoder, VaeConfig)>,
    /// The VAE's weights when it runs below f32: a decode that overflows there is done
    /// again in f32 from them, as diffusers' `force_upcast` does.
    vae_upcast: Option<super::parts::Weights>,
    /// What the VAE was loaded from, for messages.
    vae_origin: String,
    schedule: SchedulerConfig,
    force_zeros_for_empty_prompt: bool,
    origin: String,
    notes: Vec<crate::field::Note>,
}

impl std::fmt::Debug for StableDiffusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StableDiffusion")
            .field("origin", &self.origin)
            .field("device", &self.device)
            .field("dtype", &self.dtype)
            .field("family", &self.family())
            .finish_non_exhaustive()
    }
}

impl StableDiffusion {
    /// Resolve `source` (downloading when needed) and load it.
    pub fn from_source(
        source: &ModelSource,
        hub: &HubOptions,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let files = source.resolve(hub)?;
        Self::load(&files, device, dtype)
    }

    /// Load a diffusers-format folder.
    pub fn load_dir(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        Self::load(&ModelFiles::from_dir(dir)?, device, dtype)
    }

    /// Load resolved files. `dtype` is the UNet's; text encoders run in f32, and the VAE in
    /// f32 unless its config sets `force_upcast: false`.
    pub fn load(files: &ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        Self::from_parts(Parts::folder(files)?, device, dtype)
    }

    /// Load a single-file checkpoint (original layout) with its own VAE and the family's
    /// scheduler.
    pub fn load_single_file(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        Self::from_parts(super::ldm_pipeline::parts(path, None, None)?, device, dtype)
    }

    /// Build the pipeline from its parts, checking that they fit together first.
    pub fn from_parts(parts: Parts, device: &Device, dtype: DType) -> Result<Self> {
        check_fit(&parts)?;
        let mut tokenizers = vec![];
        let mut text_encoders = vec![];
        for part in parts.text {
            text_encoders.push(ClipTextEncoder::from_merged(
                &part.config,
                &part.weights.files,
                &part.weights.merges,
                DType::F32,
                device,
            )?);
            tokenizers.push(part.tokenizer);
        }
        // bf16 on the CPU is mixed precision (PyTorch's autocast recipe): the products run
        // on the bf16 kernels from bf16 weights, everything else stays f32.
        let vb = parts.unet.network_var_builder(dtype, device)?;
        let unet = match (&parts.video, &parts.motion) {
            (Some(v), _) => UNet3D::new(vb, v).map(Backbone::Video),
            (None, None) => UNet::new(vb, &parts.unet_config).map(Backbone::Image),
            (None, Some(m)) => {
                let unet = UNet::new(vb, &parts.unet_config)?;
                let mvb = super::checkpoint::network_var_builder(
                    std::slice::from_ref(&m.file),
                    &Default::default(),
                    dtype,
                    device,
                )?;
                MotionModules::new(mvb, &m.config).map(|mm| Backbone::Motion(unet, Box::new(mm)))
            }
        }
        .with_context(|| format!("while loading {}", parts.unet.describe()))?;

        let (vae, vae_dtype) = match &parts.vae {
            Some(v) => {
                let vae_dtype = if v.config.force_upcast || mixed_bf16(device, dtype) {
                    DType::F32
                } else {
                    dtype
                };
                // bf16 on the CPU: the decoder's products in bf16 too, activations in f32
                // (no overflow to guard against, so `force_upcast` has nothing to do).
                let vb = if mixed_bf16(device, dtype) {
                    v.weights.network_var_builder(dtype, device)?
                } else {
                    v.weights.var_builder(vae_dtype, device)?
                };
                let vae = VaeDecoder::new(vb, &v.config).with_context(|| {
                    format!(
                        "the VAE weights {} do not match the VAE config",
                        v.weights.describe()
                    )
                })?;
                (Some((vae, v.config.clone())), vae_dtype)
            }
            None => (None, DType::F32),
        };
        let vae_upcast = parts
            .vae
            .as_ref()
            .filter(|_| vae_dtype != DType::F32)
            .map(|v| v.weights.clone());
        let vae_origin = parts
            .vae
            .as_ref()
            .map_or_else(String::new, |v| v.weights.describe());
        Ok(Self {
            device: device.clone(),
            dtype,
            vae_dtype,
            tokenizers,
            text_encoders,
            unet,
            vae,
            vae_upcast,
            vae_origin,
            schedule: parts.schedule,
            force_zeros_for_empty_prompt: parts.force_zeros_for_empty_prompt,
            origin: parts.origin,
            notes: parts.notes,
        })
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The UNet dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The UNet's number format in words, with the CPU kernels bf16 runs on (for reports):
    /// `f32`, `bf16 (CPU, AMX kernels)`.
    pub fn precision(&self) -> String {
        if mixed_bf16(&self.device, self.dtype) {
            format!(
                "bf16 (CPU, {} kernels)",
                crate::model::kernels::bf16::current_path()
            )
        } else {
            self.dtype.as_str().to_string()
        }
    }

    /// What a user should know about the number format: which kernels bf16 runs on here
    /// (the portable one is correct but slower).
    pub fn precision_note(&self) -> Option<String> {
        mixed_bf16(&self.device, self.dtype).then(|| {
            let path = crate::model::kernels::bf16::current_path();
            let slow = if path == crate::model::kernels::bf16::Bf16Path::Portable {
                " (this CPU has no AVX512-bf16 or AMX: correct, but slower than f32)"
            } else {
                ""
            };
            format!(
                "bf16 on the CPU: bf16 weights for the UNet's and the VAE decoder's linear layers, convolutions and attention products on the {path} kernels, everything else in f32{slow}"
            )
        })
    }

    /// The dtype of the UNet's activations: f32 for bf16 on the CPU (mixed precision: only
    /// the weights of its products are bf16), else the UNet dtype.
    pub fn activation_dtype(&self) -> DType {
        if mixed_bf16(&self.device, self.dtype) {
            DType::F32
        } else {
            self.dtype
        }
    }

    /// The VAE dtype.
    pub fn vae_dtype(&self) -> DType {
        self.vae_dtype
    }

    /// SD or SDXL.
    pub fn family(&self) -> Family {
        if self.text_encoders.len() == 2 {
            Family::Sdxl
        } else {
            Family::Sd
        }
    }

    /// What was loaded (a folder, a repository, a file).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// What loading found, one line each (a checkpoint's family, the LoRAs merged), for
    /// the front end to word.
    pub fn notes(&self) -> &[crate::field::Note] {
        &self.notes
    }

    /// The scheduler settings (the folder's `scheduler_config.json`, or a checkpoint
    /// family's published one).
    pub fn schedule(&self) -> &SchedulerConfig {
        &self.schedule
    }

    /// The VAE's latent scaling factor (0.18215 for SD 1.x/2.x, 0.13025 for SDXL; 1 in
    /// pixel space).
    pub fn vae_scaling_factor(&self) -> f64 {
        self.vae.as_ref().map_or(1.0, |(_, c)| c.scaling_factor)
    }

    /// The image-to-latent factor (8; 1 in pixel space).
    pub fn vae_scale(&self) -> usize {
        self.vae.as_ref().map_or(1, |(_, c)| c.downscale_factor())
    }

    /// Whether the model works on pixels directly (no VAE).
    pub fn is_pixel_space(&self) -> bool {
        self.vae.is_none()
    }

    /// The UNet configuration (a video UNet's 2-D layers).
    pub fn unet_config(&self) -> &UNetConfig {
        self.unet.config()
    }

    /// Whether the model makes video: its latents have a frame axis.
    pub fn is_video(&self) -> bool {
        matches!(self.unet, Backbone::Video(_) | Backbone::Motion(..))
    }

    /// The share of a clip's initial noise its frames share and the pyramid discount of
    /// that shared part, for a motion module trained that way
    /// ([`super::motion::MotionConfig::shared_noise`], `noise_pyramid`); `None` otherwise.
    pub fn shared_noise(&self) -> Option<(f64, f64)> {
        match &self.unet {
            Backbone::Motion(_, m) if m.config().shared_noise > 0.0 => {
                Some((m.config().shared_noise, m.config().noise_pyramid))
            }
            _ => None,
        }
    }

    /// The motion module's recorded score for the first motion `prompt` names
    /// ([`super::motion::MotionConfig::evaluated`]) and the measurement's command and date;
    /// `None` for other models, unrecorded modules and prompts naming no recorded motion.
    pub fn motion_score(
        &self,
        prompt: &str,
    ) -> Option<(&super::motion::MotionScore, Option<&str>)> {
        match &self.unet {
            Backbone::Motion(_, m) => {
                let c = m.config();
                c.evaluated
                    .iter()
                    .find(|s| crate::sampler::noise_motion::names_phrase(prompt, &s.words))
                    .map(|s| (s, c.evaluated_by.as_deref()))
            }
            _ => None,
        }
    }

    /// The motion module's rule for moving a clip's shared noise that `prompt` names
    /// ([`super::motion::MotionConfig::noise_motion`]); `None` for other models and prompts.
    pub fn noise_motion(
        &self,
        prompt: &str,
    ) -> Option<&crate::sampler::noise_motion::NoiseMotionRule> {
        match &self.unet {
            Backbone::Motion(_, m) => {
                crate::sampler::noise_motion::rule_for(&m.config().noise_motion, prompt)
            }
            _ => None,
        }
    }

    /// The initial latents' shape: `(1, c, h, w)` for an image model, `(1, c, frames, h,
    /// w)` for a video model (`frames` defaults to [`DEFAULT_FRAMES`]); frames asked of an
    /// image model are an error.
    pub fn latent_dims(
        &self,
        width: usize,
        height: usize,
        frames: Option<usize>,
    ) -> Result<Vec<usize>> {
        let (b, c, h, w) = self.latent_shape(width, height)?;
        match (self.is_video(), frames) {
            (false, None) => Ok(vec![b, c, h, w]),
            (false, Some(_)) => bail!(
                "is given but {} makes images, not video: leave it out, or load a video model (a ModelScope text-to-video folder, or an SD 1.x model with a motion module)",
                self.origin
            ),
            (true, f) => {
                let f = f.unwrap_or(DEFAULT_FRAMES);
                if let Backbone::Motion(_, m) = &self.unet
                    && f > m.config().max_seq_length
                {
                    bail!(
                        "is {f}, beyond the motion module's position table of {} frames; give at most {}",
                        m.config().max_seq_length,
                        m.config().max_seq_length
                    );
                }
                Ok(vec![b, c, f, h, w])
            }
        }
    }

    /// The tokenizers (one, or two for SDXL).
    pub fn tokenizers(&self) -> &[ClipTokenizer] {
        &self.tokenizers
    }

    /// The image size the model was trained at: UNet `sample_size` × VAE factor, as
    /// (width, height); 512×512 when the config does not say.
    pub fn default_size(&self) -> (usize, usize) {
        match self.unet.config().sample_size {
            Some((h, w)) => (w * self.vae_scale(), h * self.vae_scale()),
            None => (512, 512),
        }
    }

    /// The latent shape `(1, channels, height / 8, width / 8)` for an image size.
    pub fn latent_shape(
        &self,
        width: usize,
        height: usize,
    ) -> Result<(usize, usize, usize, usize)> {
        match &self.vae {
            Some((_, c)) => latent_shape(c, width, height),
            None => {
                for (what, value) in [("width", width), ("height", height)] {
                    if value == 0 {
                        return Err(ModelError::BadImageSize {
                            what,
                            value,
                            factor: 1,
                        }
                        .into());
                    }
                }
                Ok((1, self.unet.config().in_channels, height, width))
            }
        }
    }

    /// Encode the prompt (and, with `guidance > 1`, the negative prompt) into UNet
    /// conditioning. `negative: None` means no negative prompt: the empty prompt for SD,
    /// zero embeddings for SDXL (`force_zeros_for_empty_prompt`, as diffusers).
    pub fn encode_prompt(
        &self,
        prompt: &str,
        negative: Option<&str>,
        guidance: f64,
    ) -> Result<Conditioning> {
        let guided = guidance > 1.0;
        let mut truncation = vec![];
        let (cond, cond_pooled) = self.encode_one(prompt, PromptRole::Positive, &mut truncation)?;
        let (context, pooled) = if guided {
            let (uncond, uncond_pooled) = match negative {
                None if self.family() == Family::Sdxl && self.force_zeros_for_empty_prompt => (
                    cond.zeros_like()?,
                    cond_pooled.as_ref().map(|p| p.zeros_like()).transpose()?,
                ),
                _ => self.encode_one(
                    negative.unwrap_or(""),
                    PromptRole::Negative,
                    &mut truncation,
                )?,
            };
            let context = Tensor::cat(&[uncond, cond], 0)?;
            let pooled = match (uncond_pooled, cond_pooled) {
                (Some(u), Some(c)) => Some(Tensor::cat(&[u, c], 0)?),
                _ => None,
            };
            (context, pooled)
        } else {
            (cond, cond_pooled)
        };
        let bad = non_finite_count(&context)?;
        if bad > 0 {
            bail!(
                "the text encoder produced {bad} of {} values that are not finite numbers (NaN or ∞) for this prompt: its weights are broken",
                context.elem_count()
            );
        }
        Ok(Conditioning {
            context: context.to_dtype(self.activation_dtype())?,
            pooled: pooled
                .map(|p| p.to_dtype(self.activation_dtype()))
                .transpose()?,
            guided,
            truncation,
        })
    }

    /// One prompt through every text encoder: `(1, seq, dim)` states and SDXL's pooled
    /// `(1, 1280)` embeddings.
    fn encode_one(
        &self,
        text: &str,
        role: PromptRole,
        truncation: &mut Vec<TruncationReport>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let sdxl = self.family() == Family::Sdxl;
        let mut states = vec![];
        let mut pooled = None;
        for (i, (tok, enc)) in self.tokenizers.iter().zip(&self.text_encoders).enumerate() {
            let tokens = tok.encode(text)?;
            if let Some(t) = tokens.truncated.clone() {
                truncation.push(TruncationReport {
                    role,
                    tokenizer: i,
                    truncated: t,
                });
            }
            let n = tokens.ids.len();
            let ids = Tensor::from_vec(tokens.ids, (1, n), &self.device)?;
            let out = enc.forward(&ids, &[tokens.eos_position])?;
            if sdxl {
                states.push(out.penultimate);
                if out.text_embeds.is_some() {
                    pooled = out.text_embeds;
                }
            } else {
                states.push(out.last_hidden_state);
            }
        }
        let states = if states.len() == 1 {
            states.pop().expect("one")
        } else {
            Tensor::cat(&states, candle_core::D::Minus1)?
        };
        if sdxl && pooled.is_none() {
            bail!("SDXL's second text encoder produced no pooled embeddings");
        }
        Ok((states, pooled))
    }

    /// Words of `text` that the (first) tokenizer's vocabulary does not know; non-empty only
    /// for word-level vocabularies such as the built-in shapes model's.
    pub fn unknown_words(&self, text: &str) -> Result<Vec<String>> {
        match self.tokenizers.first() {
            Some(tok) => tok.unknown_words(text),
            None => Ok(vec![]),
        }
    }

    /// The noise predictor for one image, bound to its conditioning.
    pub fn denoiser<'a>(&'a self, cond: &'a Conditioning) -> SdDenoiser<'a> {
        SdDenoiser {
            sd: self,
            cond,
            cache: ModuleCache::default(),
        }
    }
}

/// The parts must fit together: the VAE's latents the UNet's input, SDXL's two encoders with
/// a `text_time` UNet, the encoders' width the UNet's cross-attention width, the pooled width
/// its added conditioning. (A pipeline without a VAE only comes from a folder, and
/// [`Parts::folder`] checks its UNet works on RGB.)
fn check_fit(parts: &Parts) -> Result<()> {
    let unsupported = |field: &str, reason: String| -> anyhow::Error {
        ModelError::Unsupported {
            file: parts.unet_file.clone(),
            field: field.into(),
            reason,
        }
        .into()
    };
    let config = &parts.unet_config;
    if let Some(vae) = &parts.vae
        && vae.config.latent_channels() != config.in_channels
    {
        return Err(ModelError::WrongVae {
            path: vae
                .weights
                .files
                .first()
                .map(|f| f.path.clone())
                .unwrap_or_default(),
            problem: format!(
                "it makes {}-channel latents but the UNet takes {}",
                vae.config.latent_channels(),
                config.in_channels
            ),
        }
        .into());
    }
    let sdxl = parts.is_sdxl();
    if sdxl != config.text_time.is_some() {
        return Err(unsupported(
            "addition_embed_type",
            if sdxl {
                "the pipeline has two text encoders but the UNet has no \"text_time\" conditioning"
                    .into()
            } else {
                "the UNet wants SDXL \"text_time\" conditioning but the pipeline has no text_encoder_2".into()
            },
        ));
    }
    let context_width: usize = if sdxl {
        parts.text.iter().map(|t| t.config.hidden_size).sum()
    } else {
        parts.text[0].config.hidden_size
    };
    if context_width != config.context_dim() {
        return Err(unsupported(
            "cross_attention_dim",
            format!(
                "{} but the text encoder{} produce{} {context_width}-wide states",
                config.context_dim(),
                if sdxl { "s" } else { "" },
                if sdxl { "" } else { "s" },
            ),
        ));
    }
    if sdxl {
        let pooled =
            parts.text[1]
                .config
                .projection_dim
                .ok_or_else(|| ModelError::Unsupported {
                    file: parts.text[1].config_file.clone(),
                    field: "architectures".into(),
                    reason: "SDXL's second text encoder must be CLIPTextModelWithProjection".into(),
                })?;
        let tt = config.text_time.as_ref().expect("checked above");
        if pooled + 6 * tt.time_embed_dim != tt.input_dim {
            return Err(unsupported(
                "projection_class_embeddings_input_dim",
                format!(
                    "{} ≠ pooled width {pooled} + 6 time ids × {}",
                    tt.input_dim, tt.time_embed_dim
                ),
            ));
        }
    }
    Ok(())
}
