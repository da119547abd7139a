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
//!
//! * [`arch`] — the model's size ([`Arch`]) and the configs it writes.
//! * [`optim`] — AdamW and the EMA, the step the trainers share.
//! * [`export`] — the diffusers-style folder, from a trainer or a checkpoint.
//! * Here: the training settings, the noise and timestep draws, [`Trainer`].

pub mod arch;
mod checkpoint;
pub mod clip;
pub mod eval;
pub mod export;
pub mod motion;
pub mod motion_eval;
pub mod optim;
pub mod plot;
pub mod probe;
pub mod seeded_init;
pub mod shift_probe;
pub mod steps;

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::model::text_encoder::ClipTextEncoder;
use crate::model::tokenizer::ClipTokenizer;
use crate::model::unet::UNet;
#[cfg(test)]
use crate::sampler::noise::add_upsampled;
use crate::sampler::noise::variance;
use crate::shapes::dataset::{StreamConfig, free_pair, training_pair};
use crate::shapes::{self, Rng, vocab};

pub use arch::{Arch, scheduler_json};
pub(crate) use export::write_map;
pub use export::{export_folder, export_from_checkpoint, pack_checkpoint};
pub(crate) use optim::{Group, Moments, adamw, adamw_ema_step, adamw_ema_step_groups, reseed};

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
            crate::sampler::noise::add_pyramid(image, (c, h, w), pyramid, || rng.normal());
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
    /// Share of training scenes whose objects are drawn anywhere in the picture, their
    /// caption naming no position (`shapes::dataset::free_pair`): an image model trained
    /// only on the five nominal places draws an object only there, so it cannot draw the
    /// frames of a clip in which the object travels between them. 0 (the default, and in
    /// checkpoints written before it existed): every object at a nominal place.
    #[serde(default)]
    pub free_placement: f64,
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
            free_placement: 0.0,
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
        let free = self.config.free_placement;
        for _ in 0..n {
            // Runs without free placement draw nothing for it (their stream is unchanged).
            let (image, text) = if free > 0.0 && self.rng.chance(free) {
                let (drawn, background, text) = free_pair(&mut self.rng, &stream);
                (shapes::render_drawn(background.rgb(), &drawn), text)
            } else {
                let (scene, text) = training_pair(&mut self.rng, &stream);
                (shapes::render(&scene), text)
            };
            pixels.extend(shapes::to_model_pixels(&image));
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

/// Default output folder of `adiff train shapes` (ignored by git).
pub fn default_out_dir() -> PathBuf {
    PathBuf::from("target/shapes-train")
}

#[cfg(test)]
mod tests;
