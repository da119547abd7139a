//! Configs read off the tensors themselves, for weights that come without `config.json`
//! (single-file checkpoints, standalone VAE files).
//!
//! Each function looks at diffusers-named entries (after the `ldm_*` renaming) and writes
//! the config diffusers would, as JSON, then resolves it with the same code a
//! `config.json` goes through, so everything a folder's config is checked for is checked
//! here too. What shapes cannot tell comes from the family: SD 1.x's UNet has 8 heads in
//! every block, SD 2.x and SDXL 64-wide heads (at least one); CLIP text encoders 64-wide
//! heads; the latent scaling factor and the native size.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::{Value, json};

use crate::model::checkpoint::CheckedFile;
use crate::model::config::{ClipConfig, ClipJson, UNetConfig, UNetJson, VaeConfig, VaeJson};
use crate::model::error::ModelError;

/// The shape of `name`, if the file has it.
fn shape<'a>(file: &'a CheckedFile, name: &str) -> Option<&'a [usize]> {
    file.tensors.get(name).map(|i| i.shape.as_slice())
}

/// The shape of `name`, or an error naming what is missing.
fn need<'a>(file: &'a CheckedFile, name: &str, what: &str) -> Result<&'a [usize], ModelError> {
    shape(file, name).ok_or_else(|| ModelError::Incomplete {
        path: file.path.clone(),
        name: name.to_string(),
        what: format!("the {what}"),
    })
}

/// The distinct indices `i` of entries named `{prefix}{i}.…`.
fn indices(file: &CheckedFile, prefix: &str) -> BTreeSet<usize> {
    file.tensors
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse().ok())
        .collect()
}

/// How many consecutive `{prefix}0.`, `{prefix}1.`, … the file has.
fn count(file: &CheckedFile, prefix: &str) -> usize {
    let found = indices(file, prefix);
    (0..).take_while(|i| found.contains(i)).count()
}

fn has_prefix(file: &CheckedFile, prefix: &str) -> bool {
    file.tensors.keys().any(|k| k.starts_with(prefix))
}

/// How a UNet's attention heads are set (shapes do not tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heads {
    /// The same number of heads in every block (SD 1.x: 8).
    Fixed(usize),
    /// Heads of this width, at least one per block (SD 2.x, SDXL: 64).
    Width(usize),
}

/// What the family decides for a UNet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UNetFamily {
    /// Attention heads.
    pub heads: Heads,
    /// Latent side the model was trained at.
    pub sample_size: usize,
    /// Attention in f32 (SD 2.x).
    pub upcast_attention: bool,
    /// The pooled text width feeding SDXL's added conditioning.
    pub pooled: Option<usize>,
}

