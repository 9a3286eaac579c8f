//! `voxreg register`: classical registration of one pair of the demo data, as a DDF and as
//! an affine transform, and its input errors.

use std::fs;
use std::path::PathBuf;

use crate::util::{assert_clean_failure, repo_root, stderr, stdout, voxreg};

fn demo(kind: &str) -> PathBuf {
    repo_root()
        .join("demo/data/paired/test")
        .join(kind)
        .join("case_014.nii.gz")
}

fn register(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    voxreg()
        .arg("register")
        .arg("--moving")
        .arg(demo("moving_images"))
        .arg("--fixed")
        .arg(demo("fixed_images"))
        .arg("--moving-label")
        .arg(demo("moving_labels"))
        .arg("--fixed-label")
        .arg(demo("fixed_labels"))
        .arg("-o")
        .arg(out)
        .args(extra)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap()
}

/// `label 0 Dice  0.7651 → 0.8123`: the two numbers.
fn before_after(text: &str, line_start: &str) -> (f64, f64) {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(line_start))
        .unwrap_or_else(|| panic!("no `{line_start}` line in {text}"));
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [.., before, after] = numbers[..] else {
        panic!("{line}")
    };
    (before, after)
}

#[test]
fn a_ddf_registration_improves_the_pair_and_writes_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ddf");
    let output = register(&out, &["--iterations", "30"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let (before, after) = before_after(&text, "image SSD");
    assert!(after < before * 0.5, "{text}");
    let (before, after) = before_after(&text, "label 0 Dice");
    assert!(after > before, "{text}");
    for file in [
        "warped_moving_image.nii.gz",
        "warped_moving_label.nii.gz",
        "ddf.nii.gz",
        "loss.csv",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let ddf = voxreg::data::read_nifti(&out.join("ddf.nii.gz")).unwrap();
    let fixed = voxreg::data::read_nifti(&demo("fixed_images")).unwrap();
    assert_eq!(ddf.shape, vec![32, 32, 32, 3]);
    assert_eq!(
        ddf.affine, fixed.affine,
        "outputs sit in the fixed image's space"
    );
    let label = voxreg::data::read_nifti(&out.join("warped_moving_label.nii.gz")).unwrap();
    assert_eq!(
        label.shape,
        vec![32, 32, 32, 2],
        "both labels, in the input layout"
    );
    let losses = fs::read_to_string(out.join("loss.csv")).unwrap();
    assert_eq!(
        losses.lines().count(),
        31,
        "a header and one row per iteration"
    );
    // The folder now holds results: a second run there is refused and changes nothing.
    let before = fs::read(out.join("ddf.nii.gz")).unwrap();
    assert_clean_failure(&register(&out, &["--iterations", "1"]), &["is not empty"]);
    assert_eq!(fs::read(out.join("ddf.nii.gz")).unwrap(), before);
}

#[test]
fn an_affine_registration_writes_its_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("affine");
    let output = register(&out, &["--transform", "affine", "--iterations", "30"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (before, after) = before_after(&stdout(&output), "image SSD");
    assert!(after < before, "{}", stdout(&output));
    let matrix = fs::read_to_string(out.join("affine.txt")).unwrap();
    let rows: Vec<Vec<f64>> = matrix
        .lines()
        .map(|l| l.split(' ').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.len() == 3));
    assert!(
        (rows[0][0] - 1.0).abs() < 0.2,
        "close to the identity: {matrix}"
    );
}

#[test]
fn register_input_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = voxreg()
        .args(["register", "--moving", "/nonexistent.nii.gz", "--fixed"])
        .arg(demo("fixed_images"))
        .output()
        .unwrap();
    assert_clean_failure(&output, &["moving image /nonexistent.nii.gz: no such file"]);
    let output = voxreg()
        .arg("register")
        .arg("--moving")
        .arg(demo("moving_images"))
        .arg("--fixed")
        .arg(demo("fixed_images"))
        .arg("--moving-label")
        .arg(demo("moving_labels"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_clean_failure(&output, &["give both --moving-label and --fixed-label"]);
    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, "train:\n  loss:\n    image: {name: lnccc}\n").unwrap();
    let output = register(&out, &["-c", bad.to_str().unwrap()]);
    assert_clean_failure(&output, &["lnccc", "lncc"]);
    assert!(!out.exists(), "nothing written on bad input");
}
