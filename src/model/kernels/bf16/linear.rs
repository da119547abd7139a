//! Linear layers with bf16 weights on the CPU, on [`matmul`](super::matmul): the weight is
//! laid out once as the kernels' operand ([`Packed`], when the layer is built; no per-call
//! copy, no second copy held); candle's CPU product would widen both bf16 operands to f32
//! on every call and multiply in f32.

use super::{Acts, Bf16Path, OutAt, Start, Weight, matmul, matmul_uninit};
use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor};

/// Whether [`linear`] handles this input and weight: both on the CPU, a bf16 weight and an
/// f32 or bf16 input.
pub fn applies(x: &Tensor, weight: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu)
        && matches!(weight.device(), Device::Cpu)
        && weight.dtype() == DType::BF16
        && matches!(x.dtype(), DType::F32 | DType::BF16)
}

/// Run `f` on a bf16 CPU weight's values viewed as `(n, k)` row-major raw bits.
pub fn with_weight<T>(
    weight: &Tensor,
    (n, k): (usize, usize),
    f: impl FnOnce(Weight<'_>) -> T,
) -> Result<T> {
    if weight.elem_count() != n * k {
        candle_core::bail!("bf16 weight {:?} read as {n}×{k}", weight.dims());
    }
    let weight = weight.contiguous()?;
    let (storage, layout) = weight.storage_and_layout();
    let Storage::Cpu(CpuStorage::BF16(values)) = &*storage else {
        candle_core::bail!("bf16 kernels: expected a bf16 CPU weight");
    };
    let values = &values[layout.start_offset()..][..n * k];
    // SAFETY: `half::bf16` is `repr(transparent)` over `u16`: same size, alignment and
    // validity; the slice is borrowed for this call only.
    let bits = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u16>(), values.len()) };
    Ok(f(Weight::new(bits, n, k)))
}

/// A tensor's values as f32 (widened when bf16).
pub(crate) fn f32_values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
}

/// A bf16 linear layer's weight `(out, in)` laid out once as the activation operand of the
/// kernels (roles swapped: see [`linear_packed`]), and its bias in f32.
pub struct Packed {
    pub(super) acts: Acts,
    pub(super) bias: Option<Vec<f32>>,
    /// The bias's dtype as loaded (for [`Packed::tensors`]).
    pub(super) bias_dtype: DType,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Packed {{ out: {}, in: {} }}",
            self.acts.m(),
            self.acts.k()
        )
    }
}

impl Packed {
    /// From a bf16 CPU `weight` `(out, in)` and its bias (`out` values, any dtype).
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Packed> {
        let (out_dim, in_dim) = weight.dims2()?;
        let acts = with_weight(weight, (out_dim, in_dim), |w| {
            Acts::from_bf16_rows(w.bits, out_dim, in_dim)
        })?;
        let bias_dtype = bias.map_or(DType::F32, |b| b.dtype());
        let bias = bias.map(f32_values).transpose()?;
        if let Some(b) = &bias
            && b.len() != out_dim
        {
            candle_core::bail!("linear bias: {} values for {out_dim} outputs", b.len());
        }
        Ok(Packed {
            acts,
            bias,
            bias_dtype,
        })
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.acts.m(), self.acts.k())
    }

    /// The weight `(out, in)` in bf16 and the bias (in its dtype as loaded) as tensors again
    /// (exactly the values held), for a product the bf16 kernels do not run.
    pub fn tensors(&self, device: &Device) -> Result<(Tensor, Option<Tensor>)> {
        let (out_dim, in_dim) = self.dims();
        let rows: Vec<f32> = (0..out_dim).flat_map(|j| self.acts.row(j)).collect();
        let w = Tensor::from_vec(rows, (out_dim, in_dim), device)?.to_dtype(DType::BF16)?;
        let b = match &self.bias {
            Some(b) => {
                Some(Tensor::from_vec(b.clone(), out_dim, device)?.to_dtype(self.bias_dtype)?)
            }
            None => None,
        };
        Ok((w, b))
    }
}

/// Whether [`linear_packed`] handles this input: on the CPU, f32 or bf16.
pub fn applies_packed(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::BF16)
}

