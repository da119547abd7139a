//! 3×3 convolutions (stride 1, "same" padding) on AMX without patches (implicit GEMM): the
//! input is rounded once into a padded layout whose rows are pairs of channels —
//! `P[y][c / 2][x]`, each value the two channels' bf16 side by side — so that for a kernel
//! offset `(ky, kx)` and 32 channels, the tile of 16 output pixels of one row is 16 rows of
//! 64 contiguous bytes at a fixed stride: loaded straight from `P`. The weight comes by
//! offset, `(o, ky, kx, c)` (laid out once, when the layer is built), so that `k` runs over
//! 32 channels at one offset per step. Output blocks of 32 channels × 32 pixels accumulate in four tiles over all
//! `9 · c / 32` steps and are stored straight into the `(o, pixels)` output (or through
//! [`write_block`] at the edges).

use super::amx::{A64, TileUse, Tiles, begin, finish, fold_bias, row_bias_tiles, tile_aligned};
use super::{Aligned, OutAt, OutPtr, Start};
use rayon::prelude::*;
use std::arch::asm;

/// Whether [`conv3x3`] runs this convolution: 3×3, stride 1, padding 1, input and output
/// channels multiples of 32, output rows a multiple of 16 pixels.
pub(crate) fn applies(
    (o, c): (usize, usize),
    (kh, kw): (usize, usize),
    stride: usize,
    padding: usize,
    w: usize,
) -> bool {
    kh == 3
        && kw == 3
        && stride == 1
        && padding == 1
        && o.is_multiple_of(32)
        && c.is_multiple_of(32)
        && w.is_multiple_of(16)
}

/// The most bytes of one image's input copies ([`shifted_pairs`], three of them) this
/// convolution takes; larger images (a VAE decoder's full-resolution layers: 3 × 67 MB at
/// 512×512 × 128 channels) go to the patch path, which rounds 16 MB at a time.
pub(crate) const MAX_INPUT_COPIES: usize = 3 * (16 << 20);

/// Whether one image of `c` channels, `h × w`, fits [`MAX_INPUT_COPIES`].
pub(crate) fn fits(c: usize, h: usize, w: usize) -> bool {
    3 * (h + 2) * w * c * 2 <= MAX_INPUT_COPIES
}

/// One image's input in the pair layout, three times: copy `kx` holds at `[y][q][x]` the
/// pair of channels `2q, 2q + 1` at row `y − 1`, column `x + kx − 1` (zero outside the
/// image), `(h + 2) × c/2 × w` pairs each. So the 16 pixels of a tile at any kernel offset
/// start on a cache line (`x` a multiple of 16, rows `4w` bytes apart, the buffer aligned):
/// a tile row that straddles two lines loads ~6× slower.
fn shifted_pairs(src: &[f32], c: usize, h: usize, w: usize) -> Aligned {
    let (hp, cp) = (h + 2, c / 2);
    let plane = hp * cp * w;
    let mut p = Aligned::zeroed(3 * plane);
    let (left, rest) = p.split_at_mut(plane);
    let (mid, right) = rest.split_at_mut(plane);
    mid.par_chunks_mut(cp * w)
        .zip(left.par_chunks_mut(cp * w))
        .zip(right.par_chunks_mut(cp * w))
        .enumerate()
        .for_each(|(y, ((rows, lrows), rrows))| {
            if y == 0 || y > h {
                return;
            }
            for (q, ((row, lrow), rrow)) in rows
                .chunks_exact_mut(w)
                .zip(lrows.chunks_exact_mut(w))
                .zip(rrows.chunks_exact_mut(w))
                .enumerate()
            {
                let a = &src[((2 * q) * h + y - 1) * w..][..w];
                let b = &src[((2 * q + 1) * h + y - 1) * w..][..w];
                // w is a multiple of 16 (`applies`): 16 pixels' pairs at a time.
                for ((d, x0), x1) in row
                    .chunks_exact_mut(16)
                    .zip(a.chunks_exact(16))
                    .zip(b.chunks_exact(16))
                {
                    let (x0, x1) = (x0.try_into().expect("16"), x1.try_into().expect("16"));
                    super::pack::pack_pair(x0, x1, d);
                }
                // Offset 0 reads one pixel to the left, offset 2 one to the right.
                lrow[1..].copy_from_slice(&row[..w - 1]);
                rrow[..w - 1].copy_from_slice(&row[1..]);
            }
        });
    p
}

