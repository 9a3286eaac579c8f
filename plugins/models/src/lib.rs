//! Built-in registration methods and backbones, registered under DeepReg's names.
//!
//! Methods (`train.method`): `ddf`, `dvf`, `conditional`. Backbones (`train.backbone.name`):
//! `unet`, `local`, `global`, with DeepReg's keys and defaults, and `vxm_unet`, VoxelMorph's
//! U-Net with MONAI's keys and defaults.

mod backbones;
mod forward;
mod methods;
mod nets;
mod nn;
mod vxm_net;

pub use backbones::{
    ControlPoints, GlobalNetConfig, KernelSizes, LocalNetConfig, UNetConfig, VxmUNetConfig,
};
pub use forward::backbone_input;
pub use methods::{ConditionalMethod, DdfMethod, DvfMethod};
