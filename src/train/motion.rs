//! Training the built-in shapes model's motion module, the AnimateDiff way: the image
//! model (UNet and text encoder) frozen, an AnimateDiff motion adapter (temporal
//! transformers after each UNet layer, `proj_out` zero at the start so the untrained
//! module changes nothing) trained on the clips of [`crate::shapes::motion`] with the
//! image model's own loss (ε-prediction, offset + pyramid noise, high-noise weighting).
//!
//! Two additions to AnimateDiff, both recorded in the exported module:
//! * **Motion words.** The image vocabulary has no "moving", "up", "growing", … . New
//!   token embeddings for them (appended after the image words, so every image word keeps
//!   its id and embedding) are trained with the module; the module's folder carries the
//!   extended text encoder and tokenizer, which replace the model's when it is loaded.
//! * **Shared noise** ([`crate::model::motion::MotionConfig::shared_noise`]): a clip's
//!   frames share part of their noise, in training and at generation.
//!
//! Checkpoints (weights, EMA, AdamW moments, data RNG, loss log) are written atomically;
//! a run on a folder that holds one resumes from it bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::checkpoint;
use super::seeded_init::SeededVarMap;
use super::{
    Group, Moments, adamw_ema_step_groups, alphas_cumprod, draw_timestep, loss_weight, lr_at,
    training_noise,
};
use crate::model::config::{ClipConfig, ClipJson, UNetConfig};
use crate::model::motion::{MotionConfig, MotionModules, Temporal};
use crate::model::text_encoder::ClipTextEncoder;
use crate::model::tokenizer::ClipTokenizer;
use crate::model::unet::{ModuleCache, UNet};
use crate::sampler::noise_motion::NoiseMotion;
use crate::shapes::motion::{TRAIN_FRAMES, training_clip};
use crate::shapes::{self, Rng, vocab};

/// Training settings (a resumed run keeps them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MotionTrainConfig {
    /// Clips per batch.
    pub batch: usize,
    /// Frames per clip.
    pub frames: usize,
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
    /// Attention heads of every temporal transformer.
    pub heads: usize,
    /// GroupNorm groups of every temporal transformer.
    pub groups: usize,
    /// Frames the position table covers.
    pub max_seq_length: usize,
    /// Share of the noise a clip's frames share.
    pub shared_noise: f64,
    /// Offset noise (as the image model's training).
    pub offset_noise: f64,
    /// Pyramid noise discount (as the image model's training).
    pub pyramid_noise: f64,
    /// Loss weight cap `min(1/ᾱ_t, cap)`.
    pub high_noise_weight: f64,
    /// `(from, share)` of timesteps drawn from `from..1000`.
    pub high_noise_focus: Option<(usize, f64)>,
    /// Cosine decay of the learning rate between these steps.
    pub lr_decay: Option<(usize, usize)>,
    /// Extra loss weight where a clip changes: a pixel of frame `f` weighs
    /// `1 + k·|x0_f − mean over the clip's frames|` (channel mean; 0 = plain ε MSE).
    #[serde(default)]
    pub motion_weight: f64,
    /// The image UNet's learning rate as a share of the module's: 0 keeps it frozen (the
    /// AnimateDiff way); more trains it with the module — a domain adapter, as AnimateDiff
    /// v3's, since the frozen image model only ever saw objects at five places and a clip's
    /// frames need them anywhere on their path. Exported as the module folder's `unet/`.
    #[serde(default)]
    pub base_lr_scale: f64,
    /// The step the image UNet's training began at (its AdamW moments start there).
    #[serde(default)]
    pub base_since: usize,
    /// Warped noise: a clip's shared noise moves with its motion (each frame a window of
    /// one larger canvas, [`crate::sampler::noise_motion`]), so the layout the noise
    /// suggests travels the way the objects do; the exported module carries the motion
    /// words that move it at generation.
    #[serde(default)]
    pub warped_noise: bool,
}

