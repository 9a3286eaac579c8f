//! Built-in registration methods and backbones, registered under DeepReg's names.
//!
//! Methods (`train.method`): `ddf`, `dvf`, `conditional`. Backbones (`train.backbone.name`):
//! `unet`, `local`, `global`, with DeepReg's keys and defaults.

mod backbones;
mod forward;
mod methods;
mod nets;
mod nn;

pub use backbones::{ControlPoints, GlobalNetConfig, KernelSizes, LocalNetConfig, UNetConfig};
pub use forward::backbone_input;
pub use methods::{ConditionalMethod, DdfMethod, DvfMethod};
