//! The VAE decoder (diffusers `AutoencoderKL.decode`: `post_quant_conv` and `Decoder`),
//! built from the layers the UNet uses, so that on the CPU its convolutions, GroupNorms and
//! mid-block attention run on the fused kernels.
//!
//! candle-transformers' `AutoEncoderKL` (used before) decodes with candle's CPU
//! convolution, whose patch matrix for one 3×3 convolution at 512×512 with 256 input
//! channels alone is 2.4 GB, and it loads the encoder, which decoding never uses. Here only
//! the decoder's weights are read; weight names follow diffusers (and both of its attention
//! spellings: `to_q/to_k/to_v/to_out.0` and the older `query/key/value/proj_attn`, with
//! linear or 1×1-convolution-shaped weights).

use crate::model::config::VaeConfig;
use crate::model::cpu_kernels;
use crate::model::kernels::bf16;
use crate::model::layers::{Conv, Kernels, Linear, Norm, conv1x1, conv3x3, linear};
use crate::model::profile::time;
use candle_core::Tensor;
use candle_nn::VarBuilder;

type CResult<T> = candle_core::Result<T>;

/// `ResnetBlock2D` without a time embedding.
struct Resnet {
    norm1: Norm,
    conv1: Conv,
    norm2: Norm,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl Resnet {
    fn new(vb: VarBuilder, cin: usize, cout: usize, groups: usize) -> CResult<Self> {
        Ok(Self {
            norm1: Norm::new(groups, cin, 1e-6, vb.pp("norm1"))?,
            conv1: conv3x3(cin, cout, 1, 1, vb.pp("conv1"), Kernels::Fused)?,
            norm2: Norm::new(groups, cout, 1e-6, vb.pp("norm2"))?,
            conv2: conv3x3(cout, cout, 1, 1, vb.pp("conv2"), Kernels::Fused)?,
            shortcut: if cin != cout {
                Some(conv1x1(cin, cout, vb.pp("conv_shortcut"), Kernels::Fused)?)
            } else {
                None
            },
        })
    }

    /// Takes `x` by value: with a 1×1 shortcut the input is freed before the first
    /// convolution (at 512×512 the largest activations are 268 MB each).
    fn forward(&self, x: Tensor) -> CResult<Tensor> {
        let shortcut = match &self.shortcut {
            Some(c) => c.forward(&x)?,
            None => x.clone(),
        };
        let h = time("groupnorm+silu", || {
            self.norm1.forward(&x, true, Kernels::Fused)
        })?;
        drop(x);
        let h = self.conv1.forward(&h)?;
        let h = time("groupnorm+silu", || {
            self.norm2.forward(&h, true, Kernels::Fused)
        })?;
        self.conv2.forward_add(&h, &shortcut)
    }
}

/// A linear projection stored as `(out, in)` or as a 1×1 convolution `(out, in, 1, 1)`.
fn projection(vb: VarBuilder, c: usize) -> CResult<Linear> {
    let weight = if vb.contains_tensor("weight") && vb.get_unchecked("weight")?.rank() == 4 {
        vb.get((c, c, 1, 1), "weight")?.reshape((c, c))?
    } else {
        vb.get((c, c), "weight")?
    };
    Linear::from_candle(candle_nn::Linear::new(weight, Some(vb.get(c, "bias")?)))
}

/// The mid block's single-head self-attention over all pixels, with its residual.
struct Attention {
    norm: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    channels: usize,
}

impl Attention {
    fn new(vb: VarBuilder, c: usize, groups: usize) -> CResult<Self> {
        let names = if vb.contains_tensor("to_q.weight") {
            ["to_q", "to_k", "to_v", "to_out.0"]
        } else {
            ["query", "key", "value", "proj_attn"]
        };
        Ok(Self {
            norm: Norm::new(groups, c, 1e-6, vb.pp("group_norm"))?,
            q: projection(vb.pp(names[0]), c)?,
            k: projection(vb.pp(names[1]), c)?,
            v: projection(vb.pp(names[2]), c)?,
            out: projection(vb.pp(names[3]), c)?,
            channels: c,
        })
    }

    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let xn = time("groupnorm", || self.norm.forward(x, false, Kernels::Fused))?;
        let scale = 1.0 / (self.channels as f64).sqrt();
        if let (Some(ql), Some(kl), Some(vl), Some(out)) = (
            self.q.dense(),
            self.k.dense(),
            self.v.dense(),
            self.out.dense(),
        ) && cpu_kernels::applies(&[x, ql.weight()])
        {
            // Tokens straight from the image, attention, and back with the residual.
            let as_conv = |l: &candle_nn::Linear| l.weight().reshape((c, c, 1, 1));
            let tok = |l: &candle_nn::Linear| {
                cpu_kernels::pointwise_to_tokens(&xn, &as_conv(l)?, l.bias())
            };
            let (q, k, v) = time("attn q/k/v", || CResult::Ok((tok(ql)?, tok(kl)?, tok(vl)?)))?;
            let o = time("attn core (self)", || {
                cpu_kernels::attention(&q, &k, &v, 1, scale as f32)
            })?;
            return time("attn out", || {
                cpu_kernels::tokens_to_pointwise(&o, (h, w), &as_conv(out)?, out.bias(), Some(x))
            });
        }
        let tokens = xn.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let q = linear(&self.q, &tokens, Kernels::Fused)?;
        let k = linear(&self.k, &tokens, Kernels::Fused)?;
        let v = linear(&self.v, &tokens, Kernels::Fused)?;
        // Mixed bf16 on the CPU (bf16 weights, f32 activations): both products in bf16.
        let o = if self.q.is_bf16() && bf16::attention::applies(&q, &k, &v) {
            time("attn core (self)", || {
                bf16::attention::attention(&q, &k, &v, 1, scale as f32)
            })?
        } else {
            let scores = (q.matmul(&k.t()?)? * scale)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            probs.matmul(&v)?
        };
        let o = linear(&self.out, &o, Kernels::Fused)?;
        let o = o.transpose(1, 2)?.reshape((b, c, h, w))?;
        o + x
    }
}

