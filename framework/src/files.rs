//! Files from outside and files written: temporary names no other process or thread shares,
//! and the check that a path read as data is a regular file (not a FIFO that would block,
//! a device, or a folder).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A name beside `path` for writing it before renaming it into place:
/// `.<name>.<pid>-<n>.partial`, unique to this process and this call, so two processes (or
/// threads) writing the same file never write into one temporary file.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_owned());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{n}.partial", std::process::id()))
}

/// What a path that is not a regular file is, in words (`a folder`, `a FIFO (named pipe)`,
/// …); `None` for a regular file (symbolic links are followed).
pub fn non_regular_kind(metadata: &std::fs::Metadata) -> Option<&'static str> {
    let kind = metadata.file_type();
    if kind.is_file() {
        return None;
    }
    if kind.is_dir() {
        return Some("a folder");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if kind.is_socket() {
            return Some("a socket");
        }
        if kind.is_char_device() {
            return Some("a character device");
        }
        if kind.is_block_device() {
            return Some("a block device");
        }
    }
    Some("not a regular file")
}

/// Why `path` cannot be read as a data file, before anything opens it: `no such file`,
/// `it is a FIFO (named pipe), not a regular file`, … `None` when it is a regular file.
/// Opening a FIFO blocks until a writer appears, so it must be refused before `open`.
pub fn regular_file_problem(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(metadata) => {
            non_regular_kind(&metadata).map(|kind| format!("it is {kind}, not a regular file"))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Some("no such file".to_owned())
        }
        Err(error) => Some(error.to_string()),
    }
}

/// Why `dir` cannot be used as a folder of data: `does not exist` or `is not a folder`;
/// `None` when it is a folder.
pub fn folder_problem(dir: &Path) -> Option<&'static str> {
    if dir.is_dir() {
        None
    } else if dir.exists() {
        Some("is not a folder")
    } else {
        Some("does not exist")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_problems_say_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(folder_problem(dir.path()), None);
        assert_eq!(folder_problem(&file), Some("is not a folder"));
        assert_eq!(
            folder_problem(&dir.path().join("none")),
            Some("does not exist")
        );
    }

    #[test]
    fn temporary_names_differ_per_call_and_name_the_process() {
        let path = Path::new("/run/metrics.csv");
        let a = temporary_sibling(path);
        let b = temporary_sibling(path);
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".metrics.csv."), "{name}");
        assert!(name.contains(&std::process::id().to_string()), "{name}");
        assert_eq!(a.parent(), path.parent());
    }

    #[test]
    fn folders_and_fifos_are_named_for_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            regular_file_problem(dir.path()).as_deref(),
            Some("it is a folder, not a regular file")
        );
        assert_eq!(
            regular_file_problem(&dir.path().join("missing")).as_deref(),
            Some("no such file")
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(regular_file_problem(&file), None);
        #[cfg(unix)]
        {
            let fifo = dir.path().join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|s| s.success()) {
                assert_eq!(
                    regular_file_problem(&fifo).as_deref(),
                    Some("it is a FIFO (named pipe), not a regular file")
                );
            }
            assert_eq!(
                regular_file_problem(Path::new("/dev/null")).as_deref(),
                Some("it is a character device, not a regular file")
            );
        }
    }
}
