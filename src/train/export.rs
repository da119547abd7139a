//! The diffusers-style folder of a trained model (EMA or raw weights), from a trainer or
//! from a checkpoint file, and the packing of a checkpoint.

use super::*;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::shapes::vocab;

/// Write a diffusers-style folder from `unet.*` / `text_encoder.*` weights.
pub fn export_folder(
    out: &Path,
    arch: &Arch,
    weights: impl Iterator<Item = (String, Tensor)>,
) -> Result<()> {
    let mut unet = HashMap::new();
    let mut text = HashMap::new();
    for (name, t) in weights {
        if let Some(rest) = name.strip_prefix("unet.") {
            unet.insert(rest.to_string(), t);
        } else if let Some(rest) = name.strip_prefix("text_encoder.") {
            text.insert(rest.to_string(), t);
        } else {
            bail!("unexpected parameter {name}");
        }
    }
    for d in ["unet", "text_encoder", "tokenizer", "scheduler"] {
        std::fs::create_dir_all(out.join(d))?;
    }
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).map(String::into_bytes);
    write_map(&unet, &out.join("unet/diffusion_pytorch_model.safetensors"))?;
    crate::output::write_atomic(&out.join("unet/config.json"), &pretty(&arch.unet_json())?)?;
    write_map(&text, &out.join("text_encoder/model.safetensors"))?;
    crate::output::write_atomic(
        &out.join("text_encoder/config.json"),
        &pretty(&arch.text_json())?,
    )?;
    vocab::save_tokenizer(&out.join("tokenizer"))?;
    crate::output::write_atomic(
        &out.join("scheduler/scheduler_config.json"),
        &pretty(&scheduler_json())?,
    )?;
    let index = json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": null
    });
    crate::output::write_atomic(&out.join("model_index.json"), &pretty(&index)?)?;
    Ok(())
}

/// Save named tensors (as f32) to a safetensors file atomically.
pub(crate) fn write_map(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    crate::output::write_tensors(path, map.iter().map(|(k, t)| (k.as_str(), t)))
}

/// Copy the checkpoint folder `from` to `to` with the AdamW moments stored in bf16
/// (weights and EMA stay f32), about ¾ of the size, so it can be committed next to the
/// model. A run resumes from the copy (`adiff train shapes --out <copy of to>`); only the
/// moments lose precision.
pub fn pack_checkpoint(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to.join("tokenizer"))?;
    let map = candle_core::safetensors::load(from.join(CKPT), &Device::Cpu)
        .with_context(|| format!("cannot read {}", from.join(CKPT).display()))?;
    let packed = map
        .into_iter()
        .map(|(k, t)| {
            let t = if k.starts_with("adam_") {
                t.to_dtype(DType::BF16)?
            } else {
                t
            };
            Ok((k, t))
        })
        .collect::<Result<HashMap<_, _>>>()?;
    let bytes = safetensors::tensor::serialize(&packed, None)?;
    crate::output::write_atomic(&to.join(CKPT), &bytes)?;
    for f in [
        CKPT_META,
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
    ] {
        crate::output::write_atomic(&to.join(f), &std::fs::read(from.join(f))?)?;
    }
    Ok(())
}

/// Export the EMA (or raw) weights of the checkpoint in `from` as a model folder `to`.
pub fn export_from_checkpoint(from: &Path, to: &Path, ema: bool) -> Result<()> {
    let meta_path = from.join(CKPT_META);
    let meta: CheckpointMeta = serde_json::from_str(
        &std::fs::read_to_string(&meta_path)
            .with_context(|| format!("cannot read {}", meta_path.display()))?,
    )?;
    let map = candle_core::safetensors::load(from.join(CKPT), &Device::Cpu)?;
    let prefix = if ema { "ema/" } else { "param/" };
    let map: Vec<(String, Tensor)> = map
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    let weights = map
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix).map(|n| (n.to_string(), t)));
    export_folder(to, &meta.config.arch, weights)
}
