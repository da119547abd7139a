//! Rounding a block of 16 f32 rows into the [`Acts`](super::Acts) layout: for each pair of
//! `k` values, the 16 rows' pairs side by side. With AVX512-bf16 one `vcvtne2ps2bf16` rounds
//! a row's 32 values into 16 pairs and a 16 × 16 transpose of 32-bit values puts them in
//! place (a few instructions per 32 values); elsewhere a scalar loop does the same.

#[cfg(target_arch = "x86_64")]
use super::CpuBf16;
use super::{MB, f32_to_bf16};

/// Round `rows` (16 rows of `k` f32 at stride `k`; rows past the real ones already zero)
/// into `block` (`kp / 2` pairs × 16 rows; `kp` a multiple of 32 ≥ `k`).
pub(super) fn pack_block(rows: &[f32], k: usize, block: &mut [u32]) {
    debug_assert_eq!(rows.len(), MB * k);
    #[cfg(target_arch = "x86_64")]
    if CpuBf16::detect().avx512_bf16 {
        // SAFETY: the CPU has AVX512F and AVX512-bf16; the slices are as described.
        unsafe { avx512::pack_block(rows, k, block) };
        return;
    }
    pack_block_scalar(rows, k, block);
}

/// Round two columns (`k` values `2p` and `2p + 1` of 16 rows) into their 16 pairs.
#[inline]
pub(super) fn pack_pair(a: &[f32; 16], b: &[f32; 16], dst: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if CpuBf16::detect().avx512_bf16 {
        // SAFETY: the CPU has the features; `dst` holds 16 values (checked).
        assert!(dst.len() >= MB);
        unsafe { avx512::pack_pair(a, b, dst) };
        return;
    }
    for (r, d) in dst.iter_mut().take(MB).enumerate() {
        *d = f32_to_bf16(a[r]) as u32 | (f32_to_bf16(b[r]) as u32) << 16;
    }
}

/// Round `src` to bf16 bits into `dst` (same length), 32 values per `vcvtne2ps2bf16` where
/// the CPU has AVX512-bf16.
pub(crate) fn round_into(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "round_into: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if CpuBf16::detect().avx512_bf16 {
        // SAFETY: the CPU has the features; the slices have one length (checked).
        unsafe { avx512::round_into(src, dst) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32_to_bf16(*s);
    }
}

