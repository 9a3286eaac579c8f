//! Data loaders on generated datasets in DeepReg's layouts (NIfTI and HDF5): pair counts and
//! sampling rules, seeding, preprocessing, and every error a user's data can cause.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use voxreg_framework::prelude::*;

use super::{GroupedLoader, IntraGroupOption, PairedLoader, SampleLabel, UnpairedLoader};
use crate::{write_h5, write_nifti, H5Format, NiftiFormat};

fn volume(shape: &[usize], scale: f32) -> Volume {
    let count: usize = shape.iter().product();
    Volume {
        data: (0..count).map(|i| (i % 7) as f32 * scale).collect(),
        shape: shape.to_vec(),
        affine: [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
    }
}

/// Binary label volume(s): `labels` channels on a trailing axis (none if 1 and `squeeze`).
fn label(shape: &[usize], labels: usize) -> Volume {
    let mut full = shape.to_vec();
    if labels > 1 {
        full.push(labels);
    }
    let count: usize = full.iter().product();
    Volume {
        data: (0..count).map(|i| ((i / 3) % 2) as f32).collect(),
        ..volume(&full, 1.0)
    }
}

fn nifti(root: &Path, kind: &str, name: &str, volume: &Volume) {
    let path = root.join(kind).join(format!("{name}.nii.gz"));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_nifti(&path, volume).unwrap();
}

fn paired_dataset(root: &Path, pairs: usize, labels: usize) {
    for p in 0..pairs {
        let name = format!("case{p}");
        nifti(
            root,
            "moving_images",
            &name,
            &volume(&[6, 5, 4], 1.0 + p as f32),
        );
        nifti(root, "fixed_images", &name, &volume(&[6, 5, 4], 2.0));
        nifti(root, "moving_labels", &name, &label(&[6, 5, 4], labels));
        nifti(root, "fixed_labels", &name, &label(&[6, 5, 4], labels));
    }
}

fn source<'a>(
    split: Split,
    dirs: &'a [PathBuf],
    format: &'a dyn FileLoaderConfig,
    labeled: bool,
) -> SplitSource<'a> {
    SplitSource {
        split,
        dirs,
        format,
        labeled,
    }
}

fn paired_config() -> PairedLoader {
    PairedLoader {
        moving_image_shape: vec![4, 4, 4],
        fixed_image_shape: vec![3, 3, 3],
        sample_label: None,
        seed: None,
    }
}

#[test]
fn paired_yields_every_pair_once_per_epoch_seeded() {
    let dir = tempfile::tempdir().unwrap();
    paired_dataset(dir.path(), 6, 2);
    let dirs = [dir.path().to_owned()];
    let loader = paired_config()
        .build(&source(Split::Train, &dirs, &NiftiFormat {}, true))
        .unwrap();
    let epoch = loader.epoch(0, 7);
    assert_eq!(epoch.len(), 6, "training samples one label per pair");
    let pairs: HashSet<(usize, usize)> = epoch.iter().map(|s| (s.moving, s.fixed)).collect();
    assert_eq!(pairs, (0..6).map(|i| (i, i)).collect());
    assert!(epoch.iter().all(|s| matches!(s.label, Some(0 | 1))));
    assert_eq!(
        loader.epoch(0, 7),
        epoch,
        "same seed and epoch, same samples"
    );
    let orders: HashSet<Vec<usize>> = (0..6)
        .map(|e| loader.epoch(e, 7).iter().map(|s| s.moving).collect())
        .collect();
    assert!(orders.len() > 1, "epochs are shuffled differently");

    let valid = paired_config()
        .build(&source(Split::Valid, &dirs, &NiftiFormat {}, true))
        .unwrap();
    assert_eq!(
        valid.epoch(0, 1).len(),
        12,
        "validation takes every label of every pair"
    );
    assert_eq!(
        valid.epoch(0, 1),
        valid.epoch(5, 99),
        "validation sampling is fixed"
    );
}

