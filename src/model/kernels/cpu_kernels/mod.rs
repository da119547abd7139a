//! Fused f32 kernels for inference on the CPU: attention, GroupNorm (+SiLU), GEGLU and
//! linear layers, written on the `gemm` crate (the matrix kernels candle itself uses) and
//! on element loops compiled for AVX-512 / AVX2 at run time.
//!
//! Why (measured with `adiff unet-call --profile`, SD 1.5 UNet CFG call at 512×512, 2-core
//! Xeon, 2026-12-02): candle's attention materialises each score matrix, scales it in a
//! separate pass, runs a scalar `expf` per score and normalises in another pass — 39 % of
//! the call; GEGLU's exact GELU ran a scalar `erff` per value with three temporaries (6 %);
//! every matrix product zero-filled its output and added the bias in a second pass. Here:
//!
//! * [`attention`] works on the projections' own `(batch, tokens, heads·dim)` layout (no
//!   head split or merge copies), in blocks of query rows per (batch, head) spread over the
//!   threads: `S = scale·Q Kᵀ` into a small reused block, `exp(S − max)` in place with its
//!   row sums, `O = P V` written straight into the output, then each output row divided by
//!   its sum. Peak extra memory: one block per thread.
//! * [`linear`] starts the product's output from the bias (one pass, no zero fill).
//! * [`group_norm`] computes each group's statistics and writes the normalised, affine,
//!   optionally SiLU-activated values in one more pass.
//! * [`geglu`] computes `value · gelu(gate)` in one pass with a vectorised exact-erf GELU.
//!
//! Everything is checked against candle's composed ops in [`tests`](self::tests) (a
//! sibling file).

use candle_core::{DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Whether the fused kernels handle these tensors (CPU, f32).
pub fn applies(xs: &[&Tensor]) -> bool {
    xs.iter()
        .all(|x| matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32)
}

/// Run `f` on the contiguous f32 data of `x` (made contiguous first if needed).
pub(crate) fn with_slice<T>(x: &Tensor, f: impl FnOnce(&[f32]) -> Result<T>) -> Result<T> {
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let data = match &*storage {
        Storage::Cpu(s) => s.as_slice::<f32>()?,
        _ => candle_core::bail!("cpu_kernels: expected a CPU tensor"),
    };
    let n = x.elem_count();
    let start = layout.start_offset();
    f(&data[start..start + n])
}

/// A `Vec<f32>` of `n` values every one of which the caller writes before reading.
pub(crate) fn uninit_vec(n: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: MaybeUninit needs no initialisation.
    unsafe { v.set_len(n) };
    v
}

/// # Safety
/// Every element of `v` must have been written.
pub(crate) unsafe fn assume_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, layout and length; all elements initialised (caller).
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

/// A raw output pointer shared by tasks that write disjoint regions.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (each use documents why).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Declare `pub fn NAME(args) -> ret { body }` compiled three times (AVX-512, AVX2+FMA,
/// baseline) and dispatched on the CPU's features at run time, so the element loops in
/// `body` are vectorised at the widest width the CPU has.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the CPU has the features v4 was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { v3($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// `exp(x)` for `x` in [−87, 88] (clamped), relative error < 3e-7: Cody–Waite range
/// reduction to `r` in [−ln2/2, ln2/2] and Cephes' degree-6 polynomial. Branch-free so that
/// loops over it vectorise; `mul_add` is one instruction in the AVX2 / AVX-512 builds of
/// [`simd_fn!`] (and on AArch64).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2) with the 1.5·2^23 trick (round to nearest even).
    const SHIFT: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 0.166_666_65);
    p = p.mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    y * pow2(n)
}

/// `2^n` for an integer-valued `n` in [−126, 127], from the exponent bits: `n + 127 +
/// 1.5·2^23` holds `n + 127` in its low mantissa bits, which the shift moves into the
/// exponent. Pure bit arithmetic (no float → int conversion, which is undefined for NaN):
/// a NaN `n` gives some value, and the NaN in the caller's other factor carries on.
#[inline(always)]
fn pow2(n: f32) -> f32 {
    const SHIFT_BIAS: f32 = 12_582_912.0 + 127.0;
    f32::from_bits((n + SHIFT_BIAS).to_bits() << 23)
}

