//! Resizing (nearest and linear) of 2D and 3D images to an arbitrary shape, with backward.
//!
//! Linear resizing is separable: the image is resampled along one spatial axis at a time by a
//! 1D two-tap map (an index pair and two weights per output position). Each pass is a custom
//! op whose backward is the transposed map (a per-line scatter, parallel over lines, so without
//! races), and whose transposed map's backward is the map again.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::{check_float, contiguous, spatial_ndim, storage, with_float, Real};

/// Interpolation used by [`resize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// Nearest neighbour.
    Nearest,
    /// Linear along each axis (bi/trilinear).
    Linear,
}

/// Where the output samples sit relative to the input grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Half-pixel centres (`align_corners=False`), as TensorFlow 2's `tf.image.resize` and hence
    /// DeepReg's `resize3d`: output `j` samples input `(j + 0.5) * in / out - 0.5`, clamped to
    /// the image for linear; nearest takes `floor((j + 0.5) * in / out)`.
    HalfPixel,
    /// Corner voxels coincide (`align_corners=True`): output `j` samples input
    /// `j * (in - 1) / (out - 1)`; nearest rounds half away from zero.
    Corners,
}

/// Resizes the spatial axes of `x` to `size`.
///
/// Each spatial axis is resampled independently by the 1D rule of `mode` and `align`, so linear
/// resizing is bi/trilinear interpolation. Gradients flow to `x`.
///
/// # Shapes
/// * `x`: `(N, C, H, W)` or `(N, C, D, H, W)`, f32 or f64.
/// * `size`: the output spatial size, one value (>= 1) per spatial axis.
/// * output: `(N, C, *size)`.
pub fn resize(x: &Tensor, size: &[usize], mode: ResizeMode, align: Align) -> Result<Tensor> {
    const OP: &str = "resize";
    let ndim = spatial_ndim(OP, "input", x)?;
    check_float(OP, "input", x)?;
    if size.len() != ndim || size.contains(&0) {
        bail!("{OP}: size must hold {ndim} positive values, got {size:?}");
    }
    if x.dims().contains(&0) {
        bail!("{OP}: empty input {:?}", x.dims());
    }
    let mut y = x.clone();
    for (a, &out) in size.iter().enumerate() {
        let axis = 2 + a;
        let n_in = y.dims()[axis];
        if n_in == out {
            continue;
        }
        let map = Arc::new(AxisMap::new(n_in, out, mode, align));
        y = y.contiguous()?.apply_op1(Resample { axis, map })?;
    }
    Ok(y)
}

/// Doubles every spatial axis (the up-sampling of UNet decoders): nearest repeats each voxel
/// (as Keras' `UpSampling3D`), linear interpolates with half-pixel centres.
pub fn upsample2x(x: &Tensor, mode: ResizeMode) -> Result<Tensor> {
    let ndim = spatial_ndim("upsample2x", "input", x)?;
    let size: Vec<usize> = x.dims()[2..2 + ndim].iter().map(|d| 2 * d).collect();
    resize(x, &size, mode, Align::HalfPixel)
}

/// The 1D two-tap map of one axis: output `j` = `w0[j] * in[i0[j]] + w1[j] * in[i1[j]]`.
#[derive(Debug)]
struct AxisMap {
    n_in: usize,
    i0: Vec<usize>,
    i1: Vec<usize>,
    w0: Vec<f64>,
    w1: Vec<f64>,
}

impl AxisMap {
    fn new(n_in: usize, n_out: usize, mode: ResizeMode, align: Align) -> Self {
        let mut m = Self {
            n_in,
            i0: Vec::with_capacity(n_out),
            i1: Vec::with_capacity(n_out),
            w0: Vec::with_capacity(n_out),
            w1: Vec::with_capacity(n_out),
        };
        let last = (n_in - 1) as f64;
        for j in 0..n_out {
            let (src, near) = match align {
                Align::HalfPixel => {
                    let scale = n_in as f64 / n_out as f64;
                    let src = (j as f64 + 0.5) * scale - 0.5;
                    (src, ((j as f64 + 0.5) * scale).floor())
                }
                Align::Corners => {
                    let src = if n_out > 1 {
                        j as f64 * last / (n_out - 1) as f64
                    } else {
                        0.0
                    };
                    (src, src.round())
                }
            };
            match mode {
                ResizeMode::Nearest => {
                    let i = (near.max(0.0) as usize).min(n_in - 1);
                    m.push(i, i, 1.0, 0.0);
                }
                ResizeMode::Linear => {
                    let s = src.clamp(0.0, last);
                    let i = (s.floor() as usize).min(n_in - 1);
                    let f = s - i as f64;
                    m.push(i, (i + 1).min(n_in - 1), 1.0 - f, f);
                }
            }
        }
        m
    }

