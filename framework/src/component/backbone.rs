//! Backbones: the networks of a registration model.

use std::fmt::Debug;

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::ComponentError;

/// What the output layer of a dense backbone predicts; the method decides it, and DeepReg's
/// defaults of the output layer follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Head {
    /// A field (DDF or velocity): zero-initialised, no activation.
    #[default]
    Field,
    /// A label probability: Glorot-uniform initialised, sigmoid.
    Probability,
}

/// What a backbone is asked to build: the method decides these from the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackboneSpec {
    /// 2 or 3.
    pub spatial_dims: usize,
    /// The spatial shape of the input (the fixed image's shape), length `spatial_dims`.
    pub image_size: Vec<usize>,
    /// Input channels (2 for moving + fixed image; 3 for conditional: + moving label).
    pub in_channels: usize,
    /// Output channels of a dense backbone (`ndim` for a DDF/DVF, 1 for a label).
    pub out_channels: usize,
    /// What the output layer predicts.
    pub head: Head,
}

/// The YAML config of a backbone (`train.backbone`), selected by `name`.
///
/// Implementations are `serde` structs registered with
/// [`register_component!`](crate::register_component) under category `backbone`, and
/// annotated `#[typetag::serialize(name = "...")]` with the same name.
#[typetag::serialize(tag = "name")]
pub trait BackboneConfig: Debug + Send + Sync {
    /// Builds the network. Every weight must be taken from `params` (by a stable name), so
    /// the same network can run from trained variables (a `VarMap`) or from tensors a
    /// hypernetwork computes (`VarBuilder::from_tensors` / a custom backend).
    ///
    /// Errors: a config that cannot work for `spec` (e.g. a depth the image size does not
    /// allow) is an [`ComponentError::InvalidConfig`] saying why and what would work.
    fn build(
        &self,
        spec: &BackboneSpec,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError>;

    /// Whether the network predicts affine parameters ([`BackboneOutput::Affine`]) rather
    /// than a dense output.
    fn is_affine(&self) -> bool {
        false
    }
}

/// What a backbone's forward pass produces.
#[derive(Clone, Debug)]
pub enum BackboneOutput {
    /// A dense output `(N, out_channels, *image_size)`: a DDF, a DVF or label logits.
    Dense(Tensor),
    /// Affine parameters `(N, ndim + 1, ndim)` in DeepReg's convention: row `i < ndim` holds
    /// the linear part applied to homogeneous grid coordinates, the last row the translation.
    Affine(Tensor),
}

/// A built backbone network.
pub trait Backbone: Send + Sync {
    /// Runs the network.
    ///
    /// # Shapes
    /// `input`: `(N, in_channels, *image_size)`; output as described by [`BackboneOutput`].
    fn forward(&self, input: &Tensor) -> candle_core::Result<BackboneOutput>;
}
