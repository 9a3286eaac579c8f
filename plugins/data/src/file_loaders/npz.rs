//! `npz`: NumPy `.npz` archives as VoxelMorph keeps its volumes, one file per image holding
//! the image under `vol` and, optionally, its segmentation under `seg` (both keys
//! configurable). Files sit in DeepReg's folders, `<dir>/<kind>/<name>.npz` (grouped data:
//! `<dir>/<kind>/<group>/<name>.npz`); labels are read from `<dir>/<kind>/` when that folder
//! exists, and otherwise from the images' own files (`labels` from `images/`,
//! `moving_labels` from `moving_images/`, …), VoxelMorph's layout. Archives may be stored or
//! deflate-compressed (`np.savez` or `np.savez_compressed`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use voxreg_framework::memory;
use voxreg_framework::prelude::*;

use super::npy::{parse_header, parse_npy};
use super::{check_volume, data_error, image_id, IDENTITY};

/// Bytes read to parse an array's header without its data (NumPy pads headers to 64 bytes;
/// even a many-axis shape fits well within this).
const HEADER_PREFIX: u64 = 64 * 1024;

/// `npz`: NumPy `.npz` archives, one per image (VoxelMorph's volumes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NpzFormat {
    /// The array holding the image (VoxelMorph: `vol`).
    #[serde(default = "default_image_key")]
    pub image_key: String,
    /// The array holding the label (VoxelMorph: `seg`).
    #[serde(default = "default_label_key")]
    pub label_key: String,
    /// Integer segmentations (VoxelMorph's `seg`) become one binary mask per value listed
    /// here, in this order, as DeepReg's labels are (`(*spatial, C)`). Absent: the label
    /// array is used as it is, and must hold masks with values in `[0, 1]`.
    #[serde(default)]
    pub label_values: Option<Vec<i64>>,
}

fn default_image_key() -> String {
    "vol".to_owned()
}

fn default_label_key() -> String {
    "seg".to_owned()
}

impl Default for NpzFormat {
    fn default() -> Self {
        NpzFormat {
            image_key: default_image_key(),
            label_key: default_label_key(),
            label_values: None,
        }
    }
}

/// The image kind whose files also hold the labels of `kind` (`labels` → `images`), for
/// label kinds.
fn image_kind_of(kind: &str) -> Option<String> {
    kind.strip_suffix("labels")
        .map(|prefix| format!("{prefix}images"))
}

impl NpzFormat {
    /// The folder holding `kind`, and the key to read from its files.
    fn locate(&self, dir: &Path, kind: &str) -> (PathBuf, String, bool) {
        let own = dir.join(kind);
        match image_kind_of(kind) {
            Some(images) if !own.is_dir() => (dir.join(images), self.label_key.clone(), true),
            Some(_) => (own, self.label_key.clone(), true),
            None => (own, self.image_key.clone(), false),
        }
    }

    /// Reads `key` of the archive at `path` as a volume; labels (`is_label`) are checked
    /// and, with `label_values`, turned into one mask per value.
    pub fn read(&self, path: &Path, key: &str, is_label: bool) -> Result<Volume, ComponentError> {
        let volume = read_npz(path, key)?;
        if !is_label {
            return Ok(volume);
        }
        match &self.label_values {
            Some(values) => Ok(one_hot(&volume, values)),
            None => {
                if let Some(value) = volume.data.iter().find(|v| !(0.0..=1.0).contains(*v)) {
                    return Err(data_error(
                        path,
                        format!(
                            "array `{key}` holds the label value {value}: an integer segmentation needs `label_values` in the npz format (e.g. `format: {{name: npz, label_values: [1, 2, 3]}}`), one mask per value"
                        ),
                    ));
                }
                Ok(volume)
            }
        }
    }
}

