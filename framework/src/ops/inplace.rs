//! In-place optimiser updates on the CPU: each rewrites a buffer in one pass instead of the
//! dozen full-size temporaries the same formula costs as tensor ops. They compute exactly
//! what the tensor-op form computes (the same operations in the same order, in the
//! buffer's dtype), so an optimiser gives bit-identical results either way.
//!
//! Each function returns `Ok(false)` and changes nothing where it does not apply (a device
//! other than the CPU, a dtype other than f32 / f64, a buffer that is not contiguous, or
//! mismatched shapes): the caller then uses the tensor-op form. No gradient flows through
//! them: they are for state that is not differentiated.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor, WithDType};
use rayon::prelude::*;

/// Values per rayon task: large enough that splitting costs nothing next to the pass.
const CHUNK: usize = 1 << 16;

/// Whether the in-place updates apply to `tensors`: every one a contiguous f32 or f64 CPU
/// buffer of the first one's dtype and shape.
pub fn applies(tensors: &[&Tensor]) -> bool {
    let Some(first) = tensors.first() else {
        return false;
    };
    tensors.iter().all(|t| {
        t.device().is_cpu()
            && t.dtype() == first.dtype()
            && t.shape() == first.shape()
            && t.is_contiguous()
            && matches!(t.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
    })
}

/// The contiguous `[start, end)` range of a layout.
fn range(layout: &Layout) -> Result<std::ops::Range<usize>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(start..end),
        None => candle_core::bail!("in-place update of a non-contiguous buffer"),
    }
}

/// A float type the kernels run in.
trait Float: Copy + Send + Sync + 'static {
    fn of(value: f64) -> Self;
    fn mul(self, other: Self) -> Self;
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    fn div(self, other: Self) -> Self;
    fn sqrt(self) -> Self;
    fn max(self, other: Self) -> Self;
}

macro_rules! float {
    ($t:ty) => {
        impl Float for $t {
            #[inline(always)]
            fn of(value: f64) -> Self {
                value as $t
            }
            #[inline(always)]
            fn mul(self, other: Self) -> Self {
                self * other
            }
            #[inline(always)]
            fn add(self, other: Self) -> Self {
                self + other
            }
            #[inline(always)]
            fn sub(self, other: Self) -> Self {
                self - other
            }
            #[inline(always)]
            fn div(self, other: Self) -> Self {
                self / other
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                // candle's `maximum`: the first operand unless the second is larger.
                if other > self {
                    other
                } else {
                    self
                }
            }
        }
    };
}
float!(f32);
float!(f64);

/// `dst[i] ← update(dst[i], a[i])` in parallel chunks.
fn each1<T: Float>(dst: &mut [T], a: &[T], update: impl Fn(T, T) -> T + Sync) {
    dst.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .for_each(|(out, a)| {
            for (value, &a) in out.iter_mut().zip(a) {
                *value = update(*value, a);
            }
        });
}

/// `dst[i] ← update(dst[i], a[i], b[i])` in parallel chunks.
fn each2<T: Float>(dst: &mut [T], a: &[T], b: &[T], update: impl Fn(T, T, T) -> T + Sync) {
    dst.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(out, (a, b))| {
            for ((value, &a), &b) in out.iter_mut().zip(a).zip(b) {
                *value = update(*value, a, b);
            }
        });
}

/// An element-wise in-place update of a buffer from `N` others.
trait Kernel<const N: usize>: Sync {
    fn apply<T: Float>(&self, dst: &mut [T], sources: [&[T]; N]);
}

/// The contiguous f32 (or f64) slices of `dst` and the sources, handed to `kernel`.
fn run<K: Kernel<N>, const N: usize>(
    kernel: &K,
    dst: &mut CpuStorage,
    dst_l: &Layout,
    sources: [(&CpuStorage, &Layout); N],
) -> Result<()> {
    match dst {
        CpuStorage::F32(dst) => run_typed(kernel, dst, dst_l, sources),
        CpuStorage::F64(dst) => run_typed(kernel, dst, dst_l, sources),
        _ => candle_core::bail!("in-place update: f32 or f64 buffers only"),
    }
}

