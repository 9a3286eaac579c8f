//! Optimisers: update trainable variables from their gradients.

use std::fmt::Debug;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::ComponentError;

/// The YAML config of an optimiser (`train.optimizer`), selected by `name` (case-insensitive:
/// `Adam` and `adam` are the same).
#[typetag::serialize(tag = "name")]
pub trait OptimizerConfig: Debug + Send + Sync {
    /// The base learning rate.
    fn learning_rate(&self) -> f64;

    /// Builds the optimiser over `vars`, in that order.
    fn build(&self, vars: Vec<Var>) -> Result<Box<dyn Optimizer>, ComponentError>;
}

/// The state an optimiser needs to resume exactly: named tensors (moments, …) and the step
/// count.
#[derive(Clone, Debug, Default)]
pub struct OptimizerState {
    /// Number of steps taken.
    pub step: u64,
    /// Named state tensors, e.g. `m.3` for the first moment of variable 3.
    pub tensors: Vec<(String, Tensor)>,
}

/// A built optimiser.
pub trait Optimizer: Send {
    /// Applies one update from `grads` (variables without a gradient are left unchanged).
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()>;

    /// The state to save in a checkpoint. Its tensors may share storage with buffers that
    /// the next `step` updates in place: save (or copy) them before stepping again.
    fn state(&self) -> OptimizerState;

    /// Restores a saved state; an error if it does not fit these variables.
    fn load_state(&mut self, state: OptimizerState) -> Result<(), ComponentError>;
}
