//! Files written to a temporary file of this process beside their target and renamed into place, so a failed
//! or interrupted write never leaves a partial file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Writes through `write` into a temporary file of this process beside `path` (see
/// [`voxreg::files::temporary_sibling`]), then renames it to `path`.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    path.file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let temporary: PathBuf = voxreg::files::temporary_sibling(path);
    let result = File::create(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))
        .and_then(|file| {
            let mut writer = BufWriter::new(file);
            write(&mut writer)?;
            writer
                .flush()
                .with_context(|| format!("writing {}", temporary.display()))
        })
        .and_then(|()| {
            std::fs::rename(&temporary, path)
                .with_context(|| format!("moving the written file to {}", path.display()))
        });
    if result.is_err() {
        // The partial file is useless; failing to remove it changes nothing for the caller.
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Writes `text` to `path` atomically (see [`write_atomically`]).
pub fn write_text(path: &Path, text: &str) -> anyhow::Result<()> {
    write_atomically(path, |writer| {
        writer
            .write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    })
}
