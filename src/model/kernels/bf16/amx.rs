//! The AMX kernel: `tdpbf16ps` multiplies a tile of 16 rows × 32 bf16 of `W` by a tile of
//! 16 pairs × 16 activations (the [`Acts`] layout, one tile per 1 KiB of a block) and adds
//! into a 16 × 16 f32 tile. A 32 × 32 block of `Y` lives in four accumulator tiles over the
//! whole of `k`; per 32 values of `k`: two `W` tiles, two `X` tiles, four products. Then the
//! tiles are stored to a scratch block and written out with the start ([`write_block`]).
//!
//! The AMX intrinsics are unstable in Rust; the instructions are written with `asm!`
//! (stable). The tile registers are named in the templates and never allocated by the
//! compiler.

use super::{Acts, KB, OutAt, OutPtr, Start, Tasks, Weight, write_block};
use rayon::prelude::*;
use std::arch::asm;
use std::arch::x86_64::__cpuid_count;

/// `W` rows per block (two tiles).
const JB: usize = 32;

/// Whether this CPU has AMX tiles with bf16 and Linux lets this process use them (asked
/// once: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, then confirmed).
pub(super) fn available() -> bool {
    // CPUID leaf 7 (when the CPU has it): EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these codes reads and writes only the u64 passed.
    unsafe {
        if libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) != 0
        {
            tracing::info!("AMX: Linux refused the tile data permission; not using AMX");
            return false;
        }
        let mut granted: u64 = 0;
        if libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_PERM,
            &mut granted as *mut u64,
        ) != 0
        {
            return false;
        }
        granted & (1 << XFEATURE_XTILEDATA) != 0
    }
}

/// The tile configuration: palette 1, all eight tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
pub(super) struct TileConfig(pub(super) [u8; 64]);

impl TileConfig {
    pub(super) fn full() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        TileConfig(c)
    }
}

/// `Y += W · Xᵀ` into `dst` (with the start), over tasks of `W` row blocks × activation
/// blocks. A bias with a residual is added to the output first, so that every block starts
/// from what is in place.
///
/// # Safety
/// The CPU has AMX-BF16 and the permission was granted ([`available`]); `dst` covers the
/// output through `at`.
pub(super) unsafe fn matmul(
    dst: OutPtr,
    at: OutAt,
    w: Weight<'_>,
    x: &Acts,
    start: Start<'_>,
    parallel: bool,
) {
    let (m, n) = (x.m(), w.n);
    if let (Some(bias), true) = (start.col_bias, start.accumulate) {
        for j in 0..n {
            for (i, b) in bias.iter().enumerate() {
                // SAFETY: (j, i) lies in the output (caller).
                unsafe { *dst.get().add(at.index(j, i)) += b };
            }
        }
    }
    let col_bias = start.col_bias.filter(|_| !start.accumulate);
    let start = match (start.bias, start.accumulate) {
        (Some(bias), true) => {
            // In the output's own order (a linear layer's rows hold every j).
            if at.row == 1 && at.group == 0 {
                for i in 0..m {
                    // SAFETY: row i's n values lie in the output (caller).
                    let row =
                        unsafe { std::slice::from_raw_parts_mut(dst.get().add(i * at.col), n) };
                    row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
                }
            } else {
                for (j, b) in bias.iter().enumerate() {
                    for i in 0..m {
                        // SAFETY: (j, i) lies in the output (caller).
                        unsafe { *dst.get().add(at.index(j, i)) += b };
                    }
                }
            }
            Start {
                bias: None,
                accumulate: true,
                col_bias,
            }
        }
        _ => Start { col_bias, ..start },
    };
    let tasks = Tasks::new(n, m, JB, parallel);
    let run = |t: usize| {
        let (jr, ir) = tasks.ranges(t, n, m);
        // SAFETY: per the caller; this task's blocks are written by this task only.
        unsafe { task(dst, at, w, x, start, jr, ir) };
    };
    if parallel {
        (0..tasks.tj * tasks.ti).into_par_iter().for_each(run);
    } else {
        (0..tasks.tj * tasks.ti).for_each(run);
    }
}

