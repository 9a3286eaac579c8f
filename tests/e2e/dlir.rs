//! DLIR through the binary: `configs/dlir_affine.yaml` (the `dlir_affine` backbone under the
//! `ddf` method) trains on the demo pairs and `predict` writes each pair's affine transform;
//! on 2D tiles built by `voxreg dataset tiles`, `configs/dlir_affine_2d.yaml` trains with the
//! masked similarity and predict measures the field error against the known shifts, then
//! `configs/dlir_cascade_2d.yaml` trains its B-spline stage on the loaded, frozen affine stage.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cli::load_weights;
use crate::util::{assert_clean_failure, repo_root, stderr, stdout, tiny_training_config, voxreg};

/// The shipped DLIR config on 16³ crops with a smaller network, two epochs.
const SMALL: &str = "train:
  backbone: {name: dlir_affine, kernels: 8, num_conv_layers: 3, num_downsamplings: 2, linear_nodes: 16}
";

#[test]
fn the_dlir_affine_config_trains_and_predicts_one_affine_per_pair() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let small = dir.path().join("small.yaml");
    fs::write(&small, SMALL).unwrap();
    let output = voxreg()
        .args(["train", "-c"])
        .arg(repo_root().join("configs/dlir_affine.yaml"))
        .arg(tiny_training_config(dir.path()))
        .arg(&small)
        .args(["--exp-name", "dlir", "--log-dir"])
        .arg(&logs)
        .args(["--max-epochs", "2"])
        .output()
        .unwrap();
    assert!(output.status.success(), "training: {}", stderr(&output));
    let config = fs::read_to_string(logs.join("dlir/config.yaml")).unwrap();
    assert!(
        config.contains("name: dlir_affine") && config.contains("parametrisation: bounded"),
        "{config}"
    );

    let output = voxreg()
        .args(["predict", "--split", "test", "--no-nifti", "--ckpt-path"])
        .arg(logs.join("dlir/save/ckpt-2"))
        .arg("--log-dir")
        .arg(&logs)
        .args(["--exp-name", "dlir-out"])
        .output()
        .unwrap();
    assert!(output.status.success(), "predict: {}", stderr(&output));
    let text = fs::read_to_string(logs.join("dlir-out/test/pair_0/affine.txt")).unwrap();
    let theta: Vec<Vec<f64>> = text
        .lines()
        .map(|line| line.split(',').map(|v| v.trim().parse().unwrap()).collect())
        .collect();
    assert_eq!(theta.len(), 4, "{text}");
    assert!(theta.iter().all(|row| row.len() == 3), "{text}");
    assert!(theta.iter().flatten().all(|v| v.is_finite()), "{text}");
    // The head starts at exactly the identity `[I; 0]`: training moved it, so the
    // similarity's gradient reached it through the twin pipelines.
    let moved = theta
        .iter()
        .enumerate()
        .flat_map(|(i, row)| {
            row.iter()
                .enumerate()
                .map(move |(j, v)| (v - f64::from(u8::from(i == j))).abs())
        })
        .fold(0.0, f64::max);
    assert!(moved > 1e-6, "still the identity after training: {text}");
    // Two short epochs from the identity do not fold space: the linear part (the first
    // three rows) keeps a positive determinant.
    let rows: Vec<&Vec<f64>> = theta.iter().take(3).collect();
    let det = rows[0][0] * (rows[1][1] * rows[2][2] - rows[1][2] * rows[2][1])
        - rows[0][1] * (rows[1][0] * rows[2][2] - rows[1][2] * rows[2][0])
        + rows[0][2] * (rows[1][0] * rows[2][1] - rows[1][1] * rows[2][0]);
    assert!(det > 0.0, "det {det}: {text}");
}

