//! Building a DeepReg-layout dataset from one template: moving and fixed images are the
//! template warped by known random smooth fields, with its label maps warped alike. Used for
//! the bundled demo data and in tests: the true fields make registration error measurable.

use std::path::{Path, PathBuf};

use voxreg_framework::candle::{Device, Tensor};
use voxreg_framework::ops::{self, Interp, Padding};
use voxreg_framework::prelude::*;

use crate::file_loaders::write_nifti;
use crate::preprocess::resize_linear;

/// How to build the dataset.
#[derive(Clone, Debug)]
pub struct TemplateDataset {
    /// The intensity template.
    pub template: Volume,
    /// Label maps on the template's grid (probabilities or masks, any positive scale: each is
    /// divided by its maximum, then thresholded at 0.5 into a binary mask).
    pub labels: Vec<Volume>,
    /// Crop `(start, size)` in template voxels, applied before resizing.
    pub crop: Option<(Vec<usize>, Vec<usize>)>,
    /// The shape of the dataset's images (2 or 3 axes, as the template).
    pub shape: Vec<usize>,
    /// Pairs in the train, valid and test splits.
    pub pairs: [usize; 3],
    /// Largest standard deviation of the random fields, in voxels.
    pub field_strength: f64,
    /// Size of the random low-resolution fields (as `ops::random_ddf`).
    pub low_res_size: Vec<usize>,
    /// Seed of the fields.
    pub seed: u64,
    /// Write the true fields (`<split>/fields/`).
    pub write_fields: bool,
}

/// What was written.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetSummary {
    /// The split folders (`<out>/train`, …) to use as `dataset.<split>.dir`.
    pub split_dirs: [PathBuf; 3],
    /// Pairs written in total.
    pub pairs: usize,
}

fn tensor_error(context: &str) -> impl Fn(voxreg_framework::candle::Error) -> ComponentError + '_ {
    move |e| ComponentError::tensor(context, e)
}

/// Writes the dataset under `out` in DeepReg's paired NIfTI layout:
/// `<out>/<split>/{moving_images,fixed_images,moving_labels,fixed_labels}/case_<k>.nii.gz`,
/// and the true fields as `<out>/<split>/fields/case_<k>_{moving,fixed}.nii.gz` (DDF layout
/// `(*shape, ndim)`): the moving image is the template warped by the moving field, the fixed
/// image the template warped by the fixed field.
pub fn build_paired_dataset(
    out: &Path,
    options: &TemplateDataset,
) -> Result<DatasetSummary, ComponentError> {
    let ndim = options.shape.len();
    let template = prepare(&options.template, options, false)?;
    let labels = options
        .labels
        .iter()
        .map(|label| prepare(label, options, true))
        .collect::<Result<Vec<_>, _>>()?;
    let device = Device::Cpu;
    let mut dims = vec![1, 1];
    dims.extend_from_slice(&options.shape);
    let to_tensor = |data: &[f32]| Tensor::from_vec(data.to_vec(), dims.clone(), &device);
    let template_tensor = to_tensor(&template.data).map_err(tensor_error("template"))?;
    let label_tensors = labels
        .iter()
        .map(|l| to_tensor(&l.data))
        .collect::<Result<Vec<_>, _>>()
        .map_err(tensor_error("labels"))?;
    let splits = ["train", "valid", "test"];
    let mut written = 0;
    for (split, &count) in splits.iter().zip(&options.pairs) {
        let root = out.join(split);
        for _ in 0..count {
            let name = format!("case_{written:03}");
            for (side, offset) in [("moving", 0u64), ("fixed", 1u64)] {
                let seed = options.seed.wrapping_add(2 * written as u64 + offset);
                let ddf = ops::random_ddf(
                    1,
                    &options.shape,
                    &options.low_res_size,
                    options.field_strength,
                    seed,
                    &device,
                )
                .map_err(tensor_error("random field"))?;
                let image = ops::warp(&template_tensor, &ddf, Interp::Linear, Padding::Border)
                    .map_err(tensor_error("warping the template"))?;
                write(
                    &root,
                    &format!("{side}_images"),
                    &name,
                    flatten(&image)?,
                    &options.shape,
                    &template.affine,
                )?;
                if !label_tensors.is_empty() {
                    let mut channels = Vec::with_capacity(label_tensors.len());
                    for label in &label_tensors {
                        let warped = ops::warp(label, &ddf, Interp::Linear, Padding::Zeros)
                            .map_err(tensor_error("warping a label"))?;
                        channels.push(flatten(&warped)?);
                    }
                    let interleaved = interleave(&channels);
                    let mut shape = options.shape.clone();
                    shape.push(channels.len());
                    write(
                        &root,
                        &format!("{side}_labels"),
                        &name,
                        interleaved,
                        &shape,
                        &template.affine,
                    )?;
                }
                if !options.write_fields {
                    continue;
                }
                let field = ddf.squeeze(0).map_err(tensor_error("field"))?;
                let components: Vec<Vec<f32>> = (0..ndim)
                    .map(|i| {
                        field
                            .get(i)
                            .and_then(|c| c.flatten_all())
                            .and_then(|c| c.to_vec1::<f32>())
                    })
                    .collect::<Result<_, _>>()
                    .map_err(tensor_error("field"))?;
                let mut shape = options.shape.clone();
                shape.push(ndim);
                write(
                    &root,
                    "fields",
                    &format!("{name}_{side}"),
                    interleave(&components),
                    &shape,
                    &template.affine,
                )?;
            }
            written += 1;
        }
    }
    Ok(DatasetSummary {
        split_dirs: splits.map(|s| out.join(s)),
        pairs: written,
    })
}

