//! Built-in optimisers with Keras' class names, keyword arguments and update rules, as
//! DeepReg configs write them (`name: Adam`, `learning_rate: 1.0e-4`); names match
//! case-insensitively. Each keeps its state in tensors it can save and restore, so training
//! resumes exactly.

mod adam;
mod rmsprop;
mod sgd;
mod state;

pub use adam::AdamConfig;
pub use rmsprop::RmspropConfig;
pub use sgd::SgdConfig;

#[cfg(test)]
mod tests;
