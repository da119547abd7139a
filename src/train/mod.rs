//! Training the built-in "shapes" model with candle autograd: a small
//! `UNet2DConditionModel` (pixel space, ε-prediction on SD's scaled-linear 1000-step
//! schedule) and a small CLIP-style text encoder over the word-level vocabulary, trained
//! jointly on the procedural data of [`crate::shapes`].
//!
//! * AdamW (own implementation, so its moments are checkpointed) and an EMA of the weights.
//! * Checkpoints (`checkpoint.safetensors`: weights, EMA, moments; `checkpoint.json`: step,
//!   data RNG state, loss log) written atomically; a run started on a folder that holds
//!   one resumes from it bit for bit.
//! * [`Trainer::export`] writes a diffusers-style folder (EMA weights) that
//!   [`crate::model::StableDiffusion::load_dir`] loads like any other.

mod checkpoint;
pub mod clip;
pub mod eval;
pub mod motion;
pub mod motion_eval;
pub mod plot;
pub mod probe;
pub mod seeded_init;
pub mod steps;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::model::config::{ClipConfig, ClipJson, UNetConfig, UNetJson};
use crate::model::text_encoder::ClipTextEncoder;
use crate::model::tokenizer::ClipTokenizer;
use crate::model::unet::UNet;
use crate::shapes::dataset::{StreamConfig, training_pair};
use crate::shapes::{self, Rng, vocab};

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

/// The training noise ε for a batch of shape `(n, c, h, w)`: standard normal values;
/// with `pyramid > 0`, multi-resolution ("pyramid") noise — bilinearly upsampled normal
/// grids at h/2, h/4, … down to 1×1, level k weighted `pyramid^k`, each image rescaled to
/// unit standard deviation; then, with `offset > 0`, one N(0, offset²) constant per plane
/// (per image and channel). `pyramid = 0` draws exactly the plain (offset) noise.
fn training_noise(
    rng: &mut Rng,
    (n, c, h, w): (usize, usize, usize, usize),
    offset: f64,
    pyramid: f64,
) -> Vec<f32> {
    let plane = h * w;
    let mut noise: Vec<f32> = (0..n * c * plane).map(|_| rng.normal() as f32).collect();
    if pyramid > 0.0 {
        for image in noise.chunks_mut(c * plane) {
            for chan in image.chunks_mut(plane) {
                let (mut lh, mut lw, mut weight) = (h, w, 1.0);
                while lh > 1 || lw > 1 {
                    (lh, lw) = (lh.div_ceil(2), lw.div_ceil(2));
                    weight *= pyramid;
                    let grid: Vec<f64> = (0..lh * lw).map(|_| rng.normal()).collect();
                    add_upsampled(chan, (h, w), &grid, (lh, lw), weight);
                }
            }
            let var = variance(image);
            let scale = (1.0 / var.max(1e-12).sqrt()) as f32;
            image.iter_mut().for_each(|v| *v *= scale);
        }
    }
    if offset > 0.0 {
        for chunk in noise.chunks_mut(plane) {
            let o = (rng.normal() * offset) as f32;
            chunk.iter_mut().for_each(|v| *v += o);
        }
    }
    noise
}

/// The (population) variance of `values`, in f64.
fn variance(values: &[f32]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n
}

/// `dst (h, w) += weight × bilinear upsampling of grid (gh, gw)` (half-pixel centres,
/// edges clamped, as `align_corners = false`).
fn add_upsampled(
    dst: &mut [f32],
    (h, w): (usize, usize),
    grid: &[f64],
    (gh, gw): (usize, usize),
    weight: f64,
) {
    let coord = |i: usize, n: usize, g: usize| {
        let x = ((i as f64 + 0.5) * g as f64 / n as f64 - 0.5).clamp(0.0, (g - 1) as f64);
        let i0 = x.floor() as usize;
        (i0, (i0 + 1).min(g - 1), x - i0 as f64)
    };
    for y in 0..h {
        let (y0, y1, fy) = coord(y, h, gh);
        for x in 0..w {
            let (x0, x1, fx) = coord(x, w, gw);
            let top = grid[y0 * gw + x0] * (1.0 - fx) + grid[y0 * gw + x1] * fx;
            let bottom = grid[y1 * gw + x0] * (1.0 - fx) + grid[y1 * gw + x1] * fx;
            dst[y * w + x] += (weight * (top * (1.0 - fy) + bottom * fy)) as f32;
        }
    }
}

