//! Losses: image dissimilarity, label overlap and deformation regularisation.
//!
//! Every loss returns one value per batch element, shape `(N,)`, to be **minimised**:
//! similarity measures (LNCC, Dice, …) are negated, as DeepReg does. The engine multiplies each
//! by the term's `weight` and averages over the batch.

use std::fmt::Debug;

use candle_core::Tensor;

use super::ComponentError;

/// The YAML config of an image loss (`train.loss.image`), selected by `name`. The `weight`
/// key belongs to the loss term, not to the component.
#[typetag::serialize(tag = "name")]
pub trait ImageLossConfig: Debug + Send + Sync {
    /// Builds the loss for images with `spatial_dims` (2 or 3) spatial axes.
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn ImageLoss>, ComponentError>;
}

/// A built image loss.
pub trait ImageLoss: Send + Sync {
    /// The loss between the fixed image and the warped moving image.
    ///
    /// # Shapes
    /// `fixed`, `warped`: `(N, 1, *spatial)` → `(N,)`.
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle_core::Result<Tensor>;
}

/// The YAML config of a label loss (`train.loss.label`), selected by `name`.
#[typetag::serialize(tag = "name")]
pub trait LabelLossConfig: Debug + Send + Sync {
    /// Builds the loss for labels with `spatial_dims` (2 or 3) spatial axes.
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn LabelLoss>, ComponentError>;
}

/// A built label loss.
pub trait LabelLoss: Send + Sync {
    /// The loss between the fixed label and the warped moving label, values in `[0, 1]`.
    ///
    /// # Shapes
    /// `fixed`, `warped`: `(N, L, *spatial)` → `(N,)` (averaged over the `L` labels).
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle_core::Result<Tensor>;
}

/// The YAML config of a deformation regulariser (`train.loss.regularization`).
#[typetag::serialize(tag = "name")]
pub trait RegularizationConfig: Debug + Send + Sync {
    /// Builds the regulariser for fields with `spatial_dims` (2 or 3) spatial axes.
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Regularization>, ComponentError>;
}

/// A built regulariser.
pub trait Regularization: Send + Sync {
    /// The penalty of a dense displacement field.
    ///
    /// # Shapes
    /// `ddf`: `(N, ndim, *spatial)` → `(N,)`.
    fn loss(&self, ddf: &Tensor) -> candle_core::Result<Tensor>;
}
