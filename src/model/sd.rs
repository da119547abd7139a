//! A loaded Stable Diffusion pipeline (1.x, 2.x, SD-Turbo, SDXL): prompt encoding, the
//! noise predictor behind the sampler's [`Denoiser`] trait, and VAE decoding.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use candle_core::{DType, Device, Tensor};

use super::config::{UNetConfig, VaeConfig};
use super::error::ModelError;
use super::hub::HubOptions;
use super::motion::MotionModules;
use super::parts::Parts;
use super::source::{ModelFiles, ModelSource};
use super::text_encoder::ClipTextEncoder;
use super::tokenizer::{ClipTokenizer, Truncated};
use super::unet::{AddedCond, ModuleCache, UNet};
use super::unet3d::UNet3D;
use super::vae::VaeDecoder;
use crate::sampler::{CallPlan, Denoiser, RawPrediction, SchedulerConfig};

/// The best available device: CUDA, then Metal (when built with those features), else
/// the CPU. A GPU backend that is compiled in but cannot open a device (no GPU, no driver,
/// the driver stub of a CUDA build) falls back to the CPU, and the second value says why,
/// for the caller to show.
pub fn best_device_noted() -> (Device, Option<String>) {
    let mut why = vec![];
    if candle_core::utils::cuda_is_available() {
        match Device::new_cuda(0) {
            Ok(d) => return (d, None),
            Err(e) => why.push(format!(
                "CUDA device 0 could not be opened ({})",
                one_line(&e)
            )),
        }
    }
    if candle_core::utils::metal_is_available() {
        match Device::new_metal(0) {
            Ok(d) => return (d, None),
            Err(e) => why.push(format!(
                "Metal device 0 could not be opened ({})",
                one_line(&e)
            )),
        }
    }
    let note = (!why.is_empty()).then(|| format!("{}: running on the CPU", why.join("; ")));
    (Device::Cpu, note)
}

fn one_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// The CPU when `cpu`, else [`best_device_noted`]: the device and why a GPU build runs on
/// the CPU, if it does (for the caller to show).
pub fn device(cpu: bool) -> (Device, Option<String>) {
    if cpu {
        (Device::Cpu, None)
    } else {
        best_device_noted()
    }
}

/// The UNet dtype used on a device: f32 on the CPU, f16 on accelerators.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    }
}

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

/// How many values of `t` are NaN or ±∞ (counted on the host, in f32).
fn non_finite_count(t: &Tensor) -> Result<usize> {
    let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(super::checkpoint::count_non_finite_f32(&values))
}

/// Video latents `(b, c, f, h, w)` as the batch of their frames `(b·f, c, h, w)`, frame
/// order kept; image latents as they are.
fn frames_as_batch(latents: &Tensor) -> Result<Tensor> {
    if latents.rank() != 5 {
        return Ok(latents.clone());
    }
    Ok(super::clip_layout::to_frames(latents)?)
}

