//! Separable filtering along each spatial axis with a 1D kernel (zero padding, "same" size),
//! with backward, and the kernel builders of DeepReg's LNCC and multi-scale losses.
//!
//! Each axis is one custom op. Its backward is the adjoint: filtering with the flipped kernel
//! and the mirrored centre, i.e. the same op with other parameters, so gradients of gradients
//! work too. Output rows (lines along the filtered axis's neighbours) are independent rayon
//! tasks; every task only writes its own rows.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::{check_float, contiguous, spatial_ndim, storage, with_float, Real};

/// Filters every spatial axis of `x` with `kernel` (see [`separable_filter_axes`]).
pub fn separable_filter(x: &Tensor, kernel: &[f64]) -> Result<Tensor> {
    let ndim = spatial_ndim("separable_filter", "input", x)?;
    let kernels = vec![kernel.to_vec(); ndim];
    separable_filter_axes(x, &kernels)
}

/// Filters spatial axis `a` of `x` with `kernels[a]`, one axis after the other.
///
/// Along an axis with kernel `k` of length `K`: `y[i] = sum_t k[t] * x[i + t - c]` with
/// `c = (K - 1) / 2` and zeros outside (cross-correlation with TensorFlow's `"same"` padding;
/// for even `K` the extra tap is on the high side). An empty kernel list entry (`[]`) leaves
/// that axis unfiltered. Gradients flow to `x`.
///
/// # Shapes
/// * `x`: `(N, C, H, W)` or `(N, C, D, H, W)`, f32 or f64.
/// * `kernels`: one 1D kernel per spatial axis.
/// * output: same shape as `x`.
pub fn separable_filter_axes(x: &Tensor, kernels: &[Vec<f64>]) -> Result<Tensor> {
    const OP: &str = "separable_filter";
    let ndim = spatial_ndim(OP, "input", x)?;
    check_float(OP, "input", x)?;
    if kernels.len() != ndim {
        bail!("{OP}: need {ndim} kernels, got {}", kernels.len());
    }
    let mut y = x.clone();
    for (a, k) in kernels.iter().enumerate() {
        if k.is_empty() {
            continue;
        }
        if k.iter().any(|v| !v.is_finite()) {
            bail!("{OP}: kernel {a} has non-finite values");
        }
        let op = AxisFilter {
            axis: 2 + a,
            kernel: Arc::new(k.clone()),
            centre: (k.len() - 1) / 2,
        };
        y = y.contiguous()?.apply_op1(op)?;
    }
    Ok(y)
}

/// Normalised gaussian kernel with standard deviation `sigma` (> 0) and `2 * floor(3 sigma) +
/// 1` taps (DeepReg's `gaussian_kernel1d_sigma`).
pub fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let tail = (3.0 * sigma.max(0.0)).floor() as i64;
    let raw: Vec<f64> = (-tail..=tail)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|v| v / sum).collect()
}

