//! VoxelMorph's losses as VoxelMorph's source defines them (`voxelmorph/{tf,torch}/losses.py`),
//! registered with a `vxm_` prefix beside DeepReg's variants, which keep their own formulas.
//! Each returns one value per batch element; VoxelMorph's batch mean is the training step's.

use serde::{Deserialize, Deserializer, Serialize};
use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::ops::separable_filter_axes;
use voxreg_framework::prelude::*;

use crate::kinds::{ImageLoss, Images, LabelLoss, Labels, Penalty, Regularization};
use crate::util::{check_pair, check_spatial_dims};

/// `vxm_mse`: VoxelMorph's `MSE(image_sigma)`, `(1 / σ²) · mean((f − w)²)` over every
/// non-batch axis. `σ` is the assumed image noise (HyperMorph's script uses 0.05 for
/// intensities in [0, 1], a factor of 400).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxmMseConfig {
    /// `σ` (> 0), default 1.
    #[serde(default = "one")]
    pub image_sigma: f64,
}

fn one() -> f64 {
    1.0
}

struct VxmMse {
    spatial_dims: usize,
    scale: f64,
}

impl ImageLoss for VxmMse {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair("image_loss `vxm_mse`", self.spatial_dims, fixed, warped)?;
        (fixed - warped)?.sqr()?.flatten_from(1)?.mean(1)? * self.scale
    }
}

#[typetag::serialize(name = "vxm_mse")]
impl ImageLossConfig for VxmMseConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "image_loss `vxm_mse`";
        check_spatial_dims(component, spatial_dims)?;
        let sigma = self.image_sigma;
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(ComponentError::invalid(
                component,
                format!("image_sigma must be a positive number, got {sigma}"),
            ));
        }
        let mse = VxmMse {
            spatial_dims,
            scale: 1.0 / (sigma * sigma),
        };
        Ok(Box::new(Images(mse, component)))
    }
}

register_component!(
    image_loss,
    "vxm_mse",
    VxmMseConfig,
    "VoxelMorph's MSE scaled by 1/image_sigma²"
);

/// One window size for every axis, or one per axis.
fn window<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Window {
        One(usize),
        Many(Vec<usize>),
    }
    Ok(match Window::deserialize(deserializer)? {
        Window::One(size) => vec![size],
        Window::Many(sizes) => sizes,
    })
}

/// `vxm_ncc`: VoxelMorph's local (windowed) normalised cross-correlation, negated.
///
/// Box sums `S[·]` over a window of `win` voxels per axis and over the `C` channels
/// (`"same"` zero padding; an even window has its extra voxel on the high side, as
/// TensorFlow's), `V = Π win · C`, `u_f = S[f] / V`, `u_w = S[w] / V`:
/// `cross = S[fw] − u_w S[f] − u_f S[w] + u_f u_w V`,
/// `var_f = S[f²] − 2 u_f S[f] + u_f² V`, likewise `var_w`, and
/// * PyTorch's version (default): `cc = cross² / (var_f var_w + ε)`;
/// * TensorFlow's (`clamp: true`): `cross`, `var_f`, `var_w` each clamped to `≥ ε` first,
///   `cc = (cross / var_f) (cross / var_w)`; anti-correlated windows then count as ≈ 0 and
///   clamped windows pass no gradient.
///
/// The loss is `−mean_x cc` per batch element.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxmNccConfig {
    /// The window, one size for every axis or one per axis (default 9).
    #[serde(default = "default_window", deserialize_with = "window")]
    pub win: Vec<usize>,
    /// `ε` (default 1e-5).
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// TensorFlow's clamps (see the formula).
    #[serde(default)]
    pub clamp: bool,
}

fn default_window() -> Vec<usize> {
    vec![9]
}

fn default_eps() -> f64 {
    1e-5
}

struct VxmNcc {
    spatial_dims: usize,
    win: Vec<usize>,
    eps: f64,
    clamp: bool,
}

