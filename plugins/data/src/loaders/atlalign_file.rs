//! One atlalign dataset file (`atlalign/ml_utils/io.py`'s layout): an HDF5 file with
//! `img` uint8 `(n, h, w)`, `deltas_xy` float `(n, h, w, 2)`, optionally `inv_deltas_xy` (the
//! same shape), `p` `(n,)` (the section's coronal position in µm), and the sample ids
//! `image_id`, `dataset_id` `(n,)`. Fields hold `(Δx, Δy)` per pixel, `x` the column, and
//! warp by pulling: `out(y, x) = img(y + Δy, x + Δx)`.

use std::path::{Path, PathBuf};

use hdf5::types::TypeDescriptor;
use ndarray::s;
use voxreg_framework::memory;
use voxreg_framework::prelude::*;

/// The images.
pub(crate) const IMAGES: &str = "img";
/// The forward fields (moving → reference).
pub(crate) const DELTAS: &str = "deltas_xy";
/// The inverse fields (reference → moving).
pub(crate) const INVERSE_DELTAS: &str = "inv_deltas_xy";
/// The coronal positions (µm).
pub(crate) const POSITIONS: &str = "p";
/// The section ids.
pub(crate) const IMAGE_IDS: &str = "image_id";
/// The dataset ids.
pub(crate) const DATASET_IDS: &str = "dataset_id";

