//! Deformation regularisers (DeepReg's `deepreg/loss/deform.py`), generalised from 3D to 2D
//! and 3D, on DDFs `(N, ndim, *spatial)`.
//!
//! DeepReg's finite difference along spatial axis `a` is the central difference
//! `D_a u[i] = (u[i + 1] − u[i − 1]) / 2` along `a`, with every *other* spatial axis cropped by
//! one voxel on each side, so all `D_a u` share the shape `(N, ndim, m₁ − 2, …)` and are taken
//! at the same voxels. Second differences apply `D` twice (`D_b D_a u`, a step of 2 voxels,
//! shape `m − 4`).
//!
//! Both regularisers run as one fused op each ([`crate::deform_kernel`]); the compositions
//! of tensor operations below are kept in the tests as the reference.

use voxreg_framework::candle::{self, Tensor};

use crate::kinds::Regularization;

use crate::deform_kernel::{regularise, Stencils};
use crate::util::check_input;

/// `D_axis x`: the central difference along spatial axis `axis` of `x = (N, C, *spatial)`,
/// every other spatial axis cropped by one voxel on each side.
#[cfg(test)]
fn central_difference(x: &Tensor, axis: usize, ndim: usize) -> candle::Result<Tensor> {
    let mut cropped = x.clone();
    for other in (0..ndim).filter(|b| *b != axis) {
        let dim = 2 + other;
        let len = cropped.dim(dim)?;
        cropped = cropped.narrow(dim, 1, len - 2)?;
    }
    let dim = 2 + axis;
    let len = cropped.dim(dim)?;
    (cropped.narrow(dim, 2, len - 2)? - cropped.narrow(dim, 0, len - 2)?)? * 0.5
}

/// Sums tensors of one shape.
#[cfg(test)]
fn sum_all_of(terms: Vec<Tensor>) -> candle::Result<Tensor> {
    let mut terms = terms.into_iter();
    let first = terms
        .next()
        .ok_or_else(|| candle::Error::Msg("nothing to sum".into()))?;
    terms.try_fold(first, |total, term| total + term)
}

/// Checks a DDF: `(N, ndim, *spatial)` with `ndim = spatial_dims` and every spatial size at
/// least `min_size`.
fn check_ddf(
    component: &str,
    spatial_dims: usize,
    min_size: usize,
    ddf: &Tensor,
) -> candle::Result<()> {
    check_input(component, "the DDF", spatial_dims, ddf)?;
    let dims = ddf.dims();
    if dims[1] != spatial_dims {
        candle::bail!(
            "{component}: the DDF must have {spatial_dims} components (axis 1), got shape {dims:?}"
        );
    }
    if dims[2..].iter().any(|size| *size < min_size) {
        candle::bail!(
            "{component}: every spatial size of the DDF must be at least {min_size}, got shape \
             {dims:?}"
        );
    }
    Ok(())
}

/// Gradient norm: `mean_{i, x} Σ_a (D_a u_i)²`, or with `l1` `mean_{i, x} Σ_a |D_a u_i|`,
/// the mean over the `ndim` components `i` and the voxels `x` of the cropped grid
/// (`m − 2` per axis). Needs every spatial size ≥ 3.
pub(crate) struct GradientNorm {
    pub(crate) spatial_dims: usize,
    pub(crate) l1: bool,
}

impl Regularization for GradientNorm {
    fn loss(&self, ddf: &Tensor) -> candle::Result<Tensor> {
        check_ddf("regularization `gradient`", self.spatial_dims, 3, ddf)?;
        // One fused op: stencils plane by plane, gradient in the same pass.
        regularise(ddf, Stencils::Gradient { l1: self.l1 })
    }
}

/// The gradient norm composed of tensor operations (autograd gradients), the reference the
/// fused kernel is tested against.
#[cfg(test)]
fn composed_gradient_norm(ddf: &Tensor, ndim: usize, l1: bool) -> candle::Result<Tensor> {
    let terms = (0..ndim)
        .map(|axis| {
            let difference = central_difference(ddf, axis, ndim)?;
            if l1 {
                difference.abs()
            } else {
                difference.sqr()
            }
        })
        .collect::<candle::Result<Vec<_>>>()?;
    sum_all_of(terms)?.flatten_from(1)?.mean(1)
}

