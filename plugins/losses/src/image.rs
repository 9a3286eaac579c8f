//! Image dissimilarities (DeepReg's `deepreg/loss/image.py` and its `ssd`): one value per batch
//! element, over every non-batch axis.

use voxreg_framework::candle::{self, DType, Tensor};

use crate::kinds::{ImageLoss, LabelLoss};

use crate::lncc_kernel::{lncc_loss, NccParams};
use crate::util::{check_pair, EPS};

/// Mean squared difference `mean((f − w)²)` over every non-batch axis. As a label loss, with
/// `L` equally sized label channels, this is also the mean over labels of the per-label SSD.
pub(crate) struct Ssd {
    pub(crate) component: &'static str,
    pub(crate) spatial_dims: usize,
}

impl Ssd {
    fn value(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair(self.component, self.spatial_dims, fixed, warped)?;
        (fixed - warped)?.sqr()?.flatten_from(1)?.mean(1)
    }
}

impl ImageLoss for Ssd {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        self.value(fixed, warped)
    }

    /// `Σ m (f − w)² / (Σ m + ε)` per sample: the mean squared difference over the voxels
    /// the mask `m` weights; 0 when it weights none.
    fn masked(
        &self,
        fixed: &Tensor,
        warped: &Tensor,
        mask: &Tensor,
    ) -> Option<candle::Result<Tensor>> {
        Some((|| {
            check_pair(self.component, self.spatial_dims, fixed, warped)?;
            let (m, total) = mask_weights(mask, fixed)?;
            let squared = (fixed - warped)?.sqr()?.flatten_from(1)?;
            (squared * &m)?.sum(1)? / (total + EPS)?
        })())
    }
}

/// The mask `(N, 1, *spatial)` flattened to `(N, V)` (cast to the images' dtype), checked
/// against the images `(N, 1, *spatial)`, and its total weight `(N,)`.
fn mask_weights(mask: &Tensor, image: &Tensor) -> candle::Result<(Tensor, Tensor)> {
    if mask.dims() != image.dims() {
        candle::bail!(
            "the mask {:?} must match the one-channel images {:?}",
            mask.dims(),
            image.dims()
        );
    }
    let m = mask.to_dtype(image.dtype())?.flatten_from(1)?;
    let total = m.sum(1)?;
    Ok((m, total))
}

impl LabelLoss for Ssd {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        self.value(fixed, warped)
    }
}

/// Global normalised cross-correlation, squared and negated:
/// `−(cov(f, w)² + ε) / (var(f)·var(w) + ε)`, moments over every non-batch axis (population
/// variance), `ε = 1e-5`.
pub(crate) struct Gncc {
    pub(crate) spatial_dims: usize,
}

impl ImageLoss for Gncc {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair("image_loss `gncc`", self.spatial_dims, fixed, warped)?;
        let centred = |x: &Tensor| -> candle::Result<Tensor> {
            let x = x.flatten_from(1)?;
            x.broadcast_sub(&x.mean_keepdim(1)?)
        };
        let (f, w) = (centred(fixed)?, centred(warped)?);
        let covariance = (&f * &w)?.mean(1)?;
        let variances = (f.sqr()?.mean(1)? * w.sqr()?.mean(1)?)?;
        let ncc = ((covariance.sqr()? + EPS)? / (variances + EPS)?)?;
        ncc.neg()
    }

    /// The same moments weighted by the mask `m`: `W = Σ m + ε`, `μ_x = Σ m x / W`,
    /// `cov = Σ m (f − μ_f)(w − μ_w) / W`, `var_x = Σ m (x − μ_x)² / W`, and
    /// `−cov² / (var_f · var_w + ε)`. Unlike the unmasked form there is no ε in the
    /// numerator: a pair with no voxel in view, or a flat warped image, scores 0 (no match),
    /// not −1 (a perfect one).
    fn masked(
        &self,
        fixed: &Tensor,
        warped: &Tensor,
        mask: &Tensor,
    ) -> Option<candle::Result<Tensor>> {
        Some((|| {
            check_pair("image_loss `gncc`", self.spatial_dims, fixed, warped)?;
            let (m, total) = mask_weights(mask, fixed)?;
            let total = (total + EPS)?.unsqueeze(1)?;
            let weighted_mean = |x: &Tensor| (x * &m)?.sum_keepdim(1)?.broadcast_div(&total);
            let centred = |x: &Tensor| -> candle::Result<Tensor> {
                let x = x.flatten_from(1)?;
                x.broadcast_sub(&weighted_mean(&x)?)
            };
            let (f, w) = (centred(fixed)?, centred(warped)?);
            let covariance = weighted_mean(&(&f * &w)?)?.squeeze(1)?;
            let variances =
                (weighted_mean(&f.sqr()?)?.squeeze(1)? * weighted_mean(&w.sqr()?)?.squeeze(1)?)?;
            (covariance.sqr()? / (variances + EPS)?)?.neg()
        })())
    }
}