/// ᾱ_t of SD's scaled-linear schedule, t = 0…999.
pub fn alphas_cumprod() -> Vec<f64> {
    let (b0, b1, n) = (0.00085f64.sqrt(), 0.012f64.sqrt(), 1000);
    let mut acc = 1.0;
    (0..n)
        .map(|i| {
            let b = b0 + (b1 - b0) * i as f64 / (n - 1) as f64;
            acc *= 1.0 - b * b;
            acc
        })
        .collect()
}

/// One AdamW update (β 0.9 / 0.999, ε 1e-8, decoupled weight decay) of weight `w` with
/// gradient `g` and moments `(m, v)` at step `step` (0-based): `(new w, new m, new v)`.
/// All inputs must be detached so that no graph is kept alive.
pub(crate) fn adamw(
    w: &Tensor,
    g: &Tensor,
    (m, v): (&Tensor, &Tensor),
    step: usize,
    lr: f64,
    weight_decay: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let t = (step + 1) as i32;
    let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    let m = ((m * b1)? + (g * (1.0 - b1))?)?;
    let v = ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
    let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + eps)?)?;
    let new = ((w * (1.0 - lr * weight_decay))? - (update * lr)?)?;
    Ok((new, m, v))
}

/// A run's per-parameter optimiser state: the AdamW moments and the EMA of the weights.
pub(crate) struct Moments<'a> {
    /// First moments.
    pub m: &'a mut [Tensor],
    /// Second moments.
    pub v: &'a mut [Tensor],
    /// EMA of the weights.
    pub ema: &'a mut [Tensor],
}

/// Back-propagate `loss` (refused when not finite) and give every parameter with a gradient
/// one AdamW update at step `step` (0-based) with learning rate `lr` and weight decay
/// `wd_ema.0`, then move its EMA toward it with decay `min(wd_ema.1, (1 + step) / (10 +
/// step))`. Returns the loss.
pub(crate) fn adamw_ema_step(
    loss: &Tensor,
    params: &[(String, Var)],
    state: Moments,
    step: usize,
    lr: f64,
    (weight_decay, ema_decay): (f64, f64),
) -> Result<f64> {
    let value = loss.to_scalar::<f32>()? as f64;
    if !value.is_finite() {
        bail!("the loss is {value} at step {step}");
    }
    let grads = loss.backward()?;
    let decay = ema_decay.min((1.0 + step as f64) / (10.0 + step as f64));
    for (i, (_, var)) in params.iter().enumerate() {
        let Some(g) = grads.get(var.as_tensor()) else {
            continue;
        };
        // Plain values from here on: nothing may keep this step's graph alive.
        let (new, m, v) = adamw(
            &var.as_tensor().detach(),
            &g.detach(),
            (&state.m[i], &state.v[i]),
            step,
            lr,
            weight_decay,
        )?;
        var.set(&new)?;
        state.ema[i] = ((&state.ema[i] * decay)? + (&new * (1.0 - decay))?)?;
        state.m[i] = m;
        state.v[i] = v;
    }
    Ok(value)
}

/// Redraw every randomly initialised parameter from `seed` (normal, with the standard
/// deviation measured on candle's draw); constant ones (norm weights) stay. candle's CPU
/// initialisers cannot be seeded. The values come from `seed`, but the standard deviation
/// is estimated from candle's unseeded draw, so two fresh runs agree only approximately.
/// (The tiny-CLIP trainer draws exactly from its seed with [`seeded_init`]; this trainer
/// keeps `reseed` so that fresh runs stay what the committed model's run was.)
pub(crate) fn reseed(params: &[(String, Var)], seed: u64) -> Result<()> {
    let mut init_rng = Rng::new(seed);
    for (_, var) in params {
        let t = var.as_tensor();
        let flat = t.flatten_all()?.to_vec1::<f32>()?;
        let var_ = variance(&flat);
        if var_ > 0.0 {
            let std = var_.sqrt();
            let data: Vec<f32> = (0..flat.len())
                .map(|_| (init_rng.normal() * std) as f32)
                .collect();
            var.set(&Tensor::from_vec(data, t.shape(), t.device())?)?;
        }
    }
    Ok(())
}

