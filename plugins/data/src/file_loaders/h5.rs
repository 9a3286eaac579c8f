//! `h5`: one HDF5 file per kind (`<dir>/moving_images.h5`, `<dir>/images.h5`, …) holding one
//! dataset per image at its root, keyed by the image's name; grouped data uses keys
//! `group-<g>-<i>`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use voxreg_framework::memory;
use voxreg_framework::prelude::*;

use super::{check_volume, data_error, IDENTITY};

/// `h5`: HDF5 files, one dataset per image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct H5Format {}

#[typetag::serialize(name = "h5")]
impl FileLoaderConfig for H5Format {
    fn open(
        &self,
        dir: &Path,
        kind: &str,
        grouped: bool,
    ) -> Result<Box<dyn FileLoader>, ComponentError> {
        let path = dir.join(format!("{kind}.h5"));
        if !path.exists() {
            return Err(data_error(
                &path,
                format!("missing file: DeepReg's layout keeps {kind} in <dir>/{kind}.h5"),
            ));
        }
        if let Some(problem) = voxreg_framework::files::regular_file_problem(&path) {
            return Err(data_error(&path, problem));
        }
        let file = hdf5::File::open(&path)
            .map_err(|e| data_error(&path, format!("cannot open HDF5: {e}")))?;
        let mut keys = file
            .member_names()
            .map_err(|e| data_error(&path, format!("cannot list HDF5 keys: {e}")))?;
        keys.sort();
        if keys.is_empty() {
            return Err(data_error(&path, "the HDF5 file holds no datasets"));
        }
        let ids = keys
            .iter()
            .map(|key| key_id(&path, key, grouped))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(H5Datasets { path, keys, ids }))
    }

    fn has(&self, dir: &Path, kind: &str) -> bool {
        dir.join(format!("{kind}.h5")).exists()
    }
}

register_component!(
    file_loader,
    "h5",
    H5Format,
    "HDF5 files (moving_images.h5, …), one dataset per image"
);

struct H5Datasets {
    path: PathBuf,
    keys: Vec<String>,
    ids: Vec<ImageId>,
}

impl FileLoader for H5Datasets {
    fn ids(&self) -> &[ImageId] {
        &self.ids
    }

    fn load(&self, index: usize) -> Result<Volume, ComponentError> {
        let key = self.keys.get(index).ok_or_else(|| {
            ComponentError::invalid("file_loader `h5`", format!("no image {index}"))
        })?;
        let what = format!("dataset `{key}`");
        let file = hdf5::File::open(&self.path)
            .map_err(|e| data_error(&self.path, format!("cannot open HDF5: {e}")))?;
        let dataset = file
            .dataset(key)
            .map_err(|e| data_error(&self.path, format!("cannot read {what}: {e}")))?;
        check_declared_size(&self.path, key, &dataset.shape())?;
        let array = dataset
            .read_dyn::<f32>()
            .map_err(|e| data_error(&self.path, format!("cannot read {what}: {e}")))?;
        let volume = Volume {
            shape: array.shape().to_vec(),
            data: array.iter().copied().collect(),
            affine: IDENTITY,
        };
        check_volume(&self.path, &what, &volume)?;
        Ok(volume)
    }

    fn shape(&self, index: usize) -> Result<Vec<usize>, ComponentError> {
        let key = self.keys.get(index).ok_or_else(|| {
            ComponentError::invalid("file_loader `h5`", format!("no image {index}"))
        })?;
        let shape = hdf5::File::open(&self.path)
            .and_then(|file| file.dataset(key))
            .map(|dataset| dataset.shape())
            .map_err(|e| data_error(&self.path, format!("cannot read dataset `{key}`: {e}")))?;
        check_declared_size(&self.path, key, &shape)?;
        Ok(shape)
    }
}

/// Refuses a dataset whose declared shape needs more memory than is available (a small
/// chunked file can declare any size), naming the key; reading it takes the f32 array and the
/// volume's copy of it.
fn check_declared_size(path: &Path, key: &str, shape: &[usize]) -> Result<(), ComponentError> {
    let bytes = memory::element_count(shape).and_then(|n| memory::byte_count(n, 8));
    memory::check_fits(bytes, &format!("dataset `{key}` (shape {shape:?})"))
        .map_err(|message| data_error(path, message))
}

/// The id of a key; grouped keys must read `group-<g>-<i>`.
fn key_id(path: &Path, key: &str, grouped: bool) -> Result<ImageId, ComponentError> {
    if !grouped {
        return Ok(ImageId {
            group: None,
            name: key.to_owned(),
        });
    }
    let parsed = key
        .strip_prefix("group-")
        .and_then(|rest| rest.rsplit_once('-'))
        .filter(|(group, index)| !group.is_empty() && !index.is_empty());
    match parsed {
        Some((group, index)) => Ok(ImageId {
            group: Some(group.to_owned()),
            name: index.to_owned(),
        }),
        None => Err(data_error(
            path,
            format!("grouped HDF5 key `{key}` does not read `group-<group>-<index>`"),
        )),
    }
}

/// Writes volumes into an HDF5 file as datasets at its root, one per `(key, volume)`, f32.
/// Used by tests and dataset-preparation tools. Written to a temporary file and renamed, so a
/// failed write leaves no partial file.
pub fn write_h5(path: &Path, entries: &[(String, Volume)]) -> Result<(), ComponentError> {
    let temporary = voxreg_framework::files::temporary_sibling(path);
    let write = || -> hdf5::Result<()> {
        let file = hdf5::File::create(&temporary)?;
        for (key, volume) in entries {
            let array =
                ::ndarray::ArrayD::from_shape_vec(volume.shape.clone(), volume.data.clone())
                    .map_err(|e| hdf5::Error::from(e.to_string().as_str()))?;
            file.new_dataset_builder()
                .with_data(&array)
                .create(key.as_str())?;
        }
        Ok(())
    };
    write().map_err(|e| data_error(path, format!("cannot write HDF5: {e}")))?;
    std::fs::rename(&temporary, path).map_err(|e| {
        data_error(
            path,
            format!("cannot move the written file into place: {e}"),
        )
    })
}
