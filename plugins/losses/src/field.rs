//! Field losses (`train.loss.field`): a predicted field against another field, both
//! `(N, ndim, *spatial)` in voxels.

use serde::{Deserialize, Serialize};
use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::ops::{self, Padding};
use voxreg_framework::prelude::*;

use crate::util::check_spatial_dims;

/// Checks that `a` and `b` are fields `(N, ndim, *spatial)` of one shape.
pub(crate) fn check_fields(
    component: &str,
    spatial_dims: usize,
    a: &Tensor,
    b: &Tensor,
) -> candle::Result<()> {
    let dims = a.dims();
    if dims.len() != spatial_dims + 2 || dims[1] != spatial_dims {
        candle::bail!(
            "{component}: expected fields (N, {spatial_dims}, *spatial) with {spatial_dims} spatial axes, got {dims:?}"
        );
    }
    if b.dims() != dims {
        candle::bail!(
            "{component}: the two fields differ in shape: {dims:?} and {:?}",
            b.dims()
        );
    }
    Ok(())
}

/// `ssd` (field): the mean squared difference of two fields over every non-batch axis,
/// `mean_{i, x} (u_i(x) − v_i(x))²`, e.g. a predicted DDF against the ground truth.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldSsdConfig {}

struct FieldSsd {
    spatial_dims: usize,
}

impl Loss for FieldSsd {
    fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle::Result<Tensor> {
        const NAME: &str = "field_loss `ssd`";
        let target = required_target(NAME, target)?;
        check_fields(NAME, self.spatial_dims, prediction, target)?;
        (prediction - target)?.sqr()?.flatten_from(1)?.mean(1)
    }
}

#[typetag::serialize(name = "ssd")]
impl FieldLossConfig for FieldSsdConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        check_spatial_dims("field_loss `ssd`", spatial_dims)?;
        Ok(Box::new(FieldSsd { spatial_dims }))
    }
}

register_component!(
    field_loss,
    "ssd",
    FieldSsdConfig,
    "Mean squared difference of two fields (e.g. the DDF against a ground truth)"
);

/// `inverse_consistency`: how far `u` composed with `v` is from the identity,
/// `mean_{i, x} c_i(x)²` with `c(x) = v(x) + u(x + v(x))` (`u` sampled linearly, border
/// padding): 0 when `v` inverts `u`. With `inputs: [ddf, inv/ddf]` (the `inverse` method),
/// `c` is `ddf ∘ inv/ddf`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InverseConsistencyConfig {}

struct InverseConsistency {
    spatial_dims: usize,
}

impl Loss for InverseConsistency {
    fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle::Result<Tensor> {
        const NAME: &str = "field_loss `inverse_consistency`";
        let inverse = required_target(NAME, target)?;
        check_fields(NAME, self.spatial_dims, prediction, inverse)?;
        ops::compose_ddf(prediction, inverse, Padding::Border)?
            .sqr()?
            .flatten_from(1)?
            .mean(1)
    }
}

#[typetag::serialize(name = "inverse_consistency")]
impl FieldLossConfig for InverseConsistencyConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        check_spatial_dims("field_loss `inverse_consistency`", spatial_dims)?;
        Ok(Box::new(InverseConsistency { spatial_dims }))
    }
}

register_component!(
    field_loss,
    "inverse_consistency",
    InverseConsistencyConfig,
    "Mean squared composition of a field with its inverse (0 when they invert each other)"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, pseudo_random};

    fn constant(values: [f64; 2]) -> Tensor {
        let planes: Vec<Tensor> = values
            .iter()
            .map(|v| Tensor::full(*v, (1, 1, 4, 4), &Device::Cpu).unwrap())
            .collect();
        Tensor::cat(&planes, 1).unwrap()
    }

    #[test]
    fn field_ssd_is_the_mean_squared_difference() -> candle::Result<()> {
        let loss = FieldSsdConfig {}.build(2).unwrap();
        let value = loss.loss(&constant([1.0, 3.0]), Some(&constant([0.0, 0.0])))?;
        // (1 + 9) / 2.
        assert_close(&value, &[5.0], 1e-12);
        assert!(loss.loss(&constant([1.0, 3.0]), None).is_err());
        let three = Tensor::zeros((1, 3, 4, 4), DType::F64, &Device::Cpu)?;
        assert!(loss.loss(&three, Some(&three)).is_err());
        Ok(())
    }

    #[test]
    fn a_shift_and_its_opposite_are_consistent() -> candle::Result<()> {
        let loss = InverseConsistencyConfig {}.build(2).unwrap();
        let consistent = loss.loss(&constant([1.0, -2.0]), Some(&constant([-1.0, 2.0])))?;
        assert_close(&consistent, &[0.0], 1e-12);
        // The same shift twice composes to twice the shift: mean of (2² + 4²) / 2 = 10.
        let doubled = loss.loss(&constant([1.0, -2.0]), Some(&constant([1.0, -2.0])))?;
        assert_close(&doubled, &[10.0], 1e-12);
        Ok(())
    }

    #[test]
    fn inverse_consistency_gradients_match_finite_differences() {
        let loss = InverseConsistencyConfig {}.build(2).unwrap();
        let u = pseudo_random(&[1, 2, 4, 3], -0.4, 0.4, 3);
        let v = pseudo_random(&[1, 2, 4, 3], -0.4, 0.4, 4);
        check_gradient(|x| loss.loss(x, Some(&v)), &u, 1e-5);
        check_gradient(|x| loss.loss(&u, Some(x)), &v, 1e-5);
    }
}