/// `erf(x)`: Abramowitz & Stegun 7.1.26 (error 1.5e-7 in exact arithmetic; < 1e-6 with f32
/// rounding, tested), branch-free.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_f32(-a * a);
    y.copysign(x)
}

/// `2^t` for `t` ≤ 0 (clamped at −126), relative error < 3e-7: `t = n + f` with `f` in
/// [−½, ½] and the degree-6 Taylor polynomial of `2^f`.
#[inline(always)]
fn exp2_nonpositive(t: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    // Not `t.max(-126.0)`, which would turn a NaN into 2^−126 and hide it.
    let t = if t < -126.0 { -126.0 } else { t };
    let n = (t + SHIFT) - SHIFT;
    let f = t - n;
    let mut p = 1.540_353e-4f32;
    p = p.mul_add(f, 1.333_355_8e-3);
    p = p.mul_add(f, 9.618_129e-3);
    p = p.mul_add(f, 5.550_411e-2);
    p = p.mul_add(f, 0.240_226_5);
    p = p.mul_add(f, std::f32::consts::LN_2);
    p = p.mul_add(f, 1.0);
    // n is integer-valued in [−126, 0] (or NaN, which `p` carries).
    p * pow2(n)
}

/// The degree-4 Taylor polynomial of `2^f` on [−½, ½], highest power first (relative error
/// < 4e-5, a hundredth of bf16's rounding): the exponentials whose results are rounded to
/// bf16 (here and in the AVX-512 kernel of `bf16::attention`).
pub(crate) const EXP2_BF16_POLY: [f32; 5] = [
    9.618_129e-3,
    5.550_411e-2,
    0.240_226_5,
    std::f32::consts::LN_2,
    1.0,
];

/// [`exp2_nonpositive`] to the precision a bf16 result needs ([`EXP2_BF16_POLY`]).
#[inline(always)]
fn exp2_nonpositive_bf16(t: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    let t = if t < -126.0 { -126.0 } else { t };
    let n = (t + SHIFT) - SHIFT;
    let f = t - n;
    let [c4, c3, c2, c1, c0] = EXP2_BF16_POLY;
    let p = c4
        .mul_add(f, c3)
        .mul_add(f, c2)
        .mul_add(f, c1)
        .mul_add(f, c0);
    p * pow2(n)
}

simd_fn! {
    /// `x ← exp(scale·(x − max))` over a row (`scale` > 0, `max` the row's largest value);
    /// returns the sum of the results.
    pub(crate) fn exp_scaled_in_place(row: &mut [f32], max: f32, scale: f32) -> f32 {
        // exp(s·(x − max)) = 2^(x·s·log2 e − max·s·log2 e): one multiply-add per value.
        let s2 = scale * std::f32::consts::LOG2_E;
        let m2 = -max * s2;
        let mut sum = 0f32;
        // 16 partial sums so that the sum vectorises (float addition does not reassociate).
        let mut acc = [0f32; 16];
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            for (v, a) in c.iter_mut().zip(acc.iter_mut()) {
                *v = exp2_nonpositive(v.mul_add(s2, m2));
                *a += *v;
            }
        }
        for v in chunks.into_remainder() {
            *v = exp2_nonpositive(v.mul_add(s2, m2));
            sum += *v;
        }
        sum + acc.iter().sum::<f32>()
    }
}

