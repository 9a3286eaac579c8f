//! atlalign's image losses (`atlalign/ml_utils/losses.py`, version 0.6.2) that DeepReg and
//! VoxelMorph lack: `pearson` (atlalign's `cross_correlation`), `psnr` and `ssim`. Each scores every
//! pair on its own, `(N, 1, *spatial)` → `(N,)`; atlalign's `pearson` pools the whole batch
//! into one correlation (equal for a batch of one).

use serde::{Deserialize, Serialize};
use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::ops;
use voxreg_framework::prelude::*;

use crate::kinds::{ImageLoss, Images};
use crate::util::{check_pair, check_spatial_dims};

/// Added to the product of the variances under `pearson`'s square root, so a constant image
/// gives `r = 0` (loss 1) and finite gradients rather than a division by zero.
const PEARSON_EPSILON: f64 = 1.0e-12;

/// The smallest mean squared error `psnr` takes, so identical images score −100 dB rather
/// than −∞.
const PSNR_MIN_MSE: f64 = 1.0e-10;

/// `pearson`: atlalign's `cross_correlation` loss, `1 − r²` with the Pearson correlation
/// `r = Σ (f − f̄)(w − w̄) / √(Σ (f − f̄)² · Σ (w − w̄)² + ε)` over every voxel of a pair
/// (ε = 10⁻¹²), clipped to `[−1, 1]`. 0 for images that match up to an affine change of
/// intensity (either sign), 1 for uncorrelated ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PearsonConfig {}

struct Pearson {
    spatial_dims: usize,
}

impl ImageLoss for Pearson {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair("image_loss `pearson`", self.spatial_dims, fixed, warped)?;
        let centred = |t: &Tensor| -> candle::Result<Tensor> {
            let flat = t.flatten_from(1)?;
            flat.broadcast_sub(&flat.mean_keepdim(1)?)
        };
        let (f, w) = (centred(fixed)?, centred(warped)?);
        let cross = (&f * &w)?.sum(1)?;
        let spread = ((f.sqr()?.sum(1)? * w.sqr()?.sum(1)?)? + PEARSON_EPSILON)?.sqrt()?;
        let r = (cross / spread)?.clamp(-1.0, 1.0)?;
        r.sqr()?.neg()? + 1.0
    }
}

#[typetag::serialize(name = "pearson")]
impl ImageLossConfig for PearsonConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "image_loss `pearson`";
        check_spatial_dims(component, spatial_dims)?;
        Ok(Box::new(Images(Pearson { spatial_dims }, component)))
    }
}

register_component!(
    image_loss,
    "pearson",
    PearsonConfig,
    "atlalign's cross-correlation loss: 1 − r² of the pair's Pearson correlation"
);

/// `psnr`: atlalign's `psnr` loss, the negated peak signal-to-noise ratio for intensities in
/// `[0, 1]` (`tf.image.psnr` with `max_val = 1`): `10 · log₁₀(max(mse, 10⁻¹⁰))` dB, with
/// `mse` the mean squared difference over the pair's voxels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsnrConfig {}

struct Psnr {
    spatial_dims: usize,
}

impl ImageLoss for Psnr {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair("image_loss `psnr`", self.spatial_dims, fixed, warped)?;
        let mse = (fixed - warped)?.sqr()?.flatten_from(1)?.mean(1)?;
        mse.maximum(PSNR_MIN_MSE)?.log()? * (10.0 / std::f64::consts::LN_10)
    }
}

#[typetag::serialize(name = "psnr")]
impl ImageLossConfig for PsnrConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "image_loss `psnr`";
        check_spatial_dims(component, spatial_dims)?;
        Ok(Box::new(Images(Psnr { spatial_dims }, component)))
    }
}

register_component!(
    image_loss,
    "psnr",
    PsnrConfig,
    "atlalign's PSNR loss: −10·log10(1 / mse) dB for intensities in [0, 1]"
);

