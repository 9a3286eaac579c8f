//! Loss configs.

use serde::{Deserialize, Deserializer, Serialize};
use voxreg_framework::ops::{gaussian_kernel_sized, rectangular_kernel, triangular_kernel};
use voxreg_framework::prelude::*;

use crate::deform::{BendingEnergy, GradientNorm};
use crate::image::{Gmi, Gncc, Lncc, Ssd};
use crate::kinds::{Images, Penalty};
use crate::label::{CrossEntropy, Overlap, OverlapKind};
use crate::scale::{image_loss, label_loss};
use crate::util::{check_background_weight, check_smoothing, check_spatial_dims, EPS};

fn eps() -> f64 {
    EPS
}

/// The window of the local normalised cross-correlation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LnccKernel {
    /// Box window.
    Rectangular,
    /// Triangular window (odd size ≥ 3).
    Triangular,
    /// Gaussian window, σ = size / 3.
    Gaussian,
}

/// The smoothing kernel of multi-scale losses (normalised to sum 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleKernel {
    /// Gaussian, tail 3σ.
    #[default]
    Gaussian,
    /// Cauchy `1 / (1 + (x/σ)²)`, tail 5σ.
    Cauchy,
}

/// DeepReg accepts one scale or a list; both become a list.
fn scales<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<f64>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scales {
        One(f64),
        Many(Vec<f64>),
    }
    Ok(match Option::<Scales>::deserialize(deserializer)? {
        None => None,
        Some(Scales::One(scale)) => Some(vec![scale]),
        Some(Scales::Many(scales)) => Some(scales),
    })
}

/// `lncc`: local squared normalised cross-correlation, negated (DeepReg's formula).
///
/// The window is separable: per axis the 1D kernel `k` of `kernel_size` taps (rectangular:
/// ones; triangular: DeepReg's `triangular_kernel1d`, odd size ≥ 3; gaussian: `σ = size / 3`,
/// not normalised), zero padding at the borders. With `S[x]` the window sum around a voxel
/// and `V = (Σ k)^ndim`: `cross = S[fw] − S[f] S[w] / V`,
/// `var_f = max(S[f²] − S[f]² / V, 0)`, likewise `var_w`, and the loss is
/// `−mean_x (cross² + smooth_nr) / (var_f var_w + smooth_dr)` over every non-batch axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LnccConfig {
    /// Window size.
    #[serde(default = "default_lncc_size")]
    pub kernel_size: usize,
    /// Window shape.
    #[serde(default = "default_lncc_kernel")]
    pub kernel_type: LnccKernel,
    /// Added to the numerator.
    #[serde(default = "eps")]
    pub smooth_nr: f64,
    /// Added to the denominator.
    #[serde(default = "eps")]
    pub smooth_dr: f64,
}

fn default_lncc_size() -> usize {
    9
}
fn default_lncc_kernel() -> LnccKernel {
    LnccKernel::Rectangular
}

#[typetag::serialize(name = "lncc")]
impl ImageLossConfig for LnccConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "image_loss `lncc`";
        check_spatial_dims(component, spatial_dims)?;
        check_smoothing(component, "smooth_nr", self.smooth_nr)?;
        check_smoothing(component, "smooth_dr", self.smooth_dr)?;
        let size = self.kernel_size;
        let kernel = match self.kernel_type {
            LnccKernel::Rectangular => rectangular_kernel(size),
            LnccKernel::Triangular => triangular_kernel(size),
            LnccKernel::Gaussian => gaussian_kernel_sized(size),
        };
        if kernel.is_empty() {
            let need = match self.kernel_type {
                LnccKernel::Triangular => "an odd number ≥ 3",
                _ => "at least 1",
            };
            return Err(ComponentError::invalid(
                component,
                format!(
                    "kernel_size must be {need} for kernel_type {}, got {size}",
                    format!("{:?}", self.kernel_type).to_lowercase()
                ),
            ));
        }
        let lncc = Lncc {
            spatial_dims,
            kernel,
            smooth_nr: self.smooth_nr,
            smooth_dr: self.smooth_dr,
        };
        Ok(Box::new(Images(lncc, component)))
    }
}

register_component!(
    image_loss,
    "lncc",
    LnccConfig,
    "Local normalised cross-correlation (negated)"
);