    fn push(&mut self, i0: usize, i1: usize, w0: f64, w1: f64) {
        self.i0.push(i0);
        self.i1.push(i1);
        self.w0.push(w0);
        self.w1.push(w1);
    }

    fn n_out(&self) -> usize {
        self.i0.len()
    }

    /// `y (outer, n_out, inner) = map(x (outer, n_in, inner))`.
    fn apply<T: Real>(&self, x: &[T], outer: usize, inner: usize) -> Vec<T> {
        let (n_in, n_out) = (self.n_in, self.n_out());
        let w0: Vec<T> = self.w0.iter().map(|&w| T::from_f64(w)).collect();
        let w1: Vec<T> = self.w1.iter().map(|&w| T::from_f64(w)).collect();
        let mut y = vec![T::zero(); outer * n_out * inner];
        let lines = lines_per_task(n_out * inner);
        y.par_chunks_mut(lines * n_out * inner)
            .zip(x.par_chunks(lines * n_in * inner))
            .for_each(|(ys, xs)| {
                for (yo, xo) in ys.chunks_mut(n_out * inner).zip(xs.chunks(n_in * inner)) {
                    if inner == 1 {
                        for (j, v) in yo.iter_mut().enumerate() {
                            *v = w0[j] * xo[self.i0[j]] + w1[j] * xo[self.i1[j]];
                        }
                        continue;
                    }
                    for j in 0..n_out {
                        let a = &xo[self.i0[j] * inner..(self.i0[j] + 1) * inner];
                        let b = &xo[self.i1[j] * inner..(self.i1[j] + 1) * inner];
                        let (p, q) = (w0[j], w1[j]);
                        for ((v, &a), &b) in yo[j * inner..(j + 1) * inner].iter_mut().zip(a).zip(b)
                        {
                            *v = p * a + q * b;
                        }
                    }
                }
            });
        y
    }

    /// The transpose: `x (outer, n_in, inner) = map^T(y (outer, n_out, inner))`.
    fn apply_t<T: Real>(&self, y: &[T], outer: usize, inner: usize) -> Vec<T> {
        let (n_in, n_out) = (self.n_in, self.n_out());
        let w0: Vec<T> = self.w0.iter().map(|&w| T::from_f64(w)).collect();
        let w1: Vec<T> = self.w1.iter().map(|&w| T::from_f64(w)).collect();
        let mut x = vec![T::zero(); outer * n_in * inner];
        let lines = lines_per_task(n_out * inner);
        x.par_chunks_mut(lines * n_in * inner)
            .zip(y.par_chunks(lines * n_out * inner))
            .for_each(|(xs, ys)| {
                for (xo, yo) in xs.chunks_mut(n_in * inner).zip(ys.chunks(n_out * inner)) {
                    if inner == 1 {
                        for (j, &g) in yo.iter().enumerate() {
                            for (i, w) in [(self.i0[j], w0[j]), (self.i1[j], w1[j])] {
                                if w != T::zero() {
                                    xo[i] += w * g;
                                }
                            }
                        }
                        continue;
                    }
                    for j in 0..n_out {
                        let g = &yo[j * inner..(j + 1) * inner];
                        for (i, w) in [(self.i0[j], w0[j]), (self.i1[j], w1[j])] {
                            if w == T::zero() {
                                continue;
                            }
                            for (v, &g) in xo[i * inner..(i + 1) * inner].iter_mut().zip(g) {
                                *v += w * g;
                            }
                        }
                    }
                }
            });
        x
    }
}

