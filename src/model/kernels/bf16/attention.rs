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
use crate::model::cpu_kernels::{AttentionDims, exp_to_bf16, row_max, with_slice};
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
                    || (vec![0f32; ROWS * m], vec![0u16; ROWS * m.max(hd)]),
                    |(scores, bits), task| {
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
                            *sum = exp_to_bf16(row, row_max(row), p);
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

#[cfg(test)]
mod tests {
    use super::*;

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
