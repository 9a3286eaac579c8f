//! voxreg: deep-learning image registration.
//!
//! This facade re-exports the framework and links every built-in plugin crate, so their
//! components are registered in any program that depends on `voxreg`.

pub use voxreg_framework as framework;
pub use voxreg_framework::*;

// Referencing each built-in plugin crate keeps the linker from dropping it, and with it
// the components it registers.
pub use voxreg_data as data;
pub use voxreg_losses as losses;
pub use voxreg_models as models;
pub use voxreg_optim as optim;