#[test]
fn samples_are_normalised_resized_and_labelled() {
    let dir = tempfile::tempdir().unwrap();
    paired_dataset(dir.path(), 2, 2);
    let dirs = [dir.path().to_owned()];
    let loader = paired_config()
        .build(&source(Split::Test, &dirs, &NiftiFormat {}, true))
        .unwrap();
    let reference = loader
        .epoch(0, 0)
        .into_iter()
        .find(|s| s.label == Some(1))
        .unwrap();
    let sample = loader.load(&reference).unwrap();
    assert_eq!(sample.moving_image.len(), 64);
    assert_eq!(sample.fixed_image.len(), 27);
    for image in [&sample.moving_image, &sample.fixed_image] {
        let max = image.iter().copied().fold(f32::MIN, f32::max);
        let min = image.iter().copied().fold(f32::MAX, f32::min);
        assert!(min >= 0.0 && max <= 1.0 && max > 0.5, "{min}..{max}");
    }
    let moving_label = sample.moving_label.unwrap();
    assert_eq!(moving_label.len(), 64);
    assert!(moving_label.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(sample.fixed_label.unwrap().len(), 27);
    assert_eq!(sample.ids.0, sample.ids.1);
    // 6 → 3 voxels along axis 0: spacing 2, first voxel centre at input coordinate 0.5.
    assert_eq!(sample.fixed_affine[0][0], 2.0);
    assert_eq!(sample.fixed_affine[0][3], 0.5);
}

#[test]
fn unlabelled_loading_ignores_labels() {
    let dir = tempfile::tempdir().unwrap();
    paired_dataset(dir.path(), 3, 1);
    let dirs = [dir.path().to_owned()];
    let loader = paired_config()
        .build(&source(Split::Train, &dirs, &NiftiFormat {}, false))
        .unwrap();
    let epoch = loader.epoch(0, 0);
    assert!(epoch.iter().all(|s| s.label.is_none()));
    assert!(loader.load(&epoch[0]).unwrap().moving_label.is_none());
}

#[test]
fn several_directories_are_concatenated() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    paired_dataset(a.path(), 2, 1);
    paired_dataset(b.path(), 3, 1);
    let dirs = [a.path().to_owned(), b.path().to_owned()];
    let loader = paired_config()
        .build(&source(Split::Valid, &dirs, &NiftiFormat {}, true))
        .unwrap();
    assert_eq!(loader.epoch(0, 0).len(), 5);
}

fn h5_pool(root: &Path, images: usize, grouped: &[usize]) {
    let mut entries = Vec::new();
    let mut labels = Vec::new();
    if grouped.is_empty() {
        for i in 0..images {
            entries.push((format!("image{i}"), volume(&[5, 5, 5], 1.0)));
            labels.push((format!("image{i}"), label(&[5, 5, 5], 3)));
        }
    } else {
        for (g, &count) in grouped.iter().enumerate() {
            for i in 0..count {
                entries.push((format!("group-{g}-{i}"), volume(&[5, 5, 5], 1.0)));
                labels.push((format!("group-{g}-{i}"), label(&[5, 5, 5], 3)));
            }
        }
    }
    write_h5(&root.join("images.h5"), &entries).unwrap();
    write_h5(&root.join("labels.h5"), &labels).unwrap();
}

#[test]
fn unpaired_draws_half_the_images_as_pairs_without_replacement() {
    let dir = tempfile::tempdir().unwrap();
    h5_pool(dir.path(), 5, &[]);
    let dirs = [dir.path().to_owned()];
    let config = UnpairedLoader {
        image_shape: vec![4, 4, 4],
        sample_label: Some(SampleLabel::Sample),
        seed: Some(3),
    };
    let loader = config
        .build(&source(Split::Train, &dirs, &H5Format {}, true))
        .unwrap();
    for epoch in 0..4 {
        let samples = loader.epoch(epoch, 0);
        assert_eq!(samples.len(), 2);
        let used: HashSet<usize> = samples.iter().flat_map(|s| [s.moving, s.fixed]).collect();
        assert_eq!(used.len(), 4, "no image twice in one epoch");
    }
    let sample = loader.load(&loader.epoch(0, 0)[0]).unwrap();
    assert_eq!(sample.moving_image.len(), 64);
    assert_ne!(sample.ids.0, sample.ids.1);
}

fn grouped_config(prob: f64, option: IntraGroupOption, in_group: bool) -> GroupedLoader {
    GroupedLoader {
        image_shape: vec![4, 4, 4],
        intra_group_prob: prob,
        intra_group_option: option,
        sample_image_in_group: in_group,
        sample_label: Some(SampleLabel::Sample),
        seed: None,
    }
}

