//! Attention (sliced when the score matrix would be large, T-GATE's kept outputs through
//! [`ModuleCache`]), the GEGLU feed-forward, the transformer blocks and `Transformer2D`.

use super::*;
use crate::model::cpu_kernels;
use crate::model::kernels::bf16;
use crate::model::layers::{Conv, Kernels, Linear, Norm, conv1x1, linear, linear_add};
use crate::model::profile::time;
use candle_core::{D, DType, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use crate::model::config::{UNetBlock, UNetConfig};

type CResult<T> = candle_core::Result<T>;

/// Largest attention score matrix computed at once, in bytes (query slicing beyond it).
pub(super) const ATTENTION_SCORE_BUDGET: usize = 256 << 20;

/// diffusers `Attention` (no bias on q/k/v, biased `to_out.0`).
pub(super) struct Attention {
    pub(super) to_q: Linear,
    pub(super) to_k: Linear,
    pub(super) to_v: Linear,
    pub(super) to_out: Linear,
    pub(super) heads: usize,
    pub(super) scale: f64,
    pub(super) upcast: bool,
    pub(super) kernels: Kernels,
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
    pub(super) fn new(
        vb: VarBuilder,
        dim: usize,
        context_dim: usize,
        heads: usize,
        upcast: bool,
        kernels: Kernels,
    ) -> CResult<Self> {
        let head_dim = dim / heads;
        Ok(Self {
            to_q: Linear::no_bias(dim, dim, vb.pp("to_q"))?,
            to_k: Linear::no_bias(context_dim, dim, vb.pp("to_k"))?,
            to_v: Linear::no_bias(context_dim, dim, vb.pp("to_v"))?,
            to_out: Linear::new(dim, dim, vb.pp("to_out").pp("0"))?,
            heads,
            scale: (head_dim as f64).powf(-0.5),
            upcast,
            kernels,
        })
    }

    /// Attention of `x` over `context` (itself when `None`), plus `residual` when given.
    pub(super) fn forward(
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
        // Mixed bf16 on the CPU (bf16 weights, f32 activations): both products in bf16.
        if kernels == Kernels::Fused && self.to_q.is_bf16() && bf16::attention::applies(&q, &k, &v)
        {
            let o = time(core, || {
                bf16::attention::attention(&q, &k, &v, self.heads, self.scale as f32)
            })?;
            return time("attn out", || self.out(&o, residual));
        }
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
    pub(super) fn out(&self, o: &Tensor, residual: Option<&Tensor>) -> CResult<Tensor> {
        match residual {
            Some(r) => linear_add(&self.to_out, o, r, self.kernels),
            None => linear(&self.to_out, o, self.kernels),
        }
    }

    pub(super) fn core(
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
pub(super) struct FeedForward {
    pub(super) proj: FfProj,
    pub(super) out: Linear,
    pub(super) kernels: Kernels,
}

/// The feed-forward's input projection: a linear layer followed by GEGLU, or — a bf16
/// weight on the CPU, the mixed precision of `--dtype bf16` — the two fused, the GEGLU done
/// per block of the product and its output left in bf16 for the output layer
/// ([`bf16::geglu`]).
pub(super) enum FfProj {
    Plain(Linear),
    Geglu(bf16::geglu::GegluProj),
}

impl FeedForward {
    pub(super) fn new(vb: VarBuilder, dim: usize, kernels: Kernels) -> CResult<Self> {
        let inner = dim * 4;
        let vb = vb.pp("net");
        let proj = Linear::new(dim, inner * 2, vb.pp("0").pp("proj"))?;
        let proj = match &proj {
            Linear::Bf16(p) if kernels == Kernels::Fused => bf16::geglu::GegluProj::new(p)
                .map(FfProj::Geglu)
                .unwrap_or(FfProj::Plain(proj)),
            _ => FfProj::Plain(proj),
        };
        Ok(Self {
            proj,
            out: Linear::new(inner, dim, vb.pp("2"))?,
            kernels,
        })
    }

    /// The feed-forward of `x`, plus `residual`.
    pub(super) fn forward(&self, x: &Tensor, residual: &Tensor) -> CResult<Tensor> {
        let kernels = self.kernels;
        let proj = match &self.proj {
            FfProj::Geglu(g) => {
                let (h, _) = time("ff proj+geglu", || g.forward(x))?;
                return time("ff out", || match &self.out {
                    Linear::Bf16(out) => Ok(bf16::geglu::linear_add_tokens(&h, out, residual)?.0),
                    out => linear_add(out, &h.to_tensor(x.device())?, residual, kernels),
                });
            }
            FfProj::Plain(proj) => proj,
        };
        let h = time("ff proj", || linear(proj, x, kernels))?;
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

pub(in crate::model::networks) struct TransformerBlock {
    pub(super) norm1: LayerNorm,
    pub(super) attn1: Attention,
    pub(super) norm2: LayerNorm,
    pub(super) attn2: Attention,
    pub(super) norm3: LayerNorm,
    pub(super) ff: FeedForward,
    pub(super) kernels: Kernels,
    /// `attn2` attends to the block's own states, not to the encoder's (diffusers'
    /// `double_self_attention`, the temporal transformers of video UNets).
    pub(super) attn2_self: bool,
    /// A position table `(1, max_len, dim)` added to the outputs of `norm1` and `norm2`
    /// (AnimateDiff's sinusoidal positions over frames).
    pub(super) positions: Option<Tensor>,
}

impl TransformerBlock {
    /// A block whose two attentions are both self-attention (`double_self_attention`), no
    /// cross-attention: `dim` = `heads` × head width.
    pub(in crate::model::networks) fn double_self(
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
    pub(in crate::model::networks) fn with_positions(self, table: Tensor) -> Self {
        Self {
            positions: Some(table),
            ..self
        }
    }

    /// `h` plus the first `h.dim(1)` rows of the position table, if any.
    pub(super) fn positioned(&self, h: Tensor) -> CResult<Tensor> {
        match &self.positions {
            None => Ok(h),
            Some(p) => h.broadcast_add(&p.narrow(1, 0, h.dim(1)?)?.to_dtype(h.dtype())?),
        }
    }

    pub(super) fn new(
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
    pub(in crate::model::networks) fn forward(
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

pub(super) enum Proj {
    Conv(Conv),
    Linear(Linear),
}

/// diffusers `Transformer2DModel` (continuous input).
pub(in crate::model::networks) struct Transformer2D {
    pub(super) norm: Norm,
    pub(super) proj_in: Proj,
    pub(super) blocks: Vec<TransformerBlock>,
    pub(super) proj_out: Proj,
    pub(super) kernels: Kernels,
}

impl Transformer2D {
    pub(in crate::model::networks) fn new(
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
                Proj::Linear(Linear::new(channels, channels, vb.pp("proj_in"))?),
                Proj::Linear(Linear::new(channels, channels, vb.pp("proj_out"))?),
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

    pub(in crate::model::networks) fn forward(
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
            Proj::Conv(p) if p.bf16_pointwise(&x) => time("conv 1x1", || {
                let (w, b) = p.pointwise();
                bf16::pointwise::to_tokens(&x, w, b)
            })?,
            Proj::Conv(p) if p.fused(&x) => time("conv 1x1", || {
                let (w, b) = p.pointwise();
                cpu_kernels::pointwise_to_tokens(&x, w, b)
            })?,
            Proj::Conv(p) => to_tokens(&p.forward(&x)?)?,
            Proj::Linear(p) => time("proj in/out", || linear(p, &to_tokens(&x)?, kernels))?,
        };
        for block in &self.blocks {
            x = block.forward(&x, context, cache)?;
        }
        let to_image = |t: &Tensor| t.reshape((b, h, w, c))?.permute((0, 3, 1, 2));
        if let Proj::Conv(p) = &self.proj_out
            && p.bf16_pointwise(residual)
            && x.dtype() == residual.dtype()
        {
            return time("conv 1x1", || {
                let (wt, bias) = p.pointwise();
                bf16::pointwise::from_tokens(&x, (h, w), wt, bias, residual)
            });
        }
        if let Proj::Conv(p) = &self.proj_out
            && p.fused(&x)
            && residual.dtype() == DType::F32
        {
            return time("conv 1x1", || {
                cpu_kernels::tokens_to_pointwise(
                    &x,
                    (h, w),
                    p.pointwise().0,
                    p.pointwise().1,
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
