//! Losses of a field's Jacobian determinant `det(I + ∇u)`, from central differences on the
//! interior (atlalign's `jacobian`, `atlalign/ml_utils/losses.py`): `jacobian_distance`
//! (a field loss) and `folding` (a regulariser).

use serde::{Deserialize, Serialize};
use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::ops;
use voxreg_framework::prelude::*;

use crate::field::check_fields;
use crate::kinds::{Penalty, Regularization};
use crate::util::check_spatial_dims;

/// The Jacobian determinant of `I + ∇u` at every interior voxel: `∂_b u_a` by central
/// differences `(u_a(p + e_b) − u_a(p − e_b)) / 2`, cropped by one voxel on every side
/// (atlalign's `jacobian` on `(h − 2, w − 2)`; the axis order does not change a
/// determinant, so voxreg's row-first fields give atlalign's values).
///
/// # Shapes
/// `u`: `(N, ndim, *spatial)`, every spatial size ≥ 3 → `(N, *interior)`.
pub fn jacobian_determinant(u: &Tensor) -> candle::Result<Tensor> {
    let ndim = u.dim(1)?;
    // j[a][b] = δ_ab + ∂_b u_a, each (N, 1, *interior).
    let mut j = Vec::with_capacity(ndim);
    for a in 0..ndim {
        let diffs = ops::central_diffs(&u.narrow(1, a, 1)?)?;
        let row = diffs
            .into_iter()
            .enumerate()
            .map(|(b, d)| if a == b { d + 1.0 } else { Ok(d) })
            .collect::<candle::Result<Vec<_>>>()?;
        j.push(row);
    }
    let det = match ndim {
        2 => ((&j[0][0] * &j[1][1])? - (&j[0][1] * &j[1][0])?)?,
        3 => {
            let minor = |r: usize, s: usize, t: usize, v: usize| -> candle::Result<Tensor> {
                (&j[r][s] * &j[t][v])? - (&j[r][v] * &j[t][s])?
            };
            let a = (&j[0][0] * minor(1, 1, 2, 2)?)?;
            let b = (&j[0][1] * minor(1, 0, 2, 2)?)?;
            let c = (&j[0][2] * minor(1, 0, 2, 1)?)?;
            ((a - b)? + c)?
        }
        other => candle::bail!("a Jacobian needs 2 or 3 field components, got {other}"),
    };
    det.squeeze(1)
}

fn check_size(name: &str, field: &Tensor) -> candle::Result<()> {
    if field.dims()[2..].iter().any(|&n| n < 3) {
        candle::bail!(
            "{name}: central differences need every spatial axis to hold at least 3 voxels, got {:?}",
            &field.dims()[2..]
        );
    }
    Ok(())
}

/// How `jacobian_distance` compares two determinants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JacobianNorm {
    /// `(det_u − det_v)²`.
    #[default]
    L2,
    /// `|det_u − det_v|`.
    L1,
}

/// `jacobian_distance`: atlalign's `jacobian_distance` as it is meant,
/// `mean_interior (det(I + ∇u) − det(I + ∇v))²` (or `|·|` with `norm: l1`) between the
/// predicted field `u` and the true field `v`. atlalign's shipped version builds both
/// determinants from the prediction and is identically zero, with zero gradient (so its
/// `vector_jacobian_distance` is half the end-point error); voxreg compares the two.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JacobianDistanceConfig {
    /// `l2` (atlalign's default) or `l1`.
    pub norm: JacobianNorm,
}

struct JacobianDistance {
    spatial_dims: usize,
    norm: JacobianNorm,
}

impl Loss for JacobianDistance {
    fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle::Result<Tensor> {
        const NAME: &str = "field_loss `jacobian_distance`";
        let target = required_target(NAME, target)?;
        check_fields(NAME, self.spatial_dims, prediction, target)?;
        check_size(NAME, prediction)?;
        let gap = (jacobian_determinant(prediction)? - jacobian_determinant(target)?)?;
        let penalised = match self.norm {
            JacobianNorm::L2 => gap.sqr()?,
            JacobianNorm::L1 => gap.abs()?,
        };
        penalised.flatten_from(1)?.mean(1)
    }
}

#[typetag::serialize(name = "jacobian_distance")]
impl FieldLossConfig for JacobianDistanceConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        check_spatial_dims("field_loss `jacobian_distance`", spatial_dims)?;
        Ok(Box::new(JacobianDistance {
            spatial_dims,
            norm: self.norm,
        }))
    }
}

register_component!(
    field_loss,
    "jacobian_distance",
    JacobianDistanceConfig,
    "Mean squared difference of two fields' Jacobian determinants (atlalign's, as intended)"
);

/// `folding`: a differentiable folding penalty, `mean_interior max(0, margin − det(I + ∇u))`:
/// zero while every interior determinant exceeds `margin` (default 0, i.e. no folding), and
/// growing linearly with how far a voxel folds. (atlalign's `jacobian` loss counts folded
/// voxels, which has no gradient; the count is reported as `ddf_folding_fraction`.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FoldingConfig {
    /// The determinant below which a voxel is penalised (≥ 0; default 0).
    pub margin: f64,
}

