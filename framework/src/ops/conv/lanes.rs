//! f32 vector registers for the direct convolution kernels: one [`Lanes`] implementation per
//! instruction set (AVX-512F, AVX2 + FMA, and a portable one the compiler vectorises as it can),
//! chosen at run time by [`Isa::detect`].

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The instruction set a direct kernel runs with.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// 16 f32 lanes, 32 registers.
    Avx512,
    /// 8 f32 lanes with fused multiply-add, 16 registers.
    Avx2,
    /// Plain Rust on arrays of 8 values (any CPU).
    Portable,
}

impl Isa {
    /// The widest instruction set this CPU supports.
    pub(crate) fn detect() -> Self {
        Self::supported()[0]
    }

    /// Every instruction set this CPU can run, widest first (always ends with `Portable`).
    pub(crate) fn supported() -> Vec<Self> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Self::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.push(Self::Avx2);
            }
        }
        out.push(Self::Portable);
        out
    }

    /// f32 lanes of this instruction set's registers (the `N` of its [`Lanes`]).
    pub(crate) fn lanes(self) -> usize {
        match self {
            Self::Avx512 => 16,
            Self::Avx2 | Self::Portable => 8,
        }
    }
}

/// A vector of `N` f32 lanes. Every method is `unsafe`: the caller must run on a CPU with the
/// implementation's instruction set and pass pointers valid for `N` values.
pub(crate) trait Lanes {
    /// The register type.
    type V: Copy;
    /// Lanes per register.
    const N: usize;
    /// All zeros.
    ///
    /// # Safety
    /// The CPU supports the instruction set.
    unsafe fn zero() -> Self::V;
    /// `N` values from `p` (any alignment).
    ///
    /// # Safety
    /// The CPU supports the instruction set; `p` is valid for reading `N` values.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores `v` at `p` (any alignment).
    ///
    /// # Safety
    /// The CPU supports the instruction set; `p` is valid for writing `N` values.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The first `n` values from `p` (`n <= N`), zeros in the other lanes; nothing past them is
    /// read.
    ///
    /// # Safety
    /// The CPU supports the instruction set; `p` is valid for reading `n` values.
    unsafe fn load_first(p: *const f32, n: usize) -> Self::V;
    /// Lanes `lo..hi` from `p + lo ..` (`lo <= hi <= N`), zeros in the others; nothing outside
    /// them is read (`p` itself may point outside the buffer).
    ///
    /// # Safety
    /// The CPU supports the instruction set; `p + i` is valid for reading for `lo <= i < hi`.
    unsafe fn load_range(p: *const f32, lo: usize, hi: usize) -> Self::V;
    /// Stores the first `n` lanes of `v` at `p` (`n <= N`); nothing past them is written.
    ///
    /// # Safety
    /// The CPU supports the instruction set; `p` is valid for writing `n` values.
    unsafe fn store_first(p: *mut f32, v: Self::V, n: usize);
    /// `*p` in every lane.
    ///
    /// # Safety
    /// The CPU supports the instruction set; `p` is valid for reading one value.
    unsafe fn splat(p: *const f32) -> Self::V;
    /// `a * b + c` per lane (fused where the instruction set has it).
    ///
    /// # Safety
    /// The CPU supports the instruction set.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b` per lane.
    ///
    /// # Safety
    /// The CPU supports the instruction set.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a - b` per lane.
    ///
    /// # Safety
    /// The CPU supports the instruction set.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// The sum of the lanes.
    ///
    /// # Safety
    /// The CPU supports the instruction set.
    unsafe fn sum(v: Self::V) -> f32;
    /// The even and odd values of the `2 N` values `a` then `b`: `([a0, a2, …, b0, b2, …],
    /// [a1, a3, …, b1, b3, …])`.
    ///
    /// # Safety
    /// The CPU supports the instruction set.
    unsafe fn deinterleave(a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// The inverse of [`deinterleave`](Self::deinterleave): `even` and `odd` alternated,
    /// `([e0, o0, e1, o1, …], [e_{N/2}, o_{N/2}, …])`.
    ///
    /// # Safety
    /// The CPU supports the instruction set.
    unsafe fn interleave(even: Self::V, odd: Self::V) -> (Self::V, Self::V);
}

/// AVX-512F lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    type V = __m512;
    const N: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable values.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable values.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and `n` readable values; masked-off lanes are
        // not accessed.
        unsafe { _mm512_maskz_loadu_ps(first_lanes_mask(n), p) }
    }
    #[inline(always)]
    unsafe fn load_range(p: *const f32, lo: usize, hi: usize) -> __m512 {
        let mask = first_lanes_mask(hi) & !first_lanes_mask(lo);
        // SAFETY: the caller guarantees AVX-512F and readable lanes `lo..hi`; masked-off lanes
        // are not accessed.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m512, n: usize) {
        // SAFETY: the caller guarantees AVX-512F and `n` writable values; masked-off lanes are
        // not accessed.
        unsafe { _mm512_mask_storeu_ps(p, first_lanes_mask(n), v) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and one readable value.
        unsafe { _mm512_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn deinterleave(a: __m512, b: __m512) -> (__m512, __m512) {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (
                _mm512_permutex2var_ps(a, even, b),
                _mm512_permutex2var_ps(a, odd, b),
            )
        }
    }
    #[inline(always)]
    unsafe fn interleave(even: __m512, odd: __m512) -> (__m512, __m512) {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe {
            let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let hi =
                _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            (
                _mm512_permutex2var_ps(even, lo, odd),
                _mm512_permutex2var_ps(even, hi, odd),
            )
        }
    }
    #[inline(always)]
    unsafe fn sum(v: __m512) -> f32 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_reduce_add_ps(v) }
    }
}

