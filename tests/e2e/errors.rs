//! Error paths of `voxreg train` and `voxreg predict` through the binary: each failure is a
//! clear message and exit code 1 (no panic), and nothing written before is changed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use tempfile::TempDir;

use crate::deepreg_layout::{deepreg_config, Format, LoaderType, TinyDataset};
use crate::util::{assert_clean_failure, repo_root, run, snapshot, stderr, voxreg};

/// A one-epoch run of DeepReg's reference config on tiny unpaired NIfTI data, to fail
/// against.
struct Trained {
    tmp: TempDir,
    config: PathBuf,
    logs: PathBuf,
}

impl Trained {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = TinyDataset {
            loader: LoaderType::Unpaired,
            format: Format::Nifti,
            labels: 1,
            size: 8,
            fixed_size: 8,
        }
        .write(&tmp.path().join("data"));
        let config = tmp.path().join("unpaired_labeled_ddf.yaml");
        fs::write(
            &config,
            deepreg_config("unpaired_labeled_ddf.yaml", &dirs, Format::Nifti),
        )
        .unwrap();
        let trained = Trained {
            logs: tmp.path().join("logs"),
            config,
            tmp,
        };
        let output = trained.train(&[], "base", &[]);
        assert!(output.status.success(), "{}", stderr(&output));
        trained
    }

    /// The base run's checkpoint after one epoch.
    fn checkpoint(&self) -> PathBuf {
        self.logs.join("base/save/ckpt-1")
    }

    /// A second config file (overlay) named `name` holding `text`.
    fn overlay(&self, name: &str, text: &str) -> PathBuf {
        let path = self.tmp.path().join(name);
        fs::write(&path, text).unwrap();
        path
    }

    /// `voxreg train` on the base config plus `overlays`, one epoch, into `<logs>/<name>`.
    fn train(&self, overlays: &[&Path], name: &str, extra: &[&str]) -> Output {
        voxreg()
            .arg("train")
            .arg("--config_path")
            .arg(&self.config)
            .args(overlays)
            .arg("--log_dir")
            .arg(&self.logs)
            .args(["--exp_name", name, "--max_epochs", "1"])
            .args(extra)
            .output()
            .unwrap()
    }

    /// `voxreg predict` with `checkpoint` on `split`, with the base config plus `overlays`
    /// (or the run's saved config when `overlays` is `None`), into `<logs>/<name>`.
    fn predict(
        &self,
        checkpoint: &Path,
        overlays: Option<&[&Path]>,
        split: &str,
        name: &str,
    ) -> Output {
        let mut command = voxreg();
        command
            .arg("predict")
            .arg("--ckpt_path")
            .arg(checkpoint)
            .args(["--split", split, "--exp_name", name])
            .arg("--log_dir")
            .arg(&self.logs);
        if let Some(overlays) = overlays {
            command
                .arg("--config_path")
                .arg(&self.config)
                .args(overlays);
        }
        command.output().unwrap()
    }

    /// A copy of the base checkpoint, named `name`, to damage.
    fn checkpoint_copy(&self, name: &str) -> PathBuf {
        let copy = self.tmp.path().join(name);
        fs::create_dir_all(&copy).unwrap();
        for entry in fs::read_dir(self.checkpoint()).unwrap() {
            let path = entry.unwrap().path();
            fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
        copy
    }
}

/// Truncates `path` to its first `bytes` bytes.
fn truncate(path: &Path, bytes: usize) {
    let data = fs::read(path).unwrap();
    fs::write(path, &data[..bytes.min(data.len())]).unwrap();
}

#[test]
fn a_missing_data_dir_is_named_and_no_run_is_started() {
    let trained = Trained::new();
    let missing = trained.tmp.path().join("data/trian");
    let overlay = trained.overlay(
        "typo.yaml",
        &format!("dataset:\n  train:\n    dir: \"{}\"\n", missing.display()),
    );
    let output = trained.train(&[&overlay], "typo", &[]);
    assert_clean_failure(
        &output,
        &[
            &missing.display().to_string(),
            "the data folder of `dataset.train.dir` does not exist",
        ],
    );
    assert!(!trained.logs.join("typo").exists(), "no run folder");

    let overlay = trained.overlay(
        "typo_test.yaml",
        &format!("dataset:\n  test:\n    dir: \"{}\"\n", missing.display()),
    );
    let output = trained.predict(&trained.checkpoint(), Some(&[&overlay]), "test", "typo");
    assert_clean_failure(
        &output,
        &["the data folder of `dataset.test.dir` does not exist"],
    );
    assert!(!trained.logs.join("typo").exists(), "no output folder");
}

