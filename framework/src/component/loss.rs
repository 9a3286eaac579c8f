//! Losses: one runtime trait, [`Loss`], for every section of `train.loss`.
//!
//! A loss term is a section (`image`, `label`, `regularization`, `field`), a weight, the
//! names of its inputs and a loss component. Each section has its registry category (so a
//! name such as `ssd` means the image loss under `image` and the label loss under `label`,
//! with their own keys) and default inputs (DeepReg's wiring):
//!
//! | section | category | default inputs (`[prediction, target]`) |
//! | --- | --- | --- |
//! | `image` | `image_loss` | `[pred_fixed_image, fixed_image]` |
//! | `label` | `label_loss` | `[pred_fixed_label, fixed_label]` |
//! | `regularization` | `regularization` | `[ddf]` |
//! | `field` | `field_loss` | `[ddf, true_ddf]` |
//!
//! Every loss returns one value per batch element, shape `(N,)`, to be **minimised**:
//! similarity measures (LNCC, Dice, …) are negated, as DeepReg does. The engine multiplies
//! each sample's value by the term's weight for that sample and averages over the batch.

use std::fmt::Debug;

use candle_core::Tensor;

use super::ComponentError;

/// A built loss of any section.
pub trait Loss: Send + Sync {
    /// The loss of `prediction` against `target` (two-input sections: image, label, field)
    /// or of `prediction` alone (one-input sections: regularization).
    ///
    /// # Shapes
    /// `prediction`, `target`: `(N, C, *spatial)` (as the section's inputs are) → `(N,)`.
    ///
    /// Errors: a missing target where one is needed, or shapes that do not fit.
    fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle_core::Result<Tensor>;

    /// The loss over the voxels `mask` weights (a term's `mask`, e.g. the field of view).
    /// The default refuses: a loss opts in by defining its masked form.
    ///
    /// # Shapes
    /// `prediction`, `target`: `(N, C, *spatial)`; `mask`: `(N, 1, *spatial)`, values in
    /// `[0, 1]` → `(N,)`.
    fn masked_loss(
        &self,
        prediction: &Tensor,
        target: Option<&Tensor>,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let _ = (prediction, target, mask);
        Err(candle_core::Error::Msg(
            "this loss has no masked form (`mask` works with the image losses gncc and ssd)"
                .to_owned(),
        ))
    }
}

/// The target of a two-input loss, or an error naming the loss.
pub fn required_target<'t>(
    loss: &str,
    target: Option<&'t Tensor>,
) -> candle_core::Result<&'t Tensor> {
    target.ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "{loss} compares two tensors: give the term two `inputs`"
        ))
    })
}

/// The YAML config of an image loss (`train.loss.image`), selected by `name`. The `weight`
/// and `inputs` keys belong to the loss term, not to the component.
#[typetag::serialize(tag = "name")]
pub trait ImageLossConfig: Debug + Send + Sync {
    /// Builds the loss for images with `spatial_dims` (2 or 3) spatial axes.
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError>;
}

/// The YAML config of a label loss (`train.loss.label`), selected by `name`; the inputs are
/// labels with values in `[0, 1]`, `(N, L, *spatial)`, and the loss averages over `L`.
#[typetag::serialize(tag = "name")]
pub trait LabelLossConfig: Debug + Send + Sync {
    /// Builds the loss for labels with `spatial_dims` (2 or 3) spatial axes.
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError>;
}

/// The YAML config of a deformation regulariser (`train.loss.regularization`): a penalty of
/// one field `(N, ndim, *spatial)`.
#[typetag::serialize(tag = "name")]
pub trait RegularizationConfig: Debug + Send + Sync {
    /// Builds the regulariser for fields with `spatial_dims` (2 or 3) spatial axes.
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError>;
}

/// The YAML config of a field loss (`train.loss.field`): a predicted field against another
/// field (a ground truth, or the inverse of the prediction), both `(N, ndim, *spatial)`.
#[typetag::serialize(tag = "name")]
pub trait FieldLossConfig: Debug + Send + Sync {
    /// Builds the loss for fields with `spatial_dims` (2 or 3) spatial axes.
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError>;
}
