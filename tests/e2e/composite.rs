//! Methods made of methods, through the binary: a `cascade` of an affine and a dense stage
//! trained end to end, then its stage 0 loaded into a new run with `init_from`, frozen, and
//! only stage 1 trained; the `inverse` method's outputs written by `predict`, and an
//! inverse-consistency term that lowers ‖ddf ∘ inv/ddf‖ as training goes.

use std::fs;
use std::path::Path;

use crate::cli::load_weights;
use crate::util::{assert_clean_failure, repo_root, run, stderr, tiny_training_config, voxreg};

/// `voxreg train` on the quick start, the tiny overlay and `extra` (YAML) as run `name`.
fn train(dir: &Path, name: &str, extra: &str, epochs: &str) -> std::process::Output {
    let overlay = dir.join(format!("{name}.yaml"));
    fs::write(&overlay, extra).unwrap();
    voxreg()
        .args(["train", "-c"])
        .arg(repo_root().join("configs/quickstart.yaml"))
        .arg(tiny_training_config(dir))
        .arg(&overlay)
        .args(["--exp-name", name, "--log-dir"])
        .arg(dir.join("logs"))
        .args(["--max-epochs", epochs])
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("the voxreg binary runs")
}

const CASCADE: &str = "
train:
  method:
    name: cascade
    stages:
      - {name: ddf, backbone: {name: global, num_channel_initial: 2, depth: 2}}
      - {name: ddf, backbone: {name: local, num_channel_initial: 2, extract_levels: [0, 1, 2]}}
";

fn under<'a>(weights: &'a [(String, Vec<f32>)], prefix: &str) -> Vec<&'a (String, Vec<f32>)> {
    weights
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .collect()
}

#[test]
fn a_cascade_trains_then_a_second_run_freezes_its_loaded_first_stage() {
    let dir = tempfile::tempdir().unwrap();
    let output = train(dir.path(), "both", CASCADE, "1");
    assert!(output.status.success(), "{}", stderr(&output));
    let first = dir.path().join("logs/both/save/ckpt-1");
    let trained = load_weights(&first.join("weights.safetensors"));
    let (stage0, stage1) = (under(&trained, "stage.0."), under(&trained, "stage.1."));
    assert!(!stage0.is_empty() && !stage1.is_empty(), "{trained:?}");
    assert_eq!(
        stage0.len() + stage1.len(),
        trained.len(),
        "every weight in a stage"
    );
    let header = fs::read_to_string(dir.path().join("logs/both/train_metrics.csv")).unwrap();
    assert!(
        header.contains("stage.0/ddf_folding_fraction")
            && header.contains("stage.1/ddf_folding_fraction"),
        "every stage's field is measured: {header}"
    );

    let second = format!(
        "{CASCADE}  parameters:\n    name: variables\n    freeze: [stage.0]\n    init_from:\n      - {{checkpoint: {}, from: stage.0, to: stage.0}}\n",
        first.display()
    );
    let output = train(dir.path(), "second", &second, "1");
    assert!(output.status.success(), "{}", stderr(&output));
    let after = load_weights(&dir.path().join("logs/second/save/weights.safetensors"));
    let frozen = under(&after, "stage.0.");
    assert_eq!(frozen, stage0, "the loaded, frozen stage is bit-identical");
    let retrained = under(&after, "stage.1.");
    assert_ne!(retrained, stage1, "stage 1 trained on");
    let saved = fs::read_to_string(dir.path().join("logs/second/config.yaml")).unwrap();
    assert!(
        saved.contains("freeze:") && saved.contains("init_from:"),
        "{saved}"
    );

    // A prefix the checkpoint lacks is refused before training, naming the file.
    let wrong = second.replace("from: stage.0", "from: stage.7");
    let output = train(dir.path(), "wrong", &wrong, "1");
    assert_clean_failure(&output, &["no weight under the prefix `stage.7`", "ckpt-1"]);
}

const INVERSE: &str = "
train:
  method: {name: inverse, method: ddf}
  backbone:
    name: local
    num_channel_initial: 2
    extract_levels: [0, 1, 2]
    out_kernel_initializer: glorot_uniform
  loss:
    field:
      name: inverse_consistency
      inputs: [ddf, inv/ddf]
      weight: 100.0
";

fn column(csv: &str, name: &str) -> Vec<f64> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let index = header
        .iter()
        .position(|h| *h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    lines
        .map(|line| line.split(',').nth(index).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn inverse_outputs_are_written_and_inverse_consistency_falls_in_training() {
    let dir = tempfile::tempdir().unwrap();
    let output = train(dir.path(), "inverse", INVERSE, "4");
    assert!(output.status.success(), "{}", stderr(&output));
    let run_dir = dir.path().join("logs/inverse");
    let metrics = fs::read_to_string(run_dir.join("train_metrics.csv")).unwrap();
    let consistency = column(&metrics, "field/inverse_consistency");
    assert_eq!(consistency.len(), 4, "{metrics}");
    assert!(
        consistency[3] < 0.5 * consistency[0],
        "‖ddf ∘ inv/ddf‖² should fall: {consistency:?}"
    );
    assert!(metrics.contains("inv/ddf_folding_fraction"), "{metrics}");

    let output = voxreg()
        .args(["predict", "--split", "test", "--ckpt-path"])
        .arg(run_dir.join("save/ckpt-4"))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .args(["--exp-name", "predicted"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let pair = dir.path().join("logs/predicted/test/pair_0");
    for file in [
        "ddf.nii.gz",
        "inv/ddf.nii.gz",
        "inv/pred_fixed_image.nii.gz",
    ] {
        let volume =
            voxreg::data::read_nifti(&pair.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(volume.data.iter().all(|v| v.is_finite()), "{file}");
    }
    assert!(pair.join("label_0/inv/pred_fixed_label.nii.gz").is_file());
}

#[test]
fn explicit_loss_inputs_are_checked_when_the_config_is_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    let text = fs::read_to_string(repo_root().join("configs/quickstart.yaml"))
        .unwrap()
        .replace("method: ddf", "method: {name: inverse, method: ddf}")
        .replace(
            "    regularization:\n",
            "    field:\n      name: inverse_consistency\n      inputs: [ddf, inv/dff]\n    regularization:\n",
        );
    fs::write(&path, text).unwrap();
    let output = run(&["config", "check", path.to_str().unwrap()]);
    let file = path.display().to_string();
    assert_clean_failure(
        &output,
        &[
            &format!("{file}:37:21"),
            "`train.loss.field.inputs[1]`: no tensor `inv/dff`",
            "did you mean `inv/ddf`",
        ],
    );
    // A nested component's unknown key is reported at its full path.
    let text = fs::read_to_string(repo_root().join("configs/quickstart.yaml"))
        .unwrap()
        .replace(
            "method: ddf",
            "method: {name: cascade, stages: [{name: ddf, backbone: {name: global, num_channel_initial: 2, dept: 2}}]}",
        );
    fs::write(&path, text).unwrap();
    let output = run(&["config", "check", path.to_str().unwrap()]);
    assert_clean_failure(
        &output,
        &[
            "`train.method.stages[0].backbone.dept`: unknown key",
            "did you mean `depth`",
        ],
    );
}