/// `ssim`: atlalign's `ssim` loss, the negated structural similarity of `tf.image.ssim` with
/// TensorFlow's defaults (`max_val = 1`, an 11-tap Gaussian window of σ = 1.5, `k1 = 0.01`,
/// `k2 = 0.03`). With `μ`, `σ²` and `σ_fw` the windowed means, variances and covariance
/// (`E[f²] − μ_f²`, …), `c1 = (k1)²`, `c2 = (k2)²`:
/// `ssim = mean_valid ( (2 μ_f μ_w + c1) / (μ_f² + μ_w² + c1) · (2 σ_fw + c2) / (σ_f² + σ_w² + c2) )`
/// over the positions where the window lies inside the image (TensorFlow's `VALID`), and the
/// loss is `−ssim`. 2D as TensorFlow; 3D with the same window along the third axis. Every
/// axis must hold at least 11 voxels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsimConfig {}

/// TensorFlow's `tf.image.ssim` window: size and σ.
const SSIM_WINDOW: usize = 11;
const SSIM_SIGMA: f64 = 1.5;
const SSIM_K1: f64 = 0.01;
const SSIM_K2: f64 = 0.03;

struct Ssim {
    spatial_dims: usize,
    kernel: Vec<f64>,
}

impl Ssim {
    /// The windowed mean of `x`, cropped to the valid positions.
    fn windowed(&self, x: &Tensor) -> candle::Result<Tensor> {
        let kernels = vec![self.kernel.clone(); self.spatial_dims];
        let mut y = ops::separable_filter_axes(x, &kernels)?;
        let border = (SSIM_WINDOW - 1) / 2;
        for axis in 2..2 + self.spatial_dims {
            let n = y.dim(axis)?;
            y = y.narrow(axis, border, n - 2 * border)?;
        }
        Ok(y)
    }
}

impl ImageLoss for Ssim {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        const NAME: &str = "image_loss `ssim`";
        check_pair(NAME, self.spatial_dims, fixed, warped)?;
        if fixed.dims()[2..].iter().any(|&n| n < SSIM_WINDOW) {
            candle::bail!(
                "{NAME}: every spatial axis needs at least {SSIM_WINDOW} voxels (TensorFlow's window), got {:?}",
                &fixed.dims()[2..]
            );
        }
        let (c1, c2) = (SSIM_K1 * SSIM_K1, SSIM_K2 * SSIM_K2);
        let (mf, mw) = (self.windowed(fixed)?, self.windowed(warped)?);
        let products = (&mf * &mw)?;
        let squares = (mf.sqr()? + mw.sqr()?)?;
        let luminance = ((&products * 2.0)? + c1)?.div(&(&squares + c1)?)?;
        let cross = (self.windowed(&(fixed * warped)?)? * 2.0)?;
        let energy = self.windowed(&(fixed.sqr()? + warped.sqr()?)?)?;
        let structure = (((cross - (products * 2.0)?)? + c2)?).div(&((energy - squares)? + c2)?)?;
        (luminance * structure)?.flatten_from(1)?.mean(1)?.neg()
    }
}

#[typetag::serialize(name = "ssim")]
impl ImageLossConfig for SsimConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "image_loss `ssim`";
        check_spatial_dims(component, spatial_dims)?;
        let centre = (SSIM_WINDOW as f64 - 1.0) / 2.0;
        let raw: Vec<f64> = (0..SSIM_WINDOW)
            .map(|i| (-0.5 * ((i as f64 - centre) / SSIM_SIGMA).powi(2)).exp())
            .collect();
        let total: f64 = raw.iter().sum();
        let kernel = raw.iter().map(|v| v / total).collect();
        Ok(Box::new(Images(
            Ssim {
                spatial_dims,
                kernel,
            },
            component,
        )))
    }
}

