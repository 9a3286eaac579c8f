//! Backbone configs with DeepReg's keys and defaults (`deepreg/model/backbone/*.py`).

use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

use crate::nets::{Bottom, EncoderDecoder, Head, Plan, Upsampling};
use crate::nn::{Activation, KernelInit};

mod atlalign;
mod dlir_affine;
mod dlir_bspline;
mod vxm_unet;

pub use atlalign::{AtlalignGlobalConfig, AtlalignLocalConfig};
pub use dlir_affine::{DlirAffineConfig, Filters, Parametrisation};
pub use dlir_bspline::{DlirBsplineConfig, GridSpacing};
pub use vxm_unet::VxmUNetConfig;

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
    /// Initialiser of the output layer (default from the method as in DeepReg: `zeros` for
    /// fields, `glorot_uniform` for the conditional method's label).
    #[serde(default)]
    pub out_kernel_initializer: Option<String>,
    /// Activation of the output layer (default from the method as in DeepReg: none for
    /// fields, `sigmoid` for the conditional method's label).
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
        spec: &BackboneSpec,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        const NAME: &str = "backbone `unet`";
        let plan = self
            .plan(spec)
            .map_err(|m| ComponentError::invalid(NAME, m))?;
        build_net(NAME, plan, &params)
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
    /// Initialiser of the output layer (default from the method, as for `unet`).
    #[serde(default)]
    pub out_kernel_initializer: Option<String>,
    /// Activation of the output layer (default from the method, as for `unet`).
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
        spec: &BackboneSpec,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        const NAME: &str = "backbone `local`";
        let plan = self
            .plan(spec)
            .map_err(|m| ComponentError::invalid(NAME, m))?;
        build_net(NAME, plan, &params)
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
    fn is_affine(&self) -> bool {
        true
    }

    fn build(
        &self,
        spec: &BackboneSpec,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        const NAME: &str = "backbone `global`";
        let plan = self
            .plan(spec)
            .map_err(|m| ComponentError::invalid(NAME, m))?;
        build_net(NAME, plan, &params)
    }
}

register_component!(
    backbone,
    "global",
    GlobalNetConfig,
    "GlobalNet: encoder + dense head predicting an affine transform (DeepReg GlobalNet)"
);

impl UNetConfig {
    /// Checks the config against `spec` and resolves every default.
    fn plan(&self, spec: &BackboneSpec) -> Result<Plan, String> {
        check_common(spec, self.strides, &self.padding)?;
        let depth = self.depth;
        let encode_channels = channels(self.num_channel_initial, depth, &self.encode_num_channels)?;
        let decode_channels = match &self.decode_num_channels {
            None => encode_channels.clone(),
            Some(list) => channel_list("decode_num_channels", list, depth)?,
        };
        let plan = Plan {
            ndim: spec.spatial_dims,
            image_size: spec.image_size.clone(),
            in_channels: spec.in_channels,
            depth,
            pooling: self.pooling,
            concat_skip: self.concat_skip,
            encode_kernels: kernels("encode_kernel_sizes", &self.encode_kernel_sizes, depth + 1)?,
            decode_kernels: kernels("decode_kernel_sizes", &self.decode_kernel_sizes, depth)?,
            encode_channels,
            decode_channels,
            strides: self.strides,
            bottom: Bottom::ConvResidual,
            upsampling: Upsampling::Deconv,
            control_points: control_spacing(self.control_points.as_ref(), spec.spatial_dims)?,
            head: extract_head(
                spec,
                &self.extract_levels,
                depth,
                self.out_channels,
                self.out_kernel_initializer.as_deref(),
                self.out_activation.as_deref(),
            )?,
        };
        plan.check_decoder()?;
        Ok(plan)
    }
}

impl LocalNetConfig {
    /// Checks the config against `spec` and resolves every default.
    fn plan(&self, spec: &BackboneSpec) -> Result<Plan, String> {
        let Some(&max_level) = self.extract_levels.iter().max() else {
            return Err(EMPTY_LEVELS.to_owned());
        };
        let depth = self.depth.unwrap_or(max_level);
        check_common(spec, self.strides, &self.padding)?;
        let encode_channels = channels(self.num_channel_initial, depth, &self.encode_num_channels)?;
        let decode_channels = match &self.decode_num_channels {
            None => encode_channels.clone(),
            Some(list) => channel_list("decode_num_channels", list, depth)?,
        };
        let mut encode_kernels = vec![3; depth + 1];
        encode_kernels[0] = 7;
        let plan = Plan {
            ndim: spec.spatial_dims,
            image_size: spec.image_size.clone(),
            in_channels: spec.in_channels,
            depth,
            pooling: self.pooling,
            concat_skip: self.concat_skip,
            encode_kernels,
            decode_kernels: kernels("decode_kernel_sizes", &self.decode_kernel_sizes, depth)?,
            encode_channels,
            decode_channels,
            strides: self.strides,
            bottom: Bottom::Conv,
            upsampling: if self.use_additive_upsampling {
                Upsampling::Additive
            } else {
                Upsampling::Deconv
            },
            control_points: control_spacing(self.control_points.as_ref(), spec.spatial_dims)?,
            head: extract_head(
                spec,
                &self.extract_levels,
                depth,
                self.out_channels,
                self.out_kernel_initializer.as_deref(),
                self.out_activation.as_deref(),
            )?,
        };
        plan.check_decoder()?;
        Ok(plan)
    }
}