#[test]
fn a_damaged_data_file_is_named() {
    let trained = Trained::new();
    let images = trained.tmp.path().join("data/train/images");
    for entry in fs::read_dir(&images).unwrap() {
        truncate(&entry.unwrap().path(), 200);
    }
    let output = trained.train(&[], "damaged_data", &[]);
    assert_clean_failure(
        &output,
        &[
            &images.display().to_string(),
            ".nii.gz: cannot read NIfTI: the file ends early",
            "it is truncated or damaged",
        ],
    );
}

#[test]
fn a_checkpoint_of_another_config_is_a_shape_mismatch() {
    let trained = Trained::new();
    let wider = trained.overlay(
        "wider.yaml",
        "train:\n  backbone:\n    num_channel_initial: 2\n",
    );
    let needles = ["a checkpoint of another configuration", "shape mismatch"];
    let output = trained.predict(&trained.checkpoint(), Some(&[&wider]), "test", "other");
    assert_clean_failure(&output, &needles);
    assert!(!trained.logs.join("other").exists());

    let checkpoint = trained.checkpoint();
    let output = trained.train(
        &[&wider],
        "other",
        &[
            "--max_epochs",
            "2",
            "--ckpt_path",
            checkpoint.to_str().unwrap(),
        ],
    );
    assert_clean_failure(&output, &needles);
    assert!(!trained.logs.join("other").exists());
}

#[test]
fn a_damaged_checkpoint_is_refused() {
    let trained = Trained::new();
    let weights = trained.checkpoint_copy("short_weights");
    truncate(&weights.join("weights.safetensors"), 100);
    let output = trained.predict(&weights, Some(&[]), "test", "damaged");
    assert_clean_failure(&output, &["weights.safetensors", "damaged file"]);
    let resume = ["--max_epochs", "2", "--ckpt_path"];
    let output = trained.train(
        &[],
        "damaged",
        &[&resume[..], &[weights.to_str().unwrap()]].concat(),
    );
    assert_clean_failure(&output, &["weights.safetensors", "damaged file"]);

    let optimizer = trained.checkpoint_copy("short_optimizer");
    truncate(&optimizer.join("optimizer.safetensors"), 50);
    let output = trained.train(
        &[],
        "damaged",
        &[&resume[..], &[optimizer.to_str().unwrap()]].concat(),
    );
    assert_clean_failure(&output, &["cannot read optimizer.safetensors"]);

    let progress = trained.checkpoint_copy("bad_progress");
    fs::write(progress.join("progress.txt"), "garbage\n").unwrap();
    let output = trained.train(
        &[],
        "damaged",
        &[&resume[..], &[progress.to_str().unwrap()]].concat(),
    );
    assert_clean_failure(&output, &["progress.txt lacks a valid `epoch`"]);
    assert!(!trained.logs.join("damaged").exists());
}

/// Tests run as root, so permissions cannot make a folder unwritable; a log folder below a
/// regular file cannot be created by anyone.
#[test]
fn a_log_dir_that_cannot_be_created_fails_cleanly() {
    let trained = Trained::new();
    let file = trained.tmp.path().join("not_a_folder");
    fs::write(&file, "keep me\n").unwrap();
    let logs = file.join("logs");
    let output = voxreg()
        .arg("train")
        .arg("--config_path")
        .arg(&trained.config)
        .arg("--log_dir")
        .arg(&logs)
        .args(["--exp_name", "run", "--max_epochs", "1"])
        .output()
        .unwrap();
    assert_clean_failure(
        &output,
        &[&logs.join("run").display().to_string(), "Not a directory"],
    );
    let output = voxreg()
        .arg("predict")
        .arg("--ckpt_path")
        .arg(trained.checkpoint())
        .args(["--split", "test", "--exp_name", "run"])
        .arg("--log_dir")
        .arg(&logs)
        .output()
        .unwrap();
    assert_clean_failure(&output, &[&logs.display().to_string(), "Not a directory"]);
    assert_eq!(fs::read_to_string(&file).unwrap(), "keep me\n");
}

