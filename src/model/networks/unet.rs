//! The conditional UNet (diffusers `UNet2DConditionModel`), assembled from candle-nn layers
//! and candle-transformers' `ResnetBlock2D` / `TimestepEmbedding`.
//!
//! candle-transformers' own `UNet2DConditionModel` is not used because (as of 0.11.1) it
//! applies the tanh approximation of GELU inside the GEGLU feed-forward where diffusers uses
//! the exact erf form, computes the sinusoidal time embedding in the model dtype, and has no
//! SDXL added conditioning (`addition_embed_type: "text_time"`). This module follows
//! diffusers' structure and weight names one to one, including SDXL's `add_embedding`.

use crate::model::cpu_kernels;
use crate::model::layers::{Conv, Kernels, Norm, conv1x1, conv3x3, linear, linear_add};
use crate::model::motion::Temporal;
use crate::model::profile::time;
use crate::sampler::{CallPlan, DeepCachePlan, UNetPart};
use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use candle_transformers::models::stable_diffusion::embeddings::TimestepEmbedding;
use std::collections::HashMap;

use crate::model::config::{UNetBlock, UNetConfig};

type CResult<T> = candle_core::Result<T>;

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

/// diffusers `ResnetBlock2D` (as candle-transformers', with [`Conv`] convolutions).
pub(super) struct Resnet {
    norm1: Norm,
    conv1: Conv,
    norm2: Norm,
    conv2: Conv,
    time_emb_proj: Linear,
    conv_shortcut: Option<Conv>,
    output_scale_factor: f64,
    kernels: Kernels,
}

impl Resnet {
    pub(super) fn forward(&self, x: &Tensor, temb: &Tensor) -> CResult<Tensor> {
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let h = time("groupnorm+silu", || {
            self.norm1.forward(x, true, self.kernels)
        })?;
        let h = self.conv1.forward(&h)?;
        let h = time("resnet temb add", || {
            self.time_emb_proj
                .forward(&candle_nn::ops::silu(temb)?)?
                .unsqueeze(D::Minus1)?
                .unsqueeze(D::Minus1)?
                .broadcast_add(&h)
        })?;
        let h = time("groupnorm+silu", || {
            self.norm2.forward(&h, true, self.kernels)
        })?;
        if self.output_scale_factor == 1.0 {
            return self.conv2.forward_add(&h, &shortcut);
        }
        let h = self.conv2.forward(&h)?;
        time("residual add", || {
            (shortcut + h)? / self.output_scale_factor
        })
    }
}

/// Largest attention score matrix computed at once, in bytes (query slicing beyond it).
const ATTENTION_SCORE_BUDGET: usize = 256 << 20;

/// diffusers `Attention` (no bias on q/k/v, biased `to_out.0`).
struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
    upcast: bool,
    kernels: Kernels,
}

/// Softmax over the last dim: candle's fused kernel, or (for training) the composed op
/// that autograd can differentiate.
pub(crate) fn softmax_last(x: &Tensor, kernels: Kernels) -> CResult<Tensor> {
    match kernels {
        Kernels::Fused => candle_nn::ops::softmax_last_dim(x),
        Kernels::Autograd => candle_nn::ops::softmax(x, D::Minus1),
    }
}

