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

/// Checks `scales`: absent (`null`, a single unsmoothed scale) or a non-empty list of
/// finite numbers ≥ 0 (σ in voxels, 0 = no smoothing).
pub(crate) fn check_scales(component: &str, scales: Option<&[f64]>) -> Result<(), ComponentError> {
    let Some(scales) = scales else {
        return Ok(());
    };
    if scales.is_empty() {
        return Err(ComponentError::invalid(
            component,
            "scales must be null, one number or a non-empty list of numbers ≥ 0",
        ));
    }
    if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return Err(ComponentError::invalid(
            component,
            format!("scales must be finite numbers ≥ 0 (0 = no smoothing), got {bad}"),
        ));
    }
    Ok(())
}

/// Rejects a smoothing constant that is negative or not finite.
pub(crate) fn check_smoothing(
    component: &str,
    key: &str,
    value: f64,
) -> Result<(), ComponentError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ComponentError::invalid(
            component,
            format!("{key} must be a finite number ≥ 0, got {value}"),
        ))
    }
}

/// Rejects a `background_weight` outside `[0, 1]`, as DeepReg does.
pub(crate) fn check_background_weight(component: &str, weight: f64) -> Result<(), ComponentError> {
    if (0.0..=1.0).contains(&weight) {
        Ok(())
    } else {
        Err(ComponentError::invalid(
            component,
            format!("background_weight must be within [0, 1], got {weight}"),
        ))
    }
}

/// Checks a pair of loss inputs: floating point, the same shape, `(N, C, *spatial)` with
/// `spatial_dims` spatial axes, nothing empty.
pub(crate) fn check_pair(
    component: &str,
    spatial_dims: usize,
    fixed: &Tensor,
    warped: &Tensor,
) -> candle::Result<()> {
    if fixed.dims() != warped.dims() {
        candle::bail!(
            "{component}: fixed {:?} and warped {:?} differ in shape",
            fixed.dims(),
            warped.dims()
        );
    }
    check_input(component, "inputs", spatial_dims, fixed)?;
    if fixed.dtype() != warped.dtype() {
        candle::bail!(
            "{component}: fixed ({:?}) and warped ({:?}) differ in dtype",
            fixed.dtype(),
            warped.dtype()
        );
    }
    Ok(())
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

/// DeepReg's `binary` option: `1` where `x ≥ 0.5`, else `0`, in `x`'s dtype. It has no
/// gradient.
pub(crate) fn binarise(x: &Tensor) -> candle::Result<Tensor> {
    x.ge(0.5)?.to_dtype(x.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_accept_null_and_lists_of_non_negative_numbers() {
        assert!(check_scales("c", None).is_ok());
        assert!(check_scales("c", Some(&[0.0])).is_ok());
        assert!(check_scales("c", Some(&[0.0, 0.0])).is_ok());
        assert!(check_scales("c", Some(&[0.0, 1.0, 2.5])).is_ok());
        for bad in [&[][..], &[-1.0], &[f64::NAN], &[f64::INFINITY]] {
            assert!(matches!(
                check_scales("c", Some(bad)),
                Err(ComponentError::InvalidConfig { .. })
            ));
        }
    }

    #[test]
    fn binarise_thresholds_at_one_half() -> candle::Result<()> {
        let x = Tensor::new(&[0.0f32, 0.49, 0.5, 0.51, 1.0], &Device::Cpu)?;
        assert_eq!(binarise(&x)?.to_vec1::<f32>()?, [0.0, 0.0, 1.0, 1.0, 1.0]);
        Ok(())
    }
}