impl Default for MotionTrainConfig {
    fn default() -> Self {
        Self {
            batch: 4,
            frames: TRAIN_FRAMES,
            lr: 1e-3,
            warmup: 100,
            weight_decay: 0.01,
            ema_decay: 0.995,
            seed: 0,
            heads: 2,
            groups: 8,
            max_seq_length: 16,
            shared_noise: 0.5,
            offset_noise: 0.15,
            pyramid_noise: 0.9,
            high_noise_weight: 50.0,
            high_noise_focus: Some((600, 0.5)),
            lr_decay: None,
            motion_weight: 0.0,
            base_lr_scale: 0.0,
            base_since: 0,
            warped_noise: false,
        }
    }
}

impl MotionTrainConfig {
    /// As a shapes [`super::TrainConfig`], for the shared learning-rate schedule.
    fn lr_config(&self) -> super::TrainConfig {
        super::TrainConfig {
            lr: self.lr,
            warmup: self.warmup,
            lr_decay: self.lr_decay,
            ..Default::default()
        }
    }
}

/// The shared noise of a batch of clips (`motions`: each clip's, from its scene), frame by
/// frame (`clips × frames × 3 × size²`): with `warped`, a clip that travels has its frames
/// cut from one canvas as its motion says ([`crate::sampler::noise_motion`]); otherwise
/// every frame of a clip has the same draw. `noise` is (offset, pyramid) as the image
/// model's training.
fn shared_noise(
    rng: &mut Rng,
    motions: &[Option<NoiseMotion>],
    (f, s): (usize, usize),
    (offset, pyramid): (f64, f64),
    warped: bool,
) -> Vec<f32> {
    let plane = 3 * s * s;
    let b = motions.len();
    if !warped {
        // One draw per clip, the same in every frame.
        let one = training_noise(rng, (b, 3, s, s), offset, pyramid);
        return (0..b * f)
            .flat_map(|i| one[(i / f) * plane..(i / f + 1) * plane].iter().copied())
            .collect();
    }
    let mut all = Vec::with_capacity(b * f * plane);
    for m in motions.iter().map(|m| m.unwrap_or(NoiseMotion::STILL)) {
        let (ch, cw) = m.canvas((s, s));
        let canvas = training_noise(rng, (1, 3, ch, cw), offset, pyramid);
        for frame in m.frames(&canvas, 3, (s, s), f) {
            all.extend(frame);
        }
    }
    all
}

/// The noise rules a module trained with `config` carries: the motion words when its
/// noise was warped, none otherwise.
fn noise_rules(config: &MotionTrainConfig) -> Vec<crate::sampler::noise_motion::NoiseMotionRule> {
    if config.warped_noise {
        crate::shapes::motion::Motion::noise_rules()
    } else {
        vec![]
    }
}

/// The JSON half of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MotionMeta {
    /// Steps done.
    pub step: usize,
    /// Data RNG state.
    pub rng_state: u64,
    /// Settings.
    pub config: MotionTrainConfig,
    /// The image model trained on (its folder as given).
    pub base: PathBuf,
    /// `(step, mean loss)` log.
    pub loss_log: Vec<(usize, f64)>,
    /// Seconds trained so far.
    pub train_seconds: f64,
}

const FILES: checkpoint::Files = checkpoint::Files {
    tensors: "checkpoint.safetensors",
    meta: "checkpoint.json",
    loss_plot: "loss.png",
};

/// Whether `dir` holds a motion-module checkpoint.
pub fn has_checkpoint(dir: &Path) -> bool {
    dir.join(FILES.meta).is_file()
}

/// The name of the new token embeddings among the parameters.
const NEW_ROWS: &str = "text_new_rows";
/// The text encoder's token table in the image model's file.
const TOKEN_TABLE: &str = "text_model.embeddings.token_embedding.weight";

