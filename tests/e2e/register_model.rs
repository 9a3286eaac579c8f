//! `voxreg register --model`: a trained run registers new pairs at their native resolution
//! (VoxelMorph's `register.py`), singly or from a CSV, from NIfTI or `.npz` files, and never
//! overwrites a file.

use std::path::{Path, PathBuf};
use std::process::Output;

use voxreg::data::{read_nifti, read_npz, write_npz};

use crate::util::{assert_clean_failure, repo_root, stderr, stdout, train_tiny_model, voxreg};

fn demo(kind: &str, case: &str) -> PathBuf {
    repo_root()
        .join("demo/data/paired/test")
        .join(kind)
        .join(format!("{case}.nii.gz"))
}

fn register(model: &Path, args: &[&std::ffi::OsStr]) -> Output {
    voxreg()
        .arg("register")
        .arg("--model")
        .arg(model)
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("the voxreg binary runs")
}

/// `label 0 Dice  native a → b   training grid c → d`: `[a, b, c, d]`.
fn dice_line(text: &str, label: &str) -> [f64; 4] {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{label} Dice")))
        .unwrap_or_else(|| panic!("no `{label} Dice` line in {text}"));
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [.., a, b, c, d] = numbers[..] else {
        panic!("{line}")
    };
    [a, b, c, d]
}

fn os(path: &Path) -> &std::ffi::OsStr {
    path.as_os_str()
}

#[test]
fn a_trained_run_registers_a_pair_at_native_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    train_tiny_model(dir.path(), &logs, "tiny", "");
    let run = logs.join("tiny");
    let out = dir.path().join("out");
    let (moved, warp, moved_label) = (
        out.join("moved.nii.gz"),
        out.join("warp.nii.gz"),
        out.join("moved_label.nii.gz"),
    );
    let (moving, fixed) = (
        demo("moving_images", "case_014"),
        demo("fixed_images", "case_014"),
    );
    let (moving_label, fixed_label) = (
        demo("moving_labels", "case_014"),
        demo("fixed_labels", "case_014"),
    );
    let flag = |f: &'static str| std::ffi::OsStr::new(f);
    let args = [
        flag("--moving"),
        os(&moving),
        flag("--fixed"),
        os(&fixed),
        flag("--moving-label"),
        os(&moving_label),
        flag("--fixed-label"),
        os(&fixed_label),
        flag("--moved"),
        os(&moved),
        flag("--warp"),
        os(&warp),
        flag("--moved-label"),
        os(&moved_label),
    ];
    let output = register(&run, &args);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("network grid [16, 16, 16]"), "{text}");
    assert!(text.contains("native grid [32, 32, 32]"), "{text}");
    for label in ["label 0", "label 1"] {
        let dice = dice_line(&text, label);
        assert!(dice.iter().all(|d| (0.0..=1.0).contains(d)), "{text}");
    }

    // On the fixed image's native grid, in its space, in the moving image's intensities.
    let fixed_volume = read_nifti(&fixed).unwrap();
    let moving_volume = read_nifti(&moving).unwrap();
    let moved_volume = read_nifti(&moved).unwrap();
    assert_eq!(moved_volume.shape, fixed_volume.shape);
    assert_eq!(moved_volume.affine, fixed_volume.affine);
    let max = |v: &[f32]| v.iter().copied().fold(f32::MIN, f32::max);
    assert!(
        max(&moved_volume.data) > 0.5 * max(&moving_volume.data),
        "the moved image keeps the moving image's intensities"
    );
    let warp_volume = read_nifti(&warp).unwrap();
    assert_eq!(warp_volume.shape, [32, 32, 32, 3]);
    let label_volume = read_nifti(&moved_label).unwrap();
    assert_eq!(label_volume.shape, [32, 32, 32, 2]);
    let source = read_nifti(&moving_label).unwrap();
    let values: std::collections::HashSet<u32> = source.data.iter().map(|v| v.to_bits()).collect();
    assert!(
        label_volume
            .data
            .iter()
            .all(|v| *v == 0.0 || values.contains(&v.to_bits())),
        "labels are warped by nearest neighbour: only the moving label's values"
    );

    // The written warp reproduces the moved image through `voxreg warp`.
    let rewarped = dir.path().join("rewarped.nii.gz");
    let output = voxreg()
        .args(["warp", "-i"])
        .arg(&moving)
        .arg("-d")
        .arg(&warp)
        .arg("-o")
        .arg(&rewarped)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let rewarped = read_nifti(&rewarped).unwrap();
    let worst = rewarped
        .data
        .iter()
        .zip(&moved_volume.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 1e-3 * max(&moved_volume.data),
        "max difference {worst}"
    );

    // Nothing is overwritten: the same outputs again are refused before any work.
    let before = std::fs::read(&moved).unwrap();
    let output = register(&run, &args);
    assert_clean_failure(&output, &["exists", "nothing is overwritten"]);
    assert_eq!(std::fs::read(&moved).unwrap(), before);
}

