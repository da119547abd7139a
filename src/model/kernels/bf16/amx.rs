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

/// This thread's tiles, configured (palette 1, all eight tiles 16 rows × 64 bytes) until
/// dropped, which releases them.
pub(super) struct TileUse(());

impl TileUse {
    /// Configure this thread's tiles.
    ///
    /// # Safety
    /// The CPU has AMX and the permission was granted ([`available`]).
    pub(super) unsafe fn configure() -> TileUse {
        #[repr(C, align(64))]
        struct Config([u8; 64]);
        let mut c = Config([0; 64]);
        c.0[0] = 1;
        for t in 0..8 {
            c.0[16 + 2 * t] = 64;
            c.0[48 + t] = 16;
        }
        // SAFETY: AMX present (caller); a valid palette-1 configuration.
        unsafe { asm!("ldtilecfg [{0}]", in(reg) c.0.as_ptr(), options(nostack)) };
        TileUse(())
    }
}

impl Drop for TileUse {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by this thread (`configure`).
        unsafe { asm!("tilerelease", options(nostack)) };
    }
}

/// With a residual (`accumulate`), add the biases to the output first, so that every block
/// starts from what is in place; the start that is left (no bias with a residual).
///
/// # Safety
/// `dst` covers the `n × m` output through `at`, and no other thread touches it meanwhile.
pub(super) unsafe fn fold_bias<'a>(
    dst: OutPtr,
    at: OutAt,
    start: Start<'a>,
    (n, m): (usize, usize),
) -> Start<'a> {
    if !start.accumulate || (start.bias.is_none() && start.col_bias.is_none()) {
        return start;
    }
    // SAFETY (of every slice): a run of values the output holds at unit stride (caller).
    let run = |j: usize, i: usize, len: usize| unsafe {
        std::slice::from_raw_parts_mut(dst.get().add(at.index(j, i)), len)
    };
    // Each bias in its own pass (the column bias first), each a plain add over a run.
    let add_col =
        |row: &mut [f32], bias: &[f32]| row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    let add_one = |row: &mut [f32], b: f32| row.iter_mut().for_each(|v| *v += b);
    if at.col == 1 {
        // Runs of activation rows, one image at a time.
        let per = if at.group > 0 { at.group } else { m }.max(1);
        for j in 0..n {
            for i0 in (0..m).step_by(per) {
                let row = run(j, i0, per.min(m - i0));
                if let Some(cb) = start.col_bias {
                    add_col(row, &cb[i0..]);
                }
                if let Some(b) = start.bias {
                    add_one(row, b[j]);
                }
            }
        }
    } else if at.row == 1 && at.group == 0 {
        for i in 0..m {
            let row = run(0, i, n);
            if let Some(cb) = start.col_bias {
                add_one(row, cb[i]);
            }
            if let Some(b) = start.bias {
                add_col(row, b);
            }
        }
    } else {
        for j in 0..n {
            for i in 0..m {
                let v = &mut run(j, i, 1)[0];
                *v += start.col_bias.map_or(0.0, |b| b[i]);
                *v += start.bias.map_or(0.0, |b| b[j]);
            }
        }
    }
    Start {
        bias: None,
        col_bias: None,
        ..start
    }
}

/// The start of tiles 0 and 1 (rows 0–15) and 2 and 3 (rows 16–31) from a bias per output
/// row: each row's value across 16 columns, written into `buf`.
pub(super) fn row_bias_tiles(buf: &mut [f32; 32 * 16], bias: &[f32], j0: usize) -> Tiles {
    for (r, row) in buf.chunks_exact_mut(16).enumerate() {
        row.fill(bias.get(j0 + r).copied().unwrap_or(0.0));
    }
    let base = buf.as_mut_ptr();
    Tiles {
        at: [base, base, base.wrapping_add(256), base.wrapping_add(256)],
        stride: 64,
    }
}

/// A block of the output: `rows` × `cols` values at `(j0, i0)` of `dst` through `at`.
#[derive(Clone, Copy)]
pub(super) struct Block {
    pub(super) dst: OutPtr,
    pub(super) at: OutAt,
    pub(super) j: (usize, usize),
    pub(super) i: (usize, usize),
}