/// A motion-module training run in memory.
pub struct MotionTrainer {
    /// Settings.
    pub config: MotionTrainConfig,
    base: PathBuf,
    varmap: VarMap,
    /// Trained parameters (sorted by name): the modules and the new token rows.
    params: Vec<(String, Var)>,
    /// Fixed tensors of the module (the sinusoidal position tables).
    fixed: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    ema: Vec<Tensor>,
    unet: UNet,
    /// Trained parameters `params[base_from..]` are the image UNet's (`unet.` + its names).
    base_from: usize,
    /// The image UNet's `config.json` (copied into an export that carries the UNet).
    unet_json: serde_json::Value,
    modules: MotionModules,
    motion_config: MotionConfig,
    text_tensors: HashMap<String, Tensor>,
    text_config: ClipConfig,
    text_json: serde_json::Value,
    tokenizer: ClipTokenizer,
    alphas: Vec<f64>,
    rng: Rng,
    /// Steps done.
    pub step: usize,
    /// `(step, mean loss)` log.
    pub loss_log: Vec<(usize, f64)>,
    /// Seconds trained so far.
    pub train_seconds: f64,
    device: Device,
}

/// The sinusoidal position table of diffusers' `SinusoidalPositionalEmbedding`
/// (`(1, len, dim)`: sin on even, cos on odd channels).
pub fn position_table(len: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let mut pe = vec![0f32; len * dim];
    for pos in 0..len {
        for i in (0..dim).step_by(2) {
            let div = (-(10000f64.ln()) * i as f64 / dim as f64).exp();
            let a = pos as f64 * div;
            pe[pos * dim + i] = a.sin() as f32;
            if i + 1 < dim {
                pe[pos * dim + i + 1] = a.cos() as f32;
            }
        }
    }
    Ok(Tensor::from_vec(pe, (1, len, dim), device)?)
}

/// Per-pixel loss weights of `clips` clips of `frames` frames of `plane` pixels × 3
/// channels (model pixels, clip-major): `1 + k·|x − clip mean|` averaged over channels, so
/// the loss leans on what moves; `None` when `k` is 0.
fn motion_weights(
    pixels: &[f32],
    (clips, frames, plane): (usize, usize, usize),
    k: f64,
) -> Option<Vec<f32>> {
    if k <= 0.0 {
        return None;
    }
    let image = 3 * plane;
    let mut out = vec![0f32; clips * frames * plane];
    for c in 0..clips {
        let clip = &pixels[c * frames * image..(c + 1) * frames * image];
        for i in 0..image {
            let mean = (0..frames).map(|f| clip[f * image + i]).sum::<f32>() / frames as f32;
            for f in 0..frames {
                let d = (clip[f * image + i] - mean).abs();
                out[(c * frames + f) * plane + i % plane] += d * k as f32 / 3.0;
            }
        }
    }
    out.iter_mut().for_each(|w| *w += 1.0);
    Some(out)
}

