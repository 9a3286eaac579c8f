//! A plugin crate outside the workspace: `voxreg plugins new` scaffolds it in a temporary
//! folder (its own crate, its own target folder), `voxreg plugins build` compiles it against
//! this binary's framework library, and the binary lists it and trains with its backbone.

use std::path::{Path, PathBuf};

use crate::util::{assert_clean_failure, repo_root, stderr, stdout, tiny_training_config, voxreg};

/// Scaffolds `name` under `dir` and builds it; returns the library path it printed.
fn new_and_build(dir: &Path, name: &str) -> PathBuf {
    let crate_dir = dir.join(name);
    let output = voxreg()
        .args(["plugins", "new"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "plugins new: {}", stderr(&output));
    let output = voxreg()
        .args(["plugins", "build"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "plugins build: {}",
        stderr(&output)
    );
    let library = PathBuf::from(stdout(&output).trim());
    assert!(
        library.starts_with(crate_dir.join("target")),
        "{}",
        library.display()
    );
    assert!(library.is_file(), "{}", library.display());
    assert!(
        stderr(&output).contains(&format!("backbone {name}_net")),
        "{}",
        stderr(&output)
    );
    library
}

#[test]
fn a_plugin_crate_outside_the_workspace_builds_loads_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!dir.path().starts_with(repo_root()));
    let library = new_and_build(dir.path(), "outside_plugin");

    let output = voxreg()
        .args(["plugins", "list", "--plugin"])
        .arg(&library)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for name in ["outside_plugin_net", "outside_plugin_charbonnier"] {
        let row = text
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} missing: {text}"));
        assert!(row.contains("outside_plugin (plugin "), "{row}");
    }

    // The generated overlay names the library and selects the plugin's backbone and loss.
    let logs = dir.path().join("logs");
    let output = voxreg()
        .args(["train", "-c"])
        .arg(repo_root().join("configs/quickstart.yaml"))
        .arg(tiny_training_config(dir.path()))
        .arg(dir.path().join("outside_plugin/plugin.yaml"))
        .args(["--exp-name", "outside", "--max-epochs", "1", "--log-dir"])
        .arg(&logs)
        .output()
        .unwrap();
    assert!(output.status.success(), "training: {}", stderr(&output));
    let resolved = std::fs::read_to_string(logs.join("outside/config.yaml")).unwrap();
    assert!(resolved.contains("name: outside_plugin_net"), "{resolved}");
    assert!(
        resolved.contains("name: outside_plugin_charbonnier"),
        "{resolved}"
    );
    assert!(logs.join("outside/save/ckpt-1").is_dir());
}

#[test]
fn plugins_build_refuses_another_compiler_before_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("p");
    assert!(voxreg()
        .args(["plugins", "new"])
        .arg(&crate_dir)
        .status()
        .unwrap()
        .success());
    let fake = dir.path().join("fake-rustc");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'rustc 1.0.0 (00000000 2015-05-15)'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = voxreg()
        .env("RUSTC", &fake)
        .args(["plugins", "build"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert_clean_failure(&output, &["rustc 1.0.0", "same compiler"]);
    assert!(!crate_dir.join("target/voxreg-plugin").exists());
}

#[test]
fn plugins_build_refuses_a_dependency_it_cannot_supply() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("p");
    assert!(voxreg()
        .args(["plugins", "new"])
        .arg(&crate_dir)
        .status()
        .unwrap()
        .success());
    let manifest = crate_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{text}serde = \"1\"\n")).unwrap();
    let output = voxreg()
        .args(["plugins", "build"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert_clean_failure(&output, &["depends on serde", "voxreg_framework::serde"]);
}

#[test]
fn plugins_new_keeps_a_folder_that_has_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.txt"), "keep").unwrap();
    let output = voxreg()
        .args(["plugins", "new", "--name", "p"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_clean_failure(&output, &["not empty"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mine.txt")).unwrap(),
        "keep"
    );
}
