//! The `atlalign` loader on files written as atlalign stores them (uint8 images, float16
//! x-first fields): the conversion to voxreg's layout, the reference slicing, the supervised
//! target, sampling, and the errors a bad file causes.

use std::path::{Path, PathBuf};

use voxreg_framework::prelude::*;

use super::{AtlalignLoader, SampleIndexes};
use crate::loaders::atlalign_file::{write_atlalign, AtlalignSamples};
use crate::{write_npz, H5Format};

const SHAPE: [usize; 2] = [6, 8];

/// Three samples: image `k` holds `10 k + column`; field `k` shifts rows by `0.5 k` and
/// columns by `1`, its inverse by the opposite.
fn samples() -> AtlalignSamples {
    let [h, w] = SHAPE;
    let mut out = AtlalignSamples {
        shape: SHAPE,
        positions: vec![0, 30, 200],
        image_ids: vec![11, 12, 13],
        dataset_ids: vec![7, 7, 8],
        ..AtlalignSamples::default()
    };
    for k in 0..3 {
        for _row in 0..h {
            out.images.extend((0..w).map(|c| (10 * k + c) as u8));
        }
        let (rows, columns) = (0.5 * k as f32, 1.0f32);
        out.ddfs.extend(std::iter::repeat_n(rows, h * w));
        out.ddfs.extend(std::iter::repeat_n(columns, h * w));
        out.inverse_ddfs.extend(std::iter::repeat_n(-rows, h * w));
        out.inverse_ddfs
            .extend(std::iter::repeat_n(-columns, h * w));
    }
    out
}

/// A reference volume of 4 planes, plane `s` holding `51 s` everywhere (so ÷ 255 gives `s / 5`).
fn write_reference(dir: &Path) {
    let [h, w] = SHAPE;
    let data: Vec<f32> = (0..4)
        .flat_map(|s| std::iter::repeat_n(51.0 * s as f32, h * w))
        .collect();
    let volume = Volume {
        data,
        shape: vec![4, h, w],
        affine: [[0.0; 4]; 4],
    };
    write_npz(&dir.join("nissl.npz"), &[("vol", &volume)]).unwrap();
}

fn dataset(samples: &AtlalignSamples) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_atlalign(&dir.path().join("dataset.h5"), samples).unwrap();
    write_reference(dir.path());
    dir
}

fn config() -> AtlalignLoader {
    AtlalignLoader {
        image_shape: SHAPE.to_vec(),
        file: "dataset.h5".to_owned(),
        reference: "nissl.npz".to_owned(),
        slice_spacing: 25.0,
        reference_max: 255.0,
        inverse: true,
        indexes: None,
        reference_labels: None,
        sample_label: None,
        seed: Some(3),
    }
}

fn build(
    config: &AtlalignLoader,
    split: Split,
    dir: &Path,
) -> Result<Box<dyn DataLoader>, ComponentError> {
    let dirs = vec![dir.to_path_buf()];
    config.build(&SplitSource {
        split,
        dirs: &dirs,
        format: &H5Format {},
        labeled: false,
    })
}

fn extra<'s>(sample: &'s Sample, name: &str) -> &'s [f32] {
    &sample
        .extra
        .iter()
        .find(|(decl, _, _)| decl.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .2
}

