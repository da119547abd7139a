//! Tests of the motion-module trainer.

use super::*;
use crate::model::kernels::layers::tests::max_abs_diff;
use crate::shapes::motion::Motion;

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/shapes")
}

/// A run to `n` steps, logging every step, checkpointing only at the end.
fn schedule(n: usize) -> super::super::steps::Schedule {
    super::super::steps::Schedule {
        total_steps: n,
        log_every: 1,
        ckpt_every_s: 1e9,
    }
}

/// A tensor's values, flattened.
fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn small() -> MotionTrainConfig {
    MotionTrainConfig {
        batch: 1,
        frames: 3,
        ..Default::default()
    }
}

#[test]
fn motion_weights_lean_on_changing_pixels_only() {
    // One clip of 2 frames, 2 pixels: pixel 0 still, pixel 1 flips from -1 to 1 in
    // every channel.
    let frame = |v: f32| [0.5, v, 0.5, v, 0.5, v];
    let pixels: Vec<f32> = [frame(-1.0), frame(1.0)].concat();
    assert!(motion_weights(&pixels, (1, 2, 2), 0.0).is_none());
    let w = motion_weights(&pixels, (1, 2, 2), 2.0).unwrap();
    assert_eq!(w, vec![1.0, 3.0, 1.0, 3.0]);
}

#[test]
fn position_table_is_diffusers_sinusoid() {
    let pe = position_table(4, 6, &Device::Cpu).unwrap();
    let v = values(&pe);
    // pos 0: sin 0 = 0, cos 0 = 1.
    assert_eq!(&v[..6], &[0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    // pos 2, channel 2: sin(2 · 10000^(-2/6)).
    let want = (2.0f64 * (-(10000f64.ln()) * 2.0 / 6.0).exp()).sin() as f32;
    assert!((v[2 * 6 + 2] - want).abs() < 1e-6);
}

#[test]
fn a_fresh_module_changes_nothing_and_only_it_and_the_new_words_train() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = MotionTrainer::new(&base(), small(), &dir.path().join("tok")).unwrap();
    // Zero proj_out: the UNet with the fresh modules is the image UNet.
    let x = Tensor::randn(0f32, 1.0, (3, 3, 32, 32), &Device::Cpu).unwrap();
    let ts = Tensor::full(500f32, 3, &Device::Cpu).unwrap();
    let ctx = Tensor::randn(0f32, 1.0, (3, 8, 64), &Device::Cpu).unwrap();
    let with = t
        .unet
        .forward_motion(
            &x,
            &ts,
            &ctx,
            Temporal {
                modules: &t.modules,
                frames: 3,
            },
            &mut ModuleCache::default(),
        )
        .unwrap();
    let without = t.unet.forward_t(&x, &ts, &ctx, None).unwrap();
    let d = max_abs_diff(&with, &without);
    assert!(d < 1e-5, "{d}");
    // A step moves the modules' proj_out and the new rows, nothing frozen.
    let before = t.rows().unwrap().copy().unwrap();
    let loss = t.train_step().unwrap();
    assert!(loss.is_finite());
    let moved = max_abs_diff(&t.rows().unwrap(), &before);
    assert!(moved > 0.0);
    assert!(t.params.iter().all(|(n, _)| !n.ends_with("pos_embed.pe")));
    assert!(t.num_parameters() > 10_000);
}

#[test]
fn the_image_unet_joins_a_resumed_run_and_its_export_replaces_the_models() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    // One step with the image UNet frozen, then resumed with it trained.
    let mut a = MotionTrainer::open(&ck, &base(), small()).unwrap();
    a.run(&ck, &schedule(1), &|| false, &mut |_| {}).unwrap();
    assert_eq!(a.base_from, a.params.len());
    let mut b = MotionTrainer::open_adjusted(&ck, &base(), small(), Some(0.5)).unwrap();
    assert_eq!((b.config.base_lr_scale, b.config.base_since), (0.5, 1));
    assert!(b.base_from < b.params.len());
    let (i, name) = (b.base_from, b.params[b.base_from].0.clone());
    assert!(name.starts_with("unet."), "{name}");
    let before = b.params[i].1.as_tensor().copy().unwrap();
    // The UNet starts as the image model's file says.
    let stored = candle_core::safetensors::load(
        base().join("unet/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let file = &stored[name.strip_prefix("unet.").unwrap()];
    assert_eq!(values(&before), values(file));
    b.run(&ck, &schedule(2), &|| false, &mut |_| {}).unwrap();
    let moved = max_abs_diff(b.params[i].1.as_tensor(), &before);
    assert!(moved > 0.0);
    // Freezing it again would drop what it learned: refused.
    let e = MotionTrainer::open_adjusted(&ck, &base(), small(), Some(0.0))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("would drop what it learned"), "{e}");
    // Resumed again: the UNet's weights come back from the checkpoint.
    let c = MotionTrainer::open(&ck, &base(), small()).unwrap();
    assert_eq!(
        values(c.params[i].1.as_tensor()),
        values(b.params[i].1.as_tensor())
    );
    // The export carries the UNet, and loading the module puts it in the model's place.
    let out = dir.path().join("motion");
    b.export(&out, false).unwrap();
    assert!(
        out.join("unet/diffusion_pytorch_model.safetensors")
            .is_file()
    );
    let files = crate::model::ModelSource::Local(base())
        .resolve(&crate::model::HubOptions::default())
        .unwrap();
    let mut parts = crate::model::parts::Parts::folder(&files).unwrap();
    parts
        .add_motion(&out, &crate::model::HubOptions::default())
        .unwrap();
    assert_eq!(parts.unet_file, out.join("unet/config.json"));
    assert_eq!(
        parts.unet.files[0].path,
        out.join("unet/diffusion_pytorch_model.safetensors")
    );
    // A UNet of another shape is refused by name.
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("unet/config.json")).unwrap()).unwrap();
    cfg["block_out_channels"] = json!([16, 32, 32]);
    crate::output::write_json(&out.join("unet/config.json"), &cfg).unwrap();
    let mut parts = crate::model::parts::Parts::folder(&files).unwrap();
    let e = parts
        .add_motion(&out, &crate::model::HubOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("brings its own image UNet"), "{e}");
}

