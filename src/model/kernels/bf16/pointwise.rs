//! A transformer block's 1×1 projections in and out of the token layout with bf16 weights
//! on the CPU, each one product with no layout change around it: `proj_in` writes its
//! output straight as tokens `(b, h·w, o)` from an image `(b, c, h, w)`, and `proj_out`
//! reads tokens as its activations and writes the image `(b, o, h, w)` starting from the
//! residual (candle would copy the image into tokens and back, on one thread).

use super::linear::{f32_values, said, with_weight};
use super::{Acts, MB, OutAt, Start, matmul, matmul_uninit};
use crate::model::cpu_kernels::{assume_init, uninit_vec, with_slice};
use candle_core::{DType, Result, Tensor};

/// The 1×1 weight `(o, c, 1, 1)` as `(o, c)`, checked against `c` inputs.
fn dims(weight: &Tensor, c: usize) -> Result<usize> {
    let (o, ci, kh, kw) = weight.dims4()?;
    if ci != c || kh != 1 || kw != 1 {
        candle_core::bail!(
            "1×1 projection: weight {:?} for {c} channels",
            weight.dims()
        );
    }
    Ok(o)
}

/// `conv1x1(x) + bias` for `x` `(b, c, h, w)` (f32 or bf16) and a bf16 weight `(o, c, 1, 1)`,
/// as tokens `(b, h·w, o)` in `x`'s dtype.
pub fn to_tokens(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let o = dims(weight, c)?;
    let pixels = h * w;
    let rows = b * pixels;
    let bias = bias.map(f32_values).transpose()?;
    let x32 = x.to_dtype(DType::F32)?;
    let acts = with_slice(&x32, |xs| {
        let plane = c * pixels;
        Ok(if pixels.is_multiple_of(MB) {
            Acts::build_columns(rows, c, |blk, cols| {
                let (img, p0) = ((blk * MB) / pixels, (blk * MB) % pixels);
                let src = &xs[img * plane..(img + 1) * plane];
                for ch in 0..c {
                    cols.push(src[ch * pixels + p0..][..MB].try_into().expect("16"));
                }
            })
        } else {
            Acts::build(rows, c, |i, row| {
                let (img, p) = (i / pixels, i % pixels);
                for (ch, v) in row.iter_mut().enumerate() {
                    *v = xs[img * plane + ch * pixels + p];
                }
            })
        })
    })?;
    let start = Start {
        bias: bias.as_deref(),
        accumulate: false,
        col_bias: None,
    };
    let mut out = uninit_vec(rows * o);
    let path = with_weight(weight, (o, c), |wt| {
        matmul_uninit(&mut out, OutAt::strided(1, o), wt, &acts, start)
    })?;
    said(path);
    // SAFETY: the product wrote every value.
    let out = unsafe { assume_init(out) };
    Tensor::from_vec(out, (b, pixels, o), x.device())?.to_dtype(x.dtype())
}

/// `conv1x1(image(t)) + bias + residual` for tokens `t` `(b, h·w, c)` (f32 or bf16), a bf16
/// weight `(o, c, 1, 1)` and a residual `(b, o, h, w)`: the image `(b, o, h, w)` in `t`'s
/// dtype.
pub fn from_tokens(
    t: &Tensor,
    (h, w): (usize, usize),
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> Result<Tensor> {
    let (b, hw, c) = t.dims3()?;
    let o = dims(weight, c)?;
    if hw != h * w || residual.dims() != [b, o, h, w] {
        candle_core::bail!(
            "1×1 projection from tokens {:?} ({h}×{w}) with residual {:?}",
            t.dims(),
            residual.dims()
        );
    }
    let bias = bias.map(f32_values).transpose()?;
    let t32 = t.to_dtype(DType::F32)?;
    let acts = with_slice(&t32, |ts| Ok(Acts::from_rows(&ts[..b * hw * c], b * hw, c)))?;
    let mut out = super::OutVec::copy_of_tensor(residual)?;
    let start = Start {
        bias: bias.as_deref(),
        accumulate: true,
        col_bias: None,
    };
    let path = with_weight(weight, (o, c), |wt| {
        // SAFETY: a copy of the residual: every value written.
        matmul(
            unsafe { out.values_mut() },
            OutAt::images(o, hw),
            wt,
            &acts,
            start,
        )
    })?;
    said(path);
    // SAFETY: as above; the product added to every value.
    let y = unsafe { out.into_tensor(&[b, o, h, w], t.device())? };
    y.to_dtype(t.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::bf16::{Bf16Path, with_forced_path};
    use candle_core::Device;

    use crate::model::kernels::layers::tests::rel_err as rel;

    #[test]
    fn projections_in_and_out_of_tokens_match_the_convolution_and_layout_change() {
        let dev = Device::Cpu;
        // 4×8 (whole 16-pixel blocks) and 3×5 (not).
        for (h, w) in [(4, 8), (3, 5)] {
            let (b, c, o) = (2, 24, 40);
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 0.2, (o, c, 1, 1), &dev).unwrap();
            let wb = wt.to_dtype(DType::BF16).unwrap();
            let wr = wb.to_dtype(DType::F32).unwrap();
            let bias = Tensor::randn(0f32, 1.0, o, &dev).unwrap();
            let conv = x
                .conv2d(&wr, 0, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, o, 1, 1)).unwrap())
                .unwrap();
            let want_tokens = conv
                .permute((0, 2, 3, 1))
                .unwrap()
                .reshape((b, h * w, o))
                .unwrap();
            // Back: tokens (b, hw, o) through a (c', o) weight into an image + residual.
            let w2 = Tensor::randn(0f32, 0.2, (c, o, 1, 1), &dev)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap();
            let res = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
            let image = want_tokens
                .reshape((b, h, w, o))
                .unwrap()
                .permute((0, 3, 1, 2))
                .unwrap()
                .contiguous()
                .unwrap();
            let want_back = (image
                .conv2d(&w2.to_dtype(DType::F32).unwrap(), 0, 1, 1, 1)
                .unwrap()
                + &res)
                .unwrap();
            for path in Bf16Path::ALL {
                with_forced_path(path, || {
                    let got = to_tokens(&x, &wb, Some(&bias)).unwrap();
                    assert_eq!(got.dims(), &[b, h * w, o]);
                    let e = rel(&got, &want_tokens);
                    assert!(e < 1e-2, "{path} {h}×{w} in: {e}");
                    let back = from_tokens(&want_tokens, (h, w), &w2, None, &res).unwrap();
                    let e = rel(&back, &want_back);
                    assert!(e < 1e-2, "{path} {h}×{w} out: {e}");
                });
            }
        }
    }
}
