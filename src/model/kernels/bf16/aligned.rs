//! Buffers whose start is on a cache line, for the operands AMX loads as tiles.

/// 64 bytes, aligned to 64: the unit of [`Aligned`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; 16]);

/// A zero-initialised buffer of `u32` whose start is 64-byte aligned. AMX tile loads whose
/// rows are not cache-line aligned run ~6× slower on the Xeons measured (each row splits
/// over two lines: 34–40 cycles per `tileloadd` against 6, `amx::peak`), and a `Vec`'s
/// allocation is only 16-byte aligned.
pub(crate) struct Aligned {
    lines: Vec<Line>,
    len: usize,
}

impl Aligned {
    /// `len` zeros.
    pub(crate) fn zeroed(len: usize) -> Aligned {
        Aligned {
            lines: vec![Line([0; 16]); len.div_ceil(16)],
            len,
        }
    }

    /// The values as `u16` (twice as many).
    pub(crate) fn as_u16(&self) -> &[u16] {
        // SAFETY: as `as_u16_mut`, shared.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u16>(), 2 * self.len) }
    }

    /// The values as `f32` (bit patterns of zero are 0.0).
    pub(crate) fn as_f32_mut(&mut self) -> &mut [f32] {
        // SAFETY: the lines hold `len` 32-bit values; every bit pattern is a valid f32.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }

    /// The values as `u16` (twice as many).
    pub(crate) fn as_u16_mut(&mut self) -> &mut [u16] {
        let len = 2 * self.len;
        // SAFETY: the lines hold at least `len` u16 values; u16 has no invalid values and a
        // smaller alignment than the lines.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u16>(), len) }
    }
}

impl std::ops::Deref for Aligned {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        // SAFETY: the lines hold at least `len` u32 values.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u32>(), self.len) }
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [u32] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u32>(), self.len) }
    }
}

/// An f32 output of `len` values whose first value sits on a cache line, for candle: a
/// `Vec` with a few spare values before the output (zeroed), handed to a tensor whole and
/// viewed from `off`. A product's blocks of whole cache-line rows are then accumulated in
/// place (tile loads and stores), where a `Vec`'s usual 16-byte start sent three buffers in
/// four through a scratch tile and a second pass.
pub(crate) struct OutVec {
    vec: Vec<std::mem::MaybeUninit<f32>>,
    off: usize,
    len: usize,
}

impl OutVec {
    /// Spare values allocated before the output (a 64-byte line holds 16).
    const SPARE: usize = 16;

    /// `len` values, not yet written.
    pub(crate) fn uninit(len: usize) -> OutVec {
        let mut vec = crate::model::cpu_kernels::uninit_vec(len + Self::SPARE);
        let off = (64 - vec.as_ptr() as usize % 64) % 64 / 4;
        let (head, rest) = vec.split_at_mut(off);
        for v in head.iter_mut().chain(&mut rest[len..]) {
            v.write(0.0);
        }
        OutVec { vec, off, len }
    }

    /// A copy of a tensor's values, widened to f32 (a residual to accumulate onto).
    pub(crate) fn copy_of_tensor(t: &candle_core::Tensor) -> candle_core::Result<OutVec> {
        if t.dtype() == candle_core::DType::F32 {
            crate::model::cpu_kernels::with_slice(t, |s| Ok(OutVec::copy_of(s)))
        } else {
            Ok(OutVec::copy_of(&super::linear::f32_values(t)?))
        }
    }

    /// A copy of `values` (a residual to accumulate onto).
    pub(crate) fn copy_of(values: &[f32]) -> OutVec {
        let mut out = OutVec::uninit(values.len());
        for (d, s) in out.uninit_mut().iter_mut().zip(values) {
            d.write(*s);
        }
        out
    }

    /// The output's values (not yet written, or written: the caller knows which).
    pub(crate) fn uninit_mut(&mut self) -> &mut [std::mem::MaybeUninit<f32>] {
        &mut self.vec[self.off..self.off + self.len]
    }

    /// The output's values, once written.
    ///
    /// # Safety
    /// Every value was written ([`OutVec::copy_of`], or by the caller).
    pub(crate) unsafe fn values_mut(&mut self) -> &mut [f32] {
        let v = self.uninit_mut();
        // SAFETY: written (caller); MaybeUninit<f32> has f32's layout.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len()) }
    }

    /// The output as a tensor of `shape` (a view into the whole buffer).
    ///
    /// # Safety
    /// Every value was written.
    pub(crate) unsafe fn into_tensor(
        self,
        shape: &[usize],
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let total = self.vec.len();
        // SAFETY: the spare values were zeroed here, the output written (caller).
        let vec = unsafe { crate::model::cpu_kernels::assume_init(self.vec) };
        candle_core::Tensor::from_vec(vec, total, device)?
            .narrow(0, self.off, self.len)?
            .reshape(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu_kernels::with_slice;
    use candle_core::Device;

    #[test]
    fn an_output_starts_on_a_cache_line_and_its_tensor_is_just_its_values() {
        for len in [1usize, 15, 16, 17, 1000, 4099] {
            let values: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut out = OutVec::copy_of(&values);
            assert_eq!(out.uninit_mut().len(), len);
            assert_eq!(out.uninit_mut().as_ptr() as usize % 64, 0, "len {len}");
            // SAFETY: every value was written by copy_of.
            let t = unsafe { out.into_tensor(&[len], &Device::Cpu) }.unwrap();
            assert_eq!(t.dims(), &[len]);
            with_slice(&t, |s| {
                // The tensor views the same aligned values, nothing before or after them.
                assert_eq!(s.as_ptr() as usize % 64, 0, "len {len}");
                assert_eq!(s, values.as_slice());
                Ok(())
            })
            .unwrap();
        }
        let a = Aligned::zeroed(33);
        assert_eq!(a.as_u16().as_ptr() as usize % 64, 0);
        assert_eq!((a.len(), a.as_u16().len()), (33, 66));
    }
}
