//! Errors raised while building or running a component.

use std::path::PathBuf;

/// Why a component could not be built or could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentError {
    /// The component's config cannot work as given (e.g. a depth too large for the image).
    #[error("{component}: {message}")]
    InvalidConfig {
        /// `category name`, e.g. "backbone `unet`".
        component: String,
        /// What is wrong and what would work.
        message: String,
    },
    /// A tensor operation failed (usually a shape mismatch).
    #[error("{context}: {source}")]
    Tensor {
        /// What was being computed.
        context: String,
        /// The underlying candle error.
        #[source]
        source: candle_core::Error,
    },
    /// A data file could not be read or is not valid.
    #[error("{path}: {message}")]
    Data {
        /// The offending file or directory.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl ComponentError {
    /// A config error for `component` (e.g. "backbone `unet`").
    pub fn invalid(component: impl Into<String>, message: impl Into<String>) -> Self {
        ComponentError::InvalidConfig {
            component: component.into(),
            message: message.into(),
        }
    }

    /// Wraps a candle error with what was being computed.
    pub fn tensor(context: impl Into<String>, source: candle_core::Error) -> Self {
        ComponentError::Tensor {
            context: context.into(),
            source,
        }
    }
}