/// The UNet config of diffusers-named UNet entries.
pub fn unet(file: &CheckedFile, family: UNetFamily) -> Result<UNetConfig> {
    let what = "UNet";
    let conv_in = need(file, "conv_in.weight", what)?;
    let conv_out = need(file, "conv_out.weight", what)?;
    let blocks = count(file, "down_blocks.");
    let layers = count(file, "down_blocks.0.resnets.");
    let mut channels = vec![];
    let mut down_types = vec![];
    let mut depth = vec![];
    let mut heads = vec![];
    for i in 0..blocks {
        let c = need(
            file,
            &format!("down_blocks.{i}.resnets.0.conv1.weight"),
            what,
        )?[0];
        channels.push(c);
        let attn = format!("down_blocks.{i}.attentions.0.transformer_blocks.");
        let cross = has_prefix(file, &attn);
        down_types.push(if cross {
            "CrossAttnDownBlock2D"
        } else {
            "DownBlock2D"
        });
        depth.push(count(file, &attn).max(1));
        heads.push(match family.heads {
            Heads::Fixed(n) => n,
            Heads::Width(w) => (c / w).max(1),
        });
    }
    let up_types: Vec<&str> = (0..blocks)
        .map(|i| {
            if has_prefix(file, &format!("up_blocks.{i}.attentions.")) {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
        })
        .collect();
    let up_depth: Vec<usize> = (0..blocks)
        .map(|i| {
            count(
                file,
                &format!("up_blocks.{i}.attentions.0.transformer_blocks."),
            )
            .max(1)
        })
        .collect();
    let context = file
        .tensors
        .iter()
        .find(|(k, _)| k.ends_with(".attn2.to_k.weight"))
        .map(|(_, i)| i.shape[1]);
    let linear = file
        .tensors
        .iter()
        .find(|(k, _)| k.ends_with(".proj_in.weight"))
        .is_some_and(|(_, i)| i.shape.len() == 2);
    let time_embed = need(file, "time_embedding.linear_1.weight", what)?[0];
    let mut j = json!({
        "in_channels": conv_in[1],
        "out_channels": conv_out[0],
        "sample_size": family.sample_size,
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": down_types,
        "up_block_types": up_types,
        "transformer_layers_per_block": depth,
        "attention_head_dim": heads,
        "cross_attention_dim": context.unwrap_or(768),
        "use_linear_projection": linear,
        "upcast_attention": family.upcast_attention,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "time_embedding_dim": time_embed,
    });
    let reversed: Vec<usize> = depth.iter().rev().copied().collect();
    if up_depth != reversed {
        j["reverse_transformer_layers_per_block"] = json!(up_depth);
    }
    if let Some(add) = shape(file, "add_embedding.linear_1.weight") {
        let pooled = family.pooled.unwrap_or(0);
        let input = add[1];
        if input <= pooled || !(input - pooled).is_multiple_of(6) {
            return Err(ModelError::CorruptWeights {
                path: file.path.clone(),
                reason: format!(
                    "the UNet's added conditioning takes {input} values, not the pooled text width {pooled} plus 6 time ids"
                ),
            }
            .into());
        }
        j["addition_embed_type"] = json!("text_time");
        j["addition_time_embed_dim"] = json!((input - pooled) / 6);
        j["projection_class_embeddings_input_dim"] = json!(input);
    }
    let parsed: UNetJson = from_value(j, file)?;
    UNetConfig::from_json(&parsed, &file.path)
}

/// What the family (or the model a VAE replaces) decides for a VAE.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VaeFamily {
    /// The latent scaling factor (0.18215 SD 1.x / 2.x, 0.13025 SDXL).
    pub scaling_factor: f64,
    /// Run in f32 in a half-precision pipeline.
    pub force_upcast: bool,
    /// Group-norm groups (32 in every SD VAE).
    pub groups: usize,
}

/// The VAE config of diffusers-named VAE entries.
pub fn vae(file: &CheckedFile, family: VaeFamily) -> Result<VaeConfig> {
    let what = "VAE";
    let blocks = count(file, "decoder.up_blocks.");
    let conv_in = need(file, "decoder.conv_in.weight", what)?;
    let conv_out = need(file, "decoder.conv_out.weight", what)?;
    // The decoder's blocks run widest first: block i of the encoder is up block n−1−i.
    let mut channels = vec![];
    for i in (0..blocks).rev() {
        channels.push(
            need(
                file,
                &format!("decoder.up_blocks.{i}.resnets.0.conv2.weight"),
                what,
            )?[0],
        );
    }
    let layers = count(file, "decoder.up_blocks.0.resnets.").saturating_sub(1);
    let j = json!({
        "in_channels": shape(file, "encoder.conv_in.weight").map_or(conv_out[0], |s| s[1]),
        "out_channels": conv_out[0],
        "latent_channels": conv_in[1],
        "block_out_channels": channels,
        "down_block_types": vec!["DownEncoderBlock2D"; blocks],
        "up_block_types": vec!["UpDecoderBlock2D"; blocks],
        "layers_per_block": layers,
        "scaling_factor": family.scaling_factor,
        "force_upcast": family.force_upcast,
        "norm_num_groups": family.groups,
        "use_quant_conv": shape(file, "quant_conv.weight").is_some(),
        "use_post_quant_conv": shape(file, "post_quant_conv.weight").is_some(),
        "mid_block_add_attention": has_prefix(file, "decoder.mid_block.attentions."),
    });
    let parsed: VaeJson = from_value(j, file)?;
    VaeConfig::from_json(&parsed, &file.path)
}

/// What the family decides for a text encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextFamily {
    /// `quick_gelu` (OpenAI CLIP) or `gelu` (OpenCLIP).
    pub activation: &'static str,
    /// Layers the family leaves unused at the end (SD 2.x runs the penultimate: 1).
    pub drop_last: usize,
    /// Read `text_projection.weight` (SDXL's second encoder: pooled embeddings).
    pub projection: bool,
}