/// Training settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Architecture.
    pub arch: Arch,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Largest EMA decay.
    pub ema_decay: f64,
    /// Seed of the initial weights and the data stream.
    pub seed: u64,
    /// Standard deviation of the per-image, per-channel constant added to the training
    /// noise ("offset noise"). SD's scaled-linear schedule leaves √ᾱ_T ≈ 0.068 of the
    /// image in x_T, so a model trained on plain noise learns to read the background
    /// from the mean of x_T — which pure noise at generation time does not have, giving
    /// washed-out grey backgrounds. Hiding that mean behind an offset makes the model
    /// take the background from the text. 0 in checkpoints written before it existed.
    #[serde(default)]
    pub offset_noise: f64,
    /// Cosine decay of the learning rate from step `.0` to step `.1`, down to
    /// [`LR_FLOOR`] × `lr` (and held there); `None` keeps the peak rate after warm-up.
    #[serde(default)]
    pub lr_decay: Option<(usize, usize)>,
    /// Weight of a sample's ε-MSE: `min(1/ᾱ_t, high_noise_weight)` (1 = the plain ε loss).
    /// The ε loss weighs an error in the predicted image by SNR(t), so at the noisiest
    /// steps — where the layout of the image is decided — what the caption says about
    /// positions barely counts; 1/ᾱ_t is the weighting of a v-prediction loss.
    #[serde(default = "one")]
    pub high_noise_weight: f64,
    /// `(from, share)`: a `share` of the samples draws its timestep from `from..1000`
    /// instead of `0..1000`, so more of each batch is spent where the image is still
    /// noise and only the caption can say where objects go. `None` (the default, and in
    /// checkpoints written before it existed): every timestep equally often.
    #[serde(default)]
    pub high_noise_focus: Option<(usize, f64)>,
    /// Discount of the multi-resolution ("pyramid") training noise; 0 = plain noise (the
    /// default, and in checkpoints written before it existed). SD's schedule leaves
    /// √ᾱ_999 ≈ 0.068 of the image in x_T: averaged over a large object's 113 pixels that
    /// is about as strong as the white noise, so a model trained on white noise reads
    /// where the objects are from x_t itself, even at t = 999, and never needs the
    /// position words; at generation, pure noise has no such objects and the layout
    /// follows chance bumps of the seed. Low-frequency noise hides that signal, as
    /// offset noise hides the background's mean. (Generation still starts from plain
    /// noise.)
    #[serde(default)]
    pub pyramid_noise: f64,
    /// Share of training scenes with 1, 2 and 3 objects (sums to 1). Scenes with two or
    /// more objects are where the caption must bind each colour and shape to its place;
    /// checkpoints written before it existed use the stream's default mix.
    #[serde(default = "default_objects")]
    pub objects: [f64; 3],
}

fn one() -> f64 {
    1.0
}

fn default_objects() -> [f64; 3] {
    StreamConfig::default().p_objects
}

/// A sample's loss weight at timestep `t` (see [`TrainConfig::high_noise_weight`]).
pub fn loss_weight(alphas_cumprod: &[f64], t: usize, cap: f64) -> f64 {
    (1.0 / alphas_cumprod[t]).min(cap.max(1.0))
}

/// A training timestep: uniform over `0..steps`, or with probability `focus.1` uniform
/// over `focus.0..steps` (see [`TrainConfig::high_noise_focus`]).
pub fn draw_timestep(rng: &mut Rng, steps: usize, focus: Option<(usize, f64)>) -> usize {
    match focus {
        Some((from, share)) if from < steps && rng.chance(share) => from + rng.below(steps - from),
        _ => rng.below(steps),
    }
}

/// The share of the peak learning rate that a decay ends at.
pub const LR_FLOOR: f64 = 0.05;

/// The learning rate at `step` (0-based) under `config`: linear warm-up, then the peak
/// rate, then the cosine decay if one is set.
pub fn lr_at(config: &TrainConfig, step: usize) -> f64 {
    let w = config.warmup.max(1) as f64;
    let peak = config.lr * ((step + 1) as f64 / w).min(1.0);
    match config.lr_decay {
        Some((from, to)) if step >= from => {
            let span = to.saturating_sub(from).max(1) as f64;
            let p = ((step - from) as f64 / span).min(1.0);
            let cos = 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
            peak * (LR_FLOOR + (1.0 - LR_FLOOR) * cos)
        }
        _ => peak,
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            arch: Arch::standard(),
            batch: 32,
            lr: 1e-3,
            warmup: 200,
            weight_decay: 0.01,
            ema_decay: 0.999,
            seed: 0,
            offset_noise: 0.15,
            lr_decay: None,
            high_noise_weight: 1.0,
            high_noise_focus: None,
            pyramid_noise: 0.0,
            objects: default_objects(),
        }
    }
}

/// The JSON half of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Steps done.
    pub step: usize,
    /// Data RNG state.
    pub rng_state: u64,
    /// Settings (a resumed run keeps them).
    pub config: TrainConfig,
    /// `(step, mean loss)` every `log_every` steps.
    pub loss_log: Vec<(usize, f64)>,
    /// Seconds trained so far.
    pub train_seconds: f64,
}

