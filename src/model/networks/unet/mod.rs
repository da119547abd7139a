//! The conditional UNet (diffusers `UNet2DConditionModel`), assembled from candle-nn layers
//! and candle-transformers' `ResnetBlock2D` / `TimestepEmbedding`.
//!
//! candle-transformers' own `UNet2DConditionModel` is not used because (as of 0.11.1) it
//! applies the tanh approximation of GELU inside the GEGLU feed-forward where diffusers uses
//! the exact erf form, computes the sinusoidal time embedding in the model dtype, and has no
//! SDXL added conditioning (`addition_embed_type: "text_time"`). This module follows
//! diffusers' structure and weight names one to one, including SDXL's `add_embedding`.
//!
//! * [`blocks`] — the resnets, samplers and the down, mid and up blocks.
//! * [`attention`] — attention, the transformer blocks and `Transformer2D`.
//! * [`module_cache`] — [`ModuleCache`]: what partial calls (DeepCache, T-GATE) keep.
//! * Here: the time embedding, SDXL's added conditioning and the [`UNet`] itself.

use crate::model::layers::TimestepEmbedding;
use crate::model::layers::{Conv, Kernels, Norm, conv3x3};
use crate::model::motion::Temporal;
use crate::sampler::UNetPart;
use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Tensor};
use candle_nn::VarBuilder;

use crate::model::config::UNetConfig;

type CResult<T> = candle_core::Result<T>;

pub mod attention;
pub mod blocks;
pub mod module_cache;

pub(in crate::model::networks) use attention::{Transformer2D, TransformerBlock};
pub(crate) use attention::{layer_norm, softmax_last};
use blocks::{DownBlock, MidBlock, UpBlock};
pub(in crate::model::networks) use blocks::{Downsample, Resnet, Upsample, resnet};
pub use module_cache::ModuleCache;
pub(in crate::model::networks) use module_cache::Wrapped;

/// diffusers `get_timestep_embedding`, in f32: `(batch,)` → `(batch, dim)`.
pub fn timestep_embedding(
    t: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f64,
) -> CResult<Tensor> {
    let half = dim / 2;
    let device = t.device();
    let exponent =
        (Tensor::arange(0u32, half as u32, device)?.to_dtype(DType::F32)? * (-(10000f64.ln())))?;
    let freqs = (exponent / (half as f64 - shift))?.exp()?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs.unsqueeze(0)?)?;
    let (sin, cos) = (args.sin()?, args.cos()?);
    let emb = if flip_sin_to_cos {
        Tensor::cat(&[cos, sin], D::Minus1)?
    } else {
        Tensor::cat(&[sin, cos], D::Minus1)?
    };
    if dim % 2 == 1 {
        emb.pad_with_zeros(D::Minus1, 0, 1)
    } else {
        Ok(emb)
    }
}

/// SDXL's added conditioning for one UNet call (batch matching the latent batch).
#[derive(Debug, Clone)]
pub struct AddedCond {
    /// Pooled, projected text embeddings of the second encoder: `(batch, 1280)`.
    pub text_embeds: Tensor,
    /// `(batch, 6)`: original size, crop top-left, target size (h, w order each).
    pub time_ids: Tensor,
}

struct TextTimeEmbedding {
    time_dim: usize,
    embedding: TimestepEmbedding,
}

/// The conditional UNet.
pub struct UNet {
    conv_in: Conv,
    time_embedding: TimestepEmbedding,
    text_time: Option<TextTimeEmbedding>,
    down: Vec<DownBlock>,
    mid: MidBlock,
    up: Vec<UpBlock>,
    norm_out: Norm,
    conv_out: Conv,
    config: UNetConfig,
    dtype: DType,
    kernels: Kernels,
}

impl std::fmt::Debug for UNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UNet")
            .field("config", &self.config)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

impl UNet {
    /// Build from diffusers weights (`vb` rooted at the checkpoint).
    pub fn new(vb: VarBuilder, config: &UNetConfig) -> Result<Self> {
        Self::build(vb, config, Kernels::Fused)
            .context("the UNet weights do not match unet/config.json")
    }

