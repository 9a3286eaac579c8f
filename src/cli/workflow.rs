//! register / vis. Each checks its inputs (config, files) as far as
//! this version can, then reports that the engine behind it is not built yet.

use std::path::PathBuf;

use anyhow::bail;

use super::{host, RegisterArgs, VisArgs};

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

/// `voxreg vis`: checks the images (and DDF for mode 1) exist.
pub fn vis(args: &VisArgs) -> anyhow::Result<()> {
    for path in args
        .image_paths
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        host::require_file(std::path::Path::new(path), "image")?;
    }
    match (&args.ddf_path, args.mode) {
        (None, 1) => bail!("--mode 1 animates a DDF: give --ddf-path"),
        (Some(ddf), _) => host::require_file(ddf, "DDF")?,
        _ => {}
    }
    not_built("vis")
}