/// A training run in memory.
pub struct Trainer {
    /// Settings.
    pub config: TrainConfig,
    varmap: VarMap,
    /// Sorted parameter names and their vars.
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    ema: Vec<Tensor>,
    unet: UNet,
    text: ClipTextEncoder,
    tokenizer: ClipTokenizer,
    alphas: Vec<f64>,
    rng: Rng,
    /// Steps done.
    pub step: usize,
    /// `(step, mean loss)` log.
    pub loss_log: Vec<(usize, f64)>,
    /// Seconds trained so far (this and earlier sessions).
    pub train_seconds: f64,
    device: Device,
}

const CKPT: &str = "checkpoint.safetensors";
const CKPT_META: &str = "checkpoint.json";
const FILES: checkpoint::Files = checkpoint::Files {
    tensors: CKPT,
    meta: CKPT_META,
    loss_plot: "loss.png",
};

impl Trainer {
    /// A fresh run (weights initialised from `config.seed`). `tokenizer_dir` receives the
    /// tokenizer files (they are loaded back through the shared tokenizer code).
    pub fn new(config: TrainConfig, tokenizer_dir: &Path) -> Result<Self> {
        Self::new_on(config, tokenizer_dir, Device::Cpu)
    }

    /// [`Trainer::new`] on `device` (a CUDA or Metal device trains the same f32 model).
    pub fn new_on(config: TrainConfig, tokenizer_dir: &Path, device: Device) -> Result<Self> {
        let (ucfg, ccfg) = config.arch.configs()?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let unet = UNet::new_trainable(vb.pp("unet"), &ucfg)?;
        let tvb = vb.pp("text_encoder").pp("text_model");
        let text = ClipTextEncoder::new_trainable(tvb, vb.pp("text_encoder"), &ccfg)?;
        vocab::save_tokenizer(tokenizer_dir)?;
        let mut tokenizer = ClipTokenizer::from_dir(tokenizer_dir)?;
        tokenizer.clamp_max_len(ccfg.max_position_embeddings);
        let params = checkpoint::sorted_params(&varmap);
        reseed(&params, config.seed)?;
        let m = checkpoint::zeros_like(&params)?;
        let v = checkpoint::zeros_like(&params)?;
        let ema = params
            .iter()
            .map(|(_, v)| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let seed = config.seed;
        Ok(Self {
            config,
            varmap,
            params,
            m,
            v,
            ema,
            unet,
            text,
            tokenizer,
            alphas: alphas_cumprod(),
            rng: Rng::new(seed.wrapping_add(0x5eed)),
            step: 0,
            loss_log: vec![],
            train_seconds: 0.0,
            device,
        })
    }

    /// Resume from `dir` when it holds a checkpoint, else start fresh with `config`.
    pub fn open(dir: &Path, config: TrainConfig) -> Result<Self> {
        Self::open_on(dir, config, Device::Cpu)
    }

    /// [`Trainer::open`] on `device`; a checkpoint written on one device resumes on another.
    pub fn open_on(dir: &Path, config: TrainConfig, device: Device) -> Result<Self> {
        let Some(meta) = checkpoint::read_meta::<CheckpointMeta>(dir, &FILES)? else {
            return Self::new_on(config, &dir.join("tokenizer"), device);
        };
        let mut t = Self::new_on(meta.config.clone(), &dir.join("tokenizer"), device)?;
        checkpoint::restore(
            &dir.join(CKPT),
            &t.device,
            &t.params,
            &mut [
                ("ema", &mut t.ema),
                ("adam_m", &mut t.m),
                ("adam_v", &mut t.v),
            ],
        )?;
        t.step = meta.step;
        t.rng = Rng::from_state(meta.rng_state);
        t.loss_log = meta.loss_log;
        t.train_seconds = meta.train_seconds;
        Ok(t)
    }

    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Parameter names (sorted).
    pub fn parameter_names(&self) -> Vec<String> {
        self.params.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The varmap (for tests).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Draw a batch: `(x0 (B,3,32,32), token ids (B, L), EOS positions)`.
    fn batch(&mut self, n: usize) -> Result<(Tensor, Tensor, Vec<usize>)> {
        let mut pixels = Vec::with_capacity(n * 3 * shapes::SIZE * shapes::SIZE);
        let mut ids = vec![];
        let mut eos = vec![];
        // The caption settings are the stream's defaults; the object mix is a training setting.
        let stream = StreamConfig {
            p_objects: self.config.objects,
            ..StreamConfig::default()
        };
        for _ in 0..n {
            let (scene, text) = training_pair(&mut self.rng, &stream);
            pixels.extend(shapes::to_model_pixels(&shapes::render(&scene)));
            let t = self.tokenizer.encode(&text)?;
            ensure!(t.truncated.is_none(), "caption too long: {text}");
            ids.extend(t.ids);
            eos.push(t.eos_position);
        }
        let len = ids.len() / n;
        let s = shapes::SIZE;
        Ok((
            Tensor::from_vec(pixels, (n, 3, s, s), &self.device)?,
            Tensor::from_vec(ids, (n, len), &self.device)?,
            eos,
        ))
    }

    /// The loss of one batch (the ε-prediction MSE), as a graph for backprop.
    pub fn loss(&mut self, n: usize) -> Result<Tensor> {
        let (x0, ids, eos) = self.batch(n)?;
        let ctx = self.text.forward(&ids, &eos)?.last_hidden_state;
        let mut ts = Vec::with_capacity(n);
        let mut a = Vec::with_capacity(n);
        let mut b = Vec::with_capacity(n);
        let mut weights = Vec::with_capacity(n);
        for _ in 0..n {
            let t = draw_timestep(
                &mut self.rng,
                self.alphas.len(),
                self.config.high_noise_focus,
            );
            ts.push(t as f32);
            weights.push(loss_weight(&self.alphas, t, self.config.high_noise_weight) as f32);
            a.push(self.alphas[t].sqrt() as f32);
            b.push((1.0 - self.alphas[t]).sqrt() as f32);
        }
        let noise = training_noise(
            &mut self.rng,
            x0.dims4()?,
            self.config.offset_noise,
            self.config.pyramid_noise,
        );
        let noise = Tensor::from_vec(noise, x0.shape(), &self.device)?;
        let a = Tensor::from_vec(a, (n, 1, 1, 1), &self.device)?;
        let b = Tensor::from_vec(b, (n, 1, 1, 1), &self.device)?;
        let xt = (x0.broadcast_mul(&a)? + noise.broadcast_mul(&b)?)?;
        let t = Tensor::from_vec(ts, n, &self.device)?;
        let pred = self.unet.forward_t(&xt, &t, &ctx, None)?;
        let se = (pred - noise)?.sqr()?;
        if self.config.high_noise_weight <= 1.0 {
            // Every weight is 1: the plain ε loss.
            return Ok(se.mean_all()?);
        }
        let per_sample = se.flatten_from(1)?.mean(1)?;
        let w = Tensor::from_vec(weights, n, &self.device)?;
        Ok((per_sample * w)?.mean_all()?)
    }

    /// The learning rate at the current step.
    fn lr(&self) -> f64 {
        lr_at(&self.config, self.step)
    }

    /// One optimisation step; returns the loss.
    pub fn train_step(&mut self) -> Result<f64> {
        let loss = self.loss(self.config.batch)?;
        let lr = self.lr();
        let value = adamw_ema_step(
            &loss,
            &self.params,
            Moments {
                m: &mut self.m,
                v: &mut self.v,
                ema: &mut self.ema,
            },
            self.step,
            lr,
            (self.config.weight_decay, self.config.ema_decay),
        )?;
        self.step += 1;
        Ok(value)
    }

    /// Train as `schedule` says, checkpointing into `dir`; `stop` is polled each step and
    /// `log` gets the loss lines.
    pub fn run(
        &mut self,
        dir: &Path,
        schedule: &steps::Schedule,
        stop: &dyn Fn() -> bool,
        log: &mut dyn FnMut(&str),
    ) -> Result<()> {
        steps::run(self, dir, schedule, stop, log)
    }

    /// Write `checkpoint.safetensors` + `checkpoint.json` (and the loss plot) atomically.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let meta = CheckpointMeta {
            step: self.step,
            rng_state: self.rng.state(),
            config: self.config.clone(),
            loss_log: self.loss_log.clone(),
            train_seconds: self.train_seconds,
        };
        checkpoint::write(
            dir,
            &FILES,
            &self.params,
            &[("ema", &self.ema), ("adam_m", &self.m), ("adam_v", &self.v)],
            &meta,
            &self.loss_log,
        )
    }

