//! File format configs (`dataset.<split>.format`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

/// `nifti`: `.nii` / `.nii.gz` files in DeepReg's folder layout.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NiftiFormat {}

#[typetag::serialize(name = "nifti")]
impl FileLoaderConfig for NiftiFormat {
    fn open(
        &self,
        _dir: &Path,
        _kind: &str,
        _grouped: bool,
    ) -> Result<Box<dyn FileLoader>, ComponentError> {
        Err(ComponentError::not_implemented("file_loader `nifti`"))
    }
}

register_component!(
    file_loader,
    "nifti",
    NiftiFormat,
    "NIfTI-1 volumes (.nii, .nii.gz), one file per image"
);

/// `h5`: one HDF5 file per kind, one dataset per image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct H5Format {}

#[typetag::serialize(name = "h5")]
impl FileLoaderConfig for H5Format {
    fn open(
        &self,
        _dir: &Path,
        _kind: &str,
        _grouped: bool,
    ) -> Result<Box<dyn FileLoader>, ComponentError> {
        Err(ComponentError::not_implemented("file_loader `h5`"))
    }
}

register_component!(
    file_loader,
    "h5",
    H5Format,
    "HDF5 files (moving_images.h5, …), one dataset per image"
);
