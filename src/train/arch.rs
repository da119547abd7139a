//! The shapes model's architecture ([`Arch`]: the standard and tiny sizes, or one given)
//! and the diffusers configs it is exported with.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::model::config::{ClipConfig, ClipJson, UNetConfig, UNetJson};
use crate::shapes::{self, vocab};

/// Architecture of the shapes model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arch {
    /// UNet block widths (32×32, 16×16, 8×8, …).
    pub block_out_channels: Vec<usize>,
    /// How many of the lowest-resolution blocks have (self + cross) attention; the mid
    /// block always has. (Self-attention at 16×16 costs most of a training step on a CPU.)
    pub attention_blocks: usize,
    /// Resnets per block.
    pub layers_per_block: usize,
    /// Attention heads in the UNet.
    pub unet_heads: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Text encoder width (= the UNet's cross-attention width).
    pub text_hidden: usize,
    /// Text encoder layers.
    pub text_layers: usize,
    /// Text encoder heads.
    pub text_heads: usize,
}

impl Arch {
    /// The default model, sized for about 2 s per 50-step guided DDIM image on 2 CPU cores
    /// (on candle 0.11's CPU backend the time is mostly per-operation overhead, so narrower
    /// blocks save less than their FLOPs suggest: `adiff train measure --arch 32,64,64`
    /// measured ≈ 2.6–3.5 s, `16,32,64` ≈ 2.0–2.2 s on the same machine).
    pub fn standard() -> Self {
        Self {
            block_out_channels: vec![16, 32, 64],
            attention_blocks: 1,
            layers_per_block: 1,
            unet_heads: 4,
            norm_num_groups: 8,
            text_hidden: 64,
            text_layers: 2,
            text_heads: 4,
        }
    }

    /// A tiny model for tests.
    pub fn tiny() -> Self {
        Self {
            block_out_channels: vec![16, 32],
            attention_blocks: 1,
            layers_per_block: 1,
            unet_heads: 2,
            norm_num_groups: 8,
            text_hidden: 32,
            text_layers: 1,
            text_heads: 2,
        }
    }

    /// Parse a preset name: `standard`, `tiny`, or `C1,C2,C3[/TEXT][@ATTN]` (channels, text
    /// width, number of lowest-resolution blocks with attention).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "standard" => return Ok(Self::standard()),
            "tiny" => return Ok(Self::tiny()),
            _ => {}
        }
        let (s2, attn) = s.split_once('@').unwrap_or((s, ""));
        let (ch, text) = s2.split_once('/').unwrap_or((s2, ""));
        let block_out_channels = ch
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| {
                format!("'{s}' is not an architecture: expected standard, tiny or C1,C2,C3[/TEXT][@ATTN]")
            })?;
        let mut a = Self::standard();
        a.block_out_channels = block_out_channels;
        if !text.is_empty() {
            a.text_hidden = text
                .parse()
                .with_context(|| format!("'{text}' in '{s}' is not a text width"))?;
        }
        if !attn.is_empty() {
            a.attention_blocks = attn
                .parse()
                .with_context(|| format!("'{attn}' in '{s}' is not a count of attention blocks"))?;
        }
        Ok(a)
    }

    /// `unet/config.json` (diffusers `UNet2DConditionModel`).
    pub fn unet_json(&self) -> serde_json::Value {
        let n = self.block_out_channels.len();
        let k = self.attention_blocks.min(n);
        let down: Vec<&str> = (0..n)
            .map(|i| {
                if i + k >= n {
                    "CrossAttnDownBlock2D"
                } else {
                    "DownBlock2D"
                }
            })
            .collect();
        let up: Vec<&str> = (0..n)
            .map(|i| {
                if i < k {
                    "CrossAttnUpBlock2D"
                } else {
                    "UpBlock2D"
                }
            })
            .collect();
        json!({
            "_class_name": "UNet2DConditionModel",
            "_diffusers_version": "0.30.0",
            "act_fn": "silu",
            "attention_head_dim": self.unet_heads,
            "block_out_channels": self.block_out_channels,
            "center_input_sample": false,
            "cross_attention_dim": self.text_hidden,
            "down_block_types": down,
            "downsample_padding": 1,
            "flip_sin_to_cos": true,
            "freq_shift": 0,
            "in_channels": 3,
            "layers_per_block": self.layers_per_block,
            "mid_block_scale_factor": 1,
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "norm_eps": 1e-5,
            "norm_num_groups": self.norm_num_groups,
            "out_channels": 3,
            "sample_size": shapes::SIZE,
            "up_block_types": up,
            "use_linear_projection": true,
            "upcast_attention": false
        })
    }

    /// `text_encoder/config.json` (transformers `CLIPTextModel`).
    pub fn text_json(&self) -> serde_json::Value {
        json!({
            "architectures": ["CLIPTextModel"],
            "model_type": "clip_text_model",
            "vocab_size": vocab::vocab_size(),
            "hidden_size": self.text_hidden,
            "intermediate_size": self.text_hidden * 4,
            "num_hidden_layers": self.text_layers,
            "num_attention_heads": self.text_heads,
            "max_position_embeddings": vocab::MAX_LEN,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
            "projection_dim": self.text_hidden,
            "torch_dtype": "float32"
        })
    }

    /// The parsed configs.
    pub fn configs(&self) -> Result<(UNetConfig, ClipConfig)> {
        let u: UNetJson = serde_json::from_value(self.unet_json())?;
        let c: ClipJson = serde_json::from_value(self.text_json())?;
        Ok((
            UNetConfig::from_json(&u, Path::new("unet/config.json"))?,
            ClipConfig::from_json(&c, Path::new("text_encoder/config.json"))?,
        ))
    }
}

/// SD's `scheduler/scheduler_config.json` (scaled-linear betas, 1000 steps, ε).
pub fn scheduler_json() -> serde_json::Value {
    json!({
        "_class_name": "DDIMScheduler",
        "_diffusers_version": "0.30.0",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "set_alpha_to_one": false,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "trained_betas": null
    })
}