simd_fn! {
    /// `out ← bf16(exp(x − max))` over a row (`max` the row's largest value); returns the
    /// sum of the unrounded exponentials (a softmax whose probabilities feed bf16 products).
    pub(crate) fn exp_to_bf16(row: &[f32], max: f32, out: &mut [u16]) -> f32 {
        let s2 = std::f32::consts::LOG2_E;
        let m2 = -max * s2;
        let mut sum = 0f32;
        let mut acc = [0f32; 16];
        let mut chunks = row.chunks_exact(16);
        let mut outs = out.chunks_exact_mut(16);
        for (c, o) in (&mut chunks).zip(&mut outs) {
            for ((v, a), o) in c.iter().zip(acc.iter_mut()).zip(o.iter_mut()) {
                let e = exp2_nonpositive_bf16(v.mul_add(s2, m2));
                *o = crate::model::kernels::bf16::f32_to_bf16(e);
                *a += e;
            }
        }
        for (v, o) in chunks.remainder().iter().zip(outs.into_remainder()) {
            let e = exp2_nonpositive_bf16(v.mul_add(s2, m2));
            *o = crate::model::kernels::bf16::f32_to_bf16(e);
            sum += e;
        }
        sum + acc.iter().sum::<f32>()
    }
}

simd_fn! {
    /// The largest value of a non-empty row, NaN when the row holds one (`f32::max` would
    /// skip it, and the softmax would then hide a poisoned score).
    pub(crate) fn row_max(row: &[f32]) -> f32 {
        #[inline(always)]
        fn max_nan(a: f32, v: f32) -> f32 {
            if v > a || v.is_nan() { v } else { a }
        }
        // NaN stays: once an accumulator is NaN no comparison with it holds.
        let mut acc = [f32::NEG_INFINITY; 16];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for (v, a) in c.iter().zip(acc.iter_mut()) {
                *a = max_nan(*a, *v);
            }
        }
        let mut m = acc.iter().fold(f32::NEG_INFINITY, |m, v| max_nan(m, *v));
        for v in chunks.remainder() {
            m = max_nan(m, *v);
        }
        m
    }
}

/// The sizes of an attention: `q` `(b, n, dim)`, `k` and `v` `(b, m, dim)`, heads of `hd`.
pub(crate) struct AttentionDims {
    pub(crate) b: usize,
    pub(crate) n: usize,
    pub(crate) m: usize,
    pub(crate) dim: usize,
    pub(crate) hd: usize,
}

impl AttentionDims {
    /// The sizes, or an error when the shapes and the head count do not fit together.
    pub(crate) fn check(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Self> {
        let (b, n, dim) = q.dims3()?;
        let (bk, m, dk) = k.dims3()?;
        if bk != b
            || dk != dim
            || v.dims3()? != (b, m, dim)
            || heads == 0
            || !dim.is_multiple_of(heads)
        {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?} with {heads} heads do not fit",
                q.dims(),
                k.dims(),
                v.dims()
            );
        }
        Ok(Self {
            b,
            n,
            m,
            dim,
            hd: dim / heads,
        })
    }
}

/// Query rows per attention block: the block of scores (rows × keys) stays a few MB
/// (64 rows: SD 1.5's self-attention at 512×512 1.59 s per call, 128: 1.37 s, 192: 1.27 s,
/// 256: 1.31 s, within this machine's noise of 192).
const ATTENTION_BLOCK_ROWS: usize = 256;