fn flatten(tensor: &Tensor) -> Result<Vec<f32>, ComponentError> {
    tensor
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(tensor_error("reading a warped volume"))
}

/// Channels `[c][voxel]` → C order with the channel last `[voxel][c]`.
fn interleave(channels: &[Vec<f32>]) -> Vec<f32> {
    let voxels = channels.first().map_or(0, Vec::len);
    (0..voxels)
        .flat_map(|v| channels.iter().map(move |c| c[v]))
        .collect()
}

fn write(
    root: &Path,
    kind: &str,
    name: &str,
    data: Vec<f32>,
    shape: &[usize],
    affine: &[[f64; 4]; 4],
) -> Result<(), ComponentError> {
    let folder = root.join(kind);
    std::fs::create_dir_all(&folder).map_err(|e| ComponentError::Data {
        path: folder.clone(),
        message: format!("cannot create folder: {e}"),
    })?;
    write_nifti(
        &folder.join(format!("{name}.nii.gz")),
        &Volume {
            data,
            shape: shape.to_vec(),
            affine: *affine,
        },
    )
}

/// Crops and resizes a volume to the dataset's grid; labels are scaled to [0, 1] and
/// thresholded at 0.5.
fn prepare(
    volume: &Volume,
    options: &TemplateDataset,
    label: bool,
) -> Result<Volume, ComponentError> {
    let invalid = |message: String| ComponentError::invalid("template dataset", message);
    if volume.shape.len() != options.shape.len() {
        return Err(invalid(format!(
            "the template has shape {:?} but the dataset shape {:?} has {} axes",
            volume.shape,
            options.shape,
            options.shape.len()
        )));
    }
    let (start, size) = options
        .crop
        .clone()
        .unwrap_or_else(|| (vec![0; volume.shape.len()], volume.shape.clone()));
    if start.len() != volume.shape.len()
        || size.len() != volume.shape.len()
        || start
            .iter()
            .zip(&size)
            .zip(&volume.shape)
            .any(|((s, n), d)| *n == 0 || s + n > *d)
    {
        return Err(invalid(format!(
            "crop {start:?} + {size:?} does not fit in {:?}",
            volume.shape
        )));
    }
    let cropped = crop(&volume.data, &volume.shape, &start, &size);
    let mut data = resize_linear(&cropped, &size, &options.shape);
    if label {
        let max = data.iter().copied().fold(0.0f32, f32::max);
        for value in &mut data {
            *value = if max > 0.0 && *value / max >= 0.5 {
                1.0
            } else {
                0.0
            };
        }
    }
    let mut affine = volume.affine;
    for axis in 0..start.len().min(3) {
        for row in affine.iter_mut().take(3) {
            row[3] += row[axis] * start[axis] as f64;
        }
    }
    let affine = crate::preprocess::resized_affine(&affine, &size, &options.shape);
    Ok(Volume {
        data,
        shape: options.shape.clone(),
        affine,
    })
}