#[test]
fn grouped_pair_counts_follow_deepreg() {
    let dir = tempfile::tempdir().unwrap();
    h5_pool(dir.path(), 0, &[3, 2, 4]);
    let dirs = [dir.path().to_owned()];
    let count = |config: GroupedLoader| {
        config
            .build(&source(Split::Train, &dirs, &H5Format {}, true))
            .unwrap()
            .epoch(0, 1)
    };
    // Forward / backward: Σ n(n−1)/2 = 3 + 1 + 6; unconstrained twice that.
    let forward = count(grouped_config(1.0, IntraGroupOption::Forward, false));
    assert_eq!(forward.len(), 10);
    assert!(
        forward.iter().all(|s| s.moving < s.fixed),
        "forward: moving earlier in its group"
    );
    let backward = count(grouped_config(1.0, IntraGroupOption::Backward, false));
    assert!(backward.iter().all(|s| s.moving > s.fixed));
    assert_eq!(
        count(grouped_config(1.0, IntraGroupOption::Unconstrained, false)).len(),
        20
    );
    // Inter: (Σn)² − Σn² = 81 − 29.
    assert_eq!(
        count(grouped_config(0.0, IntraGroupOption::Forward, false)).len(),
        52
    );
    // Sampling in groups: one pair per group; intra pairs stay in their group.
    let sampled = count(grouped_config(1.0, IntraGroupOption::Forward, true));
    assert_eq!(sampled.len(), 3);
    let group_of = |i: usize| {
        if i < 3 {
            0
        } else if i < 5 {
            1
        } else {
            2
        }
    };
    assert!(sampled
        .iter()
        .all(|s| group_of(s.moving) == group_of(s.fixed) && s.moving < s.fixed));
    let inter = count(grouped_config(0.0, IntraGroupOption::Forward, true));
    assert!(inter
        .iter()
        .all(|s| group_of(s.moving) != group_of(s.fixed)));
}

#[test]
fn grouped_nifti_folders_are_groups() {
    let dir = tempfile::tempdir().unwrap();
    for (group, count) in [("patient_a", 2), ("patient_b", 3)] {
        for i in 0..count {
            nifti(
                dir.path(),
                "images",
                &format!("{group}/t{i}"),
                &volume(&[4, 4, 4], 1.0),
            );
        }
    }
    let dirs = [dir.path().to_owned()];
    let loader = grouped_config(1.0, IntraGroupOption::Unconstrained, false)
        .build(&source(Split::Train, &dirs, &NiftiFormat {}, false))
        .unwrap();
    assert_eq!(loader.epoch(0, 0).len(), 2 + 6);
}

fn build_error(
    config: &dyn DataLoaderConfig,
    dirs: &[PathBuf],
    format: &dyn FileLoaderConfig,
) -> String {
    config
        .build(&source(Split::Train, dirs, format, true))
        .err()
        .expect("the data is refused")
        .to_string()
}

