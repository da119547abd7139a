//! Linear layers with bf16 weights on the CPU, on [`matmul`](super::matmul): candle's CPU
//! product widens both bf16 operands to f32 on every call and multiplies in f32.

use super::{Bf16Path, PackedBf16, matmul};
use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor};

/// Whether [`linear`] handles this input and weight: both on the CPU, a bf16 weight and an
/// f32 or bf16 input.
pub fn applies(x: &Tensor, weight: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu)
        && matches!(weight.device(), Device::Cpu)
        && weight.dtype() == DType::BF16
        && matches!(x.dtype(), DType::F32 | DType::BF16)
}

/// Pack a bf16 weight `(n, k)` (a linear layer's) for [`matmul`].
pub fn pack_weight(weight: &Tensor) -> Result<PackedBf16> {
    let (n, k) = weight.dims2()?;
    let weight = weight.contiguous()?;
    let (storage, layout) = weight.storage_and_layout();
    let Storage::Cpu(CpuStorage::BF16(values)) = &*storage else {
        candle_core::bail!("bf16 linear: expected a bf16 CPU weight");
    };
    let values = &values[layout.start_offset()..][..n * k];
    // SAFETY: `half::bf16` is `repr(transparent)` over `u16`: same size, alignment and
    // validity; the slice is borrowed for this call only.
    let bits = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u16>(), values.len()) };
    Ok(PackedBf16::from_bf16_bits_nk(bits, n, k))
}

/// `x · weightᵀ + bias (+ residual)` for a bf16 `weight` `(out, in)` and `x` `(…, in)` in
/// f32 or bf16: products in bf16 accumulated in f32, on this thread's [`Bf16Path`]; the
/// result has `x`'s dtype (so a bf16 network stays bf16). Returns the path taken too.
///
/// TODO(issue 28): the weight is packed on every call; pack it once at load (a layer type
/// holding the [`PackedBf16`]), and take bf16 activations without the f32 copy.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<(Tensor, Bf16Path)> {
    let (out_dim, in_dim) = weight.dims2()?;
    let dims = x.dims();
    if dims.last() != Some(&in_dim) {
        candle_core::bail!("linear: input {:?} for a {out_dim}×{in_dim} weight", dims);
    }
    let rows = x.elem_count() / in_dim.max(1);
    let mut shape = dims.to_vec();
    *shape.last_mut().expect("rank ≥ 1") = out_dim;
    let packed = pack_weight(weight)?;
    let f32_values =
        |t: &Tensor| -> Result<Vec<f32>> { t.flatten_all()?.to_dtype(DType::F32)?.to_vec1() };
    let a = f32_values(x)?;
    let bias = bias.map(&f32_values).transpose()?;
    if let Some(b) = &bias
        && b.len() != out_dim
    {
        candle_core::bail!("linear bias: {} values for {out_dim} outputs", b.len());
    }
    let mut out = match residual {
        Some(r) => {
            if r.dims() != shape.as_slice() {
                candle_core::bail!("linear residual: {:?}, expected {:?}", r.dims(), shape);
            }
            f32_values(r)?
        }
        None => vec![0f32; rows * out_dim],
    };
    let path = matmul(
        &mut out,
        &a,
        rows,
        &packed,
        bias.as_deref(),
        residual.is_some(),
    );
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| tracing::info!("bf16 products on the CPU: {path} kernels"));
    let y = Tensor::from_vec(out, shape, x.device())?;
    Ok((y.to_dtype(x.dtype())?, path))
}
