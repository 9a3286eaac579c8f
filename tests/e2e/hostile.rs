//! A hostile-input corpus generated here (nothing checked in): each case runs the binary on
//! a bad file or flag in a fresh temporary folder and asserts a clean failure (exit 1, no
//! panic text) with a message naming the file or flag, and that nothing beside the inputs
//! was written.

use std::path::Path;

use crate::hostile_files::nifti;
use crate::util::{assert_clean_failure, run, snapshot};

/// Runs `args` (with `{dir}` replaced by the temporary folder) and checks a clean failure
/// mentioning every needle, with the folder unchanged.
fn refused(dir: &Path, args: &[&str], needles: &[&str]) {
    let before = snapshot(dir);
    let dir_text = dir.to_str().unwrap();
    let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", dir_text)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(&args);
    assert_clean_failure(&output, needles);
    assert_eq!(snapshot(dir), before, "{args:?} changed the folder");
}

#[test]
fn hostile_flags_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("good.nii"), nifti(&[4, 4, 4], 16, 32, 352.0, 256)).unwrap();
    refused(
        d,
        &[
            "vis",
            "-m",
            "2",
            "-i",
            "{dir}/good.nii",
            "-s",
            "{dir}/vis",
            "--scale",
            "100000",
        ],
        &["--scale 100000"],
    );
    refused(
        d,
        &[
            "vis",
            "-m",
            "0",
            "-i",
            "{dir}/good.nii",
            "-s",
            "{dir}/vis",
            "--scale",
            "4294967296",
        ],
        &["--scale 4294967296"],
    );
    refused(
        d,
        &[
            "vis",
            "-m",
            "1",
            "-i",
            "{dir}/good.nii",
            "--ddf-path",
            "{dir}/good.nii",
            "-s",
            "{dir}/vis",
            "--num-interval",
            "1000000000",
        ],
        &["--num-interval 1000000000"],
    );
    refused(
        d,
        &[
            "dataset",
            "from-template",
            "--template",
            "{dir}/good.nii",
            "-o",
            "{dir}/ds",
            "--shape",
            "100000,100000,100000",
        ],
        &["--shape"],
    );
    let config = crate::util::repo_root().join("configs/quickstart.yaml");
    refused(
        d,
        &[
            "train",
            "-c",
            config.to_str().unwrap(),
            "--exp-name",
            "",
            "--log-dir",
            "{dir}/logs",
        ],
        &["--exp-name is empty"],
    );
}