#[test]
fn a_csv_of_pairs_and_npz_volumes_register_alike() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let checkpoint = train_tiny_model(dir.path(), &logs, "tiny", "");
    // The second pair as VoxelMorph's .npz volumes (`vol`), the same values.
    let npz = dir.path().join("npz");
    std::fs::create_dir_all(&npz).unwrap();
    for (kind, name) in [("moving_images", "moving"), ("fixed_images", "fixed")] {
        let volume = read_nifti(&demo(kind, "case_015")).unwrap();
        write_npz(&npz.join(format!("{name}.npz")), &[("vol", &volume)]).unwrap();
    }
    let m = |kind: &str, case: &str| demo(kind, case).display().to_string();
    let csv = dir.path().join("pairs.csv");
    std::fs::write(
        &csv,
        format!(
            "moving,fixed,moved,warp,moving_label,fixed_label\n{},{},out/a.nii.gz,out/a_warp.nii.gz,{},{}\nnpz/moving.npz,npz/fixed.npz,out/b.npz,out/b_warp.npz,,\n{},{},out/c.nii.gz,out/c_warp.nii.gz,,\n",
            m("moving_images", "case_014"),
            m("fixed_images", "case_014"),
            m("moving_labels", "case_014"),
            m("fixed_labels", "case_014"),
            m("moving_images", "case_015"),
            m("fixed_images", "case_015"),
        ),
    )
    .unwrap();
    let output = register(
        &checkpoint,
        &[std::ffi::OsStr::new("--pairs"), csv.as_os_str()],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("3 pairs, mean Dice over 2 labels"), "{text}");
    let out = dir.path().join("out");
    let from_npz = read_npz(&out.join("b.npz"), "vol").unwrap();
    let from_nifti = read_nifti(&out.join("c.nii.gz")).unwrap();
    assert_eq!(from_npz.shape, from_nifti.shape);
    assert_eq!(
        from_npz.data, from_nifti.data,
        "npz and NIfTI inputs register alike"
    );
    let warp = read_npz(&out.join("b_warp.npz"), "vol").unwrap();
    assert_eq!(warp.shape, [32, 32, 32, 3]);
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-run");
    let moving = demo("moving_images", "case_014");
    let fixed = demo("fixed_images", "case_014");
    let flag = std::ffi::OsStr::new;
    let output = register(
        &missing,
        &[
            flag("--moving"),
            os(&moving),
            flag("--fixed"),
            os(&fixed),
            flag("--moved"),
            flag("m.nii.gz"),
            flag("--warp"),
            flag("w.nii.gz"),
        ],
    );
    assert_clean_failure(&output, &["model", "no-run", "no such file"]);
    let output = register(
        &missing,
        &[flag("--moving"), os(&moving), flag("--fixed"), os(&fixed)],
    );
    assert_clean_failure(&output, &["--moved"]);
    let output = voxreg()
        .args(["register", "--moved", "m.nii.gz"])
        .arg("--moving")
        .arg(&moving)
        .arg("--fixed")
        .arg(&fixed)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "--moved needs --model");
}

#[test]
fn at_the_training_shape_native_dice_equals_the_training_grid_dice() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let checkpoint = train_tiny_model(
        dir.path(),
        &logs,
        "native",
        "dataset: {moving_image_shape: [32, 32, 32], fixed_image_shape: [32, 32, 32]}\n",
    );
    let flag = std::ffi::OsStr::new;
    let (moving, fixed) = (
        demo("moving_images", "case_015"),
        demo("fixed_images", "case_015"),
    );
    let (moving_label, fixed_label) = (
        demo("moving_labels", "case_015"),
        demo("fixed_labels", "case_015"),
    );
    let (moved, warp) = (dir.path().join("m.nii.gz"), dir.path().join("w.nii.gz"));
    let output = register(
        &checkpoint,
        &[
            flag("--moving"),
            os(&moving),
            flag("--fixed"),
            os(&fixed),
            flag("--moving-label"),
            os(&moving_label),
            flag("--fixed-label"),
            os(&fixed_label),
            flag("--moved"),
            os(&moved),
            flag("--warp"),
            os(&warp),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for label in ["label 0", "label 1"] {
        let [native_before, native_after, train_before, train_after] = dice_line(&text, label);
        assert_eq!(
            (native_before, native_after),
            (train_before, train_after),
            "{text}"
        );
    }
}
