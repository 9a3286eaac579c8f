//! Augmentations: random transforms applied to training batches.

use std::fmt::Debug;

use super::{Batch, ComponentError, ImageShapes};

/// The YAML config of an augmentation (`train.preprocess.data_augmentation`).
#[typetag::serialize(tag = "name")]
pub trait AugmentationConfig: Debug + Send + Sync {
    /// Builds the augmentation for images of the given shapes.
    fn build(&self, shapes: &ImageShapes) -> Result<Box<dyn Augmentation>, ComponentError>;
}

/// A built augmentation.
pub trait Augmentation: Send + Sync {
    /// Transforms a batch. Each image gets its own random transform, applied identically to
    /// its labels; moving and fixed are transformed independently. The same `seed` gives
    /// the same result.
    fn apply(&self, batch: &Batch, seed: u64) -> Result<Batch, ComponentError>;
}