/// Where the four accumulator tiles of a 32 × 32 block are loaded from or stored to: tiles
/// 0 and 1 (rows 0–15, columns 0–15 and 16–31), 2 and 3 (rows 16–31), and the row stride in
/// bytes.
#[derive(Clone, Copy)]
pub(super) struct Tiles {
    pub(super) at: [*mut f32; 4],
    pub(super) stride: usize,
}

impl Tiles {
    /// A 32 × 32 block of f32 at `base` with `row` values between rows.
    pub(super) fn block(base: *mut f32, row: usize) -> Tiles {
        // SAFETY (of the offsets): inside the block the caller describes.
        Tiles {
            at: [
                base,
                base.wrapping_add(16),
                base.wrapping_add(16 * row),
                base.wrapping_add(16 * row + 16),
            ],
            stride: row * 4,
        }
    }
}

/// One task: blocks `jr` of `W` rows (of [`JB`]) × blocks `ir` of 32 activations. A block
/// wholly inside an output with unit column stride (a convolution's, the scores of
/// attention) is accumulated in place: its tiles are loaded from the output (a residual),
/// from the bias or zeroed, and stored back; any other block goes through a scratch block
/// and [`write_block`].
///
/// # Safety
/// As [`matmul`]; a bias comes without a residual ([`matmul`] folds them), and a row bias
/// without a column bias.
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
    let kp = x.kp();
    let steps = kp / KB;
    let mut edge = Vec::new();
    let mut tile = [0f32; JB * 32];
    // Each row's bias across 16 columns: the start of tiles 0 and 1 (rows 0–15) and 2 and 3.
    let mut bias_tile = [0f32; JB * 16];
    let mut col_tile = [0f32; 32];
    let cfg = TileConfig::full();
    // SAFETY: the CPU has AMX (caller); the configuration is a valid palette-1 layout.
    unsafe { asm!("ldtilecfg [{0}]", in(reg) cfg.0.as_ptr(), options(nostack)) };
    for jb in jr {
        let j0 = jb * JB;
        // The block's W rows, in place when whole, else copied with zero padding.
        let (wp, ldw) = if j0 + JB <= n && k == kp {
            (w.bits[j0 * k..].as_ptr(), k)
        } else {
            w.copy_rows(j0, JB, kp, &mut edge);
            (edge.as_ptr(), kp)
        };
        let bias_start = start.bias.map(|bias| {
            for (r, row) in bias_tile.chunks_exact_mut(16).enumerate() {
                row.fill(bias.get(j0 + r).copied().unwrap_or(0.0));
            }
            let base = bias_tile.as_mut_ptr();
            Tiles {
                at: [base, base, base.wrapping_add(256), base.wrapping_add(256)],
                stride: 64,
            }
        });
        for ib in ir.clone() {
            let i0 = ib * 32;
            // A bias per column: every row of a tile the same 16 values (stride 0).
            let col_start = start.col_bias.map(|bias| {
                for (c, v) in col_tile.iter_mut().enumerate() {
                    *v = bias.get(i0 + c).copied().unwrap_or(0.0);
                }
                let base = col_tile.as_mut_ptr();
                Tiles {
                    at: [base, base.wrapping_add(16), base, base.wrapping_add(16)],
                    stride: 0,
                }
            });
            let x0 = x.block(2 * ib).as_ptr().cast::<u16>();
            let x1 = x.block(2 * ib + 1).as_ptr().cast::<u16>();
            let whole = j0 + JB <= n && i0 + 32 <= m;
            let one_image = at.group == 0 || i0 / at.group == (i0 + 31) / at.group;
            let direct = (whole && at.col == 1 && one_image)
                .then(|| Tiles::block(dst.get().wrapping_add(at.index(j0, i0)), at.row));
            // SAFETY: the tiles are configured; the loads and stores address the block in
            // the output (direct: whole and inside it, per the caller), the bias tile or the
            // scratch block; wp addresses JB rows of ≥ kp values at stride ldw; x0/x1 hold
            // kp · MB values each.
            unsafe {
                match (direct, start.accumulate, bias_start.or(col_start)) {
                    (Some(d), true, _) => load(d),
                    (_, _, Some(b)) => load(b),
                    _ => zero(),
                }
                run(wp, ldw * 2, x0, x1, steps);
                match direct {
                    Some(d) => store(d),
                    None => {
                        store(Tiles::block(tile.as_mut_ptr(), 32));
                        write_block(
                            dst,
                            at,
                            Start {
                                bias: None,
                                accumulate: start.accumulate,
                                col_bias: None,
                            },
                            &tile,
                            32,
                            (j0, JB.min(n - j0)),
                            (i0, 32.min(m - i0)),
                        );
                    }
                }
            }
        }
    }
    // SAFETY: releases this thread's tile state.
    unsafe { asm!("tilerelease", options(nostack)) };
}

