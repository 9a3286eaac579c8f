//! Loss configs.

use serde::{Deserialize, Deserializer, Serialize};
use voxreg_framework::prelude::*;

use crate::deform::{BendingEnergy, GradientNorm};
use crate::image::{Gmi, Gncc, Ssd};
use crate::util::{check_single_scale, check_spatial_dims, EPS};

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

/// The smoothing kernel of multi-scale label losses.
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

fn not_implemented(component: &str) -> ComponentError {
    ComponentError::not_implemented(format!(
        "{component} (it needs the separable filters of the ops module)"
    ))
}

/// `lncc`: local normalised cross-correlation, negated:
/// `-mean_x (Σ_w (f-f̄)(m-m̄))² / (Σ_w (f-f̄)² Σ_w (m-m̄)²)` over windows `w` of `kernel_size`,
/// with `smooth_nr` / `smooth_dr` added to numerator and denominator.
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
    fn build(&self, _spatial_dims: usize) -> Result<Box<dyn ImageLoss>, ComponentError> {
        Err(not_implemented("image_loss `lncc`"))
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
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn ImageLoss>, ComponentError> {
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
        Ok(Box::new(Gmi {
            spatial_dims,
            num_bins: self.num_bins,
            sigma_ratio: self.sigma_ratio,
        }))
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
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn ImageLoss>, ComponentError> {
        check_spatial_dims("image_loss `gncc`", spatial_dims)?;
        Ok(Box::new(Gncc { spatial_dims }))
    }
}

register_component!(
    image_loss,
    "gncc",
    GnccConfig,
    "Global normalised cross-correlation (negated)"
);

/// `ssd`: mean squared difference `mean((f − w)²)` over every non-batch axis (for labels
/// `(N, L, *spatial)` that is also the mean over labels), optionally averaged over smoothing
/// scales. Only `scales` null or all 0 (a single unsmoothed scale) can be built yet.
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
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn ImageLoss>, ComponentError> {
        let component = "image_loss `ssd`";
        check_spatial_dims(component, spatial_dims)?;
        check_single_scale(component, self.scales.as_deref())?;
        Ok(Box::new(Ssd {
            component,
            spatial_dims,
        }))
    }
}

#[typetag::serialize(name = "ssd")]
impl LabelLossConfig for SsdConfig {
    fn build(&self, _spatial_dims: usize) -> Result<Box<dyn LabelLoss>, ComponentError> {
        Err(not_implemented("label_loss `ssd`"))
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

/// Keys shared by `dice` and `jaccard`. Only `scales` null or all 0 (a single unsmoothed
/// scale) can be built yet.
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

/// `dice`: Dice score, negated, per label channel and averaged over the channels. With
/// `P = Σ t p`, `S = Σ (t + p)` over a channel's `V` voxels and `w = background_weight`:
/// `−(2P + smooth_nr) / (S + smooth_dr)`; for `w > 0` the generalised
/// `−(2(P − wS + wV) + smooth_nr) / ((1 − 2w) S + 2wV + smooth_dr)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DiceConfig(pub OverlapConfig);

#[typetag::serialize(name = "dice")]
impl LabelLossConfig for DiceConfig {
    fn build(&self, _spatial_dims: usize) -> Result<Box<dyn LabelLoss>, ComponentError> {
        Err(not_implemented("label_loss `dice`"))
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
    fn build(&self, _spatial_dims: usize) -> Result<Box<dyn LabelLoss>, ComponentError> {
        Err(not_implemented("label_loss `jaccard`"))
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
/// over the channel's voxels, `w = background_weight` (`w = 0`: the foreground term only).
/// Only `scales` null or all 0 can be built yet.
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
    fn build(&self, _spatial_dims: usize) -> Result<Box<dyn LabelLoss>, ComponentError> {
        Err(not_implemented("label_loss `cross-entropy`"))
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
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Regularization>, ComponentError> {
        check_spatial_dims("regularization `bending`", spatial_dims)?;
        Ok(Box::new(BendingEnergy { spatial_dims }))
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
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Regularization>, ComponentError> {
        check_spatial_dims("regularization `gradient`", spatial_dims)?;
        Ok(Box::new(GradientNorm {
            spatial_dims,
            l1: self.l1,
        }))
    }
}

register_component!(
    regularization,
    "gradient",
    GradientConfig,
    "Gradient norm (L2, or L1) of the DDF"
);
