//! File formats (`dataset.<split>.format`): NIfTI and HDF5 in DeepReg's layouts,
//! VoxelMorph's NumPy `.npz` volumes, and 2D image files (PNG, TIFF) in the same folders.

mod affine;
mod by_extension;
mod h5;
mod nifti;
mod nifti_read;
mod npy;
mod npz;
mod raster;
mod raster_read;

use std::path::Path;

use voxreg_framework::prelude::*;

pub use self::by_extension::{read_volume_file, write_volume_file, FileKind};
pub use self::h5::{write_h5, H5Format};
pub use self::nifti::{read_nifti, write_nifti, NiftiFormat};
pub use self::npz::{read_npz, write_npy, write_npz, NpzFormat};
pub use self::raster::{read_image, RasterFormat};
pub use self::raster_read::LUMA;

/// The id of `file` (found under the kind `folder`) whose name without extension is `stem`:
/// its path under the folder without extension; for grouped data the first folder is the
/// group, and a file directly in the kind folder is an error naming it.
fn image_id(
    folder: &Path,
    file: &Path,
    stem: &str,
    grouped: bool,
) -> Result<ImageId, ComponentError> {
    let relative = file.strip_prefix(folder).unwrap_or(file);
    let mut parts: Vec<String> = relative
        .parent()
        .map(|p| p.iter().map(|c| c.to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let group = if grouped {
        if parts.is_empty() {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            return Err(data_error(
                file,
                format!(
                    "grouped data keeps each image in a group folder: <dir>/<kind>/<group>/{name}"
                ),
            ));
        }
        Some(parts.remove(0))
    } else {
        None
    };
    parts.push(stem.to_owned());
    Ok(ImageId {
        group,
        name: parts.join("/"),
    })
}

/// A data error about `path`.
fn data_error(path: &Path, message: impl Into<String>) -> ComponentError {
    ComponentError::Data {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Checks what every loaded volume must satisfy: a shape matching its data, and only finite
/// values (a NaN or infinity in an image would poison training silently).
fn check_volume(path: &Path, what: &str, volume: &Volume) -> Result<(), ComponentError> {
    let expected: usize = volume.shape.iter().product();
    if expected != volume.data.len() || volume.shape.contains(&0) {
        return Err(data_error(
            path,
            format!(
                "{what}: shape {:?} does not fit its {} values",
                volume.shape,
                volume.data.len()
            ),
        ));
    }
    if let Some(index) = volume.data.iter().position(|v| !v.is_finite()) {
        return Err(data_error(
            path,
            format!(
                "{what}: non-finite value {} at flat index {index}",
                volume.data[index]
            ),
        ));
    }
    Ok(())
}

/// Identity voxel-to-world affine (for formats without a header).
pub(crate) const IDENTITY: [[f64; 4]; 4] = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

#[cfg(test)]
mod tests;

#[cfg(test)]
mod raster_tests;
