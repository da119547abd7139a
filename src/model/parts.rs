//! What a pipeline is built from, however its weights are kept: a diffusers folder (configs
//! beside the weights) or one original-layout checkpoint (configs read off the tensors;
//! [`super::ldm_pipeline`]). A separate VAE and LoRAs ([`super::lora`]) change the parts
//! before anything is read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::checkpoint::{self, CheckedFile, Merges};
use super::config::{ClipConfig, ModelIndex, UNetConfig, VaeConfig};
use super::error::ModelError;
use super::source::ModelFiles;
use super::tokenizer::ClipTokenizer;
use crate::sampler::{PredictionType, SchedulerConfig};

/// A component's validated weights files, and the low-rank updates merged into them.
#[derive(Debug, Clone)]
pub struct Weights {
    /// The files, entries under the names the model code reads.
    pub files: Vec<CheckedFile>,
    /// LoRA updates by weight name.
    pub merges: Merges,
}

impl Weights {
    /// Weights with nothing merged.
    pub fn plain(files: Vec<CheckedFile>) -> Self {
        Self {
            files,
            merges: Merges::new(),
        }
    }

    /// A reader of the weights in `dtype` on `device`.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        checkpoint::var_builder_merged(&self.files, &self.merges, dtype, device)
    }

    /// A var builder for a network in `dtype` (mixed precision for bf16 on the CPU:
    /// [`checkpoint::network_var_builder`]).
    pub fn network_var_builder(
        &self,
        dtype: DType,
        device: &Device,
    ) -> Result<VarBuilder<'static>> {
        checkpoint::network_var_builder(&self.files, &self.merges, dtype, device)
    }

    /// The shape of an entry, if any file has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.files
            .iter()
            .rev()
            .find_map(|f| f.tensors.get(name))
            .map(|i| i.shape.as_slice())
    }

    /// Every entry name.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.files.iter().flat_map(|f| f.tensors.keys())
    }

    /// The files, for messages.
    pub fn describe(&self) -> String {
        self.files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A text encoder with its tokenizer.
pub struct TextPart {
    /// Its config.
    pub config: ClipConfig,
    /// Where the config came from (a config.json, or the checkpoint), for messages.
    pub config_file: PathBuf,
    /// Its weights.
    pub weights: Weights,
    /// Its tokenizer.
    pub tokenizer: ClipTokenizer,
}

/// The VAE.
#[derive(Debug, Clone)]
pub struct VaePart {
    /// Its config.
    pub config: VaeConfig,
    /// Its weights.
    pub weights: Weights,
}

/// A motion module folder's own text encoder and tokenizer (`text_encoder/`, `tokenizer/`
/// beside its weights: the built-in shapes module adds motion words to the image model's
/// vocabulary), if it has them.
fn motion_words(path: &Path) -> Result<Option<TextPart>> {
    let (te, tok) = (path.join("text_encoder"), path.join("tokenizer"));
    if !path.is_dir() || !te.join("config.json").is_file() {
        return Ok(None);
    }
    let config_file = te.join("config.json");
    let config = ClipConfig::from_file(&config_file)?;
    let weights = Weights::plain(checkpoint::check_all(&[te.join("model.safetensors")])?);
    let existing = |name: &str| {
        let p = tok.join(name);
        p.is_file().then_some(p)
    };
    let files = crate::model::tokenizer::TokenizerFiles {
        tokenizer_json: existing("tokenizer.json"),
        config: existing("tokenizer_config.json"),
        ..Default::default()
    };
    let mut tokenizer = ClipTokenizer::load(&files)?;
    tokenizer.clamp_max_len(config.max_position_embeddings);
    Ok(Some(TextPart {
        config,
        config_file,
        weights,
        tokenizer,
    }))
}

/// A motion module folder's own image UNet (`unet/` beside its weights: the built-in
/// shapes module's domain adapter, the image UNet trained on with the module), if it has
/// one: its config file and checked weights.
fn motion_unet(path: &Path) -> Result<Option<(PathBuf, UNetConfig, CheckedFile)>> {
    let dir = path.join("unet");
    let config_file = dir.join("config.json");
    if !path.is_dir() || !config_file.is_file() {
        return Ok(None);
    }
    let config = UNetConfig::from_file(&config_file)?;
    let mut files =
        checkpoint::check_all(&[dir.join("diffusion_pytorch_model.safetensors")])?.into_iter();
    let file = files
        .next()
        .with_context(|| format!("{} has no weights", dir.display()))?;
    Ok(Some((config_file, config, file)))
}

/// Everything a [`super::StableDiffusion`] is built from.
pub struct Parts {
    /// What was loaded (a folder, a repository, a file), for messages.
    pub origin: String,
    /// Named in errors about the UNet: its config.json, or the checkpoint.
    pub unet_file: PathBuf,
    /// The UNet's config (a video UNet's 2-D layers, for a video model).
    pub unet_config: UNetConfig,
    /// A video UNet's whole config (`UNet3DConditionModel`); `None` for an image model.
    pub video: Option<super::unet3d::UNet3DConfig>,
    /// AnimateDiff motion modules added to the UNet (`--motion`).
    pub motion: Option<super::motion::MotionPart>,
    /// The UNet's weights.
    pub unet: Weights,
    /// `None`: pixel space.
    pub vae: Option<VaePart>,
    /// One text encoder, or two (SDXL).
    pub text: Vec<TextPart>,
    /// The scheduler settings.
    pub schedule: SchedulerConfig,
    /// SDXL: zero embeddings for an empty negative prompt.
    pub force_zeros_for_empty_prompt: bool,
    /// What was found on the way (the checkpoint's family, each LoRA merged), one line
    /// each, for the front end to word and show.
    pub notes: Vec<crate::field::Note>,
}

impl Parts {
    /// A diffusers-format folder's (or hub repository's) parts; nothing is read but headers
    /// and configs.
    pub fn folder(files: &ModelFiles) -> Result<Self> {
        let index = ModelIndex::from_optional(files.model_index.as_ref())?;
        if index.requires_aesthetics_score == Some(true) {
            return Err(ModelError::Unsupported {
                file: files.model_index.clone().unwrap_or_default(),
                field: "requires_aesthetics_score".into(),
                reason: "SDXL refiner pipelines are not supported".into(),
            }
            .into());
        }
        let video = super::unet3d::is_video_config(&files.unet.config)
            .then(|| super::unet3d::UNet3DConfig::from_file(&files.unet.config))
            .transpose()?;
        let unet_config = match &video {
            Some(v) => v.base.clone(),
            None => UNetConfig::from_file(&files.unet.config)?,
        };
        let vae_config = files
            .vae
            .as_ref()
            .map(|v| VaeConfig::from_file(&v.config))
            .transpose()?;
        if vae_config.is_none() && (unet_config.in_channels != 3 || unet_config.out_channels != 3) {
            return Err(ModelError::MissingFile {
                what: "VAE config (a UNet without a VAE must have 3 in and out channels)".into(),
                path: files
                    .unet
                    .config
                    .parent()
                    .and_then(Path::parent)
                    .map_or_else(|| "vae/config.json".into(), |d| d.join("vae/config.json")),
            }
            .into());
        }
        // Every weights file is checked before any is read.
        let unet = Weights::plain(checkpoint::check_all(&files.unet.weights)?);
        let vae = match (vae_config, &files.vae) {
            (Some(config), Some(v)) => {
                let files = checkpoint::check_all(&v.weights)?
                    .iter()
                    .map(super::ldm_vae::as_diffusers)
                    .collect::<Result<Vec<_>, _>>()?;
                Some(VaePart {
                    config,
                    weights: Weights::plain(files),
                })
            }
            _ => None,
        };
        let mut text = vec![];
        for (te, tok_files) in files.text_encoders.iter().zip(&files.tokenizers) {
            let weights = Weights::plain(checkpoint::check_all(&te.weights)?);
            let config = ClipConfig::from_file(&te.config)?;
            let mut tokenizer = ClipTokenizer::load(tok_files)?;
            tokenizer.clamp_max_len(config.max_position_embeddings);
            text.push(TextPart {
                config,
                config_file: te.config.clone(),
                weights,
                tokenizer,
            });
        }
        let schedule = SchedulerConfig::from_file(&files.scheduler_config)?;
        let sdxl = files.is_sdxl();
        Ok(Self {
            origin: files.origin.clone(),
            unet_file: files.unet.config.clone(),
            unet_config,
            video,
            motion: None,
            unet,
            vae,
            text,
            schedule,
            force_zeros_for_empty_prompt: index.force_zeros_for_empty_prompt.unwrap_or(sdxl),
            notes: vec![],
        })
    }

    /// Take the VAE's weights from `file`: a standalone VAE in the original layout, a
    /// diffusers VAE file, or a whole single-file checkpoint's VAE. The model's VAE config
    /// still describes it; a VAE of another shape (other latent channels, other widths) is
    /// refused.
    pub fn replace_vae(&mut self, file: &Path) -> Result<()> {
        let Some(vae) = &mut self.vae else {
            return Err(ModelError::Unsupported {
                file: self.unet_file.clone(),
                field: "VAE".into(),
                reason: format!(
                    "{} works in pixel space and has no VAE to replace",
                    self.origin
                ),
            }
            .into());
        };
        let renamed = read_vae_file(file)?;
        let found = super::infer_config::vae(
            &renamed,
            super::infer_config::VaeFamily {
                scaling_factor: vae.config.scaling_factor,
                force_upcast: vae.config.force_upcast,
                // Only the shape is compared below; a VAE of other widths must reach that
                // comparison rather than fail on the model's GroupNorm groups.
                groups: 1,
            },
        )?;
        let (want, got) = (&vae.config.candle, &found.candle);
        let problem = if got.latent_channels != want.latent_channels {
            Some(format!(
                "it makes {}-channel latents but the model's UNet works on {}",
                got.latent_channels, want.latent_channels
            ))
        } else if got.block_out_channels != want.block_out_channels
            || got.layers_per_block != want.layers_per_block
        {
            Some(format!(
                "its blocks are {:?} wide with {} layers, the model's VAE {:?} with {}",
                got.block_out_channels,
                got.layers_per_block,
                want.block_out_channels,
                want.layers_per_block
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ModelError::WrongVae {
                path: file.to_path_buf(),
                problem,
            }
            .into());
        }
        vae.weights = Weights::plain(vec![renamed]);
        Ok(())
    }

    /// Add AnimateDiff motion modules (a file, a folder, or a published name fetched with
    /// `hub`): the model then makes video. The module must fit the UNet (an SD 1.x image
    /// UNet of its widths).
    pub fn add_motion(&mut self, path: &Path, hub: &super::HubOptions) -> Result<()> {
        let part = super::motion::resolve(path, hub)?;
        let fail = |why: String| -> anyhow::Error {
            anyhow::anyhow!("the motion module {} {why}", path.display())
        };
        if self.video.is_some() {
            return Err(fail(format!(
                "cannot be added to {}, which is a video model already",
                self.origin
            )));
        }
        if self.unet_config.text_time.is_some() {
            return Err(fail(format!(
                "does not fit {}, an SDXL model: AnimateDiff modules for SD 1.x fit SD 1.x checkpoints (SDXL needs an SDXL motion module, which adiff does not read yet)",
                self.origin
            )));
        }
        let widths: Vec<usize> = self
            .unet_config
            .down
            .iter()
            .map(|b| b.out_channels)
            .collect();
        let layers = self.unet_config.down.first().map_or(0, |b| b.layers);
        super::motion::check_fit(&part.config, &widths, layers).map_err(|e| fail(e.to_string()))?;
        self.notes.push(crate::field::Note::new(format!(
            "motion module {} ({} modules, {} heads, up to {} frames)",
            part.origin,
            part.file
                .tensors
                .keys()
                .filter(|k| k.ends_with(".proj_in.weight"))
                .count(),
            part.config.heads,
            part.config.max_seq_length
        )));
        if let Some(words) = motion_words(path).map_err(|e| fail(e.to_string()))? {
            let same =
                self.text.len() == 1 && self.text[0].config.hidden_size == words.config.hidden_size;
            if !same {
                return Err(fail(format!(
                    "brings its own text encoder ({} wide), which cannot replace {}'s",
                    words.config.hidden_size, self.origin
                )));
            }
            self.notes.push(crate::field::Note::new(format!(
                "the motion module's words: its text encoder ({} tokens) replaces the model's ({} tokens)",
                words.config.vocab_size, self.text[0].config.vocab_size
            )));
            self.text[0] = words;
        }
        if let Some((config_file, config, file)) =
            motion_unet(path).map_err(|e| fail(e.to_string()))?
        {
            if config != self.unet_config {
                return Err(fail(format!(
                    "brings its own image UNet ({}), shaped unlike {}'s: it was trained for another model",
                    config_file.display(),
                    self.origin
                )));
            }
            self.notes.push(crate::field::Note::new(format!(
                "the motion module's image UNet ({}, trained with the module) replaces the model's",
                config_file.display()
            )));
            self.unet.files = vec![file];
            self.unet_file = config_file;
        }
        self.motion = Some(part);
        Ok(())
    }

    /// Override what the UNet predicts (`--prediction`).
    pub fn set_prediction(&mut self, prediction: PredictionType) {
        self.schedule.prediction_type = prediction;
    }

    /// Whether this is a two-encoder (SDXL) pipeline.
    pub fn is_sdxl(&self) -> bool {
        self.text.len() == 2
    }
}

/// A VAE weights file, validated and renamed to diffusers' names; pickles are refused
/// unopened.
pub fn read_vae_file(file: &Path) -> Result<CheckedFile> {
    super::single_file::refuse_pickle(file, super::error::PickleKind::Vae)?;
    if let Some(problem) = crate::input_path::problem(file, crate::input_path::Want::File) {
        anyhow::bail!("the VAE weights file {} {problem}", file.display());
    }
    let checked = checkpoint::check_safetensors(file)?;
    Ok(super::ldm_vae::as_diffusers(&checked)?)
}
