//! 3×3 convolutions (stride 1, "same" padding) on AMX without patches (implicit GEMM): the
//! input is rounded once into a padded layout whose rows are pairs of channels —
//! `P[y][c / 2][x]`, each value the two channels' bf16 side by side — so that for a kernel
//! offset `(ky, kx)` and 32 channels, the tile of 16 output pixels of one row is 16 rows of
//! 64 contiguous bytes at a fixed stride: loaded straight from `P`. The weight comes by
//! offset, `(o, ky, kx, c)` (laid out once, when the layer is built), so that `k` runs over
//! 32 channels at one offset per step. Output blocks of 32 channels × 32 pixels accumulate in four tiles over all
//! `9 · c / 32` steps and are stored straight into the `(o, pixels)` output (or through
//! [`write_block`] at the edges).

use super::amx::{
    A64, Block, TileUse, Tiles, begin, finish, fold_bias, row_bias_tiles, tile_aligned,
};
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

/// The most bytes of input copies ([`shifted_pairs`], three of them) a band of output rows
/// takes: an image whose copies are larger (a VAE decoder's full-resolution layers: 3 ×
/// 67 MB at 512×512 × 128 channels) is done a band of rows at a time, each band's copies
/// built into the same buffer.
pub(crate) const BAND_BYTES: usize = 4 << 20;

/// Output rows per band for an image of `c` channels, `h × w`, with at most `bytes` of
/// copies per band (at least one row).
fn band_rows(c: usize, h: usize, w: usize, bytes: usize) -> usize {
    let per_row = 3 * (c / 2) * w * 4;
    (bytes / per_row).saturating_sub(2).clamp(1, h)
}

