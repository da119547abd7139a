//! A GEGLU feed-forward's input projection with the GEGLU done per block of the product:
//! `round_bf16(value · gelu_erf(gate))` for `[value | gate] = x · Wᵀ + b`, written straight
//! as the bf16 tokens that the feed-forward's output layer multiplies
//! ([`super::linear::linear_tokens`]). Unfused, the projection writes `tokens × 2·inner`
//! f32 values (84 MB per SD 1.5 block at 512×512), GEGLU reads them and writes half as many,
//! and the output layer reads those to round them: the largest activations of the UNet,
//! through memory three times. Fused, each finished 32 × 32 block is turned into 32 × 16
//! bf16 values while in cache ([`super::matmul_blocks`]).
//!
//! The layer's output rows are laid out once, interleaved by 16 — `value[16g .. 16g + 16]`,
//! then `gate[16g .. 16g + 16]` — so that every block of 32 output channels holds both halves
//! of 16 channels. The numbers are those of the unfused path bit for bit (the same products
//! in the same order, the same GEGLU and rounding code).

use super::linear::{Packed, to_bits};
use super::{Aligned, Bf16Path, Start, Weight, matmul_blocks};
use candle_core::{Device, Result, Tensor};

/// A GEGLU projection `(2·inner, in)` laid out for the fused product.
#[derive(Debug)]
pub struct GegluProj {
    /// The projection with its output rows interleaved by 16 (see the module).
    layer: Packed,
    inner: usize,
}

/// Tokens rounded to bf16, row-major (`rows × k`), in a cache-line-aligned buffer: the
/// operand a packed linear layer multiplies ([`super::linear::linear_tokens`]).
pub struct TokenBits {
    pub(super) bits: Aligned,
    pub(super) rows: usize,
    pub(super) k: usize,
    /// The shape the tokens came in, with `k` last.
    pub(super) shape: Vec<usize>,
}

impl TokenBits {
    /// The tokens widened back to f32, as a tensor of their shape (for a layer the bf16
    /// kernels do not run).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let values: Vec<f32> = self.bits.as_u16()[..self.rows * self.k]
            .iter()
            .map(|b| super::bf16_to_f32(*b))
            .collect();
        Tensor::from_vec(values, self.shape.as_slice(), device)
    }
}

impl GegluProj {
    /// From a packed projection `(2·inner, in)`: `None` when `inner` is not a multiple of 16
    /// (the blocks could not hold both halves of their channels).
    pub fn new(proj: &Packed) -> Option<GegluProj> {
        let (out, _) = proj.dims();
        let inner = out / 2;
        if out == 0 || !out.is_multiple_of(2) || !inner.is_multiple_of(16) {
            return None;
        }
        let half_blocks = inner / 16;
        // Result block 2g is value block g; 2g + 1 is gate block g (block = 16 rows).
        let from = |b: usize| {
            if b.is_multiple_of(2) {
                b / 2
            } else {
                half_blocks + b / 2
            }
        };
        let acts = proj.acts.blocks_reordered(from);
        let bias = proj.bias.as_ref().map(|b| {
            (0..out)
                .map(|i| b[from(i / 16) * 16 + i % 16])
                .collect::<Vec<f32>>()
        });
        Some(GegluProj {
            layer: Packed {
                acts,
                bias,
                bias_dtype: proj.bias_dtype,
            },
            inner,
        })
    }

    /// `inner`, the width of the GEGLU's output.
    pub fn inner(&self) -> usize {
        self.inner
    }

    /// `round_bf16(GEGLU(x · Wᵀ + b))` for `x` `(…, in)` (f32 or bf16 on the CPU): the tokens
    /// `(…, inner)` in bf16. Returns the path taken too.
    pub fn forward(&self, x: &Tensor) -> Result<(TokenBits, Bf16Path)> {
        let (out, in_dim) = self.layer.dims();
        let dims = x.dims();
        if dims.last() != Some(&in_dim) {
            candle_core::bail!("geglu projection: input {dims:?} for a {out}×{in_dim} weight");
        }
        if !super::linear::applies_packed(x) {
            candle_core::bail!(
                "geglu projection: a {:?} input on {:?} (the bf16 kernels take f32 or bf16 on the CPU)",
                x.dtype(),
                x.device()
            );
        }
        let rows = x.elem_count() / in_dim.max(1);
        let tokens = to_bits(x, rows * in_dim)?;
        let inner = self.inner;
        let mut result = Aligned::zeroed((rows * inner).div_ceil(2));
        let dst = BitsPtr(result.as_u16_mut().as_mut_ptr());
        let start = Start {
            bias: None,
            accumulate: false,
            col_bias: self.layer.bias.as_deref(),
        };
        let tokens = Weight::new(&tokens.as_u16()[..rows * in_dim], rows, in_dim);
        let epilogue = |(j0, nr): (usize, usize), (i0, nc): (usize, usize), block: &[f32; 1024]| {
            debug_assert_eq!(nc, 32);
            let mut h = [std::mem::MaybeUninit::<f32>::uninit(); 32 * 16];
            crate::model::cpu_kernels::geglu_rows(&block[..nr * 32], &mut h[..nr * 16], 16);
            // SAFETY: geglu_rows wrote the first nr rows of 16.
            let h: &[f32] = unsafe { std::slice::from_raw_parts(h.as_ptr().cast(), nr * 16) };
            for (r, row) in h.chunks_exact(16).enumerate() {
                // SAFETY: token j0 + r < rows, channels i0/2 .. i0/2 + 16 < inner: inside
                // `result`, and this block's values are written by this call only.
                let d = unsafe {
                    std::slice::from_raw_parts_mut(dst.get().add((j0 + r) * inner + i0 / 2), 16)
                };
                super::pack::round_into(row, d);
            }
        };
        let path = matmul_blocks(tokens, &self.layer.acts, start, &epilogue);
        super::linear::said(path);
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank ≥ 1") = inner;
        Ok((
            TokenBits {
                bits: result,
                rows,
                k: inner,
                shape,
            },
            path,
        ))
    }
}

