//! Registration methods: how the backbone's output becomes a transform.

use std::fmt::Debug;

use candle_core::Tensor;

use super::{Backbone, PairBatch};

/// Channels into and out of the backbone that a method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackboneIo {
    /// Channels stacked at the backbone's input.
    pub in_channels: usize,
    /// Channels the backbone must output (for dense backbones).
    pub out_channels: usize,
}

/// What a method computes for a batch: what the losses need and what `predict` saves.
///
/// # Shapes
/// With `fixed` the fixed images' spatial shape and `ndim` its length:
/// * `ddf`, `dvf`: `(N, ndim, *fixed)`, voxel units;
/// * `theta`: `(N, ndim + 1, ndim)` (affine backbones only);
/// * `pred_fixed_image`: `(N, 1, *fixed)`, the moving image warped by `ddf`;
/// * `pred_fixed_label`: `(N, L, *fixed)`, the moving labels warped by `ddf`, or for the
///   conditional method the predicted fixed label `(N, 1, *fixed)`.
#[derive(Clone, Debug, Default)]
pub struct MethodOutput {
    /// Dense displacement field.
    pub ddf: Option<Tensor>,
    /// Velocity field (the `dvf` method).
    pub dvf: Option<Tensor>,
    /// Affine parameters (a `global` backbone with the `ddf` method).
    pub theta: Option<Tensor>,
    /// The moving image warped onto the fixed grid.
    pub pred_fixed_image: Option<Tensor>,
    /// The moving labels warped onto the fixed grid, or the conditional prediction.
    pub pred_fixed_label: Option<Tensor>,
}

/// The YAML config of a registration method (`train.method`), selected by name (`ddf`,
/// `dvf`, `conditional`, …).
#[typetag::serialize(tag = "name")]
pub trait MethodConfig: Debug + Send + Sync {
    /// The backbone input/output channels this method works with, for images with
    /// `spatial_dims` spatial axes.
    fn backbone_io(&self, spatial_dims: usize) -> BackboneIo;

    /// Runs the method on a batch: builds the backbone input, runs `backbone`, turns its
    /// output into a transform and warps the moving image and labels (see [`MethodOutput`]).
    /// Shape mismatches are errors.
    fn forward(
        &self,
        backbone: &dyn Backbone,
        batch: &PairBatch,
    ) -> candle_core::Result<MethodOutput>;

    /// Whether the method needs labelled training data (the conditional method does).
    fn requires_labels(&self) -> bool {
        false
    }
}
