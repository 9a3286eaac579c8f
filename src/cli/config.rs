//! `voxreg config check`.

use std::path::PathBuf;

use anyhow::Context;

use super::host;
use super::stdout::say_raw;

/// Resolves the files and prints the resolved YAML (every default written out).
pub fn check(plugins: &[PathBuf], files: &[PathBuf]) -> anyhow::Result<()> {
    let (_, config) = host::load_config(plugins, files)?;
    let yaml = config
        .to_yaml()
        .context("writing the resolved configuration")?;
    say_raw!("{yaml}")?;
    Ok(())
}