impl VxmNcc {
    /// Box sums over the window and the channels: `(N, C, *s)` → `(N, 1, *s)`.
    fn window_sum(&self, x: &Tensor) -> candle::Result<Tensor> {
        let summed = x.sum_keepdim(1)?;
        let kernels: Vec<Vec<f64>> = self.win.iter().map(|&w| vec![1.0; w]).collect();
        separable_filter_axes(&summed, &kernels)
    }
}

impl ImageLoss for VxmNcc {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair("image_loss `vxm_ncc`", self.spatial_dims, fixed, warped)?;
        let volume = (self.win.iter().product::<usize>() * fixed.dim(1)?) as f64;
        let s_f = self.window_sum(fixed)?;
        let s_w = self.window_sum(warped)?;
        let s_ff = self.window_sum(&fixed.sqr()?)?;
        let s_ww = self.window_sum(&warped.sqr()?)?;
        let s_fw = self.window_sum(&(fixed * warped)?)?;
        let u_f = (&s_f / volume)?;
        let u_w = (&s_w / volume)?;
        let cross = (((&s_fw - (&u_w * &s_f)?)? - (&u_f * &s_w)?)? + ((&u_f * &u_w)? * volume)?)?;
        let var_f = ((&s_ff - ((&u_f * &s_f)? * 2.0)?)? + (u_f.sqr()? * volume)?)?;
        let var_w = ((&s_ww - ((&u_w * &s_w)? * 2.0)?)? + (u_w.sqr()? * volume)?)?;
        let cc = if self.clamp {
            let cross = cross.maximum(self.eps)?;
            let var_f = var_f.maximum(self.eps)?;
            let var_w = var_w.maximum(self.eps)?;
            ((&cross / var_f)? * (&cross / var_w)?)?
        } else {
            (cross.sqr()? / ((var_f * var_w)? + self.eps)?)?
        };
        cc.flatten_from(1)?.mean(1)?.neg()
    }
}

#[typetag::serialize(name = "vxm_ncc")]
impl ImageLossConfig for VxmNccConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "image_loss `vxm_ncc`";
        check_spatial_dims(component, spatial_dims)?;
        let win = match self.win.as_slice() {
            [size] => vec![*size; spatial_dims],
            sizes if sizes.len() == spatial_dims => sizes.to_vec(),
            sizes => {
                return Err(ComponentError::invalid(
                    component,
                    format!(
                        "win must be one size or {spatial_dims} sizes (one per axis), got {sizes:?}"
                    ),
                ))
            }
        };
        if win.iter().any(|&w| w == 0 || w > 1024) {
            return Err(ComponentError::invalid(
                component,
                format!("every window size must be 1 to 1024, got {win:?}"),
            ));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(ComponentError::invalid(
                component,
                format!("eps must be a positive number, got {}", self.eps),
            ));
        }
        let ncc = VxmNcc {
            spatial_dims,
            win,
            eps: self.eps,
            clamp: self.clamp,
        };
        Ok(Box::new(Images(ncc, component)))
    }
}

register_component!(
    image_loss,
    "vxm_ncc",
    VxmNccConfig,
    "VoxelMorph's windowed NCC (negated), optionally with its TensorFlow clamps"
);

/// The penalty of VoxelMorph's `Grad`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradPenalty {
    /// `|Δ|`.
    #[default]
    L1,
    /// `Δ²`.
    L2,
}

/// `vxm_grad`: VoxelMorph's `Grad(penalty, loss_mult)` of a field `u = (N, C, *spatial)`:
/// forward differences `Δ_a u = u[i + 1] − u[i]` along each spatial axis `a`, penalised
/// (`|Δ|` for `l1`, `Δ²` for `l2`), averaged per axis over the components and voxels, then
/// over the `ndim` axes, times `loss_mult` (default 1; VoxelMorph recommends the field's
/// downsampling factor): `loss_mult · (1/ndim) Σ_a mean(penalty(Δ_a u))`. Needs every spatial
/// size ≥ 2.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxmGradConfig {
    /// `l1` (default) or `l2`.
    #[serde(default)]
    pub penalty: GradPenalty,
    /// A factor on the penalty (default none, i.e. 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_mult: Option<f64>,
}

