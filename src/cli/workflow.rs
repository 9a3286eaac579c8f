//! register. It checks its inputs (config, files) as far as this version can, then
//! reports that the engine behind it is not built yet.

use std::path::PathBuf;

use anyhow::bail;

use super::{host, RegisterArgs};

fn not_built(command: &str) -> anyhow::Result<()> {
    bail!("`voxreg {command}`: the engine behind this command is not built in this version of voxreg (inputs were checked and are valid)")
}

/// `voxreg register`: checks the images (and config, if given) exist.
pub fn register(plugins: &[PathBuf], args: &RegisterArgs) -> anyhow::Result<()> {
    host::require_file(&args.moving, "moving image")?;
    host::require_file(&args.fixed, "fixed image")?;
    if !args.config_path.is_empty() {
        host::load_config(plugins, &args.config_path)?;
    }
    not_built("register")
}
