//! 2-D convolutions with bf16 weights on the CPU (groups 1, dilation 1), on
//! [`matmul`](super::matmul): `Y (o, pixels) = W (o, kh·kw·c) · patchesᵀ`, with each
//! image's patches gathered straight into the kernels' bf16 layout ([`Acts::build`], never
//! an f32 patch matrix) and the result written channel-major, in place (plus a residual
//! already in the output when asked).
//!
//! The kernels take the weight **by offset**, `(o, kh, kw, c)`: `k` runs over the channels
//! at one kernel offset, which the AMX convolution needs (32 channels per step, loaded
//! straight from the weight) and the patch paths follow. A layer re-lays its weight out
//! once, when it is built ([`by_offset`], `layers::Conv`); [`conv2d`] takes the stored
//! `(o, c, kh, kw)` layout and re-lays it out per call (tests, one-off products).

use super::linear::{f32_values, said, with_weight};
use super::{Acts, Bf16Path, MB, OutAt, Start, matmul, matmul_uninit};
use candle_core::{DType, Result, Tensor};

/// The most bytes of patches a convolution rounds at once.
const PATCH_BYTES: usize = 16 << 20;

/// Whether [`conv2d`] handles this input and weight: both on the CPU, a bf16 weight and an
/// f32 or bf16 input.
pub fn applies(x: &Tensor, weight: &Tensor) -> bool {
    super::linear::applies(x, weight)
}

/// A bf16 weight `(o, c, kh, kw)` re-laid out by offset, `(o, kh, kw, c)` (what
/// [`conv2d_by_offset`] takes), its values starting on a cache line (a view into a slightly
/// longer buffer), so that the AMX convolution loads its rows as tiles in place.
pub fn by_offset(weight: &Tensor) -> Result<Tensor> {
    aligned(&weight.permute((0, 2, 3, 1))?)
}

/// A bf16 CPU tensor's values in a fresh buffer where they start on a cache line (a view
/// into a slightly longer buffer), same shape: a 1×1 convolution's weight, whose rows the
/// AMX kernels then load in place.
pub fn aligned(t: &Tensor) -> Result<Tensor> {
    let t = t.contiguous()?;
    let dims = t.dims().to_vec();
    let n = t.elem_count();
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(candle_core::CpuStorage::BF16(values)) = &*storage else {
        candle_core::bail!("bf16 weight: expected a bf16 CPU tensor");
    };
    let values = &values[layout.start_offset()..][..n];
    if n == 0 {
        return Ok(t.clone());
    }
    // (The 32 values around the view are never read.)
    let mut buf = vec![values[0]; n + 32];
    let off = (64 - buf.as_ptr() as usize % 64) % 64 / 2;
    buf[off..off + n].copy_from_slice(values);
    Tensor::from_vec(buf, n + 32, t.device())?
        .narrow(0, off, n)?
        .reshape(dims)
}

/// `conv2d(x, weight) + bias (+ residual)` for `x` `(b, c, h, w)` and a bf16 `weight`
/// `(o, c, kh, kw)` (re-laid out by offset for this call); the result has `x`'s dtype.
/// Returns the path taken too.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    residual: Option<&Tensor>,
) -> Result<(Tensor, Bf16Path)> {
    let (o, c, kh, kw) = weight.dims4()?;
    // A 1×1 kernel is laid out by offset already: a view, no copy.
    let weight = if kh * kw == 1 {
        weight.reshape((o, 1, 1, c))?
    } else {
        by_offset(weight)?
    };
    conv2d_by_offset(x, &weight, bias, stride, padding, residual)
}

/// [`conv2d`] for a weight already by offset, `(o, kh, kw, c)`.
pub fn conv2d_by_offset(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    residual: Option<&Tensor>,
) -> Result<(Tensor, Bf16Path)> {
    conv2d_with(x, weight, bias, (stride, padding), residual, PATCH_BYTES)
}

