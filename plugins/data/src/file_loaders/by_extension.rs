//! Single image files chosen by their extension, for commands that take file paths rather
//! than dataset folders (`voxreg register --model`).

use std::path::Path;

use voxreg_framework::prelude::*;

use super::data_error;
use super::nifti::{read_nifti, write_nifti};
use super::npy::read_npy;
use super::npz::{read_npz, write_npz};
use super::raster::read_image;

/// The formats a single file can be read from or written to, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `.nii`, `.nii.gz`
    Nifti,
    /// `.npz` (one array per key)
    Npz,
    /// `.npy` (one array; read only)
    Npy,
    /// `.png`, `.tif`, `.tiff` (read only)
    Raster,
}

impl FileKind {
    /// The kind of `path` by its extension (case-insensitive), `None` for other names.
    pub fn of(path: &Path) -> Option<FileKind> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".nii") || name.ends_with(".nii.gz") {
            Some(FileKind::Nifti)
        } else if name.ends_with(".npz") {
            Some(FileKind::Npz)
        } else if name.ends_with(".npy") {
            Some(FileKind::Npy)
        } else if [".png", ".tif", ".tiff"].iter().any(|e| name.ends_with(e)) {
            Some(FileKind::Raster)
        } else {
            None
        }
    }
}

/// Reads one image or label file: NIfTI (with its affine), the array `npz_key` of a NumPy
/// `.npz` archive or a `.npy` array (identity affine), or a PNG / TIFF image (grey, identity
/// affine). Errors name the file: an unknown extension, or whatever its reader reports.
pub fn read_volume_file(path: &Path, npz_key: &str) -> Result<Volume, ComponentError> {
    match FileKind::of(path) {
        Some(FileKind::Nifti) => read_nifti(path),
        Some(FileKind::Npz) => read_npz(path, npz_key),
        Some(FileKind::Npy) => read_npy(path),
        Some(FileKind::Raster) => read_image(path, None),
        None => Err(data_error(
            path,
            "unknown image file type: name it .nii, .nii.gz, .npz, .npy, .png, .tif or .tiff",
        )),
    }
}

/// Writes `volume` as NIfTI (by its affine) or as the array `npz_key` of a `.npz` archive,
/// by the extension of `path`; a temporary file renamed into place, so a failed write leaves
/// no partial file. Other extensions are errors naming the file.
pub fn write_volume_file(
    path: &Path,
    volume: &Volume,
    npz_key: &str,
) -> Result<(), ComponentError> {
    match FileKind::of(path) {
        Some(FileKind::Nifti) => write_nifti(path, volume),
        Some(FileKind::Npz) => write_npz(path, &[(npz_key, volume)]),
        _ => Err(data_error(
            path,
            "cannot write this file type: name it .nii, .nii.gz or .npz",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume() -> Volume {
        let mut affine = super::super::IDENTITY;
        affine[0][0] = 2.0;
        Volume {
            data: (0..24).map(|v| v as f32).collect(),
            shape: vec![2, 3, 4],
            affine,
        }
    }

    #[test]
    fn kinds_follow_the_extension_in_any_case() {
        assert_eq!(FileKind::of(Path::new("a/b.NII.GZ")), Some(FileKind::Nifti));
        assert_eq!(FileKind::of(Path::new("b.nii")), Some(FileKind::Nifti));
        assert_eq!(FileKind::of(Path::new("b.npz")), Some(FileKind::Npz));
        assert_eq!(FileKind::of(Path::new("b.NPY")), Some(FileKind::Npy));
        assert_eq!(FileKind::of(Path::new("b.Tif")), Some(FileKind::Raster));
        assert_eq!(FileKind::of(Path::new("b.mha")), None);
    }

    #[test]
    fn nifti_and_npz_round_trip_and_npz_drops_the_affine() {
        let dir = tempfile::tempdir().unwrap();
        let original = volume();
        let nifti = dir.path().join("v.nii.gz");
        write_volume_file(&nifti, &original, "vol").unwrap();
        assert_eq!(read_volume_file(&nifti, "vol").unwrap(), original);
        let npz = dir.path().join("v.npz");
        write_volume_file(&npz, &original, "warp").unwrap();
        let back = read_volume_file(&npz, "warp").unwrap();
        assert_eq!((back.data, back.shape), (original.data, original.shape));
        assert_eq!(back.affine, super::super::IDENTITY);
        let missing = read_volume_file(&npz, "vol").unwrap_err().to_string();
        assert!(missing.contains("vol"), "{missing}");
    }

    #[test]
    fn unknown_extensions_are_errors_naming_the_file() {
        let read = read_volume_file(Path::new("scan.mha"), "vol").unwrap_err();
        assert!(read.to_string().contains("scan.mha"), "{read}");
        let write = write_volume_file(Path::new("out.png"), &volume(), "vol").unwrap_err();
        assert!(write.to_string().contains("out.png"), "{write}");
    }
}
