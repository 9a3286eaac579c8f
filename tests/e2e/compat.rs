//! DeepReg compatibility through the binary: DeepReg's own configs (`configs/deepreg/`, the
//! text of DeepReg's documentation and repository configs), with only their data folders
//! pointed at tiny generated data in DeepReg's layout, train with `voxreg train
//! --config_path …`, resume from a checkpoint, and predict, for every loader type, both
//! file formats, and the methods ddf, dvf, conditional and ddf with the global (affine)
//! backbone.
//!
//! The configs' image shapes and networks are sized for real scans; where they are, a second
//! file given to `--config_path` (DeepReg merges several the same way) shrinks them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::deepreg_layout::{deepreg_config, Format, LoaderType, TinyDataset};
use crate::util::{repo_root, stderr, stdout, voxreg_reading_test_h5};

/// One compatibility case.
struct Case {
    /// Files under `configs/deepreg/`, merged in order; the first holds the dataset section.
    configs: &'static [&'static str],
    /// A last overlay that only shrinks sizes (written beside the data), if the configs
    /// are too large to train in a test.
    tiny: Option<&'static str>,
    /// The data to generate.
    data: TinyDataset,
    /// The header of `train_metrics.csv`: which loss terms the config trains with.
    metrics_header: &'static str,
    /// Samples in the test split (pairs × labels).
    test_samples: usize,
    /// Whether predictions carry label metrics.
    labeled: bool,
}