fn error_of(config: &AtlalignLoader, dir: &Path) -> String {
    match build(config, Split::Train, dir) {
        Ok(_) => panic!("the dataset should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn samples_carry_the_reference_slice_and_fields_in_voxregs_layout() {
    let dir = dataset(&samples());
    let loader = build(&config(), Split::Valid, dir.path()).unwrap();
    let refs = loader.epoch(0, 0);
    assert_eq!(refs.len(), 3);
    let [h, w] = SHAPE;
    for (k, expected_slice) in [(0usize, 0usize), (1, 1), (2, 3)] {
        let sample = loader.load(&refs[k]).unwrap();
        let expected: Vec<f32> = (0..h)
            .flat_map(|_| (0..w).map(move |c| (10 * k + c) as f32 / 255.0))
            .collect();
        assert_eq!(sample.moving_image, expected);
        // p = 0, 30, 200 µm at 25 µm per slice: slices 0, 1 and 8 → the last (3).
        assert!(sample
            .fixed_image
            .iter()
            .all(|&v| (v - expected_slice as f32 / 5.0).abs() < 1e-6));
        let ddf = extra(&sample, names::TRUE_DDF);
        assert!(ddf[..h * w].iter().all(|&v| v == 0.5 * k as f32));
        assert!(ddf[h * w..].iter().all(|&v| v == 1.0));
        let inverse = extra(&sample, names::TRUE_INV_DDF);
        assert!(inverse[h * w..].iter().all(|&v| v == -1.0));
        // The target pulls each pixel from one column to its right (Δx = 1): columns shift
        // left, the last column samples outside and is 0.
        let target = extra(&sample, names::TRUE_PRED_FIXED_IMAGE);
        if k == 0 {
            for row in 0..h {
                for c in 0..w {
                    let expected = if c + 1 < w {
                        (c + 1) as f32 / 255.0
                    } else {
                        0.0
                    };
                    assert!((target[row * w + c] - expected).abs() < 1e-6);
                }
            }
        }
        assert_eq!(
            sample.ids.0.name,
            format!("{k}_{}_{}", [7, 7, 8][k], 11 + k)
        );
    }
}

#[test]
fn training_shuffles_by_seed_and_indexes_select_samples() {
    let dir = dataset(&samples());
    let train = build(&config(), Split::Train, dir.path()).unwrap();
    let order = |epoch| -> Vec<usize> { train.epoch(epoch, 0).iter().map(|s| s.moving).collect() };
    assert_eq!(order(0), order(0));
    let mut sorted = order(1);
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 1, 2]);
    let subset = AtlalignLoader {
        indexes: Some(SampleIndexes::List(vec![2, 0])),
        ..config()
    };
    let valid = build(&subset, Split::Valid, dir.path()).unwrap();
    let refs = valid.epoch(0, 0);
    let names: Vec<String> = refs
        .iter()
        .map(|r| valid.load(r).unwrap().ids.0.name)
        .collect();
    assert_eq!(names, vec!["2_8_13", "0_7_11"]);
    let outside = AtlalignLoader {
        indexes: Some(SampleIndexes::List(vec![3])),
        ..config()
    };
    assert!(error_of(&outside, dir.path()).contains("the file has 3 samples"));
}

#[test]
fn a_two_dimensional_reference_serves_every_sample() {
    let dir = dataset(&samples());
    let [h, w] = SHAPE;
    let image = Volume {
        data: vec![255.0; h * w],
        shape: SHAPE.to_vec(),
        affine: [[0.0; 4]; 4],
    };
    write_npz(&dir.path().join("atlas.npz"), &[("vol", &image)]).unwrap();
    let flat = AtlalignLoader {
        reference: "atlas.npz".to_owned(),
        ..config()
    };
    let loader = build(&flat, Split::Test, dir.path()).unwrap();
    let sample = loader.load(&loader.epoch(0, 0)[2]).unwrap();
    assert!(sample.fixed_image.iter().all(|&v| v == 1.0));
}

/// Rewrites the dataset with one dataset replaced (h5py-style edits of a good file).
fn with_dataset(dir: &Path, key: &str, write: impl Fn(&hdf5::File)) -> PathBuf {
    let path = dir.join("dataset.h5");
    let file = hdf5::File::append(&path).unwrap();
    file.unlink(key).unwrap();
    write(&file);
    path
}

