//! `nifti`: NIfTI-1 volumes (`.nii`, `.nii.gz`), one file per image, in DeepReg's folders:
//! `<dir>/<kind>/<name>.nii.gz`, files possibly in sub-folders; grouped data as
//! `<dir>/<kind>/<group>/<name>.nii.gz`.

use std::path::{Path, PathBuf};

use ::nifti::writer::WriterOptions;
use ::nifti::NiftiHeader;
use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

use super::affine::{affine, AffineFields};
use super::nifti_read::{read_header, read_voxels};
use super::{check_volume, data_error, image_id};

/// `nifti`: NIfTI-1 volumes, one file per image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NiftiFormat {}

#[typetag::serialize(name = "nifti")]
impl FileLoaderConfig for NiftiFormat {
    fn open(
        &self,
        dir: &Path,
        kind: &str,
        grouped: bool,
    ) -> Result<Box<dyn FileLoader>, ComponentError> {
        let folder = dir.join(kind);
        if !folder.is_dir() {
            return Err(data_error(
                &folder,
                format!("missing folder: DeepReg's layout keeps {kind} in <dir>/{kind}/"),
            ));
        }
        let mut files = Vec::new();
        collect_nifti_files(&folder, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(data_error(&folder, "no .nii or .nii.gz files"));
        }
        let ids = files
            .iter()
            .map(|file| image_id(&folder, file, nifti_stem(file).unwrap_or_default(), grouped))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(NiftiFiles { files, ids }))
    }

    fn has(&self, dir: &Path, kind: &str) -> bool {
        dir.join(kind).exists()
    }
}

register_component!(
    file_loader,
    "nifti",
    NiftiFormat,
    "NIfTI-1 volumes (.nii, .nii.gz), one file per image"
);

struct NiftiFiles {
    files: Vec<PathBuf>,
    ids: Vec<ImageId>,
}

impl FileLoader for NiftiFiles {
    fn ids(&self) -> &[ImageId] {
        &self.ids
    }

    fn load(&self, index: usize) -> Result<Volume, ComponentError> {
        let path = self.files.get(index).ok_or_else(|| {
            ComponentError::invalid("file_loader `nifti`", format!("no image {index}"))
        })?;
        read_nifti(path)
    }

    fn shape(&self, index: usize) -> Result<Vec<usize>, ComponentError> {
        let path = self.files.get(index).ok_or_else(|| {
            ComponentError::invalid("file_loader `nifti`", format!("no image {index}"))
        })?;
        Ok(read_header(path)?.0.shape)
    }
}

fn collect_nifti_files(folder: &Path, out: &mut Vec<PathBuf>) -> Result<(), ComponentError> {
    let entries = std::fs::read_dir(folder).map_err(|e| data_error(folder, e.to_string()))?;
    for entry in entries {
        let path = entry.map_err(|e| data_error(folder, e.to_string()))?.path();
        if path.is_dir() {
            collect_nifti_files(&path, out)?;
        } else if nifti_stem(&path).is_some() {
            out.push(path);
        } else if path.to_str().is_none() && has_nifti_suffix(&path) {
            // Ids are names, and pairing by a mangled name could pair the wrong files.
            tracing::warn!(
                "{}: skipped, its name is not valid UTF-8 (rename it to pair it with its partner)",
                path.display()
            );
        }
    }
    Ok(())
}

/// Whether the file name, read lossily, ends in `.nii` or `.nii.gz`.
fn has_nifti_suffix(path: &Path) -> bool {
    path.file_name().is_some_and(|name| {
        let name = name.to_string_lossy();
        name.ends_with(".nii") || name.ends_with(".nii.gz")
    })
}

/// The file name without `.nii` / `.nii.gz`, for NIfTI files.
fn nifti_stem(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
        .filter(|stem| !stem.is_empty())
}

/// Reads a NIfTI-1 file (`.nii` or `.nii.gz`) as f32 with the header's scaling applied,
/// its voxel-to-world affine, and its array shape (spatial axes, then any further axes such
/// as DeepReg's label axis). Errors name the file: not a regular file, unreadable, truncated
/// or compressed wrongly, not NIfTI, impossible dimensions or `vox_offset`, an unsupported
/// datatype (complex, RGB), more voxels than memory, non-finite values.
pub fn read_nifti(path: &Path) -> Result<Volume, ComponentError> {
    let (header, shape, data) = read_voxels(path)?;
    let volume = Volume {
        shape,
        data,
        affine: affine(&AffineFields {
            sform_code: header.sform_code,
            qform_code: header.qform_code,
            srow: [header.srow_x, header.srow_y, header.srow_z],
            quatern: [header.quatern_b, header.quatern_c, header.quatern_d],
            qoffset: [header.quatern_x, header.quatern_y, header.quatern_z],
            pixdim: header.pixdim,
        }),
    };
    check_volume(path, "NIfTI volume", &volume)?;
    Ok(volume)
}

/// Writes `volume` as a NIfTI-1 file (gzip-compressed when the name ends in `.gz`), f32,
/// with its affine as the sform (and voxel sizes from the affine's columns), so the output
/// overlays its source in viewers. Written to a temporary file and renamed, so a failed
/// write leaves no partial file.
pub fn write_nifti(path: &Path, volume: &Volume) -> Result<(), ComponentError> {
    let array = ::ndarray::ArrayD::from_shape_vec(volume.shape.clone(), volume.data.clone())
        .map_err(|e| data_error(path, format!("volume shape does not fit its data: {e}")))?;
    let mut header = NiftiHeader::default();
    let [x, y, z, _] = volume.affine;
    header.srow_x = x.map(|v| v as f32);
    header.srow_y = y.map(|v| v as f32);
    header.srow_z = z.map(|v| v as f32);
    header.sform_code = 2;
    header.qform_code = 0;
    for axis in 0..3 {
        let column = (0..3)
            .map(|r| volume.affine[r][axis].powi(2))
            .sum::<f64>()
            .sqrt();
        header.pixdim[axis + 1] = column as f32;
    }
    // The writer derives its output name from the extension, so the temporary name keeps
    // `.nii` / `.nii.gz` and no other dot.
    let compressed = path.to_string_lossy().ends_with(".gz");
    let extension = if compressed { "nii.gz" } else { "nii" };
    let unique = voxreg_framework::files::temporary_sibling(path);
    let unique = unique
        .file_name()
        .map(|n| n.to_string_lossy().replace('.', "_"))
        .unwrap_or_default();
    let temporary = path.with_file_name(format!("{unique}.{extension}"));
    WriterOptions::new(&temporary)
        .reference_header(&header)
        .write_nifti(&array)
        .map_err(|e| data_error(path, format!("cannot write NIfTI: {e}")))?;
    std::fs::rename(&temporary, path).map_err(|e| {
        data_error(
            path,
            format!("cannot move the written file into place: {e}"),
        )
    })
}