    /// Export the EMA weights (or the raw weights with `ema = false`) as a diffusers-style
    /// pipeline folder.
    pub fn export(&self, out: &Path, ema: bool) -> Result<()> {
        export_folder(
            out,
            &self.config.arch,
            self.params.iter().enumerate().map(|(i, (n, v))| {
                (
                    n.clone(),
                    if ema {
                        self.ema[i].clone()
                    } else {
                        v.as_tensor().clone()
                    },
                )
            }),
        )
    }
}

impl steps::Steps for Trainer {
    fn steps_done(&self) -> usize {
        self.step
    }

    fn train_step(&mut self) -> Result<f64> {
        Trainer::train_step(self)
    }

    fn add_train_seconds(&mut self, seconds: f64) {
        self.train_seconds += seconds;
    }

    fn log_loss(&mut self, mean: f64, steps_per_s: f64) -> String {
        self.loss_log.push((self.step, mean));
        format!(
            "step {:>7}  loss {:.5}  lr {:.2e}  {:.2} steps/s",
            self.step,
            mean,
            self.lr(),
            steps_per_s
        )
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        Trainer::save_checkpoint(self, dir)
    }
}

/// Write a diffusers-style folder from `unet.*` / `text_encoder.*` weights.
pub fn export_folder(
    out: &Path,
    arch: &Arch,
    weights: impl Iterator<Item = (String, Tensor)>,
) -> Result<()> {
    let mut unet = HashMap::new();
    let mut text = HashMap::new();
    for (name, t) in weights {
        if let Some(rest) = name.strip_prefix("unet.") {
            unet.insert(rest.to_string(), t);
        } else if let Some(rest) = name.strip_prefix("text_encoder.") {
            text.insert(rest.to_string(), t);
        } else {
            bail!("unexpected parameter {name}");
        }
    }
    for d in ["unet", "text_encoder", "tokenizer", "scheduler"] {
        std::fs::create_dir_all(out.join(d))?;
    }
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).map(String::into_bytes);
    write_map(&unet, &out.join("unet/diffusion_pytorch_model.safetensors"))?;
    crate::output::write_atomic(&out.join("unet/config.json"), &pretty(&arch.unet_json())?)?;
    write_map(&text, &out.join("text_encoder/model.safetensors"))?;
    crate::output::write_atomic(
        &out.join("text_encoder/config.json"),
        &pretty(&arch.text_json())?,
    )?;
    vocab::save_tokenizer(&out.join("tokenizer"))?;
    crate::output::write_atomic(
        &out.join("scheduler/scheduler_config.json"),
        &pretty(&scheduler_json())?,
    )?;
    let index = json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": null
    });
    crate::output::write_atomic(&out.join("model_index.json"), &pretty(&index)?)?;
    Ok(())
}

