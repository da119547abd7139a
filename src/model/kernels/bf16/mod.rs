//! bf16 matrix products on the CPU: `Y[j, i] = start + Σ_k W[j, k] · X[i, k]`, with `W` a
//! bf16 matrix `(n × k)` read as it is stored (row-major, one bf16 per value), `X` rounded to
//! bf16 into the kernels' layout ([`Acts`]), and products accumulated in f32. A layer lays its
//! weight out once, when it is built (a linear layer's as an [`Acts`], a 3×3 convolution's by
//! offset): the model holds its weights once, at half the f32 size, and no call re-lays them
//! out. AMX tile rows must start on cache lines to load at full speed (a split row costs
//! ~6×), so the operands live in [`Aligned`] buffers.
//! `Y` is written through a stride pair ([`OutAt`]): `(o, pixels)` for a convolution,
//! `(tokens, o)` for a linear layer. The kernel is chosen at run time ([`Bf16Path`]):
//!
//! * **AMX** ([`amx`], `tdpbf16ps`): four 16 × 16 f32 tiles accumulate a 32 × 32 block of
//!   `Y` over the whole of `k`, 32 values of `k` per step (two tiles of `W` rows, two of `X`).
//!   Linux hands out the tile data state only on request: the first use asks for it once per
//!   process (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`) and confirms it
//!   (`ARCH_GET_XCOMP_PERM`); a refusal leaves AMX out. Each task configures the tiles
//!   (`ldtilecfg`) and releases them. Written with `asm!` (the AMX intrinsics are unstable).
//! * **AVX512-bf16** ([`avx512`], `vdpbf16ps`): 12 rows of `W` × 32 activations per
//!   micro-kernel, each instruction multiplying a broadcast pair of `W` values by 16 lanes of
//!   `X` pairs and adding into f32.
//! * **portable**: `W` widened to f32 a block of rows at a time and `X` (already rounded to
//!   bf16) widened to f32, multiplied by the f32 product of the `gemm` crate; the same
//!   rounded operands as the other paths, so all three agree to f32 summation order.
//!
//! Every path is tested on any machine by forcing it ([`choose`] with a simulated
//! [`CpuBf16`], or [`with_forced_path`]); a path the CPU lacks is never run: the request
//! falls to the next path down, and the path taken is returned to the caller.

mod acts;
mod aligned;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) mod amx_conv;
pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod conv;
pub mod geglu;
pub mod linear;
mod pack;
pub mod pointwise;
pub use acts::{Acts, Columns};
pub(crate) use aligned::{Aligned, OutVec};
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::sync::OnceLock;

/// Whether `dtype` on `device` means mixed precision: bf16 on the CPU keeps the weights of
/// linear layers and convolutions in bf16 for these kernels and everything else in f32
/// (`checkpoint::var_builder_bf16_matrices`).
pub fn mixed_bf16(device: &candle_core::Device, dtype: candle_core::DType) -> bool {
    device.is_cpu() && dtype == candle_core::DType::BF16
}

/// Which kernel a bf16 product ran on, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Path {
    /// Intel AMX tiles (`tdpbf16ps`): Sapphire Rapids and later Xeons (Linux).
    Amx,
    /// AVX512-bf16 (`vdpbf16ps`): Zen 4/5, Cooper Lake, Sapphire Rapids and later.
    Avx512Bf16,
    /// bf16 widened to f32 and the f32 product: any CPU.
    Portable,
}

impl Bf16Path {
    /// All paths, best first.
    pub const ALL: [Bf16Path; 3] = [Bf16Path::Amx, Bf16Path::Avx512Bf16, Bf16Path::Portable];

    /// The name messages use.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Path::Amx => "AMX",
            Bf16Path::Avx512Bf16 => "AVX512-bf16",
            Bf16Path::Portable => "portable",
        }
    }
}