impl MotionTrainer {
    /// A fresh run on the image model folder `base` (pixel-space shapes model).
    pub fn new(base: &Path, config: MotionTrainConfig, tokenizer_dir: &Path) -> Result<Self> {
        let device = Device::Cpu;
        let unet_dir = base.join("unet");
        // Read once: resolved for the model, kept as written for an export that carries it.
        let unet_config = unet_dir.join("config.json");
        let unet_json: serde_json::Value = crate::model::config::read_json(&unet_config)?;
        let ucfg = UNetConfig::from_json(
            &serde_json::from_value(unet_json.clone())
                .with_context(|| format!("reading {}", unet_config.display()))?,
            &unet_config,
        )?;
        let unet_file = unet_dir.join("diffusion_pytorch_model.safetensors");
        let files = crate::model::checkpoint::check_all(std::slice::from_ref(&unet_file))?;
        let base_map = VarMap::new();
        let unet = if config.base_lr_scale > 0.0 {
            // Trainable: every weight a variable, set from the image model's file.
            let unet = UNet::new_trainable(
                VarBuilder::from_varmap(&base_map, DType::F32, &device).pp("unet"),
                &ucfg,
            )?;
            let stored = candle_core::safetensors::load(&unet_file, &device)?;
            for (name, var) in checkpoint::sorted_params(&base_map) {
                let key = name.strip_prefix("unet.").unwrap_or(&name);
                let t = stored
                    .get(key)
                    .with_context(|| format!("{} lacks {key}", unet_file.display()))?;
                ensure!(
                    t.dims() == var.dims(),
                    "{} has {key} shaped {:?}, the UNet wants {:?}",
                    unet_file.display(),
                    t.dims(),
                    var.dims()
                );
                var.set(&t.to_dtype(DType::F32)?)?;
            }
            unet
        } else {
            UNet::new_trainable(
                crate::model::checkpoint::var_builder(&files, DType::F32, &device)?,
                &ucfg,
            )?
        };
        let widths: Vec<usize> = ucfg.down.iter().map(|b| b.out_channels).collect();
        let layers = ucfg.down.first().map_or(1, |b| b.layers);
        let motion_config = MotionConfig {
            block_out_channels: widths,
            layers_per_block: layers,
            heads: config.heads,
            groups: config.groups,
            max_seq_length: config.max_seq_length,
            mid_block: true,
            shared_noise: config.shared_noise,
            noise_motion: noise_rules(&config),
            noise_pyramid: config.pyramid_noise,
            // A newly trained module has not been evaluated.
            evaluated: Vec::new(),
            evaluated_by: None,
        };

        // The frozen text encoder, and its config with the motion words.
        let te = base.join("text_encoder");
        let text_tensors = candle_core::safetensors::load(te.join("model.safetensors"), &device)
            .with_context(|| format!("reading {}", te.display()))?;
        let table = text_tensors
            .get(TOKEN_TABLE)
            .with_context(|| format!("{} has no {TOKEN_TABLE}", te.display()))?;
        let (old_rows, hidden) = table.dims2()?;
        ensure!(
            old_rows == vocab::vocab_size(),
            "{} has {old_rows} token embeddings, the shapes vocabulary {}: not a shapes model",
            te.display(),
            vocab::vocab_size()
        );
        let mut text_json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(te.join("config.json"))?)?;
        text_json["vocab_size"] = json!(vocab::video_vocab_size());
        let cj: ClipJson = serde_json::from_value(text_json.clone())?;
        let text_config = ClipConfig::from_json(&cj, &te.join("config.json"))?;
        vocab::save_video_tokenizer(tokenizer_dir)?;
        let mut tokenizer = ClipTokenizer::from_dir(tokenizer_dir)?;
        tokenizer.clamp_max_len(text_config.max_position_embeddings);

        // Trained: the modules (seeded) and the new rows.
        let varmap = VarMap::new();
        let vb = SeededVarMap::new(&varmap, config.seed).builder(DType::F32, &device);
        let modules = MotionModules::new_trainable(vb.clone(), &motion_config)?;
        let new = vocab::video_vocab_size() - old_rows;
        varmap.get(
            (new, hidden),
            NEW_ROWS,
            candle_nn::init::ZERO,
            DType::F32,
            &device,
        )?;
        // The new words start where the known ones are: their mean, plus a little noise.
        let mean = table.mean_keepdim(0)?;
        let std = table.broadcast_sub(&mean)?.sqr()?.mean_all()?.sqrt()?;
        let mut init_rng = Rng::new(config.seed ^ 0x0077_0a7d);
        let noise: Vec<f32> = (0..new * hidden)
            .map(|_| init_rng.normal() as f32 * 0.3)
            .collect();
        let noise = Tensor::from_vec(noise, (new, hidden), &device)?.broadcast_mul(&std)?;
        let rows_init = mean.broadcast_add(&noise)?;
        // Position tables are fixed; proj_out starts at zero (AnimateDiff's zero_module).
        let mut fixed = vec![];
        let mut params = vec![];
        for (name, var) in checkpoint::sorted_params(&varmap) {
            if name.ends_with("pos_embed.pe") {
                let (_, len, dim) = var.as_tensor().dims3()?;
                let pe = position_table(len, dim, &device)?;
                var.set(&pe)?;
                fixed.push((name, pe));
            } else {
                if name == NEW_ROWS {
                    var.set(&rows_init)?;
                }
                if name.contains(".proj_out.") {
                    var.set(&var.as_tensor().zeros_like()?)?;
                }
                params.push((name, var));
            }
        }
        let base_from = params.len();
        params.extend(checkpoint::sorted_params(&base_map));
        let m = checkpoint::zeros_like(&params)?;
        let v = checkpoint::zeros_like(&params)?;
        let ema = params
            .iter()
            .map(|(_, v)| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let seed = config.seed;
        Ok(Self {
            config,
            base: base.to_path_buf(),
            varmap,
            params,
            fixed,
            m,
            v,
            ema,
            unet,
            base_from,
            unet_json,
            modules,
            motion_config,
            text_tensors,
            text_config,
            text_json,
            tokenizer,
            alphas: alphas_cumprod(),
            rng: Rng::new(seed.wrapping_add(0x0c11_95ee)),
            step: 0,
            loss_log: vec![],
            train_seconds: 0.0,
            device,
        })
    }

