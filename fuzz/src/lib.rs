//! What the fuzz targets share: a scratch folder for inputs that must be files, and the panic
//! policy.
//!
//! libFuzzer's Rust glue makes every panic a crash, even one the code catches on purpose
//! (the NIfTI and raster readers catch a decoder's panic and report it, naming the file).
//! [`start`] restores the standard panic hook, so only a panic that escapes the code under
//! test — one a user would see as a crash — fails the run.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

mod shared;
pub use shared::{small_training, PART_SEPARATOR, SMALL_CONFIG};

/// Once per process: the standard panic hook, and the scratch folder.
pub fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let _ = std::panic::take_hook();
        scratch_dir();
    });
}

/// This process's scratch folder, in memory (`/dev/shm`) where the system has it.
pub fn scratch_dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let builder = &mut tempfile::Builder::new();
        let builder = builder.prefix("voxreg-fuzz-");
        if shm.is_dir() {
            builder.tempdir_in(shm)
        } else {
            builder.tempdir()
        }
        .expect("a scratch folder for fuzz inputs")
    })
    .path()
}

/// Writes `bytes` to `name` in the scratch folder, replacing what was there.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, bytes).expect("writing a fuzz input into the scratch folder");
    path
}

/// `bytes` gzip-compressed, so a `.nii.gz` input holds the fuzzed bytes rather than a
/// stream the decompressor refuses at once.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// `data` cut at every [`PART_SEPARATOR`].
pub fn parts(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest
        .windows(PART_SEPARATOR.len())
        .position(|w| w == PART_SEPARATOR)
    {
        parts.push(&rest[..at]);
        rest = &rest[at + PART_SEPARATOR.len()..];
    }
    parts.push(rest);
    parts
}

/// The body of a one-file target: the first byte of `data` picks the file name (even: the
/// first of `names`), `encode` turns the rest into the file's bytes, `read` reads it; a
/// volume read must hold as many values as its shape says.
pub fn read_one_file<E>(
    data: &[u8],
    names: [&str; 2],
    encode: impl FnOnce(bool, &[u8]) -> Vec<u8>,
    read: impl FnOnce(&std::path::Path) -> Result<voxreg::prelude::Volume, E>,
) {
    start();
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let second = mode % 2 == 1;
    let path = scratch_file(names[usize::from(second)], &encode(second, body));
    if let Ok(volume) = read(&path) {
        let count: usize = volume.shape.iter().product();
        assert_eq!(count, volume.data.len(), "shape and value count disagree");
    }
}