#[typetag::serialize(name = "npz")]
impl FileLoaderConfig for NpzFormat {
    fn open(
        &self,
        dir: &Path,
        kind: &str,
        grouped: bool,
    ) -> Result<Box<dyn FileLoader>, ComponentError> {
        let (folder, key, is_label) = self.locate(dir, kind);
        if !folder.is_dir() {
            return Err(data_error(
                &folder,
                format!("missing folder: DeepReg's layout keeps {kind} in <dir>/{kind}/"),
            ));
        }
        let mut files = Vec::new();
        collect_npz_files(&folder, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(data_error(&folder, "no .npz files"));
        }
        let ids = files
            .iter()
            .map(|file| image_id(&folder, file, npz_stem(file).unwrap_or_default(), grouped))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(NpzFiles {
            format: self.clone(),
            files,
            ids,
            key,
            is_label,
        }))
    }

    /// Image kinds: whether their folder exists. Label kinds: whether their own folder
    /// exists, or the first image file holds the label key.
    fn has(&self, dir: &Path, kind: &str) -> bool {
        if dir.join(kind).exists() {
            return true;
        }
        let (folder, key, is_label) = self.locate(dir, kind);
        if !is_label {
            return false;
        }
        let mut files = Vec::new();
        if collect_npz_files(&folder, &mut files).is_err() {
            return false;
        }
        files.sort();
        files
            .first()
            .and_then(|file| archive_keys(file).ok())
            .is_some_and(|keys| keys.contains(&key))
    }
}

register_component!(
    file_loader,
    "npz",
    NpzFormat,
    "NumPy .npz archives, one per image (VoxelMorph's `vol` / `seg` arrays)"
);

struct NpzFiles {
    format: NpzFormat,
    files: Vec<PathBuf>,
    ids: Vec<ImageId>,
    key: String,
    is_label: bool,
}

impl NpzFiles {
    fn file(&self, index: usize) -> Result<&Path, ComponentError> {
        self.files.get(index).map(PathBuf::as_path).ok_or_else(|| {
            ComponentError::invalid("file_loader `npz`", format!("no image {index}"))
        })
    }
}

impl FileLoader for NpzFiles {
    fn ids(&self) -> &[ImageId] {
        &self.ids
    }

    fn load(&self, index: usize) -> Result<Volume, ComponentError> {
        self.format
            .read(self.file(index)?, &self.key, self.is_label)
    }

    fn shape(&self, index: usize) -> Result<Vec<usize>, ComponentError> {
        let path = self.file(index)?;
        let mut shape = array_shape(path, &self.key)?;
        if let (true, Some(values)) = (self.is_label, &self.format.label_values) {
            shape.push(values.len());
        }
        Ok(shape)
    }
}

/// `(*spatial, C)` binary masks, channel `c` where the segmentation equals `values[c]`.
fn one_hot(segmentation: &Volume, values: &[i64]) -> Volume {
    let channels = values.len();
    let mut data = vec![0.0; segmentation.data.len() * channels];
    for (voxel, &label) in segmentation.data.iter().enumerate() {
        if let Some(c) = values.iter().position(|&v| v as f32 == label) {
            data[voxel * channels + c] = 1.0;
        }
    }
    let mut shape = segmentation.shape.clone();
    shape.push(channels);
    Volume {
        data,
        shape,
        affine: segmentation.affine,
    }
}

/// Opens the archive at `path`, naming it in errors.
fn open_archive(path: &Path) -> Result<zip::ZipArchive<File>, ComponentError> {
    if let Some(problem) = voxreg_framework::files::regular_file_problem(path) {
        return Err(data_error(path, problem));
    }
    let file = File::open(path).map_err(|e| data_error(path, format!("cannot open: {e}")))?;
    zip::ZipArchive::new(file)
        .map_err(|e| data_error(path, format!("not a readable .npz (zip) archive: {e}")))
}

/// The array names an archive holds (its `<name>.npy` members, without `.npy`).
pub fn archive_keys(path: &Path) -> Result<Vec<String>, ComponentError> {
    let archive = open_archive(path)?;
    let mut keys: Vec<String> = archive
        .file_names()
        .filter_map(|name| name.ok())
        .filter_map(|name| name.strip_suffix(".npy").map(str::to_owned))
        .collect();
    keys.sort();
    Ok(keys)
}

