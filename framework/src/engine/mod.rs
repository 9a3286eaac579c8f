//! The training engine: a resolved [`Config`](crate::config::Config) turned into a model,
//! trained on its `train` split, and evaluated on a held-out split.
//!
//! Training writes the resolved configuration, a [`checkpoint`] every `save_period` epochs
//! and at the end (weights, optimiser state, progress), and the final weights; it resumes
//! exactly from a checkpoint.

mod batch_metrics;
mod check;
pub mod checkpoint;
mod collapse;
mod data_folders;
mod evaluate;
mod finite;
mod gradients;
mod hyper_groups;
mod logs;
mod losses;
mod model;
mod params;
mod pictures;
mod register;
mod run_dir;
mod step;
mod train;
mod validate;

pub use check::check;
pub use data_folders::check_data_folders;
pub use evaluate::{evaluate, evaluate_each, EvaluatedPair, Evaluation, PairMetrics, PairTensors};
pub use logs::{EpochLog, SplitLog};
pub use model::Model;
pub use params::{under_prefix, InitFrom, VariablesConfig};
pub use pictures::Picture;
pub use register::{register, Registration, Transform};
pub use run_dir::LOCK_FILE;
pub use step::{NonFinite, StepError, StepOutcome, Trainer};
pub use train::{open_split, train, TrainObserver, TrainOptions, TrainStart, TrainSummary};

use crate::component::ComponentError;

/// Why training or evaluation stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A component could not be built or failed.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// A part of the configuration could not be built; the component's error is the cause.
    #[error("{what}: {source}")]
    Build {
        /// What was being built (`image loss`, `the parameter source`, …).
        what: String,
        /// The component's error.
        #[source]
        source: Box<ComponentError>,
    },
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
    /// A NaN or an infinity appeared in the network's output, a loss term or a gradient.
    #[error("{place} became {value} at epoch {epoch}, step {step}; training stopped and the checkpoints already written were kept")]
    NonFinite {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// Where it first appeared: `the network's output `ddf``, `loss term `image/lncc``,
        /// `the gradient of weight `…``.
        place: String,
        /// The value.
        value: f64,
    },
    /// Training was asked to stop (Ctrl-C) and stopped after a step.
    #[error("{}", interrupted_message(*epoch, *step, checkpoint.as_deref()))]
    Interrupted {
        /// 1-based epoch.
        epoch: usize,
        /// The last step taken in that epoch.
        step: usize,
        /// The checkpoint written (none when training has no run folder).
        checkpoint: Option<std::path::PathBuf>,
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

fn interrupted_message(epoch: usize, step: usize, checkpoint: Option<&std::path::Path>) -> String {
    match checkpoint {
        Some(path) => format!(
            "interrupted after step {step} of epoch {epoch}; saved {} (resume with --ckpt-path {})",
            path.display(),
            path.display()
        ),
        None => format!("interrupted after step {step} of epoch {epoch}"),
    }
}

/// Wraps a candle error with what was being computed.
pub(crate) fn tensor_error(
    context: impl Into<String>,
) -> impl FnOnce(candle_core::Error) -> EngineError {
    let context = context.into();
    move |source| EngineError::Tensor { context, source }
}
