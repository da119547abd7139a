//! A tiny CLIP for the shapes world: a ViT image tower and the shapes model's word-level
//! text tower, trained contrastively on the same rendered scenes and captions, exported
//! as a transformers `CLIPModel` folder that the CLIP-alignment metric
//! ([`crate::metrics::clip::ClipScorer`]) loads like any CLIP.
//!
//! Training captions follow the diffusion model's held-out rule, so the evaluation
//! ([`rank_accuracy`]) ranks captions of a form never seen in training.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use candle_core::{D, DType, Device, IndexOp, Module, Tensor, Var};
use candle_nn::{Init, LayerNorm, Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::metrics::clip::{ClipPreprocess, ClipScorer, cosine};
use crate::model::config::{ClipConfig, ClipJson};
use crate::model::layers::Kernels;
use crate::model::text_encoder::{ClipTextEncoder, EncoderLayer};
use crate::model::tokenizer::ClipTokenizer;
use crate::model::{cpu_conv, unet};
use crate::shapes::dataset::{StreamConfig, eval_prompt, training_caption, training_scene};
use crate::shapes::{self, Rng, Scene, vocab};

use super::{checkpoint, steps};

/// Sizes of the tiny CLIP (both towers share width, depth and heads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipArch {
    /// Transformer width of both towers.
    pub width: usize,
    /// Layers per tower.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// ViT patch side (divides 32).
    pub patch: usize,
    /// Shared embedding size.
    pub projection: usize,
}

impl ClipArch {
    /// The committed scorer's size.
    pub fn standard() -> Self {
        Self {
            width: 64,
            layers: 2,
            heads: 4,
            patch: 4,
            projection: 64,
        }
    }

    /// A very small one for tests.
    pub fn tiny() -> Self {
        Self {
            width: 32,
            layers: 1,
            heads: 2,
            patch: 8,
            projection: 32,
        }
    }

    /// `standard` or `tiny`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "standard" => Ok(Self::standard()),
            "tiny" => Ok(Self::tiny()),
            _ => bail!("unknown CLIP architecture '{s}': use standard or tiny"),
        }
    }

    fn text_json(&self) -> Value {
        json!({
            "vocab_size": vocab::vocab_size(),
            "hidden_size": self.width,
            "intermediate_size": 4 * self.width,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "max_position_embeddings": vocab::MAX_LEN,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
            "projection_dim": self.projection
        })
    }

    fn vision_json(&self) -> Value {
        json!({
            "hidden_size": self.width,
            "intermediate_size": 4 * self.width,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "image_size": shapes::SIZE,
            "patch_size": self.patch,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": self.projection
        })
    }

    /// transformers `CLIPConfig` (`config.json`).
    pub fn config_json(&self) -> Value {
        json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection,
            "logit_scale_init_value": 2.6592,
            "text_config": self.text_json(),
            "vision_config": self.vision_json()
        })
    }

    fn text_config(&self) -> Result<ClipConfig> {
        let j: ClipJson = serde_json::from_value(self.text_json())?;
        let mut c = ClipConfig::from_json(&j, Path::new("config.json"))?;
        // The CLIPModel's `text_projection` (from_json sets it only for
        // CLIPTextModelWithProjection configs).
        c.projection_dim = Some(self.projection);
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        ensure!(
            self.patch > 0 && shapes::SIZE.is_multiple_of(self.patch),
            "the patch side {} does not divide {}",
            self.patch,
            shapes::SIZE
        );
        ensure!(
            self.heads > 0 && self.width.is_multiple_of(self.heads),
            "{} heads do not divide the width {}",
            self.heads,
            self.width
        );
        Ok(())
    }
}

/// The ViT image tower (transformers `CLIPVisionTransformer`), trainable.
struct VisionTower {
    patch_weight: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_ln: LayerNorm,
    layers: Vec<EncoderLayer>,
    post_ln: LayerNorm,
    patch: usize,
}