impl std::fmt::Display for Bf16Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the CPU (and the operating system) allow the bf16 kernels to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuBf16 {
    /// AMX tiles with bf16, and the OS's permission for tile data.
    pub amx: bool,
    /// AVX512-bf16 together with AVX512F and AVX512BW (every CPU with the first has the
    /// others).
    pub avx512_bf16: bool,
}

impl CpuBf16 {
    /// A CPU with none of the bf16 instructions (only the portable path).
    pub const NONE: CpuBf16 = CpuBf16 {
        amx: false,
        avx512_bf16: false,
    };

    /// This CPU's features (detected once).
    pub fn detect() -> CpuBf16 {
        static CPU: OnceLock<CpuBf16> = OnceLock::new();
        *CPU.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                CpuBf16 {
                    #[cfg(target_os = "linux")]
                    amx: amx::available(),
                    #[cfg(not(target_os = "linux"))]
                    amx: false,
                    avx512_bf16: std::arch::is_x86_feature_detected!("avx512bf16")
                        && std::arch::is_x86_feature_detected!("avx512f")
                        && std::arch::is_x86_feature_detected!("avx512bw"),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                CpuBf16::NONE
            }
        })
    }

    /// Whether `path` can run here.
    pub fn has(self, path: Bf16Path) -> bool {
        match path {
            Bf16Path::Amx => self.amx,
            Bf16Path::Avx512Bf16 => self.avx512_bf16,
            Bf16Path::Portable => true,
        }
    }

    /// The features both `self` and `other` have.
    fn and(self, other: CpuBf16) -> CpuBf16 {
        CpuBf16 {
            amx: self.amx && other.amx,
            avx512_bf16: self.avx512_bf16 && other.avx512_bf16,
        }
    }
}

/// The path a product takes on `cpu`: the best one it has, or, when `want` names one, that
/// one if `cpu` has it and else the next one down that it has (never a better one).
pub fn choose(want: Option<Bf16Path>, cpu: CpuBf16) -> Bf16Path {
    let from = want.map_or(0, |w| {
        Bf16Path::ALL.iter().position(|p| *p == w).expect("in ALL")
    });
    Bf16Path::ALL[from..]
        .iter()
        .copied()
        .find(|p| cpu.has(*p))
        .unwrap_or(Bf16Path::Portable)
}

thread_local! {
    static FORCED: Cell<Option<Bf16Path>> = const { Cell::new(None) };
}

/// Run `f` with every bf16 product that this thread starts asking for `path` (for tests
/// and comparisons; a path the CPU lacks still falls back, see [`choose`]).
pub fn with_forced_path<T>(path: Bf16Path, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Bf16Path>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|c| c.replace(Some(path))));
    f()
}

/// The path this thread's products take now (the forced one, if any, else the best).
pub fn current_path() -> Bf16Path {
    choose(FORCED.with(|c| c.get()), CpuBf16::detect())
}

/// `x` rounded to the nearest bf16 (ties to even); NaN stays NaN.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    // A select, not a branch, so that loops over slices vectorise.
    let nan = (b >> 16) | 0x40;
    (if x.is_nan() { nan } else { rounded }) as u16
}

/// The f32 value of the bf16 bits `h` (exact).
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Rows of `X` per block of [`Acts`]: an AMX tile's and an AVX-512 register's 16 columns.
pub(crate) const MB: usize = 16;
/// `k` values per AMX step; [`Acts`] pads `k` to a multiple of it with zeros.
pub(crate) const KB: usize = 32;

/// Where `Y[j, i]` goes in the output slice: `j · row + i · col`, or, with images
/// (`group` > 0 activation rows each), `(i / group) · group_stride + j · row + (i % group) ·
/// col`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutAt {
    /// Stride between output channels `j`.
    pub row: usize,
    /// Stride between activation rows `i`.
    pub col: usize,
    /// Activation rows per image (0: one image).
    pub group: usize,
    /// Stride between images.
    pub group_stride: usize,
}

