//! File formats (`dataset.<split>.format`): NIfTI and HDF5 in DeepReg's layouts,
//! VoxelMorph's NumPy `.npz` volumes, and 2D image files (PNG, TIFF) in the same folders.

mod affine;
mod h5;
mod nifti;
mod nifti_read;
mod npy;
mod npz;
mod raster;
mod raster_read;

use std::path::Path;

use voxreg_framework::prelude::*;

pub use self::h5::{write_h5, H5Format};
pub use self::nifti::{read_nifti, write_nifti, NiftiFormat};
pub use self::npz::{read_npz, write_npz, NpzFormat};
pub use self::raster::{read_image, RasterFormat};
pub use self::raster_read::LUMA;

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
const IDENTITY: [[f64; 4]; 4] = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

#[cfg(test)]
mod tests;

#[cfg(test)]
mod raster_tests;
