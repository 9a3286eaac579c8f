//! Setting up the host: the registry with every linked component and the plugins asked for.

use std::path::{Path, PathBuf};

use anyhow::Context;
use voxreg::framework::config::{Config, ConfigSources};
use voxreg::framework::registry::Registry;

/// The environment variable listing plugin libraries (`:`-separated).
pub const PLUGINS_ENV: &str = "VOXREG_PLUGINS";

/// Plugin paths from VOXREG_PLUGINS, then from `--plugin` flags.
pub fn plugin_paths(flags: &[PathBuf]) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::env::var_os(PLUGINS_ENV)
        .map(|list| {
            std::env::split_paths(&list)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    paths.extend(flags.iter().cloned());
    without_repeats(&paths)
}

/// `paths` with each library kept once (the first time it appears), comparing canonical
/// paths: a plugin named by the flag, the environment and a config file loads once.
pub fn without_repeats(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    paths
        .iter()
        .filter(|path| seen.insert(path.canonicalize().unwrap_or_else(|_| (*path).clone())))
        .cloned()
        .collect()
}

/// The registry of linked components plus the given plugins.
pub fn registry(plugins: &[PathBuf]) -> anyhow::Result<Registry> {
    let mut registry = Registry::linked().context("the built-in components clash")?;
    load_plugins(&mut registry, plugins)?;
    Ok(registry)
}

/// Loads each plugin library into `registry`.
pub fn load_plugins(registry: &mut Registry, plugins: &[PathBuf]) -> anyhow::Result<()> {
    for path in plugins {
        let info = registry.load_plugin(path)?;
        tracing::debug!(
            "loaded plugin {} {} from {} ({} components)",
            info.name,
            info.version,
            path.display(),
            info.components.len()
        );
    }
    Ok(())
}

/// Reads config files, loads the plugins they list (after the command-line ones), and
/// resolves the configuration.
pub fn load_config(plugins: &[PathBuf], files: &[PathBuf]) -> anyhow::Result<(Registry, Config)> {
    let sources = ConfigSources::read(files)?;
    let all: Vec<PathBuf> = plugins.iter().chain(sources.plugins()).cloned().collect();
    let registry = registry(&without_repeats(&all))?;
    let config = sources.resolve(&registry)?;
    voxreg::engine::check(&config).map_err(|problems| sources.locate(problems))?;
    Ok((registry, config))
}

/// Fails with a clear message if `path` is not a regular file (missing, a folder, a FIFO, a
/// device), before anything opens it.
pub fn require_regular_file(path: &Path, what: &str) -> anyhow::Result<()> {
    if let Some(problem) = voxreg::files::regular_file_problem(path) {
        anyhow::bail!("{what} {}: {problem}", path.display());
    }
    Ok(())
}
