//! Building an atlalign-format dataset (`voxreg dataset augment`) from a reference volume:
//! every sample is one section of the reference deformed by a known random smooth field, so
//! the true forward and inverse fields are known exactly (up to the stated inverse error).
//!
//! For a section `S` of the reference (registered by construction), a forward field `d` is
//! drawn: a random affine about the section's centre (rotation, per-axis scale, translation)
//! plus a random smooth local field (`ops::random_ddf`); its inverse `v` is computed by the fixed-point iteration
//! `v ← −d ∘ (id + v)` (which converges for fields whose Jacobian stays away from folding),
//! and the moving image is `M = S ∘ (id + v)`; then `M ∘ (id + d) = S`, so `d` is the field
//! that registers `M` onto the reference (atlalign's `deltas_xy`) and `v` the one that warps
//! the reference into the moving image's space (`inv_deltas_xy`). As atlalign's
//! `DatasetAugmenter`, a draw whose fields fold more than `max_folded_pixels` pixels is
//! redrawn, and after `max_trials` draws the section is stored undeformed (zero fields).

use std::path::{Path, PathBuf};

use voxreg_framework::candle::{Device, Tensor};
use voxreg_framework::metrics::jacobian_stats;
use voxreg_framework::ops::{self, Interp, Padding};
use voxreg_framework::prelude::*;

use crate::file_loaders::write_nifti;
use crate::loaders::{write_atlalign, AtlalignSamples};
use crate::preprocess::resize_linear;

/// Fixed-point iterations of the inverse.
const INVERSE_ITERATIONS: usize = 60;

/// Microns per reference slice written as `p` (atlalign's 25 µm atlas; the `atlalign` data
/// loader's default `slice_spacing`).
pub const SLICE_SPACING_UM: i64 = 25;

/// How to build the dataset.
#[derive(Clone, Debug)]
pub struct AugmentDataset {
    /// The reference volume (3 axes).
    pub reference: Volume,
    /// Label maps on the reference's grid (probabilities or masks, any positive scale: each
    /// is divided by its maximum and thresholded at 0.5 into a mask), written as the
    /// reference's labels for the loader's `reference_labels`.
    pub labels: Vec<Volume>,
    /// The axis the sections are cut across (the coronal axis of an atlas).
    pub axis: usize,
    /// The size each section is resized to, `(h, w)`.
    pub shape: [usize; 2],
    /// Distinct sections in the train, valid and test splits (a section is in one split only).
    pub sections: [usize; 3],
    /// Deformed samples per section (atlalign's `n_iter`).
    pub samples_per_section: usize,
    /// Largest standard deviation of the random fields, in pixels.
    pub field_strength: f64,
    /// Size of the random low-resolution fields.
    pub low_res_size: [usize; 2],
    /// Largest rotation of the random affine part, in degrees (uniform in ±).
    pub rotation: f64,
    /// Largest relative scale change of the random affine part, per axis (uniform in ±).
    pub scale: f64,
    /// Largest translation of the random affine part, in pixels per axis (uniform in ±).
    pub translation: f64,
    /// Seed of the fields.
    pub seed: u64,
    /// A draw is kept when both fields fold fewer pixels than this (atlalign's
    /// `max_corrupted_pixels`).
    pub max_folded_pixels: usize,
    /// Draws per sample before the section is stored undeformed (atlalign's `max_trials`).
    pub max_trials: usize,
}

/// What was written.
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentSummary {
    /// `<out>/<split>` for each split, each holding `dataset.h5`.
    pub split_dirs: [PathBuf; 3],
    /// The resliced reference, `(sections, h, w)`, values 0–255.
    pub reference: PathBuf,
    /// The resliced label masks, `(sections, h, w, labels)`, if labels were given.
    pub reference_labels: Option<PathBuf>,
    /// Samples per split.
    pub samples: [usize; 3],
    /// Samples stored undeformed after `max_trials` rejected draws.
    pub undeformed: usize,
    /// The inverse's error `|d(p) + v(p + d(p))|` in pixels over every pixel `p` of every
    /// sample whose `p + d(p)` lies inside the image: the 50th, 95th and 99th percentiles and
    /// the maximum.
    pub inverse_error: [f64; 4],
}

