use super::*;

/// `t` (random normal) with one element, at flat index `at`, set to `v`.
fn poisoned(shape: &[usize], at: usize, v: f32) -> Tensor {
    let t = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
    let mut values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values[at] = v;
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn non_finite(t: &Tensor) -> usize {
    let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values.iter().filter(|v| !v.is_finite()).count()
}

#[test]
fn every_kernel_propagates_nan_and_infinity() {
    let r = |shape: &[usize]| poisoned(shape, 0, 0.5);
    for bad in [f32::NAN, f32::INFINITY] {
        // Attention: a poisoned query, key or value reaches the output. A key poisons
        // every row of its head (a score of every query), a query its own row.
        let (q, k, v) = (r(&[1, 40, 8]), r(&[1, 24, 8]), r(&[1, 24, 8]));
        for which in 0..3 {
            let mut qkv = [q.clone(), k.clone(), v.clone()];
            qkv[which] = poisoned(qkv[which].dims(), 9, bad);
            let out = attention(&qkv[0], &qkv[1], &qkv[2], 2, 0.3).unwrap();
            assert!(non_finite(&out) > 0, "attention input {which} {bad}");
        }
        // A poisoned key with all-finite other scores: the row maximum must not skip it.
        let out = attention(&q, &poisoned(&[1, 24, 8], 3, f32::NAN), &v, 1, 0.3).unwrap();
        assert!(
            non_finite(&out) >= 40,
            "attention key NaN: {}",
            non_finite(&out)
        );
        // Linear: input, weight, bias, residual.
        let (x, w, b) = (r(&[2, 5, 6]), r(&[3, 6]), r(&[3]));
        let res = r(&[2, 5, 3]);
        for which in 0..4 {
            let mut a = [x.clone(), w.clone(), b.clone(), res.clone()];
            a[which] = poisoned(a[which].dims(), 1, bad);
            let out = linear(&a[0], &a[1], Some(&a[2]), Some(&a[3])).unwrap();
            assert!(non_finite(&out) > 0, "linear input {which} {bad}");
        }
        // 1×1 convolutions to and from tokens.
        let img = r(&[1, 6, 3, 4]);
        let cw = r(&[5, 6, 1, 1]);
        let out = pointwise_to_tokens(&poisoned(&[1, 6, 3, 4], 2, bad), &cw, None).unwrap();
        assert!(non_finite(&out) > 0, "pointwise_to_tokens {bad}");
        let out = pointwise_to_tokens(&img, &poisoned(&[5, 6, 1, 1], 2, bad), None).unwrap();
        assert!(non_finite(&out) > 0, "pointwise_to_tokens weight {bad}");
        let tokens = poisoned(&[1, 12, 6], 4, bad);
        let out = tokens_to_pointwise(&tokens, (3, 4), &cw, None, None).unwrap();
        assert!(non_finite(&out) > 0, "tokens_to_pointwise {bad}");
        // GroupNorm (+SiLU): input, weight and bias.
        let (x, gw, gb) = (r(&[1, 4, 5]), r(&[4]), r(&[4]));
        for silu in [false, true] {
            for which in 0..3 {
                let mut a = [x.clone(), gw.clone(), gb.clone()];
                a[which] = poisoned(a[which].dims(), 1, bad);
                let out = group_norm(&a[0], 2, &a[1], &a[2], 1e-5, silu).unwrap();
                assert!(non_finite(&out) > 0, "group_norm {which} silu {silu} {bad}");
            }
        }
        // GEGLU: a value and a gate.
        for at in [1, 4] {
            let out = geglu(&poisoned(&[2, 6], at, bad)).unwrap();
            assert!(non_finite(&out) > 0, "geglu at {at} {bad}");
        }
    }
    // The element functions themselves.
    assert!(exp_f32(f32::NAN).is_nan() && erf_f32(f32::NAN).is_nan());
    assert!(exp2_nonpositive(f32::NAN).is_nan());
    assert!(row_max(&[1.0, f32::NAN, 3.0]).is_nan());
    let mut long = vec![1f32; 40];
    long[17] = f32::NAN;
    assert!(row_max(&long).is_nan());
    long[17] = 5.0;
    assert_eq!(row_max(&long), 5.0);
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let s = b.abs().unwrap().max_all().unwrap();
    (d / s).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn exp_and_erf_are_accurate_over_their_range() {
    let mut worst_exp = 0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let want = (x as f64).exp();
        worst_exp = worst_exp.max(((exp_f32(x) as f64 - want) / want).abs());
        x += 0.0137;
    }
    assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
    let mut worst_exp2 = 0f64;
    let mut t = -126.0f32;
    while t <= 0.0 {
        let want = (t as f64).exp2();
        worst_exp2 = worst_exp2.max(((exp2_nonpositive(t) as f64 - want) / want).abs());
        t += 0.0071;
    }
    assert!(worst_exp2 < 3e-7, "exp2 relative error {worst_exp2}");
    let mut worst_erf = 0f64;
    let mut x = -6.0f32;
    while x < 6.0 {
        let want = candle_core::cpu::erf::erf_f64(x as f64);
        worst_erf = worst_erf.max((erf_f32(x) as f64 - want).abs());
        x += 0.001;
    }
    assert!(worst_erf < 1e-6, "erf absolute error {worst_erf}");
    assert_eq!(exp_f32(-1000.0), exp_f32(-87.0));
}

#[test]
fn attention_matches_the_composed_ops() {
    let dev = Device::Cpu;
    // n not a multiple of the block, m ≠ n (cross-attention), 3 heads.
    for (n, m) in [(300, 300), (300, 7), (5, 129)] {
        let (b, heads, hd) = (2, 3, 8);
        let dim = heads * hd;
        let q = Tensor::randn(0f32, 1.0, (b, n, dim), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, m, dim), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, m, dim), &dev).unwrap();
        let scale = (hd as f64).powf(-0.5);
        let split = |t: &Tensor, len: usize| {
            t.reshape((b, len, heads, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let s = (split(&q, n) * scale)
            .unwrap()
            .matmul(&split(&k, m).t().unwrap())
            .unwrap();
        let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
        let want = p
            .matmul(&split(&v, m))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, n, dim))
            .unwrap();
        let got = attention(&q, &k, &v, heads, scale as f32).unwrap();
        assert!(max_rel(&got, &want) < 1e-5, "n {n} m {m}");
    }
}

