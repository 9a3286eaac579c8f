//! Data loader configs (`dataset.type` and the dataset's other keys), and how each builds
//! its loader.

use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

use super::grouped::GroupedData;
use super::paired::{open_sides, PairedData};
use super::pairs::{Pairs, Side};
use super::unpaired::UnpairedData;

/// Label sampling: `sample_label` (default `sample`, one random label) applies to training;
/// validation and test always take every label, so their metrics cover every label.
pub(super) fn sample_label(configured: Option<SampleLabel>, split: Split) -> SampleLabel {
    match split {
        Split::Train => configured.unwrap_or(SampleLabel::Sample),
        Split::Valid | Split::Test => SampleLabel::All,
    }
}

/// Whether both sides found labels (a dataset without label files loads unlabelled).
pub(super) fn labeled(moving: &Side, fixed: &Side) -> bool {
    moving.labels.is_some() && fixed.labels.is_some()
}

/// Shapes must have 2 or 3 axes, each at least 1.
pub(super) fn check_shape(
    component: &str,
    key: &str,
    shape: &[usize],
) -> Result<(), ComponentError> {
    if !(2..=3).contains(&shape.len()) || shape.contains(&0) {
        return Err(ComponentError::invalid(
            component,
            format!("`{key}` must list 2 or 3 sizes of at least 1, got {shape:?}"),
        ));
    }
    Ok(())
}

pub(super) fn data_error(source: &SplitSource<'_>, message: String) -> ComponentError {
    ComponentError::Data {
        path: source.dirs.first().cloned().unwrap_or_default(),
        message,
    }
}

/// Unpaired and grouped data: every image must carry the same number of labels, so any two
/// can be paired.
pub(super) fn require_equal_label_counts(
    source: &SplitSource<'_>,
    side: &Side,
) -> Result<(), ComponentError> {
    if let Some(first) = side.label_counts.first() {
        if let Some(index) = side.label_counts.iter().position(|c| c != first) {
            return Err(data_error(
                source,
                format!(
                    "labels `{}` has {} labels but `{}` has {first}: every image needs the same number of labels",
                    side.images.ids()[index],
                    side.label_counts[index],
                    side.images.ids()[0]
                ),
            ));
        }
    }
    Ok(())
}

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

    fn build(&self, source: &SplitSource<'_>) -> Result<Box<dyn DataLoader>, ComponentError> {
        check_shape(
            "data_loader `paired`",
            "moving_image_shape",
            &self.moving_image_shape,
        )?;
        check_shape(
            "data_loader `paired`",
            "fixed_image_shape",
            &self.fixed_image_shape,
        )?;
        if self.moving_image_shape.len() != self.fixed_image_shape.len() {
            return Err(ComponentError::invalid(
                "data_loader `paired`",
                "`moving_image_shape` and `fixed_image_shape` need the same number of axes",
            ));
        }
        let (moving, fixed) = open_sides(source, &self.image_shapes())?;
        let has_labels = labeled(&moving, &fixed);
        Ok(Box::new(PairedData {
            pairs: Pairs {
                moving,
                fixed,
                labeled: has_labels,
                sample_label: sample_label(self.sample_label, source.split),
            },
            split: source.split,
            seed: self.seed,
        }))
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

    fn build(&self, source: &SplitSource<'_>) -> Result<Box<dyn DataLoader>, ComponentError> {
        check_shape("data_loader `unpaired`", "image_shape", &self.image_shape)?;
        let moving = Side::open(source, "images", "labels", false, &self.image_shape)?;
        if moving.images.len() < 2 {
            return Err(data_error(
                source,
                format!(
                    "unpaired data needs at least 2 images, found {}",
                    moving.images.len()
                ),
            ));
        }
        require_equal_label_counts(source, &moving)?;
        let fixed = moving.with_shape(&self.image_shape);
        let has_labels = labeled(&moving, &fixed);
        Ok(Box::new(UnpairedData {
            pairs: Pairs {
                moving,
                fixed,
                labeled: has_labels,
                sample_label: sample_label(self.sample_label, source.split),
            },
            split: source.split,
            seed: self.seed,
        }))
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

    fn build(&self, source: &SplitSource<'_>) -> Result<Box<dyn DataLoader>, ComponentError> {
        const NAME: &str = "data_loader `grouped`";
        check_shape(NAME, "image_shape", &self.image_shape)?;
        if !(0.0..=1.0).contains(&self.intra_group_prob) {
            return Err(ComponentError::invalid(
                NAME,
                format!(
                    "`intra_group_prob` must be in [0, 1], got {}",
                    self.intra_group_prob
                ),
            ));
        }
        let pure = self.intra_group_prob == 0.0 || self.intra_group_prob == 1.0;
        if !(self.sample_image_in_group || pure) {
            return Err(ComponentError::invalid(
                NAME,
                "mixing intra- and inter-group pairs needs `sample_image_in_group: true`; otherwise set `intra_group_prob` to 0 or 1",
            ));
        }
        let moving = Side::open(source, "images", "labels", true, &self.image_shape)?;
        require_equal_label_counts(source, &moving)?;
        let mut names: Vec<&str> = moving
            .images
            .ids()
            .iter()
            .filter_map(|id| id.group.as_deref())
            .collect();
        names.dedup();
        let groups: Vec<Vec<usize>> = names
            .iter()
            .map(|name| {
                (0..moving.images.len())
                    .filter(|&i| moving.images.ids()[i].group.as_deref() == Some(*name))
                    .collect()
            })
            .collect();
        if self.intra_group_prob < 1.0 && groups.len() < 2 {
            return Err(data_error(
                source,
                format!(
                    "inter-group pairs need at least 2 groups, found {}",
                    groups.len()
                ),
            ));
        }
        if self.intra_group_prob > 0.0 {
            if let Some((name, group)) = names.iter().zip(&groups).find(|(_, g)| g.len() < 2) {
                return Err(data_error(
                    source,
                    format!(
                        "group `{name}` has {} image(s): intra-group pairs need at least 2",
                        group.len()
                    ),
                ));
            }
        }
        let fixed = moving.with_shape(&self.image_shape);
        let has_labels = labeled(&moving, &fixed);
        Ok(Box::new(GroupedData {
            pairs: Pairs {
                moving,
                fixed,
                labeled: has_labels,
                sample_label: sample_label(self.sample_label, source.split),
            },
            groups,
            intra_group_prob: self.intra_group_prob,
            intra_group_option: self.intra_group_option,
            sample_image_in_group: self.sample_image_in_group,
            split: source.split,
            seed: self.seed,
        }))
    }
}

register_component!(
    data_loader,
    "grouped",
    GroupedLoader,
    "Images in groups: intra-/inter-group pairs"
);
