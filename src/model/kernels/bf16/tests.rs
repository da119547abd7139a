use super::*;

/// A small deterministic generator (xorshift) of values in [−1, 1).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub(super) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// `start + a · wᵀ` in f64 (`a` m × k, `w` n × k).
fn reference(
    a: &[f32],
    w: &[f32],
    (m, n, k): (usize, usize, usize),
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s =
                bias.map_or(0.0, |b| b[j] as f64) + residual.map_or(0.0, |r| r[i * n + j] as f64);
            for kk in 0..k {
                s += a[i * k + kk] as f64 * w[j * k + kk] as f64;
            }
            out[i * n + j] = s;
        }
    }
    out
}

/// ‖got − want‖ / ‖want‖.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    (diff / norm.max(1e-300)).sqrt()
}

/// The paths this machine can run (the portable one always).
fn runnable() -> Vec<Bf16Path> {
    Bf16Path::ALL
        .into_iter()
        .filter(|p| CpuBf16::detect().has(*p))
        .collect()
}

#[test]
fn bf16_round_trip_and_rounding() {
    for x in [0.0f32, -0.0, 1.0, -2.5, 3.0e38, 1.0e-30] {
        let r = bf16_to_f32(f32_to_bf16(x));
        assert!((r - x).abs() <= x.abs() / 256.0, "{x} → {r}");
    }
    assert_eq!(bf16_to_f32(f32_to_bf16(f32::INFINITY)), f32::INFINITY);
    assert_eq!(bf16_to_f32(f32_to_bf16(f32::MAX)), f32::INFINITY);
    assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    // Ties to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
    assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 1.0 / 256.0)), 1.0);
    assert_eq!(
        bf16_to_f32(f32_to_bf16(1.0 + 3.0 / 256.0)),
        1.0 + 4.0 / 256.0
    );
}

/// Run [`matmul_on`] for `y (m × n, tokens layout) = start + a · wᵀ`.
#[allow(clippy::too_many_arguments)]
fn run_tokens(
    out: &mut [f32],
    a: &[f32],
    w: &[f32],
    (m, n, k): (usize, usize, usize),
    bias: Option<&[f32]>,
    accumulate: bool,
    want: Option<Bf16Path>,
    cpu: CpuBf16,
) -> Bf16Path {
    let bits: Vec<u16> = w.iter().map(|v| f32_to_bf16(*v)).collect();
    let acts = Acts::from_rows(a, m, k);
    matmul_on(
        out,
        OutAt::tokens(n),
        Weight::new(&bits, n, k),
        &acts,
        Start {
            bias,
            accumulate,
            col_bias: None,
        },
        want,
        cpu,
    )
}

#[test]
fn acts_keep_every_value_rounded() {
    let mut rng = Rng(7);
    for (m, k) in [(1, 1), (33, 7), (64, 300), (5, 2), (17, 33)] {
        let x = rng.vec(m * k);
        let acts = Acts::from_rows(&x, m, k);
        assert_eq!((acts.m(), acts.k()), (m, k));
        for i in 0..m {
            let want: Vec<f32> = x[i * k..(i + 1) * k]
                .iter()
                .map(|v| bf16_to_f32(f32_to_bf16(*v)))
                .collect();
            assert_eq!(acts.row(i), want, "{m}×{k} row {i}");
        }
        // Padding (rows past m, k past k) is zero: the kernels read it.
        let blocks = acts.data.len() / (acts.kp() / 2 * MB);
        assert!(blocks >= 2 && blocks.is_multiple_of(2));
        let nonzero: usize = acts
            .data
            .iter()
            .map(|v| (*v & 0xffff != 0) as usize + (*v >> 16 != 0) as usize)
            .sum();
        let real = x.iter().filter(|v| f32_to_bf16(**v) != 0).count();
        assert_eq!(nonzero, real, "{m}×{k}: padding must be zero");
    }
}

