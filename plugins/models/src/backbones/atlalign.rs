//! `atlalign_global` and `atlalign_local`: atlalign's supervised networks
//! (`atlalign.nn.supervised_global_model_factory` and `supervised_model_factory`, version
//! 0.6.2), with the factories' arguments as keys and their defaults. atlalign hard-wires
//! 320 × 456 2D images; here any 2D or 3D size works.

use serde::{Deserialize, Serialize};
use voxreg_framework::component::Head as SpecHead;
use voxreg_framework::prelude::*;

use crate::atlalign_net::{GlobalNet, GlobalPlan, LocalNet, LocalPlan};

/// Bounds that keep a config within memory: checked so that a typo is an error.
const MAX_FILTERS: usize = 4096;
const MAX_BLOCKS: usize = 32;
const MAX_UNITS: usize = 65536;

/// Checks that the method asks for a field from a moving and a fixed image.
fn check_field_spec(name: &str, spec: &BackboneSpec) -> Result<usize, String> {
    let ndim = super::check_spec(spec)?;
    if spec.in_channels != 2 || spec.head != SpecHead::Field || spec.out_channels != ndim {
        return Err(format!(
            "{name} predicts a displacement field from the moving and the fixed image (2 input \
             channels), but the method gives {} input channels and asks for {} output \
             channels; use it with method ddf (or inverse / cascade over ddf)",
            spec.in_channels, spec.out_channels
        ));
    }
    Ok(ndim)
}

/// Checks one list of filter counts: at most [`MAX_BLOCKS`] entries, each in
/// `1..=MAX_FILTERS`.
fn check_filters(key: &str, filters: &[usize]) -> Result<(), String> {
    if filters.len() > MAX_BLOCKS {
        return Err(format!(
            "{key} has {} blocks; at most {MAX_BLOCKS} are allowed",
            filters.len()
        ));
    }
    if filters.iter().any(|&f| f == 0 || f > MAX_FILTERS) {
        return Err(format!(
            "{key} must hold filter counts in 1..={MAX_FILTERS}, got {filters:?}; e.g. [16, 32]"
        ));
    }
    Ok(())
}

/// `atlalign_global`: blocks of two 3 × 3 convolutions with ReLU and a 2× max pooling,
/// flattened, linear dense layers, and a dense head of `ndim · (ndim + 1)` affine parameters
/// that starts at the identity; the affine acts on pixel coordinates with the origin at the
/// first pixel (atlalign's `Affine2DVF`) and becomes the DDF the method warps with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AtlalignGlobalConfig {
    /// Filters of each block (two convolutions, then max pooling).
    pub filters: Vec<usize>,
    /// Units of each dense layer after the flattening (linear, as atlalign's; may be empty:
    /// the head then reads the flattened features).
    pub dense_layers: Vec<usize>,
}

impl Default for AtlalignGlobalConfig {
    /// atlalign's defaults: `filters = (16, 32, 64)`, `dense_layers = (10,)`.
    fn default() -> Self {
        Self {
            filters: vec![16, 32, 64],
            dense_layers: vec![10],
        }
    }
}

impl AtlalignGlobalConfig {
    fn plan(&self, spec: &BackboneSpec) -> Result<GlobalPlan, String> {
        let ndim = check_field_spec("atlalign_global", spec)?;
        check_filters("filters", &self.filters)?;
        if self.dense_layers.len() > MAX_BLOCKS
            || self.dense_layers.iter().any(|&u| u == 0 || u > MAX_UNITS)
        {
            return Err(format!(
                "dense_layers must hold at most {MAX_BLOCKS} unit counts in 1..={MAX_UNITS}, \
                 got {:?}; e.g. [10]",
                self.dense_layers
            ));
        }
        let unit = 1usize << self.filters.len();
        if spec.image_size.iter().any(|&s| s < unit) {
            return Err(format!(
                "{} blocks halve the image {} times, but the image size {:?} has an axis \
                 smaller than {unit}; use fewer filters",
                self.filters.len(),
                self.filters.len(),
                spec.image_size
            ));
        }
        let plan = GlobalPlan {
            ndim,
            image_size: spec.image_size.clone(),
            filters: self.filters.clone(),
            dense_layers: self.dense_layers.clone(),
        };
        let first = plan
            .dense_layers
            .first()
            .copied()
            .unwrap_or(ndim * (ndim + 1));
        let weights = plan.flat_features().checked_mul(first);
        if weights.is_none_or(|w| w > 1 << 31) {
            return Err(format!(
                "the first dense layer would take {} flattened features × {first} units, too \
                 many weights; add blocks to filters or use fewer dense units",
                plan.flat_features()
            ));
        }
        Ok(plan)
    }
}

