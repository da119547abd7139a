//! A faster 2-D convolution for inference on the CPU in f32.
//!
//! candle 0.11's CPU `conv2d` spends most of its time outside the matrix product for the
//! small images of the built-in model (a 3×3 convolution of a 2×16×32×32 tensor takes
//! ≈ 1.4 ms, its matrix product ≈ 0.2 ms). Here the patches are gathered with row copies
//! (`im2col`, rows spread over the threads) and multiplied with the weights by `gemm`
//! straight into the output, one image at a time, starting from the bias. Results equal
//! candle's up to float rounding (tested below).
//!
//! For training, [`conv2d_trainable`] does the same through a custom op with a backward
//! pass (the adjoint `col2im`), so gradients flow through one gather and one matrix product
//! instead of nine strided copies.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::model::cpu_kernels::{
    Start, Strided, assume_init, parallelism, product, uninit_vec, with_optional, with_slice,
};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

static DISABLED: AtomicBool = AtomicBool::new(false);

/// Switch this path off (`false`) to time candle's own convolution against it.
pub fn set_enabled(on: bool) {
    DISABLED.store(!on, Ordering::Relaxed);
}

/// Whether this path is on (see [`set_enabled`]).
pub fn enabled() -> bool {
    !DISABLED.load(Ordering::Relaxed)
}

/// Whether [`conv2d`] handles `x` (a CPU f32 tensor).
pub fn applies(x: &Tensor) -> bool {
    enabled() && matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && x.rank() == 4
}

/// Images of at least this many pixels use [`shifted_3x3`] for 3×3 convolutions.
const SHIFTED_MIN_PIXELS: usize = 64 * 64;

/// The most values of [`shifted_3x3`]'s padded band and of its output grid (32 MB of f32).
const SHIFTED_BAND_VALUES: usize = 8 << 20;

/// The most patch values gathered at once (64 MB of f32).
const MAX_COLUMN_VALUES: usize = 16 << 20;

/// `x (b, c, h, w)` ⊛ `weight (o, c, kh, kw)` + `bias (o)`, groups 1, dilation 1.
///
/// Per image: the patches are gathered (`im2col`, rows spread over the threads; a 1×1
/// stride-1 convolution uses the image itself) and multiplied with the weights by `gemm`
/// straight into the output, which starts from the bias (no zero fill, no second pass).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_add(x, weight, bias, stride, padding, None)
}

/// [`conv2d`] plus `residual` (of the output's shape): the product starts from it.
pub fn conv2d_add(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, o, geometry) = Geometry::of(x, weight, stride, padding)?;
    let Geometry {
        c,
        h,
        w,
        kh,
        kw,
        ho,
        wo,
        ..
    } = geometry;
    let plane = ho * wo;
    let bias = match bias {
        Some(bias) => Some(bias.to_dtype(DType::F32)?.contiguous()?.to_vec1::<f32>()?),
        None => None,
    };
    if bias.as_ref().is_some_and(|bb| bb.len() != o) {
        candle_core::bail!("conv: the bias does not have {o} values");
    }
    let mut out = uninit_vec(b * o * plane);
    with_slice(x, |data| {
        with_slice(weight, |wdata| {
            with_optional(residual, &[b, o, ho, wo], "conv residual", |residual| {
                // Large images: nine shifted products beat gathering patches (SD 1.5 at
                // 512×512, 64×64 latents: 320→320 channels 65 → 56 ms, 960→320 190 →
                // 162 ms); at 32×32 and below one product over the patches is faster
                // (2026-12-02, 2-core Xeon).
                if kh == 3 && kw == 3 && stride == 1 && padding == 1 && h * w >= SHIFTED_MIN_PIXELS
                {
                    let dims = (b, c, h, w, o);
                    let bias = bias.as_deref();
                    shifted_3x3(
                        data,
                        wdata,
                        bias,
                        residual,
                        dims,
                        &mut out,
                        SHIFTED_BAND_VALUES,
                    );
                } else {
                    let bias = bias.as_deref();
                    patches(data, wdata, bias, residual, &geometry, (b, o), &mut out);
                }
                Ok(())
            })
        })
    })?;
    // SAFETY: both paths write every output value.
    let out = unsafe { assume_init(out) };
    Tensor::from_vec(out, (b, o, ho, wo), x.device())
}

