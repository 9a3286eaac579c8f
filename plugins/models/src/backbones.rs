//! Backbone configs with DeepReg's keys and defaults (`deepreg/model/backbone/*.py`).

use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

/// A kernel size for every level, or one per level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KernelSizes {
    /// The same size at every level.
    Uniform(usize),
    /// One size per level.
    PerLevel(Vec<usize>),
}

/// DeepReg's `control_points`: `false`/absent for a dense output, else the spacing of a
/// B-spline control-point grid (one value, or one per axis).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ControlPoints {
    /// `false` (or `true`, which DeepReg treats as invalid input).
    Flag(bool),
    /// The same spacing on every axis.
    Spacing(usize),
    /// One spacing per axis.
    PerAxis(Vec<usize>),
}

fn default_true() -> bool {
    true
}
fn default_extract_levels() -> Vec<usize> {
    vec![0]
}
fn default_kernel_sizes() -> KernelSizes {
    KernelSizes::Uniform(3)
}
fn default_strides() -> usize {
    2
}
fn default_padding() -> String {
    "same".to_owned()
}

/// `unet`: an encoder–decoder with skip connections (DeepReg's `UNet`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Channels at the first level; level `d` has `num_channel_initial · 2^d`.
    pub num_channel_initial: usize,
    /// Number of down-sampling levels (level 0 is the input resolution).
    pub depth: usize,
    /// Decoder levels whose outputs are combined into the output.
    #[serde(default = "default_extract_levels")]
    pub extract_levels: Vec<usize>,
    /// Max pooling (true) or strided convolution (false) to down-sample.
    #[serde(default = "default_true")]
    pub pooling: bool,
    /// Concatenate (true) or add (false) skip connections.
    #[serde(default)]
    pub concat_skip: bool,
    /// Encoder kernel sizes.
    #[serde(default = "default_kernel_sizes")]
    pub encode_kernel_sizes: KernelSizes,
    /// Decoder kernel sizes.
    #[serde(default = "default_kernel_sizes")]
    pub decode_kernel_sizes: KernelSizes,
    /// Encoder channels per level (default from `num_channel_initial`).
    #[serde(default)]
    pub encode_num_channels: Option<Vec<usize>>,
    /// Decoder channels per level (default: the encoder's).
    #[serde(default)]
    pub decode_num_channels: Option<Vec<usize>>,
    /// Down/up-sampling factor.
    #[serde(default = "default_strides")]
    pub strides: usize,
    /// Convolution padding.
    #[serde(default = "default_padding")]
    pub padding: String,
    /// Initialiser of the output layer (default from the method: zeros for fields).
    #[serde(default)]
    pub out_kernel_initializer: Option<String>,
    /// Activation of the output layer (default from the method).
    #[serde(default)]
    pub out_activation: Option<String>,
    /// Output channels (default from the method).
    #[serde(default)]
    pub out_channels: Option<usize>,
    /// B-spline control points instead of a dense output.
    #[serde(default)]
    pub control_points: Option<ControlPoints>,
}

#[typetag::serialize(name = "unet")]
impl BackboneConfig for UNetConfig {
    fn build(
        &self,
        _spec: &BackboneSpec,
        _params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        Err(ComponentError::not_implemented("backbone `unet`"))
    }
}

register_component!(
    backbone,
    "unet",
    UNetConfig,
    "U-Net encoder-decoder with skip connections (DeepReg UNet)"
);

/// `local`: DeepReg's LocalNet, a U-Net whose output sums several decoder levels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalNetConfig {
    /// Channels at the first level.
    pub num_channel_initial: usize,
    /// Decoder levels summed into the output (e.g. `[0, 1, 2, 3]`).
    pub extract_levels: Vec<usize>,
    /// Number of levels (default: the largest extract level).
    #[serde(default)]
    pub depth: Option<usize>,
    /// Additive up-sampling (transposed conv + resized halves summed).
    #[serde(default = "default_true")]
    pub use_additive_upsampling: bool,
    /// Max pooling (true) or strided convolution (false) to down-sample.
    #[serde(default = "default_true")]
    pub pooling: bool,
    /// Concatenate (true) or add (false) skip connections.
    #[serde(default)]
    pub concat_skip: bool,
    /// Decoder kernel sizes (the encoder's are fixed: 7 then 3).
    #[serde(default = "default_kernel_sizes")]
    pub decode_kernel_sizes: KernelSizes,
    /// Encoder channels per level.
    #[serde(default)]
    pub encode_num_channels: Option<Vec<usize>>,
    /// Decoder channels per level.
    #[serde(default)]
    pub decode_num_channels: Option<Vec<usize>>,
    /// Down/up-sampling factor.
    #[serde(default = "default_strides")]
    pub strides: usize,
    /// Convolution padding.
    #[serde(default = "default_padding")]
    pub padding: String,
    /// Initialiser of the output layer.
    #[serde(default)]
    pub out_kernel_initializer: Option<String>,
    /// Activation of the output layer.
    #[serde(default)]
    pub out_activation: Option<String>,
    /// Output channels.
    #[serde(default)]
    pub out_channels: Option<usize>,
    /// B-spline control points instead of a dense output.
    #[serde(default)]
    pub control_points: Option<ControlPoints>,
}

#[typetag::serialize(name = "local")]
impl BackboneConfig for LocalNetConfig {
    fn build(
        &self,
        _spec: &BackboneSpec,
        _params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        Err(ComponentError::not_implemented("backbone `local`"))
    }
}

register_component!(
    backbone,
    "local",
    LocalNetConfig,
    "LocalNet: multi-level dense field from summed decoder levels (DeepReg LocalNet)"
);

/// `global`: DeepReg's GlobalNet, an encoder and a dense head predicting an affine transform
/// (initialised to identity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GlobalNetConfig {
    /// Channels at the first level.
    pub num_channel_initial: usize,
    /// Number of down-sampling levels; required unless `extract_levels` is given.
    #[serde(default)]
    pub depth: Option<usize>,
    /// Deprecated: `depth` defaults to its maximum.
    #[serde(default)]
    pub extract_levels: Option<Vec<usize>>,
    /// Max pooling (true) or strided convolution (false) to down-sample.
    #[serde(default = "default_true")]
    pub pooling: bool,
    /// Encoder kernel sizes.
    #[serde(default = "default_kernel_sizes")]
    pub encode_kernel_sizes: KernelSizes,
    /// Encoder channels per level.
    #[serde(default)]
    pub encode_num_channels: Option<Vec<usize>>,
    /// Down-sampling factor.
    #[serde(default = "default_strides")]
    pub strides: usize,
    /// Convolution padding.
    #[serde(default = "default_padding")]
    pub padding: String,
}

#[typetag::serialize(name = "global")]
impl BackboneConfig for GlobalNetConfig {
    fn build(
        &self,
        _spec: &BackboneSpec,
        _params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        Err(ComponentError::not_implemented("backbone `global`"))
    }
}

register_component!(
    backbone,
    "global",
    GlobalNetConfig,
    "GlobalNet: encoder + dense head predicting an affine transform (DeepReg GlobalNet)"
);
