//! `atlalign`: atlalign's supervised datasets (`SupervisedGenerator` of
//! `atlalign/ml_utils/io.py`, version 0.6.2): each sample is a moving section from the HDF5
//! file, registered to a reference (one image, or the slice of a reference volume at the
//! section's position `p`), with its true forward field and, optionally, its true inverse.
//!
//! The fields are converted into voxreg's DDF layout here, so losses and metrics never see
//! atlalign's `(Δx, Δy)` order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};
use voxreg_framework::candle::{Device, Tensor};
use voxreg_framework::ops::{self, Interp, Padding};
use voxreg_framework::prelude::*;

use super::atlalign_file::{error as data_error, AtlalignFile, POSITIONS};
use super::config::{check_shape, SampleLabel};
use super::sampling::{epoch_rng, shuffled};
use crate::file_loaders::{read_volume_file, IDENTITY};

const NAME: &str = "data_loader `atlalign`";

fn default_file() -> String {
    "dataset.h5".to_owned()
}

fn default_spacing() -> f64 {
    25.0
}

fn default_reference_max() -> f64 {
    255.0
}

/// Which samples of the file make the split (atlalign's `indexes`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleIndexes {
    /// The sample indices.
    List(Vec<usize>),
    /// A `.npy` file of sample indices in the data folder (as atlalign accepts).
    File(String),
}

/// `atlalign`: atlalign's HDF5 datasets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AtlalignLoader {
    /// The images' `(h, w)`: the file's, which is checked (atlalign's is `[320, 456]`).
    pub image_shape: Vec<usize>,
    /// The HDF5 file in each data folder.
    #[serde(default = "default_file")]
    pub file: String,
    /// The reference (fixed) image, in the data folder or an absolute path: a 2D image of
    /// `image_shape`, or a 3D volume `(slices, h, w)` of which each sample takes slice
    /// `min(⌊p / slice_spacing⌋, slices − 1)` (atlalign's `p // 25` into its Nissl volume).
    /// NIfTI, NumPy `.npy` / `.npz` (array `vol`), PNG or TIFF.
    pub reference: String,
    /// Label masks on the reference's grid, in the data folder or an absolute path: for a 2D
    /// reference `(h, w)` or `(h, w, labels)`, for a reference volume `(slices, h, w)` or
    /// `(slices, h, w, labels)`, values in `[0, 1]` (atlalign's annotation, as masks). Each
    /// sample's fixed label is the reference's (slice); its moving label is that label warped
    /// into the section's space by the true inverse field (bilinear, zeros outside), as
    /// atlalign evaluates segmentations, so the file must hold `inv_deltas_xy`. With
    /// `labeled: true` the split is then labelled (Dice, TRE, label losses).
    #[serde(default)]
    pub reference_labels: Option<String>,
    /// Label sampling for training (validation and test take every label).
    #[serde(default)]
    pub sample_label: Option<SampleLabel>,
    /// Microns per reference slice (atlalign's 25 µm atlas).
    #[serde(default = "default_spacing")]
    pub slice_spacing: f64,
    /// The reference's values are divided by this (atlalign's 255 for its uint8 Nissl volume).
    #[serde(default = "default_reference_max")]
    pub reference_max: f64,
    /// Also provide the true inverse field `true_inv_ddf` (atlalign's `return_inverse`;
    /// the file must hold `inv_deltas_xy`).
    #[serde(default)]
    pub inverse: bool,
    /// The samples of this split: a list of indices, or a `.npy` file of them; all by default.
    #[serde(default)]
    pub indexes: Option<SampleIndexes>,
    /// Shuffling seed (training shuffles every epoch; validation and test keep file order).
    #[serde(default)]
    pub seed: Option<u64>,
}

#[typetag::serialize(name = "atlalign")]
impl DataLoaderConfig for AtlalignLoader {
    fn image_shapes(&self) -> ImageShapes {
        ImageShapes {
            moving: self.image_shape.clone(),
            fixed: self.image_shape.clone(),
        }
    }

    fn provides(&self, labeled: bool) -> Vec<Decl> {
        let mut decls = pair_decls(labeled && self.reference_labels.is_some());
        decls.push(Decl::new(names::TRUE_DDF, Kind::Field, Grid::Fixed));
        decls.push(Decl::new(
            names::TRUE_PRED_FIXED_IMAGE,
            Kind::Image,
            Grid::Fixed,
        ));
        if self.inverse {
            decls.push(Decl::new(names::TRUE_INV_DDF, Kind::Field, Grid::Moving));
        }
        decls
    }