/// Save named tensors (as f32) to a safetensors file atomically.
pub(crate) fn write_map(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    crate::output::write_tensors(path, map.iter().map(|(k, t)| (k.as_str(), t)))
}

/// Copy the checkpoint folder `from` to `to` with the AdamW moments stored in bf16
/// (weights and EMA stay f32), about ¾ of the size, so it can be committed next to the
/// model. A run resumes from the copy (`adiff train shapes --out <copy of to>`); only the
/// moments lose precision.
pub fn pack_checkpoint(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to.join("tokenizer"))?;
    let map = candle_core::safetensors::load(from.join(CKPT), &Device::Cpu)
        .with_context(|| format!("cannot read {}", from.join(CKPT).display()))?;
    let packed = map
        .into_iter()
        .map(|(k, t)| {
            let t = if k.starts_with("adam_") {
                t.to_dtype(DType::BF16)?
            } else {
                t
            };
            Ok((k, t))
        })
        .collect::<Result<HashMap<_, _>>>()?;
    let bytes = safetensors::tensor::serialize(&packed, None)?;
    crate::output::write_atomic(&to.join(CKPT), &bytes)?;
    for f in [
        CKPT_META,
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
    ] {
        crate::output::write_atomic(&to.join(f), &std::fs::read(from.join(f))?)?;
    }
    Ok(())
}

/// Export the EMA (or raw) weights of the checkpoint in `from` as a model folder `to`.
pub fn export_from_checkpoint(from: &Path, to: &Path, ema: bool) -> Result<()> {
    let meta_path = from.join(CKPT_META);
    let meta: CheckpointMeta = serde_json::from_str(
        &std::fs::read_to_string(&meta_path)
            .with_context(|| format!("cannot read {}", meta_path.display()))?,
    )?;
    let map = candle_core::safetensors::load(from.join(CKPT), &Device::Cpu)?;
    let prefix = if ema { "ema/" } else { "param/" };
    let map: Vec<(String, Tensor)> = map
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    let weights = map
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix).map(|n| (n.to_string(), t)));
    export_folder(to, &meta.config.arch, weights)
}