/// Bending energy: `mean_{i, x} [Σ_a (D_a D_a u_i)² + 2 Σ_{a<b} (D_b D_a u_i)²]`, the mean
/// over the `ndim` components `i` and the voxels `x` of the twice-cropped grid (`m − 4` per
/// axis); in 3D `u_xx² + u_yy² + u_zz² + 2u_xy² + 2u_xz² + 2u_yz²` as in DeepReg, in 2D
/// `u_xx² + u_yy² + 2u_xy²`. Zero for affine fields. Needs every spatial size ≥ 5.
pub(crate) struct BendingEnergy {
    pub(crate) spatial_dims: usize,
}

impl Regularization for BendingEnergy {
    fn loss(&self, ddf: &Tensor) -> candle::Result<Tensor> {
        check_ddf("regularization `bending`", self.spatial_dims, 5, ddf)?;
        // One fused op: stencils plane by plane, gradient in the same pass.
        regularise(ddf, Stencils::Bending)
    }
}

/// The bending energy composed of tensor operations (autograd gradients), the reference the
/// fused kernel is tested against.
#[cfg(test)]
fn composed_bending_energy(ddf: &Tensor, ndim: usize) -> candle::Result<Tensor> {
    let first = (0..ndim)
        .map(|axis| central_difference(ddf, axis, ndim))
        .collect::<candle::Result<Vec<_>>>()?;
    let mut terms = Vec::with_capacity(ndim * (ndim + 1) / 2);
    for (a, first_a) in first.iter().enumerate() {
        for b in a..ndim {
            let squared = central_difference(first_a, b, ndim)?.sqr()?;
            terms.push(if a == b { squared } else { (squared * 2.0)? });
        }
    }
    sum_all_of(terms)?.flatten_from(1)?.mean(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, pseudo_random};
    use crate::{BendingConfig, GradientConfig};
    use voxreg_framework::candle::Var;
    use voxreg_framework::prelude::*;

    /// A `(1, ndim, *shape)` DDF with component `i` at voxel `x` equal to `u(i, x)`.
    fn field(shape: &[usize], u: impl Fn(usize, &[f64]) -> f64) -> Tensor {
        let ndim = shape.len();
        let voxels: usize = shape.iter().product();
        let mut values = Vec::with_capacity(ndim * voxels);
        for i in 0..ndim {
            for flat in 0..voxels {
                let mut rest = flat;
                let mut x = vec![0.0; ndim];
                for axis in (0..ndim).rev() {
                    x[axis] = (rest % shape[axis]) as f64;
                    rest /= shape[axis];
                }
                values.push(u(i, &x));
            }
        }
        let mut dims = vec![1, ndim];
        dims.extend_from_slice(shape);
        Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
    }

    fn regulariser(config: &dyn RegularizationConfig, dims: usize) -> crate::testing::Penal {
        crate::testing::Penal(config.build(dims).unwrap())
    }

    #[test]
    fn central_difference_crops_the_other_axes() -> candle::Result<()> {
        let x = field(&[4, 5], |_, x| x[0] * x[0] + 10.0 * x[1]);
        let dx = central_difference(&x, 0, 2)?;
        let dy = central_difference(&x, 1, 2)?;
        assert_eq!(dx.dims(), &[1, 2, 2, 3]);
        assert_eq!(dy.dims(), &[1, 2, 2, 3]);
        // d(x²)/dx = 2x at x = 1, 2 (rows), the same for every cropped column.
        let row = dx.get(0)?.get(0)?.to_vec2::<f64>()?;
        assert_eq!(row, [[2.0, 2.0, 2.0], [4.0, 4.0, 4.0]]);
        assert_eq!(dy.get(0)?.get(0)?.to_vec2::<f64>()?, [[10.0; 3]; 2]);
        Ok(())
    }

    #[test]
    fn gradient_norm_of_an_affine_field_is_its_matrix_norm() -> candle::Result<()> {
        let a2 = [[0.5, -2.0], [1.0, 3.0]];
        let a3 = [[0.5, -2.0, 0.0], [1.0, 3.0, -0.25], [0.0, 1.5, 2.0]];
        let u2 = field(&[3, 4], |i, x| a2[i][0] * x[0] + a2[i][1] * x[1] + i as f64);
        let u3 = field(&[3, 4, 3], |i, x| {
            (0..3).map(|j| a3[i][j] * x[j]).sum::<f64>() - 2.0
        });
        let l2 = |a: &[&[f64]]| a.iter().flat_map(|r| r.iter()).map(|v| v * v).sum::<f64>();
        let l1 = |a: &[&[f64]]| {
            a.iter()
                .flat_map(|r| r.iter())
                .map(|v| v.abs())
                .sum::<f64>()
        };
        let rows2: Vec<&[f64]> = a2.iter().map(|r| &r[..]).collect();
        let rows3: Vec<&[f64]> = a3.iter().map(|r| &r[..]).collect();
        for (dims, u, rows) in [(2, &u2, &rows2), (3, &u3, &rows3)] {
            let n = dims as f64;
            let squared = regulariser(&GradientConfig { l1: false }, dims);
            assert_close(&squared.loss(u)?, &[l2(rows) / n], 1e-12);
            let absolute = regulariser(&GradientConfig { l1: true }, dims);
            assert_close(&absolute.loss(u)?, &[l1(rows) / n], 1e-12);
        }
        // Hand value: u₀ = 2x, u₁ = 0 in 2D → (2² + 0) / 2 components = 2.
        let u = field(&[3, 3], |i, x| if i == 0 { 2.0 * x[0] } else { 0.0 });
        let squared = regulariser(&GradientConfig { l1: false }, 2);
        assert_close(&squared.loss(&u)?, &[2.0], 1e-12);
        Ok(())
    }

    #[test]
    fn bending_energy_of_an_affine_field_is_zero() -> candle::Result<()> {
        let u2 = field(&[5, 6], |i, x| 0.3 * x[0] - 1.5 * x[1] + i as f64);
        let u3 = field(&[5, 5, 6], |i, x| {
            (i as f64 + 1.0) * x[0] - 0.5 * x[1] + 2.0 * x[2] + 1.0
        });
        for (dims, u) in [(2, &u2), (3, &u3)] {
            let bending = regulariser(&BendingConfig::default(), dims);
            assert_close(&bending.loss(u)?, &[0.0], 1e-12);
        }
        Ok(())
    }

    #[test]
    fn bending_energy_of_quadratic_fields_has_doubled_cross_terms() -> candle::Result<()> {
        // u₀ = x²: D_x D_x u₀ = 2 → energy 4 in component 0, mean over 2 components: 2.
        let bending2 = regulariser(&BendingConfig::default(), 2);
        let u = field(&[5, 5], |i, x| if i == 0 { x[0] * x[0] } else { 0.0 });
        assert_close(&bending2.loss(&u)?, &[2.0], 1e-12);
        // u₁ = x·y: D_y D_x u₁ = 1, counted twice → 2 / 2 components = 1.
        let u = field(&[5, 6], |i, x| if i == 1 { x[0] * x[1] } else { 0.0 });
        assert_close(&bending2.loss(&u)?, &[1.0], 1e-12);
        // 3D: u₁ = y² + 3xz: u_yy = 2, u_xz = 3 → 4 + 2·9 = 22, over 3 components.
        let bending3 = regulariser(&BendingConfig::default(), 3);
        let u = field(&[5, 6, 5], |i, x| {
            if i == 1 {
                x[1] * x[1] + 3.0 * x[0] * x[2]
            } else {
                0.0
            }
        });
        assert_close(&bending3.loss(&u)?, &[22.0 / 3.0], 1e-12);
        Ok(())
    }

    #[test]
    fn regularisers_reject_ddfs_of_the_wrong_shape() -> candle::Result<()> {
        let gradient = regulariser(&GradientConfig { l1: false }, 3);
        let bending = regulariser(&BendingConfig::default(), 3);
        for shape in [
            &[1, 2, 5, 5, 5][..], // two components in 3D
            &[1, 3, 5, 5],        // a 2D field
            &[1, 3, 5, 2, 5],     // too small for any finite difference
        ] {
            let ddf = Tensor::zeros(shape, DType::F32, &Device::Cpu)?;
            assert!(gradient.loss(&ddf).is_err(), "{shape:?}");
            assert!(bending.loss(&ddf).is_err(), "{shape:?}");
        }
        let small = Tensor::zeros((1, 3, 4, 5, 5), DType::F32, &Device::Cpu)?;
        assert!(gradient.loss(&small).is_ok());
        assert!(bending.loss(&small).is_err());
        Ok(())
    }

    /// A regulariser written with tensor operations.
    type Composed<'a> = dyn Fn(&Tensor) -> candle::Result<Tensor> + 'a;

    #[test]
    fn fused_regularisers_match_the_composed_ones() {
        // The last two are deep enough to split into ranges of planes on four threads.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        for (seed, shape) in [
            &[2, 2, 7, 5][..],
            &[1, 2, 5, 12],
            &[2, 3, 5, 6, 7],
            &[1, 3, 9, 5, 6],
            &[1, 2, 35, 6],
            &[1, 3, 34, 5, 6],
        ]
        .iter()
        .enumerate()
        {
            let ndim = shape.len() - 2;
            let u = pseudo_random(shape, -1.0, 1.0, 60 + seed as u64);
            let cases: [(&dyn RegularizationConfig, &Composed); 3] = [
                (&BendingConfig::default(), &|u| {
                    composed_bending_energy(u, ndim)
                }),
                (&GradientConfig { l1: false }, &|u| {
                    composed_gradient_norm(u, ndim, false)
                }),
                (&GradientConfig { l1: true }, &|u| {
                    composed_gradient_norm(u, ndim, true)
                }),
            ];
            for ((config, composed_loss), dtype) in cases
                .iter()
                .flat_map(|case| [(case, DType::F64), (case, DType::F32)])
            {
                let u = u.to_dtype(dtype).unwrap();
                let var = Var::from_tensor(&u).unwrap();
                let fused = pool
                    .install(|| regulariser(*config, ndim).loss(var.as_tensor()))
                    .unwrap();
                let composed = composed_loss(var.as_tensor()).unwrap();
                let weights = Tensor::arange(1.0, shape[0] as f64 + 1.0, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let gradient = |loss: &Tensor| {
                    let grads = (loss * &weights)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap();
                    grads.get(var.as_tensor()).unwrap().clone()
                };
                let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                let largest = |t: &Tensor| -> f64 {
                    t.abs()
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .max(0)
                        .unwrap()
                        .to_dtype(DType::F64)
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                };
                let loss_gap = largest(&(&fused - &composed).unwrap());
                assert!(loss_gap <= tol * largest(&composed), "{shape:?} {dtype:?}");
                let (a, b) = (gradient(&fused), gradient(&composed));
                let grad_gap = largest(&(&a - &b).unwrap());
                assert!(
                    grad_gap <= tol * largest(&b),
                    "{shape:?} {dtype:?}: {grad_gap}"
                );
            }
        }
    }

    #[test]
    fn a_second_backward_pass_through_bending_gives_the_same_gradient() -> candle::Result<()> {
        let u = Var::from_tensor(&pseudo_random(&[2, 2, 6, 7], -1.0, 1.0, 80))?;
        let bending = regulariser(&BendingConfig::default(), 2);
        let loss = (bending.loss(u.as_tensor())? * 0.5)?.sum_all()?;
        let first = loss.backward()?.get(u.as_tensor()).unwrap().clone();
        let second = loss.backward()?.get(u.as_tensor()).unwrap().clone();
        let largest = first.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
        let gap = (first - second)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        assert!(largest > 1e-6 && gap < 1e-15);
        Ok(())
    }

    #[test]
    fn regulariser_gradients_match_finite_differences() {
        let u2 = pseudo_random(&[2, 2, 5, 6], -1.0, 1.0, 21);
        let u3 = pseudo_random(&[1, 3, 5, 5, 6], -1.0, 1.0, 22);
        let configs: [&dyn RegularizationConfig; 3] = [
            &GradientConfig { l1: false },
            &GradientConfig { l1: true },
            &BendingConfig::default(),
        ];
        for config in configs {
            for (dims, u) in [(2, &u2), (3, &u3)] {
                let loss = regulariser(config, dims);
                check_gradient(|x| loss.loss(x), u, 1e-6);
            }
        }
    }
}