    /// Build for training: every op on the forward path has a backward pass (composed
    /// softmax and layer norm instead of candle's fused kernels; same results).
    pub fn new_trainable(vb: VarBuilder, config: &UNetConfig) -> Result<Self> {
        Self::build(vb, config, Kernels::Autograd)
            .context("the UNet weights do not match unet/config.json")
    }

    fn build(vb: VarBuilder, cfg: &UNetConfig, kernels: Kernels) -> CResult<Self> {
        let c0 = cfg.down[0].out_channels;
        let conv_in = conv3x3(cfg.in_channels, c0, 1, 1, vb.pp("conv_in"), kernels)?;
        let time_embedding =
            TimestepEmbedding::new(vb.pp("time_embedding"), c0, cfg.time_embed_dim, kernels)?;
        let text_time = match &cfg.text_time {
            None => None,
            Some(tt) => Some(TextTimeEmbedding {
                time_dim: tt.time_embed_dim,
                embedding: TimestepEmbedding::new(
                    vb.pp("add_embedding"),
                    tt.input_dim,
                    cfg.time_embed_dim,
                    kernels,
                )?,
            }),
        };
        let n = cfg.down.len();
        let mut down = Vec::with_capacity(n);
        let mut cin = c0;
        for (i, block) in cfg.down.iter().enumerate() {
            down.push(DownBlock::new(
                vb.pp("down_blocks").pp(i),
                cin,
                block,
                i == n - 1,
                cfg,
                kernels,
            )?);
            cin = block.out_channels;
        }
        let mid = MidBlock::new(vb.pp("mid_block"), cfg, kernels)?;
        let reversed: Vec<usize> = cfg.down.iter().rev().map(|b| b.out_channels).collect();
        let mut up = Vec::with_capacity(n);
        let mut prev_out = reversed[0];
        for (i, block) in cfg.up.iter().enumerate() {
            let skip_in = reversed[(i + 1).min(n - 1)];
            up.push(UpBlock::new(
                vb.pp("up_blocks").pp(i),
                block,
                prev_out,
                skip_in,
                i < n - 1,
                cfg,
                kernels,
            )?);
            prev_out = block.out_channels;
        }
        let norm_out = Norm::new(
            cfg.norm_num_groups,
            c0,
            cfg.norm_eps,
            vb.pp("conv_norm_out"),
        )?;
        let conv_out = conv3x3(c0, cfg.out_channels, 1, 1, vb.pp("conv_out"), kernels)?;
        Ok(Self {
            conv_in,
            time_embedding,
            text_time,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            config: cfg.clone(),
            dtype: vb.dtype(),
            kernels,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The weights' dtype (inputs are cast to it).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether the model needs [`AddedCond`] (SDXL).
    pub fn needs_added_cond(&self) -> bool {
        self.text_time.is_some()
    }

    /// Predict noise (or v) for `x` `(batch, c, h, w)` at `timestep` with encoder states
    /// `context` `(batch, seq, dim)`. Output in the model dtype.
    pub fn forward(
        &self,
        x: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&AddedCond>,
    ) -> Result<Tensor> {
        let t = Tensor::full(timestep as f32, x.dim(0)?, x.device())?;
        self.forward_t(x, &t, context, added)
    }

    /// As [`UNet::forward`] with one timestep per batch element: `timesteps` `(batch,)`.
    pub fn forward_t(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        added: Option<&AddedCond>,
    ) -> Result<Tensor> {
        self.forward_cached(x, timesteps, context, added, &mut ModuleCache::default())
    }

    /// As [`UNet::forward_t`], the modules' outputs kept in (and, where its plan says,
    /// taken from) `cache` (DeepCache).
    pub fn forward_cached(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        added: Option<&AddedCond>,
        cache: &mut ModuleCache,
    ) -> Result<Tensor> {
        self.forward_inner(x, timesteps, context, added, cache, None)
    }

    /// The UNet with AnimateDiff motion modules: `x` `(batch·frames, c, h, w)` (each clip's
    /// frames consecutive), `timesteps` and `context` per frame.
    pub fn forward_motion(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        temporal: Temporal,
        cache: &mut ModuleCache,
    ) -> Result<Tensor> {
        if x.dim(0)? % temporal.frames != 0 {
            bail!(
                "a batch of {} frames is not whole clips of {}",
                x.dim(0)?,
                temporal.frames
            );
        }
        self.forward_inner(x, timesteps, context, None, cache, Some(&temporal))
    }

    fn forward_inner(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        added: Option<&AddedCond>,
        cache: &mut ModuleCache,
        temporal: Option<&Temporal>,
    ) -> Result<Tensor> {
        cache.check_fits(self.down.len())?;
        cache.begin_call();
        let (b, _, h, w) = x.dims4()?;
        if timesteps.dims1()? != b {
            bail!("{} timesteps for a batch of {b}", timesteps.dims1()?);
        }
        if context.dim(0)? != b {
            bail!(
                "encoder states have batch {} but the latents have batch {b}",
                context.dim(0)?
            );
        }
        let x = x.to_dtype(self.dtype)?;
        let context = context.to_dtype(self.dtype)?;
        let x = if self.config.center_input_sample {
            ((x * 2.0)? - 1.0)?
        } else {
            x
        };

        // 1. time embedding (sinusoid in f32, then the model dtype as diffusers does)
        let t_emb = timestep_embedding(
            timesteps,
            self.config.down[0].out_channels,
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
        )?;
        let mut emb = self.time_embedding.forward(&t_emb.to_dtype(self.dtype)?)?;
        match (&self.text_time, added) {
            (None, _) => {}
            (Some(_), None) => bail!("this UNet (SDXL) needs pooled text embeddings and time ids"),
            (Some(tt), Some(a)) => {
                let ids = a.time_ids.to_dtype(DType::F32)?;
                let (ib, n_ids) = ids.dims2()?;
                if ib != b || a.text_embeds.dim(0)? != b {
                    bail!("added conditioning batch does not match the latent batch {b}");
                }
                let time_embeds = timestep_embedding(
                    &ids.flatten_all()?,
                    tt.time_dim,
                    self.config.flip_sin_to_cos,
                    self.config.freq_shift,
                )?
                .reshape((b, n_ids * tt.time_dim))?;
                let add = Tensor::cat(
                    &[a.text_embeds.to_dtype(DType::F32)?, time_embeds],
                    D::Minus1,
                )?;
                emb = (emb + tt.embedding.forward(&add.to_dtype(self.dtype)?)?)?;
            }
        }

        // 2. down
        let mut x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        for (i, block) in self.down.iter().enumerate() {
            x = block.forward(&x, &emb, &context, &mut skips, cache, i, temporal)?;
        }
        // 3. mid
        x = cache.step(UNetPart::Mid, Wrapped::Block, 0, 0, |c| {
            self.mid.forward(&x, &emb, &context, c, temporal)
        })?;
        // 4. up: with odd latent sizes, upsample to the skip connection's size
        let factor = 1usize << (self.down.len() - 1);
        let forward_size = h % factor != 0 || w % factor != 0;
        let n_up = self.up.len();
        for (i, block) in self.up.iter().enumerate() {
            let consumed = block.resnets.len();
            let upsample_size = if forward_size && block.upsample.is_some() {
                skips
                    .len()
                    .checked_sub(consumed + 1)
                    .map(|i| skips[i].dims4())
                    .transpose()?
                    .map(|(_, _, sh, sw)| (sh, sw))
            } else {
                None
            };
            x = block.forward(
                &x,
                &mut skips,
                (&emb, &context),
                upsample_size,
                cache,
                n_up - 1 - i,
                temporal.map(|t| (t, i)),
            )?;
        }
        // 5. out
        let x = self.norm_out.forward(&x, true, self.kernels)?;
        Ok(self.conv_out.forward(&x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn timestep_embedding_matches_formula() {
        let t = Tensor::new(&[10f32], &Device::Cpu).unwrap();
        let e = timestep_embedding(&t, 4, true, 0.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // half = 2: freqs = exp(-ln(1e4) * [0, 1] / 2) = [1, 0.01]
        let expect = [10f32.cos(), 0.1f32.cos(), 10f32.sin(), 0.1f32.sin()];
        for (a, b) in e[0].iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let e = timestep_embedding(&t, 4, false, 1.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // shift 1: freqs = exp(-ln(1e4) * [0, 1] / 1) = [1, 1e-4]
        assert!((e[0][0] - 10f32.sin()).abs() < 1e-6);
        assert!((e[0][3] - (10f32 * 1e-4).cos()).abs() < 1e-6);
    }
}