/// `out (b, o, h·w) = conv3x3(x) + start` for `x` `(b, c, h, w)` f32 and the bf16 weight
/// by offset, `(o, 3, 3, c)` (raw bits).
///
/// # Safety
/// The CPU has AMX-BF16 with the permission granted; [`applies`] holds; `out` holds
/// `b · o · h · w` values (the residual in place when `start.accumulate`).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn conv3x3(
    out: OutPtr,
    x: &[f32],
    (b, c, h, w): (usize, usize, usize, usize),
    weight: &[u16],
    o: usize,
    start: Start<'_>,
) {
    let pixels = h * w;
    // SAFETY: the output holds the b images (caller).
    let start = unsafe { fold_bias(out, OutAt::images(o, pixels), start, (o, b * pixels)) };
    let wt = weight;
    let k = 9 * c;
    let cp = c / 2;
    let plane = (h + 2) * cp * w;
    let jblocks = o.div_ceil(32);
    let iblocks = pixels.div_ceil(32);
    for img in 0..b {
        let p = shifted_pairs(&x[img * c * pixels..(img + 1) * c * pixels], c, h, w);
        let dst = OutPtr(out.get().wrapping_add(img * o * pixels));
        let at = OutAt::channels(pixels);
        // Tasks: runs of up to 16 pixel blocks by runs of W row blocks, enough of them for
        // the threads (a small image splits its W rows, so each W block still serves all
        // of its pixel blocks).
        let threads = rayon::current_num_threads().max(1);
        let per = iblocks.min(16);
        let ti = iblocks.div_ceil(per);
        let tj = (4 * threads).div_ceil(ti).clamp(1, jblocks);
        let jc = jblocks.div_ceil(tj);
        (0..ti * tj).into_par_iter().for_each(|task| {
            let (t, tjx) = (task % ti, task / ti);
            let mut tile = A64([0f32; 32 * 32]);
            let mut bias_tile = A64([0f32; 32 * 16]);
            // This task's W rows, copied to a cache-line-aligned buffer per row block.
            let mut wrows = Aligned::zeroed(0);
            // SAFETY: AMX present (caller).
            let _tiles = unsafe { TileUse::configure() };
            for jb in tjx * jc..((tjx + 1) * jc).min(jblocks) {
                let j0 = jb * 32;
                let bias = start
                    .bias
                    .map(|bias| row_bias_tiles(&mut bias_tile.0, bias, j0));
                // W rows j0 … j0 + 31 (o is a multiple of 32; 2k bytes a row, a multiple
                // of 64 as c is of 32).
                // In place when on a cache line (a layer's weight is laid out so), else
                // copied to an aligned buffer.
                let (w0, w1) = if (wt.as_ptr() as usize).is_multiple_of(64) {
                    (wt[j0 * k..].as_ptr(), wt[(j0 + 16) * k..].as_ptr())
                } else {
                    super::Weight::new(wt, o, k).copy_rows(j0, 32, k, &mut wrows);
                    let wb = wrows.as_u16_mut();
                    (wb.as_ptr(), wb[16 * k..].as_ptr())
                };
                for ib in t * per..((t + 1) * per).min(iblocks) {
                    let i0 = ib * 32;
                    let whole = i0 + 32 <= pixels;
                    // The two 16-pixel tiles of the block: each within one output row.
                    let px = |i: usize| {
                        let i = i.min(pixels - 16);
                        (i / w, i % w)
                    };
                    let (ya, xa) = px(i0);
                    let (yb, xb) = px(i0 + 16);
                    let base = dst.get().wrapping_add(at.index(j0, i0));
                    let direct =
                        (whole && tile_aligned(base, at.row)).then(|| Tiles::block(base, at.row));
                    // SAFETY: tiles configured; every load below reads inside `p`, `wt`,
                    // the bias tile or the output block, every store the output block or
                    // `tile`.
                    unsafe {
                        begin(direct, start.accumulate, bias);
                        for s in 0..9 {
                            let (ky, kx) = (s / 3, s % 3);
                            for cc in 0..c / 32 {
                                let q = cc * 16;
                                let shifted = p.as_ptr().add(kx * plane);
                                let xa_p = shifted.add(((ya + ky) * cp + q) * w + xa);
                                let xb_p = shifted.add(((yb + ky) * cp + q) * w + xb);
                                let kk = s * c + cc * 32;
                                step(
                                    w0.add(kk),
                                    w1.add(kk),
                                    k * 2,
                                    xa_p.cast(),
                                    xb_p.cast(),
                                    w * 4,
                                );
                            }
                        }
                        // The last block of an image of 16·(odd) pixels: its second
                        // tile repeated the first; only 16 are written.
                        finish(
                            direct,
                            &mut tile.0,
                            (dst, at),
                            start.accumulate,
                            (j0, 32),
                            (i0, 32.min(pixels - i0)),
                        );
                    }
                }
            }
        });
    }
}

/// One step of 32 `k` values: two `W` tiles (rows 0–15 at `w0`, 16–31 at `w1`, `ldw`
/// bytes apart) by two `X` tiles (16 pixel pairs rows at `xa`, `xb`, `ldx` bytes apart)
/// into the four accumulators.
///
/// # Safety
/// Tiles configured; the addresses hold 16 rows of 64 bytes at their strides.
#[inline]
unsafe fn step(
    w0: *const u16,
    w1: *const u16,
    ldw: usize,
    xa: *const u16,
    xb: *const u16,
    ldx: usize,
) {
    // SAFETY: per the caller.
    unsafe {
        asm!(
            "tileloadd tmm4, [{w0} + {ldw}*1]",
            "tileloadd tmm6, [{xa} + {ldx}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{xb} + {ldx}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{w1} + {ldw}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            w0 = in(reg) w0,
            w1 = in(reg) w1,
            ldw = in(reg) ldw,
            xa = in(reg) xa,
            xb = in(reg) xb,
            ldx = in(reg) ldx,
            options(nostack, readonly),
        );
    }
}