/// `x · weightᵀ + bias (+ residual)` for a bf16 `weight` `(out, in)` and `x` `(…, in)` in
/// f32 or bf16 (the weight laid out for this call): see [`linear_packed`].
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<(Tensor, Bf16Path)> {
    linear_packed(x, &Packed::new(weight, bias)?, residual)
}

/// `x · weightᵀ + bias (+ residual)` for a [`Packed`] layer and `x` `(…, in)` in f32 or
/// bf16: products in bf16 accumulated in f32, on this thread's [`Bf16Path`]; the result has
/// `x`'s dtype (so a bf16 network stays bf16). Returns the path taken too.
pub fn linear_packed(
    x: &Tensor,
    layer: &Packed,
    residual: Option<&Tensor>,
) -> Result<(Tensor, Bf16Path)> {
    let (out_dim, in_dim) = layer.dims();
    let dims = x.dims();
    if dims.last() != Some(&in_dim) {
        candle_core::bail!("linear: input {:?} for a {out_dim}×{in_dim} weight", dims);
    }
    let rows = x.elem_count() / in_dim.max(1);
    let mut shape = dims.to_vec();
    *shape.last_mut().expect("rank ≥ 1") = out_dim;
    let tokens = to_bits(x, rows * in_dim)?;
    let y = linear_tokens(&tokens, rows, layer, residual, &shape, x.device())?;
    Ok((y.0.to_dtype(x.dtype())?, y.1))
}

/// [`linear_packed`] of `rows` tokens already rounded to bf16 (row-major, `in` values each,
/// in an aligned buffer: what [`to_bits`] makes, or a fused producer such as
/// [`super::geglu`]); the f32 result has `shape`.
pub(super) fn linear_tokens(
    tokens: &super::Aligned,
    rows: usize,
    layer: &Packed,
    residual: Option<&Tensor>,
    shape: &[usize],
    device: &Device,
) -> Result<(Tensor, Bf16Path)> {
    let (out_dim, in_dim) = layer.dims();
    // Roles swapped: the tokens, rounded in place (row-major, no transpose), are the
    // product's weight operand and the layer's weight (laid out once) its activation
    // operand, so that the output `(tokens, out)` is written row-major, whole blocks
    // straight from the tiles.
    let start = Start {
        bias: None,
        accumulate: residual.is_some(),
        col_bias: layer.bias.as_deref(),
    };
    let tokens = Weight::new(&tokens.as_u16()[..rows * in_dim], rows, in_dim);
    let at = OutAt::channels(out_dim);
    let (out, path) = match residual {
        Some(r) => {
            if r.dims() != shape {
                candle_core::bail!("linear residual: {:?}, expected {:?}", r.dims(), shape);
            }
            let mut out = super::OutVec::copy_of_tensor(r)?;
            // SAFETY: a copy: every value written.
            let path = matmul(unsafe { out.values_mut() }, at, tokens, &layer.acts, start);
            (out, path)
        }
        None => {
            let mut out = super::OutVec::uninit(rows * out_dim);
            let path = matmul_uninit(out.uninit_mut(), at, tokens, &layer.acts, start);
            (out, path)
        }
    };
    said(path);
    // SAFETY: the product wrote every value (or started from the residual's).
    Ok((unsafe { out.into_tensor(shape, device)? }, path))
}

/// A tensor's `len` values rounded to bf16 bits (f32 read in place; bf16 as stored), in a
/// cache-line-aligned buffer (the product reads its rows as tiles in place).
pub(super) fn to_bits(x: &Tensor, len: usize) -> Result<super::Aligned> {
    use rayon::prelude::*;
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let start = layout.start_offset();
    let mut out = super::Aligned::zeroed(len.div_ceil(2));
    let bits = &mut out.as_u16_mut()[..len];
    match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => {
            bits.par_chunks_mut(1 << 16)
                .zip(v[start..start + len].par_chunks(1 << 16))
                .for_each(|(d, s)| super::pack::round_into(s, d));
        }
        Storage::Cpu(CpuStorage::BF16(v)) => {
            for (d, s) in bits.iter_mut().zip(&v[start..start + len]) {
                *d = s.to_bits();
            }
        }
        _ => candle_core::bail!("bf16 linear: expected an f32 or bf16 CPU input"),
    }
    Ok(out)
}

/// Log the path the first bf16 product took, once per process.
pub(crate) fn said(path: Bf16Path) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| tracing::info!("bf16 products on the CPU: {path} kernels"));
}