/// A layer norm: candle's fused kernel, or (for training) the same formula from basic ops.
pub(crate) fn layer_norm(ln: &LayerNorm, x: &Tensor, kernels: Kernels) -> CResult<Tensor> {
    if kernels == Kernels::Fused {
        return ln.forward(x);
    }
    let eps = ln.eps();
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    let y = y.broadcast_mul(ln.weight())?;
    match ln.bias() {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

impl Attention {
    fn new(
        vb: VarBuilder,
        dim: usize,
        context_dim: usize,
        heads: usize,
        upcast: bool,
        kernels: Kernels,
    ) -> CResult<Self> {
        let head_dim = dim / heads;
        Ok(Self {
            to_q: candle_nn::linear_no_bias(dim, dim, vb.pp("to_q"))?,
            to_k: candle_nn::linear_no_bias(context_dim, dim, vb.pp("to_k"))?,
            to_v: candle_nn::linear_no_bias(context_dim, dim, vb.pp("to_v"))?,
            to_out: candle_nn::linear(dim, dim, vb.pp("to_out").pp("0"))?,
            heads,
            scale: (head_dim as f64).powf(-0.5),
            upcast,
            kernels,
        })
    }

    /// Attention of `x` over `context` (itself when `None`), plus `residual` when given.
    fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> CResult<Tensor> {
        let (b, n, dim) = x.dims3()?;
        let ctx = context.unwrap_or(x);
        let m = ctx.dim(1)?;
        let hd = dim / self.heads;
        let split = |t: Tensor, len: usize| -> CResult<Tensor> {
            t.reshape((b, len, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * self.heads, len, hd))
        };
        let kernels = self.kernels;
        let (q, k, v) = time("attn q/k/v", || {
            CResult::Ok((
                linear(&self.to_q, x, kernels)?,
                linear(&self.to_k, ctx, kernels)?,
                linear(&self.to_v, ctx, kernels)?,
            ))
        })?;
        let core = if context.is_some() {
            "attn core (cross)"
        } else {
            "attn core (self)"
        };
        if kernels == Kernels::Fused && cpu_kernels::applies(&[&q, &k, &v]) {
            let o = time(core, || {
                cpu_kernels::attention(&q, &k, &v, self.heads, self.scale as f32)
            })?;
            return time("attn out", || self.out(&o, residual));
        }
        let (q, k, v) = time("attn split heads", || {
            CResult::Ok((split(q, n)?, split(k, m)?, split(v, m)?))
        })?;
        let o = time(core, || self.core(q, k, v, b, n, m))?;
        let o = time("attn merge heads", || {
            o.reshape((b, self.heads, n, hd))?
                .transpose(1, 2)?
                .reshape((b, n, dim))
        })?;
        time("attn out", || self.out(&o, residual))
    }

    /// `to_out`, plus `residual` when given.
    fn out(&self, o: &Tensor, residual: Option<&Tensor>) -> CResult<Tensor> {
        match residual {
            Some(r) => linear_add(&self.to_out, o, r, self.kernels),
            None => linear(&self.to_out, o, self.kernels),
        }
    }

    fn core(
        &self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        b: usize,
        n: usize,
        m: usize,
    ) -> CResult<Tensor> {
        let dtype = q.dtype();
        let work = if self.upcast { DType::F32 } else { dtype };
        let kt = k.to_dtype(work)?.t()?;
        // Bound the (batch·heads, n, m) score matrix: at SD's 64×64 latent one self-attention
        // score matrix is 2 GiB in f32, so long queries are processed in slices.
        let rows = (ATTENTION_SCORE_BUDGET / (b * self.heads * m * 4).max(1)).clamp(1, n);
        let mut outs = Vec::with_capacity(n.div_ceil(rows));
        for start in (0..n).step_by(rows) {
            let len = rows.min(n - start);
            let qs = q.narrow(1, start, len)?;
            let scores = (qs.to_dtype(work)? * self.scale)?.matmul(&kt)?;
            let probs = softmax_last(&scores, self.kernels)?.to_dtype(dtype)?;
            outs.push(probs.matmul(&v)?);
        }
        if outs.len() == 1 {
            Ok(outs.pop().expect("one slice"))
        } else {
            Tensor::cat(&outs, 1)
        }
    }
}

/// GEGLU feed-forward (`ff.net.0.proj`, `ff.net.2`), exact-erf GELU as in diffusers.
struct FeedForward {
    proj: Linear,
    out: Linear,
    kernels: Kernels,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize, kernels: Kernels) -> CResult<Self> {
        let inner = dim * 4;
        let vb = vb.pp("net");
        Ok(Self {
            proj: candle_nn::linear(dim, inner * 2, vb.pp("0").pp("proj"))?,
            out: candle_nn::linear(inner, dim, vb.pp("2"))?,
            kernels,
        })
    }

    /// The feed-forward of `x`, plus `residual`.
    fn forward(&self, x: &Tensor, residual: &Tensor) -> CResult<Tensor> {
        let kernels = self.kernels;
        let h = time("ff proj", || linear(&self.proj, x, kernels))?;
        if kernels == Kernels::Fused && cpu_kernels::applies(&[&h]) {
            let h = time("ff geglu", || cpu_kernels::geglu(&h))?;
            return time("ff out", || linear_add(&self.out, &h, residual, kernels));
        }
        let h = time("ff geglu", || {
            let half = h.dim(D::Minus1)? / 2;
            let value = h.narrow(D::Minus1, 0, half)?;
            let gate = h.narrow(D::Minus1, half, half)?;
            value * gate.gelu_erf()?
        })?;
        time("ff out", || linear_add(&self.out, &h, residual, kernels))
    }
}

pub(super) struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    kernels: Kernels,
    /// `attn2` attends to the block's own states, not to the encoder's (diffusers'
    /// `double_self_attention`, the temporal transformers of video UNets).
    attn2_self: bool,
    /// A position table `(1, max_len, dim)` added to the outputs of `norm1` and `norm2`
    /// (AnimateDiff's sinusoidal positions over frames).
    positions: Option<Tensor>,
}

