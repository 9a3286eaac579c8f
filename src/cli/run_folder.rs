//! Run and output folders under `--log-dir`: names checked, default names unique even for
//! runs started in the same second, and each folder created exclusively (a folder that
//! appeared meanwhile is never shared).

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};

/// Refuses an `--exp-name` that is empty or that does not name a folder below `--log-dir`
/// (`.`, `..`, an absolute path), so a run never writes into the log root or beside it.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("--exp-name is empty: give the run's folder name (or leave the flag out for a timestamp)");
    }
    let path = Path::new(name);
    if path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        bail!("--exp-name {name:?}: give a folder name below --log-dir, without `.`, `..` or a leading `/`");
    }
    Ok(())
}

/// Creates a new folder `<log_dir>/<timestamp>` (DeepReg's default run name), or
/// `<timestamp>-2`, `-3`, … when another run took that name first, and returns it.
pub fn create_default(log_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let stamp = super::train::timestamp();
    for n in 1..=1000 {
        let name = if n == 1 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        let dir = log_dir.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!(
        "{}: a thousand runs already carry the name {stamp}; give --exp-name",
        log_dir.display()
    )
}

/// Creates the new folder `<log_dir>/<name>` exclusively (an existing one is refused, so
/// earlier outputs are never replaced), or a unique default one when `name` is `None`.
pub fn create_new(log_dir: &Path, name: Option<&str>) -> anyhow::Result<PathBuf> {
    let Some(name) = name else {
        return create_default(log_dir);
    };
    check_name(name)?;
    let dir = log_dir.join(name);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::create_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => bail!(
            "{} exists; choose another --exp-name so earlier outputs are not overwritten",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("creating {}", dir.display())),
    }
}

/// Removes `dir` if it is an empty folder (one created for a run that then failed).
pub fn remove_if_empty(dir: &Path) {
    // remove_dir fails on a folder with anything in it, which is then kept.
    let _ = std::fs::remove_dir(dir);
}

/// Refuses an output folder (given with `flag`) that exists and is not an empty folder, so
/// nothing already there is overwritten; a file or other non-folder is named as what it is.
pub fn require_new_or_empty(flag: &str, out: &Path) -> anyhow::Result<()> {
    let metadata = match std::fs::metadata(out) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("{flag} {}", out.display())),
    };
    if !metadata.is_dir() {
        bail!(
            "{flag} {}: it is a file, not a folder; give a new folder for the outputs",
            out.display()
        );
    }
    let mut entries =
        std::fs::read_dir(out).with_context(|| format!("{flag} {}: listing it", out.display()))?;
    if entries.next().is_some() {
        bail!(
            "{flag} {}: the folder exists and is not empty; choose a new folder so nothing is overwritten",
            out.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_log_folder_are_refused() {
        for bad in ["", ".", "..", "a/../b", "/tmp/x", "./"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["run", "study/run-1", "20260101-000000"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn default_names_started_together_are_all_different() {
        let logs = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|_| scope.spawn(|| create_default(logs.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut unique = dirs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), dirs.len(), "{dirs:?}");
        assert!(dirs.iter().all(|d| d.is_dir()));
    }

    #[test]
    fn an_existing_output_folder_is_refused() {
        let logs = tempfile::tempdir().unwrap();
        create_new(logs.path(), Some("out")).unwrap();
        let error = create_new(logs.path(), Some("out"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("out exists; choose another --exp-name"),
            "{error}"
        );
    }
}