    fn build(&self, source: &SplitSource<'_>) -> Result<Box<dyn DataLoader>, ComponentError> {
        check_shape(NAME, "image_shape", &self.image_shape)?;
        if self.image_shape.len() != 2 {
            return Err(ComponentError::invalid(
                NAME,
                format!(
                    "atlalign's sections are 2D: `image_shape` must be [h, w], got {:?}",
                    self.image_shape
                ),
            ));
        }
        for (key, value) in [
            ("slice_spacing", self.slice_spacing),
            ("reference_max", self.reference_max),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ComponentError::invalid(
                    NAME,
                    format!("`{key}` must be a positive number, got {value}"),
                ));
            }
        }
        if source.dirs.is_empty() {
            return Err(ComponentError::invalid(
                NAME,
                format!("the {} split names no data folder", source.split.as_str()),
            ));
        }
        let labeled = source.labeled && self.reference_labels.is_some();
        let mut samples = Vec::new();
        let mut files = Vec::with_capacity(source.dirs.len());
        for dir in source.dirs {
            let file = self.open_folder(dir, labeled)?;
            samples.extend(file.samples.iter().map(|&i| (files.len(), i)));
            files.push(file);
        }
        let label_count = files
            .first()
            .and_then(|f| f.labels.as_ref())
            .map(|l| l.count);
        if let Some(count) = label_count {
            if files
                .iter()
                .any(|f| f.labels.as_ref().map(|l| l.count) != Some(count))
            {
                return Err(ComponentError::invalid(
                    NAME,
                    "every data folder's `reference_labels` must hold the same number of labels",
                ));
            }
        }
        Ok(Box::new(AtlalignData {
            files,
            samples,
            split: source.split,
            seed: self.seed,
            inverse: self.inverse,
            label_count,
            sample_label: super::config::sample_label(self.sample_label, source.split),
        }))
    }
}

register_component!(
    data_loader,
    "atlalign",
    AtlalignLoader,
    "atlalign's HDF5 datasets: sections with true forward (and inverse) fields, a reference atlas"
);