/// Global mutual information with Parzen windowing, negated.
///
/// Intensities are clipped to `[0, 1]`; bin centres `c_k = k / (B − 1)`, `k < B`; the window
/// width is `σ = sigma_ratio / (B − 1)`. Each voxel's weights
/// `a_k ∝ exp(−(x − c_k)² / 2σ²)` are normalised to sum to 1 over `k`; with `V` voxels,
/// `p_f = mean_v a`, `p_w = mean_v b`, `p_fw = Σ_v a bᵀ / V`, and
/// `MI = Σ_{k,l} p_fw · ln((p_fw + ε) / (p_f p_wᵀ + ε) + ε)`, `ε = 1e-5`. The histograms and
/// MI are accumulated in f64 (MI of nearly independent images is a small difference of
/// large sums); the result has the input's dtype.
pub(crate) struct Gmi {
    pub(crate) spatial_dims: usize,
    pub(crate) num_bins: usize,
    pub(crate) sigma_ratio: f64,
}

impl Gmi {
    /// `(N, V)` intensities → `(N, V, B)` Parzen weights summing to 1 over the bins.
    fn parzen(&self, x: &Tensor) -> candle::Result<Tensor> {
        let spacing = 1.0 / (self.num_bins - 1) as f64;
        let sigma = self.sigma_ratio * spacing;
        let centres: Vec<f64> = (0..self.num_bins).map(|k| k as f64 * spacing).collect();
        let centres =
            Tensor::from_vec(centres, (1, 1, self.num_bins), x.device())?.to_dtype(x.dtype())?;
        let weights = clip_unit(x)?
            .unsqueeze(2)?
            .broadcast_sub(&centres)?
            .sqr()?
            .affine(-1.0 / (2.0 * sigma * sigma), 0.0)?
            .exp()?;
        weights.broadcast_div(&weights.sum_keepdim(2)?)
    }
}

/// Clips `x` to `[0, 1]` with TensorFlow's `clip_by_value` gradient: 1 inside the closed
/// interval, boundaries included, 0 outside. (candle's `clamp` halves the gradient where `x`
/// equals a bound, and normalised images are exactly 0 or 1 in many voxels.)
fn clip_unit(x: &Tensor) -> candle::Result<Tensor> {
    let inside = x.ge(0.0)?.mul(&x.le(1.0)?)?.to_dtype(x.dtype())?;
    let outside = inside.affine(-1.0, 1.0)?;
    (x * &inside)? + (x.clamp(0.0, 1.0)?.detach() * outside)?
}

impl ImageLoss for Gmi {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair("image_loss `gmi`", self.spatial_dims, fixed, warped)?;
        // The histograms are means over every voxel, and MI cancels most of them out: sum
        // them in f64 whatever the input type (the window weights stay in the input type).
        let a = self.parzen(&fixed.flatten_from(1)?)?.to_dtype(DType::F64)?;
        let b = self
            .parzen(&warped.flatten_from(1)?)?
            .to_dtype(DType::F64)?;
        let voxels = a.dim(1)? as f64;
        let p_f = a.mean(1)?.unsqueeze(2)?;
        let p_w = b.mean(1)?.unsqueeze(1)?;
        let independent = p_f.broadcast_mul(&p_w)?;
        let joint = (a.transpose(1, 2)?.matmul(&b)? / voxels)?;
        let ratio = ((&joint + EPS)? / (independent + EPS)?)?;
        let mi = (joint * (ratio + EPS)?.log()?)?.sum((1, 2))?;
        mi.neg()?.to_dtype(fixed.dtype())
    }
}

