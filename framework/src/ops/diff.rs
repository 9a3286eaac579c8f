//! Central finite differences as DeepReg's `gradient_dx/dy/dz`, with backward.
//!
//! One custom op per axis: the forward is a gather over the interior, the backward (the
//! adjoint) is written as a gather too (`gx[q] = (g[q - 1 - e] - g[q - 1 + e]) / 2`, with `g`
//! zero outside), so both parallelise over output rows without races.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::{check_float, contiguous, spatial3, spatial_ndim, storage, with_float, Real};

/// Central difference along spatial axis `axis` (0 = first spatial axis), cropped to the
/// interior on every axis, as DeepReg's `gradient_dx` (axis 0), `gradient_dy` (1) and
/// `gradient_dz` (2):
/// `y[n, c, p] = (x[n, c, p + 1 + e_axis] - x[n, c, p + 1 - e_axis]) / 2`, where `p + 1` adds one
/// on every spatial axis.
///
/// # Shapes
/// * `x`: `(N, C, H, W)` or `(N, C, D, H, W)` with every spatial size >= 3, f32 or f64.
/// * output: `(N, C, H - 2, W - 2)` or `(N, C, D - 2, H - 2, W - 2)`.
pub fn central_diff(x: &Tensor, axis: usize) -> Result<Tensor> {
    const OP: &str = "central_diff";
    let ndim = spatial_ndim(OP, "input", x)?;
    check_float(OP, "input", x)?;
    if axis >= ndim {
        bail!("{OP}: axis {axis} out of range for {ndim} spatial axes");
    }
    if x.dims()[2..].iter().any(|&d| d < 3) || x.dims()[..2].contains(&0) {
        bail!("{OP}: every spatial size must be >= 3, got {:?}", x.dims());
    }
    x.contiguous()?.apply_op1(CentralDiff {
        axis: 3 - ndim + axis,
        adjoint: false,
    })
}

/// Central differences along every spatial axis: `[d/d axis0, d/d axis1, (d/d axis2)]`, each
/// as [`central_diff`].
pub fn central_diffs(x: &Tensor) -> Result<Vec<Tensor>> {
    let ndim = spatial_ndim("central_diffs", "input", x)?;
    (0..ndim).map(|a| central_diff(x, a)).collect()
}

/// The difference along `axis` of the 3D view (`adjoint`: its transpose, from the cropped
/// shape back to the full one).
#[derive(Debug, Clone, Copy)]
struct CentralDiff {
    axis: usize,
    adjoint: bool,
}

impl CentralDiff {
    /// `x` with 3D-view spatial dims `sp` (input of the forward map) → output.
    fn forward<T: Real>(&self, x: &[T], sp: [usize; 3], d3: bool) -> Vec<T> {
        let full = if d3 { sp } else { [1, sp[1], sp[2]] };
        let crop = [if d3 { full[0] - 2 } else { 1 }, full[1] - 2, full[2] - 2];
        let (fvol, cvol): (usize, usize) = (full.iter().product(), crop.iter().product());
        let strides = [full[1] * full[2], full[2], 1];
        let e = strides[self.axis];
        let lift = if d3 { strides[0] } else { 0 } + strides[1] + strides[2];
        let half = T::from_f64(0.5);
        let chans = x.len() / fvol;
        let mut y = vec![T::zero(); chans * cvol];
        // Rows of the output: (channel, z, y), each of crop[2] values.
        y.par_chunks_mut(crop[2])
            .enumerate()
            .for_each(|(row, out)| {
                let ch = row / (crop[0] * crop[1]);
                let r = row % (crop[0] * crop[1]);
                let (z, yy) = (r / crop[1], r % crop[1]);
                let base = ch * fvol + z * strides[0] + yy * strides[1] + lift;
                let (hi, lo) = (
                    &x[base + e..base + e + crop[2]],
                    &x[base - e..base - e + crop[2]],
                );
                for ((v, &a), &b) in out.iter_mut().zip(hi).zip(lo) {
                    *v = (a - b) * half;
                }
            });
        y
    }

    /// Adjoint: `g` on the cropped grid → gradient on the full grid `full`.
    fn backward<T: Real>(&self, g: &[T], full: [usize; 3], d3: bool) -> Vec<T> {
        let crop = [if d3 { full[0] - 2 } else { 1 }, full[1] - 2, full[2] - 2];
        let (fvol, cvol): (usize, usize) = (full.iter().product(), crop.iter().product());
        let off = [usize::from(d3), 1, 1];
        let half = T::from_f64(0.5);
        let chans = g.len() / cvol;
        let mut gx = vec![T::zero(); chans * fvol];
        let at = |c: &[isize; 3]| -> Option<usize> {
            let ok = (0..3).all(|a| c[a] >= 0 && (c[a] as usize) < crop[a]);
            ok.then(|| ((c[0] as usize * crop[1]) + c[1] as usize) * crop[2] + c[2] as usize)
        };
        gx.par_chunks_mut(full[2])
            .enumerate()
            .for_each(|(row, out)| {
                let ch = row / (full[0] * full[1]);
                let r = row % (full[0] * full[1]);
                let (z, y) = (r / full[1], r % full[1]);
                let gc = &g[ch * cvol..(ch + 1) * cvol];
                for (x, v) in out.iter_mut().enumerate() {
                    // Output p contributes +g/2 at p + off + e and -g/2 at p + off - e.
                    let q = [z as isize, y as isize, x as isize];
                    let mut plus = [
                        q[0] - off[0] as isize,
                        q[1] - off[1] as isize,
                        q[2] - off[2] as isize,
                    ];
                    let mut minus = plus;
                    plus[self.axis] -= 1;
                    minus[self.axis] += 1;
                    let a = at(&plus).map_or(T::zero(), |i| gc[i]);
                    let b = at(&minus).map_or(T::zero(), |i| gc[i]);
                    *v = (a - b) * half;
                }
            });
        gx
    }
}