struct Folding {
    spatial_dims: usize,
    margin: f64,
}

impl Regularization for Folding {
    fn loss(&self, field: &Tensor) -> candle::Result<Tensor> {
        const NAME: &str = "regularization `folding`";
        check_fields(NAME, self.spatial_dims, field, field)?;
        check_size(NAME, field)?;
        let det = jacobian_determinant(field)?;
        (det.neg()? + self.margin)?.relu()?.flatten_from(1)?.mean(1)
    }
}

#[typetag::serialize(name = "folding")]
impl RegularizationConfig for FoldingConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        const NAME: &str = "regularization `folding`";
        check_spatial_dims(NAME, spatial_dims)?;
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return Err(ComponentError::invalid(
                NAME,
                format!("margin must be a number ≥ 0, got {}", self.margin),
            ));
        }
        let folding = Folding {
            spatial_dims,
            margin: self.margin,
        };
        Ok(Box::new(Penalty(folding, NAME)))
    }
}

register_component!(
    regularization,
    "folding",
    FoldingConfig,
    "Differentiable folding penalty: mean of max(0, margin − det(I + ∇u)) over the interior"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, pseudo_random};
    use voxreg_framework::candle::Device;

    /// A 2D field `(1, 2, 4, 4)` of a linear map: `u(p) = A p`.
    fn linear(a: [[f64; 2]; 2]) -> Tensor {
        let mut values = Vec::new();
        for row in a {
            for r in 0..4 {
                for c in 0..4 {
                    values.push(row[0] * r as f64 + row[1] * c as f64);
                }
            }
        }
        Tensor::from_vec(values, (1, 2, 4, 4), &Device::Cpu).unwrap()
    }

    #[test]
    fn the_determinant_of_a_linear_field_is_det_of_i_plus_a() -> candle::Result<()> {
        // I + A = [[1.5, 0.2], [0.1, 0.8]]: det = 1.2 − 0.02 = 1.18 at every interior voxel.
        let det = jacobian_determinant(&linear([[0.5, 0.2], [0.1, -0.2]]))?;
        assert_eq!(det.dims(), &[1, 2, 2]);
        assert_close(&det.flatten_all()?, &[1.18; 4], 1e-12);
        // A uniform scaling by 2 in 3D: det 8.
        let values: Vec<f64> = (0..3)
            .flat_map(|a| {
                (0..27).map(move |k| {
                    let p = [k / 9, (k / 3) % 3, k % 3];
                    p[a] as f64
                })
            })
            .collect();
        let u = Tensor::from_vec(values, (1, 3, 3, 3, 3), &Device::Cpu)?;
        assert_close(&jacobian_determinant(&u)?.flatten_all()?, &[8.0], 1e-12);
        Ok(())
    }

    #[test]
    fn jacobian_distance_compares_the_two_determinants() -> candle::Result<()> {
        let u = linear([[0.5, 0.2], [0.1, -0.2]]);
        let v = linear([[0.0, 0.0], [0.0, 0.0]]);
        let l2 = JacobianDistanceConfig::default().build(2).unwrap();
        assert_close(&l2.loss(&u, Some(&v))?, &[0.18f64.powi(2)], 1e-12);
        assert_close(&l2.loss(&u, Some(&u))?, &[0.0], 1e-12);
        let l1 = JacobianDistanceConfig {
            norm: JacobianNorm::L1,
        }
        .build(2)
        .unwrap();
        assert_close(&l1.loss(&u, Some(&v))?, &[0.18], 1e-12);
        Ok(())
    }

    #[test]
    fn folding_penalises_only_voxels_below_the_margin() -> candle::Result<()> {
        let folding = FoldingConfig::default().build(2).unwrap();
        // det 1.18 everywhere: nothing folds.
        let smooth = linear([[0.5, 0.2], [0.1, -0.2]]);
        assert_close(&folding.loss(&smooth, None)?, &[0.0], 1e-12);
        // A mirror along the rows (I + A = diag(−1, 1)): det −1, penalty 1.
        let mirrored = linear([[-2.0, 0.0], [0.0, 0.0]]);
        assert_close(&folding.loss(&mirrored, None)?, &[1.0], 1e-12);
        let margin = FoldingConfig { margin: 1.5 }.build(2).unwrap();
        assert_close(&margin.loss(&smooth, None)?, &[1.5 - 1.18], 1e-12);
        assert!(FoldingConfig { margin: -1.0 }.build(2).is_err());
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences_in_2d_and_3d() {
        for shape in [vec![2, 2, 4, 5], vec![1, 3, 3, 4, 3]] {
            let ndim = shape.len() - 2;
            // Large enough to fold here and there, so the folding penalty has a gradient.
            let u = pseudo_random(&shape, -1.5, 1.5, 21);
            let v = pseudo_random(&shape, -1.5, 1.5, 22);
            let distance = JacobianDistanceConfig::default().build(ndim).unwrap();
            check_gradient(|x| distance.loss(x, Some(&v)), &u, 1e-5);
            let folding = FoldingConfig { margin: 0.5 }.build(ndim).unwrap();
            check_gradient(|x| folding.loss(x, None), &u, 1e-5);
        }
    }
}
