//! Moving and fixed images of different shapes (DeepReg's `moving_image_shape` ≠
//! `fixed_image_shape`): "before registration" is the moving image as the method samples it
//! under the identity, so a near-zero DDF changes nothing between before and after.

use std::fs;

use voxreg::data::read_nifti;

use crate::deepreg_layout::{deepreg_config, Format, LoaderType, TinyDataset};
use crate::util::{stderr, voxreg};

/// DeepReg's paired CT lung config, shrunk to 8³ moving and 6³ fixed images, with a learning
/// rate so small that one epoch leaves the DDF near its initial (near-zero) value.
const DIFFERENT_SHAPES: &str = "dataset:
  moving_image_shape: [8, 8, 8]
  fixed_image_shape: [6, 6, 6]
train:
  backbone:
    num_channel_initial: 2
  optimizer:
    learning_rate: 1.0e-12
";

/// The values of column `name` in a CSV text (`None` for an empty field).
fn column(csv_text: &str, name: &str) -> Vec<Option<f64>> {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let index = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name}: {csv_text}"));
    reader
        .records()
        .map(|r| {
            let record = r.unwrap();
            (!record[index].is_empty()).then(|| record[index].parse().unwrap())
        })
        .collect()
}

#[test]
fn with_different_shapes_a_near_zero_ddf_keeps_after_equal_to_before() {
    let tmp = tempfile::tempdir().unwrap();
    let data = TinyDataset {
        loader: LoaderType::Paired,
        format: Format::Nifti,
        labels: 1,
        size: 10,
        fixed_size: 9,
    };
    let dirs = data.write(&tmp.path().join("data"));
    let config = tmp.path().join("paired_ct_lung.yaml");
    fs::write(
        &config,
        deepreg_config("paired_ct_lung.yaml", &dirs, Format::Nifti),
    )
    .unwrap();
    let tiny = tmp.path().join("tiny.yaml");
    fs::write(&tiny, DIFFERENT_SHAPES).unwrap();
    let logs = tmp.path().join("logs");
    let output = voxreg()
        .args(["train", "--config_path"])
        .args([&config, &tiny])
        .arg("--log_dir")
        .arg(&logs)
        .args(["--exp_name", "run", "--max_epochs", "1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let output = voxreg()
        .args(["predict", "--split", "test", "--ckpt-path"])
        .arg(logs.join("run/save/ckpt-1"))
        .arg("--log-dir")
        .arg(&logs)
        .args(["--exp-name", "predicted"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let test = logs.join("predicted/test");
    let ddf = read_nifti(&test.join("pair_0/ddf.nii.gz")).unwrap();
    assert_eq!(ddf.shape, [6, 6, 6, 3]);
    let largest = ddf.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(largest < 0.05, "the DDF is not near zero: {largest}");
    let moving = read_nifti(&test.join("pair_0/moving_image.nii.gz")).unwrap();
    assert_eq!(
        moving.shape,
        [6, 6, 6],
        "the moving image on the fixed grid"
    );

    let metrics = fs::read_to_string(test.join("metrics.csv")).unwrap();
    for metric in ["image_ssd", "label_binary_dice", "label_tre"] {
        let after = column(&metrics, metric);
        let before = column(&metrics, &format!("{metric}_before"));
        assert_eq!(after.len(), 2, "{metrics}");
        for (a, b) in after.iter().zip(&before) {
            let (a, b) = (a.expect("a value after"), b.expect("a value before"));
            let scale = a.abs().max(b.abs()).max(1.0);
            assert!(
                (a - b).abs() < 0.05 * scale,
                "{metric}: before {b} → after {a} with a near-zero DDF\n{metrics}"
            );
        }
    }
}