/// The AVX-512 mask selecting lanes `0..n` (`n <= 16`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn first_lanes_mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// The AVX2 mask selecting lanes `0..n` (`n <= 8`): all bits set in those lanes.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn avx2_first_lanes(n: usize) -> __m256i {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane)
    }
}

/// AVX2 + FMA lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2 {
    type V = __m256;
    const N: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: the caller guarantees AVX2.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and 8 readable values.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees AVX2 and 8 writable values.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and `n` readable values; masked-off lanes are not
        // accessed.
        unsafe { _mm256_maskload_ps(p, avx2_first_lanes(n)) }
    }
    #[inline(always)]
    unsafe fn load_range(p: *const f32, lo: usize, hi: usize) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and readable lanes `lo..hi`; masked-off lanes are
        // not accessed.
        unsafe {
            let mask = _mm256_andnot_si256(avx2_first_lanes(lo), avx2_first_lanes(hi));
            _mm256_maskload_ps(p, mask)
        }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m256, n: usize) {
        // SAFETY: the caller guarantees AVX2 and `n` writable values; masked-off lanes are not
        // accessed.
        unsafe { _mm256_maskstore_ps(p, avx2_first_lanes(n), v) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and one readable value.
        unsafe { _mm256_broadcast_ss(&*p) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the caller guarantees FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn deinterleave(a: __m256, b: __m256) -> (__m256, __m256) {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            // Per 128-bit half: [a0 a2 b0 b2 | a4 a6 b4 b6], then the 64-bit pairs reordered.
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            (
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                    even,
                ))),
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                    odd,
                ))),
            )
        }
    }
    #[inline(always)]
    unsafe fn interleave(even: __m256, odd: __m256) -> (__m256, __m256) {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            // [e0 o0 e1 o1 | e4 o4 e5 o5] and [e2 o2 e3 o3 | e6 o6 e7 o7], then the halves.
            let lo = _mm256_unpacklo_ps(even, odd);
            let hi = _mm256_unpackhi_ps(even, odd);
            (
                _mm256_permute2f128_ps::<0x20>(lo, hi),
                _mm256_permute2f128_ps::<0x31>(lo, hi),
            )
        }
    }
    #[inline(always)]
    unsafe fn sum(v: __m256) -> f32 {
        // SAFETY: the caller guarantees AVX.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }
}

/// Portable lanes: 8 values in an array, plain multiply and add.
pub(crate) struct Portable;