/// `gmi`: global mutual information with Parzen windowing, negated.
///
/// Intensities clipped to `[0, 1]`, `B = num_bins` bin centres `c_k = k / (B − 1)`, window
/// `σ = sigma_ratio / (B − 1)`; per voxel weights `a_k ∝ exp(−(x − c_k)² / 2σ²)` normalised
/// over `k`; `p_f = mean_v a`, `p_w = mean_v b`, `p_fw = mean_v a bᵀ`;
/// loss `−Σ_{k,l} p_fw ln((p_fw + ε) / (p_f p_wᵀ + ε) + ε)`, `ε = 1e-5`, per batch element.
/// Requires `num_bins ≥ 2` and `sigma_ratio > 0`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GmiConfig {
    /// Histogram bins.
    #[serde(default = "default_bins")]
    pub num_bins: usize,
    /// Parzen window width relative to the bin spacing.
    #[serde(default = "default_sigma_ratio")]
    pub sigma_ratio: f64,
}

fn default_bins() -> usize {
    23
}
fn default_sigma_ratio() -> f64 {
    0.5
}

#[typetag::serialize(name = "gmi")]
impl ImageLossConfig for GmiConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "image_loss `gmi`";
        check_spatial_dims(component, spatial_dims)?;
        if self.num_bins < 2 {
            return Err(ComponentError::invalid(
                component,
                format!("num_bins must be at least 2, got {}", self.num_bins),
            ));
        }
        if !(self.sigma_ratio.is_finite() && self.sigma_ratio > 0.0) {
            return Err(ComponentError::invalid(
                component,
                format!(
                    "sigma_ratio must be a positive number, got {}",
                    self.sigma_ratio
                ),
            ));
        }
        let gmi = Gmi {
            spatial_dims,
            num_bins: self.num_bins,
            sigma_ratio: self.sigma_ratio,
        };
        Ok(Box::new(Images(gmi, component)))
    }
}

register_component!(
    image_loss,
    "gmi",
    GmiConfig,
    "Global mutual information (negated)"
);

/// `gncc`: global normalised cross-correlation, squared and negated:
/// `−(cov(f, w)² + ε) / (var(f) var(w) + ε)`, `ε = 1e-5`, moments (population variance) over
/// every non-batch axis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GnccConfig {}

#[typetag::serialize(name = "gncc")]
impl ImageLossConfig for GnccConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "image_loss `gncc`";
        check_spatial_dims(component, spatial_dims)?;
        Ok(Box::new(Images(Gncc { spatial_dims }, component)))
    }
}

register_component!(
    image_loss,
    "gncc",
    GnccConfig,
    "Global normalised cross-correlation (negated)"
);

/// `ssd`: mean squared difference `mean((f − w)²)` over every non-batch axis (for labels
/// `(N, L, *spatial)` that is also the mean over labels).
///
/// With `scales` (DeepReg's `MultiScaleMixin`, for every loss with that key): the loss is
/// averaged over the scales, at scale `σ > 0` computed between both inputs filtered along
/// every spatial axis by the normalised 1D `kernel` of width `σ` (Gaussian
/// `exp(−x²/2σ²)`, `|x| ≤ floor(3σ)`; Cauchy `1 / (1 + (x/σ)²)`, `|x| ≤ floor(5σ)`; zero
/// padding, same size), at scale 0 between the inputs themselves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SsdConfig {
    /// Smoothing scales (σ in voxels; 0 = none); absent for a single unsmoothed scale.
    #[serde(default, deserialize_with = "scales")]
    pub scales: Option<Vec<f64>>,
    /// Smoothing kernel for `scales`.
    #[serde(default)]
    pub kernel: ScaleKernel,
}

#[typetag::serialize(name = "ssd")]
impl ImageLossConfig for SsdConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "image_loss `ssd`";
        check_spatial_dims(component, spatial_dims)?;
        let inner = Ssd {
            component,
            spatial_dims,
        };
        image_loss(
            component,
            spatial_dims,
            inner,
            self.scales.as_deref(),
            self.kernel,
        )
    }
}