#[test]
fn linear_group_norm_and_geglu_match_candle() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 37, 24), &dev).unwrap();
    let w = Tensor::randn(0f32, 1.0, (10, 24), &dev).unwrap();
    let bias = Tensor::randn(0f32, 1.0, 10, &dev).unwrap();
    let want = x
        .broadcast_matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(&bias)
        .unwrap();
    assert!(max_rel(&linear(&x, &w, Some(&bias), None).unwrap(), &want) < 1e-5);
    let res = Tensor::randn(0f32, 1.0, (2, 37, 10), &dev).unwrap();
    let got = linear(&x, &w, Some(&bias), Some(&res)).unwrap();
    assert!(max_rel(&got, &(&want + &res).unwrap()) < 1e-5);
    let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
    assert!(max_rel(&linear(&x, &w, None, None).unwrap(), &want) < 1e-5);
    assert!(
        max_rel(
            &linear(&x, &w, None, Some(&res)).unwrap(),
            &(&want + &res).unwrap()
        ) < 1e-5
    );

    // 1×1 convolutions into and out of the token layout.
    let img = Tensor::randn(0f32, 1.0, (2, 6, 3, 5), &dev).unwrap();
    let cw = Tensor::randn(0f32, 1.0, (4, 6, 1, 1), &dev).unwrap();
    let cb = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
    let conv = img
        .conv2d(&cw, 0, 1, 1, 1)
        .unwrap()
        .broadcast_add(&cb.reshape((1, 4, 1, 1)).unwrap())
        .unwrap();
    let tokens = conv
        .permute((0, 2, 3, 1))
        .unwrap()
        .reshape((2, 15, 4))
        .unwrap();
    assert!(max_rel(&pointwise_to_tokens(&img, &cw, Some(&cb)).unwrap(), &tokens) < 1e-5);
    let tok = Tensor::randn(0f32, 1.0, (2, 15, 6), &dev).unwrap();
    let as_img = tok
        .reshape((2, 3, 5, 6))
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap();
    let ow = Tensor::randn(0f32, 1.0, (4, 6, 1, 1), &dev).unwrap();
    let res = Tensor::randn(0f32, 1.0, (2, 4, 3, 5), &dev).unwrap();
    let want = (as_img
        .contiguous()
        .unwrap()
        .conv2d(&ow, 0, 1, 1, 1)
        .unwrap()
        .broadcast_add(&cb.reshape((1, 4, 1, 1)).unwrap())
        .unwrap()
        + &res)
        .unwrap();
    let got = tokens_to_pointwise(&tok, (3, 5), &ow, Some(&cb), Some(&res)).unwrap();
    assert!(max_rel(&got, &want) < 1e-5);

    // Off-centre values, as activations are: the statistics must not lose precision.
    let x = (Tensor::randn(0f32, 1.0, (2, 12, 5, 7), &dev).unwrap() + 30.0).unwrap();
    let gw = Tensor::randn(1f32, 0.3, 12, &dev).unwrap();
    let gb = Tensor::randn(0f32, 0.3, 12, &dev).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(
        [
            ("weight".to_string(), gw.clone()),
            ("bias".to_string(), gb.clone()),
        ]
        .into_iter()
        .collect(),
        DType::F32,
        &dev,
    );
    let gn = candle_nn::group_norm(4, 12, 1e-5, vb).unwrap();
    let want = candle_core::Module::forward(&gn, &x).unwrap();
    let got = group_norm(&x, 4, &gw, &gb, 1e-5, false).unwrap();
    assert!(max_rel(&got, &want) < 1e-5);
    let got = group_norm(&x, 4, &gw, &gb, 1e-5, true).unwrap();
    assert!(max_rel(&got, &candle_nn::ops::silu(&want).unwrap()) < 1e-5);

    let h = Tensor::randn(0f32, 2.0, (3, 5, 18), &dev).unwrap();
    let value = h.narrow(2, 0, 9).unwrap();
    let gate = h.narrow(2, 9, 9).unwrap();
    let want = (value * gate.gelu_erf().unwrap()).unwrap();
    assert!(max_rel(&geglu(&h).unwrap(), &want) < 1e-5);
}
