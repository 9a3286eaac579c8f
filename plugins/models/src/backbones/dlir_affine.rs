//! `dlir_affine`: DLIR's affine ConvNet (de Vos et al. 2019), with the keys and defaults of
//! TorchIR's `AIRNet` (`torchir/networks/globalnet.py`, by DLIR's first author).

use serde::{Deserialize, Serialize};
use voxreg_framework::component::Head as SpecHead;
use voxreg_framework::prelude::*;

use crate::affine_head::AffineKind;
use crate::dlir_net::{DlirAffineNet, DlirPlan};

/// The filters of the pipeline's convolutions: one count for every layer, or one per layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Filters {
    /// The same count for every convolution.
    Uniform(usize),
    /// One count per convolution (`num_conv_layers` values).
    PerLayer(Vec<usize>),
}

impl Filters {
    /// The count of each of `layers` convolutions, each in `1..=MAX_FILTERS`; the message
    /// says what would work.
    pub(crate) fn per_layer(&self, layers: usize) -> Result<Vec<usize>, String> {
        let filters = match self {
            Filters::Uniform(k) => vec![*k; layers],
            Filters::PerLayer(list) if list.len() == layers => list.clone(),
            Filters::PerLayer(list) => {
                return Err(format!(
                    "kernels must be one number or one per convolution ({layers} values for \
                     num_conv_layers {layers}), got {} ({list:?})",
                    list.len()
                ))
            }
        };
        if filters.iter().any(|&f| f == 0 || f > MAX_FILTERS) {
            return Err(format!(
                "kernels must be in 1..={MAX_FILTERS} per convolution, got {filters:?}; e.g. 32"
            ));
        }
        Ok(filters)
    }
}

/// The affine parametrisation of the `dlir_affine` head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parametrisation {
    /// TorchIR's: translation (voxels), rotation `tanh · π/2`, scale `2^tanh`, shear
    /// `tanh · π/4`, about the true image centre; zero outputs are the identity.
    Bounded,
    /// The notebook's: a free `ndim × (ndim + 1)` matrix on coordinates normalised to
    /// `[−1, 1]` about the centre, starting at `[I | 0]`.
    Raw,
    /// A translation only (`ndim` outputs, voxels, unbounded; `T = I`): for images that
    /// differ by a shift, such as the tiles of a microscope scan, where the other degrees of
    /// freedom only let a similarity loss zoom into the overlap.
    Translation,
}

/// `dlir_affine`: twin feature pipelines with shared weights for the moving and the fixed
/// image (convolution → ELU → 2× average pooling), global average pooling, concatenation,
/// dense layers with ELU and an affine head that starts at the identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DlirAffineConfig {
    /// Kernel size of every convolution (odd).
    pub kernel_size: usize,
    /// Filters of the convolutions (TorchIR's `kernels`).
    pub kernels: Filters,
    /// Units of each dense layer.
    pub linear_nodes: usize,
    /// Number of convolutions in each pipeline.
    pub num_conv_layers: usize,
    /// Number of dense layers after the concatenation (at least 1).
    pub num_dense_layers: usize,
    /// How many of the first convolutions are followed by 2× average pooling (the levels).
    pub num_downsamplings: usize,
    /// The affine head: `bounded` or `raw`.
    pub parametrisation: Parametrisation,
}

impl Default for DlirAffineConfig {
    /// TorchIR's `AIRNet` defaults.
    fn default() -> Self {
        Self {
            kernel_size: 3,
            kernels: Filters::Uniform(32),
            linear_nodes: 64,
            num_conv_layers: 5,
            num_dense_layers: 2,
            num_downsamplings: 4,
            parametrisation: Parametrisation::Bounded,
        }
    }
}

#[typetag::serialize(name = "dlir_affine")]
impl BackboneConfig for DlirAffineConfig {
    fn is_affine(&self) -> bool {
        true
    }

    fn build(
        &self,
        spec: &BackboneSpec,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        const NAME: &str = "backbone `dlir_affine`";
        let plan = self
            .plan(spec)
            .map_err(|m| ComponentError::invalid(NAME, m))?;
        let net = DlirAffineNet::build(NAME, plan, &params)
            .map_err(|e| ComponentError::tensor(format!("building the weights of {NAME}"), e))?;
        Ok(Box::new(net))
    }
}

register_component!(
    backbone,
    "dlir_affine",
    DlirAffineConfig,
    "DLIR affine ConvNet: twin weight-shared pipelines, bounded or raw affine head (TorchIR AIRNet)"
);

/// Upper bounds that keep a config within memory: checked so that a typo is an error.
const MAX_FILTERS: usize = 4096;
const MAX_KERNEL: usize = 31;
const MAX_LAYERS: usize = 64;
const MAX_NODES: usize = 65536;

impl DlirAffineConfig {
    /// Checks the config against `spec`; the messages say what would work.
    fn plan(&self, spec: &BackboneSpec) -> Result<DlirPlan, String> {
        let ndim = super::check_spec(spec)?;
        if spec.in_channels != 2 || spec.head != SpecHead::Field || spec.out_channels != ndim {
            return Err(format!(
                "dlir_affine predicts an affine transform from the moving and the fixed image \
                 (2 input channels), but the method gives {} input channels and asks for {} \
                 output channels; use it with method ddf",
                spec.in_channels, spec.out_channels
            ));
        }
        if self.kernel_size.is_multiple_of(2) || self.kernel_size > MAX_KERNEL {
            return Err(format!(
                "kernel_size must be odd and at most {MAX_KERNEL} (the convolutions keep the \
                 size with padding kernel_size / 2), got {}; e.g. 3",
                self.kernel_size
            ));
        }
        let layers = self.num_conv_layers;
        if layers == 0 || layers > MAX_LAYERS {
            return Err(format!(
                "num_conv_layers must be in 1..={MAX_LAYERS}, got {layers}; e.g. 5"
            ));
        }
        if self.num_downsamplings > layers {
            return Err(format!(
                "num_downsamplings {} is more than num_conv_layers {layers} (each pooling \
                 follows a convolution); use at most {layers}",
                self.num_downsamplings
            ));
        }
        let filters = self.kernels.per_layer(layers)?;
        if self.linear_nodes == 0 || self.linear_nodes > MAX_NODES {
            return Err(format!(
                "linear_nodes must be in 1..={MAX_NODES}, got {}; e.g. 64",
                self.linear_nodes
            ));
        }
        if self.num_dense_layers == 0 || self.num_dense_layers > MAX_LAYERS {
            return Err(format!(
                "num_dense_layers must be in 1..={MAX_LAYERS}, got {}; e.g. 2",
                self.num_dense_layers
            ));
        }
        Ok(DlirPlan {
            ndim,
            kernel_size: self.kernel_size,
            filters,
            num_downsamplings: self.num_downsamplings,
            linear_nodes: self.linear_nodes,
            num_dense_layers: self.num_dense_layers,
            kind: match self.parametrisation {
                Parametrisation::Bounded => AffineKind::Bounded,
                Parametrisation::Raw => AffineKind::Raw,
                Parametrisation::Translation => AffineKind::Translation,
            },
        })
    }
}

#[cfg(test)]
mod tests;
