//! The UNet's building blocks: `ResnetBlock2D`, the down- and upsamplers, and the down,
//! mid and up blocks (each module wrapped for DeepCache through [`ModuleCache`]).

use super::*;
use crate::model::layers::{Conv, Kernels, Linear, Norm, conv1x1, conv3x3, linear};
use crate::model::motion::Temporal;
use crate::model::profile::time;
use crate::sampler::UNetPart;
use candle_core::{D, Tensor};
use candle_nn::VarBuilder;

use crate::model::config::{UNetBlock, UNetConfig};

type CResult<T> = candle_core::Result<T>;

/// diffusers `ResnetBlock2D` (as candle-transformers', with [`Conv`] convolutions).
pub(in crate::model::networks) struct Resnet {
    pub(super) norm1: Norm,
    pub(super) conv1: Conv,
    pub(super) norm2: Norm,
    pub(super) conv2: Conv,
    pub(super) time_emb_proj: Linear,
    pub(super) conv_shortcut: Option<Conv>,
    pub(super) output_scale_factor: f64,
    pub(super) kernels: Kernels,
}

impl Resnet {
    pub(in crate::model::networks) fn forward(&self, x: &Tensor, temb: &Tensor) -> CResult<Tensor> {
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let h = time("groupnorm+silu", || {
            self.norm1.forward(x, true, self.kernels)
        })?;
        let h = self.conv1.forward(&h)?;
        let h = time("resnet temb add", || {
            linear(
                &self.time_emb_proj,
                &candle_nn::ops::silu(temb)?,
                self.kernels,
            )?
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

pub(in crate::model::networks) struct Downsample {
    pub(in crate::model::networks) conv: Conv,
    pub(in crate::model::networks) pad_right_bottom: bool,
}

impl Downsample {
    pub(in crate::model::networks) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
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

pub(in crate::model::networks) struct Upsample {
    pub(in crate::model::networks) conv: Conv,
}

impl Upsample {
    pub(in crate::model::networks) fn forward(
        &self,
        x: &Tensor,
        size: Option<(usize, usize)>,
    ) -> CResult<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        let x = time("upsample", || x.upsample_nearest2d(th, tw))?;
        self.conv.forward(&x)
    }
}

pub(in crate::model::networks) fn resnet(
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
        time_emb_proj: Linear::new(cfg.time_embed_dim, cout, vb.pp("time_emb_proj"))?,
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
pub(super) struct DownBlock {
    pub(super) resnets: Vec<Resnet>,
    pub(super) attentions: Vec<Transformer2D>,
    pub(super) downsample: Option<Downsample>,
}

impl DownBlock {
    pub(super) fn new(
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
    pub(super) fn forward(
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
pub(super) struct UpBlock {
    pub(super) resnets: Vec<Resnet>,
    pub(super) attentions: Vec<Transformer2D>,
    pub(super) upsample: Option<Upsample>,
}

impl UpBlock {
    pub(super) fn new(
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
    pub(super) fn forward(
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

pub(super) struct MidBlock {
    pub(super) resnets: Vec<Resnet>,
    pub(super) attentions: Vec<Transformer2D>,
}

impl MidBlock {
    pub(super) fn new(vb: VarBuilder, cfg: &UNetConfig, kernels: Kernels) -> CResult<Self> {
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

    pub(super) fn forward(
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