/// The convolution as gathered patches × weights, per image, in bands of output rows whose
/// patches fit [`MAX_COLUMN_VALUES`] (whole images mostly; a 3×3 convolution over 256
/// channels at 512×512 would otherwise gather 2.4 GB). A 1×1 stride-1 convolution uses
/// the image itself.
fn patches(
    data: &[f32],
    wdata: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    geometry: &Geometry,
    (b, o): (usize, usize),
    out: &mut [MaybeUninit<f32>],
) {
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
    } = geometry;
    let (k, plane) = (c * kh * kw, ho * wo);
    let direct = kh == 1 && kw == 1 && stride == 1 && padding == 0;
    let band = if direct {
        ho
    } else {
        (MAX_COLUMN_VALUES / (k * wo).max(1)).clamp(1, ho)
    };
    let mut cols: Vec<f32> = Vec::with_capacity(if direct { 0 } else { k * band * wo });
    for i in 0..b {
        let img = &data[i * c * h * w..(i + 1) * c * h * w];
        for oy0 in (0..ho).step_by(band) {
            let oy1 = (oy0 + band).min(ho);
            let n = (oy1 - oy0) * wo;
            let rhs = if direct {
                img
            } else {
                cols.clear();
                cols.spare_capacity_mut()[..k * n]
                    .par_chunks_mut(n)
                    .enumerate()
                    .for_each(|(row, dst)| geometry.im2col_row(img, row, oy0..oy1, dst));
                // SAFETY: im2col_row wrote every value of every row.
                unsafe { cols.set_len(k * n) };
                &cols[..]
            };
            let at = i * o * plane + oy0 * wo;
            let start = Start {
                residual: residual.map(|r| &r[at..(i + 1) * o * plane]),
                bias,
                per_col: false,
            };
            // SAFETY: the output block is o rows of n values at stride plane from `at`
            // (inside image i); lhs (o × k) and rhs (k × n) are row-major slices of exactly
            // those sizes.
            unsafe {
                product(
                    &mut out[at..(i + 1) * o * plane],
                    plane,
                    &start,
                    (o, n, k),
                    Strided {
                        ptr: wdata.as_ptr(),
                        rs: k as isize,
                        cs: 1,
                    },
                    Strided {
                        ptr: rhs.as_ptr(),
                        rs: n as isize,
                        cs: 1,
                    },
                    parallelism(),
                );
            }
        }
    }
}