/// The sub-array `start .. start + size` of a C-order array.
fn crop(data: &[f32], shape: &[usize], start: &[usize], size: &[usize]) -> Vec<f32> {
    let count: usize = size.iter().product();
    let mut out = Vec::with_capacity(count);
    let mut index = vec![0usize; size.len()];
    for _ in 0..count {
        let flat = index
            .iter()
            .zip(start)
            .zip(shape)
            .fold(0, |acc, ((i, s), d)| acc * d + i + s);
        out.push(data[flat]);
        for axis in (0..size.len()).rev() {
            index[axis] += 1;
            if index[axis] < size[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_nifti;

    fn mni(name: &str) -> Volume {
        read_nifti(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../assets/mni152/{name}.nii.gz")),
        )
        .unwrap()
    }

    #[test]
    fn crops_in_c_order() {
        let data: Vec<f32> = (0..24).map(|v| v as f32).collect();
        assert_eq!(
            crop(&data, &[2, 3, 4], &[1, 1, 2], &[1, 2, 2]),
            vec![18.0, 19.0, 22.0, 23.0]
        );
    }

    #[test]
    fn builds_a_loadable_dataset_from_the_mni_template() {
        let dir = tempfile::tempdir().unwrap();
        let options = TemplateDataset {
            template: mni("t1"),
            labels: vec![mni("gm"), mni("wm")],
            crop: Some((vec![11, 12, 14], vec![48, 48, 48])),
            shape: vec![16, 16, 16],
            pairs: [2, 1, 1],
            field_strength: 1.5,
            low_res_size: vec![3, 3, 3],
            seed: 11,
            write_fields: true,
        };
        let summary = build_paired_dataset(dir.path(), &options).unwrap();
        assert_eq!(summary.pairs, 4);
        let config = crate::PairedLoader {
            moving_image_shape: vec![16, 16, 16],
            fixed_image_shape: vec![16, 16, 16],
            sample_label: None,
            seed: None,
        };
        let dirs = [summary.split_dirs[0].clone()];
        let loader = config
            .build(&SplitSource {
                split: Split::Valid,
                dirs: &dirs,
                format: &crate::NiftiFormat {},
                labeled: true,
            })
            .unwrap();
        let epoch = loader.epoch(0, 0);
        assert_eq!(epoch.len(), 4, "2 pairs × 2 labels (GM, WM)");
        let sample = loader.load(&epoch[0]).unwrap();
        let foreground = sample
            .fixed_label
            .unwrap()
            .iter()
            .filter(|v| **v > 0.5)
            .count();
        assert!(
            foreground > 50,
            "the label covers brain tissue: {foreground} voxels"
        );
        // Moving and fixed differ (different fields) but stay close (small fields).
        let difference: f32 = sample
            .moving_image
            .iter()
            .zip(&sample.fixed_image)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / 4096.0;
        assert!(
            difference > 1e-3 && difference < 0.2,
            "mean |moving − fixed| = {difference}"
        );
        let field =
            read_nifti(&summary.split_dirs[0].join("fields/case_000_moving.nii.gz")).unwrap();
        assert_eq!(field.shape, vec![16, 16, 16, 3]);
        // The crop moved the origin by its start; the resize changed the spacing 96/16 = 6.
        let written =
            read_nifti(&summary.split_dirs[2].join("fixed_images/case_003.nii.gz")).unwrap();
        assert_eq!(written.affine[0][0], 6.0);
        assert_eq!(written.affine[0][3], -98.0 + 40.0 + 2.5);
    }

    #[test]
    fn a_crop_outside_the_template_is_an_error() {
        let options = TemplateDataset {
            template: Volume {
                data: vec![0.0; 8],
                shape: vec![2, 2, 2],
                affine: [[0.0; 4]; 4],
            },
            labels: Vec::new(),
            crop: Some((vec![1, 1, 1], vec![2, 2, 2])),
            shape: vec![2, 2, 2],
            pairs: [1, 0, 0],
            field_strength: 1.0,
            low_res_size: vec![1, 1, 1],
            seed: 0,
            write_fields: true,
        };
        let error = build_paired_dataset(Path::new("/nonexistent"), &options).unwrap_err();
        assert!(error.to_string().contains("does not fit"), "{error}");
    }
}
