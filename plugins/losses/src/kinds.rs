//! The shapes of loss this crate implements, and their adapters to the framework's one
//! [`Loss`] trait: an image or label loss compares the fixed (target) and the warped
//! (prediction) tensor, a regulariser penalises one field.

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::prelude::*;

/// A loss between two images `(N, 1, *spatial)` → `(N,)`.
pub(crate) trait ImageLoss: Send + Sync {
    /// The loss between the fixed image and the warped moving image.
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor>;

    /// The loss over the voxels `mask` `(N, 1, *spatial)` weights, for losses that have a
    /// masked form; `None` for those that do not.
    fn masked(
        &self,
        fixed: &Tensor,
        warped: &Tensor,
        mask: &Tensor,
    ) -> Option<candle::Result<Tensor>> {
        let _ = (fixed, warped, mask);
        None
    }
}

/// A loss between two labels `(N, L, *spatial)` → `(N,)`, averaged over the labels.
pub(crate) trait LabelLoss: Send + Sync {
    /// The loss between the fixed label and the warped moving label.
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor>;
}

/// A penalty of one field `(N, ndim, *spatial)` → `(N,)`.
pub(crate) trait Regularization: Send + Sync {
    /// The penalty of `ddf`.
    fn loss(&self, ddf: &Tensor) -> candle::Result<Tensor>;
}

/// An [`ImageLoss`] as a [`Loss`]: `loss(prediction, target) = image_loss(target, prediction)`.
pub(crate) struct Images<L>(pub(crate) L, pub(crate) &'static str);

impl<L: ImageLoss> Loss for Images<L> {
    fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle::Result<Tensor> {
        self.0.loss(required_target(self.1, target)?, prediction)
    }

    fn masked_loss(
        &self,
        prediction: &Tensor,
        target: Option<&Tensor>,
        mask: &Tensor,
    ) -> candle::Result<Tensor> {
        let target = required_target(self.1, target)?;
        self.0.masked(target, prediction, mask).unwrap_or_else(|| {
            candle::bail!(
                "{} has no masked form: `mask` works with the image losses gncc and ssd",
                self.1
            )
        })
    }
}

/// A [`LabelLoss`] as a [`Loss`]: `loss(prediction, target) = label_loss(target, prediction)`.
pub(crate) struct Labels<L>(pub(crate) L, pub(crate) &'static str);

impl<L: LabelLoss> Loss for Labels<L> {
    fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle::Result<Tensor> {
        self.0.loss(required_target(self.1, target)?, prediction)
    }
}

/// A [`Regularization`] as a [`Loss`] of one input; a second input is an error.
pub(crate) struct Penalty<L>(pub(crate) L, pub(crate) &'static str);

impl<L: Regularization> Loss for Penalty<L> {
    fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle::Result<Tensor> {
        if target.is_some() {
            candle::bail!("{} penalises one field: give the term one input", self.1);
        }
        self.0.loss(prediction)
    }
}