/// A 3×3, stride-1, padding-1 convolution as nine matrix products over shifted views of
/// the zero-padded image, with no patch matrix. In bands of output rows `y0..y1`: the
/// padded rows `y0..y1+2` of every channel are copied into `xp` (`c × (band+2)·(w+2)`);
/// read as `(c, (band+2)(w+2))`, the view starting at `ky·(w+2) + kx` holds, for every
/// output pixel `(y, x)` of a `band × (w+2)` grid, exactly the input pixel that kernel tap
/// `(ky, kx)` multiplies. The nine products accumulate into that grid (`o × band·(w+2)`),
/// whose two extra columns per row are dropped when it is copied out with the bias and
/// residual. Bands keep both buffers under `band_values` ([`SHIFTED_BAND_VALUES`]).
fn shifted_3x3(
    data: &[f32],
    wdata: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    (b, c, h, w, o): (usize, usize, usize, usize, usize),
    out: &mut [MaybeUninit<f32>],
    band_values: usize,
) {
    let wp = w + 2;
    let band = (band_values / (c.max(o) * wp)).clamp(1, h);
    let bp = (band + 2) * wp;
    // Two extra zeros: the last tap's view of the last channel reads one past its rows.
    let mut xp = vec![0f32; c * bp + 2];
    let mut grid: Vec<f32> = Vec::with_capacity(o * band * wp);
    let plane = h * w;
    for i in 0..b {
        let img = &data[i * c * plane..(i + 1) * c * plane];
        let out_img = &mut out[i * o * plane..(i + 1) * o * plane];
        let res_img = residual.map(|r| &r[i * o * plane..(i + 1) * o * plane]);
        for y0 in (0..h).step_by(band) {
            let y1 = (y0 + band).min(h);
            let rows = y1 - y0;
            let n = rows * wp;
            // Padded rows y0..y1+2 = input rows y0−1..y1+1 (zeros outside the image).
            xp[..c * bp]
                .par_chunks_mut(bp)
                .zip(img.par_chunks(plane))
                .for_each(|(dst, src)| {
                    for r in 0..rows + 2 {
                        let row = &mut dst[r * wp..(r + 1) * wp];
                        match (y0 + r).checked_sub(1).filter(|&iy| iy < h) {
                            Some(iy) => {
                                row[0] = 0.0;
                                row[wp - 1] = 0.0;
                                row[1..=w].copy_from_slice(&src[iy * w..(iy + 1) * w]);
                            }
                            None => row.fill(0.0),
                        }
                    }
                });
            grid.clear();
            let g = grid.spare_capacity_mut();
            for tap in 0..9 {
                let (ky, kx) = (tap / 3, tap % 3);
                // SAFETY: lhs W[:, :, ky, kx] (o × c) at strides (9c, 9) inside wdata; rhs
                // the view (c × n) at strides (bp, 1) from ky·wp + kx, whose last element
                // (c−1)·bp + ky·wp + kx + n − 1 ≤ c·bp + 1 < xp.len(); dst o × n, written
                // by the first tap and accumulated by the others.
                unsafe {
                    gemm::gemm(
                        o,
                        n,
                        c,
                        g.as_mut_ptr().cast::<f32>(),
                        1,
                        n as isize,
                        tap > 0,
                        wdata.as_ptr().add(tap),
                        9,
                        (9 * c) as isize,
                        xp.as_ptr().add(ky * wp + kx),
                        1,
                        bp as isize,
                        if tap > 0 { 1.0 } else { 0.0 },
                        1.0,
                        false,
                        false,
                        false,
                        parallelism(),
                    );
                }
            }
            // SAFETY: the first tap wrote all o × n values.
            unsafe { grid.set_len(o * n) };
            out_img
                .par_chunks_mut(plane)
                .zip(grid.par_chunks(n))
                .enumerate()
                .for_each(|(oc, (dst, gr))| {
                    let bv = bias.map_or(0.0, |bb| bb[oc]);
                    for r in 0..rows {
                        let y = y0 + r;
                        let src = &gr[r * wp..r * wp + w];
                        let d = &mut dst[y * w..(y + 1) * w];
                        match res_img {
                            Some(res) => {
                                let res = &res[oc * plane + y * w..oc * plane + (y + 1) * w];
                                for ((d, s), q) in d.iter_mut().zip(src).zip(res) {
                                    d.write(s + bv + q);
                                }
                            }
                            None => {
                                for (d, s) in d.iter_mut().zip(src) {
                                    d.write(s + bv);
                                }
                            }
                        }
                    }
                });
        }
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
    let (b, o, geometry) = Geometry::of(x, weight, stride, padding)?;
    let Geometry {
        c, kh, kw, ho, wo, ..
    } = geometry;
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
    /// The geometry of `x (b, c, h, w)` ⊛ `weight (o, c, kh, kw)`, checked; with `b` and `o`.
    fn of(
        x: &Tensor,
        weight: &Tensor,
        stride: usize,
        padding: usize,
    ) -> Result<(usize, usize, Self)> {
        let (b, c, h, w) = x.dims4()?;
        let (o, ci, kh, kw) = weight.dims4()?;
        if ci != c {
            candle_core::bail!("conv: {c} input channels but the kernel takes {ci}");
        }
        if stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
            candle_core::bail!("conv: kernel {kh}×{kw} does not fit a {h}×{w} input");
        }
        let geometry = Geometry {
            c,
            h,
            w,
            kh,
            kw,
            stride,
            padding,
            ho: (h + 2 * padding - kh) / stride + 1,
            wo: (w + 2 * padding - kw) / stride + 1,
        };
        Ok((b, o, geometry))
    }

    /// Gather the patches of one image (`c·h·w` values) into `cols`, laid out
    /// `(c·kh·kw, ho·wo)` with row index `(ci·kh + ky)·kw + kx` (the weights' own order).
    fn im2col(&self, img: &[f32], cols: &mut [f32]) {
        let plane = self.ho * self.wo;
        // SAFETY: an initialised f32 slice viewed as possibly-uninitialised values of the
        // same layout; only written through.
        let cols = unsafe {
            std::slice::from_raw_parts_mut(cols.as_mut_ptr().cast::<MaybeUninit<f32>>(), cols.len())
        };
        for (row, dst) in cols.chunks_exact_mut(plane).enumerate() {
            self.im2col_row(img, row, 0..self.ho, dst);
        }
    }

    /// Row `row = (ci·kh + ky)·kw + kx` of [`Geometry::im2col`] for the output rows `oys`:
    /// every value of `dst` (`oys.len()·wo`) is written, zeros where the patch lies in the
    /// padding.
    fn im2col_row(
        &self,
        img: &[f32],
        row: usize,
        oys: std::ops::Range<usize>,
        dst: &mut [MaybeUninit<f32>],
    ) {
        fn zero(d: &mut [MaybeUninit<f32>]) {
            for v in d {
                v.write(0.0);
            }
        }
        let &Geometry {
            h,
            w,
            kh,
            kw,
            stride,
            padding,
            wo,
            ..
        } = self;
        let (ci, ky, kx) = (row / (kh * kw), (row / kw) % kh, row % kw);
        let src = &img[ci * h * w..(ci + 1) * h * w];
        // Output columns whose input column is inside the image:
        // ix = ox·stride + kx − padding ∈ [0, w).
        let (ox_lo, ox_hi) = self.valid_columns(kx);
        let oy0 = oys.start;
        for oy in oys {
            let drow = &mut dst[(oy - oy0) * wo..(oy - oy0 + 1) * wo];
            let iy = oy * stride + ky;
            if iy < padding || iy - padding >= h || ox_lo >= ox_hi {
                zero(drow);
                continue;
            }
            zero(&mut drow[..ox_lo]);
            zero(&mut drow[ox_hi..]);
            let srow = &src[(iy - padding) * w..(iy - padding + 1) * w];
            let ix0 = ox_lo * stride + kx - padding;
            if stride == 1 {
                let n = ox_hi - ox_lo;
                for (d, v) in drow[ox_lo..ox_hi].iter_mut().zip(&srow[ix0..ix0 + n]) {
                    d.write(*v);
                }
            } else {
                for (j, d) in drow[ox_lo..ox_hi].iter_mut().enumerate() {
                    d.write(srow[ix0 + j * stride]);
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

    #[test]
    fn convolutions_propagate_nan_and_infinity() {
        let count = |t: &Tensor| {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().filter(|v| !v.is_finite()).count()
        };
        let poison = |t: &Tensor, at: usize, v: f32| {
            let mut values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            values[at] = v;
            Tensor::from_vec(values, t.dims(), &Device::Cpu).unwrap()
        };
        // 1×1, a gathered 3×3 (small image), a shifted 3×3 (≥ 64×64) and a strided one.
        for (size, k, stride, pad) in [(6, 1, 1, 0), (6, 3, 1, 1), (64, 3, 1, 1), (8, 3, 2, 1)] {
            let x = Tensor::randn(0f32, 1.0, (1, 3, size, size), &Device::Cpu).unwrap();
            let w = Tensor::randn(0f32, 1.0, (4, 3, k, k), &Device::Cpu).unwrap();
            let b = Tensor::randn(0f32, 1.0, 4, &Device::Cpu).unwrap();
            for bad in [f32::NAN, f32::INFINITY] {
                let at = size * size + size + 1;
                let out = conv2d(&poison(&x, at, bad), &w, Some(&b), stride, pad).unwrap();
                assert!(count(&out) > 0, "input {size} k {k} {bad}");
                let out = conv2d(&x, &poison(&w, 1, bad), Some(&b), stride, pad).unwrap();
                assert!(count(&out) > 0, "weight {size} k {k} {bad}");
                let out = conv2d(&x, &w, Some(&poison(&b, 2, bad)), stride, pad).unwrap();
                assert!(count(&out) > 0, "bias {size} k {k} {bad}");
            }
        }
    }

    /// The largest absolute value of a tensor.
    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

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
        let err = max_abs(&(got - &want).unwrap());
        let scale = max_abs(&want);
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
    fn non_contiguous_input_and_several_images() {
        let dev = Device::Cpu;
        // (b, h, w, c) permuted to (b, c, h, w): not contiguous.
        let x = Tensor::randn(0f32, 1.0, (3, 12, 10, 4), &dev)
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap();
        let wt = Tensor::randn(0f32, 1.0, (5, 4, 3, 3), &dev).unwrap();
        let want = x.contiguous().unwrap().conv2d(&wt, 1, 1, 1, 1).unwrap();
        // Three images: three matrix products into one output.
        let got = conv2d(&x, &wt, None, 1, 1).unwrap();
        let err = max_abs(&(got - want).unwrap());
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn large_images_take_the_shifted_path_and_equal_candles_convolution() {
        // 64×72 ≥ SHIFTED_MIN_PIXELS: nine shifted products; non-square, two images.
        check([2, 5, 7, 64, 72, 3, 1, 1]);
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &dev).unwrap();
        let res = Tensor::randn(0f32, 1.0, (2, 4, 64, 64), &dev).unwrap();
        let want = (x.conv2d(&wt, 1, 1, 1, 1).unwrap() + &res).unwrap();
        let got = conv2d_add(&x, &wt, None, 1, 1, Some(&res)).unwrap();
        let err = max_abs(&(got - want).unwrap());
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn shifted_bands_cover_the_image_exactly() {
        let dev = Device::Cpu;
        let (b, c, h, w, o) = (2, 3, 11, 9, 4);
        let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (o, c, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, o, &dev).unwrap();
        let res = Tensor::randn(0f32, 1.0, (b, o, h, w), &dev).unwrap();
        let want = x
            .conv2d(&wt, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, o, 1, 1)).unwrap())
            .unwrap()
            .add(&res)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Bands of 1, 2, 3 and 4 rows (11 is a multiple of none but 1), and one band.
        for rows in [1, 2, 3, 4, 100] {
            let mut out = Vec::with_capacity(b * o * h * w);
            shifted_3x3(
                &flat(&x),
                &flat(&wt),
                Some(&flat(&bias)),
                Some(&flat(&res)),
                (b, c, h, w, o),
                out.spare_capacity_mut(),
                rows * o * (w + 2),
            );
            // SAFETY: shifted_3x3 writes every value.
            unsafe { out.set_len(b * o * h * w) };
            let err = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-4, "bands of {rows} rows: {err}");
        }
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
                crate::model::layers::conv2d_unfold(x.as_tensor(), &w, Some(&b), s, p).unwrap();
            let r = Tensor::randn(0f32, 1.0, y_ref.shape(), &dev).unwrap();
            let y = conv2d_trainable(x.as_tensor(), &w, Some(&b), s, p).unwrap();
            let max = |t: Tensor| max_abs(&t);
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