/// A UNet output over the batch `[uncond; cond]` (guided) or `[cond]` as the two halves.
fn split_guided(cond: &Conditioning, out: Tensor) -> Result<RawPrediction> {
    Ok(if cond.guided {
        RawPrediction {
            uncond: Some(out.narrow(0, 0, 1)?),
            cond: out.narrow(0, 1, 1)?,
        }
    } else {
        RawPrediction {
            uncond: None,
            cond: out,
        }
    })
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
        let vb = parts.unet.var_builder(dtype, device)?;
        let unet = match (&parts.video, &parts.motion) {
            (Some(v), _) => UNet3D::new(vb, v).map(Backbone::Video),
            (None, None) => UNet::new(vb, &parts.unet_config).map(Backbone::Image),
            (None, Some(m)) => {
                let unet = UNet::new(vb, &parts.unet_config)?;
                let mvb =
                    super::checkpoint::var_builder(std::slice::from_ref(&m.file), dtype, device)?;
                MotionModules::new(mvb, &m.config).map(|mm| Backbone::Motion(unet, Box::new(mm)))
            }
        }
        .with_context(|| format!("while loading {}", parts.unet.describe()))?;

        let (vae, vae_dtype) = match &parts.vae {
            Some(v) => {
                let vae_dtype = if v.config.force_upcast {
                    DType::F32
                } else {
                    dtype
                };
                let vb = v.weights.var_builder(vae_dtype, device)?;
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

    /// The share of a clip's initial noise its frames share, for a motion module trained
    /// that way ([`super::motion::MotionConfig::shared_noise`]); `None` otherwise.
    pub fn shared_noise(&self) -> Option<f64> {
        match &self.unet {
            Backbone::Motion(_, m) if m.config().shared_noise > 0.0 => {
                Some(m.config().shared_noise)
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
            context: context.to_dtype(self.dtype)?,
            pooled: pooled.map(|p| p.to_dtype(self.dtype)).transpose()?,
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

    /// Run the UNet once on `x` (batch 1, scaled model input).
    pub fn predict(&self, cond: &Conditioning, x: &Tensor, timestep: f64) -> Result<RawPrediction> {
        self.predict_cached(cond, x, timestep, &mut ModuleCache::default())
    }

    /// As [`StableDiffusion::predict`], the UNet's module outputs kept in (and, where its
    /// plan says, taken from) `cache`.
    pub fn predict_cached(
        &self,
        cond: &Conditioning,
        x: &Tensor,
        timestep: f64,
        cache: &mut ModuleCache,
    ) -> Result<RawPrediction> {
        if let Backbone::Video(unet) = &self.unet {
            return self.predict_video(unet, cond, x, timestep, cache);
        }
        if let Backbone::Motion(unet, modules) = &self.unet {
            return self.predict_motion(unet, modules, cond, x, timestep, cache);
        }
        let (b, _, h, w) = x.dims4()?;
        ensure!(
            b == 1,
            "the denoiser takes one latent at a time (got batch {b})"
        );
        let out_dtype = x.dtype();
        let batch = if cond.guided { 2 } else { 1 };
        ensure!(
            cond.context.dim(0)? == batch,
            "conditioning batch {} does not match guidance ({})",
            cond.context.dim(0)?,
            if cond.guided { "on: 2" } else { "off: 1" }
        );
        let x_in = if cond.guided {
            Tensor::cat(&[x, x], 0)?
        } else {
            x.clone()
        };
        let added = match &cond.pooled {
            None => None,
            Some(pooled) => {
                // diffusers' default: original size = target size = the image size, no crop.
                let (ih, iw) = ((h * self.vae_scale()) as f32, (w * self.vae_scale()) as f32);
                let ids = Tensor::new(&[ih, iw, 0.0, 0.0, ih, iw], &self.device)?
                    .unsqueeze(0)?
                    .repeat((batch, 1))?;
                Some(AddedCond {
                    text_embeds: pooled.clone(),
                    time_ids: ids,
                })
            }
        };
        let t = Tensor::full(timestep as f32, x_in.dim(0)?, x_in.device())?;
        let Backbone::Image(unet) = &self.unet else {
            unreachable!("video UNets return above");
        };
        let out = unet
            .forward_cached(&x_in, &t, &cond.context, added.as_ref(), cache)?
            .to_dtype(out_dtype)?;
        split_guided(cond, out)
    }

    /// One AnimateDiff call on a clip `(1, c, frames, h, w)`: both CFG halves' frames in one
    /// batch, each frame with its half's encoder states, as diffusers' `AnimateDiffPipeline`
    /// runs them.
    fn predict_motion(
        &self,
        unet: &UNet,
        modules: &MotionModules,
        cond: &Conditioning,
        x: &Tensor,
        timestep: f64,
        cache: &mut ModuleCache,
    ) -> Result<RawPrediction> {
        let (b, _, frames, _, _) = x.dims5()?;
        ensure!(
            b == 1,
            "the denoiser takes one clip at a time (got batch {b})"
        );
        // DeepCache and T-GATE run as on images: the motion modules sit inside the modules
        // DeepCache keeps, T-GATE's attention means are over each CFG half's frames.
        let x_in = if cond.guided {
            Tensor::cat(&[x, x], 0)?
        } else {
            x.clone()
        };
        use super::clip_layout::{per_frame, to_clip, to_frames};
        let n = x_in.dim(0)?;
        let t = Tensor::full(timestep as f32, n * frames, x.device())?;
        let out = unet.forward_motion(
            &to_frames(&x_in)?,
            &t,
            &per_frame(&cond.context, frames)?,
            super::motion::Temporal { modules, frames },
            cache,
        )?;
        let out = to_clip(&out, frames)?.to_dtype(x.dtype())?;
        split_guided(cond, out)
    }

    /// One video UNet call on a clip `(1, c, frames, h, w)`: both CFG halves in one batch,
    /// as diffusers' `TextToVideoSDPipeline` runs them.
    fn predict_video(
        &self,
        unet: &UNet3D,
        cond: &Conditioning,
        x: &Tensor,
        timestep: f64,
        cache: &mut ModuleCache,
    ) -> Result<RawPrediction> {
        let (b, ..) = x.dims5()?;
        ensure!(
            b == 1,
            "the denoiser takes one clip at a time (got batch {b})"
        );
        let x_in = if cond.guided {
            Tensor::cat(&[x, x], 0)?
        } else {
            x.clone()
        };
        let out = unet
            .forward_cached(&x_in, timestep, &cond.context, cache)?
            .to_dtype(x.dtype())?;
        split_guided(cond, out)
    }

    /// Decode latents: divide by the scaling factor and run the VAE decoder. Returns the
    /// raw decoder output (`(batch, 3, H, W)`, f32, about −1…1). In pixel space the
    /// latents are the image: returned as f32.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(self.decode_noted(latents)?.0)
    }

    /// [`Self::decode`], checked: an image with NaN or ∞ is an error naming the VAE, except
    /// that a VAE running below f32 whose decode overflowed decodes again in f32 (as
    /// diffusers' `force_upcast`), and the second value says so.
    pub fn decode_noted(&self, latents: &Tensor) -> Result<(Tensor, Option<String>)> {
        let Some((vae, config)) = &self.vae else {
            return Ok((frames_as_batch(latents)?.to_dtype(DType::F32)?, None));
        };
        let z = (frames_as_batch(latents)?.to_dtype(DType::F32)? / config.scaling_factor)?;
        // One frame at a time: a clip's decode in one batch would hold every frame's
        // full-resolution activations at once.
        let decode = |vae: &VaeDecoder, dtype: DType| -> Result<Tensor> {
            let frames = (0..z.dim(0)?)
                .map(|i| {
                    Ok(vae
                        .decode(&z.narrow(0, i, 1)?.to_dtype(dtype)?)?
                        .to_dtype(DType::F32)?)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&frames, 0)?)
        };
        let out = decode(vae, self.vae_dtype)?;
        let bad = non_finite_count(&out)?;
        if bad == 0 {
            return Ok((out, None));
        }
        if let Some(weights) = &self.vae_upcast {
            let vae32 = VaeDecoder::new(weights.var_builder(DType::F32, &self.device)?, config)?;
            let out = decode(&vae32, DType::F32)?;
            if non_finite_count(&out)? == 0 {
                let note = format!(
                    "the VAE decode overflowed in {:?} ({bad} values NaN or ∞); it was decoded again in f32, as diffusers' force_upcast does",
                    self.vae_dtype
                );
                return Ok((out, Some(note)));
            }
        }
        bail!(
            "the VAE decode produced {bad} of {} values that are not finite numbers (NaN or ∞) from finite latents: the VAE weights ({}) are broken",
            out.elem_count(),
            self.vae_origin
        )
    }

    /// diffusers' postprocess of the first image: `(x / 2 + 0.5).clamp(0, 1)`, ×255, rounded.
    pub fn to_rgb(&self, decoded: &Tensor) -> Result<image::RgbImage> {
        to_rgb(decoded)
    }

    /// Every image of a decoded batch (a clip's frames, in order), as [`Self::to_rgb`].
    pub fn to_frames(&self, decoded: &Tensor) -> Result<Vec<image::RgbImage>> {
        (0..decoded.dim(0)?)
            .map(|i| to_rgb(&decoded.narrow(0, i, 1)?))
            .collect()
    }
}

/// The noise predictor of one generation: a UNet bound to its conditioning.
pub struct SdDenoiser<'a> {
    sd: &'a StableDiffusion,
    cond: &'a Conditioning,
    /// DeepCache's module outputs and the plan of the next call.
    cache: ModuleCache,
}

impl SdDenoiser<'_> {
    /// Whether the next call is past T-GATE's gate.
    fn after_gate(&self) -> bool {
        matches!(self.cache.plan(), Some(CallPlan::TGate(t)) if t.after_gate)
    }
}

impl Denoiser for SdDenoiser<'_> {
    fn predict(&mut self, x: &Tensor, timestep: f64) -> Result<RawPrediction> {
        if self.after_gate() && self.cond.guided {
            // T-GATE past its gate: one batch on the negative prompt, no guidance.
            let negative = self.cond.negative_only()?;
            return self
                .sd
                .predict_cached(&negative, x, timestep, &mut self.cache);
        }
        self.sd
            .predict_cached(self.cond, x, timestep, &mut self.cache)
    }

    fn plan_call(&mut self, plan: Option<CallPlan>) -> Result<()> {
        self.cache.set_plan(plan);
        Ok(())
    }

    fn call_macs(&self, x: &Tensor) -> Option<u64> {
        if x.rank() == 5 {
            let (_, _, frames, h, w) = x.dims5().ok()?;
            let (batch, ctx_len, _) = self.cond.context.dims3().ok()?;
            let temporal = match &self.sd.unet {
                Backbone::Video(u) => super::macs::TemporalLayers::ModelScope {
                    transformer_in_head_dim: u.config().transformer_in_head_dim,
                },
                Backbone::Motion(_, m) => super::macs::TemporalLayers::Motion {
                    mid: m.config().mid_block,
                },
                Backbone::Image(_) => return None,
            };
            return Some(super::macs::video_call_macs(
                self.sd.unet.config(),
                temporal,
                batch,
                frames,
                h,
                w,
                ctx_len,
                self.cache.plan().as_ref(),
            ));
        }
        let (_, _, h, w) = x.dims4().ok()?;
        let (batch, ctx_len, _) = self.cond.context.dims3().ok()?;
        let batch = if self.after_gate() { 1 } else { batch };
        Some(super::macs::unet_call_macs_planned(
            self.sd.unet.config(),
            batch,
            h,
            w,
            ctx_len,
            self.cache.plan().as_ref(),
        ))
    }
}

/// `(1, latent_channels, height / f, width / f)`, with a clear error when the size is not a
/// multiple of the VAE factor `f`.
pub fn latent_shape(
    vae: &VaeConfig,
    width: usize,
    height: usize,
) -> Result<(usize, usize, usize, usize)> {
    let f = vae.downscale_factor();
    for (what, value) in [("width", width), ("height", height)] {
        if value == 0 || value % f != 0 {
            return Err(ModelError::BadImageSize {
                what,
                value,
                factor: f,
            }
            .into());
        }
    }
    Ok((1, vae.latent_channels(), height / f, width / f))
}

/// diffusers' `VaeImageProcessor.postprocess(output_type="pil")` for the first image of a
/// decoded batch.
pub fn to_rgb(decoded: &Tensor) -> Result<image::RgbImage> {
    let img = decoded.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let img = match img.rank() {
        4 => img.get(0)?,
        3 => img,
        r => bail!("expected a (batch, 3, H, W) or (3, H, W) image tensor, got rank {r}"),
    };
    let (c, h, w) = img.dims3()?;
    ensure!(c == 3, "expected 3 image channels, got {c}");
    let pixels = ((img / 2.0)? + 0.5)?
        .clamp(0f32, 1f32)?
        .affine(255.0, 0.0)?
        .round()?
        .permute((1, 2, 0))?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bytes: Vec<u8> = pixels.into_iter().map(|v| v as u8).collect();
    image::RgbImage::from_raw(w as u32, h as u32, bytes).context("image buffer size mismatch")
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