impl GlobalNetConfig {
    /// Checks the config against `spec` and resolves every default.
    fn plan(&self, spec: &BackboneSpec) -> Result<Plan, String> {
        let depth = match (self.depth, &self.extract_levels) {
            (Some(depth), _) => depth,
            (None, Some(levels)) => match levels.iter().max() {
                Some(&max) => max,
                None => return Err(EMPTY_LEVELS.to_owned()),
            },
            (None, None) => {
                return Err(
                    "needs `depth` (the number of down-sampling levels, e.g. 4) or the \
                            deprecated `extract_levels` (depth = its maximum)"
                        .to_owned(),
                )
            }
        };
        check_common(spec, self.strides, &self.padding)?;
        let encode_channels = channels(self.num_channel_initial, depth, &self.encode_num_channels)?;
        let plan = Plan {
            ndim: spec.spatial_dims,
            image_size: spec.image_size.clone(),
            in_channels: spec.in_channels,
            depth,
            pooling: self.pooling,
            concat_skip: false,
            encode_kernels: kernels("encode_kernel_sizes", &self.encode_kernel_sizes, depth + 1)?,
            decode_kernels: vec![3; depth],
            decode_channels: encode_channels.clone(),
            encode_channels,
            strides: self.strides,
            bottom: Bottom::ConvResidual,
            upsampling: Upsampling::Deconv,
            control_points: None,
            head: Head::Affine,
        };
        Ok(plan)
    }
}

const EMPTY_LEVELS: &str =
    "extract_levels is empty; list at least one level in [0, depth], e.g. [0] or [0, 1, 2, 3]";

/// The checks of `spec` every backbone needs: 2 or 3 spatial axes, an image size with that
/// many axes, at least one input channel. Returns the number of spatial axes.
fn check_spec(spec: &BackboneSpec) -> Result<usize, String> {
    let ndim = spec.spatial_dims;
    if ndim != 2 && ndim != 3 {
        return Err(format!("spatial_dims must be 2 or 3, got {ndim}"));
    }
    if spec.image_size.len() != ndim {
        return Err(format!(
            "image size {:?} must have {ndim} axes (spatial_dims)",
            spec.image_size
        ));
    }
    if spec.in_channels == 0 {
        return Err("the input must have at least one channel".to_owned());
    }
    Ok(ndim)
}

/// Checks shared by every backbone. The depth is not bounded by the image size: as in
/// DeepReg (TensorFlow's `same` padding), level `d + 1` has `ceil(size_d / strides)` voxels per
/// axis, so a level that reaches one voxel stays at one voxel further down.
fn check_common(spec: &BackboneSpec, strides: usize, padding: &str) -> Result<(), String> {
    check_spec(spec)?;
    if strides < 2 {
        return Err(format!(
            "strides must be at least 2 (the down-sampling factor), got {strides}"
        ));
    }
    if !padding.eq_ignore_ascii_case("same") {
        return Err(format!(
            "padding `{padding}` is not supported: the skip connections need every level \
                 to keep its size; use padding: same"
        ));
    }
    Ok(())
}

/// The control-point spacing per axis, or `None` for a dense output.
fn control_spacing(
    control_points: Option<&ControlPoints>,
    ndim: usize,
) -> Result<Option<Vec<usize>>, String> {
    let spacing = match control_points {
        None | Some(ControlPoints::Flag(false)) => return Ok(None),
        Some(ControlPoints::Flag(true)) => {
            return Err(
                "control_points: true does not give a spacing; use a spacing in voxels \
                        (e.g. control_points: 4, or one value per axis) or false"
                    .to_owned(),
            )
        }
        Some(ControlPoints::Spacing(s)) => vec![*s; ndim],
        Some(ControlPoints::PerAxis(list)) => {
            if list.len() != ndim {
                return Err(format!(
                    "control_points {list:?} must have one spacing per axis ({ndim} values) or \
                     be one number"
                ));
            }
            list.clone()
        }
    };
    if spacing.contains(&0) {
        return Err(format!(
            "control_points spacing must be at least 1 voxel, got {spacing:?}"
        ));
    }
    Ok(Some(spacing))
}

