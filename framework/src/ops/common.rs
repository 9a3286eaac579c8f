//! Shared helpers for the CPU kernels of the spatial ops: the float trait the kernels are generic
//! over, access to contiguous storage, shape checks and the splitting of outputs into disjoint
//! per-task slices for rayon.
//!
//! Public for third-party ops: a plugin that writes its own CPU kernel (a candle `CustomOp`)
//! can reuse the dtype trait, the storage access, the shape checks and the work splitting.

use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor, WithDType};

/// Floating-point element type the CPU kernels are written for (`f32` and `f64`).
pub trait Real:
    WithDType + std::ops::Neg<Output = Self> + Default + std::fmt::Debug + std::iter::Sum
{
    /// `floor(self)` as an integer, for `|self| < 2^31` (callers clamp first; NaN gives 0).
    /// Written with integer conversions so that it inlines and vectorises without SSE4.1
    /// (`floorf` is a libm call on baseline x86-64).
    fn floor_i32(self) -> i32;
    /// Round to the nearest integer, ties to even (as `nearbyint` in C), for `|self| < 2^22`.
    fn round_even_i32(self) -> i32;
    /// Exact conversion from `i32`.
    fn from_i32(v: i32) -> Self;
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;
    /// Exact conversion from a small integer.
    fn from_usize(v: usize) -> Self;
}

macro_rules! impl_real {
    ($t:ty, $magic:expr) => {
        impl Real for $t {
            #[inline(always)]
            fn floor_i32(self) -> i32 {
                let t = self as i32;
                t - ((t as $t) > self) as i32
            }
            #[inline(always)]
            fn round_even_i32(self) -> i32 {
                // Adding and removing 1.5 * 2^mantissa rounds to an integer, ties to even.
                ((self + $magic) - $magic) as i32
            }
            #[inline(always)]
            fn from_i32(v: i32) -> Self {
                v as $t
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn from_usize(v: usize) -> Self {
                v as $t
            }
        }
    };
}
impl_real!(f32, 12_582_912.0);
impl_real!(f64, 6_755_399_441_055_744.0);

/// Runs `f` compiled for AVX2 + FMA when the CPU has them (the closure is inlined into a
/// function with those target features, so its loops vectorise with 256-bit registers), else
/// for the baseline target.
#[inline(always)]
pub fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `avx2_fma` is compiled for.
            return unsafe { avx2_fma(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `$body` with `$t` naming the float type of storage `$s` (`f32` or `f64`), the dtype
/// dispatch of every op's `cpu_fwd`; any other dtype is an error naming op `$op`.
macro_rules! with_float {
    ($op:expr, $s:expr, |$t:ident| $body:expr) => {
        match $s {
            ::candle_core::CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            ::candle_core::CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            other => ::candle_core::bail!("{}: unsupported dtype {:?}", $op, other.dtype()),
        }
    };
}
pub(crate) use with_float;

/// The contiguous data of a storage/layout pair, or an error naming the op and the argument.
pub fn contiguous<'a, T: Real>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
    what: &str,
) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: {what} must be contiguous"),
    }
}

/// Checks that `t` has a floating-point dtype the kernels support.
pub fn check_float(op: &str, what: &str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        dt => bail!("{op}: {what} must be f32 or f64, got {dt:?}"),
    }
}

/// Checks that `t` is `(N, C, *spatial)` with 2 or 3 spatial axes and returns the number of
/// spatial axes.
pub fn spatial_ndim(op: &str, what: &str, t: &Tensor) -> Result<usize> {
    let rank = t.rank();
    if rank != 4 && rank != 5 {
        bail!(
            "{op}: {what} must be (N, C, H, W) or (N, C, D, H, W), got shape {:?}",
            t.dims()
        );
    }
    Ok(rank - 2)
}

/// The spatial dims of an `(N, C, *spatial)` shape padded to three axes with leading ones:
/// `(H, W)` becomes `[1, H, W]`.
///
/// # Panics
/// If `dims` has fewer than 4 entries (check with [`spatial_ndim`] first).
pub fn spatial3(dims: &[usize]) -> [usize; 3] {
    let sp = &dims[2..];
    match sp.len() {
        2 => [1, sp[0], sp[1]],
        _ => [sp[0], sp[1], sp[2]],
    }
}

/// Number of rayon tasks to split `work` independent units into: a few per thread, so that
/// uneven tasks balance, and never more than `work`.
pub fn task_count(work: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (4 * threads).min(work).max(1)
}

