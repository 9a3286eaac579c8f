//! `image`: 2D image files (`.png`, `.tif`, `.tiff`), one file per image, in DeepReg's
//! folders (`<dir>/<kind>/<name>.png`, grouped data as `<dir>/<kind>/<group>/<name>.png`).
//! Decoding rules (bit depths, colour to grey, multi-page TIFF) are in `raster_read`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

use super::raster_read::{raster_shape, read_raster, RasterKind};
use super::{check_volume, data_error, image_id, IDENTITY};

/// `image`: PNG and TIFF files (8/16-bit, grey or colour → grey by BT.601 luma, multi-page
/// TIFF as a 3D volume `[height, width, pages]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RasterFormat {
    /// The pixel size per axis (rows, columns[, pages]) in mm, for the voxel-to-world
    /// affine; 1 on every axis when absent (image files carry no reliable spacing).
    #[serde(default)]
    pub voxel_size: Option<Vec<f64>>,
}

#[typetag::serialize(name = "image")]
impl FileLoaderConfig for RasterFormat {
    fn open(
        &self,
        dir: &Path,
        kind: &str,
        grouped: bool,
    ) -> Result<Box<dyn FileLoader>, ComponentError> {
        if let Some(size) = &self.voxel_size {
            if !(2..=3).contains(&size.len()) || size.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(ComponentError::invalid(
                    "file_loader `image`",
                    format!("`voxel_size` must list 2 or 3 positive sizes, got {size:?}"),
                ));
            }
        }
        let folder = dir.join(kind);
        if !folder.is_dir() {
            return Err(data_error(
                &folder,
                format!("missing folder: DeepReg's layout keeps {kind} in <dir>/{kind}/"),
            ));
        }
        let mut files = Vec::new();
        collect_raster_files(&folder, &mut files)?;
        files.sort_by(|a, b| a.0.cmp(&b.0));
        if files.is_empty() {
            return Err(data_error(&folder, "no .png, .tif or .tiff files"));
        }
        let ids = files
            .iter()
            .map(|(file, _)| {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let stem = RasterKind::of(name).map(|(_, s)| s).unwrap_or_default();
                image_id(&folder, file, stem, grouped)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(RasterFiles {
            files,
            ids,
            voxel_size: self.voxel_size.clone(),
        }))
    }

    fn has(&self, dir: &Path, kind: &str) -> bool {
        dir.join(kind).exists()
    }
}

register_component!(
    file_loader,
    "image",
    RasterFormat,
    "PNG and TIFF images (8/16-bit; colour to grey by BT.601 luma; multi-page TIFF as 3D)"
);

struct RasterFiles {
    files: Vec<(PathBuf, RasterKind)>,
    ids: Vec<ImageId>,
    voxel_size: Option<Vec<f64>>,
}

impl RasterFiles {
    fn file(&self, index: usize) -> Result<&(PathBuf, RasterKind), ComponentError> {
        self.files.get(index).ok_or_else(|| {
            ComponentError::invalid("file_loader `image`", format!("no image {index}"))
        })
    }
}

impl FileLoader for RasterFiles {
    fn ids(&self) -> &[ImageId] {
        &self.ids
    }

    fn load(&self, index: usize) -> Result<Volume, ComponentError> {
        let (path, kind) = self.file(index)?;
        read_image_file(path, *kind, self.voxel_size.as_deref())
    }

    fn shape(&self, index: usize) -> Result<Vec<usize>, ComponentError> {
        let (path, kind) = self.file(index)?;
        raster_shape(path, *kind)
    }
}

/// Reads a PNG or TIFF file (chosen by its extension) as a grey volume with a diagonal
/// affine of `voxel_size` (1 when absent). Errors name the file.
pub fn read_image(path: &Path, voxel_size: Option<&[f64]>) -> Result<Volume, ComponentError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (kind, _) = RasterKind::of(name)
        .ok_or_else(|| data_error(path, "not a .png, .tif or .tiff file name"))?;
    read_image_file(path, kind, voxel_size)
}

fn read_image_file(
    path: &Path,
    kind: RasterKind,
    voxel_size: Option<&[f64]>,
) -> Result<Volume, ComponentError> {
    let grey = read_raster(path, kind)?;
    let mut affine = IDENTITY;
    if let Some(size) = voxel_size {
        if size.len() != grey.shape.len() {
            return Err(data_error(
                path,
                format!(
                    "`voxel_size` has {} sizes but the image has {} axes (shape {:?})",
                    size.len(),
                    grey.shape.len(),
                    grey.shape
                ),
            ));
        }
        for (axis, &s) in size.iter().enumerate() {
            affine[axis][axis] = s;
        }
    }
    let volume = Volume {
        data: grey.data,
        shape: grey.shape,
        affine,
    };
    check_volume(path, "image", &volume)?;
    Ok(volume)
}

fn collect_raster_files(
    folder: &Path,
    out: &mut Vec<(PathBuf, RasterKind)>,
) -> Result<(), ComponentError> {
    let entries = std::fs::read_dir(folder).map_err(|e| data_error(folder, e.to_string()))?;
    for entry in entries {
        let path = entry.map_err(|e| data_error(folder, e.to_string()))?.path();
        if path.is_dir() {
            collect_raster_files(&path, out)?;
            continue;
        }
        match path.file_name().map(|n| n.to_str()) {
            Some(Some(name)) => {
                if let Some((kind, _)) = RasterKind::of(name) {
                    out.push((path.clone(), kind));
                }
            }
            Some(None) => {
                let lossy = path.file_name().unwrap_or_default().to_string_lossy();
                if RasterKind::of(&lossy).is_some() {
                    tracing::warn!(
                        "{}: skipped, its name is not valid UTF-8 (rename it to use it)",
                        path.display()
                    );
                }
            }
            None => {}
        }
    }
    Ok(())
}