/// The most channels a level may have: more would not fit in memory at any useful image
/// size (a 3×3×3 convolution between two such levels holds 1.8 GB of weights).
const MAX_CHANNELS: usize = 4096;

/// The encoder channels: the given list, or `num_channel_initial · 2^d`.
fn channels(
    initial: usize,
    depth: usize,
    given: &Option<Vec<usize>>,
) -> Result<Vec<usize>, String> {
    match given {
        Some(list) => channel_list("encode_num_channels", list, depth),
        None => {
            if initial == 0 {
                return Err("num_channel_initial must be at least 1, e.g. 16".to_owned());
            }
            let list: Option<Vec<usize>> = (0..=depth)
                .map(|d| {
                    u32::try_from(d)
                        .ok()
                        .and_then(|d| initial.checked_mul(1usize.checked_shl(d)?))
                        .filter(|&c| c <= MAX_CHANNELS)
                })
                .collect();
            list.ok_or_else(|| {
                format!(
                    "num_channel_initial {initial} doubles to more than {MAX_CHANNELS} channels by level {depth}; DeepReg's configs use 4 to 32"
                )
            })
        }
    }
}

fn channel_list(key: &str, list: &[usize], depth: usize) -> Result<Vec<usize>, String> {
    if list.len() != depth + 1 {
        return Err(format!(
            "{key} must list one channel count per level 0..=depth ({} values for depth \
             {depth}), got {} ({list:?})",
            depth + 1,
            list.len()
        ));
    }
    if list.contains(&0) {
        return Err(format!("{key} must be positive, got {list:?}"));
    }
    if list.iter().any(|&c| c > MAX_CHANNELS) {
        return Err(format!(
            "{key} must be at most {MAX_CHANNELS} per level, got {list:?}"
        ));
    }
    Ok(list.to_vec())
}

fn kernels(key: &str, sizes: &KernelSizes, count: usize) -> Result<Vec<usize>, String> {
    let list = match sizes {
        KernelSizes::Uniform(k) => vec![*k; count],
        KernelSizes::PerLevel(list) => {
            if list.len() != count {
                return Err(format!(
                    "{key} must be one size or a list of {count} sizes, got {} ({list:?})",
                    list.len()
                ));
            }
            list.clone()
        }
    };
    if list.contains(&0) {
        return Err(format!("{key} must be positive, got {list:?}"));
    }
    if list.iter().any(|&c| c > MAX_CHANNELS) {
        return Err(format!(
            "{key} must be at most {MAX_CHANNELS} per level, got {list:?}"
        ));
    }
    Ok(list)
}

fn extract_head(
    spec: &BackboneSpec,
    levels: &[usize],
    depth: usize,
    out_channels: Option<usize>,
    init: Option<&str>,
    activation: Option<&str>,
) -> Result<Head, String> {
    if levels.is_empty() {
        return Err(EMPTY_LEVELS.to_owned());
    }
    if let Some(&bad) = levels.iter().find(|&&l| l > depth) {
        return Err(format!(
            "extract level {bad} is outside [0, depth = {depth}]; use levels in 0..={depth} or \
             a depth of at least {bad}"
        ));
    }
    if let Some(c) = out_channels {
        if c != spec.out_channels {
            return Err(format!(
                "out_channels {c} disagrees with the {} channels the method needs; remove \
                 out_channels",
                spec.out_channels
            ));
        }
    }
    if spec.out_channels == 0 {
        return Err("the method asks for 0 output channels".to_owned());
    }
    // DeepReg's defaults come from the method's head: zeros and no activation for a field
    // (ddf, dvf); Glorot-uniform and sigmoid for a label probability (conditional).
    let conditional = spec.head == voxreg_framework::component::Head::Probability;
    let init = match init {
        None if conditional => KernelInit::GlorotUniform,
        None => KernelInit::Zeros,
        Some(name) => KernelInit::parse(name).ok_or_else(|| {
            format!(
                "out_kernel_initializer `{name}` is unknown; use one of {}",
                KernelInit::NAMES
            )
        })?,
    };
    let activation = match activation {
        None if conditional => Activation::Sigmoid,
        None => Activation::Linear,
        Some(name) => Activation::parse(name).ok_or_else(|| {
            format!(
                "out_activation `{name}` is unknown; use one of {}",
                Activation::NAMES
            )
        })?,
    };
    Ok(Head::Extract {
        levels: levels.to_vec(),
        out_channels: spec.out_channels,
        init,
        activation,
    })
}

/// Builds the network, wrapping weight errors.
fn build_net(
    name: &'static str,
    plan: Plan,
    params: &VarBuilder<'_>,
) -> Result<Box<dyn Backbone>, ComponentError> {
    let net = EncoderDecoder::build(name, plan, params)
        .map_err(|e| ComponentError::tensor(format!("building the weights of {name}"), e))?;
    Ok(Box::new(net))
}

#[cfg(test)]
mod tests;
