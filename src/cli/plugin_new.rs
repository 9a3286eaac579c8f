//! `voxreg plugins new`: scaffolds a dynamic plugin crate (a backbone and an image loss)
//! that `voxreg plugins build` compiles and voxreg loads.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The framework's source folder in the checkout this binary was built from: the
/// dependency the generated manifest names for editors and `cargo check`.
const FRAMEWORK_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/framework");

/// The generated files: path inside the crate, template text.
const FILES: [(&str, &str); 5] = [
    ("Cargo.toml", include_str!("plugin_template/Cargo.toml.in")),
    ("src/lib.rs", include_str!("plugin_template/lib.rs.in")),
    (
        "plugin.yaml",
        include_str!("plugin_template/plugin.yaml.in"),
    ),
    (
        ".cargo/config.toml",
        include_str!("plugin_template/cargo-config.toml.in"),
    ),
    (".gitignore", include_str!("plugin_template/gitignore.in")),
];

/// Writes a new plugin crate into `dir` (created; it must not exist or be empty), named
/// `name` or else after the folder. Returns the files written.
pub fn new(dir: &Path, name: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    let name = match name {
        Some(name) => name.to_owned(),
        None => dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .with_context(|| {
                format!(
                    "plugin folder {}: no folder name to name the crate after; pass --name",
                    dir.display()
                )
            })?,
    };
    check_crate_name(&name)?;
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("plugin folder {}: cannot be read", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "plugin folder {}: exists and is not empty; nothing was written",
                dir.display()
            );
        }
    }
    let crate_name = name.replace('-', "_");
    let mut written = Vec::with_capacity(FILES.len());
    for (relative, template) in FILES {
        let path = dir.join(relative);
        let text = template
            .replace("@NAME@", &crate_name)
            .replace("@FRAMEWORK@", FRAMEWORK_SOURCE);
        let text = if relative == "Cargo.toml" {
            // The package name as given (a dash is allowed there, not in Rust paths).
            text.replacen(
                &format!("name = \"{crate_name}\""),
                &format!("name = \"{name}\""),
                1,
            )
        } else {
            text
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A crate name cargo accepts and that makes valid component names: an ASCII letter, then
/// letters, digits, `_` or `-`.
fn check_crate_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        bail!("plugin name `{name}`: use an ASCII letter followed by letters, digits, `_` or `-`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_crate_names() {
        for good in ["my_plugin", "MyNet2", "a-b"] {
            assert!(check_crate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "2net", "_x", "my plugin", "né", "a.b"] {
            assert!(check_crate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_new_crate_names_its_components_after_itself() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("my-net");
        let files = new(&root, None).unwrap();
        assert_eq!(files.len(), FILES.len());
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-net\""), "{manifest}");
        assert!(manifest.contains(FRAMEWORK_SOURCE), "{manifest}");
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("\"my_net_net\"") && lib.contains("\"my_net_charbonnier\""));
        assert!(!lib.contains('@'), "a placeholder is left: {lib}");
        let overlay = std::fs::read_to_string(root.join("plugin.yaml")).unwrap();
        assert!(overlay.contains("libmy_net.so"), "{overlay}");
    }

    #[test]
    fn a_folder_with_files_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let error = new(dir.path(), Some("p")).unwrap_err().to_string();
        assert!(error.contains("not empty"), "{error}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
