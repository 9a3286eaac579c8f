//! Files of a run folder, each written through a temporary file renamed into place so a failed
//! or interrupted write never leaves a partial file.

use std::path::Path;

use super::{tensor_error, EngineError, Model};
use crate::config::Config;

/// Wraps an I/O error with the path it concerns.
pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Writes `<dir>/<name>` through `<dir>/.<name>.partial`.
pub(super) fn replace_file(dir: &Path, name: &str, contents: &str) -> Result<(), EngineError> {
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.partial"));
    std::fs::write(&temporary, contents).map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io_error(&path))
}

/// The resolved configuration as YAML.
pub(super) fn config_yaml(config: &Config) -> Result<String, EngineError> {
    config
        .to_yaml()
        .map_err(|e| EngineError::Config(e.to_string()))
}

/// Creates the run folder and writes the resolved configuration to `<dir>/config.yaml`.
fn write_config(dir: &Path, yaml: &str) -> Result<(), EngineError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    replace_file(dir, "config.yaml", yaml)
}

/// Writes the final weights to `<dir>/save/weights.safetensors`.
pub(super) fn save_weights(dir: &Path, model: &Model) -> Result<(), EngineError> {
    let save = dir.join("save");
    std::fs::create_dir_all(&save).map_err(io_error(&save))?;
    let weights = save.join("weights.safetensors");
    let temporary = save.join(".weights.partial.safetensors");
    model
        .save_weights(&temporary)
        .map_err(tensor_error(format!("saving {}", weights.display())))?;
    std::fs::rename(&temporary, &weights).map_err(io_error(&weights))
}

/// Removes the run folder a failed run created, when the run wrote nothing but its
/// `config.yaml`, so the same run name can be used again; it is dropped at the end of
/// training. A folder that existed before, or that holds results (metrics, checkpoints,
/// weights) or anything else, is left as it is.
pub(super) struct NewRunDir {
    dir: Option<std::path::PathBuf>,
}

impl NewRunDir {
    /// Creates the run folder `dir` (if it is new) and writes `config.yaml` into it.
    pub fn create(dir: &Path, yaml: &str) -> Result<Self, EngineError> {
        let existed = dir.exists();
        write_config(dir, yaml)?;
        Ok(Self {
            dir: (!existed).then(|| dir.to_owned()),
        })
    }

    /// The run has written results: keep the folder whatever happens next.
    pub fn keep(&mut self) {
        self.dir = None;
    }
}

impl Drop for NewRunDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            // Best effort: a folder that cannot be cleaned up stays as it is.
            let _ = std::fs::remove_file(dir.join("config.yaml"));
            let _ = std::fs::remove_dir(dir);
        }
    }
}