#[typetag::serialize(name = "atlalign_global")]
impl BackboneConfig for AtlalignGlobalConfig {
    fn is_affine(&self) -> bool {
        true
    }

    fn build(
        &self,
        spec: &BackboneSpec,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        const NAME: &str = "backbone `atlalign_global`";
        let plan = self
            .plan(spec)
            .map_err(|m| ComponentError::invalid(NAME, m))?;
        let net = GlobalNet::build(NAME, plan, &params)
            .map_err(|e| ComponentError::tensor(format!("building the weights of {NAME}"), e))?;
        Ok(Box::new(net))
    }
}

register_component!(
    backbone,
    "atlalign_global",
    AtlalignGlobalConfig,
    "atlalign's global network: conv blocks, flatten, dense layers, identity-initialised affine"
);

/// `atlalign_local`: atlalign's U-Net. The input is cropped to the largest size the
/// down-samplings divide; blocks are a 3 × 3 convolution with LeakyReLU(0.2); a down block
/// max-pools first; an up block up-samples (nearest), convolves, concatenates the skip and
/// convolves again; a 2 × 2 convolution gives the field, zero-padded back to the input size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AtlalignLocalConfig {
    /// Filters of the blocks before the first down-sampling.
    pub start_filters: Vec<usize>,
    /// Filters of the down-sampling blocks (one halving each).
    pub downsample_filters: Vec<usize>,
    /// Filters of the blocks at the bottom.
    pub middle_filters: Vec<usize>,
    /// Filters of the up-sampling blocks: as many as `downsample_filters`.
    pub upsample_filters: Vec<usize>,
    /// Filters of the blocks after the last up-sampling.
    pub end_filters: Vec<usize>,
}

impl Default for AtlalignLocalConfig {
    /// atlalign's defaults.
    fn default() -> Self {
        Self {
            start_filters: vec![16],
            downsample_filters: vec![16, 32, 32, 32],
            middle_filters: vec![32],
            upsample_filters: vec![32, 32, 32, 32],
            end_filters: vec![],
        }
    }
}

impl AtlalignLocalConfig {
    fn plan(&self, spec: &BackboneSpec) -> Result<LocalPlan, String> {
        let ndim = check_field_spec("atlalign_local", spec)?;
        for (key, filters) in [
            ("start_filters", &self.start_filters),
            ("downsample_filters", &self.downsample_filters),
            ("middle_filters", &self.middle_filters),
            ("upsample_filters", &self.upsample_filters),
            ("end_filters", &self.end_filters),
        ] {
            check_filters(key, filters)?;
        }
        let levels = self.downsample_filters.len();
        if self.upsample_filters.len() != levels {
            return Err(format!(
                "upsample_filters has {} blocks but downsample_filters {levels}: every \
                 down-sampling needs its up-sampling",
                self.upsample_filters.len()
            ));
        }
        let unit = 1usize << levels;
        if spec.image_size.iter().any(|&s| s < unit) {
            return Err(format!(
                "{levels} down-samplings need every axis to be at least {unit} voxels, but the \
                 image size is {:?}; use fewer downsample_filters",
                spec.image_size
            ));
        }
        Ok(LocalPlan {
            ndim,
            image_size: spec.image_size.clone(),
            start_filters: self.start_filters.clone(),
            downsample_filters: self.downsample_filters.clone(),
            middle_filters: self.middle_filters.clone(),
            upsample_filters: self.upsample_filters.clone(),
            end_filters: self.end_filters.clone(),
        })
    }
}

#[typetag::serialize(name = "atlalign_local")]
impl BackboneConfig for AtlalignLocalConfig {
    fn build(
        &self,
        spec: &BackboneSpec,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        const NAME: &str = "backbone `atlalign_local`";
        let plan = self
            .plan(spec)
            .map_err(|m| ComponentError::invalid(NAME, m))?;
        let net = LocalNet::build(NAME, plan, &params)
            .map_err(|e| ComponentError::tensor(format!("building the weights of {NAME}"), e))?;
        Ok(Box::new(net))
    }
}

register_component!(
    backbone,
    "atlalign_local",
    AtlalignLocalConfig,
    "atlalign's local U-Net: crop, LeakyReLU blocks, skip concatenation, 2×2 flow conv, pad back"
);

#[cfg(test)]
mod tests;
