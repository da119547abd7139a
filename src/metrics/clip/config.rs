//! A transformers CLIP `config.json` (old and new spellings, nulls dropped) read into
//! candle's text and vision configs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig};
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use serde::Deserialize;
use serde_json::Value;

pub(super) fn d_text_vocab() -> usize {
    49408
}
pub(super) fn d_text_hidden() -> usize {
    512
}
pub(super) fn d_text_inter() -> usize {
    2048
}
pub(super) fn d_twelve() -> usize {
    12
}
pub(super) fn d_eight() -> usize {
    8
}
pub(super) fn d_77() -> usize {
    77
}
pub(super) fn d_vis_hidden() -> usize {
    768
}
pub(super) fn d_vis_inter() -> usize {
    3072
}
pub(super) fn d_three() -> usize {
    3
}
pub(super) fn d_224() -> usize {
    224
}
pub(super) fn d_32() -> usize {
    32
}
pub(super) fn d_proj() -> usize {
    512
}
pub(super) fn d_act() -> String {
    "quick_gelu".into()
}
pub(super) fn d_eps() -> f64 {
    1e-5
}
pub(super) fn d_logit() -> f64 {
    2.6592
}

/// `text_config` of a transformers `CLIPConfig` (transformers' defaults when absent).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct TextJson {
    #[serde(default = "d_text_vocab")]
    pub(super) vocab_size: usize,
    #[serde(default = "d_text_hidden")]
    pub(super) hidden_size: usize,
    #[serde(default = "d_text_inter")]
    pub(super) intermediate_size: usize,
    #[serde(default = "d_twelve")]
    pub(super) num_hidden_layers: usize,
    #[serde(default = "d_eight")]
    pub(super) num_attention_heads: usize,
    #[serde(default = "d_77")]
    pub(super) max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub(super) hidden_act: String,
    #[serde(default = "d_eps")]
    pub(super) layer_norm_eps: f64,
}

/// `vision_config` of a transformers `CLIPConfig`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct VisionJson {
    #[serde(default = "d_vis_hidden")]
    pub(super) hidden_size: usize,
    #[serde(default = "d_vis_inter")]
    pub(super) intermediate_size: usize,
    #[serde(default = "d_twelve")]
    pub(super) num_hidden_layers: usize,
    #[serde(default = "d_twelve")]
    pub(super) num_attention_heads: usize,
    #[serde(default = "d_three")]
    pub(super) num_channels: usize,
    #[serde(default = "d_224")]
    pub(super) image_size: usize,
    #[serde(default = "d_32")]
    pub(super) patch_size: usize,
    #[serde(default = "d_act")]
    pub(super) hidden_act: String,
    #[serde(default = "d_eps")]
    pub(super) layer_norm_eps: f64,
}

/// A transformers `CLIPConfig` (`config.json` of a `CLIPModel`).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ClipJson {
    pub(super) text_config: Option<TextJson>,
    pub(super) vision_config: Option<VisionJson>,
    #[serde(default = "d_proj")]
    pub(super) projection_dim: usize,
    #[serde(default = "d_logit")]
    #[allow(dead_code)]
    pub(super) logit_scale_init_value: f64,
}

/// Remove `null` members of every object, so that serde's defaults apply to them.
pub(super) fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|_, x| !x.is_null());
            o.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The resolved sizes of a CLIP model.
#[derive(Debug, Clone)]
pub struct ClipModelConfig {
    pub(super) text: ClipTextConfig,
    pub(super) vision: ClipVisionConfig,
    /// Shared embedding size of the two projections.
    pub projection_dim: usize,
    /// Side of the square input image.
    pub image_size: usize,
    /// Text positions.
    pub max_position_embeddings: usize,
}

impl ClipModelConfig {
    /// Read and validate a transformers `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read CLIP config {}", path.display()))?;
        let mut raw: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        // old configs write unset fields as null and may carry `*_config_dict` instead
        drop_nulls(&mut raw);
        if let Some(o) = raw.as_object_mut() {
            for k in ["text_config", "vision_config"] {
                if !o.contains_key(k)
                    && let Some(d) = o.get(&format!("{k}_dict")).cloned()
                {
                    o.insert(k.to_string(), d);
                }
            }
        }
        let j: ClipJson = serde_json::from_value(raw)
            .with_context(|| format!("{} is not a transformers CLIPConfig", path.display()))?;
        let t = j.text_config.clone().unwrap_or_else(|| {
            serde_json::from_value(Value::Object(Default::default())).expect("defaults")
        });
        let v = j.vision_config.clone().unwrap_or_else(|| {
            serde_json::from_value(Value::Object(Default::default())).expect("defaults")
        });
        for (tower, act, eps) in [
            ("text", &t.hidden_act, t.layer_norm_eps),
            ("vision", &v.hidden_act, v.layer_norm_eps),
        ] {
            if act != "quick_gelu" {
                bail!(
                    "{}: the {tower} tower uses hidden_act '{act}'; candle's CLIP supports the OpenAI CLIP family (quick_gelu) only",
                    path.display()
                );
            }
            if (eps - 1e-5).abs() > 1e-12 {
                bail!(
                    "{}: the {tower} tower's layer_norm_eps is {eps}; candle's CLIP uses 1e-5",
                    path.display()
                );
            }
        }
        if t.num_attention_heads == 0 || !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            bail!(
                "{}: text num_attention_heads does not divide hidden_size",
                path.display()
            );
        }
        if v.num_attention_heads == 0
            || !v.hidden_size.is_multiple_of(v.num_attention_heads)
            || v.patch_size == 0
            || !v.image_size.is_multiple_of(v.patch_size)
        {
            bail!(
                "{}: vision heads/patch size do not divide hidden_size/image_size",
                path.display()
            );
        }
        Ok(Self {
            text: ClipTextConfig {
                vocab_size: t.vocab_size,
                embed_dim: t.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: t.intermediate_size,
                max_position_embeddings: t.max_position_embeddings,
                pad_with: None,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                projection_dim: j.projection_dim,
            },
            vision: ClipVisionConfig {
                embed_dim: v.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: v.intermediate_size,
                num_hidden_layers: v.num_hidden_layers,
                num_attention_heads: v.num_attention_heads,
                projection_dim: j.projection_dim,
                num_channels: v.num_channels,
                image_size: v.image_size,
                patch_size: v.patch_size,
            },
            projection_dim: j.projection_dim,
            image_size: v.image_size,
            max_position_embeddings: t.max_position_embeddings,
        })
    }
}
