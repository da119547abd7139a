//! Noise predictors and their weights: Stable Diffusion 1.x / 2.x / SD-Turbo / SDXL on
//! candle, loaded from diffusers-format folders, the Hugging Face hub or single-file
//! (original-layout) checkpoints, with separate VAEs and LoRAs.
//!
//! * [`source`] — `--model NAME` / `--weights DIR` resolution to a [`ModelFiles`] (hub
//!   downloads go to the standard Hugging Face cache).
//! * [`config`] — diffusers / transformers JSON configs, validated.
//! * [`checkpoint`] — safetensors validation, and reading tensors where they lie.
//! * [`parts`] — what a pipeline is built from, from a folder or from a checkpoint
//!   ([`ldm_pipeline`]: [`single_file`] detection, the [`ldm_unet`] / [`ldm_vae`] /
//!   [`ldm_text`] renamings, [`infer_config`]).
//! * [`lora`], [`lora_update`] — LoRA / LyCORIS files merged as the weights are read.
//! * [`tokenizer`], [`text_encoder`], [`unet`] — the model parts.
//! * [`sd`] — [`StableDiffusion`]: prompt encoding, the [`SdDenoiser`] behind the sampler's
//!   `Denoiser` trait, VAE decoding and image conversion.

pub mod checkpoint;
pub mod clip_layout;
pub mod config;
pub mod cpu_conv;
pub mod cpu_kernels;
pub mod error;
pub mod infer_config;
pub(crate) mod layers;
pub mod ldm_pipeline;
pub mod ldm_text;
pub mod ldm_unet;
pub mod ldm_vae;
pub mod lora;
pub mod lora_update;
pub mod macs;
pub mod motion;
pub mod parts;
pub mod profile;
pub mod sd;
pub mod single_file;
pub mod source;
pub mod text_encoder;
pub mod tokenizer;
pub mod unet;
pub mod unet3d;
pub mod vae;

#[cfg(test)]
mod reference_tests;

/// `tests/fixtures/single-file/NAME`: the tiny original-layout files the single-file
/// modules' unit tests read.
#[cfg(test)]
pub(crate) fn single_file_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/single-file")
        .join(name)
}

pub use error::ModelError;
pub use sd::{
    Conditioning, Family, PromptRole, SdDenoiser, StableDiffusion, TruncationReport,
    best_device_noted, default_dtype, device, latent_shape, to_rgb,
};
pub use source::{
    BUILTIN_SHAPES, ComponentFiles, HubModel, HubOptions, ModelFiles, ModelSource,
    builtin_shapes_dir,
};
pub use tokenizer::{ClipTokenizer, Tokens, Truncated};
