//! Diffusers / transformers JSON configs, parsed and resolved into the shapes the model
//! code builds from.
//!
//! Defaults follow the Python classes (`UNet2DConditionModel`, `AutoencoderKL`,
//! `CLIPTextConfig`), so a config that omits a field means what it means to diffusers.
//! Anything this implementation cannot reproduce is rejected with
//! [`ModelError::Unsupported`] naming the field.
//!
//! * [`unet`] — `unet/config.json` ([`UNetJson`] → [`UNetConfig`]).
//! * [`vae`] — `vae/config.json` ([`VaeJson`] → [`VaeConfig`]).
//! * [`text_encoder`] — `text_encoder/config.json` ([`ClipJson`] → [`ClipConfig`]).
//! * Here: reading JSON, the checks they share, `model_index.json` ([`ModelIndex`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ModelError;

pub mod text_encoder;
pub mod unet;
pub mod vae;

#[cfg(test)]
mod tests;

pub use text_encoder::{ClipActivation, ClipConfig, ClipJson};
pub use unet::{SD15_UNET_CONFIG, TextTimeConfig, UNetBlock, UNetConfig, UNetJson};
pub use vae::{VaeConfig, VaeJson};

/// Read and parse a JSON config, naming the file on failure.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read config {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("could not parse config {}", path.display()))
}

fn unsupported(file: &Path, field: &str, reason: impl Into<String>) -> anyhow::Error {
    ModelError::Unsupported {
        file: file.to_path_buf(),
        field: field.to_string(),
        reason: reason.into(),
    }
    .into()
}

/// The number of blocks (`block_out_channels` entries); none is refused.
fn block_count(file: &Path, block_out_channels: &[usize]) -> Result<usize> {
    match block_out_channels.len() {
        0 => Err(unsupported(file, "block_out_channels", "is empty")),
        n => Ok(n),
    }
}

/// Refuse `value` of `field` unless it is `allowed`, the one value implemented.
fn require_value(file: &Path, field: &str, value: &str, allowed: &str) -> Result<()> {
    if value == allowed {
        Ok(())
    } else {
        Err(unsupported(
            file,
            field,
            format!("'{value}' (only '{allowed}' is implemented)"),
        ))
    }
}

/// Refuse `field` when it is `present`: only null is implemented.
fn require_null(file: &Path, field: &str, present: bool) -> Result<()> {
    if present {
        Err(unsupported(file, field, "is set; only null is implemented"))
    } else {
        Ok(())
    }
}

/// Refuse a switch `field` that is on: only false is implemented.
fn require_false(file: &Path, field: &str, on: bool) -> Result<()> {
    if on {
        Err(unsupported(file, field, "true is not implemented"))
    } else {
        Ok(())
    }
}

/// Refuse a block type list unless it is `n` times `kind`.
fn require_all(file: &Path, field: &str, types: &[String], n: usize, kind: &str) -> Result<()> {
    if types.len() != n || types.iter().any(|t| t != kind) {
        return Err(unsupported(
            file,
            field,
            format!("expected {n} × {kind}, found {types:?}"),
        ));
    }
    Ok(())
}

/// Whether an optional JSON value is there and not `null`.
fn is_set(value: Option<&Value>) -> bool {
    value.is_some_and(|v| !v.is_null())
}

/// `norm_num_groups`, which must be set and divide every entry of `block_out_channels`.
fn norm_groups(
    file: &Path,
    norm_num_groups: Option<usize>,
    block_out_channels: &[usize],
) -> Result<usize> {
    let groups = norm_num_groups
        .ok_or_else(|| unsupported(file, "norm_num_groups", "null is not implemented"))?;
    match block_out_channels
        .iter()
        .find(|&&c| !c.is_multiple_of(groups))
    {
        Some(c) => Err(unsupported(
            file,
            "norm_num_groups",
            format!("{groups} does not divide block_out_channels entry {c}"),
        )),
        None => Ok(groups),
    }
}

/// Whether `heads` attention heads split `width` evenly (no heads never do).
fn heads_divide(heads: usize, width: usize) -> bool {
    heads != 0 && width.is_multiple_of(heads)
}

/// A JSON field that is either one value for every block or one value per block.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// The same for every block.
    One(T),
    /// One entry per block.
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    fn resolve(&self, n: usize, file: &Path, field: &str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => Err(unsupported(
                file,
                field,
                format!("has {} entries but the model has {n} blocks", v.len()),
            )),
        }
    }
}

// Defaults more than one config shares.
fn d_in4() -> usize {
    4
}
fn d_true() -> bool {
    true
}
fn d_one_usize() -> usize {
    1
}
fn d_silu() -> String {
    "silu".into()
}
fn d_groups() -> Option<usize> {
    Some(32)
}
fn d_eps5() -> f64 {
    1e-5
}

/// `model_index.json`: the pipeline class and pipeline-level flags.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelIndex {
    /// e.g. `StableDiffusionPipeline`, `StableDiffusionXLPipeline`.
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// SDXL: an absent negative prompt becomes zero embeddings.
    #[serde(default)]
    pub force_zeros_for_empty_prompt: Option<bool>,
    /// SDXL refiner flag (not supported).
    #[serde(default)]
    pub requires_aesthetics_score: Option<bool>,
    /// The VAE entry (`["diffusers", "AutoencoderKL"]`); `null` or absent in a pixel-space
    /// pipeline without a VAE (the built-in shapes model).
    #[serde(default)]
    pub vae: Option<serde_json::Value>,
}

impl ModelIndex {
    /// Read `model_index.json` when present; an absent file means defaults.
    pub fn from_optional(path: Option<&PathBuf>) -> Result<Self> {
        match path {
            Some(p) => read_json(p),
            None => Ok(Self::default()),
        }
    }
}
