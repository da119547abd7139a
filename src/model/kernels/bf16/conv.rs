//! 2-D convolutions with bf16 weights on the CPU (groups 1, dilation 1), on
//! [`matmul`](super::matmul): `Y (o, pixels) = W (o, c·kh·kw) · patchesᵀ`, with each
//! image's patches gathered straight into the kernels' bf16 layout ([`Acts::build`], never
//! an f32 patch matrix) and the result written channel-major, in place (plus a residual
//! already in the output when asked). The weight is read as it is stored.

use super::linear::{f32_values, said, with_weight};
use super::{Acts, Bf16Path, MB, OutAt, Start, matmul, matmul_uninit};
use candle_core::{DType, Result, Tensor};

/// Whether [`conv2d`] handles this input and weight: both on the CPU, a bf16 weight and an
/// f32 or bf16 input.
pub fn applies(x: &Tensor, weight: &Tensor) -> bool {
    super::linear::applies(x, weight)
}

/// `conv2d(x, weight) + bias (+ residual)` for `x` `(b, c, h, w)` and a bf16 `weight`
/// `(o, c, kh, kw)`; the result has `x`'s dtype. Returns the path taken too.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    residual: Option<&Tensor>,
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
    let x32 = x.to_dtype(DType::F32)?;
    let bias = bias.map(f32_values).transpose()?;
    if let Some(bv) = &bias
        && bv.len() != o
    {
        candle_core::bail!("conv bias: {} values for {o} channels", bv.len());
    }
    let pixels = ho * wo;
    let residual = match residual {
        Some(r) => {
            if r.dims() != [b, o, ho, wo] {
                candle_core::bail!(
                    "conv residual: {:?}, expected {:?}",
                    r.dims(),
                    [b, o, ho, wo]
                );
            }
            Some(f32_values(r)?)
        }
        None => None,
    };
    let start = Start {
        bias: bias.as_deref(),
        accumulate: residual.is_some(),
        col_bias: None,
    };
    let pointwise = kh == 1 && kw == 1 && stride == 1 && padding == 0;
    // All images in one product: each weight is read once for the batch.
    // Stride 1 over rows of whole 16-pixel blocks: each patch value of 16 neighbouring
    // pixels is a run of one image line, rounded straight from the image.
    let by_columns = stride == 1 && wo.is_multiple_of(MB);
    let plane = c * h * w;
    let acts = crate::model::cpu_kernels::with_slice(&x32, |xs| {
        if by_columns {
            return Ok(Acts::build_columns(b * pixels, k, |blk, cols| {
                let i0 = blk * MB;
                let (img, p0) = (i0 / pixels, i0 % pixels);
                let src = &xs[img * plane..(img + 1) * plane];
                let mut col = [0f32; MB];
                if pointwise {
                    for ch in 0..c {
                        col.copy_from_slice(&src[ch * pixels + p0..ch * pixels + p0 + MB]);
                        cols.push(&col);
                    }
                    return;
                }
                let (oy, ox0) = (p0 / wo, p0 % wo);
                for ch in 0..c {
                    for ky in 0..kh {
                        let y = (oy + ky) as isize - padding as isize;
                        if !(0..h as isize).contains(&y) {
                            for _ in 0..kw {
                                cols.push(&[0.0; MB]);
                            }
                            continue;
                        }
                        let line = &src[(ch * h + y as usize) * w..(ch * h + y as usize + 1) * w];
                        for kx in 0..kw {
                            let x0 = (ox0 + kx) as isize - padding as isize;
                            if x0 >= 0 && x0 as usize + MB <= w {
                                col.copy_from_slice(&line[x0 as usize..x0 as usize + MB]);
                            } else {
                                for (r, v) in col.iter_mut().enumerate() {
                                    let x = x0 + r as isize;
                                    *v = if (0..w as isize).contains(&x) {
                                        line[x as usize]
                                    } else {
                                        0.0
                                    };
                                }
                            }
                            cols.push(&col);
                        }
                    }
                }
            }));
        }
        Ok(Acts::build(b * pixels, k, |i, row| {
            let (img, i) = (i / pixels, i % pixels);
            let src = &xs[img * plane..(img + 1) * plane];
            if pointwise {
                for (ch, v) in row.iter_mut().enumerate() {
                    *v = src[ch * pixels + i];
                }
                return;
            }
            let (oy, ox) = (i / wo, i % wo);
            let (y0, x0) = (oy * stride, ox * stride);
            if y0 >= padding && x0 >= padding && y0 + kh <= h + padding && x0 + kw <= w + padding {
                // Inside the image: whole kernel rows, no bounds to check.
                let (y0, x0) = (y0 - padding, x0 - padding);
                for (ch, plane) in src.chunks_exact(h * w).enumerate() {
                    for ky in 0..kh {
                        let at = (y0 + ky) * w + x0;
                        let d = (ch * kh + ky) * kw;
                        row[d..d + kw].copy_from_slice(&plane[at..at + kw]);
                    }
                }
                return;
            }
            for ch in 0..c {
                for ky in 0..kh {
                    let y = (oy * stride + ky) as isize - padding as isize;
                    let dst = &mut row[(ch * kh + ky) * kw..(ch * kh + ky + 1) * kw];
                    if !(0..h as isize).contains(&y) {
                        dst.fill(0.0);
                        continue;
                    }
                    let line = &src[(ch * h + y as usize) * w..(ch * h + y as usize + 1) * w];
                    for (kx, v) in dst.iter_mut().enumerate() {
                        let xx = (ox * stride + kx) as isize - padding as isize;
                        *v = if (0..w as isize).contains(&xx) {
                            line[xx as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }))
    })?;
    let at = OutAt::images(o, pixels);
    let (out, path) = with_weight(weight, (o, k), |wt| match residual {
        Some(mut out) => {
            let path = matmul(&mut out, at, wt, &acts, start);
            (out, path)
        }
        None => {
            let mut out = crate::model::cpu_kernels::uninit_vec(b * o * pixels);
            let path = matmul_uninit(&mut out, at, wt, &acts, start);
            // SAFETY: the product wrote every value (no residual to start from).
            (unsafe { crate::model::cpu_kernels::assume_init(out) }, path)
        }
    })?;
    said(path);
    let y = Tensor::from_vec(out, (b, o, ho, wo), x.device())?;
    Ok((y.to_dtype(x.dtype())?, path))
}