#[test]
fn every_forced_path_matches_f64_on_odd_shapes() {
    let mut rng = Rng(0x5eed);
    let shapes = [
        (1, 1, 1),
        (1, 17, 3),
        (13, 33, 5),
        (12, 32, 256),
        (97, 65, 513),
        (200, 70, 77),
        (31, 320, 768),
        (5, 1000, 1),
        (40, 36, 64),
    ];
    for path in Bf16Path::ALL {
        for &(m, n, k) in &shapes {
            for (with_bias, with_residual) in
                [(false, false), (true, false), (true, true), (false, true)]
            {
                let a = rng.vec(m * k);
                let w = rng.vec(n * k);
                let bias = with_bias.then(|| rng.vec(n));
                let residual = with_residual.then(|| rng.vec(m * n));
                let want = reference(&a, &w, (m, n, k), bias.as_deref(), residual.as_deref());
                // Tokens layout (a linear layer's).
                let mut out = residual.clone().unwrap_or_else(|| vec![f32::NAN; m * n]);
                let took = run_tokens(
                    &mut out,
                    &a,
                    &w,
                    (m, n, k),
                    bias.as_deref(),
                    with_residual,
                    Some(path),
                    CpuBf16::detect(),
                );
                assert_eq!(took, choose(Some(path), CpuBf16::detect()));
                let err = rel_err(&out, &want);
                // bf16 keeps 8 significant bits: each product is off by up to ~2^-8
                // relative, and the errors of k terms partly cancel.
                assert!(
                    err < 1e-2,
                    "{path} (took {took}) {m}×{n}×{k} bias {with_bias} residual {with_residual}: {err}"
                );
                // Channels layout (a convolution's): the transpose.
                let mut out_t = vec![f32::NAN; m * n];
                if let Some(r) = &residual {
                    for i in 0..m {
                        for j in 0..n {
                            out_t[j * m + i] = r[i * n + j];
                        }
                    }
                }
                let bits: Vec<u16> = w.iter().map(|v| f32_to_bf16(*v)).collect();
                with_forced_path(path, || {
                    matmul(
                        &mut out_t,
                        OutAt::channels(m),
                        Weight::new(&bits, n, k),
                        &Acts::from_rows(&a, m, k),
                        Start {
                            bias: bias.as_deref(),
                            accumulate: with_residual,
                            col_bias: None,
                        },
                    )
                });
                for i in 0..m {
                    for j in 0..n {
                        // The same products; a block accumulated in place adds the bias
                        // first instead of last.
                        let (a, b) = (out_t[j * m + i], out[i * n + j]);
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{path} {m}×{n}×{k}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn paths_agree_to_summation_order() {
    // The same bf16 operands on every path: only the order of the f32 sums differs.
    let mut rng = Rng(42);
    let (m, n, k) = (50, 96, 640);
    let a = rng.vec(m * k);
    let w = rng.vec(n * k);
    let outs: Vec<Vec<f32>> = runnable()
        .into_iter()
        .map(|p| {
            let mut out = vec![0f32; m * n];
            let took = run_tokens(
                &mut out,
                &a,
                &w,
                (m, n, k),
                None,
                false,
                Some(p),
                CpuBf16::detect(),
            );
            assert_eq!(took, p);
            out
        })
        .collect();
    let first: Vec<f64> = outs[0].iter().map(|v| *v as f64).collect();
    for o in &outs[1..] {
        assert!(rel_err(o, &first) < 1e-5, "{}", rel_err(o, &first));
    }
}

#[test]
fn a_path_the_cpu_lacks_is_refused_and_named() {
    // No bf16 instructions at all: every request ends on the portable path.
    for want in Bf16Path::ALL {
        assert_eq!(choose(Some(want), CpuBf16::NONE), Bf16Path::Portable);
    }
    // AVX512-bf16 but no AMX: AMX falls to AVX512-bf16, never the other way round.
    let zen4 = CpuBf16 {
        amx: false,
        avx512_bf16: true,
    };
    assert_eq!(choose(Some(Bf16Path::Amx), zen4), Bf16Path::Avx512Bf16);
    assert_eq!(choose(None, zen4), Bf16Path::Avx512Bf16);
    assert_eq!(choose(Some(Bf16Path::Portable), zen4), Bf16Path::Portable);
    let all = CpuBf16 {
        amx: true,
        avx512_bf16: true,
    };
    assert_eq!(choose(None, all), Bf16Path::Amx);
    assert_eq!(Bf16Path::Avx512Bf16.to_string(), "AVX512-bf16");
    assert_eq!(Bf16Path::Portable.name(), "portable");
    assert_eq!(Bf16Path::Amx.name(), "AMX");

    // A simulated CPU without bf16 instructions runs the request on the portable path,
    // correctly; one with AVX512-bf16 only runs an AMX request there.
    let mut rng = Rng(3);
    let (m, n, k) = (9, 40, 33);
    let (a, w) = (rng.vec(m * k), rng.vec(n * k));
    for (cpu, want) in [
        (CpuBf16::NONE, Bf16Path::Portable),
        (zen4, Bf16Path::Avx512Bf16),
    ] {
        let mut out = vec![0f32; m * n];
        let took = run_tokens(
            &mut out,
            &a,
            &w,
            (m, n, k),
            None,
            false,
            Some(Bf16Path::Amx),
            cpu,
        );
        assert_eq!(took, choose(Some(want), CpuBf16::detect()));
        assert!(rel_err(&out, &reference(&a, &w, (m, n, k), None, None)) < 1e-2);
    }
}

#[test]
fn forced_path_is_per_thread_and_restored() {
    let best = current_path();
    with_forced_path(Bf16Path::Portable, || {
        assert_eq!(current_path(), Bf16Path::Portable);
        std::thread::spawn(move || assert_eq!(current_path(), best))
            .join()
            .unwrap();
    });
    assert_eq!(current_path(), best);
}

#[test]
fn nan_in_either_operand_reaches_the_output() {
    let (m, n, k) = (14, 35, 9);
    let mut rng = Rng(11);
    for path in runnable() {
        for which in 0..2 {
            let mut a = rng.vec(m * k);
            let mut w = rng.vec(n * k);
            if which == 0 {
                a[3 * k + 4] = f32::NAN;
            } else {
                w[20 * k + 8] = f32::NAN;
            }
            let mut out = vec![0f32; m * n];
            run_tokens(
                &mut out,
                &a,
                &w,
                (m, n, k),
                None,
                false,
                Some(path),
                CpuBf16::detect(),
            );
            let bad = if which == 0 {
                out[3 * n + 7]
            } else {
                out[5 * n + 20]
            };
            assert!(bad.is_nan(), "{path} operand {which}");
        }
    }
}

/// GFLOP/s of each path against the f32 `gemm` product at SD 1.5 linear sizes:
/// `cargo test --release --lib bf16::tests::gflops -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run by tools/perf/bf16_gemm.sh"]
fn gflops() {
    use std::time::Instant;
    let mut rng = Rng(1);
    println!("threads {}", rayon::current_num_threads());
    for (m, n, k) in [
        (512, 1280, 1280),
        (4096, 320, 320),
        (4096, 2560, 320),
        (4096, 320, 1280),
        (1024, 640, 640),
        (256, 1280, 5120),
        (8192, 320, 2880),
        (2048, 640, 5760),
    ] {
        let a = rng.vec(m * k);
        let w = rng.vec(n * k);
        let bits: Vec<u16> = w.iter().map(|v| f32_to_bf16(*v)).collect();
        let flops = 2.0 * (m * n * k) as f64;
        let time = |f: &mut dyn FnMut()| {
            f();
            let reps = ((2e10 / flops) as usize).clamp(2, 50);
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        };
        let mut out = vec![0f32; m * n];
        let f32_s = time(&mut || {
            let start = crate::model::cpu_kernels::Start {
                residual: None,
                bias: None,
                per_col: true,
            };
            let out = unsafe {
                std::slice::from_raw_parts_mut(
                    out.as_mut_ptr().cast::<std::mem::MaybeUninit<f32>>(),
                    out.len(),
                )
            };
            // SAFETY: a is m × k; Wᵀ read through W's strides.
            unsafe {
                crate::model::cpu_kernels::product(
                    out,
                    n,
                    &start,
                    (m, n, k),
                    crate::model::cpu_kernels::Strided {
                        ptr: a.as_ptr(),
                        rs: k as isize,
                        cs: 1,
                    },
                    crate::model::cpu_kernels::Strided {
                        ptr: w.as_ptr(),
                        rs: 1,
                        cs: k as isize,
                    },
                    crate::model::cpu_kernels::parallelism(),
                )
            }
        });
        let mut line = format!("{m}×{n}×{k}: f32 gemm {:.1}", flops / f32_s / 1e9);
        for path in runnable() {
            let s = time(&mut || {
                let acts = Acts::from_rows(&a, m, k);
                matmul_on(
                    &mut out,
                    OutAt::tokens(n),
                    Weight::new(&bits, n, k),
                    &acts,
                    Start {
                        bias: None,
                        accumulate: false,
                        col_bias: None,
                    },
                    Some(path),
                    CpuBf16::detect(),
                );
            });
            line += &format!(", {path} {:.1}", flops / s / 1e9);
        }
        // The parts: rounding the activations, and the product alone (channels layout too).
        let acts_s = time(&mut || {
            Acts::from_rows(&a, m, k);
        });
        let acts = Acts::from_rows(&a, m, k);
        for (name, at) in [
            ("tokens", OutAt::tokens(n)),
            ("channels", OutAt::channels(m)),
        ] {
            let s = time(&mut || {
                matmul(
                    &mut out,
                    at,
                    Weight::new(&bits, n, k),
                    &acts,
                    Start {
                        bias: None,
                        accumulate: false,
                        col_bias: None,
                    },
                );
            });
            line += &format!("; product alone ({name}) {:.1}", flops / s / 1e9);
        }
        line += &format!(
            "; rounding {:.1} ms ({:.2} ns/value)",
            acts_s * 1e3,
            acts_s * 1e9 / (m * k) as f64
        );
        // Whole bf16 linear layers on tensors (bf16 input and output): this module's (the
        // activations rounded per call, the weight read in place), and candle's, which widens both operands per call.
        use candle_core::{DType, Device, Module, Tensor};
        let x = Tensor::from_vec(a.clone(), (m, k), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::BF16))
            .unwrap();
        let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::BF16))
            .unwrap();
        let ours = time(&mut || {
            linear::linear(&x, &wt, None, None).unwrap();
        });
        let lin = candle_nn::Linear::new(wt.clone(), None);
        let candle = time(&mut || {
            lin.forward(&x).unwrap();
        });
        line += &format!(
            "; bf16 layer {:.1} (candle's {:.1})",
            flops / ours / 1e9,
            flops / candle / 1e9
        );
        println!("{line} GFLOP/s");
    }
}

#[test]
fn a_bias_per_activation_row_on_every_path() {
    // Y[j, i] = colbias[i] + Σ W[j]·X[i] (+ a residual): a linear layer with the tokens as
    // the weight operand; whole blocks (accumulated in place on AMX) and edges.
    let mut rng = Rng(77);
    for path in Bf16Path::ALL {
        for &(m, n, k) in &[(64, 96, 64), (70, 33, 40), (32, 32, 33)] {
            for accumulate in [false, true] {
                let x = rng.vec(m * k);
                let w = rng.vec(n * k);
                let cb = rng.vec(m);
                let res = rng.vec(n * m);
                // Reference in the Y[j, i] at j·m + i layout.
                let mut want = vec![0f64; n * m];
                for j in 0..n {
                    for i in 0..m {
                        let mut s = cb[i] as f64
                            + if accumulate {
                                res[j * m + i] as f64
                            } else {
                                0.0
                            };
                        for kk in 0..k {
                            s += bf16_to_f32(f32_to_bf16(w[j * k + kk])) as f64
                                * bf16_to_f32(f32_to_bf16(x[i * k + kk])) as f64;
                        }
                        want[j * m + i] = s;
                    }
                }
                let bits: Vec<u16> = w.iter().map(|v| f32_to_bf16(*v)).collect();
                let mut out = if accumulate {
                    res.clone()
                } else {
                    vec![f32::NAN; n * m]
                };
                with_forced_path(path, || {
                    matmul(
                        &mut out,
                        OutAt::channels(m),
                        Weight::new(&bits, n, k),
                        &Acts::from_rows(&x, m, k),
                        Start {
                            bias: None,
                            accumulate,
                            col_bias: Some(&cb),
                        },
                    )
                });
                let err = rel_err(&out, &want);
                assert!(
                    err < 1e-5,
                    "{path} {m}×{n}×{k} accumulate {accumulate}: {err}"
                );
            }
        }
    }
}

#[test]
fn acts_from_bf16_rows_equal_acts_from_the_same_values() {
    let mut rng = Rng(5);
    for (m, k) in [(3, 5), (17, 64), (40, 33)] {
        let x: Vec<f32> = rng
            .vec(m * k)
            .iter()
            .map(|v| bf16_to_f32(f32_to_bf16(*v)))
            .collect();
        let bits: Vec<u16> = x.iter().map(|v| f32_to_bf16(*v)).collect();
        assert_eq!(
            &Acts::from_bf16_rows(&bits, m, k).data[..],
            &Acts::from_rows(&x, m, k).data[..]
        );
    }
}

#[test]
fn aligned_buffers_start_on_cache_lines_and_start_zeroed() {
    for len in [0usize, 1, 15, 16, 17, 1000] {
        let mut a = Aligned::zeroed(len);
        assert_eq!(a.len(), len);
        assert!(a.iter().all(|&v| v == 0));
        assert!((a.as_ptr() as usize).is_multiple_of(64), "{len}");
        assert_eq!(a.as_u16_mut().len(), 2 * len);
        assert_eq!(a.as_f32_mut().len(), len);
    }
    // Every block of an activation layout starts on a cache line.
    let acts = Acts::from_rows(&vec![1.0; 40 * 70], 40, 70);
    for b in 0..3 {
        assert!(
            (acts.block(b).as_ptr() as usize).is_multiple_of(64),
            "block {b}"
        );
    }
}

/// The 3×3 convolutions of an SD VAE decoder at 512² (one image): the AMX implicit GEMM
/// and whatever `conv2d_by_offset` picks, milliseconds each. A measurement, not a test:
/// `cargo test --release --lib vae_conv_ms -- --ignored --nocapture`.
#[test]
#[ignore]
fn vae_conv_ms() {
    use super::conv::conv2d_by_offset;
    use candle_core::{DType, Device, Tensor};
    use std::time::Instant;
    if current_path() != Bf16Path::Amx {
        println!("no AMX here");
        return;
    }
    let mut rng = Rng(3);
    println!("threads {}", rayon::current_num_threads());
    for (b, c, o, h) in [
        (2, 320, 320, 64),
        (2, 640, 640, 32),
        (2, 1280, 1280, 16),
        (1, 512, 512, 64),
        (1, 512, 512, 128),
        (1, 256, 256, 256),
        (1, 128, 128, 512),
    ] {
        let x = Tensor::from_vec(rng.vec(b * c * h * h), (b, c, h, h), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(rng.vec(o * 9 * c), (o, 3, 3, c), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            for _ in 0..3 {
                f();
            }
            t.elapsed().as_secs_f64() * 1e3 / 3.0
        };
        let picked = time(&mut || {
            conv2d_by_offset(&x, &wt, None, 1, 1, None).unwrap();
        });
        let bits: Vec<u16> = wt
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| f32_to_bf16(*v))
            .collect();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut out = vec![0f32; b * o * h * h];
        let gf = 2.0 * (b * o * 9 * c * h * h) as f64 / 1e6;
        let mut line = format!(
            "{b}× {c}→{o} @ {h}²: picked {picked:.1} ms ({:.0} GFLOP/s)",
            gf / picked
        );
        for band_mb in [1, 2, 4, 8, 1024] {
            let ms = time(&mut || {
                let start = Start {
                    bias: None,
                    accumulate: false,
                    col_bias: None,
                };
                // SAFETY: AMX path; applies; out holds o · h · h values.
                unsafe {
                    super::amx_conv::conv3x3_banded(
                        OutPtr(out.as_mut_ptr()),
                        &xs,
                        (b, c, h, h),
                        &bits,
                        o,
                        start,
                        band_mb << 20,
                    )
                };
            });
            line += &format!(", band {band_mb} MB {ms:.1} ms ({:.0})", gf / ms);
        }
        println!("{line}");
    }
}

/// A product with a residual gives the same bits wherever its output buffer starts: a block
/// whose rows sit on cache lines accumulates in place, any other through a scratch tile,
/// and both start from the residual (before, the scratch path added it at the end, so the
/// result — and a whole bf16 UNet call — changed from run to run with the allocator).
#[test]
fn results_do_not_depend_on_where_the_output_starts() {
    let mut rng = Rng(0xa11);
    let (m, n, k) = (64, 48, 96);
    let a = rng.vec(m * k);
    let w: Vec<u16> = rng.vec(n * k).iter().map(|v| f32_to_bf16(*v)).collect();
    let bias = rng.vec(n);
    let residual = rng.vec(m * n);
    let x = Acts::from_rows(&a, m, k);
    for path in Bf16Path::ALL {
        let mut first: Option<Vec<f32>> = None;
        for offset in 0..16 {
            let mut buf = vec![0f32; m * n + 16];
            buf[offset..offset + m * n].copy_from_slice(&residual);
            let start = Start {
                bias: Some(&bias),
                accumulate: true,
                col_bias: None,
            };
            with_forced_path(path, || {
                matmul(
                    &mut buf[offset..offset + m * n],
                    OutAt::channels(m),
                    Weight::new(&w, n, k),
                    &x,
                    start,
                )
            });
            let got = buf[offset..offset + m * n].to_vec();
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    *f == got,
                    "{path}: output at +{offset} floats differs from the one at +0"
                ),
            }
        }
    }
}