impl VisionTower {
    fn new(vb: VarBuilder, arch: &ClipArch, layer_config: &ClipConfig) -> Result<Self> {
        let (w, p) = (arch.width, arch.patch);
        let positions = (shapes::SIZE / p).pow(2) + 1;
        let emb = vb.pp("embeddings");
        let normal = |stdev: f64| Init::Randn { mean: 0.0, stdev };
        Ok(Self {
            patch_weight: emb.get_with_hints(
                (w, 3, p, p),
                "patch_embedding.weight",
                normal(0.02),
            )?,
            class_embedding: emb.get_with_hints(w, "class_embedding", normal(0.02))?,
            position_embedding: emb.get_with_hints(
                (positions, w),
                "position_embedding.weight",
                normal(0.02),
            )?,
            pre_ln: candle_nn::layer_norm(w, 1e-5, vb.pp("pre_layrnorm"))?,
            layers: (0..arch.layers)
                .map(|i| {
                    EncoderLayer::new(
                        vb.pp("encoder").pp("layers").pp(i),
                        layer_config,
                        Kernels::Autograd,
                    )
                })
                .collect::<candle_core::Result<Vec<_>>>()?,
            post_ln: candle_nn::layer_norm(w, 1e-5, vb.pp("post_layernorm"))?,
            patch: p,
        })
    }

    /// `(B, 3, 32, 32)` normalised pixels → pooled `(B, width)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.patch;
        let e = if cpu_conv::applies(x) {
            cpu_conv::conv2d_trainable(x, &self.patch_weight, None, p, 0)?
        } else {
            crate::model::layers::conv2d_unfold(x, &self.patch_weight, None, p, 0)?
        };
        let (b, w, _, _) = e.dims4()?;
        let e = e.flatten_from(2)?.transpose(1, 2)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, w))?
            .broadcast_as((b, 1, w))?
            .contiguous()?;
        let x = Tensor::cat(&[&cls, &e], 1)?.broadcast_add(&self.position_embedding)?;
        let mut x = unet::layer_norm(&self.pre_ln, &x, Kernels::Autograd)?;
        let n = x.dim(1)?;
        let mask = Tensor::zeros((1, n, n), x.dtype(), x.device())?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask)?;
        }
        let pooled = x.i((.., 0, ..))?;
        Ok(unet::layer_norm(&self.post_ln, &pooled, Kernels::Autograd)?)
    }
}

/// `x / ‖x‖` along the last dim.
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// Mean cross-entropy of each row of `logits (B, B)` against the diagonal.
fn diagonal_cross_entropy(logits: &Tensor) -> Result<Tensor> {
    let n = logits.dim(0)?;
    let max = logits.max_keepdim(1)?.detach();
    let lse = (logits.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + max)?;
    let eye = Tensor::eye(n, logits.dtype(), logits.device())?;
    let diag = (logits * eye)?.sum_keepdim(1)?;
    Ok((lse - diag)?.mean_all()?)
}

/// Settings of a CLIP training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipTrainConfig {
    /// Sizes.
    pub arch: ClipArch,
    /// Images (and captions) per batch: the contrastive batch.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed of the data stream.
    pub seed: u64,
}