impl CustomOp1 for CentralDiff {
    fn name(&self) -> &'static str {
        "central-diff"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        let d3 = dims.len() == 5;
        let sp = spatial3(dims);
        let mut shape = dims[..2].to_vec();
        let delta: isize = if self.adjoint { 2 } else { -2 };
        for &d in &dims[2..] {
            shape.push((d as isize + delta) as usize);
        }
        let full = if self.adjoint {
            let f = spatial3(&shape);
            [if d3 { f[0] } else { 1 }, f[1], f[2]]
        } else {
            sp
        };
        with_float!("central-diff", s, |F| {
            let x = contiguous::<F>(s, l, "central-diff", "input")?;
            let out = if self.adjoint {
                self.backward(x, full, d3)
            } else {
                self.forward(x, full, d3)
            };
            Ok(storage(out, shape))
        })
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let op = Self {
            axis: self.axis,
            adjoint: !self.adjoint,
        };
        Ok(Some(g.contiguous()?.apply_op1(op)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::common::testing::{check_grads, max_abs_diff, values, Rng};
    use candle_core::{DType, Device};

    /// DeepReg's formula with narrow: difference along one axis, crop 1:-1 on the others.
    fn reference(x: &Tensor, axis: usize) -> Tensor {
        let nd = x.rank() - 2;
        let mut hi = x.clone();
        let mut lo = x.clone();
        for a in 0..nd {
            let n = x.dims()[2 + a];
            if a == axis {
                hi = hi.narrow(2 + a, 2, n - 2).unwrap();
                lo = lo.narrow(2 + a, 0, n - 2).unwrap();
            } else {
                hi = hi.narrow(2 + a, 1, n - 2).unwrap();
                lo = lo.narrow(2 + a, 1, n - 2).unwrap();
            }
        }
        ((hi - lo).unwrap() * 0.5).unwrap()
    }

    #[test]
    fn quadratic_by_hand() {
        // f(z, y, x) = z^2 + 3y on 5x4x3: d/dz at interior z = 2z, d/dy = 3, d/dx = 0.
        let mut v = Vec::new();
        for z in 0..5 {
            for y in 0..4 {
                for _x in 0..3 {
                    v.push((z * z + 3 * y) as f64);
                }
            }
        }
        let f = Tensor::from_vec(v, (1, 1, 5, 4, 3), &Device::Cpu).unwrap();
        let d = central_diffs(&f).unwrap();
        assert_eq!(d[0].dims(), &[1, 1, 3, 2, 1]);
        assert_eq!(values(&d[0]), vec![2.0, 2.0, 4.0, 4.0, 6.0, 6.0]);
        assert!(values(&d[1]).iter().all(|&g| g == 3.0));
        assert!(values(&d[2]).iter().all(|&g| g == 0.0));
    }

    #[test]
    fn matches_narrow_reference() {
        let mut rng = Rng::new(50);
        for shape in [vec![2, 3, 5, 6, 7], vec![1, 2, 4, 9]] {
            let x = rng.tensor(&shape, -1.0, 1.0, DType::F32);
            for a in 0..shape.len() - 2 {
                let got = central_diff(&x, a).unwrap();
                assert_eq!(max_abs_diff(&got, &reference(&x, a)), 0.0, "{shape:?} {a}");
            }
        }
    }

    #[test]
    fn gradients() {
        let mut rng = Rng::new(51);
        let x = rng.tensor(&[1, 2, 4, 5, 3], -1.0, 1.0, DType::F64);
        for a in 0..3 {
            let f = |t: &[Tensor]| central_diff(&t[0], a);
            check_grads(&f, std::slice::from_ref(&x), 1e-6, 1e-8, &[]);
        }
        let x = rng.tensor(&[2, 1, 6, 5], -1.0, 1.0, DType::F64);
        for a in 0..2 {
            // Second derivatives (compositions, as in DeepReg's bending energy) too.
            let f = |t: &[Tensor]| central_diff(&central_diff(&t[0], a)?, 1 - a);
            check_grads(&f, std::slice::from_ref(&x), 1e-6, 1e-8, &[]);
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Tensor::zeros((1, 1, 4, 2, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(central_diff(&x, 0).is_err());
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(central_diff(&x, 2).is_err());
        assert!(central_diff(&x, 1).is_ok());
    }
}
