//! `voxreg plugins build`: compiles a plugin crate against the very framework library this
//! binary runs on, so the plugin links the same `libvoxreg_framework` (and candle inside it)
//! that the binary loads, wherever the crate lives.
//!
//! Cargo names every Rust symbol with a hash of how it built that crate (`-C metadata`: the
//! package and its source path relative to the workspace root, the unified features, the
//! profile, the compiler, every dependency's hash). A plugin crate built by cargo in its own
//! workspace builds a framework with other hashes, whose symbols this binary's framework
//! does not have. So this command does not let cargo build the framework: it reads the
//! plugin's manifest (`cargo metadata`) and runs `rustc` on the plugin's library alone, with
//! `--extern voxreg_framework=<the loaded library>` and the framework's dependencies from
//! the folder beside it.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde::Deserialize;
use voxreg::framework::plugin::{abi, framework_library};
use voxreg::framework::registry::Registry;

/// The dependency every plugin has, and the only one `plugins build` can supply.
const FRAMEWORK_PACKAGE: &str = "voxreg-framework";

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Optimise (`-C opt-level=3`) instead of a quick debug build.
    pub release: bool,
    /// Where to write the library; by default `<target dir>/voxreg-plugin/<debug|release>`.
    pub out_dir: Option<PathBuf>,
}

/// Builds the plugin crate in `crate_dir`, loads the result once to check it, prints the
/// library's path on stdout and a summary on stderr, and returns the path.
pub fn build(crate_dir: &Path, options: &BuildOptions) -> anyhow::Result<PathBuf> {
    let host = HostFramework::locate()?;
    let package = Package::read(crate_dir)?;
    let plan = package.plan()?;
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    check_compiler(&rustc, crate_dir)?;
    let profile = if options.release { "release" } else { "debug" };
    let out_dir = match &options.out_dir {
        Some(dir) => dir.clone(),
        None => package.target_directory.join("voxreg-plugin").join(profile),
    };
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("creating the output folder {}", out_dir.display()))?;
    let mut command = Command::new(&rustc);
    command
        .current_dir(crate_dir)
        .arg("--crate-name")
        .arg(&plan.crate_name)
        .arg(format!("--edition={}", plan.edition))
        .arg("--crate-type=dylib")
        .arg(&plan.source)
        .arg("--out-dir")
        .arg(&out_dir)
        .args(["-C", "prefer-dynamic"])
        .arg("-C")
        .arg(format!(
            "incremental={}",
            out_dir.join("incremental").display()
        ))
        .arg("-L")
        .arg(format!("dependency={}", host.dependencies.display()))
        .arg("--extern")
        .arg(format!(
            "{}={}",
            plan.framework_extern,
            host.library.display()
        ));
    if options.release {
        command.args(["-C", "opt-level=3"]);
    } else {
        command.args(["-C", "opt-level=0", "-C", "debuginfo=line-tables-only"]);
    }
    for feature in &plan.features {
        command.arg("--cfg").arg(format!("feature=\"{feature}\""));
    }
    for (key, value) in package.cargo_env() {
        command.env(key, value);
    }
    let status = command
        .status()
        .with_context(|| format!("running {}", Path::new(&rustc).display()))?;
    if !status.success() {
        bail!(
            "plugin crate {}: rustc failed ({status}); its messages are above",
            crate_dir.display()
        );
    }
    let library = out_dir.join(format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        plan.crate_name,
        std::env::consts::DLL_SUFFIX
    ));
    let mut registry = Registry::linked().context("the built-in components clash")?;
    let info = registry
        .load_plugin(&library)
        .context("the freshly built plugin does not load")?;
    let components: Vec<String> = info
        .components
        .iter()
        .map(|(category, name)| format!("{category} {name}"))
        .collect();
    // A summary for people; stdout carries only the path, for scripts.
    let _ = writeln!(
        std::io::stderr(),
        "built {} {} against {}: {}",
        info.name,
        info.version,
        host.library.display(),
        if components.is_empty() {
            "no components".to_owned()
        } else {
            components.join(", ")
        }
    );
    super::stdout::say!("{}", library.display())?;
    Ok(library)
}

