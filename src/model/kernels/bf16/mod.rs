//! bf16 matrix products on the CPU: `C (f32) = start + A · B` with `B` held in bf16 (packed
//! once, [`PackedBf16`]) and products accumulated in f32, through a kernel chosen at run
//! time ([`Bf16Path`]):
//!
//! * **AMX** (`tdpbf16ps`): not written yet; [`CpuBf16::detect`] always reports it absent.
//!   TODO(issue 28): on Linux a process must ask for the tile data state before its first
//!   tile instruction — `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` (0x1023, 18),
//!   once per process, and fall back cleanly when the kernel refuses it (then confirm with
//!   `ARCH_GET_XCOMP_PERM`) — besides `is_x86_feature_detected!("amx-tile")` and
//!   `"amx-bf16"`, then configure the tiles (`ldtilecfg`) per thread.
//! * **AVX512-bf16** (`vdpbf16ps`, [`avx512`]): `A` is rounded to bf16 block by block, each
//!   instruction multiplies 16 column lanes × a pair of `k` values and adds into f32.
//! * **portable**: `B` widened to f32 and today's f32 product (the `gemm` crate, AVX-512 /
//!   AVX2 / scalar chosen by that crate); `A` stays f32.
//!
//! Every path is tested on any machine by forcing it ([`choose`] with a simulated
//! [`CpuBf16`], or [`with_forced_path`]); a path the CPU lacks is never run: the request
//! falls to the next path down, and the path taken is returned to the caller.

#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod conv;
pub mod linear;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::sync::OnceLock;

/// Which kernel a bf16 product ran on, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Path {
    /// Intel AMX tiles (`tdpbf16ps`); not implemented yet, never chosen.
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
    /// AVX512-bf16 together with AVX512F.
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
                    // TODO(issue 28): the AMX kernel and its arch_prctl request (see the
                    // module documentation); until then AMX is never reported.
                    amx: false,
                    avx512_bf16: std::arch::is_x86_feature_detected!("avx512bf16")
                        && std::arch::is_x86_feature_detected!("avx512f"),
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
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of the bf16 bits `h` (exact).
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Columns per panel of a [`PackedBf16`] (two AVX-512 registers of f32 lanes).
pub(crate) const NR: usize = 32;

/// The `B` matrix (`k × n`) of a product, in bf16 and in the layout the kernels read:
/// panels of [`NR`] columns; within a panel, for each pair of rows `(2p, 2p + 1)`, the
/// `NR` columns' two values side by side (`vdpbf16ps`'s operand). `k` is padded to even and
/// `n` to a whole panel with zeros.
#[derive(Clone)]
pub struct PackedBf16 {
    n: usize,
    k: usize,
    /// `pairs · 2 · NR` bf16 values per panel.
    data: Vec<u16>,
}

impl std::fmt::Debug for PackedBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedBf16 {{ k: {}, n: {} }}", self.k, self.n)
    }
}

impl PackedBf16 {
    /// Pack a weight stored as a linear layer's, `(n, k)` row-major (`B = Wᵀ`), whose value
    /// `(j, kk)` is `get(j · k + kk)`.
    fn pack(n: usize, k: usize, get: impl Fn(usize) -> u16) -> PackedBf16 {
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u16; panels * pairs * 2 * NR];
        for (panel, dst) in data.chunks_exact_mut(pairs * 2 * NR).enumerate() {
            for c in 0..NR.min(n - panel * NR) {
                let row = (panel * NR + c) * k;
                for kk in 0..k {
                    dst[(kk / 2) * 2 * NR + c * 2 + kk % 2] = get(row + kk);
                }
            }
        }
        PackedBf16 { n, k, data }
    }

    /// From an f32 weight `(n, k)` row-major (rounded to bf16).
    pub fn from_f32_nk(w: &[f32], n: usize, k: usize) -> PackedBf16 {
        assert_eq!(
            w.len(),
            n * k,
            "PackedBf16: weight of {} for {n}×{k}",
            w.len()
        );
        PackedBf16::pack(n, k, |i| f32_to_bf16(w[i]))
    }

    /// From a bf16 weight `(n, k)` row-major, as raw bits (no rounding).
    pub fn from_bf16_bits_nk(w: &[u16], n: usize, k: usize) -> PackedBf16 {
        assert_eq!(
            w.len(),
            n * k,
            "PackedBf16: weight of {} for {n}×{k}",
            w.len()
        );
        PackedBf16::pack(n, k, |i| w[i])
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inner dimension.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Pairs of `k` rows (`⌈k / 2⌉`).
    pub(crate) fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }

    /// Panel `i`'s packed values.
    pub(crate) fn panel(&self, i: usize) -> &[u16] {
        let len = self.pairs() * 2 * NR;
        &self.data[i * len..(i + 1) * len]
    }

    /// The weight widened to f32, `(n, k)` row-major.
    pub fn to_f32_nk(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        for (j, row) in w.chunks_exact_mut(self.k.max(1)).enumerate().take(self.n) {
            let panel = self.panel(j / NR);
            let c = j % NR;
            for (kk, v) in row.iter_mut().enumerate() {
                *v = bf16_to_f32(panel[(kk / 2) * 2 * NR + c * 2 + kk % 2]);
            }
        }
        w
    }
}