impl AtlalignLoader {
    /// Opens one data folder's file and reference and checks that they fit together.
    fn open_folder(&self, dir: &Path, labeled: bool) -> Result<FolderData, ComponentError> {
        let path = dir.join(&self.file);
        let file = AtlalignFile::open(&path, self.inverse || labeled)?;
        if file.shape[..] != self.image_shape[..] {
            return Err(data_error(
                &path,
                format!(
                    "the images are {:?} but `image_shape` is {:?}: set image_shape to the file's",
                    file.shape, self.image_shape
                ),
            ));
        }
        let samples = self.sample_indexes(dir, &file)?;
        let reference = Reference::read(&resolve(dir, &self.reference), file.shape)?;
        let slices = match &reference {
            Reference::Image(_) => vec![0; file.len],
            Reference::Volume { planes, .. } => {
                let positions = file.positions.as_ref().ok_or_else(|| {
                    data_error(
                        &path,
                        format!(
                            "the reference is a volume, sliced by each section's position, but the file has no `{POSITIONS}`"
                        ),
                    )
                })?;
                positions
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| {
                        if p < 0 {
                            return Err(data_error(
                                &path,
                                format!("`{POSITIONS}`[{i}] = {p} is negative: positions are µm from the atlas front"),
                            ));
                        }
                        let slice = (p as f64 / self.slice_spacing).floor() as usize;
                        Ok(slice.min(planes - 1))
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let labels = match (&self.reference_labels, labeled) {
            (Some(name), true) => Some(Arc::new(ReferenceLabels::read(
                &resolve(dir, name),
                file.shape,
                reference.planes(),
            )?)),
            _ => None,
        };
        let scale = 1.0 / self.reference_max as f32;
        Ok(FolderData {
            file,
            samples,
            reference: Arc::new(reference.scaled(scale)),
            labels,
            slices,
        })
    }

    /// This split's sample indices, each checked against the file's length.
    fn sample_indexes(
        &self,
        dir: &Path,
        file: &AtlalignFile,
    ) -> Result<Vec<usize>, ComponentError> {
        let indexes = match &self.indexes {
            None => return Ok((0..file.len).collect()),
            Some(SampleIndexes::List(list)) => list.clone(),
            Some(SampleIndexes::File(name)) => {
                let path = resolve(dir, name);
                let volume = read_volume_file(&path, "indexes")?;
                volume
                    .data
                    .iter()
                    .map(|&v| {
                        if v >= 0.0 && v.fract() == 0.0 {
                            Ok(v as usize)
                        } else {
                            Err(data_error(
                                &path,
                                format!("index {v} is not a whole number ≥ 0"),
                            ))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        if indexes.is_empty() {
            return Err(ComponentError::invalid(NAME, "`indexes` selects no sample"));
        }
        if let Some(&bad) = indexes.iter().find(|&&i| i >= file.len) {
            return Err(data_error(
                &file.path,
                format!(
                    "`indexes` holds {bad}, but the file has {} samples (0…{})",
                    file.len,
                    file.len - 1
                ),
            ));
        }
        Ok(indexes)
    }
}

/// `name` in `dir` unless it is absolute.
fn resolve(dir: &Path, name: &str) -> PathBuf {
    let path = Path::new(name);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// The reference: one image, or a stack of planes.
#[derive(Debug)]
enum Reference {
    /// One `h × w` image.
    Image(Vec<f32>),
    /// `planes` images of `h × w`, one after the other.
    Volume { data: Vec<f32>, planes: usize },
}

impl Reference {
    /// Reads the reference and checks its shape against the sections' `(h, w)`.
    fn read(path: &Path, shape: [usize; 2]) -> Result<Self, ComponentError> {
        let volume = read_volume_file(path, "vol")?;
        match volume.shape[..] {
            [h, w] if [h, w] == shape => Ok(Reference::Image(volume.data)),
            [planes, h, w] if [h, w] == shape && planes > 0 => Ok(Reference::Volume {
                data: volume.data,
                planes,
            }),
            _ => Err(data_error(
                path,
                format!(
                    "the reference must be an image of the sections' shape {shape:?} or a volume (slices, {}, {}), got {:?}",
                    shape[0], shape[1], volume.shape
                ),
            )),
        }
    }

    fn scaled(self, factor: f32) -> Self {
        let scale = |mut data: Vec<f32>| {
            data.iter_mut().for_each(|v| *v *= factor);
            data
        };
        match self {
            Reference::Image(data) => Reference::Image(scale(data)),
            Reference::Volume { data, planes } => Reference::Volume {
                data: scale(data),
                planes,
            },
        }
    }

    /// The number of planes (`None` for one image).
    fn planes(&self) -> Option<usize> {
        match self {
            Reference::Image(_) => None,
            Reference::Volume { planes, .. } => Some(*planes),
        }
    }

    /// Plane `slice` (`pixels` values).
    fn plane(&self, slice: usize, pixels: usize) -> &[f32] {
        match self {
            Reference::Image(data) => data,
            Reference::Volume { data, .. } => &data[slice * pixels..(slice + 1) * pixels],
        }
    }
}

/// Label masks on the reference's grid: per plane (one for a 2D reference) `count` masks,
/// stored plane by plane with the label axis last, as read.
#[derive(Debug)]
struct ReferenceLabels {
    data: Vec<f32>,
    count: usize,
}

impl ReferenceLabels {
    /// Reads the labels and checks them against the sections' `(h, w)` and the reference's
    /// planes (`None`: a 2D reference).
    fn read(path: &Path, shape: [usize; 2], planes: Option<usize>) -> Result<Self, ComponentError> {
        let volume = read_volume_file(path, "seg")?;
        let dims = &volume.shape[..];
        let count = match (planes, dims) {
            (None, [h, w]) if [*h, *w] == shape => Some(1),
            (None, [h, w, l]) if [*h, *w] == shape => Some(*l),
            (Some(p), [s, h, w]) if *s == p && [*h, *w] == shape => Some(1),
            (Some(p), [s, h, w, l]) if *s == p && [*h, *w] == shape => Some(*l),
            _ => None,
        };
        let Some(count) = count.filter(|&c| c > 0) else {
            let expected = match planes {
                None => format!(
                    "({}, {}) or ({}, {}, labels)",
                    shape[0], shape[1], shape[0], shape[1]
                ),
                Some(p) => format!(
                    "({p}, {}, {}) or ({p}, {}, {}, labels)",
                    shape[0], shape[1], shape[0], shape[1]
                ),
            };
            return Err(data_error(
                path,
                format!(
                    "`reference_labels` must be {expected} to match the reference, got {dims:?}"
                ),
            ));
        };
        if let Some(bad) = volume.data.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(data_error(
                path,
                format!("`reference_labels` must hold masks in [0, 1], found {bad}"),
            ));
        }
        Ok(Self {
            data: volume.data,
            count,
        })
    }

    /// Label `label` of plane `slice` (`pixels` values).
    fn mask(&self, slice: usize, label: usize, pixels: usize) -> Vec<f32> {
        let plane = &self.data[slice * pixels * self.count..(slice + 1) * pixels * self.count];
        plane
            .iter()
            .skip(label)
            .step_by(self.count)
            .copied()
            .collect()
    }
}

/// One data folder: its file, the split's samples in it, its reference (and labels) and each
/// sample's reference slice.
struct FolderData {
    file: AtlalignFile,
    samples: Vec<usize>,
    reference: Arc<Reference>,
    labels: Option<Arc<ReferenceLabels>>,
    slices: Vec<usize>,
}

/// The built loader: the split's samples as `(folder, index in its file)`.
struct AtlalignData {
    files: Vec<FolderData>,
    samples: Vec<(usize, usize)>,
    split: Split,
    seed: Option<u64>,
    inverse: bool,
    /// Labels per sample, for labelled data.
    label_count: Option<usize>,
    sample_label: SampleLabel,
}

impl DataLoader for AtlalignData {
    fn epoch(&self, epoch: u64, seed: u64) -> Vec<SampleRef> {
        let mut rng = epoch_rng(self.split, self.seed.unwrap_or(seed), epoch);
        let order = match self.split {
            Split::Train => shuffled(self.samples.len(), &mut rng),
            Split::Valid | Split::Test => (0..self.samples.len()).collect(),
        };
        let sample = |i: usize, label: Option<usize>| SampleRef {
            moving: i,
            fixed: i,
            label,
        };
        match (self.label_count, self.sample_label) {
            (None, _) => order.into_iter().map(|i| sample(i, None)).collect(),
            (Some(count), SampleLabel::Sample) => order
                .into_iter()
                .map(|i| sample(i, Some(rng.random_range(0..count))))
                .collect(),
            (Some(count), SampleLabel::All) => order
                .into_iter()
                .flat_map(|i| (0..count).map(move |l| sample(i, Some(l))))
                .collect(),
        }
    }

    fn load(&self, sample: &SampleRef) -> Result<Sample, ComponentError> {
        let &(folder, index) = self
            .samples
            .get(sample.moving)
            .ok_or_else(|| ComponentError::invalid(NAME, format!("no sample {}", sample.moving)))?;
        let data = &self.files[folder];
        let [h, w] = data.file.shape;
        let labelled = data.labels.is_some() && sample.label.is_some();
        let arrays = data.file.sample(index, self.inverse || labelled)?;
        let (moving_image, true_ddf) = (arrays.image, arrays.ddf);
        let fixed_image = data.reference.plane(data.slices[index], h * w).to_vec();
        let target = warp_by(&moving_image, &true_ddf, [h, w])
            .map_err(|e| ComponentError::tensor(format!("{NAME}: warping sample {index}"), e))?;
        let field_shape = vec![2, h, w];
        let mut extra = vec![
            (
                Decl::new(names::TRUE_DDF, Kind::Field, Grid::Fixed),
                field_shape.clone(),
                true_ddf,
            ),
            (
                Decl::new(names::TRUE_PRED_FIXED_IMAGE, Kind::Image, Grid::Fixed),
                vec![1, h, w],
                target,
            ),
        ];
        let (moving_label, fixed_label) = match (&data.labels, sample.label, &arrays.inverse_ddf) {
            (Some(labels), Some(label), Some(inverse)) => {
                let fixed = labels.mask(data.slices[index], label, h * w);
                let moving = warp_by(&fixed, inverse, [h, w]).map_err(|e| {
                    ComponentError::tensor(
                        format!("{NAME}: warping the labels of sample {index}"),
                        e,
                    )
                })?;
                (Some(moving), Some(fixed))
            }
            _ => (None, None),
        };
        if let (true, Some(inverse)) = (self.inverse, arrays.inverse_ddf) {
            extra.push((
                Decl::new(names::TRUE_INV_DDF, Kind::Field, Grid::Moving),
                field_shape,
                inverse,
            ));
        }
        let name = match &data.file.ids {
            Some(ids) => format!("{index}_{}_{}", ids[index].0, ids[index].1),
            None => index.to_string(),
        };
        let reference = match data.file.positions.as_ref() {
            Some(p) => format!("reference_p{}", p[index]),
            None => "reference".to_owned(),
        };
        Ok(Sample {
            reference: sample.clone(),
            ids: (
                ImageId { group: None, name },
                ImageId {
                    group: None,
                    name: reference,
                },
            ),
            moving_image,
            fixed_image,
            moving_label,
            fixed_label,
            fixed_affine: IDENTITY,
            extra,
        })
    }
}

/// The image warped by the DDF (bilinear, zeros outside: atlalign's `cv2.remap` with a
/// constant-0 border).
///
/// # Shapes
/// `image`: `h · w` values; `ddf`: `2 · h · w` (voxreg's layout) → `h · w`.
fn warp_by(
    image: &[f32],
    ddf: &[f32],
    [h, w]: [usize; 2],
) -> voxreg_framework::candle::Result<Vec<f32>> {
    let image = Tensor::from_slice(image, (1, 1, h, w), &Device::Cpu)?;
    let ddf = Tensor::from_slice(ddf, (1, 2, h, w), &Device::Cpu)?;
    ops::warp(&image, &ddf, Interp::Linear, Padding::Zeros)?
        .flatten_all()?
        .to_vec1::<f32>()
}

#[cfg(test)]
#[path = "atlalign_tests.rs"]
mod tests;