/// Reads up to `limit` bytes of member `key` of the archive (all of it when `limit` is
/// `None`, after checking that it fits in memory).
fn read_member(path: &Path, key: &str, limit: Option<u64>) -> Result<Vec<u8>, ComponentError> {
    let mut archive = open_archive(path)?;
    let member = format!("{key}.npy");
    let index = archive.index_for_name(&member).ok_or_else(|| {
        let keys = archive_keys(path)
            .map(|keys| keys.join(", "))
            .unwrap_or_default();
        data_error(
            path,
            format!("no array `{key}` in the archive (it holds: {keys}); set the npz format's `image_key` / `label_key`"),
        )
    })?;
    let entry = archive
        .by_index(index)
        .map_err(|e| data_error(path, format!("cannot read array `{key}`: {e}")))?;
    let size = entry.size();
    let wanted = match limit {
        Some(limit) => size.min(limit),
        None => {
            // The bytes, and at most four f32 bytes per stored byte.
            let bytes = memory::byte_count(size, 5);
            memory::check_fits(bytes, &format!("array `{key}` ({size} bytes)"))
                .map_err(|message| data_error(path, message))?;
            size
        }
    };
    let mut bytes = Vec::with_capacity(usize::try_from(wanted).unwrap_or(0));
    entry.take(wanted).read_to_end(&mut bytes).map_err(|e| {
        data_error(
            path,
            format!("cannot read array `{key}` (a damaged archive?): {e}"),
        )
    })?;
    Ok(bytes)
}

/// The shape of array `key` in the `.npz` archive at `path`, from its header alone.
pub fn array_shape(path: &Path, key: &str) -> Result<Vec<usize>, ComponentError> {
    let bytes = read_member(path, key, Some(HEADER_PREFIX))?;
    parse_header(&bytes)
        .map(|header| header.shape)
        .map_err(|message| data_error(path, format!("array `{key}`: {message}")))
}

/// Reads array `key` of the `.npz` archive at `path` as a volume (f32, C order, identity
/// affine: `.npz` files carry no geometry). Errors name the file and the key: not a zip
/// archive, no such array (listing those it holds), an object array (never unpickled), an
/// unsupported dtype, truncated data, non-finite values.
pub fn read_npz(path: &Path, key: &str) -> Result<Volume, ComponentError> {
    let bytes = read_member(path, key, None)?;
    let array = parse_npy(&bytes)
        .map_err(|message| data_error(path, format!("array `{key}`: {message}")))?;
    let volume = Volume {
        shape: array.shape,
        data: array.data,
        affine: IDENTITY,
    };
    check_volume(path, &format!("array `{key}`"), &volume)?;
    Ok(volume)
}

/// Writes `arrays` (name, volume) as a deflate-compressed `.npz` archive, each as a
/// little-endian float32 C-order array (`np.load(path)[name]` reads it back; the affine is
/// not stored: `.npz` has no geometry). Written to a temporary file and renamed, so a failed
/// write leaves no partial file.
pub fn write_npz(path: &Path, arrays: &[(&str, &Volume)]) -> Result<(), ComponentError> {
    let temporary = voxreg_framework::files::temporary_sibling(path);
    let written = write_archive(&temporary, arrays).and_then(|()| {
        std::fs::rename(&temporary, path)
            .map_err(|e| format!("cannot move the written file into place: {e}"))
    });
    written.map_err(|message| {
        let _ = std::fs::remove_file(&temporary);
        data_error(path, message)
    })
}

/// Writes `volume` as a little-endian float32 C-order `.npy` file (`np.load(path)` reads it
/// back with its shape; the affine is not stored). Written to a temporary file and renamed,
/// so a failed write leaves no partial file.
pub fn write_npy(path: &Path, volume: &Volume) -> Result<(), ComponentError> {
    let temporary = voxreg_framework::files::temporary_sibling(path);
    let written = std::fs::write(&temporary, npy_f32(volume))
        .map_err(|e| format!("cannot write: {e}"))
        .and_then(|()| {
            std::fs::rename(&temporary, path)
                .map_err(|e| format!("cannot move the written file into place: {e}"))
        });
    written.map_err(|message| {
        let _ = std::fs::remove_file(&temporary);
        data_error(path, message)
    })
}

