//! HyperMorph through the binary: a 2D dataset of brain slices built by `voxreg dataset
//! from-template --slice`, `configs/hypermorph.yaml` trained with a tiny hypernetwork,
//! prediction at two values of λ (different fields), a sweep with its tables and plots, and
//! a hypernetwork checkpoint refused by a config without one.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{assert_clean_failure, repo_root, run, stderr, stdout, voxreg};

/// Builds a 2D paired dataset of axial MNI slices (32 × 32, labels GM and WM) in `dir/data`.
fn slices(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let assets = repo_root().join("assets/mni152");
    let output = voxreg()
        .args(["dataset", "from-template", "--template"])
        .arg(assets.join("t1.nii.gz"))
        .arg("--label")
        .arg(assets.join("gm.nii.gz"))
        .arg("--label")
        .arg(assets.join("wm.nii.gz"))
        .args([
            "--slice",
            "2,40",
            "--crop-start",
            "0,4",
            "--crop-size",
            "80,80",
        ])
        .args([
            "--shape",
            "32,32",
            "--pairs",
            "4,2,2",
            "--low-res-size",
            "4,4",
        ])
        .args(["--field-strength", "2", "--no-fields", "--out"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    data
}

/// The overlay pointing `configs/hypermorph.yaml` at the slices, with tiny networks.
fn overlay(dir: &Path, data: &Path) -> PathBuf {
    let path = dir.join("tiny.yaml");
    let split = |s: &str| data.join(s).display().to_string();
    fs::write(
        &path,
        format!(
            "dataset:
  train: {{dir: {}}}
  valid: {{dir: {}}}
  test: {{dir: {}}}
  moving_image_shape: [32, 32]
  fixed_image_shape: [32, 32]
train:
  backbone: {{name: vxm_unet, channels: [4, 4, 4, 4, 4, 4, 4, 4], unet_out_channels: 4, final_conv_channels: [4]}}
  preprocess: {{batch_size: 2}}
  epochs: 2
  save_period: 2
",
            split("train"),
            split("valid"),
            split("test")
        ),
    )
    .unwrap();
    path
}

/// Trains run `name` (from `resume` if given) up to `epochs`.
fn train_run(dir: &Path, tiny: &Path, name: &str, epochs: &str, resume: Option<&Path>) {
    let small = dir.join("small_hypernet.yaml");
    fs::write(&small, "train:\n  parameters: {layers: [8, 8]}\n").unwrap();
    let mut command = voxreg();
    command
        .args(["train", "-c"])
        .arg(repo_root().join("configs/hypermorph.yaml"))
        .arg(tiny)
        .arg(&small)
        .args(["--exp-name", name, "--max-epochs", epochs, "--log-dir"])
        .arg(dir.join("logs"))
        .env("RAYON_NUM_THREADS", "2");
    if let Some(checkpoint) = resume {
        command.arg("--ckpt-path").arg(checkpoint);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

fn train(dir: &Path) -> (PathBuf, PathBuf) {
    let data = slices(dir);
    let tiny = overlay(dir, &data);
    train_run(dir, &tiny, "hyper", "2", None);
    (dir.join("logs/hyper/save/ckpt-2"), tiny)
}

#[test]
fn a_resumed_hypermorph_run_draws_the_same_lambdas_and_ends_with_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, tiny) = train(dir.path());
    train_run(dir.path(), &tiny, "first", "1", None);
    let halfway = dir.path().join("logs/first/save/ckpt-1");
    assert!(halfway.join("optimizer.safetensors").is_file());
    train_run(dir.path(), &tiny, "resumed", "2", Some(&halfway));
    let weights = |ckpt: &Path| fs::read(ckpt.join("weights.safetensors")).unwrap();
    let resumed = dir.path().join("logs/resumed/save/ckpt-2");
    assert!(weights(&straight) == weights(&resumed), "bit-exact resume");
}

fn predict(ckpt: &Path, logs: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "predict",
        "--split",
        "test",
        "--ckpt-path",
        ckpt.to_str().unwrap(),
    ];
    args.extend(["--log-dir", logs.to_str().unwrap(), "--exp-name", name]);
    args.extend(extra);
    run(&args)
}

#[test]
fn hypermorph_trains_predicts_per_lambda_and_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, tiny) = train(dir.path());
    assert!(ckpt.is_dir(), "checkpoint {} written", ckpt.display());
    let out = dir.path().join("out");
    let ddf = |name: &str| fs::read(out.join(name).join("test/pair_0/ddf.nii.gz")).unwrap();
    for (name, lambda) in [("zero", "lambda=0"), ("one", "lambda=1")] {
        let output = predict(&ckpt, &out, name, &["--hyper", lambda]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    assert_ne!(ddf("zero"), ddf("one"), "λ changes the generated network");

    let output = predict(&ckpt, &out, "sweep", &["--hyper", "lambda=0:1:3"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let sweep = out.join("sweep");
    let table = fs::read_to_string(sweep.join("sweep.csv")).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "lambda,label,dice,image_ssd,folding_fraction,samples"
    );
    // Three values × (two labels + all).
    assert_eq!(lines.len(), 1 + 3 * 3, "{table}");
    assert!(lines[1].starts_with("0.000000,0,"), "{table}");
    assert!(table.contains("\n1.000000,all,"), "{table}");
    let best = fs::read_to_string(sweep.join("best.csv")).unwrap();
    assert!(best.starts_with("label,lambda,dice\n0,"), "{best}");
    for plot in ["dice_vs_lambda.png", "folding_vs_lambda.png"] {
        assert!(fs::read(sweep.join(plot)).unwrap().starts_with(b"\x89PNG"));
    }
    for value in ["lambda_0.000", "lambda_0.500", "lambda_1.000"] {
        assert!(
            sweep.join(value).join("test/metrics.csv").is_file(),
            "{value}"
        );
    }
    assert!(stdout(&output).contains("best lambda for all labels"));

    let undeclared = predict(&ckpt, &out, "bad", &["--hyper", "gamma=0.5"]);
    assert_clean_failure(&undeclared, &["gamma"]);

    // The same run without the hypernetwork: its checkpoint is refused, naming the cause.
    let base = fs::read_to_string(repo_root().join("configs/hypermorph.yaml")).unwrap();
    let start = base.find("  parameters:").unwrap();
    let end = start + base[start..].find("  hyperparameters:").unwrap();
    let plain = dir.path().join("plain.yaml");
    fs::write(&plain, format!("{}{}", &base[..start], &base[end..])).unwrap();
    let refused = voxreg()
        .args(["predict", "--split", "test", "--ckpt-path"])
        .arg(&ckpt)
        .arg("--config-path")
        .arg(&plain)
        .arg(&tiny)
        .arg("--log-dir")
        .arg(&out)
        .args(["--exp-name", "plain"])
        .output()
        .unwrap();
    assert_clean_failure(&refused, &["hypernet"]);
}
