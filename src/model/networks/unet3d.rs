//! ModelScope's text-to-video UNet (diffusers `UNet3DConditionModel`): the image UNet's
//! ResNets and spatial transformers, run on every frame as one batch, with a temporal
//! convolution after each ResNet, a temporal transformer after each spatial one, and a
//! temporal transformer (`transformer_in`) after `conv_in`.
//!
//! Latents are `(batch, channels, frames, height, width)` as diffusers lays them out. Inside,
//! frames are folded into the batch (`(batch·frames, c, h, w)`, frame-major per sample) for
//! the 2-D layers; the temporal layers unfold them:
//!
//! * `TemporalConvLayer`: four × [GroupNorm over (channels, frames, h, w), SiLU, Conv3d with
//!   kernel (3, 1, 1)], plus the input (the last conv is zero-initialised in diffusers).
//! * `TransformerTemporalModel`: GroupNorm (ε 1e-6) over the same 5-D tensor, each pixel's
//!   frames as a sequence of tokens, `proj_in`, a `BasicTransformerBlock` whose two
//!   attentions are both self-attention over frames (`double_self_attention`), `proj_out`,
//!   plus the input; no positional embedding.
//!
//! Heads follow diffusers' naming quirk: the config's `attention_head_dim` is the width of a
//! head, and each block's transformers have `channels / attention_head_dim` heads;
//! `transformer_in` has 8 heads of `attention_head_dim`.

use crate::model::clip_layout::{per_frame, to_clip, to_frames};
use crate::model::config::{UNetBlock, UNetConfig};
use crate::model::layers::TimestepEmbedding;
use crate::model::layers::{Conv, Kernels, Linear, Norm, conv3x3, linear};
use crate::model::unet::{
    Downsample, ModuleCache, Resnet, Transformer2D, TransformerBlock, Upsample, Wrapped, resnet,
    timestep_embedding,
};
use crate::sampler::UNetPart;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use std::path::Path;

type CResult<T> = candle_core::Result<T>;

/// The parts of diffusers' `UNet3DConditionModel` config that shape the network.
#[derive(Debug, Deserialize)]
struct Json {
    #[serde(rename = "_class_name")]
    class: Option<String>,
    #[serde(default = "four")]
    in_channels: usize,
    #[serde(default = "four")]
    out_channels: usize,
    sample_size: Option<usize>,
    down_block_types: Vec<String>,
    up_block_types: Vec<String>,
    block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    layers_per_block: usize,
    #[serde(default = "one")]
    downsample_padding: usize,
    #[serde(default = "one_f")]
    mid_block_scale_factor: f64,
    #[serde(default = "silu")]
    act_fn: String,
    norm_num_groups: Option<usize>,
    #[serde(default = "eps")]
    norm_eps: f64,
    #[serde(default = "cross")]
    cross_attention_dim: usize,
    #[serde(default)]
    attention_head_dim: HeadDims,
    num_attention_heads: Option<serde_json::Value>,
    time_cond_proj_dim: Option<usize>,
}

fn four() -> usize {
    4
}
fn two() -> usize {
    2
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn silu() -> String {
    "silu".into()
}
fn eps() -> f64 {
    1e-5
}
fn cross() -> usize {
    1024
}

/// `attention_head_dim`: one value for every block or one per block.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HeadDims {
    One(usize),
    PerBlock(Vec<usize>),
}

impl Default for HeadDims {
    fn default() -> Self {
        HeadDims::One(64)
    }
}

/// A video UNet's configuration: the image UNet's description of the shared layers, and
/// `transformer_in`'s heads.
#[derive(Debug, Clone, PartialEq)]
pub struct UNet3DConfig {
    /// The 2-D layers, as the image UNet describes them (linear projections, no added
    /// conditioning).
    pub base: UNetConfig,
    /// Width of one head of `transformer_in` (it has 8).
    pub transformer_in_head_dim: usize,
}

/// Heads of `transformer_in`.
const TRANSFORMER_IN_HEADS: usize = 8;

/// Whether a `unet/config.json` describes a video UNet (`UNet3DConditionModel`).
pub fn is_video_config(path: &Path) -> bool {
    #[derive(Deserialize)]
    struct Class {
        #[serde(rename = "_class_name")]
        class: Option<String>,
    }
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Class>(&b).ok())
        .and_then(|c| c.class)
        .is_some_and(|c| c == "UNet3DConditionModel")
}