/// [`pack_block`] without vector instructions (any CPU; the reference in tests).
pub(super) fn pack_block_scalar(rows: &[f32], k: usize, block: &mut [u32]) {
    for (r, row) in rows.chunks_exact(k.max(1)).enumerate().take(MB) {
        let mut two = row.chunks_exact(2);
        for (p, v) in (&mut two).enumerate() {
            block[p * MB + r] = f32_to_bf16(v[0]) as u32 | (f32_to_bf16(v[1]) as u32) << 16;
        }
        if let [last] = two.remainder() {
            block[(k / 2) * MB + r] = f32_to_bf16(*last) as u32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::MB;
    use crate::model::kernels::bf16::KB;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX512F and AVX512-bf16; `rows` is 16 × `k`, `block` holds `k` rounded up to 32,
    /// halved, × 16 values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_block(rows: &[f32], k: usize, block: &mut [u32]) {
        assert!(rows.len() >= MB * k && block.len() >= k.div_ceil(KB) * KB / 2 * MB);
        // SAFETY: the loads stay inside each row (masked at its end), the stores inside
        // `block` (checked above).
        unsafe {
            for c0 in (0..k).step_by(KB) {
                let left = k - c0;
                let (m0, m1) = mask(left);
                let mut v = [_mm512_setzero_si512(); MB];
                for (r, v) in v.iter_mut().enumerate() {
                    let p = rows.as_ptr().add(r * k + c0);
                    let lo = _mm512_maskz_loadu_ps(m0, p);
                    let hi = _mm512_maskz_loadu_ps(m1, p.add(16));
                    *v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                }
                let t = transpose(v);
                let dst = block.as_mut_ptr().add(c0 / 2 * MB);
                for (p, t) in t.iter().enumerate() {
                    _mm512_storeu_si512(dst.add(p * MB).cast(), *t);
                }
            }
        }
    }

    /// # Safety
    /// AVX512F, AVX512BW and AVX512-bf16; `dst` holds 16 values.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_pair(a: &[f32; 16], b: &[f32; 16], dst: &mut [u32]) {
        // SAFETY: the arrays hold 16 values, dst at least 16 (caller).
        unsafe {
            let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(b.as_ptr()), _mm512_loadu_ps(a.as_ptr()));
            // bf16 lanes 0–15 are a's, 16–31 b's: interleave them into pairs.
            let idx = _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
            );
            let pairs = _mm512_permutexvar_epi16(idx, std::mem::transmute::<__m512bh, __m512i>(v));
            _mm512_storeu_si512(dst.as_mut_ptr().cast(), pairs);
        }
    }

    /// # Safety
    /// AVX512F, AVX512BW and AVX512-bf16; `dst` as long as `src`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn round_into(src: &[f32], dst: &mut [u16]) {
        let (n, s, d) = (src.len(), src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        // SAFETY: every access is below `n` (whole chunks, then the masked tail).
        unsafe {
            while i + 32 <= n {
                let v =
                    _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s.add(i + 16)), _mm512_loadu_ps(s.add(i)));
                _mm512_storeu_si512(d.add(i).cast(), std::mem::transmute::<__m512bh, __m512i>(v));
                i += 32;
            }
            if i < n {
                let (m0, m1) = mask(n - i);
                let lo = _mm512_maskz_loadu_ps(m0, s.add(i));
                let hi = _mm512_maskz_loadu_ps(m1, s.add(i + 16));
                let v = _mm512_cvtne2ps_pbh(hi, lo);
                let m = (m0 as u32 | (m1 as u32) << 16) as __mmask32;
                _mm512_mask_storeu_epi16(
                    d.add(i).cast(),
                    m,
                    std::mem::transmute::<__m512bh, __m512i>(v),
                );
            }
        }
    }

    /// The load masks of a chunk with `left` values left in the row.
    #[inline]
    fn mask(left: usize) -> (__mmask16, __mmask16) {
        let bits = |n: usize| if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
        (bits(left), bits(left.saturating_sub(16)))
    }

    /// Transpose 16 × 16 32-bit values (row `r` of the input → lane `r` of every output).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose(r: [__m512i; 16]) -> [__m512i; 16] {
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        // u[4g + q], 128-bit lane L: column 4L + q of rows 4g … 4g + 3.
        let mut out = [_mm512_setzero_si512(); 16];
        for q in 0..4 {
            let v1 = _mm512_shuffle_i32x4::<0x88>(u[q], u[4 + q]);
            let v2 = _mm512_shuffle_i32x4::<0xDD>(u[q], u[4 + q]);
            let w1 = _mm512_shuffle_i32x4::<0x88>(u[8 + q], u[12 + q]);
            let w2 = _mm512_shuffle_i32x4::<0xDD>(u[8 + q], u[12 + q]);
            out[q] = _mm512_shuffle_i32x4::<0x88>(v1, w1);
            out[8 + q] = _mm512_shuffle_i32x4::<0xDD>(v1, w1);
            out[4 + q] = _mm512_shuffle_i32x4::<0x88>(v2, w2);
            out[12 + q] = _mm512_shuffle_i32x4::<0xDD>(v2, w2);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::bf16::KB;

    #[test]
    fn pairs_pack_as_the_scalar_rounding_does() {
        let a: [f32; 16] = std::array::from_fn(|i| i as f32 * 0.37 - 2.0);
        let b: [f32; 16] = std::array::from_fn(|i| 1.0 / (i as f32 + 0.3));
        let mut got = [0u32; 16];
        pack_pair(&a, &b, &mut got);
        for r in 0..16 {
            assert_eq!(got[r] & 0xffff, f32_to_bf16(a[r]) as u32, "row {r}");
            assert_eq!(got[r] >> 16, f32_to_bf16(b[r]) as u32, "row {r}");
        }
    }

    #[test]
    fn rounding_a_run_equals_the_scalar_rounding() {
        for n in [0usize, 1, 15, 31, 32, 33, 70] {
            let src: Vec<f32> = (0..n).map(|i| (i as f32 * 0.731).sin() * 3.0).collect();
            let mut got = vec![7u16; n + 2];
            round_into(&src, &mut got[..n]);
            let want: Vec<u16> = src.iter().map(|v| f32_to_bf16(*v)).collect();
            assert_eq!(&got[..n], &want[..], "{n} values");
            assert_eq!(&got[n..], &[7, 7], "{n}: wrote past the run");
        }
    }

    #[test]
    fn the_vector_packing_equals_the_scalar_one() {
        let mut seed = 0x1234_5678_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
        };
        for k in [1usize, 2, 3, 31, 32, 33, 40, 64, 77, 320] {
            let kp = k.div_ceil(KB) * KB;
            for real in [16, 5] {
                let mut rows = vec![0f32; MB * k];
                for v in rows.iter_mut().take(real * k) {
                    *v = next();
                }
                let mut want = vec![0u32; kp / 2 * MB];
                pack_block_scalar(&rows, k, &mut want);
                let mut got = vec![0u32; kp / 2 * MB];
                pack_block(&rows, k, &mut got);
                assert_eq!(got, want, "k {k}, {real} rows");
            }
        }
    }
}
