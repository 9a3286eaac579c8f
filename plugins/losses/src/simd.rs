//! Running kernels compiled for AVX2 + FMA where the CPU has them.

/// Defines `fn $name`, which runs `$inner` (an `#[inline(always)]` function with the same
/// arguments) compiled for AVX2 + FMA when the CPU has them, so that its loops vectorise with
/// 256-bit registers, and for the baseline target otherwise. A wrapper with the target
/// features that inlines the kernel, rather than a closure, makes sure the kernel really is
/// compiled with them.
macro_rules! simd_kernel {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident $(<$($gen:ident: $bound:path),*>)?
            ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $inner:ident
    ) => {
        $(#[$meta])*
        $vis fn $name $(<$($gen: $bound),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn with_avx2 $(<$($gen: $bound),*>)? ($($arg: $ty),*) $(-> $ret)? {
                    $inner($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the features `with_avx2` is compiled for.
                    return unsafe { with_avx2($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}
pub(crate) use simd_kernel;
