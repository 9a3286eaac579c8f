//! The process's memory-allocation policy for training and prediction: the `voxreg` binary
//! applies it at start-up, and the benchmarks of ops, losses, networks and training steps
//! apply it too, so they measure what the binary does.
//!
//! Training allocates and frees the same large tensors (several MiB each) at every step.
//! glibc's `malloc` serves such blocks with fresh `mmap`s and returns them on `free`, so every
//! step pays the page faults of first touching them again. [`keep_freed_memory`] makes
//! `malloc` keep freed blocks for reuse instead: blocks up to 32 MiB (glibc's limit) come
//! from the heap, and the heap is not trimmed back to the system.

/// Largest block served from the heap rather than by `mmap` (glibc caps it at 32 MiB on
/// 64-bit systems).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 * 1024 * 1024;

/// Free memory at the top of the heap kept rather than returned to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;

/// Asks glibc's `malloc` to keep freed blocks of up to 32 MiB for reuse (no `mmap` per large
/// tensor, no trimming), trading resident memory between steps for fewer page faults. Call
/// it once, early in `main`; it does nothing on other platforms. Returns whether both
/// settings were accepted.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's tuning parameters; it is safe to call at any
        // time, and these values are within the ranges glibc documents.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Set (to anything) to keep glibc's default allocation policy: [`apply`] then does nothing.
pub const SYSTEM_MALLOC_ENV: &str = "VOXREG_SYSTEM_MALLOC";

/// Applies [`keep_freed_memory`] unless `VOXREG_SYSTEM_MALLOC` is set; returns whether the
/// policy is in effect. The `voxreg` binary and the benchmarks call this first thing.
pub fn apply() -> bool {
    std::env::var_os(SYSTEM_MALLOC_ENV).is_none() && keep_freed_memory()
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings() {
        assert!(super::keep_freed_memory());
    }
}