#[typetag::serialize(name = "ssd")]
impl LabelLossConfig for SsdConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "label_loss `ssd`";
        check_spatial_dims(component, spatial_dims)?;
        let inner = Ssd {
            component,
            spatial_dims,
        };
        label_loss(
            component,
            spatial_dims,
            inner,
            self.scales.as_deref(),
            self.kernel,
        )
    }
}

register_component!(
    image_loss,
    "ssd",
    SsdConfig,
    "Mean squared intensity difference"
);
register_component!(
    label_loss,
    "ssd",
    SsdConfig,
    "Mean squared label difference, optionally multi-scale"
);

/// Keys shared by `dice` and `jaccard`; `scales` and `kernel` as for `ssd` (smoothing comes
/// before the `binary` threshold, as in DeepReg).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverlapConfig {
    /// Threshold both labels at 0.5 first (`≥ 0.5` → 1, else 0); the loss then has no
    /// gradient.
    #[serde(default)]
    pub binary: bool,
    /// Weight of the background class in [0, 1]; > 0 gives the generalised form.
    #[serde(default)]
    pub background_weight: f64,
    /// Added to the numerator.
    #[serde(default = "eps")]
    pub smooth_nr: f64,
    /// Added to the denominator.
    #[serde(default = "eps")]
    pub smooth_dr: f64,
    /// Smoothing scales; absent for a single scale.
    #[serde(default, deserialize_with = "scales")]
    pub scales: Option<Vec<f64>>,
    /// Smoothing kernel for `scales`.
    #[serde(default)]
    pub kernel: ScaleKernel,
}

impl OverlapConfig {
    fn build(
        &self,
        kind: OverlapKind,
        spatial_dims: usize,
    ) -> Result<Box<dyn Loss>, ComponentError> {
        let component = match kind {
            OverlapKind::Dice => "label_loss `dice`",
            OverlapKind::Jaccard => "label_loss `jaccard`",
        };
        check_spatial_dims(component, spatial_dims)?;
        check_background_weight(component, self.background_weight)?;
        check_smoothing(component, "smooth_nr", self.smooth_nr)?;
        check_smoothing(component, "smooth_dr", self.smooth_dr)?;
        let inner = Overlap {
            kind,
            spatial_dims,
            binary: self.binary,
            background_weight: self.background_weight,
            smooth_nr: self.smooth_nr,
            smooth_dr: self.smooth_dr,
        };
        label_loss(
            component,
            spatial_dims,
            inner,
            self.scales.as_deref(),
            self.kernel,
        )
    }
}

/// `dice`: Dice score, negated, per label channel and averaged over the channels. With
/// `P = Σ t p`, `S = Σ (t + p)` over a channel's `V` voxels and `w = background_weight`:
/// `−(2P + smooth_nr) / (S + smooth_dr)`; for `w > 0` the generalised
/// `−(2(P − wS + wV) + smooth_nr) / ((1 − 2w) S + 2wV + smooth_dr)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DiceConfig(pub OverlapConfig);

#[typetag::serialize(name = "dice")]
impl LabelLossConfig for DiceConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        self.0.build(OverlapKind::Dice, spatial_dims)
    }
}

register_component!(
    label_loss,
    "dice",
    DiceConfig,
    "Dice score (negated), optionally multi-scale"
);

/// `jaccard`: Jaccard index, negated, per label channel and averaged over the channels. With
/// `P`, `S`, `V`, `w` as for `dice`: `−(P + smooth_nr) / (S − P + smooth_dr)`; for `w > 0`
/// the generalised `−(P − wS + wV + smooth_nr) / ((1 − w) S − P + wV + smooth_dr)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JaccardConfig(pub OverlapConfig);

#[typetag::serialize(name = "jaccard")]
impl LabelLossConfig for JaccardConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        self.0.build(OverlapKind::Jaccard, spatial_dims)
    }
}

register_component!(
    label_loss,
    "jaccard",
    JaccardConfig,
    "Jaccard index (negated), optionally multi-scale"
);