impl TransformerBlock {
    /// A block whose two attentions are both self-attention (`double_self_attention`), no
    /// cross-attention: `dim` = `heads` × head width.
    pub(super) fn double_self(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        kernels: Kernels,
    ) -> CResult<Self> {
        Ok(Self {
            attn2_self: true,
            ..Self::new(vb, dim, dim, heads, false, kernels)?
        })
    }

    /// The block with a position table `(1, max_len, dim)` added to the normed states
    /// before each attention.
    pub(super) fn with_positions(self, table: Tensor) -> Self {
        Self {
            positions: Some(table),
            ..self
        }
    }

    /// `h` plus the first `h.dim(1)` rows of the position table, if any.
    fn positioned(&self, h: Tensor) -> CResult<Tensor> {
        match &self.positions {
            None => Ok(h),
            Some(p) => h.broadcast_add(&p.narrow(1, 0, h.dim(1)?)?.to_dtype(h.dtype())?),
        }
    }

    fn new(
        vb: VarBuilder,
        dim: usize,
        context_dim: usize,
        heads: usize,
        upcast: bool,
        kernels: Kernels,
    ) -> CResult<Self> {
        Ok(Self {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads, upcast, kernels)?,
            norm2: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, context_dim, heads, upcast, kernels)?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(vb.pp("ff"), dim, kernels)?,
            kernels,
            attn2_self: false,
            positions: None,
        })
    }

    /// The block on tokens `x`; `context` is not read when `attn2` is a self-attention.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        cache: &mut ModuleCache,
    ) -> CResult<Tensor> {
        let kernels = self.kernels;
        let ln = |n: &LayerNorm, x: &Tensor| time("layernorm", || layer_norm(n, x, kernels));
        let h = self.positioned(ln(&self.norm1, x)?)?;
        let x = cache.attention(false, x, |r| self.attn1.forward(&h, None, r))?;
        let h = self.positioned(ln(&self.norm2, &x)?)?;
        let context = (!self.attn2_self).then_some(context);
        let x = cache.attention(true, &x, |r| self.attn2.forward(&h, context, r))?;
        self.ff.forward(&ln(&self.norm3, &x)?, &x)
    }
}

enum Proj {
    Conv(Conv),
    Linear(Linear),
}

