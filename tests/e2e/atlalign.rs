//! atlalign through the binary: `voxreg dataset augment` builds an atlalign-format dataset
//! from coronal MNI sections; the shipped global, local (with inverse) and merged configs
//! train on it (smaller networks, a few epochs) and predict reports the field errors; a file
//! written by h5py as atlalign's documentation describes it trains unchanged.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{assert_clean_failure, repo_root, stderr, stdout, voxreg};

/// Writes `text` to `dir/name` and returns the path.
fn overlay(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

/// The dataset section for data under `root/{train,valid,test}`.
fn data_overlay(root: &Path, shape: [usize; 2], reference: &str) -> String {
    let split = |s: &str| {
        format!(
            "  {s}:\n    dir: {}\n    format: h5\n    labeled: true\n",
            root.join(s).display()
        )
    };
    format!(
        "dataset:\n{}{}{}  image_shape: [{}, {}]\n  reference: {reference}\n  reference_labels: ../reference_labels.nii.gz\n",
        split("train"),
        split("valid"),
        split("test"),
        shape[0],
        shape[1]
    )
}

/// `voxreg train` with `configs` as run `name` for `epochs` epochs.
fn train(logs: &Path, name: &str, configs: &[PathBuf], epochs: &str) {
    let mut command = voxreg();
    command.arg("train");
    for config in configs {
        command.arg("-c").arg(config);
    }
    let output = command
        .args(["--exp-name", name, "--log-dir"])
        .arg(logs)
        .args(["--max-epochs", epochs])
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "training {name}: {}",
        stderr(&output)
    );
}

/// `voxreg predict` on the test split of run `name`'s checkpoint `ckpt`; returns its
/// `metrics.csv` as rows of named columns.
fn predict(logs: &Path, name: &str, ckpt: &str) -> Vec<std::collections::HashMap<String, String>> {
    let output = voxreg()
        .args(["predict", "--split", "test", "--no-nifti", "--ckpt-path"])
        .arg(logs.join(name).join("save").join(ckpt))
        .arg("--log-dir")
        .arg(logs)
        .args(["--exp-name", &format!("{name}-test")])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "predict {name}: {}",
        stderr(&output)
    );
    let text = fs::read_to_string(logs.join(format!("{name}-test/test/metrics.csv"))).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    lines
        .map(|line| {
            header
                .iter()
                .cloned()
                .zip(line.split(',').map(str::to_owned))
                .collect()
        })
        .collect()
}

/// The mean of column `name` over the rows.
fn mean(rows: &[std::collections::HashMap<String, String>], name: &str) -> f64 {
    let values: Vec<f64> = rows
        .iter()
        .map(|row| {
            row.get(name)
                .unwrap_or_else(|| panic!("no column {name}"))
                .parse()
                .unwrap()
        })
        .collect();
    values.iter().sum::<f64>() / values.len() as f64
}

const SMALL_GLOBAL: &str = "train:
  backbone: {name: atlalign_global, filters: [4, 8], dense_layers: [8]}
  preprocess: {batch_size: 4, shuffle_buffer_num_batch: 1, data_augmentation: []}
";

const SMALL_LOCAL: &str = "train:
  backbone:
    name: atlalign_local
    start_filters: [4]
    downsample_filters: [8, 8]
    middle_filters: [8]
    upsample_filters: [8, 8]
    end_filters: [8]
  preprocess: {batch_size: 4, shuffle_buffer_num_batch: 1, data_augmentation: []}
";

const SMALL_MERGED: &str = "train:
  method:
    name: cascade
    stages:
      - name: ddf
        backbone: {name: atlalign_global, filters: [4, 8], dense_layers: [8]}
      - name: ddf
        backbone:
          name: atlalign_local
          start_filters: [4]
          downsample_filters: [8, 8]
          middle_filters: [8]
          upsample_filters: [8, 8]
          end_filters: [8]
  preprocess: {batch_size: 4, shuffle_buffer_num_batch: 1, data_augmentation: []}
";

