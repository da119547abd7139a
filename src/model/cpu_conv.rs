//! A faster 2-D convolution for inference on the CPU in f32.
//!
//! candle 0.11's CPU `conv2d` spends most of its time outside the matrix product for the
//! small images of the built-in model (a 3×3 convolution of a 2×16×32×32 tensor takes
//! ≈ 1.4 ms, its matrix product ≈ 0.2 ms). Here the patches are gathered with row copies
//! (`im2col`) and multiplied with the weights in one matrix product per chunk of the
//! batch. Results equal candle's up to float rounding (tested below).
//!
//! For training, [`conv2d_trainable`] does the same through a custom op with a backward
//! pass (the adjoint `col2im`), so gradients flow through one gather and one matrix product
//! instead of nine strided copies.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Storage, Tensor};

static DISABLED: AtomicBool = AtomicBool::new(false);

/// Switch this path off (`false`) to time candle's own convolution against it.
pub fn set_enabled(on: bool) {
    DISABLED.store(!on, Ordering::Relaxed);
}

/// The most patch values gathered at once (64 MB of f32); larger batches go in chunks.
const MAX_COLUMN_VALUES: usize = 16 << 20;

/// Whether [`conv2d`] handles `x` (a CPU f32 tensor).
pub fn applies(x: &Tensor) -> bool {
    !DISABLED.load(Ordering::Relaxed)
        && matches!(x.device(), Device::Cpu)
        && x.dtype() == DType::F32
        && x.rank() == 4
}

/// `x (b, c, h, w)` ⊛ `weight (o, c, kh, kw)` + `bias (o)`, groups 1, dilation 1.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_chunked(x, weight, bias, stride, padding, MAX_COLUMN_VALUES)
}

fn conv2d_chunked(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    max_column_values: usize,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, ci, kh, kw) = weight.dims4()?;
    if ci != c {
        candle_core::bail!("conv: {c} input channels but the kernel takes {ci}");
    }
    if stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
        candle_core::bail!("conv: kernel {kh}×{kw} does not fit a {h}×{w} input");
    }
    let ho = (h + 2 * padding - kh) / stride + 1;
    let wo = (w + 2 * padding - kw) / stride + 1;
    let wmat = weight.reshape((o, c * kh * kw))?;
    let y = if kh == 1 && kw == 1 && stride == 1 && padding == 0 {
        wmat.broadcast_matmul(&x.reshape((b, c, h * w))?)?
    } else {
        let x = x.contiguous()?;
        let k = c * kh * kw;
        let per_image = k * ho * wo;
        let chunk = (max_column_values / per_image.max(1)).clamp(1, b);
        let (storage, layout) = x.storage_and_layout();
        let data = match &*storage {
            Storage::Cpu(s) => s.as_slice::<f32>()?,
            _ => candle_core::bail!("cpu_conv::conv2d needs a CPU tensor"),
        };
        let data = &data[layout.start_offset()..layout.start_offset() + b * c * h * w];
        let geometry = Geometry {
            c,
            h,
            w,
            kh,
            kw,
            stride,
            padding,
            ho,
            wo,
        };
        let mut outs = Vec::with_capacity(b.div_ceil(chunk));
        for start in (0..b).step_by(chunk) {
            let n = chunk.min(b - start);
            let mut cols = vec![0f32; n * per_image];
            for i in 0..n {
                let img = &data[(start + i) * c * h * w..(start + i + 1) * c * h * w];
                geometry.im2col(img, &mut cols[i * per_image..(i + 1) * per_image]);
            }
            let cols = Tensor::from_vec(cols, (n, k, ho * wo), x.device())?;
            outs.push(wmat.broadcast_matmul(&cols)?);
        }
        drop(storage);
        if outs.len() == 1 {
            outs.pop().expect("one chunk")
        } else {
            Tensor::cat(&outs, 0)?
        }
    };
    let y = y.reshape((b, o, ho, wo))?;
    match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, o, 1, 1))?),
        None => Ok(y),
    }
}

/// [`conv2d`] for training: differentiable in `x`, `weight` and `bias` (CPU, f32).
pub fn conv2d_trainable(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, ci, kh, kw) = weight.dims4()?;
    if ci != c {
        candle_core::bail!("conv: {c} input channels but the kernel takes {ci}");
    }
    if stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
        candle_core::bail!("conv: kernel {kh}×{kw} does not fit a {h}×{w} input");
    }
    let ho = (h + 2 * padding - kh) / stride + 1;
    let wo = (w + 2 * padding - kw) / stride + 1;
    let geometry = Geometry {
        c,
        h,
        w,
        kh,
        kw,
        stride,
        padding,
        ho,
        wo,
    };
    let cols = x.contiguous()?.apply_op1(Im2Col { geometry, batch: b })?;
    let y = weight
        .reshape((o, c * kh * kw))?
        .broadcast_matmul(&cols)?
        .reshape((b, o, ho, wo))?;
    match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, o, 1, 1))?),
        None => Ok(y),
    }
}

