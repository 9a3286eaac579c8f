//! voxreg: deep-learning image registration.
//!
//! This facade re-exports the framework and links every built-in plugin crate, so their
//! components are registered in any program that depends on `voxreg`.
//!
//! The two examples below are the framework's own macro examples, kept here because a
//! `dylib` crate (the framework is one, so that every plugin shares its single copy) cannot
//! run doctests; here they run with the test suite.
//!
//! # Registering a component
//!
//! A component is a config type (serde, selected by `name` in YAML) that implements its
//! category's config trait and is registered with [`register_component!`]. Any linked crate
//! may do this; the registry then finds it by name, with its defaults:
//!
//! ```
//! use voxreg::candle::{self, Tensor};
//! use voxreg::prelude::*;
//! use voxreg::serde::{Deserialize, Serialize};
//! use voxreg::typetag;
//!
//! /// `l1`: the mean absolute difference `mean |p − t|` per sample.
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! #[serde(crate = "voxreg::serde")]
//! struct L1Config {}
//!
//! #[typetag::serialize(name = "l1")]
//! impl ImageLossConfig for L1Config {
//!     fn build(&self, _spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
//!         Ok(Box::new(L1))
//!     }
//! }
//!
//! struct L1;
//!
//! impl Loss for L1 {
//!     fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle::Result<Tensor> {
//!         let target = required_target("image_loss `l1`", target)?;
//!         let batch = prediction.dim(0)?;
//!         (prediction - target)?.abs()?.reshape((batch, ()))?.mean(1)
//!     }
//! }
//!
//! voxreg::register_component!(image_loss, "l1", L1Config, "Mean absolute difference");
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::linked()?;
//! assert!(registry.names(Category::ImageLoss).any(|name| name == "l1"));
//! let config = registry.decode::<dyn ImageLossConfig>(
//!     "l1",
//!     voxreg::config::ConfigValue::Mapping(Default::default()),
//! )?;
//! let prediction = Tensor::new(&[[[1f32, 2.0]], [[0.0, 0.0]]], &Device::Cpu)?;
//! let target = Tensor::new(&[[[0f32, 0.0]], [[0.0, 4.0]]], &Device::Cpu)?;
//! let values = config.build(1)?.loss(&prediction, Some(&target))?;
//! assert_eq!(values.to_vec1::<f32>()?, [1.5, 2.0]);
//! # Ok(())
//! # }
//! ```
//!
//! # Declaring a dynamic plugin
//!
//! The crate root of a plugin library (`crate-type = ["dylib"]`, built with
//! `voxreg plugins build`) holds one [`declare_plugin!`]; it exports the declaration voxreg
//! checks (ABI version, build fingerprint) before it runs any of the library's code, and
//! registers the components the library submitted:
//!
//! ```
//! voxreg::declare_plugin!();
//!
//! # fn main() {
//! // What the host reads first when it opens the library:
//! let declaration = unsafe { &*voxreg_plugin_declaration() };
//! assert_eq!(declaration.abi_version, voxreg::plugin::abi::ABI_VERSION);
//! # }
//! ```

pub use voxreg_framework as framework;
pub use voxreg_framework::*;

// Referencing each built-in plugin crate keeps the linker from dropping it, and with it
// the components it registers.
pub use voxreg_data as data;
pub use voxreg_losses as losses;
pub use voxreg_models as models;
pub use voxreg_optim as optim;

#[cfg(test)]
mod hypermorph_batches;
pub mod tensorboard;