/// `cross-entropy`: binary cross-entropy per label channel, averaged over the channels:
/// `(1 − w) · (−mean(t ln(p + smooth))) + w · (−mean((1 − t) ln(1 − p + smooth)))`, means
/// over the channel's voxels, `w = background_weight` (`w = 0`: the foreground term only);
/// `scales` and `kernel` as for `ssd`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrossEntropyConfig {
    /// Threshold both labels at 0.5 first (`≥ 0.5` → 1, else 0); the loss then has no
    /// gradient.
    #[serde(default)]
    pub binary: bool,
    /// Weight of the background class in [0, 1].
    #[serde(default)]
    pub background_weight: f64,
    /// Added inside the logarithms.
    #[serde(default = "eps")]
    pub smooth: f64,
    /// Smoothing scales; absent for a single scale.
    #[serde(default, deserialize_with = "scales")]
    pub scales: Option<Vec<f64>>,
    /// Smoothing kernel for `scales`.
    #[serde(default)]
    pub kernel: ScaleKernel,
}

#[typetag::serialize(name = "cross-entropy")]
impl LabelLossConfig for CrossEntropyConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "label_loss `cross-entropy`";
        check_spatial_dims(component, spatial_dims)?;
        check_background_weight(component, self.background_weight)?;
        check_smoothing(component, "smooth", self.smooth)?;
        let inner = CrossEntropy {
            spatial_dims,
            binary: self.binary,
            background_weight: self.background_weight,
            smooth: self.smooth,
        };
        label_loss(
            component,
            spatial_dims,
            inner,
            self.scales.as_deref(),
            self.kernel,
        )
    }
}

register_component!(
    label_loss,
    "cross-entropy",
    CrossEntropyConfig,
    "Binary cross-entropy, optionally multi-scale"
);

/// `bending`: bending energy of the DDF `u = (N, ndim, *spatial)` from DeepReg's central
/// differences `D_a u[i] = (u[i+1] − u[i−1]) / 2` (other axes cropped by 1):
/// `mean_{i, x} [Σ_a (D_a D_a u_i)² + 2 Σ_{a<b} (D_b D_a u_i)²]` over the components `i` and
/// the voxels `x` of the grid cropped by 2 on each side (3D: `u_xx² + u_yy² + u_zz² + 2u_xy²
/// + 2u_xz² + 2u_yz²`). Needs every spatial size ≥ 5.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BendingConfig {}

#[typetag::serialize(name = "bending")]
impl RegularizationConfig for BendingConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "regularization `bending`";
        check_spatial_dims(component, spatial_dims)?;
        Ok(Box::new(Penalty(BendingEnergy { spatial_dims }, component)))
    }
}

register_component!(
    regularization,
    "bending",
    BendingConfig,
    "Bending energy of the DDF"
);

/// `gradient`: gradient norm of the DDF `u = (N, ndim, *spatial)` from DeepReg's central
/// differences `D_a u[i] = (u[i+1] − u[i−1]) / 2` (other axes cropped by 1):
/// `mean_{i, x} Σ_a (D_a u_i)²`, or with `l1` `mean_{i, x} Σ_a |D_a u_i|`, over the
/// components `i` and the voxels `x` of the grid cropped by 1 on each side. Needs every
/// spatial size ≥ 3.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GradientConfig {
    /// L1 instead of squared L2.
    #[serde(default)]
    pub l1: bool,
}

#[typetag::serialize(name = "gradient")]
impl RegularizationConfig for GradientConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "regularization `gradient`";
        check_spatial_dims(component, spatial_dims)?;
        let gradient = GradientNorm {
            spatial_dims,
            l1: self.l1,
        };
        Ok(Box::new(Penalty(gradient, component)))
    }
}

register_component!(
    regularization,
    "gradient",
    GradientConfig,
    "Gradient norm (L2, or L1) of the DDF"
);

#[cfg(test)]
mod tests {
    use super::*;
    use voxreg_framework::candle;
    use voxreg_framework::config::ConfigDocument;

    fn overlap() -> OverlapConfig {
        OverlapConfig {
            binary: false,
            background_weight: 0.0,
            smooth_nr: EPS,
            smooth_dr: EPS,
            scales: None,
            kernel: ScaleKernel::Gaussian,
        }
    }

    fn cross_entropy() -> CrossEntropyConfig {
        CrossEntropyConfig {
            binary: false,
            background_weight: 0.0,
            smooth: EPS,
            scales: None,
            kernel: ScaleKernel::Gaussian,
        }
    }

    fn invalid<T>(result: Result<T, ComponentError>) -> String {
        match result {
            Err(error @ ComponentError::InvalidConfig { .. }) => error.to_string(),
            Err(other) => panic!("expected an invalid-config error, got {other}"),
            Ok(_) => panic!("expected an invalid-config error, got a built component"),
        }
    }

