//! The CLIP text encoder (transformers `CLIPTextModel` / `CLIPTextModelWithProjection`).
//!
//! Written here rather than taken from candle because candle's public CLIP configs cannot
//! be built for arbitrary sizes with the exact-erf `gelu` that SD 2.x and SDXL use, nor read
//! the layer-norm epsilon from the config. The weights are the transformers ones, with or
//! without the `text_model.` prefix.

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::model::checkpoint::{self, CheckedFile};
use crate::model::config::{ClipActivation, ClipConfig};
use crate::model::layers::Kernels;

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
    kernels: Kernels,
}

impl Attention {
    fn new(vb: VarBuilder, c: &ClipConfig, kernels: Kernels) -> candle_core::Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            q: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k: candle_nn::linear(d, d, vb.pp("k_proj"))?,
            v: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            heads: c.num_attention_heads,
            scale: ((d / c.num_attention_heads) as f64).powf(-0.5),
            kernels,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let hd = d / self.heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * self.heads, n, hd))
        };
        let q = split((self.q.forward(x)? * self.scale)?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = crate::model::unet::softmax_last(&scores, self.kernels)?;
        let o = probs
            .matmul(&v)?
            .reshape((b, self.heads, n, hd))?
            .transpose(1, 2)?
            .reshape((b, n, d))?;
        self.out.forward(&o)
    }
}

pub(crate) struct EncoderLayer {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: ClipActivation,
    kernels: Kernels,
}

impl EncoderLayer {
    pub(crate) fn new(
        vb: VarBuilder,
        c: &ClipConfig,
        kernels: Kernels,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            ln1: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("layer_norm1"))?,
            attn: Attention::new(vb.pp("self_attn"), c, kernels)?,
            ln2: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: candle_nn::linear(c.hidden_size, c.intermediate_size, vb.pp("mlp").pp("fc1"))?,
            fc2: candle_nn::linear(c.intermediate_size, c.hidden_size, vb.pp("mlp").pp("fc2"))?,
            act: c.activation,
            kernels,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let ln = |n: &LayerNorm, t: &Tensor| crate::model::unet::layer_norm(n, t, self.kernels);
        let h = (x + self.attn.forward(&ln(&self.ln1, x)?, mask)?)?;
        let m = self.fc1.forward(&ln(&self.ln2, &h)?)?;
        let m = match self.act {
            ClipActivation::QuickGelu => (&m * candle_nn::ops::sigmoid(&(&m * 1.702)?)?)?,
            ClipActivation::Gelu => m.gelu_erf()?,
            ClipActivation::GeluTanh => m.gelu()?,
        };
        h + self.fc2.forward(&m)?
    }
}

/// What one forward pass yields.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// `last_hidden_state`: the final layer norm applied to the last layer (SD 1.x/2.x).
    pub last_hidden_state: Tensor,
    /// `hidden_states[-2]`: the output of the second-to-last layer, no final norm (SDXL).
    pub penultimate: Tensor,
    /// `text_embeds`: the projected pooled output (EOS position), for
    /// `CLIPTextModelWithProjection`.
    pub text_embeds: Option<Tensor>,
}

/// A CLIP text transformer.
pub struct ClipTextEncoder {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_norm: LayerNorm,
    projection: Option<Linear>,
    config: ClipConfig,
    device: Device,
    dtype: DType,
    kernels: Kernels,
}

impl std::fmt::Debug for ClipTextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTextEncoder")
            .field("config", &self.config)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

impl ClipTextEncoder {
    /// Build from a `VarBuilder` rooted where `embeddings.`, `encoder.` and
    /// `final_layer_norm.` live; `projection` (for `text_projection`) is rooted at the file.
    pub fn new(
        vb: VarBuilder,
        projection_vb: VarBuilder,
        config: &ClipConfig,
    ) -> candle_core::Result<Self> {
        Self::build(vb, projection_vb, config, Kernels::Fused)
    }

    /// As [`ClipTextEncoder::new`], for training: only ops with a backward pass on the
    /// forward path (composed softmax and layer norm; same results).
    pub fn new_trainable(
        vb: VarBuilder,
        projection_vb: VarBuilder,
        config: &ClipConfig,
    ) -> candle_core::Result<Self> {
        Self::build(vb, projection_vb, config, Kernels::Autograd)
    }