struct VxmGrad {
    spatial_dims: usize,
    penalty: GradPenalty,
    loss_mult: f64,
}

impl Regularization for VxmGrad {
    fn loss(&self, field: &Tensor) -> candle::Result<Tensor> {
        const NAME: &str = "regularization `vxm_grad`";
        let dims = field.dims();
        if dims.len() != self.spatial_dims + 2 {
            candle::bail!(
                "{NAME}: expected a field (N, C, *spatial) with {} spatial axes, got {dims:?}",
                self.spatial_dims
            );
        }
        if dims[2..].iter().any(|&size| size < 2) {
            candle::bail!("{NAME}: every spatial size must be at least 2, got {dims:?}");
        }
        let mut total: Option<Tensor> = None;
        for (axis, &size) in dims.iter().enumerate().skip(2) {
            let delta = (field.narrow(axis, 1, size - 1)? - field.narrow(axis, 0, size - 1)?)?;
            let penalised = match self.penalty {
                GradPenalty::L1 => delta.abs()?,
                GradPenalty::L2 => delta.sqr()?,
            };
            let mean = penalised.flatten_from(1)?.mean(1)?;
            total = Some(match total {
                None => mean,
                Some(sum) => (sum + mean)?,
            });
        }
        let total = total.expect("at least one spatial axis");
        total * (self.loss_mult / self.spatial_dims as f64)
    }
}

#[typetag::serialize(name = "vxm_grad")]
impl RegularizationConfig for VxmGradConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "regularization `vxm_grad`";
        check_spatial_dims(component, spatial_dims)?;
        let loss_mult = self.loss_mult.unwrap_or(1.0);
        if !loss_mult.is_finite() {
            return Err(ComponentError::invalid(
                component,
                format!("loss_mult must be a finite number, got {loss_mult}"),
            ));
        }
        let grad = VxmGrad {
            spatial_dims,
            penalty: self.penalty,
            loss_mult,
        };
        Ok(Box::new(Penalty(grad, component)))
    }
}

register_component!(
    regularization,
    "vxm_grad",
    VxmGradConfig,
    "VoxelMorph's Grad: forward-difference l1/l2 penalty averaged over axes, times loss_mult"
);

/// `vxm_dice`: VoxelMorph's `Dice`, negated: per label channel `top = 2 Σ t p`,
/// `bottom = Σ (t + p)` over the voxels, `top / bottom` (0 where `bottom = 0`, TensorFlow's
/// `divide_no_nan`), `−mean` over the channels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxmDiceConfig {}

struct VxmDice {
    spatial_dims: usize,
}

impl LabelLoss for VxmDice {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair("label_loss `vxm_dice`", self.spatial_dims, fixed, warped)?;
        let t = fixed.flatten_from(2)?;
        let p = warped.flatten_from(2)?;
        let top = ((&t * &p)?.sum(2)? * 2.0)?;
        let bottom = (t + p)?.sum(2)?;
        let empty = bottom.eq(0.0)?;
        let safe = empty.where_cond(&bottom.ones_like()?, &bottom)?;
        let ratio = empty.where_cond(&top.zeros_like()?, &(top / safe)?)?;
        ratio.mean(1)?.neg()
    }
}

#[typetag::serialize(name = "vxm_dice")]
impl LabelLossConfig for VxmDiceConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        let component = "label_loss `vxm_dice`";
        check_spatial_dims(component, spatial_dims)?;
        Ok(Box::new(Labels(VxmDice { spatial_dims }, component)))
    }
}

register_component!(
    label_loss,
    "vxm_dice",
    VxmDiceConfig,
    "VoxelMorph's soft Dice (negated), 0 for channels empty in both"
);

#[cfg(test)]
mod tests;