/// diffusers `Transformer2DModel` (continuous input).
pub(super) struct Transformer2D {
    norm: Norm,
    proj_in: Proj,
    blocks: Vec<TransformerBlock>,
    proj_out: Proj,
    kernels: Kernels,
}

impl Transformer2D {
    pub(super) fn new(
        vb: VarBuilder,
        channels: usize,
        block: &UNetBlock,
        depth: usize,
        cfg: &UNetConfig,
        kernels: Kernels,
    ) -> CResult<Self> {
        let norm = Norm::new(cfg.norm_num_groups, channels, 1e-6, vb.pp("norm"))?;
        let (proj_in, proj_out) = if cfg.use_linear_projection {
            (
                Proj::Linear(candle_nn::linear(channels, channels, vb.pp("proj_in"))?),
                Proj::Linear(candle_nn::linear(channels, channels, vb.pp("proj_out"))?),
            )
        } else {
            (
                Proj::Conv(conv1x1(channels, channels, vb.pp("proj_in"), kernels)?),
                Proj::Conv(conv1x1(channels, channels, vb.pp("proj_out"), kernels)?),
            )
        };
        let bv = vb.pp("transformer_blocks");
        let blocks = (0..depth)
            .map(|i| {
                TransformerBlock::new(
                    bv.pp(i),
                    channels,
                    block.cross_attention_dim,
                    block.heads,
                    cfg.upcast_attention,
                    kernels,
                )
            })
            .collect::<CResult<Vec<_>>>()?;
        Ok(Self {
            norm,
            proj_in,
            blocks,
            proj_out,
            kernels,
        })
    }

    pub(super) fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        cache: &mut ModuleCache,
    ) -> CResult<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let residual = x;
        let kernels = self.kernels;
        let x = time("groupnorm", || self.norm.forward(x, false, kernels))?;
        let to_tokens = |t: &Tensor| {
            time("to tokens", || {
                t.permute((0, 2, 3, 1))?.reshape((b, h * w, c))
            })
        };
        let mut x = match &self.proj_in {
            Proj::Conv(p) if p.fused(&x) => time("conv 1x1", || {
                cpu_kernels::pointwise_to_tokens(&x, p.conv.weight(), p.conv.bias())
            })?,
            Proj::Conv(p) => to_tokens(&p.forward(&x)?)?,
            Proj::Linear(p) => time("proj in/out", || linear(p, &to_tokens(&x)?, kernels))?,
        };
        for block in &self.blocks {
            x = block.forward(&x, context, cache)?;
        }
        let to_image = |t: &Tensor| t.reshape((b, h, w, c))?.permute((0, 3, 1, 2));
        if let Proj::Conv(p) = &self.proj_out
            && p.fused(&x)
            && residual.dtype() == DType::F32
        {
            return time("conv 1x1", || {
                cpu_kernels::tokens_to_pointwise(
                    &x,
                    (h, w),
                    p.conv.weight(),
                    p.conv.bias(),
                    Some(residual),
                )
            });
        }
        let x = match &self.proj_out {
            Proj::Conv(p) => p.forward(&time("to image", || to_image(&x)?.contiguous())?)?,
            Proj::Linear(p) => to_image(&time("proj in/out", || linear(p, &x, kernels))?)?,
        };
        time("residual add", || x + residual)
    }
}

pub(super) struct Downsample {
    pub(super) conv: Conv,
    pub(super) pad_right_bottom: bool,
}