impl UNet3DConfig {
    /// Parse `unet/config.json` of a `UNet3DConditionModel`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let j: Json = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a UNet3DConditionModel config", path.display()))?;
        Self::from_json(j).with_context(|| format!("unsupported video UNet {}", path.display()))
    }

    fn from_json(j: Json) -> Result<Self> {
        if let Some(c) = &j.class
            && c != "UNet3DConditionModel"
        {
            bail!("_class_name is {c}, not UNet3DConditionModel");
        }
        if j.num_attention_heads.as_ref().is_some_and(|v| !v.is_null()) {
            bail!("num_attention_heads is not supported by diffusers' UNet3DConditionModel either");
        }
        if j.time_cond_proj_dim.is_some() {
            bail!("time_cond_proj_dim (LCM-style timestep conditioning) is not supported");
        }
        if j.act_fn != "silu" {
            bail!("act_fn {} is not supported (silu only)", j.act_fn);
        }
        let n = j.block_out_channels.len();
        if n == 0 || j.down_block_types.len() != n || j.up_block_types.len() != n {
            bail!("block_out_channels, down_block_types and up_block_types differ in length");
        }
        let head_dims: Vec<usize> = match &j.attention_head_dim {
            HeadDims::One(d) => vec![*d; n],
            HeadDims::PerBlock(v) if v.len() == n => v.clone(),
            HeadDims::PerBlock(v) => bail!("{} attention_head_dim values for {n} blocks", v.len()),
        };
        let groups = j
            .norm_num_groups
            .context("norm_num_groups null is not supported")?;
        let block = |kind: &str, out: usize, dim: usize, layers: usize| -> Result<UNetBlock> {
            if dim == 0 || !out.is_multiple_of(dim) || !out.is_multiple_of(groups) {
                bail!(
                    "block width {out} is not a multiple of attention_head_dim {dim} and norm_num_groups {groups}"
                );
            }
            let cross_attn = match kind {
                "CrossAttnDownBlock3D" | "CrossAttnUpBlock3D" => Some(1),
                "DownBlock3D" | "UpBlock3D" => None,
                other => bail!("block type {other} is not supported"),
            };
            Ok(UNetBlock {
                out_channels: out,
                layers,
                cross_attn,
                heads: out / dim,
                cross_attention_dim: j.cross_attention_dim,
            })
        };
        let down = (0..n)
            .map(|i| {
                block(
                    &j.down_block_types[i],
                    j.block_out_channels[i],
                    head_dims[i],
                    j.layers_per_block,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let up = (0..n)
            .map(|i| {
                block(
                    &j.up_block_types[i],
                    j.block_out_channels[n - 1 - i],
                    head_dims[n - 1 - i],
                    j.layers_per_block + 1,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let c_last = j.block_out_channels[n - 1];
        let mid = UNetBlock {
            cross_attn: Some(1),
            ..block("CrossAttnDownBlock3D", c_last, head_dims[n - 1], 1)?
        };
        let c0 = j.block_out_channels[0];
        Ok(Self {
            base: UNetConfig {
                in_channels: j.in_channels,
                out_channels: j.out_channels,
                sample_size: j.sample_size.map(|s| (s, s)),
                center_input_sample: false,
                flip_sin_to_cos: true,
                freq_shift: 0.0,
                down,
                up,
                mid,
                time_embed_dim: c0 * 4,
                downsample_padding: j.downsample_padding,
                mid_block_scale_factor: j.mid_block_scale_factor,
                norm_num_groups: groups,
                norm_eps: j.norm_eps,
                use_linear_projection: true,
                upcast_attention: false,
                text_time: None,
            },
            transformer_in_head_dim: head_dims[0],
        })
    }
}

/// diffusers `TemporalConvLayer`: four × [GroupNorm, SiLU, Conv3d (3, 1, 1)], plus the input.
struct TemporalConv {
    norms: Vec<Norm>,
    /// Each Conv3d as `(out, 3·in)` (the three frame taps side by side) and its bias.
    convs: Vec<(Tensor, Tensor)>,
}

impl TemporalConv {
    fn new(vb: VarBuilder, c: usize, groups: usize) -> CResult<Self> {
        let mut norms = Vec::with_capacity(4);
        let mut convs = Vec::with_capacity(4);
        for (i, conv_index) in [(1, 2), (2, 3), (3, 3), (4, 3)] {
            let seq = vb.pp(format!("conv{i}"));
            norms.push(Norm::new(groups, c, 1e-5, seq.pp("0"))?);
            let conv = seq.pp(conv_index.to_string());
            let w = conv.get((c, c, 3, 1, 1), "weight")?;
            let w = w
                .reshape((c, c, 3))?
                .permute((0, 2, 1))?
                .reshape((c, 3 * c))?;
            convs.push((w.contiguous()?, conv.get(c, "bias")?));
        }
        Ok(Self { norms, convs })
    }

    /// `x` `(batch·frames, c, h, w)`.
    fn forward(&self, x: &Tensor, frames: usize, kernels: Kernels) -> CResult<Tensor> {
        let x5 = to_clip(x, frames)?;
        let mut y = x5.clone();
        for (norm, (weight, bias)) in self.norms.iter().zip(&self.convs) {
            y = norm.forward(&y, true, kernels)?;
            y = conv_frames(&y, weight, bias)?;
        }
        to_frames(&(y + x5)?)
    }
}

/// A Conv3d of kernel (3, 1, 1), padding (1, 0, 0) over `x` `(b, c, f, h, w)`: the three
/// frame-shifted copies stacked on the channels, times `weight` `(o, 3c)`, plus `bias`.
fn conv_frames(x: &Tensor, weight: &Tensor, bias: &Tensor) -> CResult<Tensor> {
    let (b, c, f, h, w) = x.dims5()?;
    let o = weight.dim(0)?;
    let padded = x.pad_with_zeros(2, 1, 1)?;
    let taps = [
        padded.narrow(2, 0, f)?,
        padded.narrow(2, 1, f)?,
        padded.narrow(2, 2, f)?,
    ];
    let stacked = Tensor::cat(&taps, 1)?.reshape((b, 3 * c, f * h * w))?;
    let out = weight
        .broadcast_matmul(&stacked)?
        .broadcast_add(&bias.reshape((1, o, 1))?)?;
    out.reshape((b, o, f, h, w))
}

/// diffusers `TransformerTemporalModel`: attention over each pixel's frames.
struct TemporalTransformer {
    norm: Norm,
    proj_in: Linear,
    blocks: Vec<TransformerBlock>,
    proj_out: Linear,
}

impl TemporalTransformer {
    fn new(
        vb: VarBuilder,
        c: usize,
        heads: usize,
        head_dim: usize,
        groups: usize,
        kernels: Kernels,
    ) -> CResult<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            norm: Norm::new(groups, c, 1e-6, vb.pp("norm"))?,
            proj_in: Linear::new(c, inner, vb.pp("proj_in"))?,
            blocks: vec![TransformerBlock::double_self(
                vb.pp("transformer_blocks").pp(0),
                inner,
                heads,
                kernels,
            )?],
            proj_out: Linear::new(inner, c, vb.pp("proj_out"))?,
        })
    }

    /// `x` `(batch·frames, c, h, w)`.
    fn forward(&self, x: &Tensor, frames: usize, kernels: Kernels) -> CResult<Tensor> {
        let (bf, c, h, w) = x.dims4()?;
        let b = bf / frames;
        let normed = self.norm.forward(&to_clip(x, frames)?, false, kernels)?;
        let tokens =
            normed
                .permute((0, 3, 4, 2, 1))?
                .contiguous()?
                .reshape((b * h * w, frames, c))?;
        let mut t = linear(&self.proj_in, &tokens, kernels)?;
        let mut cache = ModuleCache::default();
        for block in &self.blocks {
            t = block.forward(&t, &t, &mut cache)?;
        }
        let t = linear(&self.proj_out, &t, kernels)?;
        let out = t
            .reshape((b, h, w, frames, c))?
            .permute((0, 3, 4, 1, 2))?
            .contiguous()?
            .reshape((bf, c, h, w))?;
        out + x
    }
}

/// One block's ResNets with their temporal convolutions, and (cross-attention blocks) the
/// spatial and temporal transformers after each.
struct Layers {
    resnets: Vec<Resnet>,
    temp_convs: Vec<TemporalConv>,
    attentions: Vec<Transformer2D>,
    temp_attentions: Vec<TemporalTransformer>,
}

impl Layers {
    /// `inputs[i]`: the input width of ResNet `i`.
    fn new(
        vb: &VarBuilder,
        inputs: &[usize],
        block: &UNetBlock,
        cfg: &UNetConfig,
        scale: f64,
        kernels: Kernels,
    ) -> CResult<Self> {
        let c = block.out_channels;
        let g = cfg.norm_num_groups;
        let mut l = Layers {
            resnets: vec![],
            temp_convs: vec![],
            attentions: vec![],
            temp_attentions: vec![],
        };
        for (i, &cin) in inputs.iter().enumerate() {
            l.resnets
                .push(resnet(vb.pp("resnets").pp(i), cin, c, cfg, scale, kernels)?);
            l.temp_convs
                .push(TemporalConv::new(vb.pp("temp_convs").pp(i), c, g)?);
        }
        if block.cross_attn.is_some() {
            // The mid block has one transformer pair fewer than ResNets.
            let pairs = if inputs.len() > block.layers {
                block.layers
            } else {
                inputs.len()
            };
            for i in 0..pairs {
                l.attentions.push(Transformer2D::new(
                    vb.pp("attentions").pp(i),
                    c,
                    block,
                    1,
                    cfg,
                    kernels,
                )?);
                l.temp_attentions.push(TemporalTransformer::new(
                    vb.pp("temp_attentions").pp(i),
                    c,
                    block.heads,
                    c / block.heads,
                    g,
                    kernels,
                )?);
            }
        }
        Ok(l)
    }

    /// ResNet `i` and its temporal convolution.
    fn resnet(&self, i: usize, x: &Tensor, s: &Step) -> CResult<Tensor> {
        let x = self.resnets[i].forward(x, s.temb)?;
        self.temp_convs[i].forward(&x, s.frames, s.kernels)
    }

    /// Spatial and temporal transformer `i`, when the block has them.
    /// (T-GATE's cached attentions are the spatial transformers'; the temporal ones always
    /// compute.)
    fn attend(&self, i: usize, x: Tensor, s: &Step, cache: &mut ModuleCache) -> CResult<Tensor> {
        let (Some(a), Some(t)) = (self.attentions.get(i), self.temp_attentions.get(i)) else {
            return Ok(x);
        };
        let x = a.forward(&x, s.context, cache)?;
        t.forward(&x, s.frames, s.kernels)
    }

    /// Whether layer `i` has transformers.
    fn has_attention(&self, i: usize) -> bool {
        i < self.attentions.len()
    }
}

/// What every layer of one call reads.
struct Step<'a> {
    temb: &'a Tensor,
    context: &'a Tensor,
    frames: usize,
    kernels: Kernels,
}

/// diffusers `UNet3DConditionModel`.
pub struct UNet3D {
    conv_in: Conv,
    time_embedding: TimestepEmbedding,
    transformer_in: TemporalTransformer,
    down: Vec<(Layers, Option<Downsample>)>,
    mid: Layers,
    up: Vec<(Layers, Option<Upsample>)>,
    norm_out: Norm,
    conv_out: Conv,
    config: UNet3DConfig,
    dtype: DType,
}

impl std::fmt::Debug for UNet3D {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UNet3D")
            .field("config", &self.config)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

impl UNet3D {
    /// Build from diffusers weights.
    pub fn new(vb: VarBuilder, config: &UNet3DConfig) -> Result<Self> {
        Self::build(vb, config, Kernels::Fused)
            .context("the video UNet weights do not match unet/config.json")
    }

    fn build(vb: VarBuilder, config: &UNet3DConfig, kernels: Kernels) -> CResult<Self> {
        let cfg = &config.base;
        let c0 = cfg.down[0].out_channels;
        let g = cfg.norm_num_groups;
        let conv_in = conv3x3(cfg.in_channels, c0, 1, 1, vb.pp("conv_in"), kernels)?;
        let time_embedding =
            TimestepEmbedding::new(vb.pp("time_embedding"), c0, cfg.time_embed_dim, kernels)?;
        let transformer_in = TemporalTransformer::new(
            vb.pp("transformer_in"),
            c0,
            TRANSFORMER_IN_HEADS,
            config.transformer_in_head_dim,
            g,
            kernels,
        )?;
        let n = cfg.down.len();
        let mut down = Vec::with_capacity(n);
        let mut cin = c0;
        for (i, block) in cfg.down.iter().enumerate() {
            let c = block.out_channels;
            let vb = vb.pp("down_blocks").pp(i);
            let inputs: Vec<usize> = (0..block.layers)
                .map(|l| if l == 0 { cin } else { c })
                .collect();
            let layers = Layers::new(&vb, &inputs, block, cfg, 1.0, kernels)?;
            let sampler = if i + 1 < n {
                let p = cfg.downsample_padding;
                Some(Downsample {
                    conv: conv3x3(c, c, 2, p, vb.pp("downsamplers").pp(0).pp("conv"), kernels)?,
                    pad_right_bottom: p == 0,
                })
            } else {
                None
            };
            down.push((layers, sampler));
            cin = c;
        }
        let cm = cfg.mid.out_channels;
        let mid = Layers::new(
            &vb.pp("mid_block"),
            &[cm, cm],
            &cfg.mid,
            cfg,
            cfg.mid_block_scale_factor,
            kernels,
        )?;
        let reversed: Vec<usize> = cfg.down.iter().rev().map(|b| b.out_channels).collect();
        let mut up = Vec::with_capacity(n);
        let mut prev = reversed[0];
        for (i, block) in cfg.up.iter().enumerate() {
            let c = block.out_channels;
            let skip_in = reversed[(i + 1).min(n - 1)];
            let vb = vb.pp("up_blocks").pp(i);
            let k = block.layers;
            let inputs: Vec<usize> = (0..k)
                .map(|j| {
                    let res_skip = if j == k - 1 { skip_in } else { c };
                    (if j == 0 { prev } else { c }) + res_skip
                })
                .collect();
            let layers = Layers::new(&vb, &inputs, block, cfg, 1.0, kernels)?;
            let sampler = if i + 1 < n {
                Some(Upsample {
                    conv: conv3x3(c, c, 1, 1, vb.pp("upsamplers").pp(0).pp("conv"), kernels)?,
                })
            } else {
                None
            };
            up.push((layers, sampler));
            prev = c;
        }
        Ok(Self {
            conv_in,
            time_embedding,
            transformer_in,
            down,
            mid,
            up,
            norm_out: Norm::new(g, c0, cfg.norm_eps, vb.pp("conv_norm_out"))?,
            conv_out: conv3x3(c0, cfg.out_channels, 1, 1, vb.pp("conv_out"), kernels)?,
            config: config.clone(),
            dtype: vb.dtype(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNet3DConfig {
        &self.config
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Predict ε for `x` `(batch, c, frames, h, w)` at `timestep` with encoder states
    /// `context` `(batch, seq, dim)`; the output has `x`'s shape, in the model dtype.
    pub fn forward(&self, x: &Tensor, timestep: f64, context: &Tensor) -> Result<Tensor> {
        self.forward_cached(x, timestep, context, &mut ModuleCache::default())
    }

    /// As [`UNet3D::forward`], the modules' outputs kept in (and, where its plan says, taken
    /// from) `cache` (DeepCache), T-GATE's attentions reused as its plan says.
    pub fn forward_cached(
        &self,
        x: &Tensor,
        timestep: f64,
        context: &Tensor,
        cache: &mut ModuleCache,
    ) -> Result<Tensor> {
        let kernels = Kernels::Fused;
        let (b, _, frames, h, w) = x
            .dims5()
            .context("video latents must be (batch, channels, frames, height, width)")?;
        if context.dim(0)? != b {
            bail!(
                "encoder states have batch {} but the latents have batch {b}",
                context.dim(0)?
            );
        }
        let cfg = &self.config.base;
        let x = to_frames(&x.to_dtype(self.dtype)?)?;
        // Each sample's time embedding and encoder states, repeated for its frames.
        let t = Tensor::full(timestep as f32, b, x.device())?;
        let t_emb = timestep_embedding(&t, cfg.down[0].out_channels, true, 0.0)?;
        let emb = self.time_embedding.forward(&t_emb.to_dtype(self.dtype)?)?;
        let emb = per_frame(&emb, frames)?;
        let context = per_frame(&context.to_dtype(self.dtype)?, frames)?;
        let s = Step {
            temb: &emb,
            context: &context,
            frames,
            kernels,
        };

        // DeepCache's modules as the image UNet wraps them (a ResNet with its temporal
        // convolution, a spatial transformer with its temporal one, the samplers, whole
        // blocks); T-GATE's attentions are the spatial transformers'.
        cache.check_fits(self.down.len())?;
        cache.begin_call();
        let x = self.conv_in.forward(&x)?;
        let mut x = self.transformer_in.forward(&x, frames, kernels)?;
        let mut skips = vec![x.clone()];
        for (b, (layers, sampler)) in self.down.iter().enumerate() {
            x = cache.down_block(b, &mut skips, |cache, skips| {
                let mut x = x.clone();
                for i in 0..layers.resnets.len() {
                    x = cache.step(UNetPart::Down, Wrapped::Resnet, b, i, |_| {
                        layers.resnet(i, &x, &s)
                    })?;
                    if layers.has_attention(i) {
                        x = cache.step(UNetPart::Down, Wrapped::Attention, b, i, |c| {
                            layers.attend(i, x.clone(), &s, c)
                        })?;
                    }
                    skips.push(x.clone());
                }
                if let Some(d) = sampler {
                    let layer = layers.resnets.len();
                    x = cache.step(UNetPart::Down, Wrapped::Sampler, b, layer, |_| {
                        d.forward(&x)
                    })?;
                    skips.push(x.clone());
                }
                Ok(x)
            })?;
        }
        x = cache.step(UNetPart::Mid, Wrapped::Block, 0, 0, |c| {
            let y = self.mid.resnet(0, &x, &s)?;
            let y = self.mid.attend(0, y, &s, c)?;
            self.mid.resnet(1, &y, &s)
        })?;
        let n = self.up.len();
        let factor = 1usize << (self.down.len() - 1);
        let forward_size = h % factor != 0 || w % factor != 0;
        for (e, (layers, sampler)) in self.up.iter().enumerate() {
            let b = n - 1 - e;
            let k = layers.resnets.len();
            let mut popped = Vec::with_capacity(k);
            for _ in 0..k {
                popped.push(skips.pop().context("video UNet skip connections ran out")?);
            }
            let size = match skips.last() {
                Some(skip) if forward_size => {
                    let (_, _, sh, sw) = skip.dims4()?;
                    Some((sh, sw))
                }
                _ => None,
            };
            x = cache.up_block(b, |cache| {
                let mut x = x.clone();
                for (i, skip) in popped.iter().enumerate() {
                    let layer = k - 1 - i;
                    x = cache.step(UNetPart::Up, Wrapped::Resnet, b, layer, |_| {
                        layers.resnet(i, &Tensor::cat(&[&x, skip], 1)?, &s)
                    })?;
                    if layers.has_attention(i) {
                        x = cache.step(UNetPart::Up, Wrapped::Attention, b, layer, |c| {
                            layers.attend(i, x.clone(), &s, c)
                        })?;
                    }
                }
                if let Some(u) = sampler {
                    x = cache.step(UNetPart::Up, Wrapped::Sampler, b, 0, |_| {
                        u.forward(&x, size)
                    })?;
                }
                Ok(x)
            })?;
        }
        let x = self.norm_out.forward(&x, true, kernels)?;
        Ok(to_clip(&self.conv_out.forward(&x)?, frames)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    #[test]
    fn one_call_matches_diffusers_unet3d() {
        let dir = fixture().join("tiny-modelscope/unet");
        let cfg = UNet3DConfig::from_file(&dir.join("config.json")).unwrap();
        assert!(is_video_config(&dir.join("config.json")));
        let files =
            crate::model::checkpoint::check_all(&[dir.join("diffusion_pytorch_model.safetensors")])
                .unwrap();
        let vb = crate::model::checkpoint::var_builder(&files, DType::F32, &Device::Cpu).unwrap();
        let unet = UNet3D::new(vb, &cfg).unwrap();
        let r = candle_core::safetensors::load(
            fixture().join("reference/video/unet_call.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let t = r["timestep"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        let got = unet
            .forward(&r["sample"], t as f64, &r["encoder_hidden_states"])
            .unwrap();
        let want = &r["out"];
        assert_eq!(got.dims(), want.dims());
        let diff = (&got - want).unwrap().sqr().unwrap().sum_all().unwrap();
        let norm = want.sqr().unwrap().sum_all().unwrap();
        let rel = (diff.to_scalar::<f32>().unwrap() / norm.to_scalar::<f32>().unwrap()).sqrt();
        assert!(rel < 1e-5, "relative L2 difference {rel}");
    }
}