impl Lanes for Portable {
    type V = [f32; 8];
    const N: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        // SAFETY: the caller guarantees 8 readable values.
        unsafe { p.cast::<[f32; 8]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 8]) {
        // SAFETY: the caller guarantees 8 writable values.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> [f32; 8] {
        let mut out = [0.0; 8];
        for (i, v) in out.iter_mut().enumerate().take(n) {
            // SAFETY: the caller guarantees `n` readable values.
            *v = unsafe { *p.add(i) };
        }
        out
    }
    #[inline(always)]
    unsafe fn load_range(p: *const f32, lo: usize, hi: usize) -> [f32; 8] {
        let mut out = [0.0; 8];
        for (i, v) in out.iter_mut().enumerate().take(hi).skip(lo) {
            // SAFETY: the caller guarantees readable lanes `lo..hi`.
            *v = unsafe { *p.wrapping_add(i) };
        }
        out
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: [f32; 8], n: usize) {
        for (i, &x) in v.iter().enumerate().take(n) {
            // SAFETY: the caller guarantees `n` writable values.
            unsafe { *p.add(i) = x };
        }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> [f32; 8] {
        // SAFETY: the caller guarantees one readable value.
        [unsafe { *p }; 8]
    }
    #[inline(always)]
    unsafe fn fma(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn add(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    unsafe fn sub(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] - b[i])
    }
    #[inline(always)]
    unsafe fn deinterleave(a: [f32; 8], b: [f32; 8]) -> ([f32; 8], [f32; 8]) {
        let at = |i: usize| if i < 8 { a[i] } else { b[i - 8] };
        (
            std::array::from_fn(|i| at(2 * i)),
            std::array::from_fn(|i| at(2 * i + 1)),
        )
    }
    #[inline(always)]
    unsafe fn interleave(even: [f32; 8], odd: [f32; 8]) -> ([f32; 8], [f32; 8]) {
        let at = |i: usize| {
            if i.is_multiple_of(2) {
                even[i / 2]
            } else {
                odd[i / 2]
            }
        };
        (std::array::from_fn(at), std::array::from_fn(|i| at(i + 8)))
    }
    #[inline(always)]
    unsafe fn sum(v: [f32; 8]) -> f32 {
        ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deinterleave`, `interleave` and `load_range` of `L` against their definitions.
    ///
    /// # Safety
    /// The CPU supports `L`.
    unsafe fn check<L: Lanes>() {
        let n = L::N;
        let values: Vec<f32> = (0..2 * n).map(|i| i as f32).collect();
        let (mut even, mut odd) = (vec![0.0; n], vec![0.0; n]);
        // SAFETY: the caller guarantees the CPU; every pointer covers `n` values.
        unsafe {
            let (e, o) = L::deinterleave(L::load(values.as_ptr()), L::load(values[n..].as_ptr()));
            L::store(even.as_mut_ptr(), e);
            L::store(odd.as_mut_ptr(), o);
        }
        let want_even: Vec<f32> = (0..n).map(|i| (2 * i) as f32).collect();
        let want_odd: Vec<f32> = (0..n).map(|i| (2 * i + 1) as f32).collect();
        assert_eq!((&even, &odd), (&want_even, &want_odd));
        let mut back = vec![0.0; 2 * n];
        // SAFETY: as above.
        unsafe {
            let (lo, hi) = L::interleave(L::load(even.as_ptr()), L::load(odd.as_ptr()));
            L::store(back.as_mut_ptr(), lo);
            L::store(back[n..].as_mut_ptr(), hi);
        }
        assert_eq!(back, values);
        for (lo, hi) in [(0, n), (0, 1), (1, n), (3, 5), (n - 1, n), (2, 2)] {
            let mut got = vec![-1.0; n];
            // SAFETY: lanes `lo..hi` of `values` are readable.
            unsafe { L::store(got.as_mut_ptr(), L::load_range(values.as_ptr(), lo, hi)) };
            let want: Vec<f32> = (0..n)
                .map(|i| if (lo..hi).contains(&i) { i as f32 } else { 0.0 })
                .collect();
            assert_eq!(got, want, "lanes {lo}..{hi}");
        }
    }

    #[test]
    fn shuffles_and_ranged_loads_of_every_instruction_set() {
        for isa in Isa::supported() {
            match isa {
                // SAFETY: `supported` lists only what this CPU runs.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { check::<Avx512>() },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { check::<Avx2>() },
                // SAFETY: the portable lanes need no CPU feature.
                _ => unsafe { check::<Portable>() },
            }
        }
    }
}
