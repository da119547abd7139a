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
    let diff = crate::model::kernels::layers::tests::max_abs_diff;
    assert!(diff(&a, &b) < 1e-4, "text {}", diff(&a, &b));
    let ctx = Tensor::cat(&[&a, &a], 0).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &dev).unwrap();
    let t = Tensor::new(&[500f32, 500.0], &dev).unwrap();
    let p = train_unet.forward_t(&x, &t, &ctx, None).unwrap();
    let q = infer_unet.forward(&x, 500.0, &ctx, None).unwrap();
    assert!(diff(&p, &q) < 1e-3, "unet {}", diff(&p, &q));
}
