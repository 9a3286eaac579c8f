//! Data loader configs (`dataset.type` and the dataset's other keys).

use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

/// How label pairs are drawn (`sample_label`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleLabel {
    /// One random label pair per image pair and epoch (training default).
    Sample,
    /// Every label pair (validation and test always).
    All,
}

/// Which intra-group pairs are drawn (`intra_group_option`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntraGroupOption {
    /// Moving image earlier in the group than the fixed one.
    Forward,
    /// Moving image later than the fixed one.
    Backward,
    /// Any order.
    Unconstrained,
}

/// `paired`: moving and fixed images paired by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedLoader {
    /// Shape moving images are resized to.
    pub moving_image_shape: Vec<usize>,
    /// Shape fixed images are resized to.
    pub fixed_image_shape: Vec<usize>,
    /// Label sampling for training.
    #[serde(default)]
    pub sample_label: Option<SampleLabel>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<u64>,
}

#[typetag::serialize(name = "paired")]
impl DataLoaderConfig for PairedLoader {
    fn image_shapes(&self) -> ImageShapes {
        ImageShapes {
            moving: self.moving_image_shape.clone(),
            fixed: self.fixed_image_shape.clone(),
        }
    }

    fn build(&self, _source: &SplitSource<'_>) -> Result<Box<dyn DataLoader>, ComponentError> {
        Err(ComponentError::not_implemented("data_loader `paired`"))
    }
}

register_component!(
    data_loader,
    "paired",
    PairedLoader,
    "Moving/fixed images paired by file name"
);

/// `unpaired`: pairs drawn from one pool of images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnpairedLoader {
    /// Shape all images are resized to.
    pub image_shape: Vec<usize>,
    /// Label sampling for training.
    #[serde(default)]
    pub sample_label: Option<SampleLabel>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<u64>,
}

#[typetag::serialize(name = "unpaired")]
impl DataLoaderConfig for UnpairedLoader {
    fn image_shapes(&self) -> ImageShapes {
        ImageShapes {
            moving: self.image_shape.clone(),
            fixed: self.image_shape.clone(),
        }
    }

    fn build(&self, _source: &SplitSource<'_>) -> Result<Box<dyn DataLoader>, ComponentError> {
        Err(ComponentError::not_implemented("data_loader `unpaired`"))
    }
}

register_component!(
    data_loader,
    "unpaired",
    UnpairedLoader,
    "Random pairs from one pool of images (floor(N/2) per epoch)"
);

/// `grouped`: images in groups; pairs within or across groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupedLoader {
    /// Shape all images are resized to.
    pub image_shape: Vec<usize>,
    /// Probability of an intra-group pair (1: intra only, 0: inter only).
    pub intra_group_prob: f64,
    /// Order of intra-group pairs.
    pub intra_group_option: IntraGroupOption,
    /// One sampled pair per group and epoch (true) or every pair (false).
    pub sample_image_in_group: bool,
    /// Label sampling for training.
    #[serde(default)]
    pub sample_label: Option<SampleLabel>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<u64>,
}

#[typetag::serialize(name = "grouped")]
impl DataLoaderConfig for GroupedLoader {
    fn image_shapes(&self) -> ImageShapes {
        ImageShapes {
            moving: self.image_shape.clone(),
            fixed: self.image_shape.clone(),
        }
    }

    fn build(&self, _source: &SplitSource<'_>) -> Result<Box<dyn DataLoader>, ComponentError> {
        Err(ComponentError::not_implemented("data_loader `grouped`"))
    }
}

register_component!(
    data_loader,
    "grouped",
    GroupedLoader,
    "Images in groups: intra-/inter-group pairs"
);