/// [`run`] for one float type: the sources must hold it too.
fn run_typed<T: Float + WithDType, K: Kernel<N>, const N: usize>(
    kernel: &K,
    dst: &mut [T],
    dst_l: &Layout,
    sources: [(&CpuStorage, &Layout); N],
) -> Result<()> {
    let mut slices: [&[T]; N] = [&[]; N];
    for (slot, (storage, layout)) in slices.iter_mut().zip(sources) {
        *slot = &storage.as_slice::<T>()?[range(layout)?];
    }
    kernel.apply(&mut dst[range(dst_l)?], slices);
    Ok(())
}

/// `dst ← β·dst + (1 − β)·g`, or `g²` in place of `g` when `squared`.
struct Moment {
    beta: f64,
    squared: bool,
}

impl Kernel<1> for Moment {
    fn apply<T: Float>(&self, dst: &mut [T], sources: [&[T]; 1]) {
        let (keep, take, squared) = (T::of(self.beta), T::of(1.0 - self.beta), self.squared);
        if squared {
            each1(dst, sources[0], |v, g| v.mul(keep).add(g.mul(g).mul(take)));
        } else {
            each1(dst, sources[0], |m, g| m.mul(keep).add(g.mul(take)));
        }
    }
}

/// `dst ← max(dst, v)`.
struct Maximum;

impl Kernel<1> for Maximum {
    fn apply<T: Float>(&self, dst: &mut [T], sources: [&[T]; 1]) {
        each1(dst, sources[0], |a, b| a.max(b));
    }
}

/// `θ ← θ − step·m / (√v + ε)`.
struct AdamStep {
    step_size: f64,
    epsilon: f64,
}

impl Kernel<2> for AdamStep {
    fn apply<T: Float>(&self, dst: &mut [T], sources: [&[T]; 2]) {
        let (step, epsilon) = (T::of(self.step_size), T::of(self.epsilon));
        each2(dst, sources[0], sources[1], |theta, m, v| {
            theta.sub(m.div(v.sqrt().add(epsilon)).mul(step))
        });
    }
}

macro_rules! one_source_op {
    ($kernel:ty, $name:literal) => {
        impl InplaceOp2 for $kernel {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                dst: &mut CpuStorage,
                dst_l: &Layout,
                src: &CpuStorage,
                src_l: &Layout,
            ) -> Result<()> {
                run(self, dst, dst_l, [(src, src_l)])
            }
        }
    };
}
one_source_op!(Moment, "moment");
one_source_op!(Maximum, "maximum");

impl InplaceOp3 for AdamStep {
    fn name(&self) -> &'static str {
        "adam-step"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        m_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> Result<()> {
        run(self, dst, dst_l, [(m, m_l), (v, v_l)])
    }
}

/// A running moment, in place: `m ← β·m + (1 − β)·g` (`squared: false`) or
/// `v ← β·v + (1 − β)·g²` (`squared: true`), as `m * β + g * (1 − β)` computes it.
/// `Ok(false)` (nothing changed) where it does not apply.
///
/// # Shapes
/// * `moment`, `gradient`: one shape.
pub fn moment_update(moment: &Tensor, gradient: &Tensor, beta: f64, squared: bool) -> Result<bool> {
    if !applies(&[moment, gradient]) {
        return Ok(false);
    }
    moment.inplace_op2(gradient, &Moment { beta, squared })?;
    Ok(true)
}

/// A running maximum, in place: `a ← max(a, b)`, as `a.maximum(b)` computes it.
/// `Ok(false)` (nothing changed) where it does not apply.
///
/// # Shapes
/// * `a`, `b`: one shape.
pub fn maximum_update(a: &Tensor, b: &Tensor) -> Result<bool> {
    if !applies(&[a, b]) {
        return Ok(false);
    }
    a.inplace_op2(b, &Maximum)?;
    Ok(true)
}