impl OutAt {
    /// A linear layer's `(tokens, n)` row-major output.
    pub fn tokens(n: usize) -> OutAt {
        OutAt::strided(1, n)
    }

    /// Outputs at `j · row + i · col`.
    pub fn strided(row: usize, col: usize) -> OutAt {
        OutAt {
            row,
            col,
            group: 0,
            group_stride: 0,
        }
    }

    /// A convolution's `(n, pixels)` output: channel-major.
    pub fn channels(pixels: usize) -> OutAt {
        OutAt::strided(pixels, 1)
    }

    /// A batch of convolution outputs `(images, n, pixels)`, the activation rows of all
    /// images in one product (each weight read once for them all).
    pub fn images(n: usize, pixels: usize) -> OutAt {
        OutAt {
            row: pixels,
            col: 1,
            group: pixels,
            group_stride: n * pixels,
        }
    }

    /// The position of `Y[j, i]`.
    #[inline(always)]
    pub fn index(&self, j: usize, i: usize) -> usize {
        match (i.checked_div(self.group), i.checked_rem(self.group)) {
            (Some(image), Some(i)) => image * self.group_stride + j * self.row + i * self.col,
            _ => j * self.row + i * self.col,
        }
    }
}

/// A bf16 weight `(n × k)`, row-major, as raw bits.
#[derive(Debug, Clone, Copy)]
pub struct Weight<'a> {
    pub bits: &'a [u16],
    pub n: usize,
    pub k: usize,
}

impl<'a> Weight<'a> {
    /// A weight of `n` rows of `k` bf16 values.
    pub fn new(bits: &'a [u16], n: usize, k: usize) -> Weight<'a> {
        assert_eq!(
            bits.len(),
            n * k,
            "bf16 weight: {} values for {n}×{k}",
            bits.len()
        );
        Weight { bits, n, k }
    }

    /// Rows `j0 … j0 + rows` into `dst` at stride `ld` (even), zero-padded; `dst` is
    /// reallocated when too small, so its start stays 64-byte aligned.
    pub(crate) fn copy_rows(&self, j0: usize, rows: usize, ld: usize, dst: &mut Aligned) {
        if dst.as_u16_mut().len() < rows * ld {
            *dst = Aligned::zeroed((rows * ld).div_ceil(2));
        }
        let dst = dst.as_u16_mut();
        for r in 0..rows {
            let row = &mut dst[r * ld..(r + 1) * ld];
            let j = j0 + r;
            if j < self.n {
                row[..self.k].copy_from_slice(&self.bits[j * self.k..(j + 1) * self.k]);
                row[self.k..].fill(0);
            } else {
                row.fill(0);
            }
        }
    }
}

/// How each `Y` value starts before the product is added: `bias[j]` (or zero), plus the
/// output's own value when `accumulate` (a residual already in place).
#[derive(Debug, Clone, Copy)]
pub struct Start<'a> {
    /// A bias per output row `j`.
    pub bias: Option<&'a [f32]>,
    pub accumulate: bool,
    /// A bias per activation row `i` (a linear layer's whose weight is the activation
    /// operand).
    pub col_bias: Option<&'a [f32]>,
}