    /// Resume from `dir` when it holds a checkpoint (its base and settings win), else start
    /// fresh on `base` with `config`.
    pub fn open(dir: &Path, base: &Path, config: MotionTrainConfig) -> Result<Self> {
        Self::open_adjusted(dir, base, config, None)
    }

    /// [`Self::open`]; a resumed run takes `base_lr_scale` when given (the image UNet
    /// joins the training at the checkpoint's step, or leaves it).
    pub fn open_adjusted(
        dir: &Path,
        base: &Path,
        mut config: MotionTrainConfig,
        base_lr_scale: Option<f64>,
    ) -> Result<Self> {
        let Some(meta) = checkpoint::read_meta::<MotionMeta>(dir, &FILES)? else {
            if let Some(k) = base_lr_scale {
                config.base_lr_scale = k;
            }
            return Self::new(base, config, &dir.join("tokenizer"));
        };
        let mut config = meta.config.clone();
        let joins = match base_lr_scale {
            Some(k) if k <= 0.0 && config.base_lr_scale > 0.0 => {
                anyhow::bail!(
                    "this run trains the image UNet (at {}× the learning rate since step {}); freezing it now would drop what it learned: give a share above 0, or start a new run",
                    config.base_lr_scale,
                    config.base_since
                );
            }
            Some(k) => {
                let joins = config.base_lr_scale == 0.0 && k > 0.0;
                if joins {
                    config.base_since = meta.step;
                }
                config.base_lr_scale = k;
                joins
            }
            None => false,
        };
        let mut t = Self::new(&meta.base, config, &dir.join("tokenizer"))?;
        checkpoint::restore_some(
            &dir.join(FILES.tensors),
            &t.device,
            &t.params,
            &mut [
                ("ema", &mut t.ema),
                ("adam_m", &mut t.m),
                ("adam_v", &mut t.v),
            ],
            &|name| joins && name.starts_with("unet."),
        )?;
        t.step = meta.step;
        t.rng = Rng::from_state(meta.rng_state);
        t.loss_log = meta.loss_log;
        t.train_seconds = meta.train_seconds;
        Ok(t)
    }

    /// Number of trained scalars.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The varmap (for tests).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The text encoder with the new rows `rows` after the frozen table.
    fn text_encoder(&self, rows: &Tensor) -> Result<ClipTextEncoder> {
        let mut t = self.text_tensors.clone();
        let table = Tensor::cat(&[&t[TOKEN_TABLE], rows], 0)?;
        t.insert(TOKEN_TABLE.to_string(), table);
        let vb = VarBuilder::from_tensors(t, DType::F32, &self.device);
        Ok(ClipTextEncoder::new_trainable(
            vb.pp("text_model"),
            vb.clone(),
            &self.text_config,
        )?)
    }