#[test]
fn bad_files_are_refused_naming_the_file_and_key() {
    let dir = dataset(&samples());
    let path = dir.path().join("dataset.h5");
    let wrong_shape = AtlalignLoader {
        image_shape: vec![6, 9],
        ..config()
    };
    let message = error_of(&wrong_shape, dir.path());
    assert!(
        message.contains("dataset.h5") && message.contains("image_shape"),
        "{message}"
    );

    let missing = tempfile::tempdir().unwrap();
    let mut no_inverse = samples();
    no_inverse.inverse_ddfs.clear();
    write_atlalign(&missing.path().join("dataset.h5"), &no_inverse).unwrap();
    write_reference(missing.path());
    let message = error_of(&config(), missing.path());
    assert!(message.contains("no dataset `inv_deltas_xy`"), "{message}");
    assert!(build(
        &AtlalignLoader {
            inverse: false,
            ..config()
        },
        Split::Train,
        missing.path()
    )
    .is_ok());

    with_dataset(dir.path(), "img", |file| {
        let floats = ndarray::Array3::<f32>::zeros((3, 6, 8));
        file.new_dataset_builder()
            .with_data(&floats)
            .create("img")
            .unwrap();
    });
    let message = error_of(&config(), dir.path());
    assert!(
        message.contains("`img` must be uint8") && message.contains("float32"),
        "{message}"
    );

    with_dataset(dir.path(), "img", |file| {
        let fewer = ndarray::Array3::<u8>::zeros((2, 6, 8));
        file.new_dataset_builder()
            .with_data(&fewer)
            .create("img")
            .unwrap();
    });
    let message = error_of(&config(), dir.path());
    assert!(
        message.contains("`deltas_xy` must be (n, h, w, 2) = [2, 6, 8, 2]"),
        "{message}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn non_finite_fields_and_unusable_positions_are_errors() {
    let mut broken = samples();
    broken.ddfs[5] = f32::NAN;
    let dir = dataset(&broken);
    let loader = build(&config(), Split::Valid, dir.path()).unwrap();
    let message = loader.load(&loader.epoch(0, 0)[0]).unwrap_err().to_string();
    assert!(
        message.contains("`deltas_xy`[0]") && message.contains("non-finite"),
        "{message}"
    );

    let mut negative = samples();
    negative.positions[1] = -25;
    let dir = dataset(&negative);
    assert!(error_of(&config(), dir.path()).contains("`p`[1] = -25 is negative"));
}

#[test]
fn reference_labels_give_every_sample_its_labels_and_wrong_shapes_are_refused() {
    let dir = dataset(&samples());
    let [h, w] = SHAPE;
    // Two masks per plane: the left half and the top half.
    let mut data = Vec::new();
    for _plane in 0..4 {
        for row in 0..h {
            for column in 0..w {
                data.push(if column < w / 2 { 1.0 } else { 0.0 });
                data.push(if row < h / 2 { 1.0 } else { 0.0 });
            }
        }
    }
    let labels = Volume {
        data,
        shape: vec![4, h, w, 2],
        affine: [[0.0; 4]; 4],
    };
    write_npz(&dir.path().join("labels.npz"), &[("seg", &labels)]).unwrap();
    let labelled = AtlalignLoader {
        reference_labels: Some("labels.npz".to_owned()),
        ..config()
    };
    let dirs = vec![dir.path().to_path_buf()];
    let loader = labelled
        .build(&SplitSource {
            split: Split::Valid,
            dirs: &dirs,
            format: &H5Format {},
            labeled: true,
        })
        .unwrap();
    let refs = loader.epoch(0, 0);
    assert_eq!(refs.len(), 6, "every label of every sample");
    // Sample 0's true field pulls from one column to the right (Δx = 1), its inverse from one
    // column to the left: the moving label is the reference's left half pushed one column
    // right, and its first column samples outside the image (0).
    let sample = loader.load(&refs[0]).unwrap();
    let (moving, fixed) = (sample.moving_label.unwrap(), sample.fixed_label.unwrap());
    assert_eq!((fixed[w / 2 - 1], fixed[w / 2]), (1.0, 0.0));
    assert_eq!((moving[w / 2], moving[w / 2 + 1]), (1.0, 0.0));
    assert_eq!((moving[0], moving[1]), (0.0, 1.0));

    let flat = Volume {
        data: vec![0.0; h * w],
        shape: SHAPE.to_vec(),
        affine: [[0.0; 4]; 4],
    };
    write_npz(&dir.path().join("flat.npz"), &[("seg", &flat)]).unwrap();
    let wrong = AtlalignLoader {
        reference_labels: Some("flat.npz".to_owned()),
        ..config()
    };
    let message = match wrong.build(&SplitSource {
        split: Split::Valid,
        dirs: &dirs,
        format: &H5Format {},
        labeled: true,
    }) {
        Ok(_) => panic!("labels of a 2D shape for a reference volume"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains("`reference_labels` must be (4, 6, 8)"),
        "{message}"
    );
}

#[test]
fn a_file_declaring_huge_sections_is_refused_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dataset.h5");
    let file = hdf5::File::create(&path).unwrap();
    // Chunked and empty: a few bytes on disk for 10¹² pixels per section.
    file.new_dataset::<u8>()
        .chunk((1, 1, 1024))
        .shape((2, 1_000_000, 1_000_000))
        .create("img")
        .unwrap();
    drop(file);
    write_reference(dir.path());
    let huge = AtlalignLoader {
        image_shape: vec![1_000_000, 1_000_000],
        ..config()
    };
    let message = error_of(&huge, dir.path());
    assert!(message.contains("1000000 × 1000000 pixels"), "{message}");
}
