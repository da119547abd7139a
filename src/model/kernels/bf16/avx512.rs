//! The AVX512-bf16 kernel: `vdpbf16ps` (`_mm512_dpbf16_ps`, stable since Rust 1.89) adds,
//! in each of 16 f32 lanes (16 output columns), the products of a pair of bf16 `k` values.
//!
//! Blocking: the output is split into tasks of [`MC`] rows × a run of [`NR`]-column panels
//! (spread over the rayon threads; each task writes only its own block). Within a task, per
//! block of [`KC`] `k` values: the task's rows of `A` are rounded to bf16 into a buffer laid
//! out per [`MR`]-row strip (each `k` pair of the strip's rows side by side, the 32-bit
//! value the kernel broadcasts), then for each panel (its `KC × NR` slice of `B` stays in L1)
//! every strip runs the micro-kernel: `MR × NR` accumulators (24 registers) loaded from the
//! output, `KC / 2` steps of two `B` loads, `MR` broadcasts and `2·MR` `vdpbf16ps`, stored
//! back.

use super::{NR, PackedBf16, f32_to_bf16};
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Rows per micro-kernel strip.
const MR: usize = 12;
/// Rows per task (a whole number of strips).
const MC: usize = 8 * MR;
/// `k` values per block (even).
const KC: usize = 256;

/// A raw output pointer shared by tasks that write disjoint blocks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes its own rows × columns block only.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `out (m × n) += a (m × k) · b`, `a` rounded to bf16.
///
/// # Safety
/// The CPU must have AVX512F and AVX512-bf16.
pub(super) unsafe fn matmul_add(out: &mut [f32], a: &[f32], m: usize, b: &PackedBf16) {
    let n = b.n();
    let panels = n.div_ceil(NR);
    let row_blocks = m.div_ceil(MC);
    // Enough tasks for the threads: split the columns when there are few row blocks.
    let threads = rayon::current_num_threads().max(1);
    let chunks = (4 * threads).div_ceil(row_blocks).clamp(1, panels);
    let per_chunk = panels.div_ceil(chunks);
    let chunks = panels.div_ceil(per_chunk);
    let dst = OutPtr(out.as_mut_ptr());
    (0..row_blocks * chunks).into_par_iter().for_each(|task| {
        let (rb, ch) = (task / chunks, task % chunks);
        let rows = rb * MC..(rb * MC + MC).min(m);
        let panels = ch * per_chunk..(ch * per_chunk + per_chunk).min(panels);
        // SAFETY: the CPU has the features (caller); this task's block of `out` is written
        // by this task only, and lies inside `out` (m × n).
        unsafe { task_add(dst.get(), a, b, rows, panels) };
    });
}

/// One task: `out[rows, panels' columns] += a[rows] · b[panels]`.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn task_add(
    out: *mut f32,
    a: &[f32],
    b: &PackedBf16,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
) {
    let (n, k) = (b.n(), b.k());
    let strips = rows.len().div_ceil(MR);
    // Per strip: KC / 2 pairs × MR rows of packed pairs.
    let mut packed = vec![0u32; strips * (KC / 2) * MR];
    let mut tile = [0f32; MR * NR];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let pairs = kc.div_ceil(2);
        // Round this block of A to bf16, pairs of k side by side per strip row.
        for s in 0..strips {
            let strip = &mut packed[s * (KC / 2) * MR..][..pairs * MR];
            for r in 0..MR {
                let i = rows.start + s * MR + r;
                if i >= rows.end {
                    for p in 0..pairs {
                        strip[p * MR + r] = 0;
                    }
                    continue;
                }
                let row = &a[i * k + k0..i * k + k0 + kc];
                let mut pairs_iter = row.chunks_exact(2);
                for (p, two) in (&mut pairs_iter).enumerate() {
                    strip[p * MR + r] =
                        f32_to_bf16(two[0]) as u32 | (f32_to_bf16(two[1]) as u32) << 16;
                }
                if let [last] = pairs_iter.remainder() {
                    strip[(pairs - 1) * MR + r] = f32_to_bf16(*last) as u32;
                }
            }
        }
        for panel in panels.clone() {
            let bp = &b.panel(panel)[(k0 / 2) * 2 * NR..][..pairs * 2 * NR];
            let cols = NR.min(n - panel * NR);
            for s in 0..strips {
                let r0 = rows.start + s * MR;
                let nrows = MR.min(rows.end - r0);
                let ap = packed[s * (KC / 2) * MR..].as_ptr();
                // SAFETY: `out` is m × n (caller); the strip's rows and the panel's columns
                // lie inside it; a full tile is read and written in place, a partial one
                // through `tile`.
                unsafe {
                    let c = out.add(r0 * n + panel * NR);
                    if nrows == MR && cols == NR {
                        kernel(pairs, ap, bp.as_ptr(), c, n);
                    } else {
                        for r in 0..nrows {
                            std::ptr::copy_nonoverlapping(
                                c.add(r * n),
                                tile.as_mut_ptr().add(r * NR),
                                cols,
                            );
                        }
                        kernel(pairs, ap, bp.as_ptr(), tile.as_mut_ptr(), NR);
                        for r in 0..nrows {
                            std::ptr::copy_nonoverlapping(
                                tile.as_ptr().add(r * NR),
                                c.add(r * n),
                                cols,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `c (MR × NR at row stride ldc) += a · b` over `pairs` pairs of `k`: `a` holds `MR`
/// packed pairs per step, `b` `2 · NR` bf16 per step.
///
/// # Safety
/// AVX512F + AVX512-bf16; `a`, `b` and `c` address what is described.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn kernel(pairs: usize, a: *const u32, b: *const u16, c: *mut f32, ldc: usize) {
    // SAFETY: per the caller.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for (r, row) in acc.iter_mut().enumerate() {
            row[0] = _mm512_loadu_ps(c.add(r * ldc));
            row[1] = _mm512_loadu_ps(c.add(r * ldc + 16));
        }
        for p in 0..pairs {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * 2 * NR).cast()));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(p * 2 * NR + NR).cast()));
            let ap = a.add(p * MR);
            for (r, row) in acc.iter_mut().enumerate() {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(r) as i32));
                row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                row[1] = _mm512_dpbf16_ps(row[1], av, b1);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(r * ldc), row[0]);
            _mm512_storeu_ps(c.add(r * ldc + 16), row[1]);
        }
    }
}