    fn rows(&self) -> Result<Tensor> {
        let (_, var) = self
            .params
            .iter()
            .find(|(n, _)| n == NEW_ROWS)
            .context("no new token rows")?;
        Ok(var.as_tensor().clone())
    }

    /// The loss of one batch (weighted ε MSE over every frame), as a graph.
    pub fn loss(&mut self) -> Result<Tensor> {
        self.loss_in(None)
    }

    /// [`Self::loss`] with every clip's timestep drawn from `band` (`lo..hi`) when given.
    fn loss_in(&mut self, band: Option<(usize, usize)>) -> Result<Tensor> {
        let (b, f) = (self.config.batch, self.config.frames);
        let s = shapes::SIZE;
        let mut pixels = Vec::with_capacity(b * f * 3 * s * s);
        let (mut ids, mut eos) = (vec![], vec![]);
        let mut motions = Vec::with_capacity(b);
        for _ in 0..b {
            let (clip, caption) = training_clip(&mut self.rng);
            motions.push(clip.motion().and_then(|m| m.noise_motion()));
            for frame in clip.render(f) {
                pixels.extend(shapes::to_model_pixels(&frame));
            }
            let t = self.tokenizer.encode(&caption)?;
            ensure!(t.truncated.is_none(), "caption too long: {caption}");
            ids.extend(t.ids);
            eos.push(t.eos_position);
        }
        let len = ids.len() / b;
        let pixel_weights = motion_weights(&pixels, (b, f, s * s), self.config.motion_weight);
        let x0 = Tensor::from_vec(pixels, (b * f, 3, s, s), &self.device)?;
        let ids = Tensor::from_vec(ids, (b, len), &self.device)?;
        let text = self.text_encoder(&self.rows()?)?;
        let ctx = text.forward(&ids, &eos)?.last_hidden_state;
        let ctx = crate::model::clip_layout::per_frame(&ctx, f)?;
        let (mut ts, mut a, mut bn, mut weights) = (vec![], vec![], vec![], vec![]);
        for _ in 0..b {
            let t = match band {
                Some((lo, hi)) => lo + self.rng.below(hi.saturating_sub(lo).max(1)),
                None => draw_timestep(
                    &mut self.rng,
                    self.alphas.len(),
                    self.config.high_noise_focus,
                ),
            };
            let w = loss_weight(&self.alphas, t, self.config.high_noise_weight) as f32;
            for _ in 0..f {
                ts.push(t as f32);
                weights.push(w);
                a.push(self.alphas[t].sqrt() as f32);
                bn.push((1.0 - self.alphas[t]).sqrt() as f32);
            }
        }
        let dims = (b * f, 3, s, s);
        let own = training_noise(
            &mut self.rng,
            dims,
            self.config.offset_noise,
            self.config.pyramid_noise,
        );
        let share = self.config.shared_noise.clamp(0.0, 1.0);
        let (ks, ko) = (share.sqrt() as f32, (1.0 - share).sqrt() as f32);
        let shared = shared_noise(
            &mut self.rng,
            &motions,
            (f, s),
            (self.config.offset_noise, self.config.pyramid_noise),
            self.config.warped_noise,
        );
        let noise: Vec<f32> = own
            .iter()
            .zip(&shared)
            .map(|(&e, &sh)| ko * e + ks * sh)
            .collect();
        let noise = Tensor::from_vec(noise, dims, &self.device)?;
        let a = Tensor::from_vec(a, (b * f, 1, 1, 1), &self.device)?;
        let bn = Tensor::from_vec(bn, (b * f, 1, 1, 1), &self.device)?;
        let xt = (x0.broadcast_mul(&a)? + noise.broadcast_mul(&bn)?)?;
        let t = Tensor::from_vec(ts, b * f, &self.device)?;
        let pred = self.unet.forward_motion(
            &xt,
            &t,
            &ctx,
            Temporal {
                modules: &self.modules,
                frames: f,
            },
            &mut ModuleCache::default(),
        )?;
        let err = (pred - noise)?.sqr()?;
        let per_frame = match pixel_weights {
            None => err.flatten_from(1)?.mean(1)?,
            Some(pw) => {
                let pw = Tensor::from_vec(pw, (b * f, 1, s, s), &self.device)?;
                let total = pw.flatten_from(1)?.sum(1)?.affine(3.0, 0.0)?;
                (err.broadcast_mul(&pw)?.flatten_from(1)?.sum(1)? / total)?
            }
        };
        let w = Tensor::from_vec(weights, b * f, &self.device)?;
        Ok((per_frame * w)?.mean_all()?)
    }