#[test]
fn resume_continues_bit_for_bit_and_export_loads_as_a_motion_module() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut a = MotionTrainer::open(&ck, &base(), small()).unwrap();
    a.run(&ck, &schedule(1), &|| false, &mut |_| {}).unwrap();
    let mut b = MotionTrainer::open(&ck, &base(), small()).unwrap();
    assert_eq!(b.step, 1);
    b.run(&ck, &schedule(2), &|| false, &mut |_| {}).unwrap();
    a.run(&ck, &schedule(2), &|| false, &mut |_| {}).unwrap();
    assert_eq!(a.loss_log, b.loss_log);
    let out = dir.path().join("motion");
    b.export(&out, false).unwrap();
    let part = crate::model::motion::read(&out).unwrap();
    assert_eq!(part.config.block_out_channels, vec![16, 32, 64]);
    assert_eq!(part.config.shared_noise, 0.5);
    assert!(!dir.path().join("motion.partial").exists());
}

#[test]
fn loss_by_band_switches_the_modules_off_on_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = MotionTrainer::new(&base(), small(), &dir.path().join("tok")).unwrap();
    let bands = [(0, 500), (500, 1000)];
    // Fresh modules pass their input through already: switching them off changes nothing,
    // on batches that are the same both times.
    for (with, without) in t.loss_by_band(&bands, 1, 3).unwrap() {
        assert_eq!(with, without);
    }
    // proj_out made non-zero: the module now counts; the numbers repeat, and the weights
    // and the run's random stream are left as they were.
    for (n, v) in &t.params {
        if !n.starts_with("unet.") && n.contains("proj_out") {
            v.set(&v.as_tensor().randn_like(0.0, 0.5).unwrap()).unwrap();
        }
    }
    let weights: Vec<Vec<f32>> = t
        .params
        .iter()
        .map(|(_, v)| values(v.as_tensor()))
        .collect();
    let stream = format!("{:?}", t.rng);
    let got = t.loss_by_band(&bands, 1, 3).unwrap();
    assert!(got.iter().all(|(w, wo)| w.is_finite() && wo.is_finite()));
    assert!(got.iter().any(|(w, wo)| w != wo), "{got:?}");
    assert_eq!(t.loss_by_band(&bands, 1, 3).unwrap(), got);
    let after: Vec<Vec<f32>> = t
        .params
        .iter()
        .map(|(_, v)| values(v.as_tensor()))
        .collect();
    assert!(after == weights);
    assert_eq!(format!("{:?}", t.rng), stream);
    assert!(t.loss_by_band(&[(900, 1200)], 1, 3).is_err());
}