impl Downsample {
    pub(super) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        if self.pad_right_bottom {
            let x = x
                .pad_with_zeros(D::Minus1, 0, 1)?
                .pad_with_zeros(D::Minus2, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

pub(super) struct Upsample {
    pub(super) conv: Conv,
}

impl Upsample {
    pub(super) fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> CResult<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        let x = time("upsample", || x.upsample_nearest2d(th, tw))?;
        self.conv.forward(&x)
    }
}

pub(super) fn resnet(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    cfg: &UNetConfig,
    scale: f64,
    kernels: Kernels,
) -> CResult<Resnet> {
    let g = cfg.norm_num_groups;
    Ok(Resnet {
        norm1: Norm::new(g, cin, cfg.norm_eps, vb.pp("norm1"))?,
        conv1: conv3x3(cin, cout, 1, 1, vb.pp("conv1"), kernels)?,
        norm2: Norm::new(g, cout, cfg.norm_eps, vb.pp("norm2"))?,
        conv2: conv3x3(cout, cout, 1, 1, vb.pp("conv2"), kernels)?,
        time_emb_proj: candle_nn::linear(cfg.time_embed_dim, cout, vb.pp("time_emb_proj"))?,
        conv_shortcut: if cin != cout {
            Some(conv1x1(cin, cout, vb.pp("conv_shortcut"), kernels)?)
        } else {
            None
        },
        output_scale_factor: scale,
        kernels,
    })
}

/// `DownBlock2D` / `CrossAttnDownBlock2D`.
struct DownBlock {
    resnets: Vec<Resnet>,
    attentions: Vec<Transformer2D>,
    downsample: Option<Downsample>,
}

impl DownBlock {
    fn new(
        vb: VarBuilder,
        cin: usize,
        block: &UNetBlock,
        is_last: bool,
        cfg: &UNetConfig,
        kernels: Kernels,
    ) -> CResult<Self> {
        let cout = block.out_channels;
        let resnets = (0..block.layers)
            .map(|i| {
                resnet(
                    vb.pp("resnets").pp(i),
                    if i == 0 { cin } else { cout },
                    cout,
                    cfg,
                    1.0,
                    kernels,
                )
            })
            .collect::<CResult<Vec<_>>>()?;
        let attentions = match block.cross_attn {
            None => vec![],
            Some(depth) => (0..block.layers)
                .map(|i| {
                    Transformer2D::new(vb.pp("attentions").pp(i), cout, block, depth, cfg, kernels)
                })
                .collect::<CResult<Vec<_>>>()?,
        };
        let downsample = if is_last {
            None
        } else {
            let p = cfg.downsample_padding;
            Some(Downsample {
                conv: conv3x3(
                    cout,
                    cout,
                    2,
                    p,
                    vb.pp("downsamplers").pp("0").pp("conv"),
                    kernels,
                )?,
                pad_right_bottom: p == 0,
            })
        };
        Ok(Self {
            resnets,
            attentions,
            downsample,
        })
    }

    /// Block `b` of the down path; pushes its skip connections. With `temporal`, each
    /// layer's motion module follows it.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
        cache: &mut ModuleCache,
        b: usize,
        temporal: Option<&Temporal>,
    ) -> CResult<Tensor> {
        // A layer's motion module runs inside its last wrapped module, so that DeepCache
        // keeps (and reuses) the layer's output with the module applied.
        let motion = |i: usize, y: Tensor| match temporal {
            Some(t) => t.down(b, i, y),
            None => Ok(y),
        };
        cache.down_block(b, skips, |cache, skips| {
            let mut x = x.clone();
            for (i, r) in self.resnets.iter().enumerate() {
                let attention = self.attentions.get(i);
                x = cache.step(UNetPart::Down, Wrapped::Resnet, b, i, |_| {
                    let y = r.forward(&x, temb)?;
                    if attention.is_some() {
                        Ok(y)
                    } else {
                        motion(i, y)
                    }
                })?;
                if let Some(a) = attention {
                    x = cache.step(UNetPart::Down, Wrapped::Attention, b, i, |c| {
                        motion(i, a.forward(&x, context, c)?)
                    })?;
                }
                skips.push(x.clone());
            }
            if let Some(d) = &self.downsample {
                let layer = self.resnets.len();
                x = cache.step(UNetPart::Down, Wrapped::Sampler, b, layer, |_| {
                    d.forward(&x)
                })?;
                skips.push(x.clone());
            }
            Ok(x)
        })
    }
}

/// `UpBlock2D` / `CrossAttnUpBlock2D`.
struct UpBlock {
    resnets: Vec<Resnet>,
    attentions: Vec<Transformer2D>,
    upsample: Option<Upsample>,
}

impl UpBlock {
    fn new(
        vb: VarBuilder,
        block: &UNetBlock,
        prev_out: usize,
        skip_in: usize,
        add_upsample: bool,
        cfg: &UNetConfig,
        kernels: Kernels,
    ) -> CResult<Self> {
        let cout = block.out_channels;
        let n = block.layers;
        let resnets = (0..n)
            .map(|j| {
                let res_skip = if j == n - 1 { skip_in } else { cout };
                let rin = if j == 0 { prev_out } else { cout };
                resnet(
                    vb.pp("resnets").pp(j),
                    rin + res_skip,
                    cout,
                    cfg,
                    1.0,
                    kernels,
                )
            })
            .collect::<CResult<Vec<_>>>()?;
        let attentions = match block.cross_attn {
            None => vec![],
            Some(depth) => (0..n)
                .map(|j| {
                    Transformer2D::new(vb.pp("attentions").pp(j), cout, block, depth, cfg, kernels)
                })
                .collect::<CResult<Vec<_>>>()?,
        };
        let upsample = if add_upsample {
            Some(Upsample {
                conv: conv3x3(
                    cout,
                    cout,
                    1,
                    1,
                    vb.pp("upsamplers").pp("0").pp("conv"),
                    kernels,
                )?,
            })
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsample,
        })
    }

