//! The activation operand of the bf16 products ([`Acts`]): rows rounded to bf16 once and
//! laid out in blocks of 16 rows by pairs of `k` values, the layout AMX tiles and AVX-512
//! registers load.

use super::{Aligned, KB, MB, bf16_to_f32, pack};

/// The activations `X` (`m × k`) of a product, rounded to bf16 and laid out for the kernels:
/// blocks of [`MB`] rows (an even number of blocks, zero rows past `m`); within a block, for
/// each pair of `k` values `(2p, 2p + 1)` (`k` padded with zeros to a multiple of [`KB`]),
/// the 16 rows' two values side by side — one AMX tile row or one AVX-512 register.
pub struct Acts {
    m: usize,
    k: usize,
    /// `k` padded to a multiple of [`KB`].
    kp: usize,
    /// Pairs of bf16 values, the first in the low half (little-endian memory order); every
    /// block starts on a cache line (its tiles load at full speed).
    pub(super) data: Aligned,
}

impl std::fmt::Debug for Acts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Acts {{ m: {}, k: {} }}", self.m, self.k)
    }
}

impl Acts {
    /// From `m` rows of `k` f32 values, row-major.
    pub fn from_rows(x: &[f32], m: usize, k: usize) -> Acts {
        assert_eq!(x.len(), m * k, "Acts: {} values for {m}×{k}", x.len());
        Acts::build(m, k, |i, row| row.copy_from_slice(&x[i * k..(i + 1) * k]))
    }

