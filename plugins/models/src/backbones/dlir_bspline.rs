//! `dlir_bspline`: DLIR's deformable B-spline stage (de Vos et al. 2019), with the keys and
//! defaults of TorchIR's `DIRNet` and `BsplineTransformer` (by DLIR's first author).

use serde::{Deserialize, Serialize};
use voxreg_framework::component::Head as SpecHead;
use voxreg_framework::prelude::*;

use super::dlir_affine::Filters;
use crate::dlir_bspline_net::{BsplinePlan, DlirBsplineNet};

/// The control-point spacing: one value for every axis, or one per axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GridSpacing {
    /// The same spacing along every axis.
    Uniform(usize),
    /// One spacing per axis, in tensor axis order.
    PerAxis(Vec<usize>),
}

/// `dlir_bspline`: the moving and the fixed image as two channels of one ConvNet
/// (convolution → ELU, with 2× average pooling until the control grid is reached),
/// `num_dense_layers` 1 × 1 convolutions with ELU and a zero-initialised 1 × 1 convolution
/// to the cubic B-spline coefficients, which give the dense displacement field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DlirBsplineConfig {
    /// Control-point spacing in voxels (powers of 2).
    pub grid_spacing: GridSpacing,
    /// Kernel size of the feature convolutions (odd).
    pub kernel_size: usize,
    /// Filters of the feature convolutions (TorchIR's `kernels`).
    pub kernels: Filters,
    /// Number of feature convolutions (at least `log2(grid_spacing)`).
    pub num_conv_layers: usize,
    /// Number of 1 × 1 convolutions with ELU before the coefficient layer.
    pub num_dense_layers: usize,
    /// Bound the coefficients to `±0.4 · spacing` by `tanh` (an invertible field).
    pub apply_diffeomorphic_limits: bool,
}

impl Default for DlirBsplineConfig {
    /// TorchIR's `DIRNet` defaults, with the spacing of its MNIST example's first stage.
    fn default() -> Self {
        Self {
            grid_spacing: GridSpacing::Uniform(8),
            kernel_size: 3,
            kernels: Filters::Uniform(32),
            num_conv_layers: 5,
            num_dense_layers: 2,
            apply_diffeomorphic_limits: false,
        }
    }
}

#[typetag::serialize(name = "dlir_bspline")]
impl BackboneConfig for DlirBsplineConfig {
    fn build(
        &self,
        spec: &BackboneSpec,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        const NAME: &str = "backbone `dlir_bspline`";
        let plan = self
            .plan(spec)
            .map_err(|m| ComponentError::invalid(NAME, m))?;
        let net = DlirBsplineNet::build(NAME, plan, &params)
            .map_err(|e| ComponentError::tensor(format!("building the weights of {NAME}"), e))?;
        Ok(Box::new(net))
    }
}

register_component!(
    backbone,
    "dlir_bspline",
    DlirBsplineConfig,
    "DLIR deformable stage: ConvNet to cubic B-spline coefficients, zero-initialised (TorchIR DIRNet)"
);

/// Upper bounds that keep a config within memory: checked so that a typo is an error.
const MAX_KERNEL: usize = 31;
const MAX_LAYERS: usize = 64;
const MAX_SPACING: usize = 1 << 12;

impl DlirBsplineConfig {
    /// Checks the config against `spec`; the messages say what would work.
    fn plan(&self, spec: &BackboneSpec) -> Result<BsplinePlan, String> {
        let ndim = super::check_spec(spec)?;
        if spec.in_channels != 2 || spec.head != SpecHead::Field || spec.out_channels != ndim {
            return Err(format!(
                "dlir_bspline predicts a displacement field from the moving and the fixed \
                 image (2 input channels, {ndim} output channels), but the method gives {} \
                 input channels and asks for {} output channels; use it with method ddf",
                spec.in_channels, spec.out_channels
            ));
        }
        let spacing = match &self.grid_spacing {
            GridSpacing::Uniform(s) => vec![*s; ndim],
            GridSpacing::PerAxis(list) if list.len() == ndim => list.clone(),
            GridSpacing::PerAxis(list) => {
                return Err(format!(
                    "grid_spacing must be one number or one per axis ({ndim} values), got {list:?}"
                ))
            }
        };
        if spacing
            .iter()
            .any(|&s| !s.is_power_of_two() || s > MAX_SPACING)
        {
            return Err(format!(
                "grid_spacing must be powers of 2 up to {MAX_SPACING} (the network reaches the \
                 control grid by 2× poolings), got {spacing:?}; e.g. 8"
            ));
        }
        if self.kernel_size.is_multiple_of(2) || self.kernel_size > MAX_KERNEL {
            return Err(format!(
                "kernel_size must be odd and at most {MAX_KERNEL}, got {}; e.g. 3",
                self.kernel_size
            ));
        }
        let layers = self.num_conv_layers;
        if layers == 0 || layers > MAX_LAYERS {
            return Err(format!(
                "num_conv_layers must be in 1..={MAX_LAYERS}, got {layers}; e.g. 5"
            ));
        }
        let poolings = spacing
            .iter()
            .map(|s| s.trailing_zeros() as usize)
            .max()
            .unwrap_or(0);
        if poolings > layers {
            return Err(format!(
                "grid_spacing {spacing:?} needs {poolings} 2× poolings, one after each of the \
                 first convolutions, but num_conv_layers is {layers}; use num_conv_layers of \
                 at least {poolings}"
            ));
        }
        let filters = self.kernels.per_layer(layers)?;
        if self.num_dense_layers > MAX_LAYERS {
            return Err(format!(
                "num_dense_layers must be at most {MAX_LAYERS}, got {}; e.g. 2",
                self.num_dense_layers
            ));
        }
        Ok(BsplinePlan {
            ndim,
            kernel_size: self.kernel_size,
            filters,
            spacing,
            num_dense_layers: self.num_dense_layers,
            diffeomorphic_limits: self.apply_diffeomorphic_limits,
        })
    }
}

#[cfg(test)]
mod tests;
