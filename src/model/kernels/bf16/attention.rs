//! Attention with bf16 products on the CPU (the mixed precision of `--dtype bf16`): f32
//! queries, keys and values in, f32 out; both products (`Q·Kᵀ` and `P·V`) run on the bf16
//! kernels with f32 accumulation, the softmax in f32 — as PyTorch's autocast does.
//!
//! Each (batch, head) has its keys `(m × hd)` and transposed values `(hd × m)` rounded once
//! into the kernels' activation layout; then tasks of [`ROWS`] queries each round their
//! (scaled) queries as the weight operand, compute their scores (`rows × m`, f32, row-major,
//! a few hundred KB), exponentiate them in place, round the probabilities as the weight
//! operand of `P·V` and write the product straight into the output, scaled by the row
//! sums. Every task runs its products on its own thread.

use super::{Acts, Bf16Path, OutAt, OutPtr, Start, Weight, f32_to_bf16, matmul_raw};
use crate::model::cpu_kernels::{AttentionDims, row_max, with_slice};
use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

/// Queries per task (32: their scores, 512 KB at 4096 keys, stay in L2 beside the keys
/// and values; 64 measured 7 % slower at 512×512).
const ROWS: usize = 32;

/// Whether [`attention`] should run these: f32 on the CPU, on a path with bf16 instructions
/// (on the portable path the f32 attention kernel is faster).
pub fn applies(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    [q, k, v]
        .iter()
        .all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32)
        && super::current_path() != Bf16Path::Portable
}

/// `softmax(scale · Q Kᵀ) V` per head, for `q` `(b, n, dim)` and `k`, `v` `(b, m, dim)`
/// with `heads` heads of `dim / heads`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    let AttentionDims { b, n, m, dim, hd } = AttentionDims::check(q, k, v, heads)?;
    let path = super::current_path();
    let mut out = vec![0f32; b * n * dim];
    let dst = OutPtr(out.as_mut_ptr());
    with_slice(k, |ks| {
        with_slice(v, |vs| {
            with_slice(q, |qs| {
                // Per (batch, head), in the kernels' layout: the keys (m rows of hd) and the
                // transposed values (hd rows of m), rounded once.
                let per_head: Vec<(Acts, Acts)> = (0..b * heads)
                    .into_par_iter()
                    .map(|bh| {
                        let (bi, h) = (bh / heads, bh % heads);
                        let base = bi * m * dim + h * hd;
                        let keys = Acts::build_with(m, hd, false, |j, row| {
                            row.copy_from_slice(&ks[base + j * dim..base + j * dim + hd])
                        });
                        let values_t = Acts::build_with(hd, m, false, |d, row| {
                            for (j, x) in row.iter_mut().enumerate() {
                                *x = vs[base + j * dim + d];
                            }
                        });
                        (keys, values_t)
                    })
                    .collect();
                let blocks = n.div_ceil(ROWS);
                (0..b * heads * blocks).into_par_iter().for_each_init(
                    || {
                        // Cache-line aligned: both are read and written as tiles in place.
                        let scores = super::Aligned::zeroed(ROWS * m);
                        let bits = super::Aligned::zeroed((ROWS * m.max(hd)).div_ceil(2));
                        (scores, bits)
                    },
                    |(scores, bits), task| {
                        let (scores, bits) = (scores.as_f32_mut(), bits.as_u16_mut());
                        let block = task % blocks;
                        let bh = task / blocks;
                        let (bi, h) = (bh / heads, bh % heads);
                        let (keys, values_t) = &per_head[bh];
                        let start = block * ROWS;
                        let rows = ROWS.min(n - start);
                        let q0 = (bi * n + start) * dim + h * hd;
                        // The block's queries, scaled, as the weight operand (rows × hd).
                        for r in 0..rows {
                            let src = &qs[q0 + r * dim..q0 + r * dim + hd];
                            for (d, x) in bits[r * hd..(r + 1) * hd].iter_mut().zip(src) {
                                *d = f32_to_bf16(x * scale);
                            }
                        }
                        let none = Start {
                            bias: None,
                            accumulate: false,
                            col_bias: None,
                        };
                        let scores = &mut scores[..rows * m];
                        // SAFETY: `path` runs here (chosen from this CPU's features); the
                        // scores (rows × m, row-major) are this task's own.
                        unsafe {
                            matmul_raw(
                                OutPtr(scores.as_mut_ptr()),
                                OutAt::channels(m),
                                Weight::new(&bits[..rows * hd], rows, hd),
                                keys,
                                none,
                                path,
                                false,
                            )
                        };
                        // The probabilities (rows × m, unnormalised) rounded straight into
                        // the weight operand of P·V; the sums from the unrounded values.
                        let mut sums = [0f32; ROWS];
                        for ((row, p), sum) in scores
                            .chunks_exact(m)
                            .zip(bits.chunks_exact_mut(m))
                            .zip(sums.iter_mut())
                        {
                            *sum = numerators(row, p);
                        }
                        // SAFETY: as above; this task's output block (rows × hd at row
                        // stride dim, from q0) is written by no other task.
                        unsafe {
                            let o = dst.get().add(q0);
                            matmul_raw(
                                OutPtr(o),
                                OutAt::strided(dim, 1),
                                Weight::new(&bits[..rows * m], rows, m),
                                values_t,
                                none,
                                path,
                                false,
                            );
                            for (r, sum) in sums.iter().take(rows).enumerate() {
                                let inv = 1.0 / sum;
                                for x in std::slice::from_raw_parts_mut(o.add(r * dim), hd) {
                                    *x *= inv;
                                }
                            }
                        }
                    },
                );
                Ok(())
            })
        })
    })?;
    super::linear::said(path);
    Tensor::from_vec(out, (b, n, dim), q.device())
}