/// `out (m × n) ← start + a (m × k, f32 row-major) · b` on this thread's path
/// ([`current_path`]); `start` is `bias` per column (or zero), plus `out`'s own values when
/// `accumulate` (a residual already in `out`). Returns the path taken.
pub fn matmul(
    out: &mut [f32],
    a: &[f32],
    m: usize,
    b: &PackedBf16,
    bias: Option<&[f32]>,
    accumulate: bool,
) -> Bf16Path {
    let want = FORCED.with(|c| c.get());
    matmul_on(out, a, m, b, bias, accumulate, want, CpuBf16::detect())
}

/// [`matmul`] asking for `want` on a CPU with (at most) the features `cpu` (the detected
/// ones are never exceeded: a simulated CPU can only lack features).
#[allow(clippy::too_many_arguments)]
pub fn matmul_on(
    out: &mut [f32],
    a: &[f32],
    m: usize,
    b: &PackedBf16,
    bias: Option<&[f32]>,
    accumulate: bool,
    want: Option<Bf16Path>,
    cpu: CpuBf16,
) -> Bf16Path {
    let (n, k) = (b.n, b.k);
    assert_eq!(
        a.len(),
        m * k,
        "bf16 matmul: lhs of {} for {m}×{k}",
        a.len()
    );
    assert_eq!(
        out.len(),
        m * n,
        "bf16 matmul: out of {} for {m}×{n}",
        out.len()
    );
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "bf16 matmul: bias of {} for {n}", bias.len());
    }
    let path = choose(want, cpu.and(CpuBf16::detect()));
    if m == 0 || n == 0 {
        return path;
    }
    // The start, in place (the kernels add the product to `out`).
    for row in out.chunks_exact_mut(n) {
        match (bias, accumulate) {
            (Some(bias), true) => row.iter_mut().zip(bias).for_each(|(o, b)| *o += b),
            (Some(bias), false) => row.copy_from_slice(bias),
            (None, true) => {}
            (None, false) => row.fill(0.0),
        }
    }
    match path {
        #[cfg(target_arch = "x86_64")]
        Bf16Path::Avx512Bf16 => {
            // SAFETY: `choose` picked it from features this CPU has.
            unsafe { avx512::matmul_add(out, a, m, b) }
        }
        _ => portable_add(out, a, m, b),
    }
    path
}

/// `out += a · b` with `b` widened to f32 and the f32 product of [`cpu_kernels`].
///
/// TODO(issue 28): this widens the whole weight per call (a temporary of `n · k` f32);
/// a blocked widening would keep the memory down on CPUs without bf16 instructions.
///
/// [`cpu_kernels`]: crate::model::cpu_kernels
fn portable_add(out: &mut [f32], a: &[f32], m: usize, b: &PackedBf16) {
    let (n, k) = (b.n, b.k);
    let w = b.to_f32_nk();
    // SAFETY: out is m × n row-major, read and written; a is m × k row-major; Wᵀ (k × n)
    // is read through W's (n × k) strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            crate::model::cpu_kernels::parallelism(),
        );
    }
}