/// A data error about `path`.
pub(crate) fn error(path: &Path, message: impl Into<String>) -> ComponentError {
    ComponentError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// An opened, checked dataset file.
#[derive(Debug)]
pub(crate) struct AtlalignFile {
    pub path: PathBuf,
    /// Number of samples.
    pub len: usize,
    /// `(h, w)`.
    pub shape: [usize; 2],
    /// Each sample's position `p`, if the file has them.
    pub positions: Option<Vec<i64>>,
    /// Each sample's `(dataset_id, image_id)`, if the file has both.
    pub ids: Option<Vec<(i64, i64)>>,
}

impl AtlalignFile {
    /// Opens `path` and checks every dataset's presence, type and shape (the voxels are read
    /// per sample later); `inverse` requires `inv_deltas_xy`. Errors name the file and key.
    pub fn open(path: &Path, inverse: bool) -> Result<Self, ComponentError> {
        if !path.exists() {
            return Err(error(
                path,
                "missing file: the atlalign data loader reads the HDF5 file `file` in each data folder",
            ));
        }
        if let Some(problem) = voxreg_framework::files::regular_file_problem(path) {
            return Err(error(path, problem));
        }
        let file =
            hdf5::File::open(path).map_err(|e| error(path, format!("cannot open HDF5: {e}")))?;
        let images = dataset(&file, path, IMAGES)?;
        let image_shape = images.shape();
        if image_shape.len() != 3 || image_shape.contains(&0) {
            return Err(error(
                path,
                format!(
                    "`{IMAGES}` must be (n, h, w) with every size at least 1, got {image_shape:?}"
                ),
            ));
        }
        require_type(
            path,
            IMAGES,
            &images,
            |t| matches!(t, TypeDescriptor::Unsigned(hdf5::types::IntSize::U1)),
            "uint8 (grey values 0–255, as atlalign stores them)",
        )?;
        let (len, shape) = (image_shape[0], [image_shape[1], image_shape[2]]);
        // A sample holds its image, target and fields as f32 plus the f64 read buffers: about
        // 64 bytes per pixel. A small chunked file can declare any size.
        let bytes = memory::element_count(&shape).and_then(|n| memory::byte_count(n, 64));
        memory::check_fits(
            bytes,
            &format!(
                "one sample of `{IMAGES}` ({} × {} pixels)",
                shape[0], shape[1]
            ),
        )
        .map_err(|message| error(path, message))?;
        let field_shape = vec![len, shape[0], shape[1], 2];
        let mut field_keys = vec![DELTAS];
        if inverse {
            field_keys.push(INVERSE_DELTAS);
        }
        for key in field_keys {
            let fields = dataset(&file, path, key)?;
            if fields.shape() != field_shape {
                return Err(error(
                    path,
                    format!(
                        "`{key}` must be (n, h, w, 2) = {field_shape:?} to match `{IMAGES}` {image_shape:?}, got {:?}",
                        fields.shape()
                    ),
                ));
            }
            require_type(
                path,
                key,
                &fields,
                |t| matches!(t, TypeDescriptor::Float(_)),
                "float (float16 in atlalign's files)",
            )?;
        }
        let positions = file
            .link_exists(POSITIONS)
            .then(|| read_integers(&file, path, POSITIONS, len))
            .transpose()?;
        let ids = if file.link_exists(IMAGE_IDS) && file.link_exists(DATASET_IDS) {
            let images = read_integers(&file, path, IMAGE_IDS, len)?;
            let datasets = read_integers(&file, path, DATASET_IDS, len)?;
            Some(datasets.into_iter().zip(images).collect())
        } else {
            None
        };
        Ok(Self {
            path: path.to_path_buf(),
            len,
            shape,
            positions,
            ids,
        })
    }

    /// Reads sample `index` with one opening of the file: its image, its forward field and,
    /// with `inverse`, its inverse field.
    pub fn sample(&self, index: usize, inverse: bool) -> Result<SampleArrays, ComponentError> {
        let file = hdf5::File::open(&self.path)
            .map_err(|e| error(&self.path, format!("cannot open HDF5: {e}")))?;
        Ok(SampleArrays {
            image: self.image(&file, index)?,
            ddf: self.field(&file, DELTAS, index)?,
            inverse_ddf: inverse
                .then(|| self.field(&file, INVERSE_DELTAS, index))
                .transpose()?,
        })
    }

    /// Sample `index`'s image as grey values in `[0, 1]` (÷ 255, as atlalign), `h · w` values.
    fn image(&self, file: &hdf5::File, index: usize) -> Result<Vec<f32>, ComponentError> {
        let images = dataset(file, &self.path, IMAGES)?;
        let plane = images
            .read_slice_2d::<u8, _>(s![index, .., ..])
            .map_err(|e| error(&self.path, format!("cannot read `{IMAGES}`[{index}]: {e}")))?;
        Ok(plane.iter().map(|&v| f32::from(v) / 255.0).collect())
    }

    /// Sample `index`'s field `key` in voxreg's DDF layout: `(2, h, w)`, component 0 the row
    /// displacement `Δy`, component 1 the column displacement `Δx`. Non-finite values are an
    /// error naming the sample.
    fn field(
        &self,
        file: &hdf5::File,
        key: &str,
        index: usize,
    ) -> Result<Vec<f32>, ComponentError> {
        let fields = dataset(file, &self.path, key)?;
        let xy = fields
            .read_slice::<f32, _, ndarray::Ix3>(s![index, .., .., ..])
            .map_err(|e| error(&self.path, format!("cannot read `{key}`[{index}]: {e}")))?;
        if let Some(bad) = xy.iter().find(|v| !v.is_finite()) {
            return Err(error(
                &self.path,
                format!("`{key}`[{index}] holds a non-finite displacement ({bad}): the sample cannot be a training target"),
            ));
        }
        let [h, w] = self.shape;
        let mut ddf = Vec::with_capacity(2 * h * w);
        for component in [1, 0] {
            ddf.extend(xy.slice(s![.., .., component]).iter().copied());
        }
        Ok(ddf)
    }
}

/// One sample's arrays, as [`AtlalignFile::sample`] reads them.
pub(crate) struct SampleArrays {
    /// Grey values in `[0, 1]`, `h · w`.
    pub image: Vec<f32>,
    /// The forward field in voxreg's layout, `2 · h · w`.
    pub ddf: Vec<f32>,
    /// The inverse field likewise, when asked for.
    pub inverse_ddf: Option<Vec<f32>>,
}

fn dataset(file: &hdf5::File, path: &Path, key: &str) -> Result<hdf5::Dataset, ComponentError> {
    if !file.link_exists(key) {
        return Err(error(
            path,
            format!("no dataset `{key}`: an atlalign file holds `{IMAGES}`, `{DELTAS}` (and `{INVERSE_DELTAS}`, `{POSITIONS}`, `{IMAGE_IDS}`, `{DATASET_IDS}`)"),
        ));
    }
    file.dataset(key)
        .map_err(|e| error(path, format!("cannot read dataset `{key}`: {e}")))
}

fn require_type(
    path: &Path,
    key: &str,
    dataset: &hdf5::Dataset,
    accept: impl Fn(&TypeDescriptor) -> bool,
    expected: &str,
) -> Result<(), ComponentError> {
    let descriptor = dataset
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| error(path, format!("`{key}` has a type voxreg cannot read: {e}")))?;
    if accept(&descriptor) {
        Ok(())
    } else {
        Err(error(
            path,
            format!("`{key}` must be {expected}, got {descriptor}"),
        ))
    }
}

/// Reads a `(len,)` dataset of whole numbers (any integer type, or floats holding whole
/// numbers).
fn read_integers(
    file: &hdf5::File,
    path: &Path,
    key: &str,
    len: usize,
) -> Result<Vec<i64>, ComponentError> {
    let values = dataset(file, path, key)?;
    if values.shape() != [len] {
        return Err(error(
            path,
            format!(
                "`{key}` must be ({len},), one value per image of `{IMAGES}`, got {:?}",
                values.shape()
            ),
        ));
    }
    let bytes = memory::byte_count(len as u64, 8);
    memory::check_fits(bytes, &format!("dataset `{key}` ({len} values)"))
        .map_err(|message| error(path, message))?;
    let floats = values
        .read_raw::<f64>()
        .map_err(|e| error(path, format!("cannot read `{key}`: {e}")))?;
    floats
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(v as i64)
            } else {
                Err(error(
                    path,
                    format!("`{key}`[{i}] = {v} is not a whole number"),
                ))
            }
        })
        .collect()
}