#[test]
fn bad_datasets_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dirs = [dir.path().to_owned()];
    paired_dataset(dir.path(), 2, 2);
    nifti(
        dir.path(),
        "fixed_images",
        "stray",
        &volume(&[6, 5, 4], 1.0),
    );
    nifti(dir.path(), "fixed_labels", "stray", &label(&[6, 5, 4], 2));
    let error = build_error(&paired_config(), &dirs, &NiftiFormat {});
    assert!(
        error.contains("moving_images and fixed_images must hold the same names"),
        "{error}"
    );
    assert!(
        error.contains("only in fixed_images: [\"stray\"]"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    let dirs = [dir.path().to_owned()];
    paired_dataset(dir.path(), 2, 2);
    nifti(dir.path(), "moving_labels", "case1", &label(&[6, 5, 4], 3));
    let error = build_error(&paired_config(), &dirs, &NiftiFormat {});
    assert!(
        error.contains("pair `case1`: the moving label has 3 labels, the fixed label 2"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    let dirs = [dir.path().to_owned()];
    h5_pool(dir.path(), 0, &[3, 1]);
    let error = build_error(
        &grouped_config(0.5, IntraGroupOption::Forward, true),
        &dirs,
        &H5Format {},
    );
    assert!(error.contains("group `1` has 1 image(s)"), "{error}");
    let error = build_error(
        &grouped_config(0.5, IntraGroupOption::Forward, false),
        &dirs,
        &H5Format {},
    );
    assert!(
        error.contains("mixing intra- and inter-group pairs"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    let dirs = [dir.path().to_owned()];
    h5_pool(dir.path(), 1, &[]);
    let config = UnpairedLoader {
        image_shape: vec![4, 4, 4],
        sample_label: None,
        seed: None,
    };
    let error = build_error(&config, &dirs, &H5Format {});
    assert!(error.contains("at least 2 images, found 1"), "{error}");
    let config = UnpairedLoader {
        image_shape: vec![4, 4, 4, 4],
        sample_label: None,
        seed: None,
    };
    let error = build_error(&config, &dirs, &H5Format {});
    assert!(
        error.contains("`image_shape` must list 2 or 3 sizes"),
        "{error}"
    );

    let empty = tempfile::tempdir().unwrap();
    let error = build_error(
        &paired_config(),
        &[empty.path().to_owned()],
        &NiftiFormat {},
    );
    assert!(error.contains("moving_images: missing folder"), "{error}");

    let missing = empty.path().join("trian");
    let error = build_error(&paired_config(), &[missing], &NiftiFormat {});
    assert!(
        error.contains("trian: the data folder of `dataset.train.dir` does not exist"),
        "{error}"
    );
    let file = empty.path().join("a_file");
    std::fs::write(&file, "").unwrap();
    let error = build_error(&paired_config(), &[file], &H5Format {});
    assert!(
        error.contains("`dataset.train.dir` is not a folder"),
        "{error}"
    );
}

#[test]
fn labels_outside_the_unit_interval_and_wrong_ranks_fail_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let dirs = [dir.path().to_owned()];
    paired_dataset(dir.path(), 1, 1);
    let mut bad = label(&[6, 5, 4], 1);
    bad.data[10] = 2.0;
    nifti(dir.path(), "moving_labels", "case0", &bad);
    let loader = paired_config()
        .build(&source(Split::Valid, &dirs, &NiftiFormat {}, true))
        .unwrap();
    let error = loader.load(&loader.epoch(0, 0)[0]).unwrap_err().to_string();
    assert!(
        error.contains("moving_labels `case0` label 0 has value 2 outside [0, 1]"),
        "{error}"
    );

    let config = PairedLoader {
        moving_image_shape: vec![4, 4],
        fixed_image_shape: vec![4, 4],
        sample_label: None,
        seed: None,
    };
    let error = config
        .build(&source(Split::Valid, &dirs, &NiftiFormat {}, false))
        .unwrap()
        .load(&SampleRef {
            moving: 0,
            fixed: 0,
            label: None,
        })
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("has shape [6, 5, 4]; the configured shape [4, 4] has 2 axes"),
        "{error}"
    );
}

#[test]
fn two_dimensional_data_loads() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        nifti(dir.path(), "moving_images", name, &volume(&[7, 5], 1.0));
        nifti(dir.path(), "fixed_images", name, &volume(&[7, 5], 1.0));
    }
    let dirs = [dir.path().to_owned()];
    let config = PairedLoader {
        moving_image_shape: vec![8, 8],
        fixed_image_shape: vec![8, 8],
        sample_label: None,
        seed: None,
    };
    let loader = config
        .build(&source(Split::Train, &dirs, &NiftiFormat {}, false))
        .unwrap();
    let sample = loader.load(&loader.epoch(0, 0)[0]).unwrap();
    assert_eq!(sample.moving_image.len(), 64);
}

#[test]
fn a_dataset_without_label_files_loads_unlabelled() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        nifti(dir.path(), "moving_images", name, &volume(&[4, 4, 4], 1.0));
        nifti(dir.path(), "fixed_images", name, &volume(&[4, 4, 4], 1.0));
    }
    let dirs = [dir.path().to_owned()];
    let loader = paired_config()
        .build(&source(Split::Train, &dirs, &NiftiFormat {}, true))
        .unwrap();
    let epoch = loader.epoch(0, 0);
    assert!(epoch.iter().all(|s| s.label.is_none()));
    assert!(loader.load(&epoch[0]).unwrap().fixed_label.is_none());
    // Only one side labelled is an error, not silently unlabelled data.
    nifti(dir.path(), "moving_labels", "a", &label(&[4, 4, 4], 1));
    nifti(dir.path(), "moving_labels", "b", &label(&[4, 4, 4], 1));
    let error = build_error(&paired_config(), &dirs, &NiftiFormat {});
    assert!(
        error.contains("the data has moving_labels but no fixed_labels"),
        "{error}"
    );
}

