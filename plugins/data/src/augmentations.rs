//! Augmentation configs (`train.preprocess.data_augmentation`).

use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

/// `affine`: a random affine transform per image: corners scaled by `U(1 - scale, 1)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AffineAugmentation {
    /// Strength in [0, 1].
    #[serde(default = "default_scale")]
    pub scale: f64,
}

fn default_scale() -> f64 {
    0.1
}

#[typetag::serialize(name = "affine")]
impl AugmentationConfig for AffineAugmentation {
    fn build(&self, _shapes: &ImageShapes) -> Result<Box<dyn Augmentation>, ComponentError> {
        Err(ComponentError::not_implemented("augmentation `affine`"))
    }
}

register_component!(
    augmentation,
    "affine",
    AffineAugmentation,
    "Random affine transform of each image and its labels"
);

/// `ddf`: a random smooth displacement field per image, drawn at `low_res_size` and
/// up-sampled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DdfAugmentation {
    /// Upper bound of the field's standard deviation.
    #[serde(default = "default_field_strength")]
    pub field_strength: f64,
    /// Size of the low-resolution random field.
    #[serde(default = "default_low_res_size")]
    pub low_res_size: Vec<usize>,
}

fn default_field_strength() -> f64 {
    1.0
}
fn default_low_res_size() -> Vec<usize> {
    vec![1, 1, 1]
}

#[typetag::serialize(name = "ddf")]
impl AugmentationConfig for DdfAugmentation {
    fn build(&self, _shapes: &ImageShapes) -> Result<Box<dyn Augmentation>, ComponentError> {
        Err(ComponentError::not_implemented("augmentation `ddf`"))
    }
}

register_component!(
    augmentation,
    "ddf",
    DdfAugmentation,
    "Random smooth displacement field applied to each image and its labels"
);