/// 2 × 2 mosaics of 16 × 16 tiles from an axial MNI plane in `dir/tiles`: 2 train, 1 valid,
/// 1 test mosaic.
fn tiles(dir: &Path) -> PathBuf {
    let data = dir.join("tiles");
    let output = voxreg()
        .args(["dataset", "tiles", "--image"])
        .arg(repo_root().join("assets/mni152/t1.nii.gz"))
        .args(["--slice", "2,40", "--tile", "16,16", "--grid", "2,2"])
        .args([
            "--overlap",
            "0.75",
            "--jitter",
            "1",
            "--mosaics",
            "2,1,1",
            "--out",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("wrote 16 tiles"),
        "{}",
        stdout(&output)
    );
    data
}

/// The overlay pointing a tile config at `data`, with 16 × 16 tiles and small networks.
fn tile_overlay(dir: &Path, data: &Path, cascade: bool) -> PathBuf {
    let path = dir.join(if cascade {
        "cascade.yaml"
    } else {
        "affine.yaml"
    });
    let split = |s: &str| data.join(s).display().to_string();
    let affine = "{name: dlir_affine, kernels: 4, num_conv_layers: 2, num_downsamplings: 2, linear_nodes: 8, parametrisation: translation}";
    let train = if cascade {
        format!("  method:\n    name: cascade\n    stages:\n      - {{name: ddf, backbone: {affine}}}\n      - {{name: ddf, backbone: {{name: dlir_bspline, grid_spacing: 4, kernels: 4, num_conv_layers: 2, num_dense_layers: 1}}}}\n")
    } else {
        format!("  backbone: {affine}\n")
    };
    fs::write(
        &path,
        format!(
            "dataset:\n  train: {{dir: {}}}\n  valid: {{dir: {}}}\n  test: {{dir: {}}}\n  image_shape: [16, 16]\ntrain:\n{train}  preprocess: {{batch_size: 4}}\n",
            split("train"),
            split("valid"),
            split("test")
        ),
    )
    .unwrap();
    path
}

#[test]
fn tiles_train_the_affine_stage_then_the_cascade_and_predict_measures_the_field_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiles(dir.path());
    assert!(fs::read_to_string(data.join("test/tiles.csv"))
        .unwrap()
        .starts_with("file,mosaic,row,column,origin_row,origin_column"));
    let logs = dir.path().join("logs");
    let output = voxreg()
        .args(["train", "-c"])
        .arg(repo_root().join("configs/dlir_affine_2d.yaml"))
        .arg(tile_overlay(dir.path(), &data, false))
        .args(["--exp-name", "affine", "--log-dir"])
        .arg(&logs)
        .args(["--max-epochs", "2"])
        .output()
        .unwrap();
    assert!(output.status.success(), "affine: {}", stderr(&output));
    let header = fs::read_to_string(logs.join("affine/valid_metrics.csv")).unwrap();
    assert!(
        header.lines().next().unwrap().contains("ddf_error"),
        "{header}"
    );
    let config = fs::read_to_string(logs.join("affine/config.yaml")).unwrap();
    assert!(config.contains("mask: field_of_view"), "{config}");

    let affine = logs.join("affine/save/ckpt-2");
    let output = voxreg()
        .args(["predict", "--split", "test", "--no-nifti", "--ckpt-path"])
        .arg(&affine)
        .arg("--log-dir")
        .arg(&logs)
        .args(["--exp-name", "affine-test"])
        .output()
        .unwrap();
    assert!(output.status.success(), "predict: {}", stderr(&output));
    assert!(
        stdout(&output).contains("field error, vx (median)"),
        "{}",
        stdout(&output)
    );
    let metrics = fs::read_to_string(logs.join("affine-test/test/metrics.csv")).unwrap();
    let mut rows = metrics.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let column = header
        .iter()
        .position(|h| *h == "ddf_error_before")
        .unwrap();
    // 4 tiles in a 2 × 2 grid: 8 ordered neighbour pairs, each shifted by 4 ± 2 pixels.
    let before: Vec<f64> = rows
        .map(|row| row.split(',').nth(column).unwrap().parse().unwrap())
        .collect();
    assert_eq!(before.len(), 8, "{metrics}");
    assert!(before.iter().all(|e| (2.0..=7.0).contains(e)), "{before:?}");
    let theta = fs::read_to_string(logs.join("affine-test/test/pair_0_1/affine.txt")).unwrap();
    let linear: Vec<f64> = theta
        .lines()
        .take(2)
        .flat_map(|line| line.split(',').map(|v| v.trim().parse::<f64>().unwrap()))
        .collect();
    assert_eq!(linear, [1.0, 0.0, 0.0, 1.0], "a pure translation: {theta}");

    let stage0 = dir.path().join("stage0.yaml");
    fs::write(
        &stage0,
        format!(
            "train:\n  parameters:\n    name: variables\n    freeze: [stage.0]\n    init_from: [{{checkpoint: {}, from: \"\", to: stage.0}}]\n",
            affine.display()
        ),
    )
    .unwrap();
    let output = voxreg()
        .args(["train", "-c"])
        .arg(repo_root().join("configs/dlir_cascade_2d.yaml"))
        .arg(tile_overlay(dir.path(), &data, true))
        .arg(&stage0)
        .args(["--exp-name", "cascade", "--log-dir"])
        .arg(&logs)
        .args(["--max-epochs", "1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "cascade: {}", stderr(&output));
    let trained = load_weights(&affine.join("weights.safetensors"));
    let cascade = load_weights(&logs.join("cascade/save/ckpt-1/weights.safetensors"));
    for (name, values) in &trained {
        let loaded = cascade
            .iter()
            .find(|(n, _)| *n == format!("stage.0.{name}"))
            .unwrap_or_else(|| panic!("stage.0.{name} in the cascade"));
        assert_eq!(
            &loaded.1, values,
            "the frozen affine stage is unchanged: {name}"
        );
    }
    assert!(cascade.iter().any(|(n, _)| n.starts_with("stage.1.")));
}

/// The notebook's setting: a free affine matrix, a large learning rate, the unmasked local
/// NCC. The transform leaves the image within the first steps, the warped tiles turn flat
/// and the loss sits at −1 (DeepReg's LNCC scores flat windows as a perfect match); the
/// detector names the epoch and step.
#[test]
fn the_collapse_of_the_notebooks_setting_is_reported_with_epoch_and_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiles(dir.path());
    let collapse = dir.path().join("collapse.yaml");
    fs::write(
        &collapse,
        "train:\n  backbone: {parametrisation: raw}\n  loss:\n    image: {name: lncc, kernel_size: 5}\n  optimizer: {name: Adam, learning_rate: 1.0}\n",
    )
    .unwrap();
    let output = voxreg()
        .args(["train", "-c"])
        .arg(repo_root().join("configs/dlir_affine_2d.yaml"))
        .arg(tile_overlay(dir.path(), &data, false))
        .arg(&collapse)
        .args(["--exp-name", "collapse", "--log-dir"])
        .arg(dir.path().join("logs"))
        .args(["--max-epochs", "3"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("the warped moving image is constant in") && err.contains(", step "),
        "{err}"
    );
    assert!(err.contains("of the sampling points fall outside"), "{err}");
    let metrics = fs::read_to_string(dir.path().join("logs/collapse/train_metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    let column = header
        .iter()
        .position(|h| *h == "constant_warped_fraction")
        .unwrap();
    let last: f64 = metrics
        .lines()
        .last()
        .unwrap()
        .split(',')
        .nth(column)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        last > 0.5,
        "most warped tiles are flat by the last epoch: {metrics}"
    );
}

#[test]
fn an_unknown_mask_or_one_outside_the_image_section_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let check = |overlay: &str| {
        let bad = dir.path().join("bad.yaml");
        fs::write(&bad, overlay).unwrap();
        voxreg()
            .args(["config", "check"])
            .arg(repo_root().join("configs/dlir_affine_2d.yaml"))
            .arg(&bad)
            .output()
            .unwrap()
    };
    let output =
        check("train:\n  loss:\n    regularization: {name: bending, mask: field_of_view}\n");
    assert_clean_failure(&output, &["mask", "only image terms"]);
    let output = check("train:\n  loss:\n    image: {name: gncc, mask: everything}\n");
    assert_clean_failure(&output, &["unknown mask `everything`", "field_of_view"]);
}