    /// Up block `b` counted from the end (DeepCache's numbering); pops its skip
    /// connections (also when its output comes from the cache, as diffusers slices them
    /// before the call).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        skips: &mut Vec<Tensor>,
        (temb, context): (&Tensor, &Tensor),
        upsample_size: Option<(usize, usize)>,
        cache: &mut ModuleCache,
        b: usize,
        temporal: Option<(&Temporal, usize)>,
    ) -> CResult<Tensor> {
        let n = self.resnets.len();
        let mut popped = Vec::with_capacity(n);
        for _ in 0..n {
            popped.push(
                skips.pop().ok_or_else(|| {
                    candle_core::Error::Msg("UNet skip connections ran out".into())
                })?,
            );
        }
        // As in the down blocks: each layer's motion module inside its last wrapped module.
        let motion = |j: usize, y: Tensor| match temporal {
            Some((t, exec)) => t.up(exec, j, y),
            None => Ok(y),
        };
        cache.up_block(b, |cache| {
            let mut x = x.clone();
            for (j, (r, skip)) in self.resnets.iter().zip(&popped).enumerate() {
                let layer = n - 1 - j;
                let attention = self.attentions.get(j);
                x = cache.step(UNetPart::Up, Wrapped::Resnet, b, layer, |_| {
                    let cat = time("cat skip", || Tensor::cat(&[&x, skip], 1))?;
                    let y = r.forward(&cat, temb)?;
                    if attention.is_some() {
                        Ok(y)
                    } else {
                        motion(j, y)
                    }
                })?;
                if let Some(a) = attention {
                    x = cache.step(UNetPart::Up, Wrapped::Attention, b, layer, |c| {
                        motion(j, a.forward(&x, context, c)?)
                    })?;
                }
            }
            if let Some(u) = &self.upsample {
                x = cache.step(UNetPart::Up, Wrapped::Sampler, b, 0, |_| {
                    u.forward(&x, upsample_size)
                })?;
            }
            Ok(x)
        })
    }
}

struct MidBlock {
    resnets: Vec<Resnet>,
    attentions: Vec<Transformer2D>,
}

