//! The layers the UNet and the VAE decoder share, each with a fused CPU path for inference
//! (`cpu_kernels`, `cpu_conv`; linear layers with bf16 weights on `bf16`) and candle's ops
//! otherwise (GPUs, f16, training).

use crate::model::cpu_conv;
use crate::model::cpu_kernels;
use crate::model::kernels::bf16;
use crate::model::profile::time;
use candle_core::{D, DType, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, VarBuilder};

type CResult<T> = candle_core::Result<T>;

/// Which kernels a model's forward pass is built from: chosen once when the model is built
/// and handed down to every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernels {
    /// Inference: the fused kernels (`cpu_kernels` and `cpu_conv` on the CPU, candle's fused
    /// softmax and layer norm), which have no backward pass.
    Fused,
    /// Training with candle's autograd: only ops that have a backward pass (composed softmax
    /// and layer norm, convolutions as patches × weights); same results, slower.
    Autograd,
}

/// A linear layer: candle's (f32 and f16, GPUs, training), or — a bf16 weight on the CPU,
/// the mixed precision of `--dtype bf16` — the weight laid out once, when the layer is
/// built, as the bf16 kernels' operand ([`bf16::linear::Packed`]; no other copy held).
#[derive(Debug)]
pub(crate) enum Linear {
    /// candle's layer.
    Candle(candle_nn::Linear),
    /// A bf16 CPU weight, laid out for the bf16 kernels.
    Bf16(bf16::linear::Packed),
}

impl Linear {
    /// `in_dim → out_dim` with a bias, from `vb` (`weight`, `bias`).
    pub(crate) fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> CResult<Linear> {
        Linear::from_candle(candle_nn::linear(in_dim, out_dim, vb)?)
    }

    /// `in_dim → out_dim` without a bias.
    pub(crate) fn no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> CResult<Linear> {
        Linear::from_candle(candle_nn::linear_no_bias(in_dim, out_dim, vb)?)
    }

    /// candle's layer, laid out for the bf16 kernels when its weight is bf16 on the CPU.
    pub(crate) fn from_candle(l: candle_nn::Linear) -> CResult<Linear> {
        let w = l.weight();
        if w.dtype() == DType::BF16 && w.device().is_cpu() && w.rank() == 2 {
            return Ok(Linear::Bf16(bf16::linear::Packed::new(w, l.bias())?));
        }
        Ok(Linear::Candle(l))
    }

    /// candle's layer, when held as such.
    pub(crate) fn dense(&self) -> Option<&candle_nn::Linear> {
        match self {
            Linear::Candle(l) => Some(l),
            Linear::Bf16(_) => None,
        }
    }

    /// Whether the weight is bf16 (the mixed precision's products).
    pub(crate) fn is_bf16(&self) -> bool {
        match self {
            Linear::Candle(l) => l.weight().dtype() == DType::BF16,
            Linear::Bf16(_) => true,
        }
    }

    /// candle's layer: as held, or rebuilt from the bf16 layout (a product the bf16 kernels
    /// do not run: an input off the CPU or in another dtype).
    fn candle(&self, x: &Tensor) -> CResult<std::borrow::Cow<'_, candle_nn::Linear>> {
        Ok(match self {
            Linear::Candle(l) => std::borrow::Cow::Borrowed(l),
            Linear::Bf16(p) => {
                let (w, b) = p.tensors(x.device())?;
                std::borrow::Cow::Owned(candle_nn::Linear::new(w, b))
            }
        })
    }
}

/// A linear layer: the fused CPU kernel for inference (f32, or bf16 weights on the
/// [`bf16`] kernels), candle's otherwise.
pub(crate) fn linear(l: &Linear, x: &Tensor, kernels: Kernels) -> CResult<Tensor> {
    match l {
        Linear::Bf16(p) if kernels == Kernels::Fused && bf16::linear::applies_packed(x) => {
            return Ok(bf16::linear::linear_packed(x, p, None)?.0);
        }
        Linear::Candle(l)
            if kernels == Kernels::Fused && cpu_kernels::applies(&[x, l.weight()]) =>
        {
            return cpu_kernels::linear(x, l.weight(), l.bias(), None);
        }
        _ => {}
    }
    l.candle(x)?.forward(x)
}

