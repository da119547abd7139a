//! `text_encoder/config.json` (transformers `CLIPTextConfig`), checked and resolved into
//! [`ClipConfig`].

use super::*;

fn d_vocab() -> usize {
    49408
}
fn d_hidden() -> usize {
    512
}
fn d_inter() -> usize {
    2048
}
fn d_layers12() -> usize {
    12
}
fn d_heads8() -> usize {
    8
}
fn d_pos() -> usize {
    77
}
fn d_quick_gelu() -> String {
    "quick_gelu".into()
}
fn d_eos() -> u32 {
    49407
}

/// `text_encoder/config.json` (transformers `CLIPTextConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipJson {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default)]
    pub projection_dim: Option<usize>,
    #[serde(default = "d_layers12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads8")]
    pub num_attention_heads: usize,
    #[serde(default = "d_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "d_eps5")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_eos")]
    pub eos_token_id: u32,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
}

/// Activation of the CLIP MLP (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `quick_gelu`: `x · σ(1.702 x)` (OpenAI CLIP, SD 1.x).
    QuickGelu,
    /// `gelu`: the exact erf form (OpenCLIP, SD 2.x, SDXL encoder 2).
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
}

/// The resolved CLIP text-encoder configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Sequence length of the position table.
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub activation: ClipActivation,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
    /// `Some(dim)` for `CLIPTextModelWithProjection` (SDXL's second encoder).
    pub projection_dim: Option<usize>,
}

impl ClipConfig {
    /// Parse and resolve `text_encoder/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let json: ClipJson = read_json(path)?;
        Self::from_json(&json, path)
    }

    /// Resolve a parsed config; `file` is named in errors.
    pub fn from_json(j: &ClipJson, file: &Path) -> Result<Self> {
        let activation = match j.hidden_act.as_str() {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => ClipActivation::GeluTanh,
            other => {
                return Err(unsupported(
                    file,
                    "hidden_act",
                    format!(
                        "'{other}' (implemented: quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)"
                    ),
                ));
            }
        };
        if !heads_divide(j.num_attention_heads, j.hidden_size) {
            return Err(unsupported(
                file,
                "num_attention_heads",
                "does not divide hidden_size",
            ));
        }
        let with_projection = j
            .architectures
            .as_ref()
            .is_some_and(|a| a.iter().any(|s| s == "CLIPTextModelWithProjection"));
        Ok(Self {
            vocab_size: j.vocab_size,
            hidden_size: j.hidden_size,
            intermediate_size: j.intermediate_size,
            num_hidden_layers: j.num_hidden_layers,
            num_attention_heads: j.num_attention_heads,
            max_position_embeddings: j.max_position_embeddings,
            activation,
            layer_norm_eps: j.layer_norm_eps,
            projection_dim: if with_projection {
                Some(j.projection_dim.unwrap_or(j.hidden_size))
            } else {
                None
            },
        })
    }
}