/// Adam's weight update, in place: `θ ← θ − step·m / (√v + ε)`, as
/// `θ − (m / (√v + ε)) · step` computes it. `Ok(false)` (nothing changed) where it does not
/// apply.
///
/// # Shapes
/// * `weight`, `m`, `v`: one shape.
pub fn adam_update(
    weight: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step_size: f64,
    epsilon: f64,
) -> Result<bool> {
    if !applies(&[weight, m, v]) {
        return Ok(false);
    }
    weight.inplace_op3(m, v, &AdamStep { step_size, epsilon })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn data(seed: u64, n: usize, dtype: DType) -> Tensor {
        let values: Vec<f64> = (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f64 / 500.0) - 1.0)
            .collect();
        Tensor::from_vec(values, n, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// How many values differ in any bit.
    fn differing(a: &Tensor, b: &Tensor) -> usize {
        bits(a)
            .iter()
            .zip(bits(b))
            .filter(|(x, y)| **x != *y)
            .count()
    }

    fn bits(t: &Tensor) -> Vec<u64> {
        match t.dtype() {
            DType::F32 => t
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits() as u64)
                .collect(),
            _ => t
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
        }
    }

    #[test]
    fn in_place_updates_equal_the_tensor_op_form_bit_for_bit() {
        // More values than one chunk, so the parallel split is exercised.
        let n = CHUNK * 2 + 77;
        for dtype in [DType::F32, DType::F64] {
            let g = data(1, n, dtype);
            let m = data(2, n, dtype);
            let v = (data(3, n, dtype).abs().unwrap() + 0.01).unwrap();
            let theta = data(4, n, dtype);

            let m_ops = ((&m * 0.9).unwrap() + (&g * (1.0 - 0.9)).unwrap()).unwrap();
            let m_inplace = m.copy().unwrap();
            assert!(moment_update(&m_inplace, &g, 0.9, false).unwrap());
            assert_eq!(differing(&m_inplace, &m_ops), 0, "{dtype:?} first moment");

            let v_ops =
                ((&v * 0.999).unwrap() + (g.sqr().unwrap() * (1.0 - 0.999)).unwrap()).unwrap();
            let v_inplace = v.copy().unwrap();
            assert!(moment_update(&v_inplace, &g, 0.999, true).unwrap());
            assert_eq!(differing(&v_inplace, &v_ops), 0, "{dtype:?} second moment");

            let max_ops = v.maximum(&v_ops).unwrap();
            let max_inplace = v.copy().unwrap();
            assert!(maximum_update(&max_inplace, &v_ops).unwrap());
            assert_eq!(differing(&max_inplace, &max_ops), 0, "{dtype:?} maximum");

            let update = (&m_ops / (v_ops.sqrt().unwrap() + 1e-7).unwrap()).unwrap();
            let theta_ops = (&theta - (update * 0.003).unwrap()).unwrap();
            let theta_inplace = theta.copy().unwrap();
            assert!(adam_update(&theta_inplace, &m_ops, &v_ops, 0.003, 1e-7).unwrap());
            assert_eq!(differing(&theta_inplace, &theta_ops), 0, "{dtype:?} weight");
        }
    }

    #[test]
    fn where_it_does_not_apply_nothing_changes() {
        let a = data(1, 6, DType::F32).reshape((2, 3)).unwrap();
        let transposed = a.t().unwrap();
        let b = data(2, 6, DType::F32).reshape((3, 2)).unwrap();
        let before = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(!moment_update(&b, &transposed, 0.9, false).unwrap());
        assert!(!moment_update(
            &b,
            &data(3, 6, DType::F64).reshape((3, 2)).unwrap(),
            0.9,
            false
        )
        .unwrap());
        assert!(!adam_update(&b, &b, &a, 0.1, 1e-7).unwrap());
        assert_eq!(b.flatten_all().unwrap().to_vec1::<f32>().unwrap(), before);
        let half = data(4, 6, DType::F16);
        assert!(!maximum_update(&half, &half.copy().unwrap()).unwrap());
    }
}
