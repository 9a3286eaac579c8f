//! `voxreg predict`'s per-pair outputs: every NIfTI and PNG file, in the fixed image's
//! space, and the refusals that keep earlier outputs safe.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use voxreg::data::{preprocess::resized_affine, read_nifti};

use crate::util::{assert_clean_failure, repo_root, stderr, stdout, train_tiny_model, voxreg};

/// The demo's test split: two pairs, two labels each.
/// DeepReg's pair folders, with the fixed image each holds.
const PAIRS: [&str; 2] = ["pair_0", "pair_1"];
const FIXED: [&str; 2] = ["case_014", "case_015"];
const PAIR_ARRAYS: [&str; 4] = ["moving_image", "fixed_image", "pred_fixed_image", "ddf"];
const LABEL_ARRAYS: [&str; 3] = ["moving_label", "fixed_label", "pred_fixed_label"];

fn predict(checkpoint: &Path, logs: &Path, name: &str, flags: &[&str]) -> Output {
    voxreg()
        .args(["predict", "--split", "test", "--ckpt-path"])
        .arg(checkpoint)
        .arg("--log-dir")
        .arg(logs)
        .args(["--exp-name", name])
        .args(flags)
        .output()
        .expect("the voxreg binary runs")
}

/// Every array's folder in a pair's outputs: the pair's own, then each label's.
fn array_dirs(out: &Path, pair: &str) -> Vec<(PathBuf, &'static str)> {
    let mut dirs: Vec<(PathBuf, &str)> = PAIR_ARRAYS.iter().map(|a| (out.join(pair), *a)).collect();
    for label in ["label_0", "label_1"] {
        dirs.extend(
            LABEL_ARRAYS
                .iter()
                .map(|a| (out.join(pair).join(label), *a)),
        );
    }
    dirs
}

fn png_size(path: &Path) -> (u32, u32, png::ColorType) {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let info = reader.info();
    (info.width, info.height, info.color_type)
}

#[test]
fn predict_writes_every_pair_output_in_the_fixed_space() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let checkpoint = train_tiny_model(dir.path(), &logs, "tiny", "");
    let output = predict(
        &checkpoint,
        &logs,
        "out",
        &["--save-png", "--batch-size", "2"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("pair_*"), "{}", stdout(&output));
    let out = logs.join("out/test");
    let mut pairs: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pair_"))
        .collect();
    pairs.sort();
    assert_eq!(pairs, PAIRS);
    let index = fs::read_to_string(out.join("pairs.csv")).unwrap();
    assert_eq!(
        index,
        "pair_folder,moving,fixed\npair_0,case_014,case_014\npair_1,case_015,case_015\n"
    );
    for (pair, fixed) in PAIRS.into_iter().zip(FIXED) {
        let source = repo_root().join(format!("demo/data/paired/test/fixed_images/{fixed}.nii.gz"));
        let source = read_nifti(&source).unwrap();
        let expected_affine = resized_affine(&source.affine, &source.shape, &[16, 16, 16]);
        for (folder, array) in array_dirs(&out, pair) {
            let volume = read_nifti(&folder.join(format!("{array}.nii.gz"))).unwrap();
            let channels: &[usize] = if array == "ddf" { &[3] } else { &[] };
            assert_eq!(
                volume.shape,
                [&[16, 16, 16][..], channels].concat(),
                "{array}"
            );
            assert_eq!(volume.affine, expected_affine, "{pair}/{array}");
            assert!(volume.data.iter().all(|v| v.is_finite()), "{array}");
            let slices = folder.join(array);
            assert_eq!(fs::read_dir(&slices).unwrap().count(), 16, "{array}");
            let colour = if array == "ddf" {
                png::ColorType::Rgb
            } else {
                png::ColorType::Grayscale
            };
            assert_eq!(
                png_size(&slices.join(format!("depth15_{array}.png"))),
                (16, 16, colour)
            );
        }
        // Labels are in [0, 1]; the fixed label is the data set's own mask.
        let fixed_label = read_nifti(&out.join(pair).join("label_1/fixed_label.nii.gz")).unwrap();
        assert!(fixed_label.data.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(fixed_label.data.iter().any(|v| *v > 0.5));
    }
    let metrics = fs::read_to_string(out.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = metrics.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{metrics}");
    assert!(
        rows.iter()
            .any(|r| r.contains(",[0],1,") && r.contains(",case_014,case_014,")),
        "{metrics}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains(",[1],0,") && r.contains(",case_015,case_015,")),
        "{metrics}"
    );
    // `voxreg warp` pads as predict warps: re-warping the moving image by the saved DDF
    // reproduces the predicted fixed image, border voxels included.
    for (moving, pred) in [
        ("moving_image", "pred_fixed_image"),
        ("label_0/moving_label", "label_0/pred_fixed_label"),
    ] {
        let pair = out.join(PAIRS[0]);
        let rewarped = dir.path().join("rewarped.nii.gz");
        let output = voxreg()
            .arg("warp")
            .arg("-i")
            .arg(pair.join(format!("{moving}.nii.gz")))
            .arg("-d")
            .arg(pair.join("ddf.nii.gz"))
            .arg("-o")
            .arg(&rewarped)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let rewarped = read_nifti(&rewarped).unwrap();
        let predicted = read_nifti(&pair.join(format!("{pred}.nii.gz"))).unwrap();
        let largest = rewarped
            .data
            .iter()
            .zip(&predicted.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(largest < 1e-4, "{moving}: differs by {largest}");
    }
    // Nothing half-written is left behind.
    let partial = walk(&out)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("partial"));
    assert_eq!(partial, None);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            paths.extend(walk(&path));
        }
        paths.push(path);
    }
    paths
}

