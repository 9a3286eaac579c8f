//! What the three data loaders share: opened image and label sets, label counting, epoch
//! expansion over labels, and loading one pair (normalise, resize, pick the label).

use std::path::PathBuf;
use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use voxreg_framework::prelude::*;

use super::config::SampleLabel;
use super::images::ImageSet;
use crate::preprocess::{
    fitted_shape, label_channel, normalize, pad_end, resize_linear, resized_affine,
};

/// Images (and labels) of one side of a pair.
pub(crate) struct Side {
    pub images: Arc<ImageSet>,
    pub labels: Option<Arc<ImageSet>>,
    /// Number of labels of each image (1 for a label volume without a label axis).
    pub label_counts: Vec<usize>,
    /// Shape images are resized to.
    pub shape: Vec<usize>,
    /// Resize keeping the aspect ratio (to the largest shape inside `shape`, zero-padded
    /// after the data) rather than stretching to `shape`.
    pub keep_aspect: bool,
}

impl Side {
    /// Opens `images_kind` (and `labels_kind` when labelled) and checks that names agree and
    /// that every label volume is spatial (one label) or spatial + one label axis.
    pub(crate) fn open(
        source: &SplitSource<'_>,
        images_kind: &str,
        labels_kind: &str,
        grouped: bool,
        shape: &[usize],
    ) -> Result<Side, ComponentError> {
        require_folders(source)?;
        let images = ImageSet::open(source.format, source.dirs, images_kind, grouped)?;
        let has_labels = source
            .dirs
            .iter()
            .any(|dir| source.format.has(dir, labels_kind));
        if source.labeled && !has_labels {
            tracing::warn!(
                "`labeled: true` but no {labels_kind} in {:?}: loading the {images_kind} without labels",
                source.dirs
            );
        }
        let (labels, label_counts) = if source.labeled && has_labels {
            let labels = ImageSet::open(source.format, source.dirs, labels_kind, grouped)?;
            images.require_same_ids(&labels, source.dirs)?;
            let counts = (0..labels.len())
                .map(|i| label_count(&labels, i, shape.len(), source.dirs))
                .collect::<Result<Vec<_>, _>>()?;
            (Some(Arc::new(labels)), counts)
        } else {
            (None, vec![0; images.len()])
        };
        Ok(Side {
            images: Arc::new(images),
            labels,
            label_counts,
            shape: shape.to_vec(),
            keep_aspect: false,
        })
    }

    /// The same images and labels, resized to another shape (the fixed side of unpaired and
    /// grouped data shares the moving side's files).
    pub(crate) fn with_shape(&self, shape: &[usize]) -> Side {
        Side {
            images: Arc::clone(&self.images),
            labels: self.labels.clone(),
            label_counts: self.label_counts.clone(),
            shape: shape.to_vec(),
            keep_aspect: self.keep_aspect,
        }
    }
}

impl Side {
    /// The shape an array of shape `from` is resized to before any padding.
    pub(crate) fn resized_shape(&self, from: &[usize]) -> Vec<usize> {
        if self.keep_aspect {
            fitted_shape(from, &self.shape)
        } else {
            self.shape.clone()
        }
    }

    /// Resizes `data` from `from` to `target` (from [`Side::resized_shape`]), then pads
    /// it to `shape`.
    fn resize(&self, data: &[f32], from: &[usize], target: &[usize]) -> Vec<f32> {
        pad_end(&resize_linear(data, from, target), target, &self.shape)
    }
}

/// Every data folder of the split must exist (as DeepReg checks before anything else), so a
/// mistyped `dir` is named as such rather than as a missing sub-folder.
fn require_folders(source: &SplitSource<'_>) -> Result<(), ComponentError> {
    for dir in source.dirs {
        if let Some(what) = voxreg_framework::files::folder_problem(dir) {
            return Err(ComponentError::Data {
                path: dir.clone(),
                message: format!(
                    "the data folder of `dataset.{}.dir` {what}",
                    source.split.as_str()
                ),
            });
        }
    }
    Ok(())
}

fn label_count(
    labels: &ImageSet,
    index: usize,
    spatial_dims: usize,
    dirs: &[PathBuf],
) -> Result<usize, ComponentError> {
    let shape = labels.shape(index)?;
    match shape.len() {
        n if n == spatial_dims => Ok(1),
        n if n == spatial_dims + 1 && shape[n - 1] > 0 => Ok(shape[n - 1]),
        _ => Err(ComponentError::Data {
            path: dirs.first().cloned().unwrap_or_default(),
            message: format!(
                "{} `{}` has shape {shape:?}: a label must have the image's {spatial_dims} axes, plus optionally one axis of labels",
                labels.kind(),
                labels.ids()[index]
            ),
        }),
    }
}

