//! `predict` on atlalign data also writes the predicted fields as an atlalign dataset file,
//! `<split>/predictions.h5`: `img` (the moving sections, 0–255), `deltas_xy` (the predicted
//! fields, atlalign's x-first float16 layout), `inv_deltas_xy` (the `inverse` method's
//! fields, when it has them), `p`, `image_id` and `dataset_id` (read back from the sample
//! ids the `atlalign` loader gives). atlalign's `SupervisedGenerator` and h5py read it.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context};
use voxreg::candle::Tensor;
use voxreg::component::names;
use voxreg::data::{write_atlalign, AtlalignSamples};
use voxreg::engine::PairTensors;

use super::pair_outputs::pair_folder_name;

/// The predictions of a split, gathered sample by sample.
#[derive(Default)]
pub struct AtlalignExport {
    samples: AtlalignSamples,
    /// Pair folders already added (a labelled sample comes once per label).
    seen: HashSet<String>,
    /// Whether every sample so far had an inverse field.
    inverse: Option<bool>,
}

/// `(C, h, w)` → its values, checking the shape.
fn values(tensor: &Tensor, channels: usize, shape: [usize; 2]) -> anyhow::Result<Vec<f32>> {
    if tensor.dims() != [channels, shape[0], shape[1]] {
        bail!(
            "expected a 2D tensor ({channels}, {}, {}), got {:?}",
            shape[0],
            shape[1],
            tensor.dims()
        );
    }
    Ok(tensor.flatten_all()?.to_vec1::<f32>()?)
}

impl AtlalignExport {
    /// Adds one evaluated sample (once per pair).
    pub fn add(&mut self, tensors: &PairTensors) -> anyhow::Result<()> {
        if !self.seen.insert(pair_folder_name(&tensors.reference)) {
            return Ok(());
        }
        let moving = tensors
            .get(names::MOVING_IMAGE)
            .context("the sample has no moving image")?;
        let dims = moving.dims();
        if dims.len() != 3 {
            bail!("atlalign exports 2D sections, the moving image is {dims:?}");
        }
        let shape = [dims[1], dims[2]];
        if self.samples.is_empty() {
            self.samples.shape = shape;
        } else if self.samples.shape != shape {
            bail!("sections of different sizes cannot share one atlalign file");
        }
        let ddf = tensors
            .get(names::DDF)
            .context("the method predicts no `ddf`")?;
        let inverse_name = format!("{}{}", names::INVERSE_PREFIX, names::DDF);
        let inverse = tensors.get(&inverse_name);
        if *self.inverse.get_or_insert(inverse.is_some()) != inverse.is_some() {
            bail!("some samples have an inverse field and others do not");
        }
        self.samples.images.extend(
            values(moving, 1, shape)?
                .iter()
                .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8),
        );
        self.samples.ddfs.extend(values(ddf, 2, shape)?);
        if let Some(inverse) = inverse {
            self.samples.inverse_ddfs.extend(values(inverse, 2, shape)?);
        }
        // The loader's ids: `<index>_<dataset_id>_<image_id>` and `reference_p<p>`.
        let parts: Vec<i64> = tensors
            .ids
            .0
            .name
            .split('_')
            .filter_map(|part| part.parse().ok())
            .collect();
        let (dataset, image) = match parts[..] {
            [_, dataset, image] => (dataset, image),
            _ => (0, 0),
        };
        let position = tensors
            .ids
            .1
            .name
            .strip_prefix("reference_p")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        self.samples.dataset_ids.push(dataset);
        self.samples.image_ids.push(image);
        self.samples.positions.push(position);
        Ok(())
    }

    /// Writes the file (nothing for an empty split); returns whether it wrote one.
    pub fn write(&self, path: &Path) -> anyhow::Result<bool> {
        if self.samples.is_empty() {
            return Ok(false);
        }
        write_atlalign(path, &self.samples)?;
        Ok(true)
    }
}
