//! VAE weights in the original (LDM) layout — standalone VAE files such as
//! `vae-ft-mse-840000-ema-pruned.safetensors` and the `first_stage_model.*` part of a
//! single-file checkpoint — renamed to diffusers' `AutoencoderKL` names.
//!
//! The renaming only relabels a validated file's entries (the bytes are read where they
//! lie, nothing is copied); the mid-block attention's 1×1-convolution weights take the
//! linear layers' 2-D shape, which has the same bytes. The names follow CompVis'
//! `ldm/modules/diffusionmodules/model.py` (`Encoder`, `Decoder`); diffusers'
//! `single_file_utils.convert_ldm_vae_checkpoint` is the reference the tests hold it to
//! (`tools/reference/make_single_file_vae.py`).

use crate::model::checkpoint::CheckedFile;
use crate::model::error::ModelError;

/// diffusers' name of an original-layout VAE tensor (without any prefix); `up_blocks` is
/// the decoder's number of up blocks (the original numbers them from the bottom).
pub fn diffusers_name(ldm: &str, up_blocks: usize) -> String {
    let parts: Vec<&str> = ldm.split('.').collect();
    let (side, rest) = match parts.split_first() {
        Some((side @ (&"encoder" | &"decoder"), rest)) => (*side, rest),
        _ => return ldm.to_string(),
    };
    let index = |s: &str| s.parse::<usize>().ok();
    let mut out: Vec<String> = vec![side.to_string()];
    let tail: &[&str] = match rest {
        ["down", i, "block", j, tail @ ..] => {
            out.push(format!("down_blocks.{i}.resnets.{j}"));
            tail
        }
        ["down", i, "downsample", tail @ ..] => {
            out.push(format!("down_blocks.{i}.downsamplers.0"));
            tail
        }
        ["up", i, "block", j, tail @ ..] if index(i).is_some_and(|i| i < up_blocks) => {
            let i = up_blocks - 1 - index(i).unwrap_or(0);
            out.push(format!("up_blocks.{i}.resnets.{j}"));
            tail
        }
        ["up", i, "upsample", tail @ ..] if index(i).is_some_and(|i| i < up_blocks) => {
            let i = up_blocks - 1 - index(i).unwrap_or(0);
            out.push(format!("up_blocks.{i}.upsamplers.0"));
            tail
        }
        ["mid", block, tail @ ..] if block.starts_with("block_") => {
            match block["block_".len()..].parse::<usize>() {
                Ok(k) if k >= 1 => out.push(format!("mid_block.resnets.{}", k - 1)),
                _ => return ldm.to_string(),
            }
            tail
        }
        ["mid", "attn_1", layer, tail @ ..] => {
            let layer = match *layer {
                "norm" => "group_norm",
                "q" => "to_q",
                "k" => "to_k",
                "v" => "to_v",
                "proj_out" => "to_out.0",
                _ => return ldm.to_string(),
            };
            out.push(format!("mid_block.attentions.0.{layer}"));
            tail
        }
        ["norm_out", tail @ ..] => {
            out.push("conv_norm_out".into());
            tail
        }
        _ => rest,
    };
    out.extend(tail.iter().map(|t| match *t {
        "nin_shortcut" => "conv_shortcut".to_string(),
        t => t.to_string(),
    }));
    out.join(".")
}

/// The entries of `file` under `prefix` (`""` for a standalone VAE file,
/// `first_stage_model.` in a checkpoint), renamed to diffusers' names, as a file the model
/// code reads directly.
pub fn to_diffusers(file: &CheckedFile, prefix: &str) -> Result<CheckedFile, ModelError> {
    let up_blocks = file
        .tensors
        .keys()
        .filter_map(|k| {
            k.strip_prefix(prefix)?
                .strip_prefix("decoder.up.")?
                .split('.')
                .next()
        })
        .filter_map(|i| i.parse::<usize>().ok())
        .max()
        .map_or(0, |i| i + 1);
    file.relabel("VAE", |name, info| {
        let Some(ldm) = name.strip_prefix(prefix) else {
            return Ok(vec![]);
        };
        let new = diffusers_name(ldm, up_blocks);
        let mut info = info.clone();
        let is_attn_matrix = new.contains(".mid_block.attentions.0.to_")
            && new.ends_with(".weight")
            && info.shape.len() == 4
            && info.shape[2..] == [1, 1];
        if is_attn_matrix {
            info.shape.truncate(2);
        }
        Ok(vec![(new, info)])
    })
}