impl MidBlock {
    fn new(vb: VarBuilder, cfg: &UNetConfig, kernels: Kernels) -> CResult<Self> {
        let c = cfg.mid.out_channels;
        let depth = cfg.mid.cross_attn.unwrap_or(1);
        let scale = cfg.mid_block_scale_factor;
        let resnets = (0..=cfg.mid.layers)
            .map(|i| resnet(vb.pp("resnets").pp(i), c, c, cfg, scale, kernels))
            .collect::<CResult<Vec<_>>>()?;
        let attentions = (0..cfg.mid.layers)
            .map(|i| {
                Transformer2D::new(vb.pp("attentions").pp(i), c, &cfg.mid, depth, cfg, kernels)
            })
            .collect::<CResult<Vec<_>>>()?;
        Ok(Self {
            resnets,
            attentions,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        cache: &mut ModuleCache,
        temporal: Option<&Temporal>,
    ) -> CResult<Tensor> {
        let mut x = self.resnets[0].forward(x, temb)?;
        for (a, r) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = a.forward(&x, context, cache)?;
            if let Some(t) = temporal {
                x = t.mid(x)?;
            }
            x = r.forward(&x, temb)?;
        }
        Ok(x)
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

/// The modules DeepCache wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Wrapped {
    Resnet,
    Attention,
    /// A down block's downsampler or an up block's upsampler.
    Sampler,
    /// A whole block.
    Block,
}

/// What partial UNet calls keep between calls — DeepCache's module outputs, T-GATE's
/// attention outputs — and the plan of the next call. The default (no plan) keeps nothing
/// and computes everything.
#[derive(Default)]
pub struct ModuleCache {
    plan: Option<CallPlan>,
    store: HashMap<(UNetPart, Wrapped, usize, usize), Vec<Tensor>>,
    /// T-GATE: the kept output of every attention layer, in call order.
    attention: Vec<Option<Tensor>>,
    /// The next attention layer of the current call.
    attention_index: usize,
}

impl ModuleCache {
    /// The plan of the next call (`None`: compute everything, keep nothing).
    pub fn set_plan(&mut self, plan: Option<CallPlan>) {
        self.plan = plan;
    }

    /// The plan of the next call.
    pub fn plan(&self) -> Option<CallPlan> {
        self.plan
    }

    fn deepcache(&self) -> Option<DeepCachePlan> {
        match self.plan {
            Some(CallPlan::DeepCache(p)) => Some(p),
            _ => None,
        }
    }

    fn is_on(&self) -> bool {
        self.deepcache().is_some()
    }

    pub(super) fn begin_call(&mut self) {
        self.attention_index = 0;
    }

    /// An attention layer's output plus `residual`: under T-GATE computed, kept or taken
    /// from the cache as the plan says; `compute(r)` is the layer with residual `r` added
    /// (or none).
    fn attention(
        &mut self,
        cross: bool,
        residual: &Tensor,
        compute: impl FnOnce(Option<&Tensor>) -> CResult<Tensor>,
    ) -> CResult<Tensor> {
        let Some(CallPlan::TGate(plan)) = self.plan else {
            return compute(Some(residual));
        };
        let index = self.attention_index;
        self.attention_index += 1;
        if self.attention.len() <= index {
            self.attention.resize(index + 1, None);
        }
        let gate = if cross { plan.cross } else { plan.self_attn };
        if gate.reuse
            && let Some(kept) = &self.attention[index]
        {
            return kept + residual;
        }
        let out = compute(None)?;
        if gate.cache {
            self.attention[index] = Some(if plan.mean {
                // The mean of the [uncond; cond] halves (a clip's frames: each half's frames).
                let half = out.dim(0)? / 2;
                ((out.narrow(0, 0, half)? + out.narrow(0, half, half)?)? / 2.0)?
            } else {
                out.clone()
            });
        }
        out + residual
    }

    /// The branch must name a block of this UNet.
    pub(super) fn check_fits(&self, blocks: usize) -> Result<()> {
        if let Some(p) = self.deepcache()
            && p.block >= blocks
        {
            bail!(
                "deepcache: branch {} names block {} but this UNet has {blocks} down blocks (branches 0–{})",
                p.block * 3 + p.layer,
                p.block,
                blocks * 3 - 1
            );
        }
        Ok(())
    }

    /// The cached output of a module the plan skips (an error when none was kept yet).
    fn cached(
        &self,
        part: UNetPart,
        module: Wrapped,
        block: usize,
        layer: usize,
    ) -> Option<CResult<Vec<Tensor>>> {
        let plan = self.deepcache()?;
        if !plan.skips(part, block, layer) {
            return None;
        }
        Some(
            self.store
                .get(&(part, module, block, layer))
                .cloned()
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "deepcache: no cached output of {part:?} block {block} {module:?} {layer} (the first step must be full)"
                    ))
                }),
        )
    }

    fn keep(
        &mut self,
        part: UNetPart,
        module: Wrapped,
        block: usize,
        layer: usize,
        out: Vec<Tensor>,
    ) {
        if self.is_on() {
            self.store.insert((part, module, block, layer), out);
        }
    }

    /// A module's output: from the cache when the plan skips it, else computed (and kept).
    /// Down block `b` as DeepCache wraps it: from the cache (its output and the skip
    /// connections it pushed) when the plan says so, else `body`, whose output and pushed
    /// skips are kept.
    pub(super) fn down_block(
        &mut self,
        b: usize,
        skips: &mut Vec<Tensor>,
        body: impl FnOnce(&mut Self, &mut Vec<Tensor>) -> CResult<Tensor>,
    ) -> CResult<Tensor> {
        if let Some(out) = self.cached(UNetPart::Down, Wrapped::Block, b, 0) {
            let out = out?;
            skips.extend(out[1..].iter().cloned());
            return Ok(out[0].clone());
        }
        let start = skips.len();
        let x = body(self, skips)?;
        if self.is_on() {
            let out: Vec<Tensor> = std::iter::once(x.clone())
                .chain(skips[start..].iter().cloned())
                .collect();
            self.keep(UNetPart::Down, Wrapped::Block, b, 0, out);
        }
        Ok(x)
    }

    /// Up block `b` (counted from the end) as DeepCache wraps it: from the cache, or `body`
    /// whose output is kept. (The caller has already popped the block's skip connections,
    /// as diffusers slices them before the call.)
    pub(super) fn up_block(
        &mut self,
        b: usize,
        body: impl FnOnce(&mut Self) -> CResult<Tensor>,
    ) -> CResult<Tensor> {
        if let Some(out) = self.cached(UNetPart::Up, Wrapped::Block, b, 0) {
            return Ok(out?[0].clone());
        }
        let x = body(self)?;
        self.keep(UNetPart::Up, Wrapped::Block, b, 0, vec![x.clone()]);
        Ok(x)
    }

    pub(super) fn step(
        &mut self,
        part: UNetPart,
        module: Wrapped,
        block: usize,
        layer: usize,
        compute: impl FnOnce(&mut Self) -> CResult<Tensor>,
    ) -> CResult<Tensor> {
        if let Some(out) = self.cached(part, module, block, layer) {
            return Ok(out?[0].clone());
        }
        let y = compute(self)?;
        self.keep(part, module, block, layer, vec![y.clone()]);
        Ok(y)
    }
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
            TimestepEmbedding::new(vb.pp("time_embedding"), c0, cfg.time_embed_dim)?;
        let text_time = match &cfg.text_time {
            None => None,
            Some(tt) => Some(TextTimeEmbedding {
                time_dim: tt.time_embed_dim,
                embedding: TimestepEmbedding::new(
                    vb.pp("add_embedding"),
                    tt.input_dim,
                    cfg.time_embed_dim,
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