/// How many lines (of `line` output values each) one parallel task resamples: enough for
/// about 16 K values, so short lines (the last axis) do not become one tiny task each.
fn lines_per_task(line: usize) -> usize {
    (16 * 1024 / line.max(1)).max(1)
}

/// Resampling along `axis` by `map` (forward) or by its transpose.
#[derive(Debug, Clone)]
struct Resample {
    axis: usize,
    map: Arc<AxisMap>,
}

/// The transpose of [`Resample`] (its backward).
#[derive(Debug, Clone)]
struct ResampleT {
    axis: usize,
    map: Arc<AxisMap>,
}

fn outer_inner(dims: &[usize], axis: usize) -> (usize, usize) {
    (
        dims[..axis].iter().product(),
        dims[axis + 1..].iter().product(),
    )
}

impl CustomOp1 for Resample {
    fn name(&self) -> &'static str {
        "resample-axis"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut shape = l.dims().to_vec();
        if shape[self.axis] != self.map.n_in {
            bail!("resample-axis: axis {} is not {}", self.axis, self.map.n_in);
        }
        let (outer, inner) = outer_inner(&shape, self.axis);
        shape[self.axis] = self.map.n_out();
        with_float!("resample-axis", s, |F| {
            let x = contiguous::<F>(s, l, "resample-axis", "input")?;
            Ok(storage(self.map.apply::<F>(x, outer, inner), shape))
        })
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let op = ResampleT {
            axis: self.axis,
            map: self.map.clone(),
        };
        Ok(Some(g.contiguous()?.apply_op1(op)?))
    }
}

