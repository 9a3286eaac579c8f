//! Built-in registration methods and backbones, registered under DeepReg's names.
//!
//! Methods (`train.method`): `ddf`, `dvf`, `conditional`, and the methods made of methods,
//! `cascade` and `inverse`. Backbones (`train.backbone.name`):
//! `unet`, `local`, `global`, with DeepReg's keys and defaults, `vxm_unet`, VoxelMorph's
//! U-Net with MONAI's keys and defaults, and `dlir_affine` and `dlir_bspline`, DLIR's affine
//! ConvNet and deformable B-spline stage with TorchIR's keys and defaults.

mod affine_head;
mod atlalign_net;
mod backbones;
mod composite;
mod dlir_bspline_net;
mod dlir_net;
mod forward;
mod hypernet;
mod methods;
mod nets;
pub mod nn;
mod vxm_net;

pub use backbones::{
    AtlalignGlobalConfig, AtlalignLocalConfig, ControlPoints, DlirAffineConfig, DlirBsplineConfig,
    Filters, GlobalNetConfig, GridSpacing, KernelSizes, LocalNetConfig, Parametrisation,
    UNetConfig, VxmUNetConfig,
};
pub use composite::{stage_prefix, CascadeMethod, InverseMethod};
pub use forward::{backbone_input, warp_moving};
pub use hypernet::{matches_pattern, HypernetConfig};
pub use methods::{ConditionalMethod, DdfMethod, DvfMethod};