    fn lr(&self) -> f64 {
        lr_at(&self.config.lr_config(), self.step)
    }

    /// The loss per band of timesteps (`lo..hi` each, within the schedule's 1000) over
    /// `batches` batches drawn from `seed`: `(with, without)` — with the modules as trained,
    /// and with every temporal transformer's `proj_out` zeroed (each module then passes its
    /// input through: the image model alone, the frames tied only by their shared noise) —
    /// on the same clips, timesteps and noise. Says whether, and at which noise levels, the
    /// module lowers the loss at all. The trained weights (not the EMA) are measured; the
    /// run's weights and random stream are left as they were.
    pub fn loss_by_band(
        &mut self,
        bands: &[(usize, usize)],
        batches: usize,
        seed: u64,
    ) -> Result<Vec<(f64, f64)>> {
        ensure!(batches > 0, "loss by band: no batches");
        for &(lo, hi) in bands {
            ensure!(
                lo < hi && hi <= self.alphas.len(),
                "timestep band {lo}..{hi} is not within 0..{}",
                self.alphas.len()
            );
        }
        let saved_rng = self.rng.clone();
        let outs: Vec<(Var, Tensor)> = self
            .params
            .iter()
            .filter(|(n, _)| !n.starts_with("unet.") && n.contains("proj_out"))
            .map(|(_, v)| Ok((v.clone(), v.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        ensure!(!outs.is_empty(), "the motion modules have no proj_out");
        let mut result = Vec::with_capacity(bands.len());
        let run = |t: &mut Self, band: (usize, usize)| -> Result<f64> {
            let mut sum = 0.0;
            for i in 0..batches {
                t.rng = Rng::new(seed.wrapping_add(i as u64));
                sum += t.loss_in(Some(band))?.to_scalar::<f32>()? as f64;
            }
            Ok(sum / batches as f64)
        };
        for &band in bands {
            let with = run(self, band)?;
            for (v, _) in &outs {
                v.set(&v.as_tensor().zeros_like()?)?;
            }
            let without = run(self, band);
            for (v, kept) in &outs {
                v.set(kept)?;
            }
            result.push((with, without?));
        }
        self.rng = saved_rng;
        Ok(result)
    }

    /// Switch warped noise on (or off) with this share of the noise shared, for the steps
    /// to come (a resumed run too); the export records both.
    pub fn set_warped_noise(&mut self, on: bool, share: f64) {
        self.config.warped_noise = on;
        self.config.shared_noise = share;
        self.motion_config.shared_noise = share;
        self.motion_config.noise_motion = noise_rules(&self.config);
    }

    /// One optimisation step; returns the loss.
    pub fn train_step(&mut self) -> Result<f64> {
        let loss = self.loss()?;
        let lr = self.lr();
        let (base_from, base) = (
            self.base_from,
            Group {
                lr_scale: self.config.base_lr_scale,
                since: self.config.base_since,
            },
        );
        let value = adamw_ema_step_groups(
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
            &|i| {
                if i >= base_from {
                    base
                } else {
                    Group::default()
                }
            },
        )?;
        self.step += 1;
        Ok(value)
    }

    /// Train as `schedule` says, checkpointing into `dir`.
    pub fn run(
        &mut self,
        dir: &Path,
        schedule: &super::steps::Schedule,
        stop: &dyn Fn() -> bool,
        log: &mut dyn FnMut(&str),
    ) -> Result<()> {
        super::steps::run(self, dir, schedule, stop, log)
    }

    /// Write the checkpoint atomically.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let meta = MotionMeta {
            step: self.step,
            rng_state: self.rng.state(),
            config: self.config.clone(),
            base: self.base.clone(),
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

    /// Write the module as a `MotionAdapter` folder `out` (EMA weights, or the raw ones):
    /// `config.json`, `diffusion_pytorch_model.safetensors`, and the motion words'
    /// `text_encoder/` and `tokenizer/`. Written into a sibling folder and renamed into
    /// place, so `out` is never half-written.
    pub fn export(&self, out: &Path, ema: bool) -> Result<()> {
        let tmp = out.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("text_encoder"))?;
        let mut module: HashMap<String, Tensor> = self.fixed.iter().cloned().collect();
        let mut unet: HashMap<String, Tensor> = HashMap::new();
        let mut rows = None;
        for (i, (name, var)) in self.params.iter().enumerate() {
            let t = if ema {
                self.ema[i].clone()
            } else {
                var.as_tensor().clone()
            };
            if name == NEW_ROWS {
                rows = Some(t);
            } else if i >= self.base_from {
                let key = name.strip_prefix("unet.").unwrap_or(name);
                unet.insert(key.to_string(), t);
            } else {
                module.insert(name.clone(), t);
            }
        }
        if !unet.is_empty() {
            std::fs::create_dir_all(tmp.join("unet"))?;
            crate::output::write_json(&tmp.join("unet/config.json"), &self.unet_json)?;
            crate::output::write_tensors(
                &tmp.join("unet/diffusion_pytorch_model.safetensors"),
                unet.iter().map(|(k, v)| (k.as_str(), v)),
            )?;
        }
        let c = &self.motion_config;
        let config = json!({
            "_class_name": "MotionAdapter",
            "_diffusers_version": "0.30.0",
            "block_out_channels": c.block_out_channels,
            "motion_layers_per_block": c.layers_per_block,
            "motion_transformer_layers_per_block": 1,
            "motion_mid_block_layers_per_block": 1,
            "motion_num_attention_heads": c.heads,
            "motion_norm_num_groups": c.groups,
            "motion_max_seq_length": c.max_seq_length,
            "use_motion_mid_block": c.mid_block,
            "conv_in_channels": null,
            "shared_noise": c.shared_noise,
            "noise_motion": c.noise_motion,
            "noise_pyramid": c.noise_pyramid,
        });
        crate::output::write_json(&tmp.join("config.json"), &config)?;
        crate::output::write_tensors(
            &tmp.join("diffusion_pytorch_model.safetensors"),
            module.iter().map(|(k, v)| (k.as_str(), v)),
        )?;
        let mut text = self.text_tensors.clone();
        let rows = rows.context("no new token rows")?;
        let table = Tensor::cat(&[&text[TOKEN_TABLE], &rows], 0)?;
        text.insert(TOKEN_TABLE.to_string(), table);
        crate::output::write_tensors(
            &tmp.join("text_encoder/model.safetensors"),
            text.iter().map(|(k, v)| (k.as_str(), v)),
        )?;
        crate::output::write_json(&tmp.join("text_encoder/config.json"), &self.text_json)?;
        vocab::save_video_tokenizer(&tmp.join("tokenizer"))?;
        if out.exists() {
            std::fs::remove_dir_all(out)?;
        }
        std::fs::rename(&tmp, out)?;
        Ok(())
    }
}

impl super::steps::Steps for MotionTrainer {
    fn steps_done(&self) -> usize {
        self.step
    }

    fn train_step(&mut self) -> Result<f64> {
        MotionTrainer::train_step(self)
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
        MotionTrainer::save_checkpoint(self, dir)
    }
}

#[cfg(test)]
#[path = "motion_tests.rs"]
mod tests;