/// `(b, c, h, w)` → patches `(b, c·kh·kw, ho·wo)`; backward: [`Col2Im`].
struct Im2Col {
    geometry: Geometry,
    batch: usize,
}

/// The adjoint of [`Im2Col`]: patches are summed back into `(b, c, h, w)`.
struct Col2Im {
    geometry: Geometry,
    batch: usize,
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, len: usize) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) if end - start == len => Ok(&data[start..end]),
        _ => candle_core::bail!("patch op: expected a contiguous input of {len} values"),
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "adiff-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let image = g.c * g.h * g.w;
        let per_image = g.c * g.kh * g.kw * g.ho * g.wo;
        let data = contiguous_f32(storage, layout, self.batch * image)?;
        let mut cols = vec![0f32; self.batch * per_image];
        for i in 0..self.batch {
            g.im2col(
                &data[i * image..(i + 1) * image],
                &mut cols[i * per_image..(i + 1) * per_image],
            );
        }
        Ok((
            CpuStorage::F32(cols),
            Shape::from((self.batch, g.c * g.kh * g.kw, g.ho * g.wo)),
        ))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im {
            geometry: self.geometry,
            batch: self.batch,
        })?;
        Ok(Some(grad))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "adiff-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let image = g.c * g.h * g.w;
        let per_image = g.c * g.kh * g.kw * g.ho * g.wo;
        let cols = contiguous_f32(storage, layout, self.batch * per_image)?;
        let mut out = vec![0f32; self.batch * image];
        for i in 0..self.batch {
            g.col2im(
                &cols[i * per_image..(i + 1) * per_image],
                &mut out[i * image..(i + 1) * image],
            );
        }
        Ok((
            CpuStorage::F32(out),
            Shape::from((self.batch, g.c, g.h, g.w)),
        ))
    }
}

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    /// Gather the patches of one image (`c·h·w` values) into `cols`, laid out
    /// `(c·kh·kw, ho·wo)` with row index `(ci·kh + ky)·kw + kx` (the weights' own order).
    /// `cols` must be zeroed: padding positions are left alone.
    fn im2col(&self, img: &[f32], cols: &mut [f32]) {
        let &Geometry {
            c,
            h,
            w,
            kh,
            kw,
            stride,
            padding,
            ho,
            wo,
        } = self;
        let plane = ho * wo;
        for ci in 0..c {
            let src = &img[ci * h * w..(ci + 1) * h * w];
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = (ci * kh + ky) * kw + kx;
                    let dst = &mut cols[row * plane..(row + 1) * plane];
                    // Output columns whose input column is inside the image:
                    // ix = ox·stride + kx − padding ∈ [0, w).
                    let (ox_lo, ox_hi) = self.valid_columns(kx);
                    if ox_lo >= ox_hi {
                        continue;
                    }
                    for oy in 0..ho {
                        let iy = oy * stride + ky;
                        if iy < padding || iy - padding >= h {
                            continue;
                        }
                        let srow = &src[(iy - padding) * w..(iy - padding + 1) * w];
                        let drow = &mut dst[oy * wo..(oy + 1) * wo];
                        let ix0 = ox_lo * stride + kx - padding;
                        if stride == 1 {
                            let n = ox_hi - ox_lo;
                            drow[ox_lo..ox_hi].copy_from_slice(&srow[ix0..ix0 + n]);
                        } else {
                            for (j, d) in drow[ox_lo..ox_hi].iter_mut().enumerate() {
                                *d = srow[ix0 + j * stride];
                            }
                        }
                    }
                }
            }
        }
    }
    /// The adjoint of [`Geometry::im2col`]: add every patch value back to the input pixel
    /// it was read from.
    fn col2im(&self, cols: &[f32], img: &mut [f32]) {
        let &Geometry {
            c,
            h,
            w,
            kh,
            kw,
            stride,
            padding,
            ho,
            wo,
        } = self;
        let plane = ho * wo;
        for ci in 0..c {
            let dst = &mut img[ci * h * w..(ci + 1) * h * w];
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = (ci * kh + ky) * kw + kx;
                    let src = &cols[row * plane..(row + 1) * plane];
                    let (ox_lo, ox_hi) = self.valid_columns(kx);
                    if ox_lo >= ox_hi {
                        continue;
                    }
                    for oy in 0..ho {
                        let iy = oy * stride + ky;
                        if iy < padding || iy - padding >= h {
                            continue;
                        }
                        let drow = &mut dst[(iy - padding) * w..(iy - padding + 1) * w];
                        let srow = &src[oy * wo..(oy + 1) * wo];
                        let ix0 = ox_lo * stride + kx - padding;
                        for (j, v) in srow[ox_lo..ox_hi].iter().enumerate() {
                            drow[ix0 + j * stride] += v;
                        }
                    }
                }
            }
        }
    }

    /// Output columns `ox_lo..ox_hi` whose input column `ox·stride + kx − padding` is
    /// inside the image.
    fn valid_columns(&self, kx: usize) -> (usize, usize) {
        let lo = self.padding.saturating_sub(kx).div_ceil(self.stride);
        let hi = if self.w + self.padding > kx {
            ((self.w + self.padding - kx - 1) / self.stride + 1).min(self.wo)
        } else {
            0
        };
        (lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[batch, in channels, out channels, height, width, kernel, stride, padding]`.
    fn check([b, c, o, h, w, k, s, p]: [usize; 8]) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (o, c, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, o, &dev).unwrap();
        let want = x
            .conv2d(&wt, p, s, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, o, 1, 1)).unwrap())
            .unwrap();
        let got = conv2d(&x, &wt, Some(&bias), s, p).unwrap();
        assert_eq!(
            got.dims(),
            want.dims(),
            "b{b} c{c} o{o} {h}x{w} k{k} s{s} p{p}"
        );
        let err = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let scale = want
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            err <= 1e-5 * scale.max(1.0),
            "b{b} c{c} o{o} {h}x{w} k{k} s{s} p{p}: max error {err} (scale {scale})"
        );
    }

    #[test]
    fn equals_candles_convolution() {
        check([2, 16, 16, 32, 32, 3, 1, 1]); // the shapes UNet's convolutions
        check([2, 32, 32, 16, 16, 3, 2, 1]); // a downsampler
        check([1, 3, 8, 7, 5, 3, 1, 1]); // odd, non-square
        check([2, 4, 6, 9, 9, 3, 2, 1]); // odd size, stride 2
        check([3, 5, 7, 6, 6, 1, 1, 0]); // 1×1
        check([1, 2, 3, 8, 8, 3, 1, 0]); // no padding
        check([1, 2, 3, 4, 4, 5, 1, 2]); // 5×5, padding 2
        check([2, 3, 4, 10, 6, 3, 3, 1]); // stride 3
    }

    #[test]
    fn non_contiguous_input_and_chunked_batches() {
        let dev = Device::Cpu;
        // (b, h, w, c) permuted to (b, c, h, w): not contiguous.
        let x = Tensor::randn(0f32, 1.0, (3, 12, 10, 4), &dev)
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap();
        let wt = Tensor::randn(0f32, 1.0, (5, 4, 3, 3), &dev).unwrap();
        let want = x.contiguous().unwrap().conv2d(&wt, 1, 1, 1, 1).unwrap();
        // One image per chunk: three matrix products, concatenated.
        let got = conv2d_chunked(&x, &wt, None, 1, 1, 1).unwrap();
        let err = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn a_kernel_larger_than_the_input_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &dev).unwrap();
        let wt = Tensor::zeros((1, 1, 5, 5), DType::F32, &dev).unwrap();
        assert!(conv2d(&x, &wt, None, 1, 0).is_err());
    }

    #[test]
    fn trainable_convolution_has_the_same_values_and_gradients_as_the_composed_one() {
        use candle_core::Var;
        let dev = Device::Cpu;
        for (k, s, p) in [(3, 1, 1), (3, 2, 1), (1, 1, 0), (3, 1, 0)] {
            let x =
                Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 9, 7), &dev).unwrap()).unwrap();
            let w =
                Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 3, k, k), &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, 4, &dev).unwrap()).unwrap();
            let y_ref =
                crate::model::unet::conv2d_unfold(x.as_tensor(), &w, Some(&b), s, p).unwrap();
            let r = Tensor::randn(0f32, 1.0, y_ref.shape(), &dev).unwrap();
            let y = conv2d_trainable(x.as_tensor(), &w, Some(&b), s, p).unwrap();
            let max = |t: Tensor| -> f32 {
                t.abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            assert!(max((&y - &y_ref).unwrap()) < 1e-4, "values k{k} s{s} p{p}");
            let g_ref = (y_ref * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in [("x", x.as_tensor()), ("w", &w), ("b", &b)] {
                let a = g.get(v).unwrap();
                let e = g_ref.get(v).unwrap();
                let err = max((a - e).unwrap());
                let scale = max(e.clone()).max(1.0);
                assert!(
                    err <= 1e-4 * scale,
                    "gradient of {name}, k{k} s{s} p{p}: {err} (scale {scale})"
                );
            }
        }
    }
}