/// Zero the four accumulator tiles.
///
/// # Safety
/// Tiles configured ([`TileConfig::full`]).
#[inline]
pub(super) unsafe fn zero() {
    // SAFETY: per the caller.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack)
        )
    };
}

/// Load the four accumulator tiles (16 × 16 f32 each).
///
/// # Safety
/// Tiles configured; each address has 16 rows of 64 bytes at the stride.
#[inline]
pub(super) unsafe fn load(t: Tiles) {
    // SAFETY: per the caller.
    unsafe {
        asm!(
            "tileloadd tmm0, [{a} + {s}*1]",
            "tileloadd tmm1, [{b} + {s}*1]",
            "tileloadd tmm2, [{c} + {s}*1]",
            "tileloadd tmm3, [{d} + {s}*1]",
            a = in(reg) t.at[0],
            b = in(reg) t.at[1],
            c = in(reg) t.at[2],
            d = in(reg) t.at[3],
            s = in(reg) t.stride,
            options(nostack, readonly)
        )
    };
}

/// Store the four accumulator tiles.
///
/// # Safety
/// As [`load`], and the addresses are writable.
#[inline]
pub(super) unsafe fn store(t: Tiles) {
    // SAFETY: per the caller.
    unsafe {
        asm!(
            "tilestored [{a} + {s}*1], tmm0",
            "tilestored [{b} + {s}*1], tmm1",
            "tilestored [{c} + {s}*1], tmm2",
            "tilestored [{d} + {s}*1], tmm3",
            a = in(reg) t.at[0],
            b = in(reg) t.at[1],
            c = in(reg) t.at[2],
            d = in(reg) t.at[3],
            s = in(reg) t.stride,
            options(nostack)
        )
    };
}

/// Add `W · [X0 X1]ᵀ` over `steps` steps of 32 `k` values to the accumulator tiles.
///
/// # Safety
/// Tiles configured; `w` addresses 32 rows at `ldw_bytes` apart of `32 · steps` bf16 each;
/// `x0`, `x1` `steps` KiB each.
#[inline]
unsafe fn run(w: *const u16, ldw_bytes: usize, x0: *const u16, x1: *const u16, steps: usize) {
    debug_assert!(steps > 0);
    // SAFETY: per the caller.
    unsafe {
        asm!(
            // Loads interleaved with the products that free their tiles (tile registers
            // are not renamed: a load waits for the last product reading its tile).
            "2:",
            "tileloadd tmm4, [{w} + {ldw}*1]",
            "tileloadd tmm6, [{x0} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{x1} + {s64}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{w2} + {ldw}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {w}, 64",
            "add {w2}, 64",
            "add {x0}, 1024",
            "add {x1}, 1024",
            "dec {steps}",
            "jnz 2b",
            w = inout(reg) w => _,
            w2 = inout(reg) w.byte_add(16 * ldw_bytes) => _,
            ldw = in(reg) ldw_bytes,
            x0 = inout(reg) x0 => _,
            x1 = inout(reg) x1 => _,
            s64 = in(reg) 64usize,
            steps = inout(reg) steps => _,
            options(nostack, readonly),
        );
    }
}
