//! The run folder: claimed exclusively before anything is written into it, and its files,
//! each written through a temporary file of this process renamed into place so a failed or
//! interrupted write never leaves a partial file.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::{EngineError, Model};
use crate::config::Config;
use crate::files::temporary_sibling;

/// The file that marks a run folder as claimed by a running process; removed when the run
/// ends, so one left behind tells of a run that was killed.
pub const LOCK_FILE: &str = ".voxreg-run.lock";

/// Wraps an I/O error with the path it concerns.
pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Writes `<dir>/<name>` through a temporary file of this process beside it.
pub(super) fn replace_file(dir: &Path, name: &str, contents: &[u8]) -> Result<(), EngineError> {
    write_replacing(&dir.join(name), contents)
}

/// Writes `path` through a temporary file of this process beside it, renamed into place;
/// the file is created with the process's umask like every other output.
pub(crate) fn write_replacing(path: &Path, contents: &[u8]) -> Result<(), EngineError> {
    let temporary = temporary_sibling(path);
    let written = std::fs::write(&temporary, contents)
        .map_err(io_error(&temporary))
        .and_then(|()| std::fs::rename(&temporary, path).map_err(io_error(path)));
    if written.is_err() {
        // The partial file is useless; failing to remove it changes nothing for the caller.
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Saves named tensors as a safetensors file at `path` (through a temporary file, with the
/// umask's permissions: the safetensors crate's own writer makes its files private).
pub(crate) fn save_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), EngineError> {
    let bytes = safetensors::serialize(tensors, None).map_err(|e| EngineError::Io {
        path: path.to_owned(),
        message: format!("cannot serialise the tensors: {e}"),
    })?;
    write_replacing(path, &bytes)
}

/// The resolved configuration as YAML.
pub(super) fn config_yaml(config: &Config) -> Result<String, EngineError> {
    config
        .to_yaml()
        .map_err(|e| EngineError::Config(e.to_string()))
}

/// Writes the final weights to `<dir>/save/weights.safetensors`.
pub(super) fn save_weights(dir: &Path, model: &Model) -> Result<(), EngineError> {
    let save = dir.join("save");
    std::fs::create_dir_all(&save).map_err(io_error(&save))?;
    save_tensors(&save.join("weights.safetensors"), &model.weight_tensors())
}

/// Claims the run folder `dir` for this process: creates it (its parents too) or takes an
/// existing empty one, by creating [`LOCK_FILE`] in it exclusively, so of two processes given
/// the same folder exactly one trains into it. A folder that holds anything (an earlier run,
/// results without a `config.yaml`, …) or that another process has claimed is refused and
/// left as it is.
fn claim(dir: &Path) -> Result<bool, EngineError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| EngineError::Io {
            path: dir.to_owned(),
            message: format!("cannot create {}: {e}", parent.display()),
        })?;
    }
    let created = match std::fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => false,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(EngineError::Io {
                path: dir.to_owned(),
                message: "exists and is not a folder; choose another --exp-name".to_owned(),
            })
        }
        Err(e) => return Err(io_error(dir)(e)),
    };
    let lock = dir.join(LOCK_FILE);
    let taken = || {
        EngineError::Io {
        path: dir.to_owned(),
        message: format!(
            "already holds a run; choose another --exp-name so it is not overwritten (another voxreg process is using it, or one was killed there: {LOCK_FILE} is present)"
        ),
    }
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(taken()),
        Err(e) => return Err(io_error(&lock)(e)),
    }
    let mut others: Vec<String> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name != LOCK_FILE)
        .collect();
    if !others.is_empty() {
        let _ = std::fs::remove_file(&lock);
        others.sort();
        others.truncate(4);
        return Err(EngineError::Io {
            path: dir.to_owned(),
            message: format!(
                "already holds a run (or other files: {}); choose another --exp-name so it is not overwritten",
                others.join(", ")
            ),
        });
    }
    Ok(created)
}

/// The run folder, claimed for this process. When the run fails having written nothing but
/// its `config.yaml`, the folder is removed again (if this run created it) so the same run
/// name can be used again; a folder that holds results (metrics, checkpoints, weights) is
/// kept. The claim ([`LOCK_FILE`]) is released when the guard is dropped.
pub(super) struct NewRunDir {
    dir: PathBuf,
    remove_on_drop: bool,
}

impl NewRunDir {
    /// Claims the run folder `dir` (see [`claim`]) and writes `config.yaml` into it.
    pub fn create(dir: &Path, yaml: &str) -> Result<Self, EngineError> {
        let created = claim(dir)?;
        let guard = Self {
            dir: dir.to_owned(),
            remove_on_drop: created,
        };
        replace_file(dir, "config.yaml", yaml.as_bytes())?;
        Ok(guard)
    }

    /// The run has written results: keep the folder whatever happens next.
    pub fn keep(&mut self) {
        self.remove_on_drop = false;
    }
}

impl Drop for NewRunDir {
    fn drop(&mut self) {
        // Best effort: a folder that cannot be cleaned up stays as it is.
        if self.remove_on_drop {
            let _ = std::fs::remove_file(self.dir.join("config.yaml"));
        }
        let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
        if self.remove_on_drop {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_claimed_by_one_guard_at_a_time() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("runs/a");
        let first = NewRunDir::create(&dir, "a: 1\n").unwrap();
        let second = NewRunDir::create(&dir, "b: 2\n");
        assert!(matches!(second, Err(EngineError::Io { .. })));
        assert_eq!(
            std::fs::read_to_string(dir.join("config.yaml")).unwrap(),
            "a: 1\n"
        );
        drop(first);
        // The failed run wrote nothing else: its folder is gone and the name is free again.
        assert!(!dir.exists());
        drop(NewRunDir::create(&dir, "c: 3\n").unwrap());
    }

    #[test]
    fn a_folder_with_results_but_no_config_is_refused_untouched() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("train_metrics.csv"), "epoch,loss\n1,0.5\n").unwrap();
        let error = NewRunDir::create(&dir, "a: 1\n").err().unwrap().to_string();
        assert!(error.contains("train_metrics.csv"), "{error}");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["train_metrics.csv"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("train_metrics.csv")).unwrap(),
            "epoch,loss\n1,0.5\n"
        );
    }

    #[test]
    fn an_empty_folder_is_taken_and_kept_after_results() {
        let root = tempfile::tempdir().unwrap();
        let mut guard = NewRunDir::create(root.path(), "a: 1\n").unwrap();
        guard.keep();
        drop(guard);
        assert!(root.path().join("config.yaml").is_file());
        assert!(!root.path().join(LOCK_FILE).exists());
    }

    #[test]
    fn concurrent_claims_of_one_folder_give_one_winner() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("same");
        let barrier = std::sync::Barrier::new(8);
        let wins = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        claim(&dir).is_ok()
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|handle| handle.join().ok())
                .filter(|won| *won)
                .count()
        });
        assert_eq!(wins, 1);
    }

    #[cfg(unix)]
    #[test]
    fn tensors_are_saved_with_the_umasks_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().join("reference");
        std::fs::write(&reference, b"").unwrap();
        let path = dir.path().join("w.safetensors");
        let tensors = HashMap::from([(
            "w".to_owned(),
            Tensor::new(&[1f32, 2.0], &candle_core::Device::Cpu).unwrap(),
        )]);
        save_tensors(&path, &tensors).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&reference));
        let loaded = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
        assert_eq!(loaded["w"].to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    }
}
