//! `vxm_unet`: VoxelMorph's U-Net, with the keys and defaults of MONAI's `VoxelMorphUNet`
//! (`monai/networks/nets/voxelmorph.py`) and VoxelMorph's flow-layer initialisation.

use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

use crate::vxm_net::{VxmNet, VxmPlan};

/// `vxm_unet`: VoxelMorph's U-Net (max pooling down, nearest ×2 up, concatenated skips,
/// LeakyReLU(0.2)), then a few convolutions and a flow layer to `spatial_dims` channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VxmUNetConfig {
    /// Channels of the U-Net as MONAI's `channels`: pairs `(a_i, b_i)`, one per level `i`
    /// from the top. `a_i` is the output of the encoder convolution at level `i`; `b_i` the
    /// output of the block below level `i` (the bottom for the last pair), which is
    /// concatenated with `a_i`. There are as many max-pool levels as pairs.
    pub channels: Vec<usize>,
    /// Output channels of the U-Net (of its top decoder convolution).
    pub unet_out_channels: usize,
    /// Channels of the convolutions between the U-Net and the flow layer.
    pub final_conv_channels: Vec<usize>,
    /// Kernel size of every encoder, bottom and final convolution (odd).
    pub kernel_size: usize,
    /// Kernel size of the decoder convolutions (odd).
    pub up_kernel_size: usize,
    /// Max pooling (true) or a stride-2 convolution (false) to down-sample.
    pub use_maxpool: bool,
    /// Whether the convolutions have a bias.
    pub bias: bool,
}

impl Default for VxmUNetConfig {
    /// VoxelMorph's default network (`enc_nf = [16, 32, 32, 32]`, `dec_nf = [32, 32, 32, 32,
    /// 32, 16, 16]`) in MONAI's keys.
    fn default() -> Self {
        Self {
            channels: vec![16, 32, 32, 32, 32, 32, 32, 32],
            unet_out_channels: 32,
            final_conv_channels: vec![16, 16],
            kernel_size: 3,
            up_kernel_size: 3,
            use_maxpool: true,
            bias: true,
        }
    }
}

#[typetag::serialize(name = "vxm_unet")]
impl BackboneConfig for VxmUNetConfig {
    fn build(
        &self,
        spec: &BackboneSpec,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        const NAME: &str = "backbone `vxm_unet`";
        let plan = self
            .plan(spec)
            .map_err(|m| ComponentError::invalid(NAME, m))?;
        let net = VxmNet::build(NAME, plan, &params)
            .map_err(|e| ComponentError::tensor(format!("building the weights of {NAME}"), e))?;
        Ok(Box::new(net))
    }
}

register_component!(
    backbone,
    "vxm_unet",
    VxmUNetConfig,
    "VoxelMorph U-Net: dense DDF or velocity field (MONAI VoxelMorphUNet)"
);

impl VxmUNetConfig {
    /// Checks the config against `spec`; the messages say what would work.
    fn plan(&self, spec: &BackboneSpec) -> Result<VxmPlan, String> {
        let ndim = super::check_spec(spec)?;
        if spec.out_channels != ndim {
            return Err(format!(
                "vxm_unet predicts a displacement or velocity field ({ndim} channels), but the \
                 method asks for {} channels; use method ddf or dvf",
                spec.out_channels
            ));
        }
        let c = &self.channels;
        if c.len() < 2 || !c.len().is_multiple_of(2) {
            return Err(format!(
                "channels must list pairs (encoder, below) of channel counts, one pair per \
                 level (at least one pair), got {} values ({c:?}); e.g. [16, 32, 32, 32, 32, \
                 32, 32, 32]",
                c.len()
            ));
        }
        if c.contains(&0) || self.final_conv_channels.contains(&0) || self.unet_out_channels == 0 {
            return Err(format!(
                "channel counts must be positive, got channels {c:?}, unet_out_channels {}, \
                 final_conv_channels {:?}",
                self.unet_out_channels, self.final_conv_channels
            ));
        }
        for (key, k) in [
            ("kernel_size", self.kernel_size),
            ("up_kernel_size", self.up_kernel_size),
        ] {
            if k.is_multiple_of(2) {
                return Err(format!(
                    "{key} must be odd (the convolutions keep the size with padding {key} / 2 \
                     on both sides), got {k}; e.g. 3"
                ));
            }
        }
        let levels = c.len() / 2;
        let factor = u32::try_from(levels)
            .ok()
            .and_then(|l| 2usize.checked_pow(l))
            .ok_or_else(|| format!("{levels} channel pairs are too many levels"))?;
        if spec
            .image_size
            .iter()
            .any(|&s| s == 0 || !s.is_multiple_of(factor))
        {
            let fitting: Vec<usize> = spec
                .image_size
                .iter()
                .map(|&s| s.div_ceil(factor).max(1) * factor)
                .collect();
            return Err(format!(
                "image size {:?} must be divisible by 2^{levels} = {factor} on every axis \
                 ({levels} channel pairs down-sample {levels} times by 2 and up-sample back); \
                 use an image shape such as {fitting:?} or fewer channel pairs",
                spec.image_size
            ));
        }
        Ok(VxmPlan {
            ndim,
            image_size: spec.image_size.clone(),
            in_channels: spec.in_channels,
            channels: c.clone(),
            unet_out_channels: self.unet_out_channels,
            final_conv_channels: self.final_conv_channels.clone(),
            kernel_size: self.kernel_size,
            up_kernel_size: self.up_kernel_size,
            use_maxpool: self.use_maxpool,
            bias: self.bias,
        })
    }
}

#[cfg(test)]
mod tests;
