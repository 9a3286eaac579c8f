//! Access to candle CPU storage for the fused loss kernels.

use voxreg_framework::candle::{self, bail, CpuStorage, Layout, WithDType};

/// The contiguous data of `s` under layout `l`.
pub(crate) fn data<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle::Result<&'a [T]> {
    let all = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => bail!("{op}: input is not contiguous"),
    }
}

/// Runs `$body` with `$t` bound to the Rust type of `$dtype` (f32 or f64).
macro_rules! float_dispatch {
    ($op:expr, $dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            voxreg_framework::candle::DType::F32 => {
                type $t = f32;
                $body
            }
            voxreg_framework::candle::DType::F64 => {
                type $t = f64;
                $body
            }
            other => voxreg_framework::candle::bail!("{}: unsupported dtype {other:?}", $op),
        }
    };
}
pub(crate) use float_dispatch;

/// Splits `0..len` into at most `parts` contiguous ranges of at least `min_len` (one range
/// when `len < 2 min_len`).
pub(crate) fn split_range(len: usize, parts: usize, min_len: usize) -> Vec<(usize, usize)> {
    let parts = parts.min(len / min_len.max(1)).max(1);
    (0..parts)
        .map(|i| (i * len / parts, (i + 1) * len / parts))
        .collect()
}

/// The number of plane ranges to split each of `images` images into so that the tasks
/// (`images × parts`) divide evenly among the rayon threads: `threads / gcd(images,
/// threads)`.
pub(crate) fn parts_per_image(images: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let (mut a, mut b) = (images.max(1), threads);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    threads / a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_divide_evenly_among_threads() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        pool.install(|| {
            assert_eq!(parts_per_image(1), 4);
            assert_eq!(parts_per_image(3), 4);
            assert_eq!(parts_per_image(6), 2);
            assert_eq!(parts_per_image(8), 1);
        });
    }

    #[test]
    fn ranges_cover_the_axis_without_gaps() {
        assert_eq!(split_range(10, 3, 2), [(0, 3), (3, 6), (6, 10)]);
        assert_eq!(split_range(10, 8, 4), [(0, 5), (5, 10)]);
        assert_eq!(split_range(3, 4, 8), [(0, 3)]);
    }
}