fn tensor_error(context: &str) -> impl Fn(voxreg_framework::candle::Error) -> ComponentError + '_ {
    move |e| ComponentError::tensor(context, e)
}

fn invalid(message: String) -> ComponentError {
    ComponentError::invalid("dataset augment", message)
}

/// The reference resliced across `axis`, every section resized to `shape` and the values
/// scaled to 0–255 by the volume's minimum and maximum: `(sections, h, w)` in C order.
fn resliced(options: &AugmentDataset) -> Result<(Vec<f32>, usize), ComponentError> {
    let (mut planes, sections) = reslice(&options.reference, options, "the reference")?;
    let (low, high) = planes
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let range = if high > low { high - low } else { 1.0 };
    planes
        .iter_mut()
        .for_each(|v| *v = (*v - low) / range * 255.0);
    Ok((planes, sections))
}

/// The label maps resliced as the reference and thresholded at half their maximum:
/// `(sections, h, w, labels)` in C order.
fn resliced_labels(options: &AugmentDataset, sections: usize) -> Result<Vec<f32>, ComponentError> {
    let [h, w] = options.shape;
    let mut masks = Vec::with_capacity(options.labels.len());
    for (k, label) in options.labels.iter().enumerate() {
        if label.shape != options.reference.shape {
            return Err(invalid(format!(
                "label map {} has shape {:?}, the reference {:?}: labels must lie on the reference's grid",
                k + 1,
                label.shape,
                options.reference.shape
            )));
        }
        let (planes, _) = reslice(label, options, "a label map")?;
        let max = planes.iter().copied().fold(0.0f32, f32::max);
        masks.push(
            planes
                .iter()
                .map(|&v| {
                    if max > 0.0 && v / max >= 0.5 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect::<Vec<f32>>(),
        );
    }
    let count = masks.len();
    let mut out = Vec::with_capacity(sections * h * w * count);
    for pixel in 0..sections * h * w {
        out.extend(masks.iter().map(|m| m[pixel]));
    }
    Ok(out)
}

/// `volume` resliced across `options.axis`, each section resized (linearly) to
/// `options.shape`: `(sections, h, w)` in C order, and the number of sections.
fn reslice(
    volume: &Volume,
    options: &AugmentDataset,
    what: &str,
) -> Result<(Vec<f32>, usize), ComponentError> {
    if volume.shape.len() != 3 || options.axis > 2 {
        return Err(invalid(format!(
            "{what} must be a 3D volume cut across axis 0, 1 or 2; got shape {:?} and axis {}",
            volume.shape, options.axis
        )));
    }
    let dims = &volume.shape;
    let (a, b) = match options.axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let strides = [dims[1] * dims[2], dims[2], 1];
    let sections = dims[options.axis];
    let [h, w] = options.shape;
    let mut out = Vec::with_capacity(sections * h * w);
    for s in 0..sections {
        let mut plane = Vec::with_capacity(dims[a] * dims[b]);
        for i in 0..dims[a] {
            for j in 0..dims[b] {
                let flat = s * strides[options.axis] + i * strides[a] + j * strides[b];
                plane.push(volume.data[flat]);
            }
        }
        out.extend(resize_linear(&plane, &[dims[a], dims[b]], &[h, w]));
    }
    Ok((out, sections))
}

/// `total` section indices spread evenly over the middle 80 % of `sections`, each assigned
/// to the split furthest below its share, so the splits interleave along the axis.
fn assign_sections(sections: usize, counts: [usize; 3]) -> Result<[Vec<usize>; 3], ComponentError> {
    let total: usize = counts.iter().sum();
    let (lo, hi) = (sections as f64 * 0.1, sections as f64 * 0.9);
    let picked: Vec<usize> = (0..total)
        .map(|k| (lo + (hi - lo) * (k as f64 + 0.5) / total as f64) as usize)
        .collect();
    let mut distinct = picked.clone();
    distinct.dedup();
    if total == 0 || distinct.len() != total {
        return Err(invalid(format!(
            "--sections asks for {total} distinct sections, but the reference has {sections} across the axis (the middle 80 % is used)"
        )));
    }
    let mut splits: [Vec<usize>; 3] = Default::default();
    for section in picked {
        let split = (0..3)
            .filter(|&s| splits[s].len() < counts[s])
            .min_by(|&x, &y| {
                let share = |s: usize| splits[s].len() as f64 / counts[s] as f64;
                share(x).total_cmp(&share(y))
            })
            .unwrap_or(0);
        splits[split].push(section);
    }
    Ok(splits)
}

/// The inverse of `d` by the fixed-point iteration `v ← −d ∘ (id + v)` (border padding).
///
/// # Shapes
/// `d`: `(1, 2, h, w)` → `(1, 2, h, w)`.
fn inverse(d: &Tensor) -> voxreg_framework::candle::Result<Tensor> {
    let mut v = d.neg()?;
    for _ in 0..INVERSE_ITERATIONS {
        // compose_ddf(d, v) = v + d ∘ (id + v); the update is v − that = −d ∘ (id + v).
        v = (&v - ops::compose_ddf(d, &v, Padding::Border)?)?;
    }
    Ok(v)
}

fn values(t: &Tensor) -> Result<Vec<f32>, ComponentError> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(tensor_error("reading a field"))
}

/// Writes `<out>/reference.nii.gz` and `<out>/{train,valid,test}/dataset.h5`.
pub fn build_augmented_dataset(
    out: &Path,
    options: &AugmentDataset,
) -> Result<AugmentSummary, ComponentError> {
    let [h, w] = options.shape;
    if h < 2 || w < 2 || options.samples_per_section == 0 || options.max_trials == 0 {
        return Err(invalid(format!(
            "--shape needs at least 2 × 2 pixels and --samples-per-section and --max-trials at least 1, got {:?}, {}, {}",
            options.shape, options.samples_per_section, options.max_trials
        )));
    }
    let (reference, sections) = resliced(options)?;
    let splits = assign_sections(sections, options.sections)?;
    std::fs::create_dir_all(out).map_err(|e| ComponentError::Data {
        path: out.to_path_buf(),
        message: format!("cannot create the folder: {e}"),
    })?;
    let reference_path = out.join("reference.nii.gz");
    let mut affine = [[0.0; 4]; 4];
    for (i, row) in affine.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    write_nifti(
        &reference_path,
        &Volume {
            data: reference.clone(),
            shape: vec![sections, h, w],
            affine,
        },
    )?;
    let reference_labels = if options.labels.is_empty() {
        None
    } else {
        let path = out.join("reference_labels.nii.gz");
        let masks = resliced_labels(options, sections)?;
        write_nifti(
            &path,
            &Volume {
                data: masks,
                shape: vec![sections, h, w, options.labels.len()],
                affine,
            },
        )?;
        Some(path)
    };
    let device = Device::Cpu;
    let mut errors = Vec::new();
    let mut undeformed = 0;
    let mut samples = [0; 3];
    let names = ["train", "valid", "test"];
    for (split, planes) in splits.iter().enumerate() {
        let mut data = AtlalignSamples {
            shape: options.shape,
            ..AtlalignSamples::default()
        };
        for &plane in planes {
            let section = &reference[plane * h * w..(plane + 1) * h * w];
            let image = Tensor::from_slice(section, (1, 1, h, w), &device)
                .map_err(tensor_error("the section"))?;
            for sample in 0..options.samples_per_section {
                let drawn = draw(options, &image, split, plane, sample)?;
                let Drawn {
                    moving,
                    forward,
                    backward,
                } = drawn.unwrap_or_else(|| {
                    undeformed += 1;
                    Drawn {
                        moving: section.to_vec(),
                        forward: vec![0.0; 2 * h * w],
                        backward: vec![0.0; 2 * h * w],
                    }
                });
                errors.extend(inverse_errors(&forward, &backward, [h, w])?);
                data.images
                    .extend(moving.iter().map(|v| v.round().clamp(0.0, 255.0) as u8));
                data.ddfs.extend(forward);
                data.inverse_ddfs.extend(backward);
                data.positions.push(plane as i64 * SLICE_SPACING_UM);
                data.image_ids.push(plane as i64);
                data.dataset_ids.push(split as i64);
            }
        }
        samples[split] = data.len();
        let dir = out.join(names[split]);
        std::fs::create_dir_all(&dir).map_err(|e| ComponentError::Data {
            path: dir.clone(),
            message: format!("cannot create the folder: {e}"),
        })?;
        write_atlalign(&dir.join("dataset.h5"), &data)?;
    }
    errors.sort_by(f64::total_cmp);
    let at = |q: f64| errors[((errors.len() - 1) as f64 * q).round() as usize];
    Ok(AugmentSummary {
        split_dirs: names.map(|s| out.join(s)),
        reference: reference_path,
        reference_labels,
        samples,
        undeformed,
        inverse_error: [at(0.5), at(0.95), at(0.99), at(1.0)],
    })
}

/// One deformed sample: the moving image (0–255), the forward and the inverse field in
/// voxreg's layout (`2 · h · w` each).
struct Drawn {
    moving: Vec<f32>,
    forward: Vec<f32>,
    backward: Vec<f32>,
}

/// One accepted draw for a sample; `None` after `max_trials` rejected draws.
fn draw(
    options: &AugmentDataset,
    section: &Tensor,
    split: usize,
    plane: usize,
    sample: usize,
) -> Result<Option<Drawn>, ComponentError> {
    let shape = options.shape;
    for trial in 0..options.max_trials {
        let seed = options
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(((split * 1_000_003 + plane) * 1009 + sample) as u64 * 31 + trial as u64);
        let d = ops::random_ddf(
            1,
            &shape,
            &options.low_res_size,
            options.field_strength,
            seed,
            &Device::Cpu,
        )
        .map_err(tensor_error("random field"))?;
        let affine = random_affine(options, seed)?;
        let d = (d + affine).map_err(tensor_error("random field"))?;
        let v = inverse(&d).map_err(tensor_error("inverting the field"))?;
        let (forward, backward) = (values(&d)?, values(&v)?);
        let folded = |field: &[f32]| {
            jacobian_stats(field, &shape).map_or(usize::MAX, |stats| stats.folding_count)
        };
        if forward.iter().chain(&backward).any(|x| !x.is_finite())
            || folded(&forward) >= options.max_folded_pixels.max(1)
            || folded(&backward) >= options.max_folded_pixels.max(1)
        {
            continue;
        }
        let moving = ops::warp(section, &v, Interp::Linear, Padding::Zeros)
            .map_err(tensor_error("warping the section"))?;
        return Ok(Some(Drawn {
            moving: values(&moving)?,
            forward,
            backward,
        }));
    }
    Ok(None)
}

/// The displacement `q − p` of a random affine `q = R S (p − c) + c + t` about the centre
/// `c` of the section, drawn from `seed`: rotation `R` by an angle uniform in
/// `±rotation` degrees, scales `S` uniform in `1 ± scale` per axis, `t` uniform in
/// `±translation` pixels per axis.
///
/// # Shapes
/// → `(1, 2, h, w)`.
fn random_affine(options: &AugmentDataset, seed: u64) -> Result<Tensor, ComponentError> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xA5A5_5A5A_0F0F_F0F0);
    let mut symmetric = |bound: f64| {
        if bound > 0.0 {
            rng.random_range(-bound..=bound)
        } else {
            0.0
        }
    };
    let angle = symmetric(options.rotation).to_radians();
    let scales = [
        1.0 + symmetric(options.scale),
        1.0 + symmetric(options.scale),
    ];
    let shift = [
        symmetric(options.translation),
        symmetric(options.translation),
    ];
    let [h, w] = options.shape;
    let centre = [(h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0];
    let (cos, sin) = (angle.cos(), angle.sin());
    let mut rows = Vec::with_capacity(h * w);
    let mut columns = Vec::with_capacity(h * w);
    for i in 0..h {
        for j in 0..w {
            let (y, x) = (
                scales[0] * (i as f64 - centre[0]),
                scales[1] * (j as f64 - centre[1]),
            );
            let q = [
                cos * y - sin * x + centre[0] + shift[0],
                sin * y + cos * x + centre[1] + shift[1],
            ];
            rows.push((q[0] - i as f64) as f32);
            columns.push((q[1] - j as f64) as f32);
        }
    }
    rows.extend(columns);
    Tensor::from_vec(rows, (1, 2, h, w), &Device::Cpu).map_err(tensor_error("random affine"))
}

