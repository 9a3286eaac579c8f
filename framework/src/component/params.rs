//! Parameter sources: where a model's weights come from.
//!
//! A source hands the method a [`VarBuilder`] to build its networks from, and tells the
//! optimiser which variables to update. The default, `variables`, draws seeded variables and
//! can freeze name prefixes and initialise prefixes from another run's checkpoint. A dynamic
//! source (a hypernetwork) computes every weight per step from the batch's hyperparameters:
//! it answers [`ParamSource::for_batch`], and the model rebuilds its method from those
//! tensors for that step, so no layer changes.

use std::fmt::Debug;

use candle_core::{DType, Device, Var};
use candle_nn::VarBuilder;

use super::{Batch, ComponentError};

/// What a parameter source is built for.
#[derive(Clone, Debug)]
pub struct ParamContext {
    /// The seed new variables are drawn from (each from its name and this seed).
    pub seed: u64,
    /// Where the weights live.
    pub device: Device,
    /// The weights' type.
    pub dtype: DType,
}

/// The YAML config of a parameter source (`train.parameters`), selected by `name`.
#[typetag::serialize(tag = "name")]
pub trait ParamSourceConfig: Debug + Send + Sync {
    /// Builds the source (no weights exist yet: the method creates them through
    /// [`ParamSource::builder`]).
    fn build(&self, context: &ParamContext) -> Result<Box<dyn ParamSource>, ComponentError>;

    /// The names of the step's hyperparameters the source reads (a hypernetwork's inputs);
    /// each must be declared under `train.hyperparameters`. None by default.
    fn hyperparameters(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A built parameter source.
pub trait ParamSource: Send + Sync {
    /// The builder the method's networks take their weights from when the model is built.
    /// Asking it for a weight creates the variable (a static source) or records the shape
    /// the source must supply (a dynamic one).
    fn builder(&self) -> VarBuilder<'static>;

    /// Called once the method is built, every weight declared: a static source initialises
    /// from checkpoints and checks its freeze prefixes here. Errors name the weight, prefix
    /// or file that does not fit.
    fn finish(&mut self) -> Result<(), ComponentError>;

    /// The weights of a step computed from `batch` (its hyperparameters), or `None` for a
    /// static source whose networks keep the weights they were built with.
    fn for_batch(&self, _batch: &Batch) -> candle_core::Result<Option<VarBuilder<'static>>> {
        Ok(None)
    }

    /// Whether the weights depend on each sample's hyperparameters. The model then splits
    /// a batch into groups of samples with equal hyperparameters and calls
    /// [`ParamSource::for_batch`] once per group (a group's samples share their weights).
    fn per_sample(&self) -> bool {
        false
    }

    /// Every variable the source holds, sorted by name: what a checkpoint saves.
    fn variables(&self) -> Vec<(String, Var)>;

    /// The variables the optimiser updates, sorted by name (so an optimiser's per-variable
    /// state lines up in every process).
    fn trainable(&self) -> Vec<(String, Var)>;

    /// The names of the variables held fixed during training, sorted.
    fn frozen(&self) -> Vec<String> {
        Vec::new()
    }
}
