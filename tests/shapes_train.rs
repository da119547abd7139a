//! Training the built-in shapes model: gradients reach every parameter, a few dozen steps
//! make the loss fall, checkpoints resume exactly, and an export loads through the shared
//! `StableDiffusion` code and generates an image with the sampler.

use adaptive_diffusion::model::StableDiffusion;
use adaptive_diffusion::sampler::SchedulerKind;
use adaptive_diffusion::train::eval::Generator;
use adaptive_diffusion::train::{Arch, TrainConfig, Trainer};
use candle_core::{DType, Device};

fn tiny(batch: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        arch: Arch::tiny(),
        batch,
        lr: 2e-3,
        warmup: 5,
        seed,
        ..TrainConfig::default()
    }
}

#[test]
fn gradients_reach_every_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(tiny(4, 1), &dir.path().join("tok")).unwrap();
    let loss = t.loss(4).unwrap();
    let grads = loss.backward().unwrap();
    let data = t.varmap().data().lock().unwrap();
    let mut missing = vec![];
    let mut zero = vec![];
    for (name, var) in data.iter() {
        match grads.get(var.as_tensor()) {
            None => missing.push(name.clone()),
            Some(g) => {
                let s = g
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                if s.is_nan() || s <= 0.0 {
                    zero.push(name.clone());
                }
            }
        }
    }
    assert!(missing.is_empty(), "no gradient for {missing:?}");
    assert!(zero.is_empty(), "zero gradient for {zero:?}");
    assert!(data.len() > 50, "{} parameters", data.len());
}

#[test]
fn a_few_dozen_steps_make_the_loss_fall_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut t = Trainer::open(&out, tiny(16, 7)).unwrap();
    let mut losses = vec![];
    for _ in 0..40 {
        losses.push(t.train_step().unwrap());
    }
    let first: f64 = losses[..8].iter().sum::<f64>() / 8.0;
    let last: f64 = losses[32..].iter().sum::<f64>() / 8.0;
    assert!(
        last < 0.8 * first,
        "loss {first:.4} → {last:.4}: {losses:?}"
    );

    // Checkpoint, continue two steps; resuming from the checkpoint gives the same steps.
    t.save_checkpoint(&out).unwrap();
    let a: Vec<f64> = (0..2).map(|_| t.train_step().unwrap()).collect();
    let mut r = Trainer::open(&out, tiny(16, 999)).unwrap();
    assert_eq!(r.step, 40);
    let b: Vec<f64> = (0..2).map(|_| r.train_step().unwrap()).collect();
    assert_eq!(a, b);
    assert!(out.join("loss.png").is_file() || r.loss_log.len() < 2);

    // A packed copy (moments in bf16) resumes too: same first loss, training goes on.
    let packed = dir.path().join("packed");
    adaptive_diffusion::train::pack_checkpoint(&out, &packed).unwrap();
    let mut p = Trainer::open(&packed, tiny(16, 5)).unwrap();
    assert_eq!(p.step, 40);
    assert_eq!(p.train_step().unwrap(), a[0]);

    // Export → load through the shared pipeline code → generate.
    let model = dir.path().join("model");
    r.export(&model, true).unwrap();
    assert!(!model.join("vae").exists());
    let sd = StableDiffusion::load_dir(&model, &Device::Cpu, DType::F32).unwrap();
    assert!(sd.is_pixel_space());
    assert_eq!(sd.latent_shape(32, 32).unwrap(), (1, 3, 32, 32));
    assert_eq!(sd.default_size(), (32, 32));
    let g = Generator::load(&model).unwrap();
    let img = g
        .generate(
            "a red circle at the top left on a gray background",
            3,
            SchedulerKind::Ddim,
            4,
            3.0,
        )
        .unwrap();
    assert_eq!(img.dimensions(), (32, 32));
    let again = g
        .generate(
            "a red circle at the top left on a gray background",
            3,
            SchedulerKind::Ddim,
            4,
            3.0,
        )
        .unwrap();
    assert_eq!(img, again);
    // The word-level tokenizer went through the shared tokenizer code.
    let tok = &sd.tokenizers()[0];
    let ids = tok.encode("a red circle").unwrap();
    assert_eq!(ids.ids[0], tok.bos_id());
    assert_eq!(ids.eos_position, 4);
}
