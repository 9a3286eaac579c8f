//! Multi-scale losses (DeepReg's `MultiScaleMixin`): the loss averaged over copies of both
//! inputs smoothed by separable Gaussian or Cauchy kernels of several widths.

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::ops::{gaussian_kernel, separable_filter};
use voxreg_framework::prelude::*;

use crate::kinds::{ImageLoss, Images, LabelLoss, Labels};

use crate::config::ScaleKernel;
use crate::util::{check_pair, check_scales};

/// Normalised Cauchy kernel `1 / (1 + (x/σ)²)` for `x = −tail..=tail`, `tail = floor(5σ)`
/// (DeepReg's `cauchy_kernel1d`).
pub(crate) fn cauchy_kernel(sigma: f64) -> Vec<f64> {
    let tail = (5.0 * sigma).floor() as i64;
    let raw: Vec<f64> = (-tail..=tail)
        .map(|x| 1.0 / ((x as f64 / sigma).powi(2) + 1.0))
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|v| v / sum).collect()
}

/// The smoothing kernel of each scale: `None` for scale 0 (no smoothing), else the
/// normalised 1D kernel of width `σ = scale` (Gaussian: tail `floor(3σ)`, DeepReg's
/// `gaussian_kernel1d_sigma`; Cauchy: tail `floor(5σ)`). Scales must be finite and ≥ 0.
pub(crate) fn scale_kernels(scales: &[f64], kernel: ScaleKernel) -> Vec<Option<Vec<f64>>> {
    scales
        .iter()
        .map(|&scale| {
            (scale != 0.0).then(|| match kernel {
                ScaleKernel::Gaussian => gaussian_kernel(scale),
                ScaleKernel::Cauchy => cauchy_kernel(scale),
            })
        })
        .collect()
}

/// Builds `inner` as an image loss, wrapped in [`MultiScale`] when `scales` is given (DeepReg
/// smooths only when `scales` is not null; a list of zeros averages unsmoothed copies).
pub(crate) fn image_loss<L: ImageLoss + 'static>(
    component: &'static str,
    spatial_dims: usize,
    inner: L,
    scales: Option<&[f64]>,
    kernel: ScaleKernel,
) -> Result<Box<dyn Loss>, ComponentError> {
    check_scales(component, scales)?;
    Ok(match scales {
        None => Box::new(Images(inner, component)),
        Some(scales) => Box::new(Images(
            MultiScale {
                component,
                spatial_dims,
                inner,
                kernels: scale_kernels(scales, kernel),
            },
            component,
        )),
    })
}

/// Builds `inner` as a label loss, wrapped in [`MultiScale`] when `scales` is given.
pub(crate) fn label_loss<L: LabelLoss + 'static>(
    component: &'static str,
    spatial_dims: usize,
    inner: L,
    scales: Option<&[f64]>,
    kernel: ScaleKernel,
) -> Result<Box<dyn Loss>, ComponentError> {
    check_scales(component, scales)?;
    Ok(match scales {
        None => Box::new(Labels(inner, component)),
        Some(scales) => Box::new(Labels(
            MultiScale {
                component,
                spatial_dims,
                inner,
                kernels: scale_kernels(scales, kernel),
            },
            component,
        )),
    })
}

/// A loss averaged over smoothing scales: `mean_s loss(K_s * fixed, K_s * warped)`, where
/// `K_s` filters every spatial axis with the scale's kernel (zero padding, same size) and is
/// the identity for scale 0.
pub(crate) struct MultiScale<L> {
    pub(crate) component: &'static str,
    pub(crate) spatial_dims: usize,
    pub(crate) inner: L,
    pub(crate) kernels: Vec<Option<Vec<f64>>>,
}

impl<L> MultiScale<L> {
    fn value(
        &self,
        fixed: &Tensor,
        warped: &Tensor,
        loss: impl Fn(&Tensor, &Tensor) -> candle::Result<Tensor>,
    ) -> candle::Result<Tensor> {
        check_pair(self.component, self.spatial_dims, fixed, warped)?;
        let mut total: Option<Tensor> = None;
        for kernel in &self.kernels {
            let value = match kernel {
                None => loss(fixed, warped)?,
                Some(k) => loss(&separable_filter(fixed, k)?, &separable_filter(warped, k)?)?,
            };
            total = Some(match total {
                None => value,
                Some(sum) => (sum + value)?,
            });
        }
        match total {
            Some(total) => total / self.kernels.len() as f64,
            None => candle::bail!("{}: no scales", self.component),
        }
    }
}

impl<L: ImageLoss> ImageLoss for MultiScale<L> {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        self.value(fixed, warped, |f, w| self.inner.loss(f, w))
    }
}