register_component!(
    image_loss,
    "ssim",
    SsimConfig,
    "atlalign's SSIM loss: −tf.image.ssim (11-tap Gaussian window, σ 1.5, k1 0.01, k2 0.03)"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, pseudo_random};
    use voxreg_framework::candle::Device;

    fn image(values: &[f64]) -> Tensor {
        Tensor::from_vec(values.to_vec(), (1, 1, 2, 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn pearson_is_one_minus_the_squared_correlation() -> candle::Result<()> {
        let loss = PearsonConfig {}.build(2).unwrap();
        let fixed = image(&[0.0, 1.0, 2.0, 3.0]);
        // An affine change of intensity, either sign: r = ±1.
        for warped in [image(&[1.0, 3.0, 5.0, 7.0]), image(&[3.0, 2.0, 1.0, 0.0])] {
            assert_close(&loss.loss(&warped, Some(&fixed))?, &[0.0], 1e-10);
        }
        // Centred (−1.5, −0.5, 0.5, 1.5) and (1, −1, −1, 1): Σ = −1.5 + 0.5 − 0.5 + 1.5 = 0.
        let orthogonal = image(&[1.0, 0.0, 0.0, 1.0]);
        assert_close(&loss.loss(&orthogonal, Some(&fixed))?, &[1.0], 1e-10);
        // (1, 0, 0, 0) centred (0.75, −0.25, −0.25, −0.25): Σ fw = −1.5, Σf² = 5, Σw² = 0.75.
        let one = image(&[1.0, 0.0, 0.0, 0.0]);
        let r2 = 1.5f64.powi(2) / (5.0 * 0.75);
        assert_close(&loss.loss(&one, Some(&fixed))?, &[1.0 - r2], 1e-10);
        // A constant image has no correlation: loss 1, finite.
        let flat = image(&[0.5; 4]);
        assert_close(&loss.loss(&flat, Some(&fixed))?, &[1.0], 1e-10);
        Ok(())
    }

    #[test]
    fn psnr_is_ten_log10_of_the_mean_squared_error() -> candle::Result<()> {
        let loss = PsnrConfig {}.build(2).unwrap();
        let fixed = image(&[0.0, 0.5, 1.0, 0.25]);
        let warped = image(&[0.1, 0.5, 0.9, 0.25]);
        // mse = (0.01 + 0 + 0.01 + 0) / 4 = 0.005.
        assert_close(
            &loss.loss(&warped, Some(&fixed))?,
            &[10.0 * 0.005f64.log10()],
            1e-10,
        );
        assert_close(&loss.loss(&fixed, Some(&fixed))?, &[-100.0], 1e-10);
        Ok(())
    }

    #[test]
    fn ssim_is_one_for_equal_images_and_needs_the_window() -> candle::Result<()> {
        let loss = SsimConfig {}.build(2).unwrap();
        let a = pseudo_random(&[1, 1, 12, 13], 0.0, 1.0, 3);
        assert_close(&loss.loss(&a, Some(&a))?, &[-1.0], 1e-10);
        // A constant offset keeps the structure term at 1 and lowers the luminance term.
        let shifted = (&a + 0.2)?;
        let value = loss.loss(&shifted, Some(&a))?.to_vec1::<f64>()?[0];
        assert!(value > -1.0 && value < -0.5, "{value}");
        let small = pseudo_random(&[1, 1, 10, 13], 0.0, 1.0, 3);
        assert!(loss.loss(&small, Some(&small)).is_err());
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences_in_2d_and_3d() {
        for shape in [vec![2, 1, 4, 5], vec![1, 1, 3, 4, 3]] {
            let fixed = pseudo_random(&shape, 0.0, 1.0, 11);
            let warped = pseudo_random(&shape, 0.0, 1.0, 12);
            let ndim = shape.len() - 2;
            for loss in [
                PearsonConfig {}.build(ndim).unwrap(),
                PsnrConfig {}.build(ndim).unwrap(),
            ] {
                check_gradient(|x| loss.loss(x, Some(&fixed)), &warped, 1e-5);
            }
        }
        let fixed = pseudo_random(&[1, 1, 12, 11], 0.0, 1.0, 13);
        let warped = pseudo_random(&[1, 1, 12, 11], 0.0, 1.0, 14);
        let ssim = SsimConfig {}.build(2).unwrap();
        check_gradient(|x| ssim.loss(x, Some(&fixed)), &warped, 1e-5);
    }
}