/// Gaussian kernel of `size` taps with `sigma = size / 3`, not normalised (DeepReg's
/// `gaussian_kernel1d_size`, used by LNCC, which normalises by the kernel sum itself).
pub fn gaussian_kernel_sized(size: usize) -> Vec<f64> {
    let mean = (size as f64 - 1.0) / 2.0;
    let sigma = size as f64 / 3.0;
    (0..size)
        .map(|i| (-(i as f64 - mean).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect()
}

/// Box kernel: `size` ones (DeepReg's `rectangular_kernel1d`).
pub fn rectangular_kernel(size: usize) -> Vec<f64> {
    vec![1.0; size]
}

/// Triangular kernel of odd `size >= 3` (DeepReg's `triangular_kernel1d`): a box of
/// `size - size / 2` ones, placed as DeepReg places it, smoothed by a box of the same length;
/// e.g. `[1, 2, 1]` for 3 and `[1, 2, 3, 2, 1]` for 5. Other sizes give an empty kernel.
pub fn triangular_kernel(size: usize) -> Vec<f64> {
    if size < 3 || size.is_multiple_of(2) {
        return Vec::new();
    }
    let pad = size / 2;
    let ones = size - pad;
    let mut base = vec![0.0; pad.div_ceil(2)];
    base.extend(std::iter::repeat_n(1.0, ones));
    base.extend(std::iter::repeat_n(0.0, pad / 2));
    // "same" correlation with a box of `ones` taps.
    let lo = (ones - 1) / 2;
    (0..size)
        .map(|i| {
            (0..ones)
                .filter_map(|t| (i + t).checked_sub(lo).and_then(|j| base.get(j)))
                .sum()
        })
        .collect()
}

/// Correlation along `axis` with `kernel`, tap `t` reading `x[i + t - centre]`.
#[derive(Debug, Clone)]
struct AxisFilter {
    axis: usize,
    kernel: Arc<Vec<f64>>,
    centre: usize,
}

impl AxisFilter {
    fn run<T: Real>(&self, x: &[T], dims: &[usize]) -> Vec<T> {
        let n = dims[self.axis];
        let inner: usize = dims[self.axis + 1..].iter().product();
        let k: Vec<T> = self.kernel.iter().map(|&v| T::from_f64(v)).collect();
        let c = self.centre as isize;
        let mut y = vec![T::zero(); x.len()];
        if inner > 1 {
            // Rows of `inner` values: y[o, i, :] = sum_t k[t] x[o, i + t - c, :].
            y.par_chunks_mut(inner).enumerate().for_each(|(row, out)| {
                let (o, i) = (row / n, row % n);
                let base = o * n * inner;
                for (t, &kt) in k.iter().enumerate() {
                    let j = i as isize + t as isize - c;
                    if j < 0 || j >= n as isize || kt == T::zero() {
                        continue;
                    }
                    let src = &x[base + j as usize * inner..base + (j as usize + 1) * inner];
                    for (v, &s) in out.iter_mut().zip(src) {
                        *v += kt * s;
                    }
                }
            });
        } else {
            // Lines along the last axis: shifted axpys over the valid range of each tap.
            let per = (4096 / n).max(1);
            y.par_chunks_mut(n * per)
                .zip(x.par_chunks(n * per))
                .for_each(|(out, src)| {
                    for (yl, xl) in out.chunks_mut(n).zip(src.chunks(n)) {
                        for (t, &kt) in k.iter().enumerate() {
                            let shift = t as isize - c;
                            let lo = (-shift).clamp(0, n as isize) as usize;
                            let hi = (n as isize - shift).clamp(lo as isize, n as isize) as usize;
                            if hi == lo {
                                // The tap reads only padding (a kernel longer than the line).
                                continue;
                            }
                            let s0 = (lo as isize + shift) as usize;
                            for (v, &s) in yl[lo..hi].iter_mut().zip(&xl[s0..s0 + (hi - lo)]) {
                                *v += kt * s;
                            }
                        }
                    }
                });
        }
        y
    }

    /// The adjoint filter: flipped kernel, mirrored centre.
    fn adjoint(&self) -> Self {
        let mut k = (*self.kernel).clone();
        k.reverse();
        Self {
            axis: self.axis,
            centre: k.len() - 1 - self.centre,
            kernel: Arc::new(k),
        }
    }
}

impl CustomOp1 for AxisFilter {
    fn name(&self) -> &'static str {
        "axis-filter"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        let shape = l.shape().clone();
        with_float!("axis-filter", s, |F| {
            let x = contiguous::<F>(s, l, "axis-filter", "input")?;
            Ok(storage(self.run(x, dims), shape))
        })
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1(self.adjoint())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::common::testing::{check_grads, max_abs_diff, values, Rng};
    use crate::ops::conv::conv;
    use candle_core::{DType, Device};

    #[test]
    fn kernels_match_deepreg_definitions() {
        assert_eq!(triangular_kernel(3), vec![1.0, 2.0, 1.0]);
        assert_eq!(triangular_kernel(5), vec![1.0, 2.0, 3.0, 2.0, 1.0]);
        assert_eq!(
            triangular_kernel(7),
            vec![1.0, 2.0, 3.0, 4.0, 3.0, 2.0, 1.0]
        );
        assert!(triangular_kernel(4).is_empty());
        assert_eq!(rectangular_kernel(3), vec![1.0; 3]);
        let g = gaussian_kernel(1.0);
        assert_eq!(g.len(), 7);
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((g[3] / g[4] - (0.5f64).exp()).abs() < 1e-12);
        let s = gaussian_kernel_sized(3);
        assert_eq!(s[1], 1.0);
        assert!((s[0] - (-0.5f64).exp()).abs() < 1e-12);
    }

    #[test]
    fn hand_computed_1d() {
        let x = Tensor::new(&[1.0f64, 2.0, 3.0, 4.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 4))
            .unwrap();
        let y = separable_filter_axes(&x, &[vec![], vec![1.0, 10.0, 100.0]]).unwrap();
        assert_eq!(values(&y), vec![210.0, 321.0, 432.0, 43.0]);
        // Even kernel: taps at i and i + 1.
        let y = separable_filter_axes(&x, &[vec![], vec![1.0, 10.0]]).unwrap();
        assert_eq!(values(&y), vec![21.0, 32.0, 43.0, 4.0]);
    }

    #[test]
    fn kernel_longer_than_the_axis() {
        // A box of 9 taps covers the whole of each line of 2 and of 3 voxels: every output
        // is the sum of the image; the backward (the same op, flipped) too.
        let x = Tensor::new(&[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 3))
            .unwrap();
        let y = separable_filter(&x, &rectangular_kernel(9)).unwrap();
        assert_eq!(values(&y), vec![21.0; 6]);
        let var = candle_core::Var::from_tensor(&x).unwrap();
        let y = separable_filter(var.as_tensor(), &rectangular_kernel(9)).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        // d(Σ y)/dx = 6 for every voxel (each feeds all six outputs).
        assert_eq!(values(g.get(var.as_tensor()).unwrap()), vec![6.0; 6]);
    }

    #[test]
    fn matches_dense_conv_2d_and_3d() {
        let mut rng = Rng::new(40);
        let k = [0.2, -0.5, 1.0, 0.3];
        for shape in [vec![2, 2, 7, 6], vec![1, 2, 5, 6, 7]] {
            let nd = shape.len() - 2;
            let x = rng.tensor(&shape, -1.0, 1.0, DType::F64);
            let y = separable_filter(&x, &k).unwrap();
            // Dense kernel = outer product, applied per channel.
            let kd: Vec<usize> = vec![4; nd];
            let n: usize = kd.iter().product();
            let mut dense = vec![0.0; n];
            for (idx, v) in dense.iter_mut().enumerate() {
                let mut r = idx;
                let mut p = 1.0;
                for _ in 0..nd {
                    p *= k[r % 4];
                    r /= 4;
                }
                *v = p;
            }
            let mut wshape = vec![1, 1];
            wshape.extend(&kd);
            let w = Tensor::from_vec(dense, wshape, &Device::Cpu).unwrap();
            let pad = vec![(1, 2); nd];
            let stride = vec![1; nd];
            for c in 0..shape[1] {
                let xc = x.narrow(1, c, 1).unwrap();
                let want = conv(&xc, &w, None, &stride, &pad).unwrap();
                let got = y.narrow(1, c, 1).unwrap();
                assert!(max_abs_diff(&got, &want) < 1e-12, "{shape:?}");
            }
        }
    }

    #[test]
    fn gradients_2d_and_3d() {
        let mut rng = Rng::new(41);
        let x = rng.tensor(&[1, 2, 4, 5, 6], -1.0, 1.0, DType::F64);
        let f = |t: &[Tensor]| {
            separable_filter_axes(
                &t[0],
                &[gaussian_kernel(0.8), triangular_kernel(3), vec![0.5, 1.0]],
            )
        };
        check_grads(&f, std::slice::from_ref(&x), 1e-6, 1e-7, &[]);
        let x = rng.tensor(&[2, 1, 6, 3], -1.0, 1.0, DType::F64);
        let f = |t: &[Tensor]| separable_filter(&t[0], &rectangular_kernel(4));
        check_grads(&f, std::slice::from_ref(&x), 1e-6, 1e-7, &[]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(separable_filter_axes(&x, &[vec![1.0]]).is_err());
        assert!(separable_filter(&x, &[f64::NAN]).is_err());
        let flat = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(separable_filter(&flat, &[1.0]).is_err());
    }
}