#[test]
fn augmented_sections_train_global_local_and_merged_models_that_lower_the_field_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = voxreg()
        .args(["dataset", "augment", "--reference"])
        .arg(repo_root().join("assets/mni152/t1.nii.gz"))
        .arg("--label")
        .arg(repo_root().join("assets/mni152/wm.nii.gz"))
        .args([
            "--shape",
            "32,40",
            "--sections",
            "8,1,2",
            "--samples-per-section",
            "4",
        ])
        .args(["--seed", "3", "--out"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(output.status.success(), "augment: {}", stderr(&output));
    let said = stdout(&output);
    assert!(said.contains("wrote 44 samples"), "{said}");
    assert!(said.contains("inverse error"), "{said}");
    for split in ["train", "valid", "test"] {
        assert!(data.join(split).join("dataset.h5").is_file());
    }

    let logs = dir.path().join("logs");
    let data_yaml = overlay(
        dir.path(),
        "data.yaml",
        &data_overlay(&data, [32, 40], "../reference.nii.gz"),
    );
    let config = |name: &str| repo_root().join("configs").join(name);

    let global = overlay(dir.path(), "global.yaml", SMALL_GLOBAL);
    train(
        &logs,
        "global",
        &[config("atlalign_global.yaml"), data_yaml.clone(), global],
        "6",
    );
    let metrics = fs::read_to_string(logs.join("global/train_metrics.csv")).unwrap();
    assert!(metrics.contains("field/vector_distance"), "{metrics}");

    let local = overlay(dir.path(), "local.yaml", SMALL_LOCAL);
    train(
        &logs,
        "local",
        &[config("atlalign_local.yaml"), data_yaml.clone(), local],
        "15",
    );
    let rows = predict(&logs, "local", "ckpt-15");
    assert_eq!(rows.len(), 8, "2 test sections × 4 samples");
    let (before, after) = (mean(&rows, "ddf_error_before"), mean(&rows, "ddf_error"));
    assert!(after < before, "local: field error {before} → {after}");
    let (before, after) = (
        mean(&rows, "inv_ddf_error_before"),
        mean(&rows, "inv_ddf_error"),
    );
    assert!(
        after < before,
        "local inverse: field error {before} → {after}"
    );

    let stages = overlay(
        dir.path(),
        "stages.yaml",
        &format!(
            "train:\n  parameters:\n    name: variables\n    freeze: [stage.0]\n    init_from:\n      - {{checkpoint: {}, from: \"\", to: stage.0}}\n      - {{checkpoint: {}, from: \"\", to: stage.1}}\n",
            logs.join("global/save/ckpt-6").display(),
            logs.join("local/save/ckpt-15").display()
        ),
    );
    let merged = overlay(dir.path(), "merged.yaml", SMALL_MERGED);
    train(
        &logs,
        "merged",
        &[config("atlalign_merged.yaml"), data_yaml, merged, stages],
        "2",
    );
    let rows = predict(&logs, "merged", "ckpt-2");
    let (before, after) = (mean(&rows, "ddf_error_before"), mean(&rows, "ddf_error"));
    assert!(after < before, "merged: field error {before} → {after}");
    // The reference's white-matter mask, brought into each section's space by the true
    // inverse field, is the moving label: registration raises its Dice with the reference's.
    let (before, after) = (
        mean(&rows, "label_binary_dice_before"),
        mean(&rows, "label_binary_dice"),
    );
    assert!(after > before, "merged: label Dice {before} → {after}");
}

/// The h5py fixture (`tests/fixtures/atlalign/make_h5py_dataset.py`): 4 samples of 24 × 32,
/// float16 x-first fields, a uint8 `.npy` reference volume sliced by `p`.
fn fixture() -> PathBuf {
    repo_root().join("tests/fixtures/atlalign/h5py_dataset")
}

fn fixture_overlay(dir: &Path, shape: [usize; 2]) -> PathBuf {
    let root = fixture();
    let split = |s: &str| {
        format!(
            "  {s}:\n    dir: {}\n    format: h5\n    labeled: false\n",
            root.display()
        )
    };
    let text = format!(
        "dataset:\n{}{}{}  image_shape: [{}, {}]\n  reference: nissl.npy\n",
        split("train"),
        split("valid"),
        split("test"),
        shape[0],
        shape[1]
    );
    overlay(dir, "fixture.yaml", &text)
}

#[test]
fn an_atlalign_file_written_by_h5py_trains_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let local = overlay(dir.path(), "local.yaml", SMALL_LOCAL);
    train(
        &logs,
        "h5py",
        &[
            repo_root().join("configs/atlalign_local.yaml"),
            fixture_overlay(dir.path(), [24, 32]),
            local,
        ],
        "1",
    );
    let rows = predict(&logs, "h5py", "ckpt-1");
    assert_eq!(rows.len(), 4);
    // Sample ids are `<index>_<dataset_id>_<image_id>`; the fixed image is the reference slice
    // at the sample's position.
    assert_eq!(rows[0]["moving"], "0_5_100");
    assert_eq!(rows[3]["fixed"], "reference_p60");
    // The fields are uniform shifts of at most 2 px per axis: the identity's error is their
    // length, read from the float16 x-first fields.
    for row in &rows {
        let before: f64 = row["ddf_error_before"].parse().unwrap();
        assert!(before > 0.0 && before < 2.9, "{row:?}");
        assert!(row["inv_ddf_error"].parse::<f64>().unwrap().is_finite());
    }
    // Fields are also written as atlalign stores them, `(h, w, 2)` with Δx first: the true
    // field comes back as the uniform shift the file holds, whose length is the identity's
    // error.
    assert!(logs.join("h5py-test/test/predictions.h5").is_file());
    let pair = logs.join("h5py-test/test/pair_0");
    for name in ["ddf_xy.npy", "true_ddf_xy.npy", "inv/ddf_xy.npy"] {
        assert!(pair.join(name).is_file(), "{name}");
    }
    let truth = voxreg::data::read_volume_file(&pair.join("true_ddf_xy.npy"), "").unwrap();
    assert_eq!(truth.shape, [24, 32, 2]);
    let (dx, dy) = (truth.data[0], truth.data[1]);
    assert!(truth.data.chunks(2).all(|v| v[0] == dx && v[1] == dy));
    let length = f64::from(dx.hypot(dy));
    let before: f64 = rows[0]["ddf_error_before"].parse().unwrap();
    assert!((length - before).abs() < 1e-4, "{length} vs {before}");
}

#[test]
fn a_file_that_does_not_fit_the_config_is_refused_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = voxreg()
        .args(["train", "-c"])
        .arg(repo_root().join("configs/atlalign_global.yaml"))
        .arg("-c")
        .arg(fixture_overlay(dir.path(), [24, 33]))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .output()
        .unwrap();
    assert_clean_failure(&output, &["dataset.h5", "image_shape", "[24, 32]"]);
}
