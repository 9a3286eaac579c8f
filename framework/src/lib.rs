//! voxreg framework: the core every voxreg component plugs into.
//!
//! * [`component`]: the traits a backbone, loss, optimiser, data loader, file loader or
//!   augmentation implements;
//! * [`registry`]: the one lookup path from a config name to a component, fed by
//!   [`register_component!`] (static) and by [`plugin`]s (dynamic);
//! * [`config`]: DeepReg's YAML configuration, merged from several files and resolved
//!   through the registry;
//! * [`plugin`]: the ABI and loader for plugin libraries;
//! * [`data`]: the pipeline from a data loader to batches of tensors;
//! * [`engine`]: training and evaluating a configuration's model;
//! * [`ops`]: spatial tensor ops for 2D and 3D registration;
//! * [`metrics`]: evaluation metrics (Dice, TRE, SSD, Jacobian determinant statistics);
//! * [`allocator`]: the memory-allocation policy of training processes.
//!
//! The framework is built as a shared Rust library (`dylib`) so the `voxreg` binary and
//! every dynamic plugin share one copy of it and of candle; plugins use candle through the
//! re-exports below.

pub use candle_core as candle;
pub use candle_nn;
#[doc(hidden)]
pub use inventory;
pub use serde;
pub use typetag;

pub mod allocator;
pub mod component;
pub mod config;
pub mod data;
pub mod engine;
pub mod files;
pub mod memory;
pub mod metrics;
pub mod ops;
pub mod plugin;
pub mod registry;
mod rng;
mod suggest;

/// The items a component crate usually needs.
pub mod prelude {
    pub use crate::component::*;
    pub use crate::config::{Component, Section, Weight};
    pub use crate::registry::{Category, Registry};
    pub use crate::{component_registration, declare_plugin, register_component};
    pub use candle_core::{DType, Device, Module, Tensor, Var, D};
    pub use candle_nn::VarBuilder;
}