    #[test]
    fn every_implemented_loss_builds_in_2d_and_3d_only() {
        for dims in [2, 3] {
            assert!(ImageLossConfig::build(&SsdConfig::default(), dims).is_ok());
            assert!(GnccConfig::default().build(dims).is_ok());
            assert!(GmiConfig {
                num_bins: 23,
                sigma_ratio: 0.5
            }
            .build(dims)
            .is_ok());
            assert!(LabelLossConfig::build(&SsdConfig::default(), dims).is_ok());
            assert!(DiceConfig(overlap()).build(dims).is_ok());
            assert!(JaccardConfig(overlap()).build(dims).is_ok());
            assert!(cross_entropy().build(dims).is_ok());
            assert!(BendingConfig::default().build(dims).is_ok());
            assert!(GradientConfig { l1: true }.build(dims).is_ok());
        }
        assert!(invalid(GnccConfig::default().build(1)).contains("spatial_dims"));
        assert!(invalid(DiceConfig(overlap()).build(4)).contains("spatial_dims"));
        assert!(invalid(BendingConfig::default().build(1)).contains("spatial_dims"));
    }

    #[test]
    fn bad_values_are_rejected_at_build_time() {
        let message = invalid(
            GmiConfig {
                num_bins: 1,
                sigma_ratio: 0.5,
            }
            .build(3),
        );
        assert!(
            message.contains("gmi") && message.contains("num_bins"),
            "{message}"
        );
        for sigma_ratio in [0.0, -1.0, f64::NAN] {
            let message = invalid(
                GmiConfig {
                    num_bins: 23,
                    sigma_ratio,
                }
                .build(3),
            );
            assert!(message.contains("sigma_ratio"), "{message}");
        }
        for weight in [-0.1, 1.5, f64::NAN] {
            let config = OverlapConfig {
                background_weight: weight,
                ..overlap()
            };
            let message = invalid(DiceConfig(config.clone()).build(3));
            assert!(message.contains("background_weight"), "{message}");
            assert!(invalid(JaccardConfig(config).build(3)).contains("jaccard"));
            let message = invalid(
                CrossEntropyConfig {
                    background_weight: weight,
                    ..cross_entropy()
                }
                .build(3),
            );
            assert!(message.contains("background_weight"), "{message}");
        }
        let message = invalid(
            DiceConfig(OverlapConfig {
                smooth_dr: -1.0,
                ..overlap()
            })
            .build(2),
        );
        assert!(message.contains("smooth_dr"), "{message}");
        let message = invalid(
            CrossEntropyConfig {
                smooth: f64::INFINITY,
                ..cross_entropy()
            }
            .build(2),
        );
        assert!(message.contains("smooth"), "{message}");
        let empty = SsdConfig {
            scales: Some(vec![]),
            ..SsdConfig::default()
        };
        let message = invalid(ImageLossConfig::build(&empty, 2));
        assert!(message.contains("scales"), "{message}");
    }

    /// Decodes `yaml` as DeepReg writes it (keys of the component's mapping, `name` apart)
    /// through the registry, as a config file would reach the loss.
    fn decoded<K: voxreg_framework::registry::ComponentKind + ?Sized>(
        name: &str,
        yaml: &str,
    ) -> Box<K> {
        let registry = Registry::linked().unwrap();
        let value = ConfigDocument::parse(yaml, "loss.yaml".as_ref())
            .unwrap()
            .value;
        registry.decode::<K>(name, value).unwrap()
    }