/// The result's raw pointer, shared by blocks that write disjoint runs.
#[derive(Clone, Copy)]
struct BitsPtr(*mut u16);
// SAFETY: every block writes its own tokens' own channels only.
unsafe impl Send for BitsPtr {}
unsafe impl Sync for BitsPtr {}

impl BitsPtr {
    fn get(self) -> *mut u16 {
        self.0
    }
}

/// `linear(tokens) + residual` for tokens the fused projection made: the output layer's
/// product on them as they are (no rounding pass). Returns the path taken too.
pub fn linear_add_tokens(
    tokens: &TokenBits,
    layer: &Packed,
    residual: &Tensor,
) -> Result<(Tensor, Bf16Path)> {
    let (out, in_dim) = layer.dims();
    if in_dim != tokens.k {
        candle_core::bail!(
            "linear: {} values per token for a {out}×{in_dim} weight",
            tokens.k
        );
    }
    let mut shape = tokens.shape.clone();
    *shape.last_mut().expect("rank ≥ 1") = out;
    let (y, path) = super::linear::linear_tokens(
        &tokens.bits,
        tokens.rows,
        layer,
        Some(residual),
        &shape,
        residual.device(),
    )?;
    Ok((y.to_dtype(residual.dtype())?, path))
}

#[cfg(test)]
mod tests {
    use super::super::linear::{Packed, linear_packed, to_bits};
    use super::super::{Bf16Path, with_forced_path};
    use super::*;
    use candle_core::DType;

    /// `n` values of the bf16 tests' generator from `seed`.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        super::super::tests::Rng(seed).vec(n)
    }

    /// The fused projection gives the unfused path's bf16 tokens bit for bit — the product
    /// (`linear_packed`), `cpu_kernels::geglu` and the rounding of the output layer's input —
    /// on every forced path, over tokens that end inside a block, and the output layer on
    /// those tokens gives what it gives on the unfused GEGLU's output.
    #[test]
    fn fused_geglu_equals_projection_then_geglu_on_every_path() {
        let dev = Device::Cpu;
        let (rows, dim, inner) = (70, 64, 48);
        let x = Tensor::from_vec(values(rows * dim, 1), (1, rows, dim), &dev).unwrap();
        let w = Tensor::from_vec(values(2 * inner * dim, 2), (2 * inner, dim), &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let b = Tensor::from_vec(values(2 * inner, 3), 2 * inner, &dev).unwrap();
        let proj = Packed::new(&w, Some(&b)).unwrap();
        let fused = GegluProj::new(&proj).expect("inner is a multiple of 16");
        let w2 = Tensor::from_vec(values(dim * inner, 4), (dim, inner), &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let out = Packed::new(&w2, None).unwrap();
        let residual = Tensor::from_vec(values(rows * dim, 5), (1, rows, dim), &dev).unwrap();
        for path in Bf16Path::ALL {
            with_forced_path(path, || {
                let (h, _) = linear_packed(&x, &proj, None).unwrap();
                let h = crate::model::cpu_kernels::geglu(&h).unwrap();
                let want = to_bits(&h, rows * inner).unwrap();
                let (got, took) = fused.forward(&x).unwrap();
                assert_eq!((got.rows, got.k), (rows, inner));
                assert_eq!(got.shape, [1, rows, inner]);
                let (g, w) = (
                    &got.bits.as_u16()[..rows * inner],
                    &want.as_u16()[..rows * inner],
                );
                let differ = g.iter().zip(w).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differ, 0,
                    "{path} (took {took}): {differ} tokens' values differ"
                );
                let (y, _) = linear_add_tokens(&got, &out, &residual).unwrap();
                let (y_want, _) = linear_packed(&h, &out, Some(&residual)).unwrap();
                let (y, y_want) = (
                    y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    y_want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                assert_eq!(y, y_want, "{path}: the output layer");
            });
        }
        // A width whose blocks could not hold both halves is left to the unfused path.
        let odd = Tensor::from_vec(values(2 * 40 * dim, 6), (80, dim), &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        assert!(GegluProj::new(&Packed::new(&odd, None).unwrap()).is_none());
    }
}