/// A VAE weights file as the model code reads it: a diffusers-layout file as it is, an
/// original-layout one (a standalone VAE file, or a whole checkpoint's
/// `first_stage_model.*`) renamed.
pub fn as_diffusers(file: &CheckedFile) -> Result<CheckedFile, ModelError> {
    let has = |prefix: &str| file.tensors.keys().any(|k| k.starts_with(prefix));
    let renamed = if has("first_stage_model.") {
        to_diffusers(file, "first_stage_model.")?
    } else if has("decoder.up.") || has("encoder.down.") || has("decoder.mid.") {
        to_diffusers(file, "")?
    } else {
        file.clone()
    };
    if !renamed.tensors.keys().any(|k| k.starts_with("decoder.")) {
        return Err(ModelError::NotVae {
            path: file.path.clone(),
            found: crate::model::single_file::top_prefixes(file),
        });
    }
    Ok(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::{check_safetensors, var_builder};
    use crate::model::config::VaeConfig;
    use crate::model::vae::VaeDecoder;
    use candle_core::{DType, Device};
    use std::path::PathBuf;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn a_file_without_a_decoder_is_named_not_a_vae() {
        let unet = check_safetensors(
            &repo().join("tests/fixtures/tiny-sd/unet/diffusion_pytorch_model.safetensors"),
        )
        .unwrap();
        let msg = as_diffusers(&unet).unwrap_err().to_string();
        assert!(msg.contains("holds no VAE"), "{msg}");
        assert!(msg.contains("its names start with conv_in.*"), "{msg}");
        // Both layouts of the VAE itself pass.
        let ldm =
            check_safetensors(&repo().join("tests/fixtures/single-file/tiny-vae-ldm.safetensors"))
                .unwrap();
        assert!(
            as_diffusers(&ldm)
                .unwrap()
                .tensors
                .contains_key("decoder.up_blocks.0.resnets.0.conv1.weight")
        );
    }

    #[test]
    fn names_follow_the_original_layout() {
        let cases = [
            (
                "encoder.down.0.block.1.nin_shortcut.weight",
                "encoder.down_blocks.0.resnets.1.conv_shortcut.weight",
            ),
            (
                "encoder.down.2.downsample.conv.bias",
                "encoder.down_blocks.2.downsamplers.0.conv.bias",
            ),
            (
                "decoder.up.3.block.2.norm1.weight",
                "decoder.up_blocks.0.resnets.2.norm1.weight",
            ),
            (
                "decoder.up.1.upsample.conv.weight",
                "decoder.up_blocks.2.upsamplers.0.conv.weight",
            ),
            (
                "decoder.mid.block_2.conv1.weight",
                "decoder.mid_block.resnets.1.conv1.weight",
            ),
            (
                "encoder.mid.attn_1.proj_out.bias",
                "encoder.mid_block.attentions.0.to_out.0.bias",
            ),
            (
                "decoder.mid.attn_1.norm.weight",
                "decoder.mid_block.attentions.0.group_norm.weight",
            ),
            ("decoder.norm_out.bias", "decoder.conv_norm_out.bias"),
            ("decoder.conv_in.weight", "decoder.conv_in.weight"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
        ];
        for (ldm, want) in cases {
            assert_eq!(diffusers_name(ldm, 4), want, "{ldm}");
        }
    }

    /// The fixture (written in the original layout and accepted by diffusers'
    /// `AutoencoderKL.from_single_file` as exactly the folder's VAE) renames to the
    /// folder's tensors, and decodes the reference latents as diffusers does.
    #[test]
    fn an_original_layout_vae_decodes_as_the_folder() {
        let ldm =
            check_safetensors(&repo().join("tests/fixtures/single-file/tiny-vae-ldm.safetensors"))
                .unwrap();
        assert!(
            ldm.tensors
                .contains_key("decoder.up.0.block.0.conv1.weight")
        );
        let renamed = to_diffusers(&ldm, "").unwrap();
        let vae_dir = repo().join("tests/fixtures/tiny-sd/vae");
        let folder =
            check_safetensors(&vae_dir.join("diffusion_pytorch_model.safetensors")).unwrap();
        let shapes = |f: &CheckedFile| -> Vec<(String, Vec<usize>)> {
            f.tensors
                .iter()
                .map(|(k, i)| (k.clone(), i.shape.clone()))
                .collect()
        };
        assert_eq!(shapes(&renamed), shapes(&folder));

        let cfg = VaeConfig::from_file(&vae_dir.join("config.json")).unwrap();
        let vae = VaeDecoder::new(
            var_builder(&[renamed], DType::F32, &Device::Cpu).unwrap(),
            &cfg,
        )
        .unwrap();
        let reference = candle_core::safetensors::load(
            repo().join("tests/fixtures/reference/vae.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let image = vae.decode(&reference["latents"]).unwrap();
        let diff = (&image - &reference["image"])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "max |Δ| {diff}");
    }
}
