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
    /// The sum of the lanes.
    ///
    /// # Safety
    /// The CPU supports the instruction set.
    unsafe fn sum(v: Self::V) -> f32;
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
    unsafe fn sum(v: [f32; 8]) -> f32 {
        ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))
    }
}