#[test]
fn an_unknown_or_unconfigured_split_is_refused() {
    let trained = Trained::new();
    let output = trained.predict(&trained.checkpoint(), None, "training", "split");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("invalid value 'training' for '--split"),
        "{err}"
    );
    assert!(
        err.contains("[possible values: train, valid, test]"),
        "{err}"
    );

    // DeepReg's way to leave a split out: an empty `dir`.
    let no_valid = trained.overlay("no_valid.yaml", "dataset:\n  valid:\n    dir: \"\"\n");
    let output = trained.predict(&trained.checkpoint(), Some(&[&no_valid]), "valid", "split");
    assert_clean_failure(
        &output,
        &["the configuration has no `dataset.valid` split with a `dir`"],
    );
    assert!(!trained.logs.join("split").exists());
}

/// DeepReg refuses the conditional method on unlabelled data before doing anything.
#[test]
fn the_conditional_method_on_unlabelled_data_is_a_config_problem() {
    let trained = Trained::new();
    let overlay = trained.overlay(
        "conditional_unlabeled.yaml",
        "dataset:\n  train:\n    labeled: false\ntrain:\n  method: conditional\n",
    );
    let output = trained.train(&[&overlay], "conditional", &[]);
    assert_clean_failure(
        &output,
        &[
            "`dataset.train.labeled`: the `conditional` method needs labelled data",
            "conditional_unlabeled.yaml:3:5",
        ],
    );
    assert!(!trained.logs.join("conditional").exists());
}

/// Every refused command leaves the earlier run and prediction byte-identical and adds
/// nothing beside them.
#[test]
fn failed_commands_leave_earlier_output_untouched() {
    let trained = Trained::new();
    let output = trained.predict(&trained.checkpoint(), None, "test", "predicted");
    assert!(output.status.success(), "{}", stderr(&output));
    let before = snapshot(&trained.logs);
    assert!(before
        .keys()
        .any(|p| p.ends_with("predicted/test/metrics.csv")));

    // The same run name again, with a different config.
    let other = trained.overlay("other.yaml", "train:\n  epochs: 3\n");
    assert_clean_failure(
        &trained.train(&[&other], "base", &[]),
        &["already holds a run; choose another --exp-name"],
    );
    // The same prediction name again.
    assert_clean_failure(
        &trained.predict(&trained.checkpoint(), None, "test", "predicted"),
        &["predicted exists; choose another --exp-name"],
    );
    // Resuming from a damaged copy of the checkpoint into a new run.
    let damaged = trained.checkpoint_copy("damaged");
    truncate(&damaged.join("weights.safetensors"), 10);
    assert_clean_failure(
        &trained.train(
            &[],
            "resumed",
            &[
                "--max_epochs",
                "2",
                "--ckpt_path",
                damaged.to_str().unwrap(),
            ],
        ),
        &["damaged file"],
    );
    // A config with a problem.
    let bad = trained.overlay("bad.yaml", "train:\n  epochs: 0\n");
    assert_clean_failure(&trained.train(&[&bad], "bad", &[]), &["`train.epochs`"]);

    assert_eq!(snapshot(&trained.logs), before, "the log folder changed");
}

#[test]
fn every_missing_data_folder_is_named_with_the_demo_hint() {
    let dir = tempfile::tempdir().unwrap();
    let quickstart = std::fs::read_to_string(repo_root().join("configs/quickstart.yaml")).unwrap();
    let data = dir.path().join("demos/paired_mrus_prostate/dataset");
    let config = dir.path().join("demo.yaml");
    std::fs::write(
        &config,
        quickstart.replace("dir: demo/data/paired", &format!("dir: {}", data.display())),
    )
    .unwrap();
    let logs = dir.path().join("logs");
    let output = run(&[
        "train",
        "-c",
        config.to_str().unwrap(),
        "--log-dir",
        logs.to_str().unwrap(),
    ]);
    assert_clean_failure(
        &output,
        &[
            "3 data folders are missing",
            "`dataset.train.dir` does not exist",
            "`dataset.valid.dir` does not exist",
            "`dataset.test.dir` does not exist",
            "python demos/paired_mrus_prostate/demo_data.py",
        ],
    );
    assert!(!logs.exists(), "no log folder");
}