impl Default for ClipTrainConfig {
    fn default() -> Self {
        Self {
            arch: ClipArch::standard(),
            batch: 64,
            lr: 5e-4,
            warmup: 100,
            weight_decay: 0.1,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClipCheckpointMeta {
    step: usize,
    rng_state: u64,
    config: ClipTrainConfig,
    loss_log: Vec<(usize, f64)>,
    train_seconds: f64,
}

const FILES: checkpoint::Files = checkpoint::Files {
    tensors: "clip-checkpoint.safetensors",
    meta: "clip-checkpoint.json",
    loss_plot: "clip-loss.png",
};

/// A tiny-CLIP training run.
pub struct ClipTrainer {
    /// Settings.
    pub config: ClipTrainConfig,
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    text: ClipTextEncoder,
    vision: VisionTower,
    visual_projection: Linear,
    logit_scale: Tensor,
    tokenizer: ClipTokenizer,
    preprocess: ClipPreprocess,
    stream: StreamConfig,
    rng: Rng,
    device: Device,
    /// Steps done.
    pub step: usize,
    /// `(step, mean loss)` log.
    pub loss_log: Vec<(usize, f64)>,
    /// Seconds trained (all sessions).
    pub train_seconds: f64,
    _varmap: VarMap,
}

impl ClipTrainer {
    /// A fresh run; the tokenizer files are written to `tokenizer_dir`.
    pub fn new(config: ClipTrainConfig, tokenizer_dir: &Path, device: Device) -> Result<Self> {
        config.arch.check()?;
        ensure!(
            config.batch >= 2,
            "a contrastive batch needs at least 2 pairs"
        );
        let varmap = VarMap::new();
        let vb = super::seeded_init::SeededVarMap::new(&varmap, config.seed)
            .builder(DType::F32, &device);
        let text_config = config.arch.text_config()?;
        let text = ClipTextEncoder::new_trainable(vb.pp("text_model"), vb.clone(), &text_config)?;
        let vision = VisionTower::new(vb.pp("vision_model"), &config.arch, &text_config)?;
        let visual_projection = candle_nn::linear_no_bias(
            config.arch.width,
            config.arch.projection,
            vb.pp("visual_projection"),
        )?;
        let logit_scale = vb.get_with_hints((), "logit_scale", Init::Const(2.6592))?;
        vocab::save_tokenizer(tokenizer_dir)?;
        let mut tokenizer = ClipTokenizer::from_dir(tokenizer_dir)?;
        tokenizer.clamp_max_len(vocab::MAX_LEN);
        let params = checkpoint::sorted_params(&varmap);
        let m = checkpoint::zeros_like(&params)?;
        let v = m.clone();
        let rng = Rng::new(config.seed ^ 0xC11F);
        Ok(Self {
            config,
            params,
            m,
            v,
            text,
            vision,
            visual_projection,
            logit_scale,
            tokenizer,
            preprocess: ClipPreprocess::square(shapes::SIZE),
            stream: StreamConfig {
                p_uncond: 0.0,
                ..StreamConfig::default()
            },
            rng,
            device,
            step: 0,
            loss_log: vec![],
            train_seconds: 0.0,
            _varmap: varmap,
        })
    }

    /// Resume from `dir` when it holds a checkpoint, else start a new run there.
    pub fn open(dir: &Path, config: ClipTrainConfig, device: Device) -> Result<Self> {
        let Some(meta) = checkpoint::read_meta::<ClipCheckpointMeta>(dir, &FILES)? else {
            return Self::new(config, &dir.join("tokenizer"), device);
        };
        let mut t = Self::new(meta.config.clone(), &dir.join("tokenizer"), device)?;
        checkpoint::restore(
            &dir.join(FILES.tensors),
            &t.device,
            &t.params,
            &mut [("adam_m", &mut t.m), ("adam_v", &mut t.v)],
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

    /// Normalised pixels `(1, 3, 32, 32)` of a rendered image, exactly as the scorer
    /// prepares them.
    fn pixels(&self, img: &image::RgbImage) -> Result<Tensor> {
        self.preprocess.pixel_values(img, &self.device)
    }

    /// Unit-length image and text embeddings of a batch of (image, caption) pairs.
    fn embed(&self, images: &[image::RgbImage], captions: &[String]) -> Result<(Tensor, Tensor)> {
        let px = images
            .iter()
            .map(|i| self.pixels(i))
            .collect::<Result<Vec<_>>>()?;
        let px = Tensor::cat(&px, 0)?;
        let img = self.visual_projection.forward(&self.vision.forward(&px)?)?;
        let mut ids = vec![];
        let mut eos = vec![];
        for c in captions {
            let t = self.tokenizer.encode(c)?;
            ensure!(t.truncated.is_none(), "caption too long: {c}");
            ids.extend(t.ids);
            eos.push(t.eos_position);
        }
        let len = ids.len() / captions.len().max(1);
        let ids = Tensor::from_vec(ids, (captions.len(), len), &self.device)?;
        let txt = self
            .text
            .forward(&ids, &eos)?
            .text_embeds
            .context("the text tower has no projection")?;
        Ok((l2_normalize(&img)?, l2_normalize(&txt)?))
    }

    /// A batch of distinct, non-empty training captions and their renders.
    fn batch(&mut self) -> (Vec<image::RgbImage>, Vec<String>) {
        let mut images = Vec::with_capacity(self.config.batch);
        let mut captions: Vec<String> = Vec::with_capacity(self.config.batch);
        while captions.len() < self.config.batch {
            let scene = training_scene(&mut self.rng, &self.stream);
            let caption = training_caption(&mut self.rng, &scene, &self.stream);
            if caption.is_empty() || captions.contains(&caption) {
                continue;
            }
            images.push(shapes::render(&scene));
            captions.push(caption);
        }
        (images, captions)
    }

    /// The symmetric contrastive loss of one batch, as a graph.
    pub fn loss(&mut self) -> Result<Tensor> {
        let (images, captions) = self.batch();
        let (img, txt) = self.embed(&images, &captions)?;
        let scale = self.logit_scale.exp()?;
        let logits = img.matmul(&txt.t()?)?.broadcast_mul(&scale)?;
        let a = diagonal_cross_entropy(&logits)?;
        let b = diagonal_cross_entropy(&logits.t()?.contiguous()?)?;
        Ok(((a + b)? * 0.5)?)
    }

    fn lr(&self) -> f64 {
        let w = self.config.warmup.max(1) as f64;
        self.config.lr * ((self.step + 1) as f64 / w).min(1.0)
    }

    /// One optimisation step; returns the loss.
    pub fn train_step(&mut self) -> Result<f64> {
        let loss = self.loss()?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            bail!("the CLIP loss is {value} at step {}", self.step);
        }
        let grads = loss.backward()?;
        let lr = self.lr();
        for (i, (name, var)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // No weight decay on the temperature, biases and norms (as CLIP).
            let wd = if name.ends_with(".weight") && !name.contains("norm") {
                self.config.weight_decay
            } else {
                0.0
            };
            let (new, m, v) = super::adamw(
                &var.as_tensor().detach(),
                &g.detach(),
                (&self.m[i], &self.v[i]),
                self.step,
                lr,
                wd,
            )?;
            // CLIP clamps the temperature at 100 (ln 100 ≈ 4.6052).
            let new = if name == "logit_scale" {
                new.clamp(0f32, 4.6052f32)?
            } else {
                new
            };
            var.set(&new)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        self.step += 1;
        Ok(value)
    }

    /// Train as `schedule` says (or until a file `STOP` appears in `dir`), checkpointing
    /// into `dir`; `log` gets the loss lines.
    pub fn run(
        &mut self,
        dir: &Path,
        schedule: &steps::Schedule,
        log: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let stop = steps::stop_file(dir);
        steps::run(self, dir, schedule, &stop, log)
    }

    /// Write the checkpoint (weights, AdamW moments, data position) atomically.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let meta = ClipCheckpointMeta {
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
            &[("adam_m", &self.m), ("adam_v", &self.v)],
            &meta,
            &self.loss_log,
        )
    }

    /// Write a transformers `CLIPModel` folder: `config.json`, `model.safetensors`,
    /// the tokenizer files.
    pub fn export(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let weights: HashMap<String, Tensor> = self
            .params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        super::write_map(&weights, &out.join("model.safetensors"))?;
        crate::output::write_atomic(
            &out.join("config.json"),
            serde_json::to_string_pretty(&self.config.arch.config_json())?.as_bytes(),
        )?;
        vocab::save_tokenizer(out)?;
        Ok(())
    }

    /// Cosine of the trainer's own embeddings of one image and one caption (for checking
    /// an export against the scorer).
    pub fn cosine(&self, img: &image::RgbImage, caption: &str) -> Result<f64> {
        let (a, b) = self.embed(std::slice::from_ref(img), &[caption.to_string()])?;
        cosine(&a.detach(), &b.detach())
    }
}

impl steps::Steps for ClipTrainer {
    fn steps_done(&self) -> usize {
        self.step
    }

    fn train_step(&mut self) -> Result<f64> {
        ClipTrainer::train_step(self)
    }

    fn add_train_seconds(&mut self, seconds: f64) {
        self.train_seconds += seconds;
    }

    fn log_loss(&mut self, mean: f64, steps_per_s: f64) -> String {
        self.loss_log.push((self.step, mean));
        format!(
            "clip step {:>6}  loss {:.4}  lr {:.2e}  {:.2} steps/s",
            self.step,
            mean,
            self.lr(),
            steps_per_s
        )
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        ClipTrainer::save_checkpoint(self, dir)
    }
}

/// How often the true caption ranks first.
#[derive(Debug, Clone, Serialize)]
pub struct RankScore {
    /// Group: `single` or `pair`.
    pub group: String,
    /// Renders ranked.
    pub renders: usize,
    /// True caption first.
    pub top1: usize,
    /// Candidates per render (the true caption included).
    pub candidates: usize,
}

/// Rank each held-out render's true caption (colour, shape, position, background — a form
/// never used as a training caption) among `candidates − 1` captions of other random
/// scenes with as many objects: `n_single` single-object renders (cycling through the
/// held-out combinations) and `n_pairs` two-object ones.
pub fn rank_accuracy(
    scorer: &ClipScorer,
    n_single: usize,
    n_pairs: usize,
    candidates: usize,
    seed: u64,
) -> Result<Vec<RankScore>> {
    ensure!(candidates >= 2, "ranking needs at least 2 candidates");
    let mut rng = Rng::new(seed);
    let mut text_cache: HashMap<String, Tensor> = HashMap::new();
    let mut out = vec![];
    for (group, scenes) in super::eval::held_out_groups(n_single, n_pairs, seed ^ 0x5EED) {
        let mut score = RankScore {
            group: group.into(),
            renders: 0,
            top1: 0,
            candidates,
        };
        for scene in &scenes {
            let truth = eval_prompt(scene);
            let mut texts = vec![truth.clone()];
            while texts.len() < candidates {
                let mut other = Scene::random(&mut rng, scene.objects.len());
                for o in &mut other.objects {
                    o.jitter = (0, 0);
                }
                let t = eval_prompt(&other);
                if !texts.contains(&t) {
                    texts.push(t);
                }
            }
            let img = scorer.image_features(&shapes::render(scene))?;
            let mut sims = Vec::with_capacity(texts.len());
            for t in &texts {
                if !text_cache.contains_key(t) {
                    text_cache.insert(t.clone(), scorer.text_features(t)?);
                }
                sims.push(cosine(&img, &text_cache[t])?);
            }
            score.renders += 1;
            score.top1 += sims[1..].iter().all(|&s| s < sims[0]) as usize;
        }
        out.push(score);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::dataset::held_out_single;

    fn tiny_trainer(dir: &Path) -> ClipTrainer {
        ClipTrainer::new(
            ClipTrainConfig {
                arch: ClipArch::tiny(),
                batch: 16,
                lr: 2e-3,
                warmup: 5,
                ..ClipTrainConfig::default()
            },
            &dir.join("tokenizer"),
            Device::Cpu,
        )
        .unwrap()
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("adiff-clip-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The initial weights come from the seed (seeded_init), so a fresh run is repeatable.
    #[test]
    fn two_fresh_runs_with_one_seed_are_the_same_run() {
        let (d1, d2) = (temp("same-1"), temp("same-2"));
        let (mut a, mut b) = (tiny_trainer(&d1), tiny_trainer(&d2));
        for _ in 0..3 {
            assert_eq!(a.train_step().unwrap(), b.train_step().unwrap());
        }
        let _ = std::fs::remove_dir_all(d1);
        let _ = std::fs::remove_dir_all(d2);
    }

    #[test]
    fn contrastive_loss_falls_and_the_export_loads_in_the_scorer() {
        let dir = temp("train");
        let mut t = tiny_trainer(&dir);
        let losses: Vec<f64> = (0..40).map(|_| t.train_step().unwrap()).collect();
        let first = losses[..8].iter().sum::<f64>() / 8.0;
        let last = losses[32..].iter().sum::<f64>() / 8.0;
        // Chance level for a batch of 16 is ln 16 ≈ 2.77.
        assert!(first > 2.0, "first losses {first}");
        eprintln!("contrastive loss {first:.3} → {last:.3}");
        assert!(last < first - 0.3, "loss did not fall: {first} → {last}");

        let out = dir.join("export");
        t.export(&out).unwrap();
        let scorer = ClipScorer::from_dir(&out, &Device::Cpu).unwrap();
        let scene = held_out_single()[0].clone();
        let img = shapes::render(&scene);
        for caption in [eval_prompt(&scene), "a blue square".to_string()] {
            let ours = t.cosine(&img, &caption).unwrap();
            let theirs = scorer.score(&img, &caption).unwrap().cosine;
            assert!(
                (ours - theirs).abs() < 1e-4,
                "{caption}: trainer {ours} vs scorer {theirs}"
            );
        }
        let ranks = rank_accuracy(&scorer, 3, 2, 8, 1).unwrap();
        assert_eq!(ranks.len(), 2);
        assert_eq!(ranks[0].renders, 3);
        assert!(ranks.iter().all(|r| r.top1 <= r.renders));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_checkpoint_resumes_the_same_run() {
        let dir = temp("resume");
        let mut a = ClipTrainer::open(
            &dir,
            ClipTrainConfig {
                arch: ClipArch::tiny(),
                batch: 4,
                ..ClipTrainConfig::default()
            },
            Device::Cpu,
        )
        .unwrap();
        a.train_step().unwrap();
        a.save_checkpoint(&dir).unwrap();
        let next_a = a.train_step().unwrap();
        let mut b = ClipTrainer::open(&dir, ClipTrainConfig::default(), Device::Cpu).unwrap();
        assert_eq!(b.step, 1);
        assert_eq!(b.config.arch, ClipArch::tiny());
        let next_b = b.train_step().unwrap();
        assert!((next_a - next_b).abs() < 1e-5, "{next_a} vs {next_b}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_architectures_are_errors() {
        assert!(ClipArch::parse("huge").is_err());
        let bad = ClipArch {
            patch: 5,
            ..ClipArch::tiny()
        };
        assert!(bad.check().is_err());
    }
}