/// Start a block's accumulators: from the residual in place (loaded from the output when
/// `direct`, else gathered into `tile` first), from the bias tiles, or zeroed. A block
/// takes the same values whichever way it goes (the accumulators start from the residual
/// either way), so the result does not depend on where the output buffer happens to start.
///
/// # Safety
/// Tiles configured; the addresses hold what [`load`] reads; `block` is inside the output
/// and no other thread writes it.
pub(super) unsafe fn begin(
    direct: Option<Tiles>,
    accumulate: bool,
    bias: Option<Tiles>,
    tile: &mut [f32; 32 * 32],
    block: Block,
) {
    // SAFETY: per the caller.
    unsafe {
        match (direct, accumulate, bias) {
            (Some(d), true, _) => load(d),
            (None, true, _) => {
                super::read_block(block.dst, block.at, tile, 32, block.j, block.i);
                load(Tiles::block(tile.as_mut_ptr(), 32));
            }
            (_, _, Some(b)) => load(b),
            _ => zero(),
        }
    }
}

/// Finish a block: store its tiles in place (`direct`), or into `tile` and then through
/// [`write_block`] (the tiles hold the whole value, residual included: [`begin`]).
///
/// # Safety
/// Tiles configured; `direct` addresses the whole block in the output; the block is
/// inside the output and written by no other thread.
pub(super) unsafe fn finish(direct: Option<Tiles>, tile: &mut [f32; 32 * 32], block: Block) {
    // SAFETY: per the caller.
    unsafe {
        match direct {
            Some(d) => store(d),
            None => {
                store(Tiles::block(tile.as_mut_ptr(), 32));
                let start = Start {
                    bias: None,
                    accumulate: false,
                    col_bias: None,
                };
                write_block(block.dst, block.at, start, tile, 32, block.j, block.i);
            }
        }
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
    // SAFETY: per the caller.
    let start = unsafe { fold_bias(dst, at, start, (n, m)) };
    Tasks::new(n, m, JB, parallel).run(n, m, parallel, |jr, ir| {
        // SAFETY: per the caller; this task's blocks are written by this task only.
        unsafe { task((dst, at), None, w, x, start, jr, ir) };
    });
}

/// `W · Xᵀ` (from the start, which has no residual) handed a finished 32 × 32 block at a
/// time to `epilogue` instead of being written out ([`super::matmul_blocks`]).
///
/// # Safety
/// The CPU has AMX-BF16 and the permission was granted ([`available`]).
pub(super) unsafe fn matmul_blocks(
    w: Weight<'_>,
    x: &Acts,
    start: Start<'_>,
    epilogue: super::Epilogue<'_>,
) {
    assert!(!start.accumulate, "bf16 blocks: nothing to accumulate into");
    let (m, n) = (x.m(), w.n);
    let nowhere = (OutPtr(std::ptr::null_mut()), OutAt::channels(m));
    Tasks::new(n, m, JB, true).run(n, m, true, |jr, ir| {
        // SAFETY: per the caller; no block is written to the (absent) output.
        unsafe { task(nowhere, Some(epilogue), w, x, start, jr, ir) };
    });
}

/// A value aligned to a cache line (tile loads and stores of unaligned rows are ~6×
/// slower: see [`super::Aligned`]).
#[repr(C, align(64))]
pub(super) struct A64<T>(pub(super) T);

/// Whether a 32 × 32 block at `base` with `row` values between rows can be loaded and
/// stored as tiles at full speed (every row on a cache line).
pub(super) fn tile_aligned(base: *const f32, row: usize) -> bool {
    (base as usize).is_multiple_of(64) && (row * 4).is_multiple_of(64)
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
/// As [`matmul`]; a bias comes without a residual ([`fold_bias`]), and a row bias without a
/// column bias.
unsafe fn task(
    (dst, at): (OutPtr, OutAt),
    epilogue: Option<super::Epilogue<'_>>,
    w: Weight<'_>,
    x: &Acts,
    start: Start<'_>,
    jr: std::ops::Range<usize>,
    ir: std::ops::Range<usize>,
) {
    let (m, n, k) = (x.m(), w.n, w.k);
    let kp = x.kp();
    let steps = kp / KB;
    let mut edge = super::Aligned::zeroed(0);
    let mut tile = A64([0f32; JB * 32]);
    let mut bias_tile = A64([0f32; JB * 16]);
    let mut col_tile = A64([0f32; 32]);
    // SAFETY: the CPU has AMX (caller).
    let _tiles = unsafe { TileUse::configure() };
    for jb in jr {
        let j0 = jb * JB;
        // The block's W rows, in place when whole and every row on a cache line, else
        // copied (aligned, zero-padded): a misaligned tile row loads ~6× slower.
        let at_row = w.bits[(j0 * k).min(w.bits.len())..].as_ptr();
        let (wp, ldw) = if j0 + JB <= n && k == kp && (at_row as usize).is_multiple_of(64) {
            (at_row, k)
        } else {
            w.copy_rows(j0, JB, kp, &mut edge);
            (edge.as_u16_mut().as_ptr(), kp)
        };
        let bias_start = start
            .bias
            .map(|bias| row_bias_tiles(&mut bias_tile.0, bias, j0));
        for ib in ir.clone() {
            let i0 = ib * 32;
            // A bias per column: every row of a tile the same 16 values (stride 0).
            let col_start = start.col_bias.map(|bias| {
                for (c, v) in col_tile.0.iter_mut().enumerate() {
                    *v = bias.get(i0 + c).copied().unwrap_or(0.0);
                }
                let base = col_tile.0.as_mut_ptr();
                Tiles {
                    at: [base, base.wrapping_add(16), base, base.wrapping_add(16)],
                    stride: 0,
                }
            });
            let x0 = x.block(2 * ib).as_ptr().cast::<u16>();
            let x1 = x.block(2 * ib + 1).as_ptr().cast::<u16>();
            let whole = j0 + JB <= n && i0 + 32 <= m;
            let one_image = at.group == 0 || i0 / at.group == (i0 + 31) / at.group;
            let base = dst.get().wrapping_add(at.index(j0, i0));
            let direct = (epilogue.is_none()
                && whole
                && at.col == 1
                && one_image
                && tile_aligned(base, at.row))
            .then(|| Tiles::block(base, at.row));
            // SAFETY: the tiles are configured; the loads and stores address the block in
            // the output (direct: whole and inside it, per the caller), the bias tile or the
            // scratch block; wp addresses JB rows of ≥ kp values at stride ldw; x0/x1 hold
            // kp · MB values each.
            unsafe {
                let block = Block {
                    dst,
                    at,
                    j: (j0, JB.min(n - j0)),
                    i: (i0, 32.min(m - i0)),
                };
                begin(
                    direct,
                    start.accumulate,
                    bias_start.or(col_start),
                    &mut tile.0,
                    block,
                );
                run(wp, ldw * 2, x0, x1, steps);
                match epilogue {
                    Some(f) => {
                        store(Tiles::block(tile.0.as_mut_ptr(), 32));
                        f(block.j, block.i, &tile.0);
                    }
                    None => finish(direct, &mut tile.0, block),
                }
            }
        }
    }
}
/// Zero the four accumulator tiles.
///
/// # Safety
/// Tiles configured ([`TileUse::configure`]).
#[inline]
unsafe fn zero() {
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
unsafe fn load(t: Tiles) {
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

#[cfg(test)]
mod peak {
    use super::*;

    /// Nanoseconds → cycles at the nominal 2.6 GHz (the cores may run faster).
    fn cycles(s: f64, ops: usize) -> f64 {
        s * 2.6e9 / ops as f64
    }

    /// What the AMX unit does on this CPU (a measurement, not a test: run by hand with
    /// `cargo test --release --lib microkernel_peak -- --ignored --nocapture`): `tdpbf16ps`
    /// alone; `tileloadd` with rows on cache lines and off them; whole products whose
    /// blocks are stored to a scratch tile or into their f32 output; and [`run`], the
    /// 2×2-tile step loop, on operands that stay in L1 (2 and 8 steps) and in L2 (32 steps).
    #[test]
    #[ignore]
    fn microkernel_peak() {
        if !available() {
            return;
        }
        let mut buf = super::super::Aligned::zeroed(16 * 23040 * 2);
        let base = buf.as_u16_mut().as_ptr();
        // Products only (the operand tiles loaded once); the first run wakes the AMX unit
        // up (its first use in a process runs slower), the second is timed.
        let n = 1_000_000usize;
        let products = || {
            let t = std::time::Instant::now();
            // SAFETY: AMX present; every load reads 16 rows of 64 bytes inside `buf`.
            unsafe {
                let _t = TileUse::configure();
                zero();
                asm!(
                    "tileloadd tmm4, [{w} + {s64}*1]",
                    "tileloadd tmm5, [{w} + {s64}*1]",
                    "tileloadd tmm6, [{w} + {s64}*1]",
                    "tileloadd tmm7, [{w} + {s64}*1]",
                    "2:",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "dec {n}",
                    "jnz 2b",
                    w = in(reg) base,
                    s64 = in(reg) 64usize,
                    n = inout(reg) n => _,
                    options(nostack, readonly),
                );
            }
            t.elapsed().as_secs_f64()
        };
        products();
        let s = products();
        println!(
            "tdpbf16ps alone: {:.1} cycles each, {:.0} GFLOP/s",
            cycles(s, 4 * n),
            2.0 * 16.0 * 16.0 * 32.0 * (4 * n) as f64 / s / 1e9
        );
        // Loads only: row stride and the first row's offset from a cache line.
        for (stride, off) in [
            (64usize, 0usize),
            (64, 16),
            (128, 0),
            (128, 16),
            (72, 0),
            (5760, 0),
            (5760, 8),
        ] {
            let t = std::time::Instant::now();
            // SAFETY: AMX present; 16 rows at `stride` from `off` stay inside `buf`.
            unsafe {
                let _t = TileUse::configure();
                asm!(
                    "2:",
                    "tileloadd tmm4, [{w} + {st}*1]",
                    "tileloadd tmm5, [{w2} + {st}*1]",
                    "tileloadd tmm6, [{w} + {st}*1]",
                    "tileloadd tmm7, [{w2} + {st}*1]",
                    "dec {n}",
                    "jnz 2b",
                    w = in(reg) base.byte_add(off),
                    w2 = in(reg) base.add(16 * 23040).byte_add(off),
                    st = in(reg) stride,
                    n = inout(reg) n => _,
                    options(nostack, readonly),
                );
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "tileloadd, stride {stride}, first row +{off} B: {:.1} cycles each",
                cycles(s, 4 * n)
            );
        }
        // Where the finished blocks go: a product of the model's shapes on one core, each
        // 32 × 32 block stored to one scratch tile (stays in L1) or into its f32 output
        // (rows `m` values apart: the layout the model's layers write), with the run of
        // 16 activation blocks per W block that the tasks use.
        for (n, m, k) in [
            (320usize, 4096usize, 320usize),
            (2560, 4096, 320),
            (1280, 1024, 1280),
        ] {
            let steps = k / 32;
            let mut wb = super::super::Aligned::zeroed(n * k / 2);
            let mut xb = super::super::Aligned::zeroed(m * k / 2);
            let mut ob = super::super::Aligned::zeroed(n * m);
            let (w, x) = (wb.as_u16_mut().as_ptr(), xb.as_u16_mut().as_ptr());
            let out = ob.as_f32_mut().as_mut_ptr();
            let mut tile = A64([0f32; 32 * 32]);
            let mut rates = [0f64; 2];
            for (into_output, rate) in rates.iter_mut().enumerate() {
                let t = std::time::Instant::now();
                // SAFETY: AMX present; W is n rows of k, X m/16 blocks of k pairs, the
                // output n × m: every block's loads and stores stay inside them.
                unsafe {
                    let _t = TileUse::configure();
                    for i0 in (0..m / 32).step_by(16) {
                        for jb in 0..n / 32 {
                            for ib in i0..i0 + 16 {
                                zero();
                                let x0 = x.add(ib * 32 * k);
                                run(w.add(jb * 32 * k), k * 2, x0, x0.add(16 * k), steps);
                                let to = if into_output == 1 {
                                    Tiles::block(out.add(jb * 32 * m + ib * 32), m)
                                } else {
                                    Tiles::block(tile.0.as_mut_ptr(), 32)
                                };
                                store(to);
                            }
                        }
                    }
                }
                *rate = 2.0 * (n * m * k) as f64 / t.elapsed().as_secs_f64() / 1e9;
            }
            println!(
                "{n}×{m}×{k}: blocks to a scratch tile {:.0} GFLOP/s, into the f32 output {:.0}",
                rates[0], rates[1]
            );
        }
        // The step loop.
        for steps in [2usize, 8, 32] {
            let mut wb = super::super::Aligned::zeroed(32 * 16 * steps);
            let mut xb = super::super::Aligned::zeroed(512 * steps);
            let (w, x) = (wb.as_u16_mut(), xb.as_u16_mut());
            let reps = 4_000_000 / steps;
            let t = std::time::Instant::now();
            // SAFETY: AMX present; W is 32 rows of 32 · steps values, X two blocks of
            // `steps` KiB; the scratch tile is 32 × 32.
            unsafe {
                let _t = TileUse::configure();
                zero();
                for _ in 0..reps {
                    run(
                        w.as_ptr(),
                        64 * steps,
                        x.as_ptr(),
                        x.as_ptr().add(512 * steps),
                        steps,
                    );
                }
                let mut tile = A64([0f32; 32 * 32]);
                store(Tiles::block(tile.0.as_mut_ptr(), 32));
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "run, {steps} steps: {:.0} GFLOP/s ({:.1} cycles per tdpbf16ps)",
                2.0 * 32.0 * 32.0 * 32.0 * (steps * reps) as f64 / s / 1e9,
                cycles(s, 4 * steps * reps)
            );
        }
    }
}
