//! Helpers: running the binary, finding the plugin libraries `cargo test` built.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The voxreg binary under test.
pub fn voxreg() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_voxreg"));
    command
        .env_remove("VOXREG_PLUGINS")
        .env("VOXREG_LOG", "warn");
    command
}

/// Runs the binary with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    voxreg()
        .args(args)
        .output()
        .expect("the voxreg binary runs")
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A dynamic library built from an example target (`cargo test` builds every example first):
/// `target/<profile>/examples/lib<name>.so`.
pub fn example_library(name: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_voxreg"));
    let examples = bin
        .parent()
        .expect("the binary has a folder")
        .join("examples");
    let path = examples.join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds the plugin examples",
        path.display()
    );
    path
}

/// The example plugin (`examples/custom_backbone`) as a dynamic library.
pub fn custom_backbone_plugin() -> PathBuf {
    example_library("custom_backbone_plugin")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Asserts the command failed cleanly: exit code 1, a message containing every `needle`,
/// and no panic or backtrace.
pub fn assert_clean_failure(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked at"), "panic report in: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "backtrace hint in: {err}");
    for needle in needles {
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
    }
}

/// Writes a small overlay on the quick start into `dir` and returns its path: 16³ images of
/// the bundled demo data, a tiny LocalNet, one epoch.
pub fn tiny_training_config(dir: &Path) -> PathBuf {
    let overlay = dir.join("tiny.yaml");
    let data = repo_root().join("demo/data/paired");
    let split = |name: &str| {
        format!(
            "  {name}:\n    dir: {}\n    format: nifti\n    labeled: true\n",
            data.join(name).display()
        )
    };
    std::fs::write(
        &overlay,
        format!(
            "dataset:\n{}{}{}  moving_image_shape: [16, 16, 16]\n  fixed_image_shape: [16, 16, 16]\ntrain:\n  backbone: {{name: local, num_channel_initial: 2, extract_levels: [0, 1, 2]}}\n  epochs: 1\n",
            split("train"),
            split("valid"),
            split("test")
        ),
    )
    .unwrap();
    overlay
}

/// Trains the quick start with [`tiny_training_config`] and then the YAML `extra` (if not
/// empty) for one epoch as run `name` under `logs`, and returns its last checkpoint folder.
pub fn train_tiny_model(dir: &Path, logs: &Path, name: &str, extra: &str) -> PathBuf {
    let base = repo_root().join("configs/quickstart.yaml");
    let mut files = vec![base, tiny_training_config(dir)];
    if !extra.is_empty() {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, extra).unwrap();
        files.push(path);
    }
    let output = voxreg()
        .args(["train", "-c"])
        .args(&files)
        .args(["--exp-name", name, "--log-dir"])
        .arg(logs)
        .args(["--max-epochs", "1"])
        .output()
        .expect("the voxreg binary runs");
    assert!(output.status.success(), "training: {}", stderr(&output));
    logs.join(name).join("save/ckpt-1")
}

/// Every file under `dir` (relative path → bytes) and every folder (→ no bytes), to check
/// that a failed command left earlier output byte-identical.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>,
    ) {
        for entry in std::fs::read_dir(dir).expect("the folder is readable") {
            let path = entry.expect("the entry is readable").path();
            let relative = path.strip_prefix(root).unwrap().to_owned();
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            if kind.is_dir() {
                out.insert(relative, None);
                walk(root, &path, out);
            } else if kind.is_file() {
                out.insert(relative, Some(std::fs::read(&path).unwrap()));
            } else {
                out.insert(relative, Some(b"(not a regular file)".to_vec()));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The binary, for commands that read HDF5 files written by this test process. HDF5 opens
/// files without close-on-exec, so a child that another test forks while this process has
/// such a file open inherits the descriptor and, with it, HDF5's exclusive file lock, for
/// as long as that child runs; HDF5's lock check would then refuse the file to our command
/// ("unable to lock file"). The command runs with HDF5's file locking off; the files are
/// complete (written under a temporary name, then renamed) before it starts.
pub fn voxreg_reading_test_h5() -> Command {
    let mut command = voxreg();
    command.env("HDF5_USE_FILE_LOCKING", "FALSE");
    command
}