/// A raw output pointer shared by tasks that write disjoint sets of values.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every task writes its own `(j, i)` block only, and `OutAt` maps distinct `(j, i)`
// to distinct values (checked by `matmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Read a block of the output into `tile` (`Y[j0 + r, i0 + c]` at `r · ld + c`, for `rows`
/// rows and `cols` columns; the rest of the tile's rows zeroed): the residual a block
/// that cannot be loaded in place starts from.
///
/// # Safety
/// `out` addresses every `(j, i)` of the block through `at`, and no other thread writes
/// them meanwhile.
#[inline]
pub(crate) unsafe fn read_block(
    out: OutPtr,
    at: OutAt,
    tile: &mut [f32],
    ld: usize,
    (j0, rows): (usize, usize),
    (i0, cols): (usize, usize),
) {
    let out = out.get();
    for r in 0..rows {
        let row = &mut tile[r * ld..(r + 1) * ld];
        row[cols..].fill(0.0);
        if at.col == 1 && at.group == 0 {
            // SAFETY: a run of `cols` values of one output row (caller).
            let src = unsafe { std::slice::from_raw_parts(out.add(at.index(j0 + r, i0)), cols) };
            row[..cols].copy_from_slice(src);
        } else {
            for (c, v) in row[..cols].iter_mut().enumerate() {
                // SAFETY: per the caller.
                *v = unsafe { *out.add(at.index(j0 + r, i0 + c)) };
            }
        }
    }
    tile[rows * ld..].fill(0.0);
}

/// Write a finished block: `tile` holds `Y[j0 + r, i0 + c]` at `r · ld + c`, for `rows`
/// valid rows and `cols` valid columns.
///
/// # Safety
/// `out` addresses every `(j, i)` of the block through `at` (the caller checked the whole
/// output's extent), and no other thread writes them.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn write_block(
    out: OutPtr,
    at: OutAt,
    start: Start<'_>,
    tile: &[f32],
    ld: usize,
    (j0, rows): (usize, usize),
    (i0, cols): (usize, usize),
) {
    let out = out.get();
    let row_bias = |j: usize| start.bias.map_or(0.0, |b| b[j]);
    let col_bias = |i: usize| start.col_bias.map_or(0.0, |b| b[i]);
    // SAFETY: per the caller.
    unsafe {
        if at.group > 0 {
            for r in 0..rows {
                let b = row_bias(j0 + r);
                for c in 0..cols {
                    let o = out.add(at.index(j0 + r, i0 + c));
                    let v = tile[r * ld + c] + b + col_bias(i0 + c);
                    *o = if start.accumulate { *o + v } else { v };
                }
            }
        } else if at.col == 1 {
            const ZEROS: [f32; 32] = [0.0; 32];
            let col = match start.col_bias {
                Some(cb) => &cb[i0..i0 + cols],
                None if cols <= 32 => &ZEROS[..cols],
                None => &vec![0.0; cols][..],
            };
            let bias = start.bias.map(|b| &b[j0..j0 + rows]);
            let block = Block {
                out: out.add(j0 * at.row + i0),
                row: at.row,
                rows,
            };
            add_rows(block, tile, ld, bias, col, start.accumulate);
        } else {
            for c in 0..cols {
                let cb = col_bias(i0 + c);
                let dst = out.add((i0 + c) * at.col + j0 * at.row);
                for r in 0..rows {
                    let o = dst.add(r * at.row);
                    let v = tile[r * ld + c] + row_bias(j0 + r) + cb;
                    *o = if start.accumulate { *o + v } else { v };
                }
            }
        }
    }
}

/// `rows` output rows of unit column stride, `row` values apart, from `out`.
#[derive(Clone, Copy)]
struct Block {
    out: *mut f32,
    row: usize,
    rows: usize,
}

crate::model::cpu_kernels::simd_fn! {
    /// `out[r][c] (+)= tile[r · ld + c] + bias[r] + col[c]` for the block's rows and the
    /// `col.len()` columns (vectorised: this runs for every block not stored in place).
    /// The block's rows must be valid for writes and written by no other thread (the
    /// caller of [`write_block`] guarantees it).
    fn add_rows(
        block: Block,
        tile: &[f32],
        ld: usize,
        bias: Option<&[f32]>,
        col: &[f32],
        accumulate: bool,
    ) {
        let cols = col.len();
        for r in 0..block.rows {
            // SAFETY: per the function's contract.
            let d = unsafe { std::slice::from_raw_parts_mut(block.out.add(r * block.row), cols) };
            let b = bias.map_or(0.0, |b| b[r]);
            let src = &tile[r * ld..r * ld + cols];
            if accumulate {
                for ((d, s), c) in d.iter_mut().zip(src).zip(col) {
                    *d += s + b + c;
                }
            } else {
                for ((d, s), c) in d.iter_mut().zip(src).zip(col) {
                    *d = s + b + c;
                }
            }
        }
    }
}

