//! The sampling conventions of `warp` and `dvf_to_ddf` that the user guide states (and the
//! peer comparison, `tests/peer/run.py`, checks against PyTorch, MONAI and DeepReg), guarded
//! here with hand-computed values so they hold without Python.

use candle_core::{Device, Result, Tensor, Var};
use voxreg_framework::ops::{dvf_to_ddf, warp, Interp, Padding};

/// A 1 × 4 image `[1, 2, 4, 8]` as `(1, 1, 1, 4)` and a field `(1, 2, 1, 4)` moving every voxel
/// by `dx` along the last axis.
fn row(dx: &[f64]) -> Result<(Tensor, Tensor)> {
    let image = Tensor::new(&[1.0f64, 2.0, 4.0, 8.0], &Device::Cpu)?.reshape((1, 1, 1, 4))?;
    let zeros = vec![0.0; dx.len()];
    let ddf = Tensor::new(zeros.as_slice(), &Device::Cpu)?;
    let ddf = Tensor::stack(&[&ddf, &Tensor::new(dx, &Device::Cpu)?], 0)?.reshape((1, 2, 1, 4))?;
    Ok((image, ddf))
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_vec1::<f64>()
}

/// The warped row and the gradient of its sum w.r.t. the last-axis displacement.
fn warp_and_slope(dx: &[f64], padding: Padding) -> Result<(Vec<f64>, Vec<f64>)> {
    let (image, ddf) = row(dx)?;
    let ddf = Var::from_tensor(&ddf)?;
    let out = warp(&image, ddf.as_tensor(), Interp::Linear, padding)?;
    let grads = out.sum_all()?.backward()?;
    let grad = grads
        .get(ddf.as_tensor())
        .expect("the field gets a gradient");
    Ok((values(&out)?, values(&grad.narrow(1, 1, 1)?)?))
}

#[test]
fn zero_padding_falls_off_linearly_outside_the_image() -> Result<()> {
    // Voxel 0 samples x = −0.5, voxel 3 samples x = 3.5: half of the edge voxel, as
    // grid_sample(align_corners=True); DeepReg's resampler gives 0 for both.
    let (out, _) = warp_and_slope(&[-0.5, 0.0, 0.0, 0.5], Padding::Zeros)?;
    assert_eq!(out, [0.5, 2.0, 4.0, 4.0]);
    // At −1 and at n the sample is 0.
    let (out, _) = warp_and_slope(&[-1.0, 0.0, 0.0, 1.0], Padding::Zeros)?;
    assert_eq!(out, [0.0, 2.0, 4.0, 0.0]);
    Ok(())
}

#[test]
fn a_zero_field_reproduces_the_image_with_forward_difference_slopes() -> Result<()> {
    // Exactly x = 0 is inside the image (DeepReg's zero boundary would return 0 there).
    let (out, slope) = warp_and_slope(&[0.0; 4], Padding::Zeros)?;
    assert_eq!(out, [1.0, 2.0, 4.0, 8.0]);
    // Forward differences I[k + 1] − I[k], and −I[n − 1] at the last voxel (zeros beyond);
    // DeepReg's backward differences would be [0 (zero boundary), 1, 2, 4].
    assert_eq!(slope, [1.0, 2.0, 4.0, -8.0]);
    Ok(())
}

#[test]
fn border_padding_keeps_the_slope_at_zero_and_not_at_the_last_voxel() -> Result<()> {
    let (out, slope) = warp_and_slope(&[0.0; 4], Padding::Border)?;
    assert_eq!(out, [1.0, 2.0, 4.0, 8.0]);
    // PyTorch's border padding gives 0 at x = 0 as well; voxreg keeps the forward difference.
    assert_eq!(slope, [1.0, 2.0, 4.0, 0.0]);
    // Outside the image the clamped coordinate has no gradient.
    let (out, slope) = warp_and_slope(&[-0.5, 0.0, 0.0, 0.5], Padding::Border)?;
    assert_eq!(out, [1.0, 2.0, 4.0, 8.0]);
    assert_eq!([slope[0], slope[3]], [0.0, 0.0]);
    Ok(())
}

#[test]
fn scaling_and_squaring_integrates_a_constant_velocity_to_the_same_translation() -> Result<()> {
    // Border padding: u + u(p + u) = 2u at every voxel, the border ones included (zero padding
    // would shrink the displacement of the voxels whose sample point leaves the image).
    let velocity = Tensor::new(&[0.75f64, -1.25], &Device::Cpu)?
        .reshape((1, 2, 1, 1))?
        .broadcast_as((1, 2, 5, 6))?
        .contiguous()?;
    let ddf = dvf_to_ddf(&velocity, 7)?;
    let error = (ddf - &velocity)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert!(error < 1e-12, "max |ddf − v| = {error}");
    Ok(())
}