impl<L: LabelLoss> LabelLoss for MultiScale<L> {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        self.value(fixed, warped, |f, w| self.inner.loss(f, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Pair;
    use crate::testing::{assert_close, check_gradient, pseudo_random};
    use crate::util::EPS;
    use crate::{CrossEntropyConfig, DiceConfig, JaccardConfig, OverlapConfig, SsdConfig};

    fn overlap(scales: Option<&[f64]>, kernel: ScaleKernel) -> OverlapConfig {
        OverlapConfig {
            binary: false,
            background_weight: 0.0,
            smooth_nr: EPS,
            smooth_dr: EPS,
            scales: scales.map(<[f64]>::to_vec),
            kernel,
        }
    }

    fn cross_entropy(scales: Option<&[f64]>, kernel: ScaleKernel) -> CrossEntropyConfig {
        CrossEntropyConfig {
            binary: false,
            background_weight: 0.2,
            smooth: EPS,
            scales: scales.map(<[f64]>::to_vec),
            kernel,
        }
    }

    fn ssd(scales: Option<&[f64]>, kernel: ScaleKernel) -> SsdConfig {
        SsdConfig {
            scales: scales.map(<[f64]>::to_vec),
            kernel,
        }
    }

    /// A built loss as a closure over (fixed, warped).
    type LossFn = Box<dyn Fn(&Tensor, &Tensor) -> candle::Result<Tensor>>;

    /// Every label loss with `scales`, plus `ssd` as an image loss, built for `dims`.
    fn all_losses(scales: Option<&[f64]>, kernel: ScaleKernel, dims: usize) -> Vec<LossFn> {
        let dice = DiceConfig(overlap(scales, kernel))
            .build(dims)
            .map(Pair)
            .unwrap();
        let jaccard = JaccardConfig(overlap(scales, kernel))
            .build(dims)
            .map(Pair)
            .unwrap();
        let ce = cross_entropy(scales, kernel).build(dims).map(Pair).unwrap();
        let label_ssd = LabelLossConfig::build(&ssd(scales, kernel), dims)
            .map(Pair)
            .unwrap();
        let image_ssd = ImageLossConfig::build(&ssd(scales, kernel), dims)
            .map(Pair)
            .unwrap();
        vec![
            Box::new(move |t, p| dice.loss(t, p)),
            Box::new(move |t, p| jaccard.loss(t, p)),
            Box::new(move |t, p| ce.loss(t, p)),
            Box::new(move |t, p| label_ssd.loss(t, p)),
            Box::new(move |t, p| image_ssd.loss(t, p)),
        ]
    }

    #[test]
    fn scale_zero_equals_the_single_scale_loss() -> candle::Result<()> {
        let t2 = pseudo_random(&[2, 1, 3, 4], 0.0, 1.0, 30);
        let p2 = pseudo_random(&[2, 1, 3, 4], 0.0, 1.0, 31);
        let t3 = pseudo_random(&[1, 1, 3, 2, 4], 0.0, 1.0, 32);
        let p3 = pseudo_random(&[1, 1, 3, 2, 4], 0.0, 1.0, 33);
        for (dims, t, p) in [(2, &t2, &p2), (3, &t3, &p3)] {
            let single = all_losses(None, ScaleKernel::Gaussian, dims);
            for scales in [&[0.0][..], &[0.0, 0.0]] {
                for kernel in [ScaleKernel::Gaussian, ScaleKernel::Cauchy] {
                    let multi = all_losses(Some(scales), kernel, dims);
                    for (one, many) in single.iter().zip(&multi) {
                        let expected = one(t, p)?.to_vec1::<f64>()?;
                        assert_close(&many(t, p)?, &expected, 1e-12);
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn smoothed_losses_match_hand_values() -> candle::Result<()> {
        let image = |values: &[f64], shape: &[usize]| {
            Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
        };
        // One voxel: smoothing keeps only the centre tap k₀ on each axis, so t = 1, p = 0
        // become k₀^ndim and 0; scales [0, σ] average 1 and k₀^(2 ndim).
        let gauss_z: f64 = (-3..=3).map(|x: i32| (-0.5 * (x * x) as f64).exp()).sum();
        let cauchy_z: f64 = (-5..=5).map(|x: i32| 1.0 / (1.0 + (x * x) as f64)).sum();
        for (kernel, k0) in [
            (ScaleKernel::Gaussian, 1.0 / gauss_z),
            (ScaleKernel::Cauchy, 1.0 / cauchy_z),
        ] {
            for dims in [2, 3] {
                let shape = vec![1usize; dims + 2];
                let (t, p) = (image(&[1.0], &shape), image(&[0.0], &shape));
                let loss = LabelLossConfig::build(&ssd(Some(&[0.0, 1.0]), kernel), dims)
                    .map(Pair)
                    .unwrap();
                let expected = (1.0 + k0.powi(2 * dims as i32)) / 2.0;
                assert_close(&loss.loss(&t, &p)?, &[expected], 1e-12);
            }
        }
        // A row t = (1, 0, 0), p = (0, 0, 1) smoothed with the Gaussian σ = 1, taps
        // g_d = e^(−d²/2) / Z: along the row t → (g₀, g₁, g₂), p → (g₂, g₁, g₀), and the
        // single-voxel column multiplies both by g₀. Dice = 2Σtp / Σ(t + p).
        let g = |d: i32| (-0.5 * (d * d) as f64).exp() / gauss_z;
        let t = image(&[1.0, 0.0, 0.0], &[1, 1, 1, 3]);
        let p = image(&[0.0, 0.0, 1.0], &[1, 1, 1, 3]);
        let product = g(0) * g(0) * (2.0 * g(0) * g(2) + g(1) * g(1));
        let sum = 2.0 * g(0) * (g(0) + g(1) + g(2));
        let dice = DiceConfig(overlap(Some(&[1.0]), ScaleKernel::Gaussian))
            .build(2)
            .map(Pair)
            .unwrap();
        let expected = -(2.0 * product + EPS) / (sum + EPS);
        assert_close(&dice.loss(&t, &p)?, &[expected], 1e-12);
        // Scales [0, 1]: the unsmoothed Dice is ε / (2 + ε).
        let dice = DiceConfig(overlap(Some(&[0.0, 1.0]), ScaleKernel::Gaussian))
            .build(2)
            .map(Pair)
            .unwrap();
        let unsmoothed = -EPS / (2.0 + EPS);
        assert_close(&dice.loss(&t, &p)?, &[(expected + unsmoothed) / 2.0], 1e-12);
        Ok(())
    }

    #[test]
    fn multi_scale_gradients_match_finite_differences() {
        let t2 = pseudo_random(&[2, 2, 3, 4], 0.05, 0.95, 34);
        let p2 = pseudo_random(&[2, 2, 3, 4], 0.05, 0.95, 35);
        let t3 = pseudo_random(&[1, 1, 3, 2, 3], 0.05, 0.95, 36);
        let p3 = pseudo_random(&[1, 1, 3, 2, 3], 0.05, 0.95, 37);
        for (scales, kernel) in [
            (&[0.0, 1.0][..], ScaleKernel::Gaussian),
            (&[1.0, 2.0][..], ScaleKernel::Cauchy),
        ] {
            for (dims, t, p) in [(2, &t2, &p2), (3, &t3, &p3)] {
                let losses = all_losses(Some(scales), kernel, dims);
                // The image ssd takes one channel.
                let (t1, p1) = (t.narrow(1, 0, 1).unwrap(), p.narrow(1, 0, 1).unwrap());
                for (i, loss) in losses.iter().enumerate() {
                    let (t, p) = if i == 4 { (&t1, &p1) } else { (t, p) };
                    check_gradient(|x| loss(t, x), p, 1e-6);
                    check_gradient(|x| loss(x, p), t, 1e-6);
                }
            }
        }
    }

    #[test]
    fn multi_scale_rejects_mismatched_shapes() -> candle::Result<()> {
        let t = pseudo_random(&[1, 1, 3, 4], 0.0, 1.0, 38);
        for loss in all_losses(Some(&[1.0]), ScaleKernel::Cauchy, 2) {
            assert!(loss(&t, &t.narrow(3, 0, 3)?).is_err());
            assert!(loss(&t.flatten_all()?, &t.flatten_all()?).is_err());
        }
        Ok(())
    }

    #[test]
    fn kernels_match_deepreg_definitions() {
        // Cauchy σ = 1: tail 5, 1 / (1 + x²) normalised.
        let k = cauchy_kernel(1.0);
        assert_eq!(k.len(), 11);
        let z: f64 = (-5..=5).map(|x: i32| 1.0 / (1.0 + (x * x) as f64)).sum();
        assert!((k[5] - 1.0 / z).abs() < 1e-15);
        assert!((k[7] - 0.2 / z).abs() < 1e-15);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // σ = 0.5: tail int(2.5) = 2.
        assert_eq!(cauchy_kernel(0.5).len(), 5);
        let kernels = scale_kernels(&[0.0, 1.0, 0.5], ScaleKernel::Gaussian);
        assert!(kernels[0].is_none());
        assert_eq!(kernels[1].as_ref().map(Vec::len), Some(7));
        assert_eq!(kernels[2].as_ref().map(Vec::len), Some(3));
        let cauchy = scale_kernels(&[2.0], ScaleKernel::Cauchy);
        assert_eq!(cauchy[0].as_ref().map(Vec::len), Some(21));
    }
}