    fn build(
        vb: VarBuilder,
        projection_vb: VarBuilder,
        config: &ClipConfig,
        kernels: Kernels,
    ) -> candle_core::Result<Self> {
        let c = config;
        let emb = vb.pp("embeddings");
        let token_embedding =
            candle_nn::embedding(c.vocab_size, c.hidden_size, emb.pp("token_embedding"))?;
        let position_embedding = candle_nn::embedding(
            c.max_position_embeddings,
            c.hidden_size,
            emb.pp("position_embedding"),
        )?;
        let lv = vb.pp("encoder").pp("layers");
        let layers = (0..c.num_hidden_layers)
            .map(|i| EncoderLayer::new(lv.pp(i), c, kernels))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let final_norm =
            candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("final_layer_norm"))?;
        let projection = match c.projection_dim {
            Some(p) => Some(candle_nn::linear_no_bias(
                c.hidden_size,
                p,
                projection_vb.pp("text_projection"),
            )?),
            None => None,
        };
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_norm,
            projection,
            config: c.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
            kernels,
        })
    }

    /// Load from a transformers checkpoint, detecting whether its keys carry the
    /// `text_model.` prefix.
    pub fn load(
        config: &ClipConfig,
        weights: &[std::path::PathBuf],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let checked = checkpoint::check_all(weights)?;
        Self::from_checked(config, &checked, dtype, device)
    }

    /// Load from already validated files.
    pub fn from_checked(
        config: &ClipConfig,
        checked: &[CheckedFile],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::from_merged(config, checked, &checkpoint::Merges::new(), dtype, device)
    }

    /// Load from validated files with low-rank updates (LoRAs) merged into the weights.
    pub fn from_merged(
        config: &ClipConfig,
        checked: &[CheckedFile],
        merges: &checkpoint::Merges,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let names = || checked.iter().flat_map(|f| f.tensors.keys());
        let prefixed = names().any(|k| k.starts_with("text_model."));
        let bare = names().any(|k| k.starts_with("embeddings.") || k.starts_with("encoder."));
        if !prefixed && !bare {
            bail!(
                "{} does not look like a CLIP text encoder (no 'text_model.embeddings.*' or 'embeddings.*' tensors)",
                describe(checked)
            );
        }
        let root = checkpoint::var_builder_merged(checked, merges, dtype, device)?;
        let vb = if prefixed {
            root.pp("text_model")
        } else {
            root.clone()
        };
        Self::new(vb, root, config)
            .with_context(|| format!("could not load the text encoder from {}", describe(checked)))
    }

    /// The configuration.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Encode `ids` (`(batch, seq)`, u32). `eos_positions[i]` is where batch item `i`'s EOS
    /// sits (read for the pooled output).
    pub fn forward(&self, ids: &Tensor, eos_positions: &[usize]) -> Result<ClipOutput> {
        let (b, n) = ids.dims2()?;
        if n > self.config.max_position_embeddings {
            bail!(
                "{n} tokens exceed the text encoder's {} positions",
                self.config.max_position_embeddings
            );
        }
        if eos_positions.len() != b {
            bail!("{} EOS positions for a batch of {b}", eos_positions.len());
        }
        let positions = Tensor::arange(0u32, n as u32, &self.device)?;
        let x = self
            .token_embedding
            .forward(ids)?
            .broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = causal_mask(n, self.dtype, &self.device)?;
        let mut x = x;
        let mut penultimate = x.clone();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            if i == last {
                penultimate = x.clone();
            }
            x = layer.forward(&x, &mask)?;
        }
        let last_hidden_state = crate::model::unet::layer_norm(&self.final_norm, &x, self.kernels)?;
        let text_embeds = match &self.projection {
            None => None,
            Some(p) => {
                let pooled = eos_positions
                    .iter()
                    .enumerate()
                    .map(|(i, &pos)| last_hidden_state.i((i, pos)))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let pooled = Tensor::stack(&pooled, 0)?;
                Some(p.forward(&pooled)?)
            }
        };
        Ok(ClipOutput {
            last_hidden_state,
            penultimate,
            text_embeds,
        })
    }
}

/// `(seq, seq)` additive mask: 0 on and below the diagonal, the dtype's minimum above.
fn causal_mask(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::MIN } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (n, n), device)?;
    // f32::MIN overflows to -inf in f16; clamp to the finite minimum of the target dtype.
    let mask = match dtype {
        DType::F16 => mask.clamp(-65504f32, 0f32)?,
        _ => mask,
    };
    Ok(mask.to_dtype(dtype)?.unsqueeze(0)?)
}

fn describe(files: &[CheckedFile]) -> String {
    files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Index of the first `eos` in `ids`, or the last index when there is none.
pub fn eos_position(ids: &[u32], eos: u32) -> usize {
    ids.iter()
        .position(|&t| t == eos)
        .unwrap_or(ids.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_shape_and_values() {
        let m = causal_mask(3, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.dims(), &[1, 3, 3]);
        let v = m.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(v[0][0], 0.0);
        assert_eq!(v[0][1], f32::MIN);
        assert_eq!(v[2][1], 0.0);
    }

    #[test]
    fn eos_position_finds_first() {
        assert_eq!(eos_position(&[5, 1, 9, 9, 9], 9), 2);
        assert_eq!(eos_position(&[5, 1], 9), 1);
    }
}