/// [`conv2d_by_offset`] rounding at most `patch_bytes` of patches at once.
fn conv2d_with(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    (stride, padding): (usize, usize),
    residual: Option<&Tensor>,
    patch_bytes: usize,
) -> Result<(Tensor, Bf16Path)> {
    let (b, c, h, w) = x.dims4()?;
    let (o, kh, kw, ci) = weight.dims4()?;
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
            Some(super::OutVec::copy_of_tensor(r)?)
        }
        None => None,
    };
    let start = Start {
        bias: bias.as_deref(),
        accumulate: residual.is_some(),
        col_bias: None,
    };
    // The output: a copy of the residual to start from, or not yet written.
    let mut out = residual.unwrap_or_else(|| super::OutVec::uninit(b * o * pixels));
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if super::current_path() == Bf16Path::Amx
        && super::amx_conv::applies((o, c), (kh, kw), stride, padding, w)
    {
        crate::model::cpu_kernels::with_slice(&x32, |xs| {
            with_weight(weight, (o, k), |wt| {
                let dst = super::OutPtr(out.uninit_mut().as_mut_ptr().cast());
                // SAFETY: the path is AMX (chosen from this CPU's features), `applies`
                // holds, and the output holds b · o · pixels values (the residual's when
                // accumulating).
                unsafe { super::amx_conv::conv3x3(dst, xs, (b, c, h, w), wt.bits, o, start) };
            })
        })?;
        said(Bf16Path::Amx);
        // SAFETY: the convolution wrote every value.
        let y = unsafe { out.into_tensor(&[b, o, ho, wo], x.device())? };
        return Ok((y.to_dtype(x.dtype())?, Bf16Path::Amx));
    }
    let pointwise = kh == 1 && kw == 1 && stride == 1 && padding == 0;
    // Stride 1 over rows of whole 16-pixel blocks: each patch value of 16 neighbouring
    // pixels is a run of one image line, rounded straight from the image.
    let by_columns = stride == 1 && wo.is_multiple_of(MB);
    let plane = c * h * w;
    // The patches of activation rows `first .. first + rows` (rows over all images).
    let patches = |xs: &[f32], first: usize, rows: usize| -> Acts {
        if by_columns {
            return Acts::build_columns(rows, k, |blk, cols| {
                let i0 = first + blk * MB;
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
                for ky in 0..kh {
                    let y = (oy + ky) as isize - padding as isize;
                    if !(0..h as isize).contains(&y) {
                        for _ in 0..kw * c {
                            cols.push(&[0.0; MB]);
                        }
                        continue;
                    }
                    for kx in 0..kw {
                        let x0 = (ox0 + kx) as isize - padding as isize;
                        for ch in 0..c {
                            let line =
                                &src[(ch * h + y as usize) * w..(ch * h + y as usize + 1) * w];
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
            });
        }
        Acts::build(rows, k, |i, row| {
            let (img, i) = ((first + i) / pixels, (first + i) % pixels);
            let src = &xs[img * plane..(img + 1) * plane];
            if pointwise {
                for (ch, v) in row.iter_mut().enumerate() {
                    *v = src[ch * pixels + i];
                }
                return;
            }
            let (oy, ox) = (i / wo, i % wo);
            // Row value (ky, kx, ch) at (ky · kw + kx) · c + ch: the input at that offset,
            // zero outside the image.
            for ky in 0..kh {
                let y = (oy * stride + ky) as isize - padding as isize;
                for kx in 0..kw {
                    let dst = &mut row[(ky * kw + kx) * c..(ky * kw + kx + 1) * c];
                    let xx = (ox * stride + kx) as isize - padding as isize;
                    if !(0..h as isize).contains(&y) || !(0..w as isize).contains(&xx) {
                        dst.fill(0.0);
                        continue;
                    }
                    let at = y as usize * w + xx as usize;
                    for (ch, v) in dst.iter_mut().enumerate() {
                        *v = src[ch * h * w + at];
                    }
                }
            }
        })
    };
    // All images in one product when their patches are small (each weight read once for
    // the batch); else whole output rows of one image at a time, so that a large image's
    // patches (a VAE's 512×512 layers: 600 MB) never exist at once.
    let row_bytes = wo * k * 2;
    let chunk_rows = (patch_bytes / row_bytes.max(1)).max(1);
    let path = crate::model::cpu_kernels::with_slice(&x32, |xs| {
        with_weight(weight, (o, k), |wt| {
            // Start from the residual, or write every value of an uninitialised output.
            let mut product = |range: std::ops::Range<usize>, at: OutAt, acts: &Acts| {
                if start.accumulate {
                    // SAFETY: a copy of the residual: every value written.
                    matmul(&mut unsafe { out.values_mut() }[range], at, wt, acts, start)
                } else {
                    matmul_uninit(&mut out.uninit_mut()[range], at, wt, acts, start)
                }
            };
            let mut path = Bf16Path::Portable;
            if b * pixels * k * 2 <= patch_bytes {
                let acts = patches(xs, 0, b * pixels);
                path = product(0..b * o * pixels, OutAt::images(o, pixels), &acts);
            } else {
                for img in 0..b {
                    for y0 in (0..ho).step_by(chunk_rows) {
                        let (p0, len) = (y0 * wo, chunk_rows.min(ho - y0) * wo);
                        let acts = patches(xs, img * pixels + p0, len);
                        let range = img * o * pixels + p0..(img + 1) * o * pixels;
                        path = product(range, OutAt::channels(pixels), &acts);
                    }
                }
            }
            path
        })
    })?;
    said(path);
    // SAFETY: the products wrote every value (each pixel of each image belongs to exactly
    // one chunk), or started from the residual's.
    let y = unsafe { out.into_tensor(&[b, o, ho, wo], x.device())? };
    Ok((y.to_dtype(x.dtype())?, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::layers::tests::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn the_amx_convolution_without_patches_matches_the_patch_path() {
        use crate::model::kernels::bf16::with_forced_path;
        let dev = Device::Cpu;
        // 5 rows of 16 pixels: the last pixel block is half; 64 output channels.
        let x = Tensor::randn(0f32, 1.0, (2, 64, 5, 16), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.1, (64, 64, 3, 3), &dev)
            .and_then(|t| t.to_dtype(DType::BF16))
            .unwrap();
        let b = Tensor::randn(0f32, 1.0, 64, &dev).unwrap();
        let res = Tensor::randn(0f32, 1.0, (2, 64, 5, 16), &dev).unwrap();
        for (bias, residual) in [
            (None, None),
            (Some(&b), None),
            (Some(&b), Some(&res)),
            (None, Some(&res)),
        ] {
            let want = with_forced_path(Bf16Path::Avx512Bf16, || {
                conv2d(&x, &w, bias, 1, 1, residual).unwrap()
            });
            let got = with_forced_path(Bf16Path::Amx, || {
                conv2d(&x, &w, bias, 1, 1, residual).unwrap()
            });
            assert_eq!(
                got.1,
                super::super::choose(Some(Bf16Path::Amx), super::super::CpuBf16::detect())
            );
            let diff = max_abs_diff(&got.0, &want.0);
            assert!(
                diff < 1e-4,
                "bias {} residual {}: {diff}",
                bias.is_some(),
                residual.is_some()
            );
        }
    }

    #[test]
    fn a_weight_by_offset_starts_on_a_cache_line_and_holds_the_same_values() {
        let dev = Device::Cpu;
        for (o, c) in [(4, 3), (32, 64), (5, 1)] {
            let w = Tensor::randn(0f32, 1.0, (o, c, 3, 3), &dev)
                .and_then(|t| t.to_dtype(DType::BF16))
                .unwrap();
            let by = by_offset(&w).unwrap();
            assert_eq!(by.dims(), &[o, 3, 3, c]);
            with_weight(&by, (o, 9 * c), |wt| {
                assert!((wt.bits.as_ptr() as usize).is_multiple_of(64), "{o}×{c}");
            })
            .unwrap();
            let back = by.permute((0, 3, 1, 2)).unwrap();
            assert_eq!(max_abs_diff(&back, &w), 0.0);
        }
    }

    #[test]
    fn rounding_the_patches_by_rows_gives_the_same_convolution() {
        let dev = Device::Cpu;
        for (dims, k, stride, padding) in [
            ((2, 3, 9, 32), 3, 1, 1),
            ((2, 3, 9, 32), 1, 1, 0),
            ((1, 4, 11, 12), 3, 2, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, dims, &dev).unwrap();
            let c = dims.1;
            let w = Tensor::randn(0f32, 1.0, (5, c, k, k), &dev)
                .and_then(|t| t.to_dtype(DType::BF16))
                .and_then(|t| by_offset(&t))
                .unwrap();
            let b = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
            let whole = conv2d_with(&x, &w, Some(&b), (stride, padding), None, usize::MAX)
                .unwrap()
                .0;
            let res = Tensor::randn(0f32, 1.0, whole.dims(), &dev).unwrap();
            for residual in [None, Some(&res)] {
                let want = conv2d_with(&x, &w, Some(&b), (stride, padding), residual, usize::MAX)
                    .unwrap()
                    .0;
                // A few output rows at a time (one row per chunk at the smallest).
                for limit in [1, 3 * 32 * c * k * k * 2] {
                    let got = conv2d_with(&x, &w, Some(&b), (stride, padding), residual, limit)
                        .unwrap()
                        .0;
                    let diff = max_abs_diff(&got, &want);
                    assert!(
                        diff < 1e-5,
                        "{dims:?} k {k} stride {stride} limit {limit}: {diff}"
                    );
                }
            }
        }
    }
}