/// `linear(x) + residual`; on the CPU the product starts from the residual (one pass).
pub(crate) fn linear_add(
    l: &Linear,
    x: &Tensor,
    residual: &Tensor,
    kernels: Kernels,
) -> CResult<Tensor> {
    match l {
        Linear::Bf16(p) if kernels == Kernels::Fused && bf16::linear::applies_packed(x) => {
            return Ok(bf16::linear::linear_packed(x, p, Some(residual))?.0);
        }
        Linear::Candle(l)
            if kernels == Kernels::Fused && cpu_kernels::applies(&[x, l.weight(), residual]) =>
        {
            return cpu_kernels::linear(x, l.weight(), l.bias(), Some(residual));
        }
        _ => {}
    }
    l.candle(x)?.forward(x)? + residual
}

/// The time (and SDXL's added) embedding MLP, `linear_2(silu(linear_1(x)))`, as
/// candle-transformers' `TimestepEmbedding` but on [`linear`] (so bf16 weights on the CPU
/// take the bf16 kernels).
#[derive(Debug)]
pub(crate) struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    kernels: Kernels,
}

impl TimestepEmbedding {
    pub(crate) fn new(
        vb: VarBuilder,
        channels: usize,
        dim: usize,
        kernels: Kernels,
    ) -> CResult<Self> {
        Ok(Self {
            linear_1: Linear::new(channels, dim, vb.pp("linear_1"))?,
            linear_2: Linear::new(dim, dim, vb.pp("linear_2"))?,
            kernels,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let h = candle_nn::ops::silu(&linear(&self.linear_1, x, self.kernels)?)?;
        linear(&self.linear_2, &h, self.kernels)
    }
}

/// GroupNorm, optionally followed by SiLU: fused on the CPU for inference.
pub(crate) struct Norm {
    gn: GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl Norm {
    pub(crate) fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> CResult<Self> {
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
        Ok(Self {
            gn: GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?,
            weight,
            bias,
            groups,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, silu: bool, kernels: Kernels) -> CResult<Tensor> {
        if kernels == Kernels::Fused && cpu_kernels::applies(&[x, &self.weight]) {
            return cpu_kernels::group_norm(
                x,
                self.groups,
                &self.weight,
                &self.bias,
                self.eps,
                silu,
            );
        }
        let y = self.gn.forward(x)?;
        if silu {
            candle_nn::ops::silu(&y)
        } else {
            Ok(y)
        }
    }
}

pub(crate) fn conv3x3(
    cin: usize,
    cout: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
    kernels: Kernels,
) -> CResult<Conv> {
    let cfg = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    Conv::new(candle_nn::conv2d(cin, cout, 3, cfg, vb)?, kernels)
}

pub(crate) fn conv1x1(cin: usize, cout: usize, vb: VarBuilder, kernels: Kernels) -> CResult<Conv> {
    Conv::new(
        candle_nn::conv2d(cin, cout, 1, Default::default(), vb)?,
        kernels,
    )
}

/// A 2-D convolution: candle's kernel, or (for training) the same convolution written as
/// patch extraction + one matrix product, whose backward pass is a matrix product too
/// (candle's CPU convolution backward is very slow for these sizes).
pub(crate) struct Conv {
    /// The convolution; its weight is `(o, c, kh, kw)`, or by offset `(o, kh, kw, c)` when
    /// `by_offset` (a bf16 CPU weight of a kernel larger than 1×1, laid out once for the
    /// bf16 kernels, so that no call re-lays it out and no second copy is held).
    conv: Conv2d,
    kernels: Kernels,
    by_offset: bool,
}

impl Conv {
    /// `conv` for `kernels`; a bf16 weight on the CPU (the mixed precision of `--dtype
    /// bf16`) of a kernel larger than 1×1 is re-laid out by offset for the bf16 kernels, a
    /// 1×1 kernel's copied to start on a cache line (its layout is by offset already).
    pub(crate) fn new(conv: Conv2d, kernels: Kernels) -> CResult<Conv> {
        let w = conv.weight();
        let bf16_cpu = kernels == Kernels::Fused
            && w.dtype() == DType::BF16
            && w.device().is_cpu()
            && w.rank() == 4;
        if bf16_cpu && w.dim(2)? * w.dim(3)? == 1 {
            // A 1×1 kernel keeps its layout, copied once to start on a cache line.
            let conv = Conv2d::new(
                bf16::conv::aligned(w)?,
                conv.bias().cloned(),
                *conv.config(),
            );
            return Ok(Conv {
                conv,
                kernels,
                by_offset: false,
            });
        }
        if !bf16_cpu {
            return Ok(Conv {
                conv,
                kernels,
                by_offset: false,
            });
        }
        let weight = bf16::conv::by_offset(w)?;
        let conv = Conv2d::new(weight, conv.bias().cloned(), *conv.config());
        Ok(Conv {
            conv,
            kernels,
            by_offset: true,
        })
    }

    /// Whether this is a 1×1 convolution (stride 1, no padding) the bf16 kernels run on
    /// `x` (so [`bf16::pointwise`] can take it in and out of the token layout).
    pub(crate) fn bf16_pointwise(&self, x: &Tensor) -> bool {
        let cfg = self.conv.config();
        let w = self.conv.weight();
        self.bf16_runs(x, None)
            && !self.by_offset
            && w.rank() == 4
            && w.dims()[2..] == [1, 1]
            && cfg.stride == 1
            && cfg.padding == 0
    }

    /// The weight `(o, c)` and bias of a 1×1 convolution, for the fused token kernels.
    pub(crate) fn pointwise(&self) -> (&Tensor, Option<&Tensor>) {
        (self.conv.weight(), self.conv.bias())
    }

    /// The convolution with its weight `(o, c, kh, kw)` (re-laid back when held by offset:
    /// only a fallback that candle's own kernel runs, never the bf16 CPU path).
    fn as_stored(&self) -> CResult<std::borrow::Cow<'_, Conv2d>> {
        if !self.by_offset {
            return Ok(std::borrow::Cow::Borrowed(&self.conv));
        }
        let w = self.conv.weight().permute((0, 3, 1, 2))?.contiguous()?;
        Ok(std::borrow::Cow::Owned(Conv2d::new(
            w,
            self.conv.bias().cloned(),
            *self.conv.config(),
        )))
    }

    /// Whether the bf16 kernels run this convolution of `x` (`+ residual`).
    fn bf16_runs(&self, x: &Tensor, residual: Option<&Tensor>) -> bool {
        let cfg = self.conv.config();
        self.kernels == Kernels::Fused
            && bf16::conv::applies(x, self.conv.weight())
            && residual.is_none_or(|r| r.dtype() == x.dtype())
            && cfg.groups == 1
            && cfg.dilation == 1
    }

    /// The bf16 kernels' convolution of `x` (`+ residual`), when [`Self::bf16_runs`].
    fn bf16_forward(&self, x: &Tensor, residual: Option<&Tensor>) -> CResult<Tensor> {
        let cfg = self.conv.config();
        let w = self.conv.weight();
        let (y, _) = if self.by_offset {
            bf16::conv::conv2d_by_offset(x, w, self.conv.bias(), cfg.stride, cfg.padding, residual)?
        } else {
            bf16::conv::conv2d(x, w, self.conv.bias(), cfg.stride, cfg.padding, residual)?
        };
        Ok(y)
    }

    pub(crate) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        time(self.op_name(x)?, || self.forward_inner(x))
    }

    /// `forward(x) + residual` (the fused CPU path starts the product from the residual).
    pub(crate) fn forward_add(&self, x: &Tensor, residual: &Tensor) -> CResult<Tensor> {
        let cfg = self.conv.config();
        if self.bf16_runs(x, Some(residual)) {
            return time(self.op_name(x)?, || self.bf16_forward(x, Some(residual)));
        }
        if self.kernels == Kernels::Fused
            && cpu_conv::applies(x)
            && self.conv.weight().dtype() == DType::F32
            && residual.dtype() == DType::F32
            && cfg.groups == 1
            && cfg.dilation == 1
        {
            return time(self.op_name(x)?, || {
                cpu_conv::conv2d_add(
                    x,
                    self.conv.weight(),
                    self.conv.bias(),
                    cfg.stride,
                    cfg.padding,
                    Some(residual),
                )
            });
        }
        let y = self.forward(x)?;
        time("residual add", || y + residual)
    }

    /// The profile's name for this convolution on `x`: kernel size and input width.
    fn op_name(&self, x: &Tensor) -> CResult<&'static str> {
        let kh = self.conv.weight().dim(if self.by_offset { 1 } else { 2 })?;
        Ok(match (kh, x.dim(D::Minus1)?) {
            (1, _) => "conv 1x1",
            (_, w) if w >= 128 => "conv 3x3, width ≥ 128",
            (_, w) if w >= 64 => "conv 3x3, width 64-127",
            (_, w) if w >= 32 => "conv 3x3, width 32-63",
            (_, w) if w >= 16 => "conv 3x3, width 16-31",
            _ => "conv 3x3, width < 16",
        })
    }

    /// Whether the fused CPU kernels can run this convolution on `x` (an image, or tokens
    /// for the 1×1 projections).
    pub(crate) fn fused(&self, x: &Tensor) -> bool {
        let cfg = self.conv.config();
        self.kernels == Kernels::Fused
            && cpu_conv::enabled()
            && cpu_kernels::applies(&[x, self.conv.weight()])
            && cfg.groups == 1
            && cfg.dilation == 1
    }

    fn forward_inner(&self, x: &Tensor) -> CResult<Tensor> {
        if self.kernels == Kernels::Fused {
            let cfg = self.conv.config();
            // bf16 weights first: `cpu_conv::applies` looks at the input only.
            if self.bf16_runs(x, None) {
                return self.bf16_forward(x, None);
            }
            if cpu_conv::applies(x) && cfg.groups == 1 && cfg.dilation == 1 {
                return cpu_conv::conv2d(
                    x,
                    self.conv.weight(),
                    self.conv.bias(),
                    cfg.stride,
                    cfg.padding,
                );
            }
            return self.as_stored()?.forward(x);
        }
        let cfg = self.conv.config();
        if cpu_conv::applies(x) {
            return cpu_conv::conv2d_trainable(
                x,
                self.conv.weight(),
                self.conv.bias(),
                cfg.stride,
                cfg.padding,
            );
        }
        conv2d_unfold(
            x,
            self.conv.weight(),
            self.conv.bias(),
            cfg.stride,
            cfg.padding,
        )
    }
}

/// `conv2d` (groups 1, dilation 1) as patches × weights, differentiable with basic ops.
pub(crate) fn conv2d_unfold(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> CResult<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, ci, kh, kw) = weight.dims4()?;
    if ci != c {
        candle_core::bail!("conv: {c} input channels but the kernel takes {ci}");
    }
    let xp = if padding > 0 {
        x.pad_with_zeros(2, padding, padding)?
            .pad_with_zeros(3, padding, padding)?
    } else {
        x.clone()
    };
    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
    let ho = (hp - kh) / stride + 1;
    let wo = (wp - kw) / stride + 1;
    let y = if kh == 1 && kw == 1 && stride == 1 {
        let w2 = weight.reshape((o, c))?;
        w2.broadcast_matmul(&xp.reshape((b, c, hp * wp))?)?
    } else {
        // Room for ho·stride rows from every kernel offset (pad the bottom/right if needed).
        let need_h = (kh - 1) + ho * stride;
        let need_w = (kw - 1) + wo * stride;
        let xp = xp
            .pad_with_zeros(2, 0, need_h.saturating_sub(hp))?
            .pad_with_zeros(3, 0, need_w.saturating_sub(wp))?;
        let mut cols = Vec::with_capacity(kh * kw);
        for ky in 0..kh {
            for kx in 0..kw {
                let mut p = xp.narrow(2, ky, ho * stride)?.narrow(3, kx, wo * stride)?;
                if stride > 1 {
                    p = p
                        .contiguous()?
                        .reshape((b, c, ho, stride, wo, stride))?
                        .narrow(3, 0, 1)?
                        .narrow(5, 0, 1)?
                        .reshape((b, c, ho, wo))?;
                }
                cols.push(p);
            }
        }
        let cols = Tensor::stack(&cols, 2)?.reshape((b, c * kh * kw, ho * wo))?;
        weight.reshape((o, c * kh * kw))?.broadcast_matmul(&cols)?
    };
    let y = y.reshape((b, o, ho, wo))?;
    match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, o, 1, 1))?),
        None => Ok(y),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    /// The largest `|a − b|` over all values (either dtype).
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// ‖got − want‖ / ‖want‖ over all values (either dtype).
    pub(crate) fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
        let got = got.to_dtype(DType::F32).unwrap();
        let want = want.to_dtype(DType::F32).unwrap();
        let diff = (got - &want).unwrap().sqr().unwrap().sum_all().unwrap();
        let norm = want.sqr().unwrap().sum_all().unwrap();
        (diff.to_scalar::<f32>().unwrap() / norm.to_scalar::<f32>().unwrap()).sqrt()
    }

    #[test]
    fn bf16_linear_on_the_cpu_runs_on_every_path() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (70, 45), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 70, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 13, 45), &dev).unwrap();
        let res = Tensor::randn(0f32, 1.0, (2, 13, 70), &dev).unwrap();
        let bf = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
        // The f32 reference on the bf16-rounded weights (and inputs, for a bf16 network).
        let up = |t: &Tensor| bf(t).to_dtype(DType::F32).unwrap();
        let lin32 = Linear::from_candle(candle_nn::Linear::new(up(&w), Some(up(&b)))).unwrap();
        let lin16 = Linear::from_candle(candle_nn::Linear::new(bf(&w), Some(bf(&b)))).unwrap();
        assert!(matches!(lin16, Linear::Bf16(_)) && lin16.is_bf16());
        assert!(matches!(lin32, Linear::Candle(_)) && !lin32.is_bf16());
        // A product the bf16 kernels do not run (candle's, from the weight rebuilt from its
        // layout): the same values as candle's layer on the weight as loaded.
        let bf_x = bf(&x);
        let rebuilt = linear(&lin16, &bf_x, Kernels::Autograd).unwrap();
        let candle = candle_nn::Linear::new(bf(&w), Some(bf(&b)))
            .forward(&bf_x)
            .unwrap();
        assert_eq!(
            rebuilt
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec3::<f32>()
                .unwrap(),
            candle
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec3::<f32>()
                .unwrap()
        );
        for path in bf16::Bf16Path::ALL {
            bf16::with_forced_path(path, || {
                for x_in in [x.clone(), bf(&x)] {
                    let want = linear(&lin32, &up(&x_in), Kernels::Fused).unwrap();
                    let got = linear(&lin16, &x_in, Kernels::Fused).unwrap();
                    assert_eq!(got.dtype(), x_in.dtype());
                    assert_eq!(got.dims(), want.dims());
                    let err = rel_err(&got, &want);
                    assert!(err < 1e-2, "{path} {:?}: {err}", x_in.dtype());
                    let res_in = res.to_dtype(x_in.dtype()).unwrap();
                    let want = (want + up(&res_in)).unwrap();
                    let got = linear_add(&lin16, &x_in, &res_in, Kernels::Fused).unwrap();
                    let err = rel_err(&got, &want);
                    assert!(err < 1e-2, "{path} {:?} + residual: {err}", x_in.dtype());
                }
            });
        }
    }

    #[test]
    fn bf16_conv_on_the_cpu_runs_on_every_path() {
        let dev = Device::Cpu;
        // 8 wide: patches gathered per pixel; 16 wide: by runs of 16 pixels (stride 1).
        for dims in [(2, 5, 9, 8), (2, 3, 5, 16)] {
            bf16_conv_case(&Tensor::randn(0f32, 1.0, dims, &dev).unwrap());
        }
    }

    fn bf16_conv_case(x: &Tensor) {
        let dev = Device::Cpu;
        let c = x.dim(1).unwrap();
        let up = |t: &Tensor| {
            t.to_dtype(DType::BF16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        };
        for (k, stride, padding) in [(3, 1, 1), (3, 2, 1), (3, 2, 0), (1, 1, 0), (3, 1, 0)] {
            let w = Tensor::randn(0f32, 1.0, (4, c, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
            let cfg = Conv2dConfig {
                padding,
                stride,
                ..Default::default()
            };
            let want = x
                .conv2d(&up(&w), padding, stride, 1, 1)
                .unwrap()
                .broadcast_add(&up(&b).reshape((1, 4, 1, 1)).unwrap())
                .unwrap();
            let conv = Conv::new(
                Conv2d::new(
                    w.to_dtype(DType::BF16).unwrap(),
                    Some(b.to_dtype(DType::BF16).unwrap()),
                    cfg,
                ),
                Kernels::Fused,
            )
            .unwrap();
            assert_eq!(conv.by_offset, k > 1);
            for path in bf16::Bf16Path::ALL {
                bf16::with_forced_path(path, || {
                    for x_in in [x.clone(), x.to_dtype(DType::BF16).unwrap()] {
                        let got = conv.forward(&x_in).unwrap();
                        assert_eq!(got.dtype(), x_in.dtype());
                        assert_eq!(got.dims(), want.dims());
                        let err = rel_err(&got, &want);
                        assert!(
                            err < 1e-2,
                            "{path} k {k} stride {stride} pad {padding}: {err}"
                        );
                    }
                    // With a residual: the product starts from it.
                    let res = Tensor::randn(0f32, 1.0, want.dims(), &dev).unwrap();
                    let got = conv.forward_add(x, &res).unwrap();
                    let err = rel_err(&got, &(&want + &res).unwrap());
                    assert!(err < 1e-2, "{path} k {k} + residual: {err}");
                });
            }
        }
    }

    #[test]
    fn unfolded_conv_matches_candle_conv() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 9, 8), &dev).unwrap();
        for (k, stride, padding) in [(3, 1, 1), (3, 2, 1), (3, 2, 0), (1, 1, 0), (3, 1, 0)] {
            let w = Tensor::randn(0f32, 1.0, (4, 5, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
            let want = x
                .conv2d(&w, padding, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
                .unwrap();
            let got = conv2d_unfold(&x, &w, Some(&b), stride, padding).unwrap();
            assert_eq!(
                got.dims(),
                want.dims(),
                "k {k} stride {stride} pad {padding}"
            );
            let err = max_abs_diff(&got, &want);
            assert!(err < 1e-4, "k {k} stride {stride} pad {padding}: {err}");
        }
    }
}