/// Runs `voxreg train` with DeepReg's flag spellings.
fn train(configs: &[PathBuf], logs: &Path, name: &str, epochs: &str, resume: Option<&Path>) {
    let mut command = voxreg_reading_test_h5();
    command
        .args(["train", "--gpu", ""])
        .arg("--config_path")
        .args(configs)
        .args(["--log_dir", logs.to_str().unwrap()])
        .args(["--exp_name", name, "--max_epochs", epochs]);
    if let Some(checkpoint) = resume {
        command.arg("--ckpt_path").arg(checkpoint);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{name}: {}", stderr(&output));
    let text = stdout(&output);
    let trained = epochs.parse::<usize>().unwrap() - resume.map_or(0, |_| 1);
    let expected = if trained == 1 {
        "trained 1 epoch (".to_owned()
    } else {
        format!("trained {trained} epochs (")
    };
    assert!(text.contains(&expected), "{name}: {text}");
}

fn run(case: &Case) {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = case.data.write(&tmp.path().join("data"));
    let mut configs = Vec::new();
    for (index, name) in case.configs.iter().enumerate() {
        let path = tmp.path().join(name);
        let text = if index == 0 {
            deepreg_config(name, &dirs, case.data.format)
        } else {
            fs::read_to_string(repo_root().join("configs/deepreg").join(name)).unwrap()
        };
        fs::write(&path, text).unwrap();
        configs.push(path);
    }
    if let Some(tiny) = case.tiny {
        let path = tmp.path().join("tiny.yaml");
        fs::write(&path, tiny).unwrap();
        configs.push(path);
    }
    let logs = tmp.path().join("logs");

    // One epoch, then a second one resumed from its checkpoint.
    train(&configs, &logs, "first", "1", None);
    let checkpoint = logs.join("first/save/ckpt-1");
    assert!(checkpoint.is_dir(), "no checkpoint after one epoch");
    train(&configs, &logs, "resumed", "2", Some(&checkpoint));
    let run = logs.join("resumed");
    for file in [
        "config.yaml",
        "train_metrics.csv",
        "save/weights.safetensors",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    let epochs = fs::read_to_string(run.join("train_metrics.csv")).unwrap();
    let rows: Vec<&str> = epochs.lines().collect();
    // The loss columns, then the metrics the method and data have.
    assert!(
        rows[0] == case.metrics_header || rows[0].starts_with(&format!("{},", case.metrics_header)),
        "{epochs}"
    );
    assert!(
        rows[0].contains(",image_ssd") || !rows[0].contains("image/"),
        "{epochs}"
    );
    assert!(rows.last().unwrap().starts_with("2,"), "{epochs}");

    // Predict on the test split with the resumed run's checkpoint and saved config.
    let output = voxreg_reading_test_h5()
        .args(["predict", "--gpu", "", "-gr"])
        .arg("--ckpt_path")
        .arg(run.join("save/ckpt-2"))
        .args(["--split", "test", "--log_dir", logs.to_str().unwrap()])
        .args(["--exp_name", "predicted"])
        .output()
        .unwrap();
    assert!(output.status.success(), "predict: {}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains(&format!("test split, {} samples", case.test_samples)),
        "{text}"
    );
    check_deepreg_predict_layout(&logs.join("predicted"), case);
}

/// What DeepReg's predict writes and its demo scripts read: `<exp>/test/` holding
/// `pair_<indices>/` folders, `metrics.csv` whose first columns are DeepReg's, in its order
/// and formats (`pair_index` a Python list, `label_index` an integer, `-1` without labels),
/// and the pandas statistics CSVs.
fn check_deepreg_predict_layout(exp: &Path, case: &Case) {
    let test = exp.join("test");
    let metrics = fs::read_to_string(test.join("metrics.csv")).unwrap();
    assert!(
        metrics.starts_with(
            "image_ssd,label_binary_dice,label_tre,pair_index,label_index,label_tre_mm,"
        ),
        "{metrics}"
    );
    let mut reader = csv::Reader::from_reader(metrics.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), case.test_samples, "{metrics}");
    let python_list = |text: &str| -> Vec<usize> {
        let inner = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
        let inner = inner.unwrap_or_else(|| panic!("pair_index {text} is no list: {metrics}"));
        inner.split(", ").map(|i| i.parse().unwrap()).collect()
    };
    for row in &rows {
        assert!(row[0].parse::<f64>().is_ok(), "{metrics}");
        assert_eq!(!row[1].is_empty(), case.labeled, "{metrics}");
        if case.labeled {
            let dice: f64 = row[1].parse().unwrap();
            assert!((0.0..=1.0).contains(&dice), "{metrics}");
            let label: i64 = row[4].parse().unwrap();
            assert!(label >= 0, "{metrics}");
            let folder = format!(
                "pair_{}",
                python_list(&row[3])
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join("_")
            );
            assert!(test.join(&folder).is_dir(), "{folder}: {metrics}");
            assert!(test.join(&folder).join(format!("label_{label}")).is_dir());
        } else {
            assert_eq!(&row[4], "-1", "{metrics}");
            python_list(&row[3]);
        }
    }
    let overall = fs::read_to_string(test.join("metrics_stats_overall.csv")).unwrap();
    let lines: Vec<&str> = overall.lines().collect();
    assert_eq!(
        lines[0], ",image_ssd,label_binary_dice,label_tre",
        "{overall}"
    );
    assert_eq!(
        lines[1],
        format!(
            "count,{0}.0,{1},{1}",
            case.test_samples,
            if case.labeled {
                format!("{}.0", case.test_samples)
            } else {
                "0.0".to_owned()
            }
        ),
        "{overall}"
    );
    let per_label = fs::read_to_string(test.join("metrics_stats_per_label.csv")).unwrap();
    assert!(
        per_label.starts_with("label_index,image_ssd_mean,image_ssd_median,image_ssd_std,"),
        "{per_label}"
    );
    assert!(test.join("pairs.csv").is_file());
}

const DDF_TERMS: &str = "epoch,loss,image/lncc,label/dice,regularization/bending";

/// DeepReg's paired CT lung demo config, shrunk: 8³ images, 2 initial channels.
const TINY_PAIRED: &str = "dataset:
  moving_image_shape: [8, 8, 8]
  fixed_image_shape: [8, 8, 8]
train:
  backbone:
    num_channel_initial: 2
";

/// DeepReg's grouped MR heart demo config, shrunk: 8³ images, a 3-level LocalNet.
const TINY_GROUPED: &str = "dataset:
  image_shape: [8, 8, 8]
train:
  backbone:
    num_channel_initial: 2
    extract_levels: [0, 1, 2]
";

/// Unpaired configs sized for scans or wide networks, shrunk: 8³ images, 2 initial channels.
const TINY_UNPAIRED: &str = "dataset:
  image_shape: [8, 8, 8]
train:
  backbone:
    num_channel_initial: 2
";

fn paired(format: Format) -> Case {
    Case {
        configs: &["paired_ct_lung.yaml"],
        tiny: Some(TINY_PAIRED),
        data: TinyDataset {
            loader: LoaderType::Paired,
            format,
            labels: 1,
            size: 10,
            fixed_size: 9,
        },
        metrics_header: "epoch,loss,image/ssd,label/dice,regularization/bending",
        test_samples: 2,
        labeled: true,
    }
}

/// DeepReg's reference config is already tiny (16³, one initial channel): used as is.
fn unpaired(format: Format, overlay: Option<&'static str>) -> Case {
    let configs: &'static [&'static str] = match overlay {
        None => &["unpaired_labeled_ddf.yaml"],
        Some("conditional.yaml") => &["unpaired_labeled_ddf.yaml", "conditional.yaml"],
        Some("affine.yaml") => &["unpaired_labeled_ddf.yaml", "affine.yaml"],
        Some("composite_loss.yaml") => &["unpaired_labeled_ddf.yaml", "composite_loss.yaml"],
        Some(other) => panic!("no case for {other}"),
    };
    Case {
        configs,
        tiny: None,
        data: TinyDataset {
            loader: LoaderType::Unpaired,
            format,
            labels: 3,
            size: 10,
            fixed_size: 10,
        },
        metrics_header: DDF_TERMS,
        // Three test images give one pair; every one of its three labels is a sample.
        test_samples: 3,
        labeled: true,
    }
}