#[test]
fn validation_and_test_always_take_every_label() {
    let dir = tempfile::tempdir().unwrap();
    paired_dataset(dir.path(), 2, 3);
    let dirs = [dir.path().to_owned()];
    let config = PairedLoader {
        sample_label: Some(SampleLabel::Sample),
        ..paired_config()
    };
    for split in [Split::Valid, Split::Test] {
        let loader = config
            .build(&source(split, &dirs, &NiftiFormat {}, true))
            .unwrap();
        assert_eq!(loader.epoch(0, 0).len(), 6);
    }
    let all = PairedLoader {
        sample_label: Some(SampleLabel::All),
        ..paired_config()
    };
    let loader = all
        .build(&source(Split::Train, &dirs, &NiftiFormat {}, true))
        .unwrap();
    assert_eq!(
        loader.epoch(0, 0).len(),
        6,
        "sample_label: all applies to training"
    );
}

#[test]
fn an_h5_label_key_missing_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<(String, Volume)> = ["x", "y", "z"]
        .iter()
        .map(|k| (k.to_string(), volume(&[4, 4, 4], 1.0)))
        .collect();
    let labels: Vec<(String, Volume)> = ["x", "z"]
        .iter()
        .map(|k| (k.to_string(), label(&[4, 4, 4], 1)))
        .collect();
    write_h5(&dir.path().join("images.h5"), &images).unwrap();
    write_h5(&dir.path().join("labels.h5"), &labels).unwrap();
    let dirs = [dir.path().to_owned()];
    let config = UnpairedLoader {
        image_shape: vec![4, 4, 4],
        sample_label: None,
        seed: None,
    };
    let error = build_error(&config, &dirs, &H5Format {});
    assert!(
        error.contains("images and labels must hold the same names; only in images: [\"y\"]"),
        "{error}"
    );
}

/// Every loader type reads both formats: paired HDF5 and unpaired NIfTI complete the grid the
/// other tests cover (paired NIfTI, unpaired HDF5, grouped both).
#[test]
fn paired_h5_and_unpaired_nifti() {
    let dir = tempfile::tempdir().unwrap();
    let dirs = [dir.path().to_owned()];
    for kind in ["moving_images", "fixed_images"] {
        let entries: Vec<(String, Volume)> = (0..3)
            .map(|i| (format!("p{i}"), volume(&[6, 5, 4], 1.0)))
            .collect();
        write_h5(&dir.path().join(format!("{kind}.h5")), &entries).unwrap();
    }
    for kind in ["moving_labels", "fixed_labels"] {
        let entries: Vec<(String, Volume)> = (0..3)
            .map(|i| (format!("p{i}"), label(&[6, 5, 4], 2)))
            .collect();
        write_h5(&dir.path().join(format!("{kind}.h5")), &entries).unwrap();
    }
    let loader = paired_config()
        .build(&source(Split::Test, &dirs, &H5Format {}, true))
        .unwrap();
    let epoch = loader.epoch(0, 0);
    assert_eq!(epoch.len(), 6);
    assert_eq!(
        loader.load(&epoch[0]).unwrap().fixed_label.unwrap().len(),
        27
    );

    let dir = tempfile::tempdir().unwrap();
    let dirs = [dir.path().to_owned()];
    for i in 0..4 {
        nifti(
            dir.path(),
            "images",
            &format!("s{i}"),
            &volume(&[5, 5, 5], 1.0),
        );
        nifti(
            dir.path(),
            "labels",
            &format!("s{i}"),
            &label(&[5, 5, 5], 1),
        );
    }
    let config = UnpairedLoader {
        image_shape: vec![4, 4, 4],
        sample_label: None,
        seed: None,
    };
    let loader = config
        .build(&source(Split::Train, &dirs, &NiftiFormat {}, true))
        .unwrap();
    let epoch = loader.epoch(1, 1);
    assert_eq!(epoch.len(), 2);
    assert!(loader.load(&epoch[1]).unwrap().moving_label.is_some());
}