/// Default output folder of `adiff train shapes` (ignored by git).
pub fn default_out_dir() -> PathBuf {
    PathBuf::from("target/shapes-train")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_weight_is_one_over_alpha_bar_capped() {
        let a = alphas_cumprod();
        assert_eq!(loss_weight(&a, 999, 1.0), 1.0, "cap 1 is the plain ε loss");
        assert_eq!(loss_weight(&a, 0, 50.0), 1.0 / a[0]);
        assert!((loss_weight(&a, 500, 50.0) - 1.0 / a[500]).abs() < 1e-12);
        assert!(1.0 / a[500] > 2.0 && 1.0 / a[500] < 50.0);
        assert_eq!(loss_weight(&a, 999, 50.0), 50.0, "1/ᾱ_999 ≈ 214 is capped");
        assert!(loss_weight(&a, 900, 50.0) >= loss_weight(&a, 800, 50.0));
    }

    #[test]
    fn focused_timesteps_favour_the_noisy_end_by_the_given_share() {
        let mut rng = Rng::new(7);
        let n = 20_000;
        let draws = |rng: &mut Rng, focus| {
            (0..n)
                .map(|_| draw_timestep(rng, 1000, focus))
                .collect::<Vec<_>>()
        };
        let plain = draws(&mut rng, None);
        let focused = draws(&mut rng, Some((600, 0.5)));
        let high = |v: &[usize]| v.iter().filter(|&&t| t >= 600).count() as f64 / n as f64;
        // Uniform: 40 % at t ≥ 600. Focused: 0.5 + 0.5 × 0.4 = 70 %.
        assert!((high(&plain) - 0.4).abs() < 0.02, "{}", high(&plain));
        assert!((high(&focused) - 0.7).abs() < 0.02, "{}", high(&focused));
        assert!(focused.iter().all(|&t| t < 1000) && focused.contains(&0));
        // A start past the end falls back to uniform draws.
        assert!((high(&draws(&mut rng, Some((1000, 1.0)))) - 0.4).abs() < 0.02);
    }

    #[test]
    fn lr_decays_by_cosine_between_the_given_steps() {
        let mut c = TrainConfig {
            warmup: 10,
            lr: 1e-3,
            ..TrainConfig::default()
        };
        assert!(
            (lr_at(&c, 0) - 1e-4).abs() < 1e-12,
            "warm-up starts at lr/10"
        );
        assert_eq!(lr_at(&c, 5000), 1e-3, "no decay set: the peak rate stays");
        c.lr_decay = Some((100, 300));
        assert_eq!(lr_at(&c, 99), 1e-3);
        assert!((lr_at(&c, 100) - 1e-3).abs() < 1e-12);
        let mid = 1e-3 * (LR_FLOOR + (1.0 - LR_FLOOR) * 0.5);
        assert!((lr_at(&c, 200) - mid).abs() < 1e-12, "{}", lr_at(&c, 200));
        assert!((lr_at(&c, 300) - 1e-3 * LR_FLOOR).abs() < 1e-12);
        assert!(
            (lr_at(&c, 9000) - 1e-3 * LR_FLOOR).abs() < 1e-12,
            "held at the floor"
        );
        assert!(lr_at(&c, 150) > lr_at(&c, 250), "falls monotonically");
    }

    /// Pyramid noise: unit variance per image, far more power at low frequencies than
    /// white noise (what hides a large object's faint trace at t = 999), and off exactly
    /// when the discount is 0.
    #[test]
    fn pyramid_noise_has_unit_variance_and_low_frequency_power() {
        let dims = (40, 3, 32, 32);
        let white = training_noise(&mut Rng::new(9), dims, 0.0, 0.0);
        let mut rng = Rng::new(9);
        let plain: Vec<f32> = (0..white.len()).map(|_| rng.normal() as f32).collect();
        assert_eq!(white, plain, "discount 0 draws the plain noise");
        let pyramid = training_noise(&mut Rng::new(9), dims, 0.0, 0.9);
        for image in pyramid.chunks(3 * 32 * 32) {
            let var = variance(image);
            assert!((var - 1.0).abs() < 1e-3, "{var}");
        }
        // Variance of the means of 8×8 blocks (a large object's scale).
        let block_var = |noise: &[f32]| {
            let mut means = vec![];
            for chan in noise.chunks(32 * 32) {
                for by in 0..4 {
                    for bx in 0..4 {
                        let mut s = 0.0;
                        for y in 0..8 {
                            for x in 0..8 {
                                s += chan[(by * 8 + y) * 32 + bx * 8 + x] as f64;
                            }
                        }
                        means.push(s / 64.0);
                    }
                }
            }
            means.iter().map(|m| m * m).sum::<f64>() / means.len() as f64
        };
        let (w, p) = (block_var(&white), block_var(&pyramid));
        assert!((w - 1.0 / 64.0).abs() < 0.005, "white: {w}");
        assert!(p > 10.0 * w, "pyramid {p} vs white {w}");
    }

    #[test]
    fn bilinear_upsampling_keeps_constants_and_corner_values() {
        let mut dst = vec![0.0f32; 8 * 8];
        add_upsampled(&mut dst, (8, 8), &[2.0; 4], (2, 2), 0.5);
        assert!(dst.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{dst:?}");
        let mut dst = vec![0.0f32; 8 * 8];
        add_upsampled(&mut dst, (8, 8), &[0.0, 1.0, 2.0, 3.0], (2, 2), 1.0);
        assert_eq!((dst[0], dst[7], dst[56], dst[63]), (0.0, 1.0, 2.0, 3.0));
        // Half way between the grid's cell centres (between pixels 3 and 4): the mean.
        assert!(((dst[3 * 8 + 3] + dst[4 * 8 + 4]) / 2.0 - 1.5).abs() < 1e-6);
        let row: Vec<f32> = dst[..8].to_vec();
        assert!(row.windows(2).all(|p| p[0] <= p[1]), "{row:?}");
    }

    /// Offset noise moves each plane's mean by N(0, offset²) and leaves the rest N(0, 1).
    #[test]
    fn offset_noise_shifts_each_plane() {
        let plane_stats = |offset: f64| {
            let mut rng = Rng::new(3);
            let (planes, plane) = (600, 256);
            let noise = training_noise(&mut rng, (planes, 1, 16, 16), offset, 0.0);
            let means: Vec<f64> = noise
                .chunks(plane)
                .map(|c| c.iter().map(|&v| v as f64).sum::<f64>() / plane as f64)
                .collect();
            let sd_of_means = (means.iter().map(|m| m * m).sum::<f64>() / planes as f64).sqrt();
            let within = noise
                .chunks(plane)
                .zip(&means)
                .map(|(c, m)| c.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>())
                .sum::<f64>()
                / (planes * plane) as f64;
            (sd_of_means, within.sqrt())
        };
        let (plain, plain_within) = plane_stats(0.0);
        let (offset, offset_within) = plane_stats(0.3);
        // Plain noise: the mean of 256 values has sd 1/16.
        assert!((plain - 1.0 / 16.0).abs() < 0.01, "{plain}");
        // With an offset of 0.3: sd √(0.3² + 1/256) ≈ 0.306.
        assert!((offset - 0.306).abs() < 0.03, "{offset}");
        assert!((plain_within - 1.0).abs() < 0.02 && (offset_within - 1.0).abs() < 0.02);
    }

    /// The training graph (composed softmax / layer norm, unfolded convolutions) computes
    /// what the inference code computes on the same weights.
    #[test]
    fn trainable_and_inference_models_agree() {
        let dev = Device::Cpu;
        let arch = Arch::tiny();
        let (ucfg, ccfg) = arch.configs().unwrap();
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let train_unet = UNet::new_trainable(vb.pp("u"), &ucfg).unwrap();
        let infer_unet = UNet::new(vb.pp("u"), &ucfg).unwrap();
        let train_text = ClipTextEncoder::new_trainable(vb.pp("t"), vb.pp("t"), &ccfg).unwrap();
        let infer_text = ClipTextEncoder::new(vb.pp("t"), vb.pp("t"), &ccfg).unwrap();
        let ids = Tensor::new(&[[0u32, 5, 7, 9, 1, 1, 1, 1]], &dev).unwrap();
        let a = train_text.forward(&ids, &[4]).unwrap().last_hidden_state;
        let b = infer_text.forward(&ids, &[4]).unwrap().last_hidden_state;
        let diff = |x: &Tensor, y: &Tensor| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(diff(&a, &b) < 1e-4, "text {}", diff(&a, &b));
        let ctx = Tensor::cat(&[&a, &a], 0).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &dev).unwrap();
        let t = Tensor::new(&[500f32, 500.0], &dev).unwrap();
        let p = train_unet.forward_t(&x, &t, &ctx, None).unwrap();
        let q = infer_unet.forward(&x, 500.0, &ctx, None).unwrap();
        assert!(diff(&p, &q) < 1e-3, "unet {}", diff(&p, &q));
    }
}