#[test]
fn format_flags_choose_the_files_and_the_last_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let checkpoint = train_tiny_model(dir.path(), &logs, "tiny", "");
    // DeepReg's defaults: NIfTI, no PNG.
    let output = predict(&checkpoint, &logs, "default", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let pair = logs.join("default/test").join(PAIRS[0]);
    assert!(pair.join("ddf.nii.gz").is_file());
    assert!(!pair.join("ddf").exists(), "no PNG slices by default");
    // Neither format: metrics only.
    let output = predict(
        &checkpoint,
        &logs,
        "none",
        &["--no_nifti", "--save-png", "--no-png"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let names: Vec<String> = fs::read_dir(logs.join("none/test"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("pair_")), "{names:?}");
    assert!(names.contains(&"metrics.csv".to_owned()));
    // PNG only, and --save-nifti after --no-nifti turns NIfTI back on.
    let output = predict(
        &checkpoint,
        &logs,
        "png",
        &["--no-nifti", "--save-nifti", "--save_png"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let pair = logs.join("png/test").join(PAIRS[1]);
    assert!(pair.join("fixed_image.nii.gz").is_file());
    assert!(pair
        .join("label_0/pred_fixed_label/depth0_pred_fixed_label.png")
        .is_file());
}

#[test]
fn predict_never_replaces_earlier_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let checkpoint = train_tiny_model(dir.path(), &logs, "tiny", "");
    let output = predict(&checkpoint, &logs, "out", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let metrics = fs::read(logs.join("out/test/metrics.csv")).unwrap();
    let ddf = fs::read(logs.join("out/test").join(PAIRS[0]).join("ddf.nii.gz")).unwrap();
    let again = predict(&checkpoint, &logs, "out", &["--save-png"]);
    assert_clean_failure(&again, &["out exists; choose another --exp-name"]);
    assert_eq!(
        fs::read(logs.join("out/test/metrics.csv")).unwrap(),
        metrics
    );
    assert_eq!(
        fs::read(logs.join("out/test").join(PAIRS[0]).join("ddf.nii.gz")).unwrap(),
        ddf
    );
    assert!(!logs.join("out/test").join(PAIRS[0]).join("ddf").exists());
    let zero = predict(&checkpoint, &logs, "zero", &["--batch-size", "0"]);
    assert_clean_failure(&zero, &["--batch-size must be at least 1"]);
    assert!(!logs.join("zero").exists());
}

#[test]
fn methods_with_a_velocity_field_or_an_affine_save_them_too() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let dvf = train_tiny_model(dir.path(), &logs, "dvf", "train:\n  method: dvf\n");
    let output = predict(&dvf, &logs, "dvf-out", &["--save-png"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let pair = logs.join("dvf-out/test").join(PAIRS[0]);
    let field = read_nifti(&pair.join("dvf.nii.gz")).unwrap();
    assert_eq!(field.shape, [16, 16, 16, 3]);
    assert_eq!(
        field.affine,
        read_nifti(&pair.join("fixed_image.nii.gz")).unwrap().affine
    );
    assert_eq!(
        png_size(&pair.join("dvf/depth0_dvf.png")),
        (16, 16, png::ColorType::Rgb)
    );
    assert!(!pair.join("affine.txt").exists());

    let global = train_tiny_model(
        dir.path(),
        &logs,
        "global",
        "train:\n  backbone: {name: global, num_channel_initial: 2, extract_levels: [0, 1, 2]}\n",
    );
    // affine.txt is written even without NIfTI or PNG, as DeepReg does.
    let output = predict(&global, &logs, "global-out", &["--no-nifti"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let pair = logs.join("global-out/test").join(PAIRS[1]);
    let text = fs::read_to_string(pair.join("affine.txt")).unwrap();
    let rows: Vec<Vec<f64>> = text
        .lines()
        .map(|line| line.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows.iter().all(|row| row.len() == 3), "{text}");
    assert!(!pair.join("ddf.nii.gz").exists());
}
