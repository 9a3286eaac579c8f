//! Registration methods: how the backbone's output becomes a transform.

use std::fmt::Debug;

/// Channels into and out of the backbone that a method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackboneIo {
    /// Channels stacked at the backbone's input.
    pub in_channels: usize,
    /// Channels the backbone must output (for dense backbones).
    pub out_channels: usize,
}

/// The YAML config of a registration method (`train.method`), selected by name (`ddf`,
/// `dvf`, `conditional`, …).
#[typetag::serialize(tag = "name")]
pub trait MethodConfig: Debug + Send + Sync {
    /// The backbone input/output channels this method works with, for images with
    /// `spatial_dims` spatial axes.
    fn backbone_io(&self, spatial_dims: usize) -> BackboneIo;

    /// Whether the method needs labelled training data (the conditional method does).
    fn requires_labels(&self) -> bool {
        false
    }
}