#[test]
fn warped_shared_noise_travels_with_the_clip_and_still_clips_keep_one_draw() {
    let (f, s) = (8, 32);
    let plane = 3 * s * s;
    let motions = [
        Motion::Right.noise_motion(),
        Motion::Up.noise_motion(),
        Motion::Grow.noise_motion(),
    ];
    assert_eq!(motions[2], None);
    let noise = shared_noise(&mut Rng::new(7), &motions, (f, s), (0.15, 0.9), true);
    assert_eq!(noise.len(), 3 * f * plane);
    let at = |clip: usize, frame: usize, c: usize, y: usize, x: usize| {
        noise[(clip * f + frame) * plane + c * s * s + y * s + x]
    };
    for c in 0..3 {
        for y in 0..s {
            for x in 0..s - 18 {
                // Right: frame 0's (y, x) is the last frame's (y, x + 18).
                assert_eq!(at(0, 0, c, y, x), at(0, f - 1, c, y, x + 18));
                // Up: frame 0's (x, y) is the last frame's (x, y − 18)... as rows.
                assert_eq!(at(1, 0, c, x + 18, y), at(1, f - 1, c, x, y));
            }
        }
    }
    // A clip that does not travel has one draw in every frame.
    let still = |frame: usize| &noise[(2 * f + frame) * plane..(2 * f + frame + 1) * plane];
    assert_eq!(still(0), still(f - 1));
    // Without warping, every clip's frames are one draw, moves included.
    let plain = shared_noise(&mut Rng::new(7), &motions, (f, s), (0.15, 0.9), false);
    assert_eq!(&plain[..plane], &plain[(f - 1) * plane..f * plane]);
    assert_ne!(&plain[..plane], &plain[f * plane..(f + 1) * plane]);
}

#[test]
fn a_run_switched_to_warped_noise_exports_the_words_that_move_it() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut a = MotionTrainer::open(&ck, &base(), small()).unwrap();
    a.run(&ck, &schedule(1), &|| false, &mut |_| {}).unwrap();
    // Resumed and switched: the checkpoint keeps the switch.
    let mut b = MotionTrainer::open(&ck, &base(), small()).unwrap();
    b.set_warped_noise(true, 0.95);
    b.run(&ck, &schedule(2), &|| false, &mut |_| {}).unwrap();
    let c = MotionTrainer::open(&ck, &base(), small()).unwrap();
    assert!(c.config.warped_noise);
    assert_eq!(c.config.shared_noise, 0.95);
    let out = dir.path().join("motion");
    c.export(&out, false).unwrap();
    let part = crate::model::motion::read(&out).unwrap();
    assert_eq!(part.config.shared_noise, 0.95);
    // The shared noise was pyramid noise in training: generation draws it so too.
    assert_eq!(part.config.noise_pyramid, 0.9);
    let words: Vec<&str> = part
        .config
        .noise_motion
        .iter()
        .map(|r| r.words.as_str())
        .collect();
    assert_eq!(
        words,
        [
            "moving left",
            "moving right",
            "moving up",
            "moving down",
            "moving apart"
        ]
    );
    let right = crate::sampler::noise_motion::rule_for(
        &part.config.noise_motion,
        "a red circle moving right",
    )
    .unwrap();
    assert_eq!(right.motion, NoiseMotion::Shift { dx: 18, dy: 0 });
    // A run that never switched exports no rules.
    let plain = dir.path().join("plain");
    a.export(&plain, false).unwrap();
    assert!(
        crate::model::motion::read(&plain)
            .unwrap()
            .config
            .noise_motion
            .is_empty()
    );
}
