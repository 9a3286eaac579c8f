//! The repository stands alone: no source, test, benchmark, example, config, script or doc
//! file reads or names a path outside it (a user's clone has nothing beside it).
//!
//! The test walks the repository's own folders (no git needed, so it holds for a source
//! tarball too) and looks in every text file for the ways such a path has been spelled:
//! the parent folder's `shared/` tree, a peer virtualenv or data folder of the machine a
//! figure was measured on, and design notes kept outside the repository.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::repo_root;

/// Folders that belong to the repository's content. Build outputs, virtualenvs and VCS data
/// are skipped wherever they appear.
const ROOTS: &[&str] = &[
    "framework",
    "plugins",
    "src",
    "tests",
    "benches",
    "examples",
    "docs",
    "configs",
    "scripts",
    "demo",
    "assets",
    ".ci",
    ".cargo",
];

/// Top-level files checked besides the folders.
const FILES: &[&str] = &["README.md", "Cargo.toml", "tasks.sh"];

const SKIPPED_DIRS: &[&str] = &[
    "target",
    ".git",
    ".venv-peer",
    "__pycache__",
    "node_modules",
];

const TEXT_EXTENSIONS: &[&str] = &[
    "rs", "md", "toml", "sh", "py", "yaml", "yml", "txt", "json", "cfg",
];

/// The spellings of outside paths. Each is split so this file does not match itself.
fn forbidden() -> Vec<String> {
    [
        ("../", "shared"),
        ("shared/", "bench"),
        ("shared/", "data"),
        ("shared/", "reference"),
        ("/work", "/"),
        ("/home", "/"),
        ("/root", "/"),
        ("DESIGN", ".md"),
        ("STYLE", ".md"),
    ]
    .iter()
    .map(|(a, b)| format!("{a}{b}"))
    .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_ref()) {
                collect(&path, files);
            }
        } else if kind.is_file()
            && path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| TEXT_EXTENSIONS.contains(&e))
        {
            files.push(path);
        }
    }
}

/// Every line of the repository's text files that names a path outside it, as
/// `file:line: text`.
fn outside_references(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for dir in ROOTS {
        collect(&root.join(dir), &mut files);
    }
    files.extend(FILES.iter().map(|f| root.join(f)));
    // `.ci/run` has no extension.
    files.push(root.join(".ci/run"));
    let patterns = forbidden();
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            if patterns.iter().any(|p| line.contains(p.as_str())) {
                let shown = file.strip_prefix(root).unwrap_or(&file).display();
                found.push(format!("{shown}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn no_file_names_a_path_outside_the_repository() {
    let found = outside_references(&repo_root());
    assert!(
        found.is_empty(),
        "these lines name paths outside the repository (a fresh clone has nothing beside \
         it; bundle the data under assets/, the peer scripts under benches/peer/):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_guard_finds_an_outside_path() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("plugins/x/src")).unwrap();
    fs::create_dir_all(dir.path().join("docs/src")).unwrap();
    fs::write(dir.path().join("plugins/x/src/lib.rs"), "//! clean\n").unwrap();
    let outside = format!("see {}{}/data/t1.nii.gz\n", "../", "shared");
    fs::write(
        dir.path().join("docs/src/data.md"),
        format!("# Data\n{outside}"),
    )
    .unwrap();
    fs::create_dir_all(dir.path().join("plugins/x/target")).unwrap();
    fs::write(dir.path().join("plugins/x/target/build.rs"), &outside).unwrap();
    let found = outside_references(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("docs/src/data.md:2:"), "{found:?}");
}

#[test]
fn the_bundled_data_carries_its_licence() {
    let readme = fs::read_to_string(repo_root().join("assets/mni152/README.md")).unwrap();
    let words = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("Permission to use, copy, modify, and distribute"));
    assert!(words.contains("the above copyright notice appear in all copies"));
    for name in ["t1", "gm", "wm"] {
        assert!(repo_root()
            .join(format!("assets/mni152/{name}.nii.gz"))
            .is_file());
    }
}