/// Input rows `y0 − 1 … y0 + rows` of one image in the pair layout, three times, into `p`
/// (`3 × (rows + 2) × c/2 × w` pairs): copy `kx` holds at `[r][q][x]` the pair of channels
/// `2q, 2q + 1` at image row `y0 + r − 1`, column `x + kx − 1` (zero outside the image).
/// So the 16 pixels of a tile at any kernel offset start on a cache line (`x` a multiple of
/// 16, rows `4w` bytes apart, the buffer aligned): a tile row that straddles two lines
/// loads ~6× slower. The columns a shift leaves empty are never written, so a buffer that
/// starts zeroed keeps them zero from band to band.
fn shifted_pairs(
    p: &mut Aligned,
    src: &[f32],
    (c, h, w): (usize, usize, usize),
    y0: usize,
    rows: usize,
) {
    let cp = c / 2;
    let plane = p.len() / 3;
    let (left, rest) = p.split_at_mut(plane);
    let (mid, right) = rest.split_at_mut(plane);
    mid.par_chunks_mut(cp * w)
        .zip(left.par_chunks_mut(cp * w))
        .zip(right.par_chunks_mut(cp * w))
        .take(rows + 2)
        .enumerate()
        .for_each(|(r, ((rows, lrows), rrows))| {
            let y = (y0 + r).wrapping_sub(1);
            if y >= h {
                rows.fill(0);
                lrows.fill(0);
                rrows.fill(0);
                return;
            }
            for (q, ((row, lrow), rrow)) in rows
                .chunks_exact_mut(w)
                .zip(lrows.chunks_exact_mut(w))
                .zip(rrows.chunks_exact_mut(w))
                .enumerate()
            {
                let a = &src[((2 * q) * h + y) * w..][..w];
                let b = &src[((2 * q + 1) * h + y) * w..][..w];
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
}

/// `out (b, o, h·w) = conv3x3(x) + start` for `x` `(b, c, h, w)` f32 and the bf16 weight
/// by offset, `(o, 3, 3, c)` (raw bits).
///
/// # Safety
/// The CPU has AMX-BF16 with the permission granted; [`applies`] holds; `out` holds
/// `b · o · h · w` values (the residual in place when `start.accumulate`).
pub(crate) unsafe fn conv3x3(
    out: OutPtr,
    x: &[f32],
    dims: (usize, usize, usize, usize),
    weight: &[u16],
    o: usize,
    start: Start<'_>,
) {
    // SAFETY: per the caller.
    unsafe { conv3x3_banded(out, x, dims, weight, o, start, BAND_BYTES) }
}

/// [`conv3x3`] with bands of at most `band_bytes` of input copies.
///
/// # Safety
/// As [`conv3x3`].
pub(crate) unsafe fn conv3x3_banded(
    out: OutPtr,
    x: &[f32],
    (b, c, h, w): (usize, usize, usize, usize),
    weight: &[u16],
    o: usize,
    start: Start<'_>,
    band_bytes: usize,
) {
    let pixels = h * w;
    // SAFETY: the output holds the b images (caller).
    let start = unsafe { fold_bias(out, OutAt::images(o, pixels), start, (o, b * pixels)) };
    let wt = weight;
    let k = 9 * c;
    let cp = c / 2;
    let rows = band_rows(c, h, w, band_bytes);
    let plane = (rows + 2) * cp * w;
    let jblocks = o.div_ceil(32);
    let mut p = Aligned::zeroed(3 * plane);
    for img in 0..b {
        let src = &x[img * c * pixels..(img + 1) * c * pixels];
        let dst = OutPtr(out.get().wrapping_add(img * o * pixels));
        let at = OutAt::channels(pixels);
        for y0 in (0..h).step_by(rows) {
            let band = rows.min(h - y0);
            shifted_pairs(&mut p, src, (c, h, w), y0, band);
            let p = &p;
            // The band's pixels, `first .. end` of the image.
            let (first, end) = (y0 * w, (y0 + band) * w);
            let iblocks = (end - first).div_ceil(32);
            // Tasks: runs of up to 16 pixel blocks by runs of W row blocks, enough of them
            // for the threads (a small band splits its W rows, so each W block still
            // serves all of its pixel blocks).
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
                    // W rows j0 … j0 + 31 (o is a multiple of 32; 2k bytes a row, a
                    // multiple of 64 as c is of 32). In place when on a cache line (a
                    // layer's weight is laid out so), else copied to an aligned buffer.
                    let (w0, w1) = if (wt.as_ptr() as usize).is_multiple_of(64) {
                        (wt[j0 * k..].as_ptr(), wt[(j0 + 16) * k..].as_ptr())
                    } else {
                        super::Weight::new(wt, o, k).copy_rows(j0, 32, k, &mut wrows);
                        let wb = wrows.as_u16_mut();
                        (wb.as_ptr(), wb[16 * k..].as_ptr())
                    };
                    for ib in t * per..((t + 1) * per).min(iblocks) {
                        let i0 = first + ib * 32;
                        let whole = i0 + 32 <= end;
                        // The two 16-pixel tiles of the block: each within one output row
                        // of the band (the band's last block of 16·(odd) pixels repeats
                        // its first tile).
                        let px = |i: usize| {
                            let i = i.min(end - 16);
                            (i / w - y0, i % w)
                        };
                        let (ya, xa) = px(i0);
                        let (yb, xb) = px(i0 + 16);
                        let base = dst.get().wrapping_add(at.index(j0, i0));
                        let direct = (whole && tile_aligned(base, at.row))
                            .then(|| Tiles::block(base, at.row));
                        // SAFETY: tiles configured; every load below reads inside `p`,
                        // `wt`, the bias tile or the output block, every store the output
                        // block or `tile`.
                        unsafe {
                            // Only the block's pixels inside the band are read and written.
                            let block = Block {
                                dst,
                                at,
                                j: (j0, 32),
                                i: (i0, 32.min(end - i0)),
                            };
                            begin(direct, start.accumulate, bias, &mut tile.0, block);
                            for s in 0..9 {
                                let (ky, kx) = (s / 3, s % 3);
                                let shifted = p.as_ptr().add(kx * plane);
                                for cc in 0..c / 32 {
                                    let q = cc * 16;
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
                            finish(direct, &mut tile.0, block);
                        }
                    }
                }
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Bands of any height give the very values of the whole image (each output block sums
    /// the same products in the same order, from the same start) over two images whose
    /// bands end inside a pixel block, with a bias, and with a residual too.
    #[test]
    fn banded_convolutions_equal_the_whole_image() {
        if super::super::current_path() != super::super::Bf16Path::Amx {
            eprintln!("no AMX on this CPU: nothing to compare");
            return;
        }
        let (b, c, h, w, o) = (2, 64, 5, 16, 64);
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let x: Vec<f32> = (0..b * c * h * w).map(|_| next()).collect();
        let wt: Vec<u16> = (0..o * 9 * c)
            .map(|_| super::super::f32_to_bf16(next() * 0.2))
            .collect();
        let bias: Vec<f32> = (0..o).map(|_| next()).collect();
        let residual: Vec<f32> = (0..b * o * h * w).map(|_| next()).collect();
        let run = |band_bytes: usize, accumulate: bool| {
            let mut out = if accumulate {
                residual.clone()
            } else {
                vec![0.0; residual.len()]
            };
            let start = Start {
                bias: Some(&bias),
                accumulate,
                col_bias: None,
            };
            // SAFETY: AMX (checked above); applies; out holds b · o · h · w values.
            unsafe {
                conv3x3_banded(
                    OutPtr(out.as_mut_ptr()),
                    &x,
                    (b, c, h, w),
                    &wt,
                    o,
                    start,
                    band_bytes,
                )
            };
            out
        };
        let per_row = 3 * (c / 2) * w * 4;
        for accumulate in [false, true] {
            let whole = run(usize::MAX / 4, accumulate);
            assert!(whole.iter().any(|v| *v != 0.0));
            for rows in 1..=4 {
                assert_eq!(band_rows(c, h, w, (rows + 2) * per_row), rows);
                let got = run((rows + 2) * per_row, accumulate);
                let worst = got
                    .iter()
                    .zip(&whole)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst == 0.0,
                    "bands of {rows} rows, residual {accumulate}: {worst}"
                );
            }
        }
    }
}