/// `out ← bf16(exp(x − max))` over a row (`max` the row's largest value); returns the sum
/// of the unrounded exponentials. `2^t` as `2^f · 2^n` (`n` rounded by `vrndscaleps`, `2^f`
/// by the portable kernel's polynomial, `cpu_kernels::EXP2_BF16_POLY`), scaled by `vscalefps` (exact, 0 below the range) and rounded 32 at a
/// time by `vcvtne2ps2bf16`: 10 instructions per 16 values against 24 compiled from
/// portable code. A NaN score stays NaN (a poisoned row is not hidden).
///
/// # Safety
/// The CPU has AVX512F and AVX512-bf16; `out` holds at least `row.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn exp_to_bf16_avx512(row: &[f32], max: f32, out: &mut [u16]) -> f32 {
    use std::arch::x86_64::*;
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp2(t: __m512) -> __m512 {
        // max(lo, t) keeps a NaN t (the second operand is returned when either is NaN).
        let t = _mm512_max_ps(_mm512_set1_ps(-150.0), t);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let f = _mm512_sub_ps(t, n);
        let [c4, coefs @ ..] = crate::model::cpu_kernels::EXP2_BF16_POLY;
        let mut p = _mm512_set1_ps(c4);
        for c in coefs {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }
    let s2 = _mm512_set1_ps(std::f32::consts::LOG2_E);
    let m2 = _mm512_set1_ps(-max * std::f32::consts::LOG2_E);
    let (n, src, dst) = (row.len(), row.as_ptr(), out.as_mut_ptr());
    assert!(out.len() >= n);
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    // SAFETY: every load reads `row[i .. i + 32]` (or the masked lanes below `n`), every
    // store writes `out` at the same indices.
    unsafe {
        while i + 32 <= n {
            let a = exp2(_mm512_fmadd_ps(_mm512_loadu_ps(src.add(i)), s2, m2));
            let b = exp2(_mm512_fmadd_ps(_mm512_loadu_ps(src.add(i + 16)), s2, m2));
            acc0 = _mm512_add_ps(acc0, a);
            acc1 = _mm512_add_ps(acc1, b);
            let bits = _mm512_cvtne2ps_pbh(b, a);
            _mm512_storeu_si512(
                dst.add(i).cast(),
                std::mem::transmute::<__m512bh, __m512i>(bits),
            );
            i += 32;
        }
        if i < n {
            let r = n - i;
            let (ma, mb) = (
                (((1u32 << r.min(16)) - 1) & 0xffff) as __mmask16,
                if r > 16 {
                    ((1u32 << (r - 16)) - 1) as __mmask16
                } else {
                    0
                },
            );
            let a = exp2(_mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(ma, src.add(i)),
                s2,
                m2,
            ));
            let b = exp2(_mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(mb, src.add(i + 16)),
                s2,
                m2,
            ));
            acc0 = _mm512_mask_add_ps(acc0, ma, acc0, a);
            acc1 = _mm512_mask_add_ps(acc1, mb, acc1, b);
            let bits = _mm512_cvtne2ps_pbh(b, a);
            let m32 = (ma as u32 | (mb as u32) << 16) as __mmask32;
            _mm512_mask_storeu_epi16(
                dst.add(i).cast(),
                m32,
                std::mem::transmute::<__m512bh, __m512i>(bits),
            );
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }
}