/// Both sides of the pairs a loader draws.
pub(crate) struct Pairs {
    pub moving: Side,
    pub fixed: Side,
    pub labeled: bool,
    pub sample_label: SampleLabel,
}

impl Pairs {
    /// Expands image pairs into samples over labels: one random label per pair
    /// (`sample`) or one sample per label (`all`); `None` labels when unlabelled.
    pub(crate) fn expand(
        &self,
        pairs: Vec<(usize, usize)>,
        rng: &mut ChaCha8Rng,
    ) -> Vec<SampleRef> {
        let mut samples = Vec::with_capacity(pairs.len());
        for (moving, fixed) in pairs {
            if !self.labeled {
                samples.push(SampleRef {
                    moving,
                    fixed,
                    label: None,
                });
                continue;
            }
            let count = self.moving.label_counts[moving].min(self.fixed.label_counts[fixed]);
            match self.sample_label {
                SampleLabel::Sample => samples.push(SampleRef {
                    moving,
                    fixed,
                    label: Some(rng.random_range(0..count.max(1))),
                }),
                SampleLabel::All => samples.extend((0..count).map(|label| SampleRef {
                    moving,
                    fixed,
                    label: Some(label),
                })),
            }
        }
        samples
    }

    /// Loads one sample: images normalised to [0, 1] and resized; the chosen label channel
    /// checked to lie in [0, 1] and resized.
    pub(crate) fn load(&self, sample: &SampleRef) -> Result<Sample, ComponentError> {
        let (moving_image, _) = load_image(&self.moving, sample.moving)?;
        let (fixed_image, fixed_affine) = load_image(&self.fixed, sample.fixed)?;
        let (moving_label, fixed_label) = match (self.labeled, sample.label) {
            (true, Some(label)) => (
                Some(load_label(&self.moving, sample.moving, label)?),
                Some(load_label(&self.fixed, sample.fixed, label)?),
            ),
            _ => (None, None),
        };
        Ok(Sample {
            reference: sample.clone(),
            ids: (
                self.moving.images.ids()[sample.moving].clone(),
                self.fixed.images.ids()[sample.fixed].clone(),
            ),
            moving_image,
            fixed_image,
            moving_label,
            fixed_label,
            fixed_affine,
            extra: Vec::new(),
        })
    }
}

fn load_image(side: &Side, index: usize) -> Result<(Vec<f32>, [[f64; 4]; 4]), ComponentError> {
    let volume = side.images.load(index)?;
    let id = &side.images.ids()[index];
    if volume.shape.len() != side.shape.len() {
        return Err(ComponentError::Data {
            path: PathBuf::from(id.to_string()),
            message: format!(
                "{} `{id}` has shape {:?}; the configured shape {:?} has {} axes",
                side.images.kind(),
                volume.shape,
                side.shape,
                side.shape.len()
            ),
        });
    }
    let mut data = volume.data;
    normalize(&mut data);
    let target = side.resized_shape(&volume.shape);
    let affine = resized_affine(&volume.affine, &volume.shape, &target);
    Ok((side.resize(&data, &volume.shape, &target), affine))
}

fn load_label(side: &Side, index: usize, label: usize) -> Result<Vec<f32>, ComponentError> {
    let labels = side
        .labels
        .as_ref()
        .ok_or_else(|| ComponentError::invalid("data loader", "labels asked of unlabelled data"))?;
    let volume = labels.load(index)?;
    let id = &labels.ids()[index];
    let spatial = side.shape.len();
    let (channels, spatial_shape) = if volume.shape.len() == spatial {
        (1, volume.shape.clone())
    } else {
        (
            volume.shape[spatial..].iter().product(),
            volume.shape[..spatial].to_vec(),
        )
    };
    if label >= channels {
        return Err(ComponentError::Data {
            path: PathBuf::from(id.to_string()),
            message: format!(
                "{} `{id}` has {channels} labels, label {label} was asked for",
                labels.kind()
            ),
        });
    }
    let channel = label_channel(&volume.data, channels, label);
    if let Some(bad) = channel.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(ComponentError::Data {
            path: PathBuf::from(id.to_string()),
            message: format!(
                "{} `{id}` label {label} has value {bad} outside [0, 1]: labels are not normalised; store one binary or probability mask per label channel",
                labels.kind()
            ),
        });
    }
    let target = side.resized_shape(&spatial_shape);
    Ok(side.resize(&channel, &spatial_shape, &target))
}

#[cfg(test)]
mod tests {
    use crate::preprocess::resized_affine;

    #[test]
    fn halving_the_grid_doubles_the_spacing_and_shifts_half_a_voxel() {
        let identity = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let out = resized_affine(&identity, &[4, 4, 4], &[2, 4, 8]);
        assert_eq!(out[0], [2.0, 0.0, 0.0, 0.5]);
        assert_eq!(out[1], [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(out[2], [0.0, 0.0, 0.5, -0.25]);
    }
}