fn grouped(format: Format) -> Case {
    Case {
        configs: &["grouped_mr_heart.yaml"],
        tiny: Some(TINY_GROUPED),
        data: TinyDataset {
            loader: LoaderType::Grouped,
            format,
            // Written but unused: the config says `labeled: false`.
            labels: 2,
            size: 9,
            fixed_size: 9,
        },
        // The label loss has weight 0 and the data are unlabelled.
        metrics_header: "epoch,loss,image/gmi,regularization/gradient",
        // One intra-group pair per group (`sample_image_in_group: true`), two test groups.
        test_samples: 2,
        labeled: false,
    }
}

#[test]
fn paired_nifti_trains_resumes_and_predicts() {
    run(&paired(Format::Nifti));
}

#[test]
fn paired_h5_trains_resumes_and_predicts() {
    run(&paired(Format::H5));
}

#[test]
fn unpaired_nifti_trains_resumes_and_predicts() {
    run(&unpaired(Format::Nifti, None));
}

/// At 8³, the size of DeepReg's paired test data's fixed images, the reference config's
/// depth-4 LocalNet goes past the image size (levels 8, 4, 2, 1, 1), as DeepReg allows.
#[test]
fn unpaired_h5_trains_resumes_and_predicts() {
    run(&Case {
        tiny: Some("dataset:\n  image_shape: [8, 8, 8]\n"),
        ..unpaired(Format::H5, None)
    });
}

#[test]
fn grouped_nifti_trains_resumes_and_predicts() {
    run(&grouped(Format::Nifti));
}

#[test]
fn grouped_h5_trains_resumes_and_predicts() {
    run(&grouped(Format::H5));
}

/// DeepReg's unpaired MR brain demo: the dvf method with a UNet.
#[test]
fn dvf_method_trains_resumes_and_predicts() {
    run(&Case {
        configs: &["unpaired_mr_brain_dvf.yaml"],
        tiny: Some(TINY_UNPAIRED),
        data: TinyDataset {
            loader: LoaderType::Unpaired,
            format: Format::Nifti,
            labels: 2,
            size: 10,
            fixed_size: 10,
        },
        metrics_header: "epoch,loss,image/ssd,label/dice,regularization/gradient",
        test_samples: 2,
        labeled: true,
    });
}

/// DeepReg's `config/test/conditional.yaml` on its reference config: only the label loss
/// applies.
#[test]
fn conditional_method_trains_resumes_and_predicts() {
    run(&Case {
        metrics_header: "epoch,loss,label/dice",
        ..unpaired(Format::H5, Some("conditional.yaml"))
    });
}

/// DeepReg's `config/test/affine.yaml` on its reference config, as DeepReg's own training
/// test combines them: the global backbone predicts an affine transform.
#[test]
fn affine_global_backbone_trains_resumes_and_predicts() {
    run(&unpaired(Format::Nifti, Some("affine.yaml")));
}

/// DeepReg v0.1.1's layout (upgraded on load as DeepReg does), shrunk by an overlay in the
/// same layout: DeepReg upgrades after merging, so the sizes go where v0.1.1 kept them.
#[test]
fn deepreg_v011_layout_trains_resumes_and_predicts() {
    run(&Case {
        configs: &["grouped_mr_heart_v011.yaml"],
        tiny: Some(
            "dataset:
  image_shape: [8, 8, 8]
train:
  model:
    local:
      num_channel_initial: 2
      extract_levels: [0, 1, 2]
",
        ),
        ..grouped(Format::Nifti)
    });
}

/// Lists of weighted losses in every category (DeepReg's "Composite Loss" documentation and
/// its v0.1.1 upgrade tests), each term logged.
#[test]
fn composite_losses_train_resume_and_predict() {
    run(&Case {
        metrics_header: "epoch,loss,image/lncc,image/gmi,label/dice,label/cross-entropy,\
                         regularization/bending,regularization/gradient",
        tiny: Some(TINY_UNPAIRED),
        ..unpaired(Format::Nifti, Some("composite_loss.yaml"))
    });
}
