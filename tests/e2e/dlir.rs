//! DLIR's affine stage through the binary: `configs/dlir_affine.yaml` (the `dlir_affine`
//! backbone under the `ddf` method) trains on the demo pairs and `predict` writes each pair's
//! affine transform.

use std::fs;

use crate::util::{repo_root, stderr, tiny_training_config, voxreg};

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