/// Local squared normalised cross-correlation, negated (DeepReg's
/// `LocalNormalizedCrossCorrelationLoss`).
///
/// With a separable window `k` (unnormalised, zero padding at the borders), `S[x]` the
/// window sum of `x` around each voxel and `V = (Σ k)^ndim` the window volume:
/// `cross = S[tp] − S[t] S[p] / V`, `var_t = max(S[t²] − S[t]² / V, 0)`, likewise `var_p`;
/// `ncc = (cross² + smooth_nr) / (var_t var_p + smooth_dr)`, averaged over every non-batch
/// axis and negated.
pub(crate) struct Lncc {
    pub(crate) spatial_dims: usize,
    pub(crate) kernel: Vec<f64>,
    pub(crate) smooth_nr: f64,
    pub(crate) smooth_dr: f64,
}

impl Lncc {
    /// The window volume `(Σ k)^ndim`, DeepReg's `kernel_vol`.
    fn volume(&self) -> f64 {
        let sum: f64 = self.kernel.iter().sum();
        sum.powi(self.spatial_dims as i32)
    }
}

impl ImageLoss for Lncc {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair("image_loss `lncc`", self.spatial_dims, fixed, warped)?;
        // One fused op: window sums streamed plane by plane, hand-written gradient.
        let params = NccParams {
            volume: self.volume(),
            smooth_nr: self.smooth_nr,
            smooth_dr: self.smooth_dr,
        };
        lncc_loss(fixed, warped, &self.kernel, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Pair;
    use crate::testing::{assert_close, check_gradient, pseudo_random};
    use crate::{GmiConfig, GnccConfig, LnccConfig, LnccKernel, SsdConfig};
    use voxreg_framework::prelude::*;

    fn image(values: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn ssd_is_the_mean_squared_difference_in_2d_and_3d() -> candle::Result<()> {
        let loss = ImageLossConfig::build(&SsdConfig::default(), 2)
            .map(Pair)
            .unwrap();
        let fixed = image(&[0.0, 1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 1.0], &[2, 1, 2, 2]);
        let warped = image(&[0.0, 1.0, 0.0, 3.0, 0.0, 1.0, 3.0, 1.0], &[2, 1, 2, 2]);
        // Differences: (0, 0, 2, 0) and (1, 0, −2, 0).
        assert_close(&loss.loss(&fixed, &warped)?, &[1.0, 1.25], 1e-12);
        let loss = ImageLossConfig::build(&SsdConfig::default(), 3)
            .map(Pair)
            .unwrap();
        let fixed = image(&[1.0; 8], &[1, 1, 2, 2, 2]);
        let warped = image(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 4.0], &[1, 1, 2, 2, 2]);
        assert_close(&loss.loss(&fixed, &warped)?, &[9.0 / 8.0], 1e-12);
        // f32, the default dtype, works too.
        let loss_f32 = loss.loss(&fixed.to_dtype(DType::F32)?, &warped.to_dtype(DType::F32)?)?;
        assert_close(&loss_f32, &[9.0 / 8.0], 1e-6);
        Ok(())
    }

    #[test]
    fn gncc_of_identical_images_is_minus_one_and_matches_a_hand_value() -> candle::Result<()> {
        let loss = GnccConfig::default().build(2).map(Pair).unwrap();
        let f = image(&[0.0, 1.0, 2.0, 3.0], &[1, 1, 2, 2]);
        assert_close(&loss.loss(&f, &f)?, &[-1.0], 1e-12);
        // Anti-correlated images: the squared NCC is 1 as well.
        assert_close(&loss.loss(&f, &f.affine(-2.0, 1.0)?)?, &[-1.0], 1e-12);
        // f = (0, 1, 2, 3), w = (0, 1, 0, 1): var f = 1.25, var w = 0.25, cov = 0.25.
        let w = image(&[0.0, 1.0, 0.0, 1.0], &[1, 1, 2, 2]);
        let expected = -(0.0625 + EPS) / (0.3125 + EPS);
        assert_close(&loss.loss(&f, &w)?, &[expected], 1e-12);
        let loss = GnccConfig::default().build(3).map(Pair).unwrap();
        let f = pseudo_random(&[2, 1, 2, 3, 2], 0.0, 1.0, 1);
        assert_close(&loss.loss(&f, &f.affine(3.0, 0.5)?)?, &[-1.0, -1.0], 1e-9);
        // Against a constant image variance and covariance vanish: ε / ε = 1, as in DeepReg.
        let constant = image(&[0.5; 12], &[1, 1, 2, 3, 2]);
        let one = f.narrow(0, 0, 1)?;
        assert_close(&loss.loss(&one, &constant)?, &[-1.0], 1e-12);
        Ok(())
    }

    #[test]
    fn gmi_of_a_two_level_image_with_itself_is_minus_ln_2() -> candle::Result<()> {
        // Two bins, a narrow window: each voxel falls into one bin, p_f = p_w = (½, ½),
        // p_fw = diag(½, ½), so MI = ln 2 up to the ε terms and the window's tails (e^−50).
        let config = GmiConfig {
            num_bins: 2,
            sigma_ratio: 0.1,
        };
        let f2 = image(&[0.0, 1.0, 1.0, 0.0], &[1, 1, 2, 2]);
        let f3 = image(&[0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0], &[1, 1, 2, 2, 2]);
        let expected = 2.0 * 0.5 * ((0.5 + EPS) / (0.25 + EPS) + EPS).ln();
        for (dims, f) in [(2, f2), (3, f3)] {
            let loss = config.build(dims).map(Pair).unwrap();
            assert_close(&loss.loss(&f, &f)?, &[-expected], 1e-9);
            // Against a constant image the joint histogram factorises: MI = Σ p ln(1 + ε).
            let constant = f.ones_like()?;
            assert_close(&loss.loss(&f, &constant)?, &[-(1.0 + EPS).ln()], 1e-9);
        }
        Ok(())
    }

    /// GMI written out as loops over voxels and bins, straight from the formula.
    fn gmi_by_loops(f: &[f64], w: &[f64], bins: usize, ratio: f64) -> f64 {
        let centre = |k: usize| k as f64 / (bins - 1) as f64;
        let sigma = ratio / (bins - 1) as f64;
        let weights = |x: f64| -> Vec<f64> {
            let x = x.clamp(0.0, 1.0);
            let raw: Vec<f64> = (0..bins)
                .map(|k| (-(x - centre(k)).powi(2) / (2.0 * sigma * sigma)).exp())
                .collect();
            let total: f64 = raw.iter().sum();
            raw.iter().map(|r| r / total).collect()
        };
        let (a, b): (Vec<_>, Vec<_>) = f
            .iter()
            .zip(w)
            .map(|(x, y)| (weights(*x), weights(*y)))
            .unzip();
        let v = f.len() as f64;
        let mut mi = 0.0;
        for k in 0..bins {
            for l in 0..bins {
                let p_f: f64 = a.iter().map(|ai| ai[k]).sum::<f64>() / v;
                let p_w: f64 = b.iter().map(|bi| bi[l]).sum::<f64>() / v;
                let p_fw: f64 = a.iter().zip(&b).map(|(ai, bi)| ai[k] * bi[l]).sum::<f64>() / v;
                mi += p_fw * ((p_fw + EPS) / (p_f * p_w + EPS) + EPS).ln();
            }
        }
        mi
    }

    #[test]
    fn gmi_matches_the_formula_written_as_loops() -> candle::Result<()> {
        let config = GmiConfig {
            num_bins: 7,
            sigma_ratio: 0.5,
        };
        let loss = config.build(3).map(Pair).unwrap();
        // Values slightly outside [0, 1] exercise the clipping.
        let f = pseudo_random(&[2, 1, 2, 3, 2], -0.1, 1.1, 2);
        let w = pseudo_random(&[2, 1, 2, 3, 2], -0.1, 1.1, 3);
        let expected: Vec<f64> = (0..2)
            .map(|n| {
                let row = |t: &Tensor| {
                    t.get(n)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap()
                };
                -gmi_by_loops(&row(&f), &row(&w), 7, 0.5)
            })
            .collect();
        assert_close(&loss.loss(&f, &w)?, &expected, 1e-12);
        let default = GmiConfig {
            num_bins: 23,
            sigma_ratio: 0.5,
        }
        .build(2)
        .map(Pair)
        .unwrap();
        let f = pseudo_random(&[1, 1, 4, 5], 0.0, 1.0, 4);
        let w = pseudo_random(&[1, 1, 4, 5], 0.0, 1.0, 5);
        let row = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let expected = -gmi_by_loops(&row(&f), &row(&w), 23, 0.5);
        assert_close(&default.loss(&f, &w)?, &[expected], 1e-12);
        Ok(())
    }

    #[test]
    fn gmi_in_f32_keeps_f32_precision_when_the_images_are_nearly_independent() -> candle::Result<()>
    {
        // Independent images: MI is a small sum of terms that cancel, so errors in the
        // histograms (means over every voxel) are magnified. Summed in f32 over 24³ voxels
        // they were 3.8e-6 off (relative); PyTorch's f32 evaluation of the same formula is
        // within 1.5e-7. The f64 value of the same (f32-rounded) inputs is the reference.
        let config = GmiConfig {
            num_bins: 23,
            sigma_ratio: 0.5,
        };
        let loss = config.build(3).map(Pair).unwrap();
        let f = pseudo_random(&[1, 1, 24, 24, 24], 0.0, 1.0, 11).to_dtype(DType::F32)?;
        let w = pseudo_random(&[1, 1, 24, 24, 24], 0.0, 1.0, 12).to_dtype(DType::F32)?;
        let in_f32 = loss.loss(&f, &w)?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
        let in_f64 = loss
            .loss(&f.to_dtype(DType::F64)?, &w.to_dtype(DType::F64)?)?
            .to_vec1::<f64>()?[0];
        let relative = (in_f32 - in_f64).abs() / in_f64.abs();
        assert!(
            relative <= 3e-7,
            "f32 {in_f32} vs f64 {in_f64}: relative error {relative:e}"
        );
        Ok(())
    }

    #[test]
    fn gmi_clipping_passes_the_whole_gradient_on_the_bounds() -> candle::Result<()> {
        // Voxels exactly at 0 and 1 get the one-sided (inward) derivative, as with
        // TensorFlow's clip_by_value; voxels outside [0, 1] get none.
        let loss = GmiConfig {
            num_bins: 5,
            sigma_ratio: 0.5,
        }
        .build(2)
        .map(Pair)
        .unwrap();
        let fixed = pseudo_random(&[1, 1, 2, 3], 0.0, 1.0, 18);
        let values = [0.0, 1.0, 0.3, 1.2, -0.1, 0.7];
        let warped = image(&values, &[1, 1, 2, 3]);
        let var = Var::from_tensor(&warped)?;
        let grad = loss
            .loss(&fixed, var.as_tensor())?
            .sum_all()?
            .backward()?
            .get(var.as_tensor())
            .expect("the gradient reaches the input")
            .flatten_all()?
            .to_vec1::<f64>()?;
        let at = |values: &[f64]| -> f64 {
            let warped = image(values, &[1, 1, 2, 3]);
            let value = loss.loss(&fixed, &warped).unwrap();
            value.sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let h = 1e-7;
        for (i, inward) in [(0, h), (1, -h)] {
            let mut moved = values.to_vec();
            moved[i] += inward;
            let one_sided = (at(&moved) - at(&values)) / inward;
            assert!(
                (grad[i] - one_sided).abs() < 1e-5,
                "{grad:?} vs {one_sided}"
            );
            assert!(grad[i] != 0.0);
        }
        assert_eq!((grad[3], grad[4]), (0.0, 0.0));
        Ok(())
    }

    fn lncc(kernel_size: usize, kernel_type: LnccKernel) -> LnccConfig {
        LnccConfig {
            kernel_size,
            kernel_type,
            smooth_nr: EPS,
            smooth_dr: EPS,
        }
    }

    const KERNELS: [LnccKernel; 3] = [
        LnccKernel::Rectangular,
        LnccKernel::Triangular,
        LnccKernel::Gaussian,
    ];

    #[test]
    fn lncc_of_an_image_with_itself_is_minus_one_in_2d_and_3d() -> candle::Result<()> {
        let f2 = pseudo_random(&[2, 1, 6, 7], 0.0, 1.0, 20);
        let f3 = pseudo_random(&[1, 1, 5, 4, 6], 0.0, 1.0, 21);
        for kernel in KERNELS {
            for (dims, f) in [(2, &f2), (3, &f3)] {
                let n = f.dim(0)?;
                for size in [3, 9] {
                    let loss = lncc(size, kernel).build(dims).map(Pair).unwrap();
                    assert_close(&loss.loss(f, f)?, &vec![-1.0; n], 1e-9);
                    let f32 = f.to_dtype(DType::F32)?;
                    assert_close(&loss.loss(&f32, &f32)?, &vec![-1.0; n], 1e-5);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn lncc_matches_a_hand_value() -> candle::Result<()> {
        // One row t = (1, 2), p = (1, 0), 3 × 3 box, V = 9: every window holds both voxels,
        // S[t] = 3, S[p] = 1, S[t²] = 5, S[p²] = 1, S[tp] = 1; cross = 1 − 3/9 = 2/3,
        // var_t = 5 − 9/9 = 4, var_p = 1 − 1/9 = 8/9.
        let loss = lncc(3, LnccKernel::Rectangular).build(2).map(Pair).unwrap();
        let t = image(&[1.0, 2.0], &[1, 1, 1, 2]);
        let p = image(&[1.0, 0.0], &[1, 1, 1, 2]);
        let expected = -(4.0 / 9.0 + EPS) / (32.0 / 9.0 + EPS);
        assert_close(&loss.loss(&t, &p)?, &[expected], 1e-12);
        // The same row in 3D (V = 27): cross = 1 − 3/27, var_t = 5 − 9/27, var_p = 1 − 1/27.
        let loss = lncc(3, LnccKernel::Rectangular).build(3).map(Pair).unwrap();
        let (t3, p3) = (t.reshape((1, 1, 1, 1, 2))?, p.reshape((1, 1, 1, 1, 2))?);
        let cross: f64 = 1.0 - 3.0 / 27.0;
        let expected = -(cross * cross + EPS) / ((5.0 - 9.0 / 27.0) * (1.0 - 1.0 / 27.0) + EPS);
        assert_close(&loss.loss(&t3, &p3)?, &[expected], 1e-12);
        Ok(())
    }

    /// LNCC written out as loops over voxels and window taps, straight from DeepReg's
    /// formula, for one batch element of spatial `shape` (2D or 3D).
    fn lncc_by_loops(t: &[f64], p: &[f64], shape: &[usize], k: &[f64]) -> f64 {
        let shape3: Vec<usize> = if shape.len() == 2 {
            vec![1, shape[0], shape[1]]
        } else {
            shape.to_vec()
        };
        let ndim = shape.len();
        let volume = k.iter().sum::<f64>().powi(ndim as i32);
        let c = (k.len() as isize - 1) / 2;
        let at = |z: usize, y: usize, x: usize| (z * shape3[1] + y) * shape3[2] + x;
        let taps_z: Vec<(isize, f64)> = if ndim == 2 {
            vec![(0, 1.0)]
        } else {
            k.iter()
                .enumerate()
                .map(|(i, w)| (i as isize - c, *w))
                .collect()
        };
        let taps: Vec<(isize, f64)> = k
            .iter()
            .enumerate()
            .map(|(i, w)| (i as isize - c, *w))
            .collect();
        let mut total = 0.0;
        for z in 0..shape3[0] {
            for y in 0..shape3[1] {
                for x in 0..shape3[2] {
                    let mut s = [0.0f64; 5];
                    for &(dz, wz) in &taps_z {
                        for &(dy, wy) in &taps {
                            for &(dx, wx) in &taps {
                                let (zz, yy, xx) =
                                    (z as isize + dz, y as isize + dy, x as isize + dx);
                                let inside = [zz, yy, xx]
                                    .iter()
                                    .zip(&shape3)
                                    .all(|(v, n)| *v >= 0 && *v < *n as isize);
                                if !inside {
                                    continue;
                                }
                                let i = at(zz as usize, yy as usize, xx as usize);
                                let w = wz * wy * wx;
                                let (a, b) = (t[i], p[i]);
                                for (sum, v) in s.iter_mut().zip([a, b, a * a, b * b, a * b]) {
                                    *sum += w * v;
                                }
                            }
                        }
                    }
                    let cross = s[4] - s[1] * s[0] / volume;
                    let var_t = (s[2] - s[0] * s[0] / volume).max(0.0);
                    let var_p = (s[3] - s[1] * s[1] / volume).max(0.0);
                    total += (cross * cross + EPS) / (var_t * var_p + EPS);
                }
            }
        }
        -total / t.len() as f64
    }

    #[test]
    fn lncc_matches_the_formula_written_as_loops() -> candle::Result<()> {
        use voxreg_framework::ops::{gaussian_kernel_sized, rectangular_kernel, triangular_kernel};
        let cases: [(usize, &[usize]); 2] = [(2, &[2, 1, 6, 5]), (3, &[2, 1, 4, 5, 3])];
        for (dims, shape) in cases {
            let t = pseudo_random(shape, 0.0, 1.0, 22);
            let p = pseudo_random(shape, 0.0, 1.0, 23);
            for (kernel, size) in [
                (LnccKernel::Rectangular, 3),
                (LnccKernel::Rectangular, 4),
                (LnccKernel::Triangular, 5),
                (LnccKernel::Gaussian, 3),
                (LnccKernel::Gaussian, 9),
            ] {
                let k = match kernel {
                    LnccKernel::Rectangular => rectangular_kernel(size),
                    LnccKernel::Triangular => triangular_kernel(size),
                    LnccKernel::Gaussian => gaussian_kernel_sized(size),
                };
                let expected: Vec<f64> = (0..2)
                    .map(|n| {
                        let row = |x: &Tensor| {
                            x.get(n)
                                .unwrap()
                                .flatten_all()
                                .unwrap()
                                .to_vec1::<f64>()
                                .unwrap()
                        };
                        lncc_by_loops(&row(&t), &row(&p), &shape[2..], &k)
                    })
                    .collect();
                let loss = lncc(size, kernel).build(dims).map(Pair).unwrap();
                assert_close(&loss.loss(&t, &p)?, &expected, 1e-9);
            }
        }
        Ok(())
    }

    #[test]
    fn lncc_gradients_match_finite_differences() {
        let fixed = pseudo_random(&[2, 1, 4, 5], 0.05, 0.95, 24);
        let warped = pseudo_random(&[2, 1, 4, 5], 0.05, 0.95, 25);
        let fixed3 = pseudo_random(&[1, 1, 3, 4, 3], 0.05, 0.95, 26);
        let warped3 = pseudo_random(&[1, 1, 3, 4, 3], 0.05, 0.95, 27);
        for kernel in KERNELS {
            for (dims, f, w) in [(2, &fixed, &warped), (3, &fixed3, &warped3)] {
                let loss = lncc(3, kernel).build(dims).map(Pair).unwrap();
                check_gradient(|x| loss.loss(f, x), w, 1e-5);
                check_gradient(|x| loss.loss(x, w), f, 1e-5);
            }
        }
    }

    #[test]
    fn image_losses_reject_mismatched_shapes() -> candle::Result<()> {
        let a = pseudo_random(&[1, 1, 3, 4], 0.0, 1.0, 6);
        let b = a.narrow(3, 0, 3)?;
        let flat = a.reshape((1, 12))?;
        for dims in [2, 3] {
            let losses = [
                lncc(3, LnccKernel::Gaussian).build(dims).map(Pair).unwrap(),
                ImageLossConfig::build(&SsdConfig::default(), dims)
                    .map(Pair)
                    .unwrap(),
                GnccConfig::default().build(dims).map(Pair).unwrap(),
                GmiConfig {
                    num_bins: 23,
                    sigma_ratio: 0.5,
                }
                .build(dims)
                .map(Pair)
                .unwrap(),
            ];
            for loss in &losses {
                assert!(loss.loss(&a, &b).is_err());
                assert!(loss.loss(&flat, &flat).is_err());
            }
        }
        Ok(())
    }

    #[test]
    fn image_loss_gradients_match_finite_differences() {
        let fixed = pseudo_random(&[2, 1, 3, 2], 0.05, 0.95, 7);
        let warped = pseudo_random(&[2, 1, 3, 2], 0.05, 0.95, 8);
        let fixed3 = pseudo_random(&[1, 1, 2, 2, 3], 0.05, 0.95, 9);
        let warped3 = pseudo_random(&[1, 1, 2, 2, 3], 0.05, 0.95, 10);
        let gmi = GmiConfig {
            num_bins: 5,
            sigma_ratio: 0.5,
        };
        let configs: [&dyn ImageLossConfig; 3] =
            [&SsdConfig::default(), &GnccConfig::default(), &gmi];
        for config in configs {
            for (dims, f, w) in [(2, &fixed, &warped), (3, &fixed3, &warped3)] {
                let loss = config.build(dims).map(Pair).unwrap();
                check_gradient(|x| loss.loss(f, x), w, 1e-6);
                check_gradient(|x| loss.loss(x, w), f, 1e-6);
            }
        }
    }

    /// `masked_loss(prediction = warped, target = fixed, mask)` through the framework trait.
    fn masked(
        loss: &Pair,
        fixed: &Tensor,
        warped: &Tensor,
        mask: &Tensor,
    ) -> candle::Result<Tensor> {
        loss.0.masked_loss(warped, Some(fixed), mask)
    }

    /// The masked GNCC written as loops over one sample.
    fn masked_gncc_by_loops(f: &[f64], w: &[f64], m: &[f64]) -> f64 {
        let total: f64 = m.iter().sum::<f64>() + EPS;
        let mean = |x: &[f64]| x.iter().zip(m).map(|(x, m)| x * m).sum::<f64>() / total;
        let (mf, mw) = (mean(f), mean(w));
        let mut moments = [0.0; 3];
        for i in 0..f.len() {
            let (a, b) = (f[i] - mf, w[i] - mw);
            moments[0] += m[i] * a * b / total;
            moments[1] += m[i] * a * a / total;
            moments[2] += m[i] * b * b / total;
        }
        -moments[0].powi(2) / (moments[1] * moments[2] + EPS)
    }

    #[test]
    fn masked_ssd_and_gncc_compare_only_the_voxels_in_view() -> candle::Result<()> {
        let ssd = ImageLossConfig::build(&SsdConfig::default(), 2)
            .map(Pair)
            .unwrap();
        let gncc = GnccConfig::default().build(2).map(Pair).unwrap();
        let fixed = image(&[0.0, 1.0, 2.0, 3.0, 0.5, 0.2, 0.9, 0.4], &[2, 1, 2, 2]);
        // Equal to the fixed image where the mask is 1, far off where it is 0.
        let warped = image(&[0.0, 1.0, 9.0, -4.0, 0.5, 0.2, 0.9, 7.0], &[2, 1, 2, 2]);
        let mask = image(&[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0], &[2, 1, 2, 2]);
        let value = masked(&ssd, &fixed, &warped, &mask)?;
        assert_close(&value, &[0.0, 0.0], 1e-9);
        let value = masked(&gncc, &fixed, &warped, &mask)?;
        // −cov² / (var² + ε): 1 up to ε / var² (var ≈ 0.08 in the second sample).
        assert_close(&value, &[-1.0, -1.0], 2e-3);
        // A soft mask: against the loops.
        let soft = pseudo_random(&[2, 1, 2, 2], 0.0, 1.0, 3);
        let other = pseudo_random(&[2, 1, 2, 2], 0.0, 1.0, 4);
        let rows = |t: &Tensor| -> Vec<Vec<f64>> { t.flatten_from(1).unwrap().to_vec2().unwrap() };
        let (f, w, m) = (rows(&fixed), rows(&other), rows(&soft));
        let expected: Vec<f64> = (0..2)
            .map(|n| masked_gncc_by_loops(&f[n], &w[n], &m[n]))
            .collect();
        assert_close(&masked(&gncc, &fixed, &other, &soft)?, &expected, 1e-12);
        let expected: Vec<f64> = (0..2)
            .map(|n| {
                let weight: f64 = m[n].iter().sum();
                (0..4)
                    .map(|i| m[n][i] * (f[n][i] - w[n][i]).powi(2))
                    .sum::<f64>()
                    / (weight + EPS)
            })
            .collect();
        assert_close(&masked(&ssd, &fixed, &other, &soft)?, &expected, 1e-12);
        // Nothing in view, or a flat warped image: no match (0), not a perfect one.
        let none = image(&[0.0; 8], &[2, 1, 2, 2]);
        assert_close(&masked(&gncc, &fixed, &warped, &none)?, &[0.0, 0.0], 1e-12);
        assert_close(&masked(&ssd, &fixed, &warped, &none)?, &[0.0, 0.0], 1e-12);
        let flat = image(&[0.3; 8], &[2, 1, 2, 2]);
        let ones = image(&[1.0; 8], &[2, 1, 2, 2]);
        assert_close(&masked(&gncc, &fixed, &flat, &ones)?, &[0.0, 0.0], 1e-12);
        // A mask of the wrong shape and a loss without a masked form are refused.
        assert!(masked(&gncc, &fixed, &warped, &mask.narrow(0, 0, 1)?).is_err());
        let lncc = lncc(3, LnccKernel::Gaussian).build(2).map(Pair).unwrap();
        let error = masked(&lncc, &fixed, &warped, &mask)
            .unwrap_err()
            .to_string();
        assert!(error.contains("no masked form"), "{error}");
        Ok(())
    }

    #[test]
    fn masked_loss_gradients_match_finite_differences() {
        let fixed = pseudo_random(&[2, 1, 3, 2], 0.05, 0.95, 17);
        let warped = pseudo_random(&[2, 1, 3, 2], 0.05, 0.95, 18);
        let mask = pseudo_random(&[2, 1, 3, 2], 0.0, 1.0, 19);
        let configs: [&dyn ImageLossConfig; 2] = [&SsdConfig::default(), &GnccConfig::default()];
        for config in configs {
            let loss = config.build(2).map(Pair).unwrap();
            check_gradient(|x| masked(&loss, &fixed, x, &mask), &warped, 1e-6);
            check_gradient(|x| masked(&loss, x, &warped, &mask), &fixed, 1e-6);
        }
    }
}