/// Keys whose maximum gives a row's first shift in [`numerators`].
const SHIFT_KEYS: usize = 512;

/// `out ← bf16(exp(x − shift))` over a row and the sum of the unrounded values, the
/// numerators of its softmax. The shift is the maximum of the first [`SHIFT_KEYS`] scores
/// rather than of the row (one pass over the scores instead of two): any shift at or below
/// the row's maximum gives the same softmax, and values below `shift − 87` (flushed to zero)
/// weigh under e⁻⁸⁷ of the largest. Only when a later score exceeds it by so much that a
/// value or the sum overflows is the row redone with its true maximum (a NaN score stays
/// NaN either way).
fn numerators(row: &[f32], out: &mut [u16]) -> f32 {
    let sum = exp_to_bf16(row, row_max(&row[..row.len().min(SHIFT_KEYS)]), out);
    if sum.is_finite() {
        return sum;
    }
    exp_to_bf16(row, row_max(row), out)
}

/// [`exp_to_bf16_avx512`] where the CPU has it, else the portable rounding of the same
/// values; `out` holds at least `row.len()` values.
fn exp_to_bf16(row: &[f32], max: f32, out: &mut [u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::CpuBf16::detect().has(Bf16Path::Avx512Bf16) {
        // SAFETY: the CPU has AVX512F, AVX512BW and AVX512-bf16 (detected); the function
        // checks `out`'s length.
        return unsafe { exp_to_bf16_avx512(row, max, out) };
    }
    crate::model::cpu_kernels::exp_to_bf16(row, max, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerators_shifted_by_the_first_keys_give_the_softmax_of_the_row() {
        // A row whose later scores exceed the first keys' maximum by a little (same
        // softmax) and by far more than exp's range (redone with the true maximum).
        for jump in [0.0f32, 5.0, 40.0, 200.0] {
            let mut row: Vec<f32> = (0..1500)
                .map(|i| ((i * 7919 % 211) as f32) * 0.05)
                .collect();
            row[1200] += jump;
            let mut got = vec![0u16; row.len()];
            let sum = numerators(&row, &mut got);
            let mut want = vec![0u16; row.len()];
            let sum_want = exp_to_bf16(&row, row_max(&row), &mut want);
            assert!(sum.is_finite(), "jump {jump}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let (g, w) = (super::super::bf16_to_f32(*g), super::super::bf16_to_f32(*w));
                let (pg, pw) = (g / sum, w / sum_want);
                assert!(
                    (pg - pw).abs() <= 8e-3 * pw + 1e-12,
                    "jump {jump} [{i}]: {pg} vs {pw}"
                );
            }
        }
        let mut row = vec![1.0f32; 600];
        row[550] = f32::NAN;
        let mut out = vec![0u16; 600];
        assert!(numerators(&row, &mut out).is_nan());
    }

    #[test]
    fn the_vector_exponentials_match_the_portable_ones() {
        // Lengths around the 32-value step and its masked tail; a NaN stays NaN.
        for n in [1usize, 15, 16, 17, 31, 32, 33, 77, 4096] {
            let row: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 90.0) * 0.7)
                .collect();
            let max = row_max(&row);
            let mut want = vec![0u16; n];
            let sum_want = crate::model::cpu_kernels::exp_to_bf16(&row, max, &mut want);
            let mut got = vec![0u16; n + 3];
            let sum = exp_to_bf16(&row, max, &mut got);
            assert!(
                (sum - sum_want).abs() <= 1e-5 * sum_want,
                "{n}: {sum} vs {sum_want}"
            );
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let (g, w) = (super::super::bf16_to_f32(*g), super::super::bf16_to_f32(*w));
                assert!(
                    (g - w).abs() <= 4e-3 * w.abs() + 1e-30,
                    "{n}[{i}]: {g} vs {w}"
                );
            }
            assert!(got[n..].iter().all(|&b| b == 0), "{n}: wrote past the row");
        }
        let mut out = vec![0u16; 40];
        let mut row = vec![0.5f32; 40];
        row[33] = f32::NAN;
        let sum = exp_to_bf16(&row, 0.5, &mut out);
        assert!(sum.is_nan());
        assert!(super::super::bf16_to_f32(out[33]).is_nan());
        assert_eq!(super::super::bf16_to_f32(out[0]), 1.0);
    }

    #[test]
    fn matches_the_f32_attention_on_every_path_with_bf16_instructions() {
        let dev = Device::Cpu;
        for (b, n, m, dim, heads) in [(2, 70, 77, 64, 2), (1, 130, 130, 40, 1), (2, 9, 5, 48, 3)] {
            let q = Tensor::randn(0f32, 1.0, (b, n, dim), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, m, dim), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, m, dim), &dev).unwrap();
            let scale = 1.0 / ((dim / heads) as f32).sqrt();
            let want = crate::model::cpu_kernels::attention(&q, &k, &v, heads, scale).unwrap();
            for path in Bf16Path::ALL {
                super::super::with_forced_path(path, || {
                    let got = attention(&q, &k, &v, heads, scale).unwrap();
                    let diff = (&got - &want).unwrap().sqr().unwrap().sum_all().unwrap();
                    let norm = want.sqr().unwrap().sum_all().unwrap();
                    let rel = (diff.to_scalar::<f32>().unwrap() / norm.to_scalar::<f32>().unwrap())
                        .sqrt();
                    assert!(rel < 1e-2, "{path} {b}×{n}×{m}×{dim}/{heads}: {rel}");
                });
            }
        }
    }
}

/// Milliseconds of one self-attention call of SD 1.5's 64×64 layers (batch 2, 4096 tokens,
/// 320 channels) with its 8 heads of 40 and, for comparison, 5 heads of 64 (the same
/// channels, so the same product FLOPs without padding `k` and the output to 64). A
/// measurement, not a test: `cargo test --release --lib attention_ms -- --ignored --nocapture`.
#[cfg(test)]
#[test]
#[ignore]
fn attention_ms() {
    use std::time::Instant;
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 4096, 320), &dev).unwrap();
    for heads in [8, 5] {
        let hd = 320 / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        attention(&x, &x, &x, heads, scale).unwrap();
        let t = Instant::now();
        for _ in 0..3 {
            attention(&x, &x, &x, heads, scale).unwrap();
        }
        println!(
            "{heads} heads of {hd}: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3 / 3.0
        );
    }
}