/// One `UpDecoderBlock2D`: resnets, then an optional 2× nearest upsample + 3×3 conv.
struct UpBlock {
    resnets: Vec<Resnet>,
    upsample: Option<Conv>,
}

/// diffusers' VAE decoder.
pub struct VaeDecoder {
    post_quant_conv: Option<Conv>,
    conv_in: Conv,
    mid: (Resnet, Attention, Resnet),
    up: Vec<UpBlock>,
    norm_out: Norm,
    conv_out: Conv,
}

impl VaeDecoder {
    /// Build from a VAE checkpoint (`vb` rooted at it: `decoder.*`, `post_quant_conv.*`).
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> CResult<Self> {
        let c = &cfg.candle;
        let groups = c.norm_num_groups;
        let latent = c.latent_channels;
        let blocks = &c.block_out_channels;
        let top = *blocks.last().expect("validated: at least one block");
        let post_quant_conv = if c.use_post_quant_conv {
            Some(conv1x1(
                latent,
                latent,
                vb.pp("post_quant_conv"),
                Kernels::Fused,
            )?)
        } else {
            None
        };
        let vb = vb.pp("decoder");
        let mid = vb.pp("mid_block");
        let mid = (
            Resnet::new(mid.pp("resnets").pp(0), top, top, groups)?,
            Attention::new(mid.pp("attentions").pp(0), top, groups)?,
            Resnet::new(mid.pp("resnets").pp(1), top, top, groups)?,
        );
        let reversed: Vec<usize> = blocks.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(blocks.len());
        for (i, &cout) in reversed.iter().enumerate() {
            let cin = if i == 0 { reversed[0] } else { reversed[i - 1] };
            let vbi = vb.pp("up_blocks").pp(i);
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    Resnet::new(
                        vbi.pp("resnets").pp(j),
                        if j == 0 { cin } else { cout },
                        cout,
                        groups,
                    )
                })
                .collect::<CResult<Vec<_>>>()?;
            let upsample = if i + 1 < blocks.len() {
                Some(conv3x3(
                    cout,
                    cout,
                    1,
                    1,
                    vbi.pp("upsamplers").pp(0).pp("conv"),
                    Kernels::Fused,
                )?)
            } else {
                None
            };
            up.push(UpBlock { resnets, upsample });
        }
        Ok(Self {
            post_quant_conv,
            conv_in: conv3x3(latent, top, 1, 1, vb.pp("conv_in"), Kernels::Fused)?,
            mid,
            up,
            norm_out: Norm::new(groups, blocks[0], 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: conv3x3(
                blocks[0],
                cfg.out_channels,
                1,
                1,
                vb.pp("conv_out"),
                Kernels::Fused,
            )?,
        })
    }

    /// Decode latents (already divided by the scaling factor) to images in about [−1, 1].
    pub fn decode(&self, z: &Tensor) -> CResult<Tensor> {
        let z = match &self.post_quant_conv {
            Some(c) => c.forward(z)?,
            None => z.clone(),
        };
        let mut x = self.conv_in.forward(&z)?;
        x = self.mid.0.forward(x)?;
        x = self.mid.1.forward(&x)?;
        x = self.mid.2.forward(x)?;
        for block in &self.up {
            for r in &block.resnets {
                x = r.forward(x)?;
            }
            if let Some(conv) = &block.upsample {
                let (_, _, h, w) = x.dims4()?;
                let up = time("upsample", || x.upsample_nearest2d(2 * h, 2 * w))?;
                drop(x);
                x = conv.forward(&up)?;
            }
        }
        let x = time("groupnorm+silu", || {
            self.norm_out.forward(&x, true, Kernels::Fused)
        })?;
        self.conv_out.forward(&x)
    }
}