fn write_archive(path: &Path, arrays: &[(&str, &Volume)]) -> Result<(), String> {
    let file = File::create(path).map_err(|e| format!("cannot create: {e}"))?;
    let mut archive = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    for (name, volume) in arrays {
        archive
            .start_file(format!("{name}.npy"), options)
            .map_err(|e| format!("cannot write array `{name}`: {e}"))?;
        std::io::Write::write_all(&mut archive, &npy_f32(volume))
            .map_err(|e| format!("cannot write array `{name}`: {e}"))?;
    }
    let mut writer = archive
        .finish()
        .map_err(|e| format!("cannot finish the archive: {e}"))?;
    std::io::Write::flush(&mut writer).map_err(|e| format!("cannot write: {e}"))
}

/// A version-1 `.npy` file of `volume` as `<f4`, its header padded to 64 bytes as NumPy
/// pads it.
fn npy_f32(volume: &Volume) -> Vec<u8> {
    let shape = match volume.shape.as_slice() {
        [one] => format!("({one},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6), version (2), length (2), the header and its newline: a multiple of 64.
    let padding = (64 - (10 + header.len() + 1) % 64) % 64;
    header.extend(std::iter::repeat_n(' ', padding));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * volume.data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for value in &volume.data {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

fn collect_npz_files(folder: &Path, out: &mut Vec<PathBuf>) -> Result<(), ComponentError> {
    let entries = std::fs::read_dir(folder).map_err(|e| data_error(folder, e.to_string()))?;
    for entry in entries {
        let path = entry.map_err(|e| data_error(folder, e.to_string()))?.path();
        if path.is_dir() {
            collect_npz_files(&path, out)?;
        } else if npz_stem(&path).is_some() {
            out.push(path);
        } else if path.to_str().is_none()
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".npz"))
        {
            tracing::warn!(
                "{}: skipped, its name is not valid UTF-8 (rename it to pair it with its partner)",
                path.display()
            );
        }
    }
    Ok(())
}

/// The file name without `.npz`, for `.npz` files.
fn npz_stem(path: &Path) -> Option<&str> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".npz")
        .filter(|stem| !stem.is_empty())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::npy::tests::npy_bytes;
    use super::*;

    /// Writes an archive of raw `.npy` members, stored or deflated.
    fn write_members(path: &Path, members: &[(&str, Vec<u8>)], deflate: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut archive = zip::ZipWriter::new(File::create(path).unwrap());
        let method = if deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, bytes) in members {
            archive.start_file(*name, options).unwrap();
            archive.write_all(bytes).unwrap();
        }
        archive.finish().unwrap();
    }

    fn u8_array(shape: &[usize], values: &[u8]) -> Vec<u8> {
        npy_bytes("|u1", false, shape, values)
    }

    #[test]
    fn stored_and_deflated_archives_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let vol: Vec<u8> = [0.25f32, 1.0, -2.0, 8.0, 0.0, 3.5]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        for deflate in [false, true] {
            let path = dir.path().join(format!("case_{deflate}.npz"));
            write_members(
                &path,
                &[
                    ("vol.npy", npy_bytes(">f4", false, &[1, 2, 3], &vol)),
                    ("seg.npy", u8_array(&[1, 2, 3], &[0, 1, 0, 1, 1, 0])),
                ],
                deflate,
            );
            let volume = read_npz(&path, "vol").unwrap();
            assert_eq!(volume.shape, [1, 2, 3]);
            assert_eq!(volume.data, [0.25, 1.0, -2.0, 8.0, 0.0, 3.5]);
            assert_eq!(volume.affine, IDENTITY);
            assert_eq!(array_shape(&path, "seg").unwrap(), [1, 2, 3]);
            assert_eq!(archive_keys(&path).unwrap(), ["seg", "vol"]);
        }
    }

    #[test]
    fn written_archives_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npz");
        let volume = Volume {
            data: (0..24).map(|v| v as f32 / 3.0).collect(),
            shape: vec![2, 3, 4],
            affine: IDENTITY,
        };
        let line = Volume {
            data: vec![1.0, 2.0],
            shape: vec![2],
            affine: IDENTITY,
        };
        write_npz(&path, &[("vol", &volume), ("line", &line)]).unwrap();
        assert_eq!(read_npz(&path, "vol").unwrap(), volume);
        assert_eq!(read_npz(&path, "line").unwrap(), line);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "no temporary file left");
        let error =
            write_npz(&dir.path().join("no/such/out.npz"), &[("vol", &volume)]).unwrap_err();
        assert!(error.to_string().contains("cannot create"), "{error}");
    }

    #[test]
    fn bad_archives_are_errors_naming_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objects.npz");
        write_members(
            &path,
            &[
                ("vol.npy", npy_bytes("|O", false, &[2], &[0; 16])),
                ("img.npy", npy_bytes("<c16", false, &[1], &[0; 16])),
                (
                    "nan.npy",
                    npy_bytes("<f4", false, &[1], &f32::NAN.to_le_bytes()),
                ),
            ],
            true,
        );
        let message = |key: &str| read_npz(&path, key).unwrap_err().to_string();
        let object = message("vol");
        assert!(object.contains("objects.npz"), "{object}");
        assert!(
            object.contains("array `vol`") && object.contains("never unpickles"),
            "{object}"
        );
        assert!(message("img").contains("unsupported dtype `<c16`"));
        assert!(message("nan").contains("non-finite"));
        let missing = message("seg");
        assert!(
            missing.contains("no array `seg`") && missing.contains("img, nan, vol"),
            "{missing}"
        );
        let not_zip = dir.path().join("plain.npz");
        std::fs::write(&not_zip, b"not a zip archive").unwrap();
        let error = read_npz(&not_zip, "vol").unwrap_err().to_string();
        assert!(
            error.contains("plain.npz") && error.contains("zip"),
            "{error}"
        );
    }

    #[test]
    fn folders_hold_images_and_their_segmentations() {
        let dir = tempfile::tempdir().unwrap();
        for (name, first) in [("b", 2u8), ("a", 1), ("sub/c", 3)] {
            write_members(
                &dir.path().join(format!("images/{name}.npz")),
                &[
                    ("vol.npy", u8_array(&[2, 2], &[first, 0, 0, 0])),
                    ("seg.npy", u8_array(&[2, 2], &[0, 4, 7, 4])),
                ],
                false,
            );
        }
        let format = NpzFormat::default();
        let images = format.open(dir.path(), "images", false).unwrap();
        let names: Vec<&str> = images.ids().iter().map(|id| id.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "sub/c"]);
        assert_eq!(images.load(1).unwrap().data[0], 2.0);
        assert_eq!(images.shape(0).unwrap(), [2, 2]);

        // Labels come from the images' own files, VoxelMorph's layout.
        assert!(format.has(dir.path(), "labels"));
        let labels = format.open(dir.path(), "labels", false).unwrap();
        let error = labels.load(0).unwrap_err().to_string();
        assert!(error.contains("label_values"), "{error}");
        let one_hot = NpzFormat {
            label_values: Some(vec![7, 4]),
            ..NpzFormat::default()
        };
        let labels = one_hot.open(dir.path(), "labels", false).unwrap();
        let label = labels.load(0).unwrap();
        assert_eq!(label.shape, [2, 2, 2]);
        assert_eq!(label.data, [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
        assert_eq!(labels.shape(0).unwrap(), [2, 2, 2]);

        let renamed = NpzFormat {
            label_key: "mask".to_owned(),
            ..NpzFormat::default()
        };
        assert!(
            !renamed.has(dir.path(), "labels"),
            "no `mask` array: unlabelled"
        );
        assert!(!format.has(dir.path(), "moving_labels"));

        let grouped = format.open(dir.path(), "images", true).err().unwrap();
        assert!(grouped.to_string().contains("group folder"), "{grouped}");
        let missing = format
            .open(dir.path(), "fixed_images", false)
            .err()
            .unwrap();
        assert!(missing.to_string().contains("missing folder"), "{missing}");
    }
}