/// The framework library this process runs on and the folder of the crates it was built
/// from.
struct HostFramework {
    library: PathBuf,
    dependencies: PathBuf,
}

impl HostFramework {
    fn locate() -> anyhow::Result<Self> {
        let library = framework_library().context(
            "cannot tell which voxreg-framework library this voxreg runs on (plugins are built on Unix, against a voxreg built with cargo)",
        )?;
        let folder = library
            .parent()
            .context("the framework library has no folder")?;
        // Cargo puts the binary's copy beside it and every crate it compiled in `deps/`.
        let deps = folder.join("deps");
        let dependencies = if deps.is_dir() {
            deps
        } else {
            folder.to_owned()
        };
        if !holds_rlib(&dependencies, "candle_core") {
            bail!(
                "the crates this voxreg's framework was compiled from are gone from {} (a plugin is compiled against them): rebuild voxreg with cargo and keep its target folder",
                dependencies.display()
            );
        }
        Ok(HostFramework {
            library,
            dependencies,
        })
    }
}

/// Whether `dir` holds a compiled `lib<name>-<hash>.rlib`.
fn holds_rlib(dir: &Path, name: &str) -> bool {
    let prefix = format!("lib{name}-");
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|file| file.starts_with(&prefix) && file.ends_with(".rlib"))
        })
    })
}

/// The compiler must be the one that built this voxreg: rustc refuses crates of another
/// compiler, and the plugin ABI check compares it too. Checked first, for a clear message.
fn check_compiler(rustc: &std::ffi::OsStr, crate_dir: &Path) -> anyhow::Result<()> {
    let output = Command::new(rustc)
        .arg("--version")
        .current_dir(crate_dir)
        .output()
        .with_context(|| {
            format!(
                "running `{} --version` (a Rust compiler is needed to build plugins; RUSTC names one)",
                Path::new(rustc).display()
            )
        })?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || version != abi::RUSTC_VERSION {
        bail!(
            "plugin crate {}: this voxreg was compiled by `{}`, but `{}` is `{}`; a plugin must be compiled by the same compiler (point RUSTC at it, or select that toolchain with rustup)",
            crate_dir.display(),
            abi::RUSTC_VERSION,
            Path::new(rustc).display(),
            if version.is_empty() { "not runnable" } else { &version }
        );
    }
    Ok(())
}

/// `cargo metadata --no-deps` output: the parts a plugin build needs.
#[derive(Debug, Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    target_directory: PathBuf,
}

/// One package of the plugin's workspace.
#[derive(Debug, Deserialize)]
struct Package {
    name: String,
    version: String,
    manifest_path: PathBuf,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
    dependencies: Vec<Dependency>,
    targets: Vec<Target>,
    #[serde(default)]
    features: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(skip)]
    target_directory: PathBuf,
}

#[derive(Debug, Deserialize)]
struct Dependency {
    name: String,
    kind: Option<String>,
    rename: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
    src_path: PathBuf,
    edition: String,
}

/// What rustc is told.
#[derive(Debug, PartialEq)]
struct Plan {
    crate_name: String,
    edition: String,
    source: PathBuf,
    framework_extern: String,
    features: BTreeSet<String>,
}

