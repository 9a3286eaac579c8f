//! Finding a trained model's weights and configuration from what the user names: a run
//! folder, a checkpoint folder or a weights file.

use std::path::{Path, PathBuf};

use anyhow::bail;

const WEIGHTS: &str = "weights.safetensors";
const CONFIG: &str = "config.yaml";

/// A trained model on disk.
#[derive(Debug, PartialEq)]
pub struct TrainedModel {
    /// The weights (`weights.safetensors`).
    pub weights: PathBuf,
    /// The configuration it was trained with.
    pub config: PathBuf,
}

/// The checkpoint folder `<run>/save/ckpt-<epoch>` of the highest whole epoch, if any.
fn last_checkpoint(save: &Path) -> Option<PathBuf> {
    std::fs::read_dir(save)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let epoch: usize = name.strip_prefix("ckpt-")?.parse().ok()?;
            Some((epoch, entry.path()))
        })
        .filter(|(_, path)| path.join(WEIGHTS).is_file())
        .max_by_key(|(epoch, _)| *epoch)
        .map(|(_, path)| path)
}

/// Resolves `path`:
/// * a run folder (`config.yaml` beside `save/`): its final `save/weights.safetensors`, else
///   its last whole-epoch checkpoint;
/// * a checkpoint folder: its weights and its own `config.yaml`, else the run's two folders
///   up (DeepReg's rule);
/// * a weights file: the `config.yaml` two folders up.
///
/// `what` names `path` in errors; `config` (`--config-path`) replaces the configuration found. Errors say what was looked
/// for.
pub fn locate(path: &Path, what: &str, config: Option<&Path>) -> anyhow::Result<TrainedModel> {
    if !path.exists() {
        bail!("{what} {}: no such file or folder", path.display());
    }
    let save = path.join("save");
    // Where the weights are, and the folders whose config.yaml describes them, nearest first.
    let (weights, config_folders): (PathBuf, Vec<Option<&Path>>) = if path.is_dir() && save.is_dir()
    {
        let final_weights = save.join(WEIGHTS);
        let weights = if final_weights.is_file() {
            final_weights
        } else {
            match last_checkpoint(&save) {
                Some(checkpoint) => checkpoint.join(WEIGHTS),
                None => bail!(
                    "run folder {}: no save/{WEIGHTS} and no save/ckpt-<epoch>/{WEIGHTS}",
                    path.display()
                ),
            }
        };
        (weights, vec![Some(path)])
    } else if path.is_dir() {
        let run = path.parent().and_then(Path::parent);
        (path.join(WEIGHTS), vec![Some(path), run])
    } else {
        let checkpoint = path.parent();
        (
            path.to_owned(),
            vec![checkpoint, checkpoint.and_then(Path::parent)],
        )
    };
    if !weights.is_file() {
        bail!(
            "{}: not a run folder, a checkpoint folder or a weights file (no {})",
            path.display(),
            weights.display()
        );
    }
    let config = match config {
        Some(config) => config.to_owned(),
        None => {
            let found = config_folders
                .into_iter()
                .flatten()
                .map(|folder| folder.join(CONFIG))
                .find(|c| c.is_file());
            match found {
                Some(config) => config,
                None => bail!(
                    "no {CONFIG} in {} or in its run folder: give --config-path",
                    path.display()
                ),
            }
        }
    };
    Ok(TrainedModel { weights, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn a_run_folder_gives_its_final_weights_else_its_last_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        touch(&run.join(CONFIG));
        for epoch in [2, 10, 9] {
            touch(&run.join(format!("save/ckpt-{epoch}/{WEIGHTS}")));
        }
        touch(&run.join(format!("save/ckpt-11-step-3/{WEIGHTS}")));
        let found = locate(&run, "model", None).unwrap();
        assert_eq!(found.weights, run.join(format!("save/ckpt-10/{WEIGHTS}")));
        assert_eq!(found.config, run.join(CONFIG));
        touch(&run.join(format!("save/{WEIGHTS}")));
        assert_eq!(
            locate(&run, "model", None).unwrap().weights,
            run.join(format!("save/{WEIGHTS}"))
        );
    }

    #[test]
    fn a_checkpoint_prefers_its_own_config() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        touch(&run.join(CONFIG));
        let checkpoint = run.join("save/ckpt-1");
        touch(&checkpoint.join(WEIGHTS));
        assert_eq!(
            locate(&checkpoint, "model", None).unwrap().config,
            run.join(CONFIG)
        );
        touch(&checkpoint.join(CONFIG));
        assert_eq!(
            locate(&checkpoint, "model", None).unwrap().config,
            checkpoint.join(CONFIG)
        );
        let file = locate(&checkpoint.join(WEIGHTS), "model", None).unwrap();
        assert_eq!(file.config, checkpoint.join(CONFIG));
    }

    #[test]
    fn missing_pieces_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let none = locate(&dir.path().join("nothing"), "model", None).unwrap_err();
        assert!(none.to_string().contains("no such file"), "{none}");
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("save")).unwrap();
        let empty = locate(&run, "model", None).unwrap_err();
        assert!(
            empty.to_string().contains("no save/weights.safetensors"),
            "{empty}"
        );
        let lonely = dir.path().join("w.safetensors");
        touch(&lonely);
        let no_config = locate(&lonely, "model", None).unwrap_err();
        assert!(
            no_config.to_string().contains("--config-path"),
            "{no_config}"
        );
        let given = locate(&lonely, "model", Some(Path::new("c.yaml"))).unwrap();
        assert_eq!(given.config, PathBuf::from("c.yaml"));
    }
}
