//! Checks shared by the losses: config validation at build time, input checks at run time.

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::prelude::*;

/// DeepReg's `EPS`, the fixed smoothing constant of `gncc` and `gmi`.
pub(crate) const EPS: f64 = 1.0e-5;

/// Rejects a number of spatial axes other than 2 or 3.
pub(crate) fn check_spatial_dims(
    component: &str,
    spatial_dims: usize,
) -> Result<(), ComponentError> {
    if spatial_dims == 2 || spatial_dims == 3 {
        Ok(())
    } else {
        Err(ComponentError::invalid(
            component,
            format!("spatial_dims must be 2 or 3, got {spatial_dims}"),
        ))
    }
}

/// Checks one input: floating point, `(N, C, *spatial)` with `spatial_dims` spatial axes,
/// nothing empty.
pub(crate) fn check_input(
    component: &str,
    what: &str,
    spatial_dims: usize,
    tensor: &Tensor,
) -> candle::Result<()> {
    let dims = tensor.dims();
    if dims.len() != spatial_dims + 2 {
        candle::bail!(
            "{component}: {what} must be (N, C, *spatial) with {spatial_dims} spatial axes, \
             got shape {dims:?}"
        );
    }
    if dims.contains(&0) {
        candle::bail!("{component}: {what} are empty, shape {dims:?}");
    }
    if !tensor.dtype().is_float() {
        candle::bail!(
            "{component}: {what} must be floating point, got {:?}",
            tensor.dtype()
        );
    }
    Ok(())
}