impl CustomOp1 for ResampleT {
    fn name(&self) -> &'static str {
        "resample-axis-transpose"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut shape = l.dims().to_vec();
        if shape[self.axis] != self.map.n_out() {
            bail!(
                "resample-axis-transpose: axis {} is not {}",
                self.axis,
                self.map.n_out()
            );
        }
        let (outer, inner) = outer_inner(&shape, self.axis);
        shape[self.axis] = self.map.n_in;
        with_float!("resample-axis-transpose", s, |F| {
            let y = contiguous::<F>(s, l, "resample-axis-transpose", "input")?;
            Ok(storage(self.map.apply_t::<F>(y, outer, inner), shape))
        })
    }

    fn bwd(&self, _y: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let op = Resample {
            axis: self.axis,
            map: self.map.clone(),
        };
        Ok(Some(g.contiguous()?.apply_op1(op)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map and its transpose over many lines (several parallel tasks, short and long
    /// lines) equal a plain loop over the definition.
    #[test]
    fn axis_maps_over_many_lines_match_the_definition() {
        let map = AxisMap::new(7, 13, ResizeMode::Linear, Align::HalfPixel);
        for (outer, inner) in [(3000, 1), (700, 3)] {
            let x: Vec<f64> = (0..outer * 7 * inner)
                .map(|k| ((k * 37 % 101) as f64).sin())
                .collect();
            let y = map.apply(&x, outer, inner);
            let g: Vec<f64> = (0..outer * 13 * inner)
                .map(|k| ((k * 53 % 97) as f64).cos())
                .collect();
            let gx = map.apply_t(&g, outer, inner);
            let mut expected_y = vec![0.0; y.len()];
            let mut expected_gx = vec![0.0; gx.len()];
            for o in 0..outer {
                for j in 0..13 {
                    for c in 0..inner {
                        let at = |i: usize| (o * 7 + i) * inner + c;
                        let out = (o * 13 + j) * inner + c;
                        expected_y[out] =
                            map.w0[j] * x[at(map.i0[j])] + map.w1[j] * x[at(map.i1[j])];
                        expected_gx[at(map.i0[j])] += map.w0[j] * g[out];
                        expected_gx[at(map.i1[j])] += map.w1[j] * g[out];
                    }
                }
            }
            for (a, b) in y.iter().zip(&expected_y) {
                assert!((a - b).abs() < 1e-12);
            }
            for (a, b) in gx.iter().zip(&expected_gx) {
                assert!((a - b).abs() < 1e-12);
            }
        }
    }
    use crate::ops::common::testing::{check_grads, max_abs_diff, values, Rng};
    use candle_core::{DType, Device};

    fn t(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn half_pixel_linear_by_hand() {
        // [0, 4] -> 4 samples at -0.25, 0.25, 0.75, 1.25 (clamped): 0, 1, 3, 4.
        let x = t(&[0.0, 4.0], &[1, 1, 1, 2]);
        let y = resize(&x, &[1, 4], ResizeMode::Linear, Align::HalfPixel).unwrap();
        assert_eq!(values(&y), vec![0.0, 1.0, 3.0, 4.0]);
        // Down-sampling 4 -> 2 averages pairs at the half-pixel centres.
        let x = t(&[0.0, 2.0, 4.0, 6.0], &[1, 1, 1, 4]);
        let y = resize(&x, &[1, 2], ResizeMode::Linear, Align::HalfPixel).unwrap();
        assert_eq!(values(&y), vec![1.0, 5.0]);
    }

    #[test]
    fn corners_linear_and_nearest_by_hand() {
        let x = t(&[0.0, 3.0], &[1, 1, 1, 2]);
        let y = resize(&x, &[1, 4], ResizeMode::Linear, Align::Corners).unwrap();
        assert_eq!(values(&y), vec![0.0, 1.0, 2.0, 3.0]);
        let x = t(&[1.0, 2.0, 3.0], &[1, 1, 1, 3]);
        let y = resize(&x, &[1, 6], ResizeMode::Nearest, Align::HalfPixel).unwrap();
        assert_eq!(values(&y), vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        let y = resize(&x, &[1, 5], ResizeMode::Nearest, Align::Corners).unwrap();
        assert_eq!(values(&y), vec![1.0, 2.0, 2.0, 3.0, 3.0]);
    }

    #[test]
    fn upsample_matches_candle_nearest_and_identity_resize() {
        let mut rng = Rng::new(30);
        let x = rng.tensor(&[2, 3, 4, 5], -1.0, 1.0, DType::F32);
        let ours = upsample2x(&x, ResizeMode::Nearest).unwrap();
        let theirs = x.upsample_nearest2d(8, 10).unwrap();
        assert_eq!(max_abs_diff(&ours, &theirs), 0.0);
        let x3 = rng.tensor(&[1, 2, 3, 4, 5], -1.0, 1.0, DType::F32);
        let same = resize(&x3, &[3, 4, 5], ResizeMode::Linear, Align::HalfPixel).unwrap();
        assert_eq!(max_abs_diff(&same, &x3), 0.0);
        let up = upsample2x(&x3, ResizeMode::Linear).unwrap();
        assert_eq!(up.dims(), &[1, 2, 6, 8, 10]);
        // A linear ramp stays a ramp (inside the clamped border) under align-corners resizing.
        let ramp: Vec<f64> = (0..5).map(|i| i as f64).collect();
        let r = t(&ramp, &[1, 1, 1, 1, 5]);
        let y = resize(&r, &[1, 1, 9], ResizeMode::Linear, Align::Corners).unwrap();
        let want: Vec<f64> = (0..9).map(|i| i as f64 / 2.0).collect();
        assert_eq!(values(&y), want);
    }

    #[test]
    fn gradients_2d_and_3d() {
        let mut rng = Rng::new(31);
        let x = rng.tensor(&[1, 2, 3, 5, 4], -1.0, 1.0, DType::F64);
        for mode in [ResizeMode::Linear, ResizeMode::Nearest] {
            for align in [Align::HalfPixel, Align::Corners] {
                let f = |ts: &[Tensor]| resize(&ts[0], &[5, 3, 7], mode, align);
                check_grads(&f, std::slice::from_ref(&x), 1e-6, 1e-7, &[]);
            }
        }
        let x = rng.tensor(&[2, 1, 4, 3], -1.0, 1.0, DType::F64);
        let f = |ts: &[Tensor]| resize(&ts[0], &[7, 2], ResizeMode::Linear, Align::HalfPixel);
        check_grads(&f, std::slice::from_ref(&x), 1e-6, 1e-7, &[]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(resize(&x, &[2, 2, 2], ResizeMode::Linear, Align::HalfPixel).is_err());
        assert!(resize(&x, &[2, 0], ResizeMode::Linear, Align::HalfPixel).is_err());
        let v = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert!(upsample2x(&v, ResizeMode::Nearest).is_err());
    }
}