/// Samples to write as an atlalign dataset file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AtlalignSamples {
    /// `(h, w)`.
    pub shape: [usize; 2],
    /// Grey values, `n · h · w`.
    pub images: Vec<u8>,
    /// Forward fields in voxreg's layout, `n · 2 · h · w` (per sample `(Δrow, Δcolumn)`).
    pub ddfs: Vec<f32>,
    /// Inverse fields in voxreg's layout, the same size, or empty.
    pub inverse_ddfs: Vec<f32>,
    /// Per sample `p` (µm).
    pub positions: Vec<i64>,
    /// Per sample `image_id`.
    pub image_ids: Vec<i64>,
    /// Per sample `dataset_id`.
    pub dataset_ids: Vec<i64>,
}

impl AtlalignSamples {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.images.len() / (self.shape[0] * self.shape[1]).max(1)
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// Converts fields from voxreg's layout `(n, 2, h, w)` (row component first) to atlalign's
/// `(n, h, w, 2)` with `Δx` (the column component) first, as float16.
fn atlalign_layout(ddfs: &[f32], n: usize, [h, w]: [usize; 2]) -> Vec<half::f16> {
    let plane = h * w;
    let mut out = Vec::with_capacity(ddfs.len());
    for sample in 0..n {
        let base = sample * 2 * plane;
        for p in 0..plane {
            out.push(half::f16::from_f32(ddfs[base + plane + p]));
            out.push(half::f16::from_f32(ddfs[base + p]));
        }
    }
    out
}

/// Writes `samples` as an atlalign dataset file (`img` uint8, `deltas_xy` and
/// `inv_deltas_xy` float16 x-first, `p`, `image_id`, `dataset_id` int64), which atlalign's
/// `SupervisedGenerator` and h5py read. Written to a temporary file and renamed, so a failed
/// write leaves no partial file.
pub fn write_atlalign(path: &Path, samples: &AtlalignSamples) -> Result<(), ComponentError> {
    let n = samples.len();
    let [h, w] = samples.shape;
    let count = |what: &str, len: usize, expected: usize| {
        if len == expected {
            Ok(())
        } else {
            Err(error(
                path,
                format!("{what}: {len} values for {n} samples of {h} × {w} (expected {expected})"),
            ))
        }
    };
    count("images", samples.images.len(), n * h * w)?;
    count("fields", samples.ddfs.len(), n * 2 * h * w)?;
    if !samples.inverse_ddfs.is_empty() {
        count("inverse fields", samples.inverse_ddfs.len(), n * 2 * h * w)?;
    }
    for (what, values) in [
        ("positions", &samples.positions),
        ("image ids", &samples.image_ids),
        ("dataset ids", &samples.dataset_ids),
    ] {
        count(what, values.len(), n)?;
    }
    let temporary = voxreg_framework::files::temporary_sibling(path);
    let write = || -> hdf5::Result<()> {
        let file = hdf5::File::create(&temporary)?;
        let shape_error = |e: ndarray::ShapeError| hdf5::Error::from(e.to_string().as_str());
        let images = ndarray::Array3::from_shape_vec((n, h, w), samples.images.clone())
            .map_err(shape_error)?;
        file.new_dataset_builder()
            .with_data(&images)
            .create(IMAGES)?;
        let mut fields = vec![(DELTAS, &samples.ddfs)];
        if !samples.inverse_ddfs.is_empty() {
            fields.push((INVERSE_DELTAS, &samples.inverse_ddfs));
        }
        for (key, ddfs) in fields {
            let array =
                ndarray::Array4::from_shape_vec((n, h, w, 2), atlalign_layout(ddfs, n, [h, w]))
                    .map_err(shape_error)?;
            file.new_dataset_builder().with_data(&array).create(key)?;
        }
        for (key, values) in [
            (POSITIONS, &samples.positions),
            (IMAGE_IDS, &samples.image_ids),
            (DATASET_IDS, &samples.dataset_ids),
        ] {
            let array = ndarray::Array1::from_vec(values.clone());
            file.new_dataset_builder().with_data(&array).create(key)?;
        }
        Ok(())
    };
    write().map_err(|e| error(path, format!("cannot write HDF5: {e}")))?;
    std::fs::rename(&temporary, path).map_err(|e| {
        error(
            path,
            format!("cannot move the written file into place: {e}"),
        )
    })
}
