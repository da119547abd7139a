//! 2-D convolutions with bf16 weights on the CPU (groups 1, dilation 1), as patches ×
//! weights on [`matmul`](super::matmul): candle's CPU convolution has no bf16 product
//! ("unsupported dtype BF16 for op matmul").
//!
//! Per image, blocks of [`ROWS`] output pixels: their patches `(pixels, c·kh·kw)` in f32,
//! times the packed weight `(o, c·kh·kw)`ᵀ, then written transposed into `(o, pixels)`.
//!
//! TODO(issue 28): pack the weight once at load; write the patches in bf16 straight into
//! the kernel's layout (no f32 patch matrix); 1×1 convolutions without patches.

use super::{Bf16Path, matmul};
use candle_core::{DType, Result, Tensor};

/// Output pixels per block of patches (bounds the patch buffer: `ROWS · c·kh·kw` f32).
const ROWS: usize = 1024;

/// Whether [`conv2d`] handles this input and weight: both on the CPU, a bf16 weight and an
/// f32 or bf16 input.
pub fn applies(x: &Tensor, weight: &Tensor) -> bool {
    super::linear::applies(x, weight)
}

/// `conv2d(x, weight) + bias` for `x` `(b, c, h, w)` and a bf16 `weight` `(o, c, kh, kw)`;
/// the result has `x`'s dtype. Returns the path taken too.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<(Tensor, Bf16Path)> {
    let (b, c, h, w) = x.dims4()?;
    let (o, ci, kh, kw) = weight.dims4()?;
    if ci != c || stride == 0 {
        candle_core::bail!("conv: {c} input channels but the kernel takes {ci} (stride {stride})");
    }
    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
    if hp < kh || wp < kw {
        candle_core::bail!("conv: input {h}×{w} (padding {padding}) smaller than {kh}×{kw}");
    }
    let (ho, wo) = ((hp - kh) / stride + 1, (wp - kw) / stride + 1);
    let k = c * kh * kw;
    let packed = super::linear::pack_weight(&weight.reshape((o, k))?)?;
    let xs = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let bias = bias
        .map(|t| t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>())
        .transpose()?;
    let pixels = ho * wo;
    let mut out = vec![0f32; b * o * pixels];
    let mut patches = vec![0f32; ROWS.min(pixels) * k];
    let mut block = vec![0f32; ROWS.min(pixels) * o];
    let mut path = Bf16Path::Portable;
    for img in 0..b {
        let src = &xs[img * c * h * w..(img + 1) * c * h * w];
        let dst = &mut out[img * o * pixels..(img + 1) * o * pixels];
        for p0 in (0..pixels).step_by(ROWS) {
            let rows = ROWS.min(pixels - p0);
            for (r, patch) in patches.chunks_exact_mut(k).take(rows).enumerate() {
                let (oy, ox) = ((p0 + r) / wo, (p0 + r) % wo);
                for ch in 0..c {
                    for ky in 0..kh {
                        let y = (oy * stride + ky) as isize - padding as isize;
                        for kx in 0..kw {
                            let xx = (ox * stride + kx) as isize - padding as isize;
                            let inside =
                                (0..h as isize).contains(&y) && (0..w as isize).contains(&xx);
                            patch[(ch * kh + ky) * kw + kx] = if inside {
                                src[(ch * h + y as usize) * w + xx as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
            let block = &mut block[..rows * o];
            path = matmul(
                block,
                &patches[..rows * k],
                rows,
                &packed,
                bias.as_deref(),
                false,
            );
            for (r, row) in block.chunks_exact(o).enumerate() {
                for (j, v) in row.iter().enumerate() {
                    dst[j * pixels + p0 + r] = *v;
                }
            }
        }
    }
    let y = Tensor::from_vec(out, (b, o, ho, wo), x.device())?;
    Ok((y.to_dtype(x.dtype())?, path))
}
