//! Noise predictors and their weights: Stable Diffusion 1.x / 2.x / SD-Turbo / SDXL, and
//! the video families (ModelScope text-to-video, AnimateDiff motion modules on SD 1.x), on
//! candle, loaded from diffusers-format folders, the Hugging Face hub or single-file
//! (original-layout) checkpoints, with separate VAEs and LoRAs. Three rooms and the
//! pipeline assembly:
//!
//! * [`kernels`] — the fused CPU kernels and the layers built on them.
//! * [`weights`] — where weights come from and how they are read: [`source`] (a hub model
//!   or a local folder), [`hub`] (the hub cache, downloads and their progress), [`checkpoint`] (safetensors validation, reading tensors
//!   where they lie, the NaN/∞ check), single-file checkpoints ([`single_file`],
//!   [`ldm_pipeline`], [`ldm_unet`], [`ldm_vae`], [`ldm_text`], [`infer_config`]), LoRAs
//!   ([`lora`], [`lora_update`]).
//! * [`networks`] — [`unet`], [`unet3d`], [`motion`], [`vae`], [`text_encoder`],
//!   [`tokenizer`], [`macs`], [`clip_layout`].
//! * Assembly: [`config`] (diffusers / transformers JSON configs, validated), [`parts`]
//!   (what a pipeline is built from), [`sd`] ([`StableDiffusion`]: the family seam
//!   `Backbone`, prompt encoding, the [`SdDenoiser`] behind the sampler's `Denoiser`,
//!   decoding), [`error`].
//!
//! Each room's modules are re-exported here under their old paths (`model::checkpoint`).

pub mod config;
pub mod kernels;
pub mod networks;
pub mod weights;

// The rooms' modules under their old paths (`crate::model::checkpoint`, …).
pub(crate) use kernels::layers;
pub use kernels::{cpu_conv, cpu_kernels, profile};
pub use networks::{clip_layout, macs, motion, text_encoder, tokenizer, unet, unet3d, vae};
pub use weights::{
    checkpoint, hub, infer_config, ldm_pipeline, ldm_text, ldm_unet, ldm_vae, lora, lora_update,
    single_file, source,
};
pub mod error;
pub mod parts;
pub mod sd;

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
pub use hub::{DownloadEvent, Downloads, HubOptions};
pub use sd::{
    Conditioning, Family, PromptRole, SdDenoiser, StableDiffusion, TruncationReport,
    best_device_noted, default_dtype, device, latent_shape, to_rgb,
};
pub use source::{
    BUILTIN_SHAPES, ComponentFiles, HubModel, ModelFiles, ModelSource, builtin_shapes_dir,
};
pub use tokenizer::{ClipTokenizer, Tokens, Truncated};