/// `Y = start + W · Xᵀ` into `out` (see [`OutAt`], [`Start`]) on this thread's path
/// ([`current_path`]). Returns the path taken.
pub fn matmul(out: &mut [f32], at: OutAt, w: Weight<'_>, x: &Acts, start: Start<'_>) -> Bf16Path {
    let want = FORCED.with(|c| c.get());
    matmul_on(out, at, w, x, start, want, CpuBf16::detect())
}

/// [`matmul`] asking for `want` on a CPU with (at most) the features `cpu` (the detected
/// ones are never exceeded: a simulated CPU can only lack features).
pub fn matmul_on(
    out: &mut [f32],
    at: OutAt,
    w: Weight<'_>,
    x: &Acts,
    start: Start<'_>,
    want: Option<Bf16Path>,
    cpu: CpuBf16,
) -> Bf16Path {
    let path = choose(want, cpu.and(CpuBf16::detect()));
    if check(out.len(), at, w, x, start) {
        // SAFETY: `choose` picked the path from features this CPU (and the OS) has; `out`
        // covers the output (checked).
        unsafe { matmul_raw(OutPtr(out.as_mut_ptr()), at, w, x, start, path, true) };
    }
    path
}

/// [`matmul`] into an output not yet written (no residual to start from): every value is
/// written once. Returns the path taken.
pub fn matmul_uninit(
    out: &mut [std::mem::MaybeUninit<f32>],
    at: OutAt,
    w: Weight<'_>,
    x: &Acts,
    start: Start<'_>,
) -> Bf16Path {
    assert!(!start.accumulate, "bf16 matmul: nothing to accumulate into");
    let path = current_path();
    if check(out.len(), at, w, x, start) {
        // SAFETY: as in `matmul_on`; without `accumulate` the kernels only write `out`.
        unsafe {
            matmul_raw(
                OutPtr(out.as_mut_ptr().cast::<f32>()),
                at,
                w,
                x,
                start,
                path,
                true,
            )
        };
    }
    path
}

/// What [`matmul_blocks`] hands each finished block of `Y` to: `((j0, rows), (i0, cols),
/// block)`, the block's values `Y[j0 + r, i0 + c]` at `r · 32 + c` (start included).
/// Called from several threads, each block once.
pub type Epilogue<'a> = &'a (dyn Fn((usize, usize), (usize, usize), &[f32; 32 * 32]) + Sync);