/// Splits a `(N, K, rows * row_len)` buffer into disjoint per-task views: for every batch item
/// `n` and every row range `[r0, r1)` of `ranges`, the `K` slices `buf[n, k, r0*row_len ..
/// r1*row_len]`. The result is ordered by batch item, then by range.
///
/// # Panics
/// If the ranges are not ascending and disjoint within `[0, rows]`, or `buf` is shorter than
/// `n · k · rows · row_len` (as [`even_ranges`] makes them, they are).
pub fn split_rows<'a, T>(
    buf: &'a mut [T],
    n: usize,
    k: usize,
    rows: usize,
    row_len: usize,
    ranges: &[(usize, usize)],
) -> Vec<RowTask<'a, T>> {
    let plane = rows * row_len;
    let mut tasks: Vec<RowTask<'a, T>> = Vec::with_capacity(n * ranges.len());
    for (b, batch) in buf.chunks_mut(k * plane).enumerate() {
        let first = tasks.len();
        for &(r0, r1) in ranges {
            tasks.push(RowTask {
                batch: b,
                r0,
                r1,
                parts: Vec::with_capacity(k),
            });
        }
        for chan in batch.chunks_mut(plane) {
            let mut rest = chan;
            let mut consumed = 0;
            for (t, &(r0, r1)) in ranges.iter().enumerate() {
                let skip = (r0 - consumed) * row_len;
                let (_, tail) = std::mem::take(&mut rest).split_at_mut(skip);
                let (head, tail) = tail.split_at_mut((r1 - r0) * row_len);
                tasks[first + t].parts.push(head);
                rest = tail;
                consumed = r1;
            }
        }
    }
    tasks
}

/// One task's share of an output buffer: batch item `batch`, rows `[r0, r1)`, one slice per
/// channel (or per displacement component).
pub struct RowTask<'a, T> {
    /// Batch index.
    pub batch: usize,
    /// First row (inclusive).
    pub r0: usize,
    /// Last row (exclusive).
    pub r1: usize,
    /// `parts[k]` holds rows `[r0, r1)` of channel `k`.
    pub parts: Vec<&'a mut [T]>,
}

/// Even split of `rows` into `tasks` contiguous ranges.
pub fn even_ranges(rows: usize, tasks: usize) -> Vec<(usize, usize)> {
    let tasks = tasks.clamp(1, rows.max(1));
    (0..tasks)
        .map(|t| (rows * t / tasks, rows * (t + 1) / tasks))
        .collect()
}

/// Wraps a kernel result as candle storage.
pub fn storage<T: Real>(data: Vec<T>, shape: impl Into<Shape>) -> (CpuStorage, Shape) {
    (T::to_cpu_storage_owned(data), shape.into())
}

#[cfg(test)]
pub(crate) mod testing {
    //! Test helpers: seeded random tensors and central finite-difference gradient checks.

    use candle_core::{DType, Device, Result, Tensor, Var};

    /// A small deterministic generator (splitmix64) for test data.
    pub struct Rng(u64);

    impl Rng {
        /// A generator with the given seed.
        pub fn new(seed: u64) -> Self {
            Self(seed)
        }

        /// Uniform in `[0, 1)`.
        pub fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }

        /// A tensor with entries uniform in `[lo, hi)`.
        pub fn tensor(&mut self, shape: &[usize], lo: f64, hi: f64, dtype: DType) -> Tensor {
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n).map(|_| lo + (hi - lo) * self.uniform()).collect();
            Tensor::from_vec(v, shape, &Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .expect("test tensor")
        }
    }

    /// Flattened f64 values of a tensor.
    pub fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f64>())
            .expect("tensor values")
    }

    /// Largest absolute difference between two tensors of the same shape.
    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims(), "shape mismatch");
        values(a)
            .iter()
            .zip(values(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    /// Checks the gradients of `loss = sum(f(inputs) * weights)` w.r.t. every input against
    /// central finite differences (step `eps`), in f64, to relative-or-absolute tolerance `tol`.
    /// `skip` lists inputs whose gradient is not checked.
    pub fn check_grads(
        f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
        inputs: &[Tensor],
        eps: f64,
        tol: f64,
        skip: &[usize],
    ) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(&t.to_dtype(DType::F64).expect("f64")).expect("var"))
            .collect();
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&tensors).expect("forward");
        let mut rng = Rng::new(99);
        let weights = rng.tensor(out.dims(), -1.0, 1.0, DType::F64);
        let loss_of = |ts: &[Tensor]| -> f64 {
            f(ts)
                .and_then(|o| (o * &weights)?.sum_all())
                .and_then(|s| s.to_scalar::<f64>())
                .expect("loss")
        };
        let loss = (out * &weights).and_then(|o| o.sum_all()).expect("loss");
        let grads = loss.backward().expect("backward");
        for (i, var) in vars.iter().enumerate() {
            if skip.contains(&i) {
                continue;
            }
            let analytic = match grads.get(var.as_tensor()) {
                Some(g) => values(g),
                None => vec![0.0; var.elem_count()],
            };
            let base = values(var.as_tensor());
            for j in 0..base.len() {
                let probe = |delta: f64| {
                    let mut v = base.clone();
                    v[j] += delta;
                    let t = Tensor::from_vec(v, var.dims(), &Device::Cpu).expect("probe");
                    let mut ts = tensors.clone();
                    ts[i] = t;
                    loss_of(&ts)
                };
                let numeric = (probe(eps) - probe(-eps)) / (2.0 * eps);
                let err = (numeric - analytic[j]).abs();
                assert!(
                    err <= tol * (1.0 + numeric.abs()),
                    "input {i}, element {j}: analytic {} vs numeric {numeric}",
                    analytic[j]
                );
            }
        }
    }
}