    #[test]
    fn deepreg_yaml_reaches_runnable_losses_through_the_registry() -> candle::Result<()> {
        let t = Tensor::new(&[[[[1.0f32, 1.0], [1.0, 0.0]]]], &Device::Cpu)?;
        let p = Tensor::new(&[[[[0.9f32, 0.2], [0.6, 0.1]]]], &Device::Cpu)?;
        let dice = decoded::<dyn LabelLossConfig>("dice", "binary: true\nsmooth_nr: 0\n");
        // Thresholded p = (1, 0, 1, 0): 2·2 / (3 + 2).
        let value = dice
            .build(2)
            .unwrap()
            .loss(&p, Some(&t))?
            .to_vec1::<f32>()?;
        assert!((value[0] + 0.8).abs() < 1e-5, "{value:?}");
        let gmi = decoded::<dyn ImageLossConfig>("gmi", "num_bins: 8\nsigma_ratio: 1.0\n");
        assert!(gmi.build(2).unwrap().loss(&p, Some(&t)).is_ok());
        let ce = decoded::<dyn LabelLossConfig>("cross-entropy", "scales: 0\n");
        assert!(ce.build(2).is_ok());
        let ssd = decoded::<dyn LabelLossConfig>("ssd", "scales: [0, 1]\nkernel: cauchy\n");
        assert!(ssd.build(2).unwrap().loss(&p, Some(&t)).is_ok());
        let bending = decoded::<dyn RegularizationConfig>("bending", "{}\n");
        let ddf = Tensor::zeros((1, 2, 5, 5), DType::F32, &Device::Cpu)?;
        assert_eq!(
            bending
                .build(2)
                .unwrap()
                .loss(&ddf, None)?
                .to_vec1::<f32>()?,
            [0.0]
        );
        Ok(())
    }

    #[test]
    fn multi_scale_losses_build_with_either_kernel() {
        let ssd = |scales: &[f64], kernel| SsdConfig {
            scales: Some(scales.to_vec()),
            kernel,
        };
        let with_scales = |scales: &[f64]| OverlapConfig {
            scales: Some(scales.to_vec()),
            ..overlap()
        };
        let ce = |scales: &[f64]| CrossEntropyConfig {
            scales: Some(scales.to_vec()),
            ..cross_entropy()
        };
        for dims in [2, 3] {
            for scales in [&[0.0][..], &[0.0, 1.0, 2.0], &[0.5]] {
                for kernel in [ScaleKernel::Gaussian, ScaleKernel::Cauchy] {
                    assert!(ImageLossConfig::build(&ssd(scales, kernel), dims).is_ok());
                    assert!(LabelLossConfig::build(&ssd(scales, kernel), dims).is_ok());
                }
                assert!(DiceConfig(with_scales(scales)).build(dims).is_ok());
                assert!(JaccardConfig(with_scales(scales)).build(dims).is_ok());
                assert!(ce(scales).build(dims).is_ok());
            }
        }
        let message = invalid(DiceConfig(with_scales(&[1.0, -2.0])).build(3));
        assert!(
            message.contains("dice") && message.contains("scales"),
            "{message}"
        );
        assert!(invalid(ce(&[f64::NAN]).build(2)).contains("scales"));
    }

    #[test]
    fn lncc_builds_and_rejects_impossible_kernels() {
        let lncc = |kernel_size, kernel_type| LnccConfig {
            kernel_size,
            kernel_type,
            smooth_nr: EPS,
            smooth_dr: EPS,
        };
        for dims in [2, 3] {
            for kernel in [
                LnccKernel::Rectangular,
                LnccKernel::Triangular,
                LnccKernel::Gaussian,
            ] {
                assert!(lncc(9, kernel).build(dims).is_ok());
                assert!(invalid(lncc(0, kernel).build(dims)).contains("kernel_size"));
            }
            assert!(lncc(4, LnccKernel::Rectangular).build(dims).is_ok());
            assert!(lncc(1, LnccKernel::Gaussian).build(dims).is_ok());
        }
        for size in [1, 4] {
            let message = invalid(lncc(size, LnccKernel::Triangular).build(3));
            assert!(
                message.contains("lncc") && message.contains("triangular"),
                "{message}"
            );
        }
        assert!(invalid(lncc(9, LnccKernel::Rectangular).build(4)).contains("spatial_dims"));
        let negative = LnccConfig {
            smooth_dr: -1.0,
            ..lncc(9, LnccKernel::Gaussian)
        };
        assert!(invalid(negative.build(3)).contains("smooth_dr"));
        let decoded = decoded::<dyn ImageLossConfig>("lncc", "kernel_type: triangular\n");
        let image = Tensor::ones((1, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let value = decoded
            .build(2)
            .unwrap()
            .loss(&image, Some(&image))
            .unwrap();
        assert_eq!(value.to_vec1::<f32>().unwrap(), [-1.0]);
    }
}
