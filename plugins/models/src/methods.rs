//! Registration methods: what the backbone predicts and how it becomes a transform.

use serde::{Deserialize, Serialize};
use voxreg_framework::candle;
use voxreg_framework::prelude::*;

/// `ddf`: the backbone predicts a dense displacement field directly (or, with the `global`
/// backbone, an affine transform turned into a DDF).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DdfMethod {}

#[typetag::serialize(name = "ddf")]
impl MethodConfig for DdfMethod {
    fn backbone_io(&self, spatial_dims: usize) -> BackboneIo {
        BackboneIo {
            in_channels: 2,
            out_channels: spatial_dims,
        }
    }

    fn forward(&self, backbone: &dyn Backbone, batch: &PairBatch) -> candle::Result<MethodOutput> {
        crate::forward::ddf_forward(self, backbone, batch)
    }
}

register_component!(
    method,
    "ddf",
    DdfMethod,
    "Predict a dense displacement field (DDF) from the moving and fixed images"
);

/// `dvf`: the backbone predicts a stationary velocity field, integrated into a
/// diffeomorphic DDF by scaling and squaring in `int_steps` steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DvfMethod {
    /// Scaling-and-squaring steps (DeepReg uses 7).
    #[serde(default = "default_int_steps")]
    pub int_steps: usize,
}

fn default_int_steps() -> usize {
    7
}

#[typetag::serialize(name = "dvf")]
impl MethodConfig for DvfMethod {
    fn backbone_io(&self, spatial_dims: usize) -> BackboneIo {
        BackboneIo {
            in_channels: 2,
            out_channels: spatial_dims,
        }
    }

    fn forward(&self, backbone: &dyn Backbone, batch: &PairBatch) -> candle::Result<MethodOutput> {
        crate::forward::dvf_forward(self, backbone, batch)
    }
}

register_component!(
    method,
    "dvf",
    DvfMethod,
    "Predict a velocity field, integrated by scaling and squaring into a diffeomorphic DDF"
);

/// `conditional`: the backbone predicts the fixed label directly from the moving image,
/// the fixed image and the moving label (no transform). Needs labelled data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConditionalMethod {}

#[typetag::serialize(name = "conditional")]
impl MethodConfig for ConditionalMethod {
    fn backbone_io(&self, _spatial_dims: usize) -> BackboneIo {
        BackboneIo {
            in_channels: 3,
            out_channels: 1,
        }
    }

    fn requires_labels(&self) -> bool {
        true
    }

    fn forward(&self, backbone: &dyn Backbone, batch: &PairBatch) -> candle::Result<MethodOutput> {
        crate::forward::conditional_forward(self, backbone, batch)
    }
}

register_component!(
    method,
    "conditional",
    ConditionalMethod,
    "Predict the fixed label from moving image, fixed image and moving label"
);
