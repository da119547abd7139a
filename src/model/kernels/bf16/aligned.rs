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
