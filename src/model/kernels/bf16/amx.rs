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
struct TileConfig([u8; 64]);

impl TileConfig {
    fn full() -> TileConfig {
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
/// blocks.
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

/// One task: blocks `jr` of `W` rows (of [`JB`]) × blocks `ir` of 32 activations.
///
/// # Safety
/// As [`matmul`].
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
        for ib in ir.clone() {
            let i0 = ib * 32;
            let x0 = x.block(2 * ib).as_ptr().cast::<u16>();
            let x1 = x.block(2 * ib + 1).as_ptr().cast::<u16>();
            // SAFETY: wp addresses JB rows of ≥ kp values at stride ldw; x0/x1 hold kp · MB
            // values each; tile holds JB × 32 f32.
            unsafe { block(wp, ldw * 2, x0, x1, steps, tile.as_mut_ptr()) };
            // SAFETY: per the caller.
            unsafe {
                write_block(
                    dst,
                    at,
                    start,
                    &tile,
                    32,
                    (j0, JB.min(n - j0)),
                    (i0, 32.min(m - i0)),
                )
            };
        }
    }
    // SAFETY: releases this thread's tile state.
    unsafe { asm!("tilerelease", options(nostack)) };
}

/// One 32 × 32 block over `steps` steps of 32 `k` values: `tile[r · 32 + c] = Σ W[r, ·] X[c, ·]`.
///
/// # Safety
/// Tiles configured ([`TileConfig::full`]); `w` addresses 32 rows at `ldw_bytes` apart of
/// `32 · steps` bf16 each; `x0`, `x1` `steps` KiB each; `tile` 32 × 32 f32.
#[inline]
unsafe fn block(
    w: *const u16,
    ldw_bytes: usize,
    x0: *const u16,
    x1: *const u16,
    steps: usize,
    tile: *mut f32,
) {
    debug_assert!(steps > 0);
    // SAFETY: per the caller.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{w} + {ldw}*1]",
            "tileloadd tmm5, [{w2} + {ldw}*1]",
            "tileloadd tmm6, [{x0} + {s64}*1]",
            "tileloadd tmm7, [{x1} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {w}, 64",
            "add {w2}, 64",
            "add {x0}, 1024",
            "add {x1}, 1024",
            "dec {steps}",
            "jnz 2b",
            "tilestored [{t} + {s128}*1], tmm0",
            "add {t}, 64",
            "tilestored [{t} + {s128}*1], tmm1",
            "add {t}, 1984",
            "tilestored [{t} + {s128}*1], tmm2",
            "add {t}, 64",
            "tilestored [{t} + {s128}*1], tmm3",
            w = inout(reg) w => _,
            w2 = inout(reg) w.byte_add(16 * ldw_bytes) => _,
            ldw = in(reg) ldw_bytes,
            x0 = inout(reg) x0 => _,
            x1 = inout(reg) x1 => _,
            s64 = in(reg) 64usize,
            steps = inout(reg) steps => _,
            t = inout(reg) tile => _,
            s128 = in(reg) 128usize,
            options(nostack),
        );
    }
}