/// Multi-head scaled dot-product attention without masking.
///
/// `q` `(b, n, heads·d)`, `k` and `v` `(b, m, heads·d)`, all CPU f32; returns
/// `softmax(scale·Q Kᵀ) V` per head in `(b, n, heads·d)` (heads side by side, as diffusers'
/// `to_out` expects).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    let AttentionDims { b, n, m, dim, hd } = AttentionDims::check(q, k, v, heads)?;
    let block_rows = ATTENTION_BLOCK_ROWS;
    let blocks = n.div_ceil(block_rows);
    let mut out = uninit_vec(b * n * dim);
    let out_ptr = OutPtr(out.as_mut_ptr().cast::<f32>());
    with_slice(q, |q| {
        with_slice(k, |k| {
            with_slice(v, |v| {
                (0..b * heads * blocks).into_par_iter().for_each_init(
                    || (Vec::<f32>::new(), Vec::<f32>::new()),
                    |(scores, sums), task| {
                        let block = task % blocks;
                        let h = (task / blocks) % heads;
                        let bi = task / (blocks * heads);
                        let start = block * block_rows;
                        let rows = block_rows.min(n - start);
                        scores.resize(rows * m, 0.0);
                        sums.resize(rows, 0.0);
                        let q0 = (bi * n + start) * dim + h * hd;
                        let kv0 = bi * m * dim + h * hd;
                        // SAFETY: every pointer/stride pair addresses elements inside its
                        // slice (rows ≤ n − start, columns within the head's hd columns);
                        // the output block (rows × hd at row stride dim) of this task is
                        // written by no other task.
                        unsafe {
                            // S = scale · Q Kᵀ (rows × m)
                            gemm::gemm(
                                rows,
                                m,
                                hd,
                                scores.as_mut_ptr(),
                                1,
                                m as isize,
                                false,
                                q.as_ptr().add(q0),
                                1,
                                dim as isize,
                                k.as_ptr().add(kv0),
                                dim as isize,
                                1,
                                0.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            );
                        }
                        for (row, sum) in scores.chunks_exact_mut(m).zip(sums.iter_mut()) {
                            let max = row_max(row);
                            *sum = exp_scaled_in_place(row, max, scale);
                        }
                        let o = out_ptr;
                        // SAFETY: as above.
                        unsafe {
                            let dst = o.0.add(q0);
                            // O = P V (rows × hd), straight into the output.
                            gemm::gemm(
                                rows,
                                hd,
                                m,
                                dst,
                                1,
                                dim as isize,
                                false,
                                scores.as_ptr(),
                                1,
                                m as isize,
                                v.as_ptr().add(kv0),
                                1,
                                dim as isize,
                                0.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            );
                            for (r, sum) in sums.iter().enumerate() {
                                let inv = 1.0 / sum;
                                let row = std::slice::from_raw_parts_mut(dst.add(r * dim), hd);
                                for x in row {
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
    // SAFETY: the tasks cover every (batch, row, head) block, so every element was written.
    let out = unsafe { assume_init(out) };
    Tensor::from_vec(out, (b, n, dim), q.device())
}

/// What a product's output starts from before `lhs · rhs` is added: a residual of the
/// output's shape and/or a bias per output column (`per_col`) or per output row.
pub(crate) struct Start<'a> {
    pub(crate) residual: Option<&'a [f32]>,
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) per_col: bool,
}

impl Start<'_> {
    /// Write the start into `out` (`rows × cols` at row stride `rs`; a residual has the
    /// same layout); false when there is none (the product then overwrites `out` without
    /// reading it).
    fn write(&self, out: &mut [MaybeUninit<f32>], rows: usize, cols: usize, rs: usize) -> bool {
        debug_assert!(rows == 0 || out.len() >= (rows - 1) * rs + cols);
        if self.residual.is_none() && self.bias.is_none() {
            return false;
        }
        for i in 0..rows {
            let row = &mut out[i * rs..i * rs + cols];
            let res_row = self.residual.map(|r| &r[i * rs..i * rs + cols]);
            match (res_row, self.bias) {
                (Some(res), None) => {
                    for (o, r) in row.iter_mut().zip(res) {
                        o.write(*r);
                    }
                }
                (res, Some(bias)) => {
                    for (j, o) in row.iter_mut().enumerate() {
                        let b = if self.per_col { bias[j] } else { bias[i] };
                        o.write(res.map_or(b, |r| r[j] + b));
                    }
                }
                (None, None) => unreachable!("returned above"),
            }
        }
        true
    }
}

/// A matrix read through strides: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    pub(crate) ptr: *const f32,
    pub(crate) rs: isize,
    pub(crate) cs: isize,
}

/// `out (m × n at row stride out_rs) = start + lhs (m × k) · rhs (k × n)`.
///
/// # Safety
/// `lhs` and `rhs` must address valid elements for every (i, j) of their shapes, and
/// `out` must hold `(m − 1)·out_rs + n` values.
pub(crate) unsafe fn product(
    out: &mut [MaybeUninit<f32>],
    out_rs: usize,
    start: &Start<'_>,
    (m, n, k): (usize, usize, usize),
    lhs: Strided,
    rhs: Strided,
    par: gemm::Parallelism,
) {
    assert!(
        m == 0 || out.len() >= (m - 1) * out_rs + n,
        "product: output too small"
    );
    let read_dst = start.write(out, m, n, out_rs);
    // SAFETY: out covers m rows of n values at stride out_rs (written above when read);
    // operands per the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr().cast::<f32>(),
            1,
            out_rs as isize,
            read_dst,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            if read_dst { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Check an optional tensor's shape and run `f` on its data (or on `None`).
pub(crate) fn with_optional<T>(
    t: Option<&Tensor>,
    dims: &[usize],
    what: &str,
    f: impl FnOnce(Option<&[f32]>) -> Result<T>,
) -> Result<T> {
    match t {
        None => f(None),
        Some(t) => {
            if t.dims() != dims {
                candle_core::bail!("{what} has shape {:?}, expected {dims:?}", t.dims());
            }
            with_slice(t, |d| f(Some(d)))
        }
    }
}

/// `x Wᵀ + bias (+ residual)` for `x` `(…, in)`, `weight` `(out, in)`, CPU f32; the
/// residual has the output's shape.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    let dims = x.dims();
    if dims.last() != Some(&in_dim) {
        candle_core::bail!("linear: input {:?} for a {out_dim}×{in_dim} weight", dims);
    }
    let rows = x.elem_count() / in_dim;
    let mut shape = dims.to_vec();
    *shape.last_mut().expect("rank ≥ 1") = out_dim;
    let mut out = uninit_vec(rows * out_dim);
    with_optional(bias, &[out_dim], "linear bias", |bias| {
        with_optional(residual, &shape, "linear residual", |residual| {
            with_slice(x, |xs| {
                with_slice(weight, |w| {
                    let start = Start {
                        residual,
                        bias,
                        per_col: true,
                    };
                    // SAFETY: x is rows × in_dim row-major; Wᵀ (in_dim × out_dim) is read
                    // through W's own strides.
                    unsafe {
                        product(
                            &mut out,
                            out_dim,
                            &start,
                            (rows, out_dim, in_dim),
                            Strided {
                                ptr: xs.as_ptr(),
                                rs: in_dim as isize,
                                cs: 1,
                            },
                            Strided {
                                ptr: w.as_ptr(),
                                rs: 1,
                                cs: in_dim as isize,
                            },
                            parallelism(),
                        )
                    };
                    Ok(())
                })
            })
        })
    })?;
    // SAFETY: the product wrote every element.
    let out = unsafe { assume_init(out) };
    Tensor::from_vec(out, shape, x.device())
}

/// A 1×1 convolution from an image `(b, c, h, w)` straight to tokens `(b, h·w, o)`
/// (`weight` `(o, c, 1, 1)`): the convolution and the `(b, c, h, w) → (b, h·w, c)`
/// permutation in one product, as diffusers' `proj_in` followed by the permute.
pub fn pointwise_to_tokens(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, ci, kh, kw) = weight.dims4()?;
    if ci != c || kh != 1 || kw != 1 {
        candle_core::bail!(
            "pointwise_to_tokens: weight {:?} for input {:?}",
            weight.dims(),
            x.dims()
        );
    }
    let hw = h * w;
    let mut out = uninit_vec(b * hw * o);
    with_optional(bias, &[o], "conv bias", |bias| {
        with_slice(x, |xs| {
            with_slice(weight, |wd| {
                for (i, dst) in out.chunks_exact_mut(hw * o).enumerate() {
                    let img = &xs[i * c * hw..(i + 1) * c * hw];
                    let start = Start {
                        residual: None,
                        bias,
                        per_col: true,
                    };
                    // SAFETY: lhs = imgᵀ (hw × c) through img's strides; rhs = Wᵀ (c × o).
                    unsafe {
                        product(
                            dst,
                            o,
                            &start,
                            (hw, o, c),
                            Strided {
                                ptr: img.as_ptr(),
                                rs: 1,
                                cs: hw as isize,
                            },
                            Strided {
                                ptr: wd.as_ptr(),
                                rs: 1,
                                cs: c as isize,
                            },
                            parallelism(),
                        )
                    };
                }
                Ok(())
            })
        })
    })?;
    // SAFETY: every image's block was written.
    let out = unsafe { assume_init(out) };
    Tensor::from_vec(out, (b, hw, o), x.device())
}

/// The inverse layout change: tokens `(b, h·w, c)` through a 1×1 convolution `(o, c, 1, 1)`
/// to an image `(b, o, h, w)`, plus `residual` `(b, o, h, w)` if given.
pub fn tokens_to_pointwise(
    t: &Tensor,
    (h, w): (usize, usize),
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, hw, c) = t.dims3()?;
    let (o, ci, kh, kw) = weight.dims4()?;
    if ci != c || kh != 1 || kw != 1 || hw != h * w {
        candle_core::bail!(
            "tokens_to_pointwise: weight {:?} for tokens {:?}",
            weight.dims(),
            t.dims()
        );
    }
    let mut out = uninit_vec(b * o * hw);
    with_optional(bias, &[o], "conv bias", |bias| {
        with_optional(residual, &[b, o, h, w], "conv residual", |residual| {
            with_slice(t, |ts| {
                with_slice(weight, |wd| {
                    for (i, dst) in out.chunks_exact_mut(o * hw).enumerate() {
                        let tok = &ts[i * hw * c..(i + 1) * hw * c];
                        let start = Start {
                            residual: residual.map(|r| &r[i * o * hw..(i + 1) * o * hw]),
                            bias,
                            per_col: false,
                        };
                        // SAFETY: lhs = W (o × c); rhs = tokᵀ (c × hw) through tok's strides.
                        unsafe {
                            product(
                                dst,
                                hw,
                                &start,
                                (o, hw, c),
                                Strided {
                                    ptr: wd.as_ptr(),
                                    rs: c as isize,
                                    cs: 1,
                                },
                                Strided {
                                    ptr: tok.as_ptr(),
                                    rs: 1,
                                    cs: c as isize,
                                },
                                parallelism(),
                            )
                        };
                    }
                    Ok(())
                })
            })
        })
    })?;
    // SAFETY: every image's block was written.
    let out = unsafe { assume_init(out) };
    Tensor::from_vec(out, (b, o, h, w), t.device())
}

/// The threads candle's own matrix products use.
pub(crate) fn parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

simd_fn! {
    /// The sum, with f64 partial sums per 16 lanes.
    fn sum_f64(xs: &[f32]) -> f64 {
        let mut acc = [0f64; 16];
        let mut chunks = xs.chunks_exact(16);
        for c in &mut chunks {
            for (v, a) in c.iter().zip(acc.iter_mut()) {
                *a += *v as f64;
            }
        }
        chunks.remainder().iter().map(|v| *v as f64).sum::<f64>() + acc.iter().sum::<f64>()
    }
}

simd_fn! {
    /// The sum of squared deviations from `mean`, with f64 partial sums.
    fn sq_dev_f64(xs: &[f32], mean: f32) -> f64 {
        let mut acc = [0f64; 16];
        let mut chunks = xs.chunks_exact(16);
        for c in &mut chunks {
            for (v, a) in c.iter().zip(acc.iter_mut()) {
                let d = (*v - mean) as f64;
                *a += d * d;
            }
        }
        chunks
            .remainder()
            .iter()
            .map(|v| ((*v - mean) as f64).powi(2))
            .sum::<f64>()
            + acc.iter().sum::<f64>()
    }
}

simd_fn! {
    /// `out = a·x + c`, then SiLU when `silu`.
    fn affine(xs: &[f32], out: &mut [std::mem::MaybeUninit<f32>], a: f32, c: f32, silu: bool) {
        if silu {
            for (x, o) in xs.iter().zip(out.iter_mut()) {
                let y = a * *x + c;
                o.write(y / (1.0 + exp_f32(-y)));
            }
        } else {
            for (x, o) in xs.iter().zip(out.iter_mut()) {
                o.write(a * *x + c);
            }
        }
    }
}

/// GroupNorm over `x` `(b, c, …)` with `groups` groups, per-channel `weight` and `bias`,
/// followed by SiLU when `silu` (CPU f32). Statistics in f64, as exact as candle's.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if dims.len() < 2 || groups == 0 || !dims[1].is_multiple_of(groups) {
        candle_core::bail!("group_norm: {groups} groups for a tensor of shape {dims:?}");
    }
    let (b, c) = (dims[0], dims[1]);
    let spatial: usize = dims[2..].iter().product();
    let cg = c / groups;
    let group_len = cg * spatial;
    let mut out = uninit_vec(x.elem_count());
    with_slice(x, |xs| {
        with_slice(weight, |w| {
            with_slice(bias, |bb| {
                if w.len() != c || bb.len() != c {
                    candle_core::bail!("group_norm: weight/bias do not have {c} channels");
                }
                out.par_chunks_mut(group_len)
                    .zip(xs.par_chunks(group_len))
                    .enumerate()
                    .for_each(|(i, (o, xg))| {
                        let g = i % groups;
                        let mean = sum_f64(xg) / group_len as f64;
                        let var = sq_dev_f64(xg, mean as f32) / group_len as f64;
                        let rstd = 1.0 / (var + eps).sqrt();
                        for ch in 0..cg {
                            let cc = g * cg + ch;
                            let a = (w[cc] as f64 * rstd) as f32;
                            let shift = (bb[cc] as f64 - mean * rstd * w[cc] as f64) as f32;
                            let r = ch * spatial..(ch + 1) * spatial;
                            affine(&xg[r.clone()], &mut o[r], a, shift, silu);
                        }
                    });
                Ok(())
            })
        })
    })?;
    debug_assert_eq!(out.len(), b * c * spatial);
    // SAFETY: every group's every channel was written.
    let out = unsafe { assume_init(out) };
    Tensor::from_vec(out, dims, x.device())
}

simd_fn! {
    /// [`geglu`] of rows of `2 · half` values (`value`, then `gate`) into rows of `half`.
    pub(crate) fn geglu_rows(h: &[f32], out: &mut [std::mem::MaybeUninit<f32>], half: usize) {
        for (hr, or) in h.chunks_exact(2 * half).zip(out.chunks_exact_mut(half)) {
            let (value, gate) = hr.split_at(half);
            for ((v, g), o) in value.iter().zip(gate).zip(or.iter_mut()) {
                let gelu = 0.5 * *g * (1.0 + erf_f32(*g * std::f32::consts::FRAC_1_SQRT_2));
                o.write(*v * gelu);
            }
        }
    }
}

/// GEGLU: `h` `(…, 2·half)` → `value · gelu_erf(gate)` `(…, half)` where `value` is the
/// first half of the last dimension and `gate` the second (CPU f32).
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    let dims = h.dims().to_vec();
    let last = *dims.last().unwrap_or(&0);
    if last == 0 || !last.is_multiple_of(2) {
        candle_core::bail!("geglu: last dimension {last} is not even");
    }
    let half = last / 2;
    let rows = h.elem_count() / last;
    let mut out = uninit_vec(rows * half);
    // Blocks of rows per task.
    let per_task = (4096 / half).max(1);
    with_slice(h, |hs| {
        out.par_chunks_mut(per_task * half)
            .zip(hs.par_chunks(per_task * last))
            .for_each(|(o, hh)| geglu_rows(hh, o, half));
        Ok(())
    })?;
    // SAFETY: every row was written.
    let out = unsafe { assume_init(out) };
    let mut shape = dims;
    *shape.last_mut().expect("rank ≥ 1") = half;
    Tensor::from_vec(out, shape, h.device())
}

#[cfg(test)]
mod tests;
