//! Registration methods: built from their config, they own their networks and turn a batch
//! into named outputs (a transform, the warped moving image, …). A method may contain other
//! methods (`cascade`, `inverse`) and its own backbone.

use std::fmt::Debug;

use candle_nn::VarBuilder;

use super::{BackboneConfig, Batch, ComponentError, Decl, ImageShapes, Tensors};

/// What a method is built for.
#[derive(Clone, Copy, Debug)]
pub struct MethodContext<'a> {
    /// The moving and fixed image shapes after preprocessing.
    pub shapes: &'a ImageShapes,
    /// The tensors the method's batches hold (the data loader's declarations, or for a
    /// nested method what its parent hands it).
    pub inputs: &'a [Decl],
    /// The backbone a method without its own `backbone` key uses (`train.backbone`).
    pub backbone: Option<&'a dyn BackboneConfig>,
}

impl<'a> MethodContext<'a> {
    /// The backbone to build: `own` if the method names one, else the context's; an error
    /// naming `method` when there is neither.
    pub fn backbone_for(
        &self,
        method: &str,
        own: Option<&'a dyn BackboneConfig>,
    ) -> Result<&'a dyn BackboneConfig, ComponentError> {
        own.or(self.backbone).ok_or_else(|| {
            ComponentError::invalid(
                format!("method `{method}`"),
                "needs a backbone: give `train.backbone` or a `backbone` key in the method",
            )
        })
    }

    /// Whether the inputs include a tensor named `name`.
    pub fn has_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|d| d.name == name)
    }

    /// The spatial dimensionality (2 or 3).
    pub fn spatial_dims(&self) -> usize {
        self.shapes.fixed.len()
    }
}

/// The YAML config of a registration method (`train.method`), selected by name (`ddf`,
/// `dvf`, `conditional`, `cascade`, `inverse`, …).
#[typetag::serialize(tag = "name")]
pub trait MethodConfig: Debug + Send + Sync {
    /// Builds the method and its networks. Every weight must come from `params` (prefix the
    /// builder with `params.pp(..)` for nested parts), so the same method runs from trained
    /// variables or from tensors a hypernetwork computes.
    fn build(
        &self,
        context: &MethodContext<'_>,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Method>, ComponentError>;

    /// The tensors `forward` adds, given the tensors its batches hold, in the order it adds
    /// them (losses' explicit `inputs` are checked against these and the loader's).
    fn outputs(&self, context: &MethodContext<'_>) -> Vec<Decl>;

    /// The tensors the method needs in its batches beyond the moving and fixed images
    /// (the conditional method needs the moving label).
    fn requires(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the method (or a part of it) has no `backbone` of its own and so needs
    /// `train.backbone`.
    fn needs_backbone(&self) -> bool {
        true
    }

    /// Whether the method needs labelled training data.
    fn requires_labels(&self) -> bool {
        self.requires()
            .iter()
            .any(|n| n == super::names::MOVING_LABEL || n == super::names::FIXED_LABEL)
    }
}

/// A built method.
pub trait Method: Send + Sync {
    /// Runs the method on a batch and returns its outputs (not the batch's tensors), each
    /// declared as [`MethodConfig::outputs`] says. Shape mismatches are errors.
    fn forward(&self, batch: &Batch) -> candle_core::Result<Tensors>;
}