    /// From a function that writes row `i`'s `k` values (called once per row, from several
    /// threads: a convolution's patches are gathered this way, never stored in f32).
    pub fn build(m: usize, k: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Acts {
        Acts::build_with(m, k, true, fill)
    }

    /// [`Acts::build`] on the rayon threads (`parallel`) or on this thread alone.
    pub fn build_with(
        m: usize,
        k: usize,
        parallel: bool,
        fill: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Acts {
        use rayon::prelude::*;
        let (kp, mut data) = Acts::zeroed(m, k);
        let init = || vec![0f32; MB * k];
        let one = |rows: &mut Vec<f32>, (b, block): (usize, &mut [u32])| {
            let real = MB.min(m.saturating_sub(b * MB));
            for (r, row) in rows.chunks_exact_mut(k.max(1)).enumerate().take(MB) {
                if r < real {
                    fill(b * MB + r, row);
                } else {
                    row.fill(0.0);
                }
            }
            pack::pack_block(rows, k, block);
        };
        let chunks = kp / 2 * MB;
        if parallel {
            data.par_chunks_mut(chunks)
                .enumerate()
                .for_each_init(init, one);
        } else {
            let mut scratch = init();
            for item in data.chunks_mut(chunks).enumerate() {
                one(&mut scratch, item);
            }
        }
        Acts { m, k, kp, data }
    }

    /// From a function that hands, for block `b` (rows `16b … 16b + 15`; `m` a multiple of
    /// 16), the 16 rows' values of each `k` in order to a [`Columns`] sink — for inputs whose
    /// columns are contiguous (a convolution's patches over 16 neighbouring pixels), rounded
    /// a pair of columns at a time.
    pub fn build_columns(
        m: usize,
        k: usize,
        fill: impl Fn(usize, &mut Columns<'_>) + Sync,
    ) -> Acts {
        use rayon::prelude::*;
        assert!(m.is_multiple_of(MB), "Acts::build_columns: {m} rows");
        let (kp, mut data) = Acts::zeroed(m, k);
        data.par_chunks_mut(kp / 2 * MB)
            .take(m / MB)
            .enumerate()
            .for_each(|(b, block)| {
                let mut sink = Columns {
                    block,
                    pushed: 0,
                    pending: [0.0; MB],
                };
                fill(b, &mut sink);
                assert_eq!(
                    sink.pushed, k,
                    "Acts::build_columns: {} of {k} values",
                    sink.pushed
                );
                if !k.is_multiple_of(2) {
                    let p = k / 2;
                    pack::pack_pair(
                        &sink.pending,
                        &[0.0; MB],
                        &mut sink.block[p * MB..(p + 1) * MB],
                    );
                }
            });
        Acts { m, k, kp, data }
    }

    /// From `m` rows of `k` values already in bf16 (raw bits, row-major): no rounding.
    pub fn from_bf16_rows(bits: &[u16], m: usize, k: usize) -> Acts {
        use rayon::prelude::*;
        assert_eq!(bits.len(), m * k, "Acts: {} values for {m}×{k}", bits.len());
        let (kp, mut data) = Acts::zeroed(m, k);
        data.par_chunks_mut(kp / 2 * MB)
            .enumerate()
            .for_each(|(b, block)| {
                for r in 0..MB.min(m.saturating_sub(b * MB)) {
                    let row = &bits[(b * MB + r) * k..(b * MB + r + 1) * k];
                    let mut two = row.chunks_exact(2);
                    for (p, v) in (&mut two).enumerate() {
                        block[p * MB + r] = v[0] as u32 | (v[1] as u32) << 16;
                    }
                    if let [last] = two.remainder() {
                        block[(k / 2) * MB + r] = *last as u32;
                    }
                }
            });
        Acts { m, k, kp, data }
    }

    /// `k` padded to a multiple of [`KB`], and zeroed storage for `m` rows of it in whole
    /// pairs of blocks.
    fn zeroed(m: usize, k: usize) -> (usize, Aligned) {
        let kp = k.div_ceil(KB).max(1) * KB;
        let blocks = m.div_ceil(MB).next_multiple_of(2).max(2);
        (kp, Aligned::zeroed(blocks * kp / 2 * MB))
    }

    /// The same rows with their 16-row blocks reordered: block `b` of the result is block
    /// `from(b)` of these (`m` a multiple of 32, so that there are no padding blocks).
    pub(crate) fn blocks_reordered(&self, from: impl Fn(usize) -> usize) -> Acts {
        assert!(self.m.is_multiple_of(32), "Acts: reorder {} rows", self.m);
        let len = self.kp / 2 * MB;
        let mut data = Aligned::zeroed(self.data.len());
        for (b, block) in data.chunks_exact_mut(len).enumerate() {
            block.copy_from_slice(self.block(from(b)));
        }
        Acts { data, ..*self }
    }

    /// Rows.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Values per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Block `b`'s values (`kp · MB` bf16 as `kp / 2 · MB` pairs), the rows
    /// `16b … 16b + 15`.
    pub(crate) fn block(&self, b: usize) -> &[u32] {
        let len = self.kp / 2 * MB;
        &self.data[b * len..(b + 1) * len]
    }

    /// `k` padded to a multiple of [`KB`].
    pub(crate) fn kp(&self) -> usize {
        self.kp
    }

    /// Row `i` widened back to f32 (the values the kernels multiply).
    pub fn row(&self, i: usize) -> Vec<f32> {
        let block = self.block(i / MB);
        let r = i % MB;
        (0..self.k)
            .map(|kk| bf16_to_f32((block[(kk / 2) * MB + r] >> (16 * (kk % 2))) as u16))
            .collect()
    }
}

/// Where [`Acts::build_columns`] takes a block's columns, in order.
pub struct Columns<'a> {
    block: &'a mut [u32],
    pushed: usize,
    pending: [f32; MB],
}

impl Columns<'_> {
    /// The next `k` value of the block's 16 rows.
    #[inline]
    pub fn push(&mut self, column: &[f32; MB]) {
        if self.pushed.is_multiple_of(2) {
            self.pending = *column;
        } else {
            let p = self.pushed / 2;
            pack::pack_pair(&self.pending, column, &mut self.block[p * MB..(p + 1) * MB]);
        }
        self.pushed += 1;
    }
}