/// `|d(p) + v(p + d(p))|` per pixel: how far from `p` the point lands after moving by the
/// forward then by the inverse displacement (the composition the fixed-point iteration does
/// not solve directly), at the pixels whose forward displacement stays inside the image (the
/// inverse is not defined outside it).
fn inverse_errors(
    forward: &[f32],
    backward: &[f32],
    [h, w]: [usize; 2],
) -> Result<Vec<f64>, ComponentError> {
    let tensor = |data: &[f32]| Tensor::from_slice(data, (1, 2, h, w), &Device::Cpu);
    let d = tensor(forward).map_err(tensor_error("field"))?;
    let v = tensor(backward).map_err(tensor_error("field"))?;
    let residual = ops::compose_ddf(&v, &d, Padding::Border)
        .and_then(|r| r.sqr()?.sum(1)?.sqrt()?.flatten_all()?.to_vec1::<f32>())
        .map_err(tensor_error("composing the fields"))?;
    let plane = h * w;
    let inside = |k: usize| {
        let (row, column) = (
            (k / w) as f32 + forward[k],
            (k % w) as f32 + forward[plane + k],
        );
        (0.0..=(h - 1) as f32).contains(&row) && (0.0..=(w - 1) as f32).contains(&column)
    };
    Ok(residual
        .into_iter()
        .enumerate()
        .filter(|&(k, _)| inside(k))
        .map(|(_, r)| f64::from(r))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loaders::AtlalignLoader;

    /// `image` warped by `ddf` (bilinear, zeros outside), `h · w` values.
    fn warp_by(image: &[f32], ddf: &[f32], [h, w]: [usize; 2]) -> Vec<f32> {
        let image = Tensor::from_slice(image, (1, 1, h, w), &Device::Cpu).unwrap();
        let ddf = Tensor::from_slice(ddf, (1, 2, h, w), &Device::Cpu).unwrap();
        ops::warp(&image, &ddf, Interp::Linear, Padding::Zeros)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }
    use crate::H5Format;

    /// A smooth 3D blob volume (12 sections of 16 × 20).
    fn volume() -> Volume {
        let shape = vec![12, 16, 20];
        let mut data = Vec::new();
        for s in 0..12 {
            for i in 0..16 {
                for j in 0..20 {
                    let (y, x) = (i as f32 - 8.0, j as f32 - 10.0);
                    data.push((-(y * y + x * x) / (30.0 + s as f32)).exp() * 100.0);
                }
            }
        }
        Volume {
            data,
            shape,
            affine: [[0.0; 4]; 4],
        }
    }

    fn options() -> AugmentDataset {
        AugmentDataset {
            reference: volume(),
            labels: vec![volume()],
            axis: 0,
            shape: [16, 20],
            sections: [4, 2, 2],
            samples_per_section: 2,
            field_strength: 1.5,
            low_res_size: [3, 3],
            rotation: 4.0,
            scale: 0.04,
            translation: 1.5,
            seed: 4,
            max_folded_pixels: 1,
            max_trials: 5,
        }
    }

    #[test]
    fn sections_are_spread_and_each_in_one_split() {
        let splits = assign_sections(20, [4, 2, 2]).unwrap();
        let mut all: Vec<usize> = splits.iter().flatten().copied().collect();
        assert_eq!(splits.iter().map(Vec::len).collect::<Vec<_>>(), [4, 2, 2]);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8);
        assert!(all.iter().all(|&s| (2..18).contains(&s)));
        assert!(assign_sections(5, [4, 2, 2]).is_err());
    }

    #[test]
    fn the_inverse_undoes_the_field_and_the_dataset_loads() {
        let dir = tempfile::tempdir().unwrap();
        let summary = build_augmented_dataset(dir.path(), &options()).unwrap();
        assert_eq!(summary.samples, [8, 4, 4]);
        assert_eq!(
            summary.undeformed, 0,
            "fields of 1.5 px on 3 × 3 do not fold"
        );
        // The inverse holds to a hundredth of a pixel for half the pixels; the largest errors
        // are near the border, where the inverse needs the field outside the image.
        let [p50, p95, _, max] = summary.inverse_error;
        assert!(
            p50 < 0.01 && p95 < 0.1 && max < 0.5,
            "{:?}",
            summary.inverse_error
        );

        let loader = AtlalignLoader {
            image_shape: vec![16, 20],
            file: "dataset.h5".to_owned(),
            reference: "../reference.nii.gz".to_owned(),
            slice_spacing: SLICE_SPACING_UM as f64,
            reference_max: 255.0,
            inverse: true,
            indexes: None,
            reference_labels: Some("../reference_labels.nii.gz".to_owned()),
            sample_label: None,
            seed: None,
        };
        assert!(summary.reference_labels.is_some());
        let dirs = vec![summary.split_dirs[2].clone()];
        let test = loader
            .build(&SplitSource {
                split: Split::Test,
                dirs: &dirs,
                format: &H5Format {},
                labeled: true,
            })
            .unwrap();
        // The true field registers the moving image back onto its reference section, away
        // from the border where the moving image was filled with zeros, up to two bilinear
        // interpolations and the rounding to 8 bits.
        for sample in test.epoch(0, 0) {
            let loaded = test.load(&sample).unwrap();
            let target = &loaded
                .extra
                .iter()
                .find(|(d, _, _)| d.name == names::TRUE_PRED_FIXED_IMAGE)
                .unwrap()
                .2;
            let mut worst = 0.0f32;
            for i in 3..13 {
                for j in 3..17 {
                    let k = i * 20 + j;
                    worst = worst.max((target[k] - loaded.fixed_image[k]).abs());
                }
            }
            assert!(worst < 0.05, "{worst}");
            // The moving label is the reference's label in the section's space: the true
            // field brings it back onto the fixed label (one label: the blob's core).
            let (moving, fixed) = (loaded.moving_label.unwrap(), loaded.fixed_label.unwrap());
            let ddf = &loaded
                .extra
                .iter()
                .find(|(d, _, _)| d.name == names::TRUE_DDF)
                .unwrap()
                .2;
            let back = warp_by(&moving, ddf, [16, 20]);
            let overlap = |a: &[f32], b: &[f32]| {
                let both: f32 = a.iter().zip(b).map(|(x, y)| x.min(*y)).sum();
                2.0 * both / (a.iter().sum::<f32>() + b.iter().sum::<f32>())
            };
            assert!(fixed.contains(&1.0) && fixed.contains(&0.0));
            // Two bilinear warps soften the mask's edge on this small image.
            assert!(overlap(&back, &fixed) > 0.9, "{}", overlap(&back, &fixed));
        }
    }
}