impl Package {
    /// Reads `crate_dir/Cargo.toml` through `cargo metadata` (which resolves workspace
    /// inheritance exactly as cargo does).
    fn read(crate_dir: &Path) -> anyhow::Result<Self> {
        let manifest = crate_dir.join("Cargo.toml");
        if !manifest.is_file() {
            bail!(
                "plugin crate {}: no Cargo.toml (create one with `voxreg plugins new <folder>`)",
                crate_dir.display()
            );
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(&cargo)
            .current_dir(crate_dir)
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--manifest-path",
            ])
            .arg(&manifest)
            .output()
            .with_context(|| format!("running `{} metadata`", Path::new(&cargo).display()))?;
        if !output.status.success() {
            bail!(
                "{}: cargo cannot read it: {}",
                manifest.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let metadata: Metadata = serde_json::from_slice(&output.stdout).with_context(|| {
            format!("{}: unexpected `cargo metadata` output", manifest.display())
        })?;
        let manifest = manifest.canonicalize().unwrap_or(manifest);
        let mut package = metadata
            .packages
            .into_iter()
            .find(|p| p.manifest_path == manifest)
            .with_context(|| {
                format!(
                    "{}: a workspace manifest; name the plugin crate's own folder",
                    manifest.display()
                )
            })?;
        package.target_directory = metadata.target_directory;
        Ok(package)
    }

    /// Checks that `plugins build` can build this crate and says how.
    fn plan(&self) -> anyhow::Result<Plan> {
        let manifest = self.manifest_path.display();
        if self
            .targets
            .iter()
            .any(|t| t.kind.iter().any(|k| k == "custom-build"))
        {
            bail!("{manifest}: has a build script, which `voxreg plugins build` does not run; move its work into the crate");
        }
        let library = self
            .targets
            .iter()
            .find(|t| {
                t.kind
                    .iter()
                    .any(|k| matches!(k.as_str(), "lib" | "rlib" | "dylib" | "cdylib"))
            })
            .with_context(|| format!("{manifest}: no library target (src/lib.rs)"))?;
        let mut framework_extern = None;
        let mut others = Vec::new();
        for dependency in &self.dependencies {
            match dependency.kind.as_deref() {
                Some("dev") => {}
                _ if dependency.name == FRAMEWORK_PACKAGE => {
                    let name = dependency.rename.as_deref().unwrap_or(&dependency.name);
                    framework_extern = Some(name.replace('-', "_"));
                }
                _ => others.push(dependency.name.clone()),
            }
        }
        if !others.is_empty() {
            bail!(
                "{manifest}: depends on {}; a dynamic plugin may depend only on {FRAMEWORK_PACKAGE}, and use serde, typetag, inventory and candle through its re-exports (`voxreg_framework::serde`, …), because every crate it shares with voxreg must be voxreg's own build. (A crate with other dependencies can be linked into a voxreg binary statically.)",
                others.join(", ")
            );
        }
        let framework_extern = framework_extern.with_context(|| {
            format!("{manifest}: does not depend on {FRAMEWORK_PACKAGE}, so it cannot be a voxreg plugin")
        })?;
        Ok(Plan {
            crate_name: library.name.replace('-', "_"),
            edition: library.edition.clone(),
            source: library.src_path.clone(),
            framework_extern,
            features: self.default_features()?,
        })
    }

    /// The crate's own features that `default` turns on, transitively.
    fn default_features(&self) -> anyhow::Result<BTreeSet<String>> {
        let mut enabled = BTreeSet::new();
        let mut pending: Vec<String> = self.features.get("default").cloned().unwrap_or_default();
        while let Some(feature) = pending.pop() {
            if feature.contains(':') || feature.contains('/') {
                bail!(
                    "{}: feature entry `{feature}` names a dependency; a plugin's features may only turn on its own features",
                    self.manifest_path.display()
                );
            }
            if enabled.insert(feature.clone()) {
                let implied = self.features.get(&feature).with_context(|| {
                    format!(
                        "{}: unknown feature `{feature}`",
                        self.manifest_path.display()
                    )
                })?;
                pending.extend(implied.iter().cloned());
            }
        }
        Ok(enabled)
    }

    /// The `CARGO_*` variables cargo gives a compilation (`env!("CARGO_PKG_NAME")` and
    /// friends, which `declare_plugin!` uses).
    fn cargo_env(&self) -> Vec<(&'static str, String)> {
        let core = self.version.split(['-', '+']).next().unwrap_or_default();
        let mut parts = core.split('.');
        let mut part = || parts.next().unwrap_or("0").to_owned();
        let (major, minor, patch) = (part(), part(), part());
        let pre = self
            .version
            .split_once('-')
            .map(|(_, rest)| rest.split('+').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let manifest_dir = self
            .manifest_path
            .parent()
            .map(|dir| dir.display().to_string())
            .unwrap_or_default();
        vec![
            ("CARGO_PKG_NAME", self.name.clone()),
            ("CARGO_PKG_VERSION", self.version.clone()),
            ("CARGO_PKG_VERSION_MAJOR", major),
            ("CARGO_PKG_VERSION_MINOR", minor),
            ("CARGO_PKG_VERSION_PATCH", patch),
            ("CARGO_PKG_VERSION_PRE", pre),
            (
                "CARGO_PKG_DESCRIPTION",
                self.description.clone().unwrap_or_default(),
            ),
            ("CARGO_PKG_AUTHORS", self.authors.join(":")),
            ("CARGO_CRATE_NAME", self.name.replace('-', "_")),
            ("CARGO_MANIFEST_DIR", manifest_dir),
            (
                "CARGO_MANIFEST_PATH",
                self.manifest_path.display().to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(dependencies: &[(&str, Option<&str>)], features: &[(&str, &[&str])]) -> Package {
        Package {
            name: "my-plugin".into(),
            version: "1.2.3-beta.1".into(),
            manifest_path: PathBuf::from("/p/Cargo.toml"),
            description: None,
            authors: vec![],
            dependencies: dependencies
                .iter()
                .map(|(name, kind)| Dependency {
                    name: (*name).into(),
                    kind: kind.map(str::to_owned),
                    rename: None,
                })
                .collect(),
            targets: vec![Target {
                name: "my-plugin".into(),
                kind: vec!["dylib".into()],
                src_path: PathBuf::from("/p/src/lib.rs"),
                edition: "2021".into(),
            }],
            features: features
                .iter()
                .map(|(k, v)| ((*k).into(), v.iter().map(|s| (*s).into()).collect()))
                .collect(),
            target_directory: PathBuf::from("/p/target"),
        }
    }

    #[test]
    fn a_crate_depending_on_the_framework_alone_is_planned() {
        let plan = package(&[(FRAMEWORK_PACKAGE, None), ("tempfile", Some("dev"))], &[])
            .plan()
            .unwrap();
        assert_eq!(
            plan,
            Plan {
                crate_name: "my_plugin".into(),
                edition: "2021".into(),
                source: PathBuf::from("/p/src/lib.rs"),
                framework_extern: "voxreg_framework".into(),
                features: BTreeSet::new(),
            }
        );
    }

    #[test]
    fn other_dependencies_are_refused_by_name() {
        let error = package(
            &[
                (FRAMEWORK_PACKAGE, None),
                ("serde", None),
                ("cc", Some("build")),
            ],
            &[],
        )
        .plan()
        .unwrap_err()
        .to_string();
        assert!(error.contains("depends on serde, cc"), "{error}");
        assert!(error.contains("voxreg_framework::serde"), "{error}");
        let error = package(&[], &[]).plan().unwrap_err().to_string();
        assert!(
            error.contains("does not depend on voxreg-framework"),
            "{error}"
        );
    }

    #[test]
    fn default_features_are_followed_and_dependency_features_refused() {
        let p = package(
            &[(FRAMEWORK_PACKAGE, None)],
            &[
                ("default", &["fast"]),
                ("fast", &["simd"]),
                ("simd", &[]),
                ("extra", &[]),
            ],
        );
        let features: Vec<String> = p.plan().unwrap().features.into_iter().collect();
        assert_eq!(features, ["fast", "simd"]);
        let p = package(&[(FRAMEWORK_PACKAGE, None)], &[("default", &["dep:x"])]);
        assert!(p.plan().unwrap_err().to_string().contains("`dep:x`"));
    }

    #[test]
    fn cargo_variables_split_the_version() {
        let env: std::collections::HashMap<_, _> =
            package(&[], &[]).cargo_env().into_iter().collect();
        assert_eq!(env["CARGO_PKG_VERSION_MAJOR"], "1");
        assert_eq!(env["CARGO_PKG_VERSION_PATCH"], "3");
        assert_eq!(env["CARGO_PKG_VERSION_PRE"], "beta.1");
        assert_eq!(env["CARGO_CRATE_NAME"], "my_plugin");
        assert_eq!(env["CARGO_MANIFEST_DIR"], "/p");
    }
}