/// The CLIP config of diffusers-named text-encoder entries (`text_model.` prefix or not).
pub fn clip(file: &CheckedFile, family: TextFamily) -> Result<ClipConfig> {
    let what = "text encoder";
    let pre = if has_prefix(file, "text_model.") {
        "text_model."
    } else {
        ""
    };
    let tokens = need(
        file,
        &format!("{pre}embeddings.token_embedding.weight"),
        what,
    )?;
    let positions = need(
        file,
        &format!("{pre}embeddings.position_embedding.weight"),
        what,
    )?;
    let fc1 = need(file, &format!("{pre}encoder.layers.0.mlp.fc1.weight"), what)?;
    let layers = count(file, &format!("{pre}encoder.layers."));
    if layers <= family.drop_last {
        return Err(ModelError::CorruptWeights {
            path: file.path.clone(),
            reason: format!("the text encoder has {layers} layers"),
        }
        .into());
    }
    let hidden = tokens[1];
    let mut j = json!({
        "vocab_size": tokens[0],
        "hidden_size": hidden,
        "intermediate_size": fc1[0],
        "num_hidden_layers": layers - family.drop_last,
        "num_attention_heads": (hidden / 64).max(1),
        "max_position_embeddings": positions[0],
        "hidden_act": family.activation,
    });
    if family.projection {
        let p = need(file, "text_projection.weight", what)?;
        j["projection_dim"] = json!(p[0]);
        j["architectures"] = json!(["CLIPTextModelWithProjection"]);
    }
    let parsed: ClipJson = from_value(j, file)?;
    ClipConfig::from_json(&parsed, &file.path)
}

fn from_value<T: serde::de::DeserializeOwned>(j: Value, file: &CheckedFile) -> Result<T> {
    serde_json::from_value(j).map_err(|e| {
        ModelError::CorruptWeights {
            path: file.path.clone(),
            reason: format!("the config read off its tensors does not parse ({e})"),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::check_safetensors;
    use std::path::PathBuf;

    fn fixture(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel)
    }

    fn folder_unet() -> UNetConfig {
        UNetConfig::from_file(&fixture("tiny-sd/unet/config.json")).unwrap()
    }

    #[test]
    fn the_tiny_folders_configs_are_read_back_from_its_tensors() {
        let unet = check_safetensors(&fixture("tiny-sd/unet/diffusion_pytorch_model.safetensors"))
            .unwrap();
        let want = folder_unet();
        let heads = want.down[0].heads;
        let got = super::unet(
            &unet,
            UNetFamily {
                heads: Heads::Fixed(heads),
                sample_size: want.sample_size.unwrap().0,
                upcast_attention: want.upcast_attention,
                pooled: None,
            },
        )
        .unwrap();
        assert_eq!(format!("{got:?}"), format!("{want:?}"));

        let vae =
            check_safetensors(&fixture("tiny-sd/vae/diffusion_pytorch_model.safetensors")).unwrap();
        let want = VaeConfig::from_file(&fixture("tiny-sd/vae/config.json")).unwrap();
        let family = VaeFamily {
            scaling_factor: want.scaling_factor,
            force_upcast: want.force_upcast,
            groups: want.candle.norm_num_groups,
        };
        let got = super::vae(&vae, family).unwrap();
        assert_eq!(format!("{got:?}"), format!("{want:?}"));

        let te = check_safetensors(&fixture("tiny-sd/text_encoder/model.safetensors")).unwrap();
        let mut want = ClipConfig::from_file(&fixture("tiny-sd/text_encoder/config.json")).unwrap();
        let got = clip(
            &te,
            TextFamily {
                activation: "quick_gelu",
                drop_last: 0,
                projection: false,
            },
        )
        .unwrap();
        // Heads are not in the shapes: the tiny folder's are its own choice.
        want.num_attention_heads = got.num_attention_heads;
        assert_eq!(got, want);
    }

    #[test]
    fn a_missing_tensor_is_named() {
        let mut unet =
            check_safetensors(&fixture("tiny-sd/unet/diffusion_pytorch_model.safetensors"))
                .unwrap();
        unet.tensors.remove("conv_out.weight");
        let family = UNetFamily {
            heads: Heads::Fixed(8),
            sample_size: 64,
            upcast_attention: false,
            pooled: None,
        };
        let msg = format!("{:#}", super::unet(&unet, family).unwrap_err());
        assert!(msg.contains("has no conv_out.weight"), "{msg}");
    }
}