/// `Y = start + W · Xᵀ` (no residual) handed to `epilogue` a 32 × 32 block at a time, never
/// written out whole: a layer whose output is only an input to what follows (GEGLU's
/// halves) finishes each block while it is in cache. On AMX the blocks come straight from
/// the tiles; the other paths write `Y` and hand out copies of its blocks — the same values
/// as [`matmul`] on that path either way. Returns the path taken.
pub fn matmul_blocks(
    w: Weight<'_>,
    x: &Acts,
    start: Start<'_>,
    epilogue: Epilogue<'_>,
) -> Bf16Path {
    use rayon::prelude::*;
    assert!(!start.accumulate, "bf16 blocks: nothing to accumulate into");
    let path = current_path();
    let (m, n) = (x.m(), w.n);
    if !check(n * m, OutAt::channels(m), w, x, start) {
        return path;
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if path == Bf16Path::Amx {
        // SAFETY: the path was chosen from this CPU's features.
        unsafe { amx::matmul_blocks(w, x, start, epilogue) };
        return path;
    }
    let mut y = crate::model::cpu_kernels::uninit_vec(n * m);
    // SAFETY: as in `matmul_uninit`: without `accumulate` the kernels only write `y`, all
    // of it (checked extent).
    let y = unsafe {
        matmul_raw(
            OutPtr(y.as_mut_ptr().cast::<f32>()),
            OutAt::channels(m),
            w,
            x,
            start,
            path,
            true,
        );
        crate::model::cpu_kernels::assume_init(y)
    };
    y.par_chunks(32 * m).enumerate().for_each(|(jb, rows)| {
        let mut block = [0f32; 32 * 32];
        let (j0, nr) = (jb * 32, rows.len() / m);
        for i0 in (0..m).step_by(32) {
            let nc = 32.min(m - i0);
            for (r, row) in rows.chunks_exact(m).enumerate() {
                block[r * 32..r * 32 + nc].copy_from_slice(&row[i0..i0 + nc]);
            }
            epilogue((j0, nr), (i0, nc), &block);
        }
    });
    path
}

/// Check a product's operands and its output's extent (`len` values); false when empty.
fn check(len: usize, at: OutAt, w: Weight<'_>, x: &Acts, start: Start<'_>) -> bool {
    let (m, n) = (x.m(), w.n);
    assert_eq!(
        w.k,
        x.k(),
        "bf16 matmul: weight k {} but activations k {}",
        w.k,
        x.k()
    );
    if let Some(bias) = start.bias {
        assert_eq!(bias.len(), n, "bf16 matmul: bias of {} for {n}", bias.len());
    }
    if let Some(bias) = start.col_bias {
        assert_eq!(
            bias.len(),
            m,
            "bf16 matmul: column bias of {} for {m}",
            bias.len()
        );
    }
    if m == 0 || n == 0 {
        return false;
    }
    // Every (j, i) lands inside the output, and distinct ones on distinct values: the
    // strides are 1 and a multiple of the other extent.
    let last = at.index(n - 1, m - 1);
    assert!(
        last < len,
        "bf16 matmul: output of {len} for {n}×{m} at {at:?}"
    );
    let per_image = if at.group > 0 { at.group.min(m) } else { m };
    assert!(
        ((at.col == 1 && at.row >= per_image) || (at.row == 1 && at.col >= n))
            && (at.group == 0 || at.group_stride > at.index(n - 1, at.group - 1)),
        "bf16 matmul: overlapping output layout {at:?} for {n}×{m}"
    );
    true
}

/// The product on `path` into a raw output, on the rayon threads (`parallel`) or on this
/// thread alone (inside a task that is already one of many).
///
/// # Safety
/// `path` runs on this CPU ([`choose`]); `dst` addresses every `(j, i)` through `at`,
/// distinct values for distinct `(j, i)`, which no other thread touches meanwhile.
pub(crate) unsafe fn matmul_raw(
    dst: OutPtr,
    at: OutAt,
    w: Weight<'_>,
    x: &Acts,
    start: Start<'_>,
    path: Bf16Path,
    parallel: bool,
) {
    if x.m() == 0 || w.n == 0 {
        return;
    }
    // SAFETY: per the caller.
    unsafe {
        match path {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Bf16Path::Amx => amx::matmul(dst, at, w, x, start, parallel),
            #[cfg(target_arch = "x86_64")]
            Bf16Path::Avx512Bf16 => avx512::matmul(dst, at, w, x, start, parallel),
            _ => portable(dst, at, w, x, start, parallel),
        }
    }
}

/// How a product's blocks are spread over tasks: `jc` blocks of `jb` rows of `W` by `ic`
/// blocks of 32 activation rows each, `tj × ti` tasks.
pub(crate) struct Tasks {
    pub jb: usize,
    pub jc: usize,
    pub ic: usize,
    pub tj: usize,
    pub ti: usize,
}

impl Tasks {
    /// Enough tasks for the threads (one thread when not `parallel`), each a run of `W` row
    /// blocks against up to 512 activation rows (each `W` block is then read once per 512
    /// activations: 128 measured 7 % slower on SD 1.5 at 512×512, 1024 the same as 512).
    pub(crate) fn new(n: usize, m: usize, jb: usize, parallel: bool) -> Tasks {
        let threads = if parallel {
            rayon::current_num_threads().max(1)
        } else {
            1
        };
        let (jblocks, iblocks) = (n.div_ceil(jb), m.div_ceil(32));
        // One thread: one task (no per-task setup repeated).
        let ic = if parallel {
            iblocks.min(16)
        } else {
            iblocks.max(1)
        };
        let ti = iblocks.div_ceil(ic);
        let want_tj = (4 * threads).div_ceil(ti).clamp(1, jblocks);
        let jc = jblocks.div_ceil(want_tj);
        Tasks {
            jb,
            jc,
            ic,
            tj: jblocks.div_ceil(jc),
            ti,
        }
    }

    /// Run `f` on every task's `W` row blocks and activation blocks, on the rayon threads
    /// (`parallel`) or on this one.
    pub(crate) fn run(
        &self,
        n: usize,
        m: usize,
        parallel: bool,
        f: impl Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync,
    ) {
        use rayon::prelude::*;
        let one = |t: usize| {
            let (jr, ir) = self.ranges(t, n, m);
            f(jr, ir);
        };
        if parallel {
            (0..self.tj * self.ti).into_par_iter().for_each(one);
        } else {
            (0..self.tj * self.ti).for_each(one);
        }
    }

    /// Task `t`'s `W` row blocks and activation blocks (of 32 rows).
    pub(crate) fn ranges(
        &self,
        t: usize,
        n: usize,
        m: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (a, b) = (t / self.ti, t % self.ti);
        let jblocks = n.div_ceil(self.jb);
        let iblocks = m.div_ceil(32);
        (
            a * self.jc..((a + 1) * self.jc).min(jblocks),
            b * self.ic..((b + 1) * self.ic).min(iblocks),
        )
    }
}

/// Rows of `W` the portable path widens at a time.
const PORTABLE_ROWS: usize = 64;

/// The portable path: `X` widened back to f32 once (`m × k`), `W` a block of rows at a time,
/// and the f32 product of the `gemm` crate into a block of `Y`.
///
/// # Safety
/// `dst` covers the output through `at` (checked by [`matmul_on`]).
unsafe fn portable(
    dst: OutPtr,
    at: OutAt,
    w: Weight<'_>,
    x: &Acts,
    start: Start<'_>,
    parallel: bool,
) {
    let (m, n, k) = (x.m(), w.n, w.k);
    let xs: Vec<f32> = (0..m).flat_map(|i| x.row(i)).collect();
    let mut wf = vec![0f32; PORTABLE_ROWS * k];
    let mut y = vec![0f32; PORTABLE_ROWS * m];
    for j0 in (0..n).step_by(PORTABLE_ROWS) {
        let rows = PORTABLE_ROWS.min(n - j0);
        for (d, s) in wf.iter_mut().zip(&w.bits[j0 * k..(j0 + rows) * k]) {
            *d = bf16_to_f32(*s);
        }
        if k == 0 {
            y.fill(0.0);
        } else {
            // SAFETY: y is rows × m row-major; wf is rows × k row-major; Xᵀ (k × m) is read
            // through xs's (m × k) strides.
            unsafe {
                gemm::gemm(
                    rows,
                    m,
                    k,
                    y.as_mut_ptr(),
                    1,
                    m as isize,
                    false,
                    wf.as_ptr(),
                    1,
                    k as isize,
                    xs.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    if parallel {
                        crate::model::cpu_kernels::parallelism()
                    } else {
                        gemm::Parallelism::None
                    },
                );
            }
        }
        // SAFETY: per the caller; this thread writes every value.
        unsafe { write_block(dst, at, start, &y, m, (j0, rows), (0, m)) };
    }
}
