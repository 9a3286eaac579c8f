//! The training engine: a resolved [`Config`](crate::config::Config) turned into a model,
//! trained on its `train` split, and evaluated on a held-out split.
//!
//! Training writes the resolved configuration, a [`checkpoint`] every `save_period` epochs
//! and at the end (weights, optimiser state, progress), and the final weights; it resumes
//! exactly from a checkpoint.

pub mod checkpoint;
mod evaluate;
mod model;
mod train;

pub use evaluate::{evaluate, evaluate_each, EvaluatedPair, Evaluation, PairMetrics, PairTensors};
pub use model::Model;
pub use train::{train, EpochLog, TrainOptions, TrainSummary};

use crate::component::ComponentError;

/// Why training or evaluation stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A component could not be built or failed.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// A tensor computation failed.
    #[error("{context}: {source}")]
    Tensor {
        /// What was being computed.
        context: String,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
    /// The configuration cannot be trained or evaluated as it is.
    #[error("{0}")]
    Config(String),
    /// A loss became NaN or infinite.
    #[error("the loss became {value} at epoch {epoch}, step {step} (term `{term}`); the last weights were kept")]
    NonFinite {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// Which loss term.
        term: String,
        /// The value.
        value: f64,
    },
    /// Writing outputs failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        message: String,
    },
}

/// Wraps a candle error with what was being computed.
pub(crate) fn tensor_error(
    context: impl Into<String>,
) -> impl FnOnce(candle_core::Error) -> EngineError {
    let context = context.into();
    move |source| EngineError::Tensor { context, source }
}
