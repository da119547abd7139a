//! The AVX512-bf16 kernel: `vdpbf16ps` (`_mm512_dpbf16_ps`, stable since Rust 1.89) adds,
//! in each of 16 f32 lanes (16 activations), the products of a pair of bf16 `k` values.
//!
//! Micro-kernel: [`MR`] rows of `W` × 32 activations (two [`Acts`] blocks) in 24
//! accumulator registers over the whole of `k`; per pair of `k` values, two loads of `X`
//! pairs, `MR` broadcasts of a `W` pair (read in place from the row-major weight) and
//! `2 · MR` products. Tasks ([`Tasks`]) run a few strips of `W` rows against up to 128
//! activations each.

use super::{Acts, MB, OutAt, OutPtr, Start, Tasks, Weight, write_block};
use std::arch::x86_64::*;

/// `W` rows per micro-kernel.
const MR: usize = 12;

/// `Y += W · Xᵀ` into `dst` (with the start).
///
/// # Safety
/// The CPU has AVX512F and AVX512-bf16; `dst` covers the output through `at`.
pub(super) unsafe fn matmul(
    dst: OutPtr,
    at: OutAt,
    w: Weight<'_>,
    x: &Acts,
    start: Start<'_>,
    parallel: bool,
) {
    let (m, n) = (x.m(), w.n);
    Tasks::new(n, m, MR, parallel).run(n, m, parallel, |jr, ir| {
        // SAFETY: per the caller; this task's blocks are written by this task only.
        unsafe { task(dst, at, w, x, start, jr, ir) };
    });
}

/// One task: strips `jr` of [`MR`] `W` rows × blocks `ir` of 32 activations.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn task(
    dst: OutPtr,
    at: OutAt,
    w: Weight<'_>,
    x: &Acts,
    start: Start<'_>,
    jr: std::ops::Range<usize>,
    ir: std::ops::Range<usize>,
) {
    let (m, n, k) = (x.m(), w.n, w.k);
    let pairs = k.div_ceil(2);
    let mut edge = super::Aligned::zeroed(0);
    let mut tile = [0f32; MR * 32];
    for strip in jr {
        let j0 = strip * MR;
        // The strip's W rows, in place when whole and of even length (a pair is read as one
        // 32-bit value), else copied with zero padding.
        let (wp, ldw) = if j0 + MR <= n && k % 2 == 0 {
            (w.bits[j0 * k..].as_ptr(), k)
        } else {
            w.copy_rows(j0, MR, 2 * pairs, &mut edge);
            (edge.as_u16_mut().as_ptr(), 2 * pairs)
        };
        for ib in ir.clone() {
            let i0 = ib * 32;
            let x0 = x.block(2 * ib).as_ptr().cast::<u16>();
            let x1 = x.block(2 * ib + 1).as_ptr().cast::<u16>();
            // SAFETY: wp addresses MR rows of 2 · pairs values at stride ldw; x0/x1 hold
            // ≥ pairs · 2 · MB values each; tile is MR × 32.
            unsafe { kernel(pairs, wp, ldw, x0, x1, tile.as_mut_ptr()) };
            // SAFETY: per the caller.
            unsafe {
                write_block(
                    dst,
                    at,
                    start,
                    &tile,
                    32,
                    (j0, MR.min(n - j0)),
                    (i0, 32.min(m - i0)),
                )
            };
        }
    }
}

/// `tile (MR × 32) = W[0..MR, ·] · [X0 X1]ᵀ` over `pairs` pairs of `k`.
///
/// # Safety
/// AVX512F + AVX512-bf16; the pointers address what is described.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn kernel(
    pairs: usize,
    w: *const u16,
    ldw: usize,
    x0: *const u16,
    x1: *const u16,
    tile: *mut f32,
) {
    // SAFETY: per the caller.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for p in 0..pairs {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(x0.add(p * 2 * MB).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(x1.add(p * 2 * MB).cast()));
            for (r, row) in acc.iter_mut().enumerate() {
                let pair = w.add(r * ldw + 2 * p).cast::<u32>().read_unaligned();
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
                row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                row[1] = _mm512_dpbf16_ps(row[1], av, b1);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            _mm512_storeu_ps(tile.add(r * 32), row[0]);
            _mm512_storeu_ps(tile.add(r * 32 + 16), row[1]);
        }
    }
}
