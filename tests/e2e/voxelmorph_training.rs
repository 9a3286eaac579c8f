//! VoxelMorph's training options through the binary: `bidir` (an image loss on the fixed
//! image warped back onto the moving grid) and `int_downsize` (integration at half
//! resolution).

use std::fs;

use crate::util::{
    assert_clean_failure, repo_root, stderr, tiny_training_config, train_tiny_model, voxreg,
};

const BIDIR: &str = "train:
  method: {name: dvf, int_steps: 5, int_downsize: 2, bidir: true}
  loss:
    image:
      - {name: vxm_mse, weight: 0.5}
      - {name: vxm_mse, weight: 0.5, inputs: [pred_moving_image, moving_image]}
    label: []
    regularization: {name: vxm_grad, penalty: l2, weight: 0.01}
";

#[test]
fn bidirectional_training_at_half_integration_resolution_logs_both_image_terms() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let checkpoint = train_tiny_model(dir.path(), &logs, "bidir", BIDIR);
    assert!(checkpoint.join("weights.safetensors").is_file());
    let metrics = fs::read_to_string(logs.join("bidir/train_metrics.csv")).unwrap();
    let header = metrics.lines().next().unwrap();
    let image_terms = header
        .split(',')
        .filter(|c| c.starts_with("image/"))
        .count();
    assert_eq!(image_terms, 2, "{header}");
    let config = fs::read_to_string(logs.join("bidir/config.yaml")).unwrap();
    assert!(
        config.contains("int_downsize: 2") && config.contains("bidir: true"),
        "{config}"
    );
}

#[test]
fn bidir_needs_equal_shapes_and_int_downsize_a_coarse_grid() {
    let dir = tempfile::tempdir().unwrap();
    let base = repo_root().join("configs/quickstart.yaml");
    let tiny = tiny_training_config(dir.path());
    for (name, extra, needles) in [
        (
            "shapes",
            "dataset: {moving_image_shape: [16, 16, 12]}\ntrain: {method: {name: ddf, bidir: true}}\n",
            &["method `ddf`", "`bidir` needs moving and fixed images of one shape"][..],
        ),
        (
            "downsize",
            "train: {method: {name: dvf, int_downsize: 9}}\n",
            &["method `dvf`", "`int_downsize: 9`"][..],
        ),
    ] {
        let extra_path = dir.path().join(format!("{name}.yaml"));
        fs::write(&extra_path, extra).unwrap();
        let output = voxreg()
            .args(["train", "-c"])
            .arg(&base)
            .arg(&tiny)
            .arg(&extra_path)
            .args(["--exp-name", name, "--log-dir"])
            .arg(dir.path().join("logs"))
            .args(["--max-epochs", "1"])
            .output()
            .unwrap();
        assert_clean_failure(&output, needles);
        assert!(!dir.path().join("logs").join(name).exists(), "{}", stderr(&output));
    }
}
