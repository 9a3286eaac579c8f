//! Evaluation metrics of a batch after registration, and the check that the network's outputs
//! are finite (so a NaN is reported where it first appears, before it reaches the losses).

use candle_core::Tensor;

use super::collapse::{is_constant, out_of_view_fraction, CONSTANT_WARPED, OUT_OF_VIEW};
use super::{tensor_error, EngineError};
use crate::component::{names, Batch, Grid, ImageShapes, Kind, Tensors};
use crate::data::BatchInfo;
use crate::metrics;

/// One batch element's values of `tensor` (`(N, C, *spatial)`), all channels, flattened.
fn element(tensor: &Tensor, index: usize) -> Result<Vec<f32>, EngineError> {
    tensor
        .get(index)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(tensor_error("reading an output"))
}

/// The metric name of a displacement field's folding fraction: `ddf_folding_fraction`,
/// `inv/ddf_folding_fraction`, `stage.0/ddf_folding_fraction`.
pub(super) fn folding_metric(field: &str) -> String {
    format!("{field}_folding_fraction")
}

/// The spatial shape of a tensor on `grid`.
pub(super) fn grid_shape(shapes: &ImageShapes, grid: Grid) -> &[usize] {
    match grid {
        Grid::Moving => &shapes.moving,
        Grid::Fixed | Grid::None => &shapes.fixed,
    }
}

/// Adds each element's metrics after registration to `add(name, value)`:
/// * `image_ssd`: mean squared difference of the fixed and the predicted fixed image;
/// * `label_binary_dice`: binary Dice of the fixed and the predicted label (labelled data);
/// * `label_tre`, `label_tre_mm`: distance of their centroids in voxels of the fixed grid and
///   in millimetres (when neither is empty);
/// * `ddf_error`: mean end-point error of the DDF against the data's true field, in voxels
///   (when the loader provides `true_ddf`); `inv/ddf_error` likewise for the `inverse`
///   method's `inv/ddf` against `true_inv_ddf`;
///
/// the names and definitions of predict's `metrics.csv`.
/// * with a DDF and a warped image, the collapse measures (see `collapse`):
///   `out_of_view_fraction` and `constant_warped_fraction` (0 or 1 per sample);
/// * `<field>_folding_fraction` for every displacement field the method outputs (by its
///   declaration): the fraction of voxels whose Jacobian determinant is ≤ 0.
pub(super) fn add_batch_metrics(
    batch: &Batch,
    info: &BatchInfo,
    output: &Tensors,
    shapes: &ImageShapes,
    mut add: impl FnMut(&str, f64),
) -> Result<(), EngineError> {
    let fixed_image = batch
        .fixed_image()
        .map_err(tensor_error("the batch's fixed image"))?;
    let fields: Vec<(String, &Tensor, &[usize])> = output
        .iter()
        .filter(|(decl, _)| decl.kind == Kind::Field)
        .map(|(decl, tensor)| {
            (
                folding_metric(&decl.name),
                tensor,
                grid_shape(shapes, decl.grid),
            )
        })
        .collect();
    let inverse = output.get(&format!("{}{}", names::INVERSE_PREFIX, names::DDF));
    for index in 0..info.ids.len() {
        let fixed = element(fixed_image, index)?;
        if let Some(predicted) = output.get(names::PRED_FIXED_IMAGE) {
            add(
                "image_ssd",
                metrics::image_ssd(&fixed, &element(predicted, index)?),
            );
        }
        if let (Some(label), Some(predicted)) =
            (batch.fixed_label(), output.get(names::PRED_FIXED_LABEL))
        {
            let (label, predicted) = (element(label, index)?, element(predicted, index)?);
            add(
                "label_binary_dice",
                metrics::binary_dice(&label, &predicted),
            );
            let affine = &info.fixed_affines[index];
            if let Some((voxels, mm)) =
                metrics::centroid_distance(&label, &predicted, &shapes.fixed, affine)
            {
                add("label_tre", voxels);
                add("label_tre_mm", mm);
            }
        }
        let ddf = output
            .get(names::DDF)
            .map(|ddf| element(ddf, index))
            .transpose()?;
        if let (Some(ddf), Some(predicted)) = (&ddf, output.get(names::PRED_FIXED_IMAGE)) {
            add(
                OUT_OF_VIEW,
                out_of_view_fraction(ddf, &shapes.fixed, &shapes.moving),
            );
            let flat = is_constant(&element(predicted, index)?);
            add(CONSTANT_WARPED, f64::from(u8::from(flat)));
        }
        if let (Some(truth), Some(ddf)) = (batch.tensors.get(names::TRUE_DDF), &ddf) {
            let ndim = shapes.fixed.len();
            if let Some(error) = metrics::field_error(ddf, &element(truth, index)?, ndim) {
                add("ddf_error", error);
            }
        }
        if let (Some(truth), Some(inv)) = (batch.tensors.get(names::TRUE_INV_DDF), inverse) {
            let ndim = shapes.moving.len();
            let (truth, inv) = (element(truth, index)?, element(inv, index)?);
            if let Some(error) = metrics::field_error(&inv, &truth, ndim) {
                add("inv/ddf_error", error);
            }
        }
        for (metric, field, shape) in &fields {
            if let Some(stats) = metrics::jacobian_stats(&element(field, index)?, shape) {
                add(metric, stats.folding_fraction);
            }
        }
    }
    Ok(())
}

/// The first output of the method, in its order, holding a NaN or an infinity, with that
/// value.
pub(super) fn first_non_finite_output(
    output: &Tensors,
) -> Result<Option<(String, f32)>, EngineError> {
    for (decl, tensor) in output.iter() {
        if let Some(value) = first_non_finite(tensor)? {
            return Ok(Some((decl.name.clone(), value)));
        }
    }
    Ok(None)
}

/// The first NaN or infinity in `tensor`, if any.
pub(super) fn first_non_finite(tensor: &Tensor) -> Result<Option<f32>, EngineError> {
    let values = tensor
        .flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(tensor_error("checking for NaN"))?;
    Ok(values.into_iter().find(|v| !v.is_finite()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::ImageId;
    use candle_core::Device;

    fn id(name: &str) -> ImageId {
        ImageId {
            group: None,
            name: name.to_owned(),
        }
    }

    #[test]
    fn the_first_non_finite_output_is_named() {
        let device = Device::Cpu;
        let finite = Tensor::zeros((1, 3, 2, 2, 2), candle_core::DType::F32, &device).unwrap();
        let bad = Tensor::new(&[[0.0f32, f32::NAN]], &device).unwrap();
        let mut output = Tensors::new();
        output.put(names::DDF, Kind::Field, Grid::Fixed, finite);
        assert_eq!(first_non_finite_output(&output).unwrap(), None);
        output.put(names::PRED_FIXED_IMAGE, Kind::Image, Grid::Fixed, bad);
        let (name, value) = first_non_finite_output(&output).unwrap().unwrap();
        assert_eq!(name, "pred_fixed_image");
        assert!(value.is_nan());
        let infinite = Tensor::new(&[1.0f32, f32::NEG_INFINITY], &device).unwrap();
        assert_eq!(
            first_non_finite(&infinite).unwrap(),
            Some(f32::NEG_INFINITY)
        );
    }

    #[test]
    fn metrics_of_a_perfect_prediction() {
        let device = Device::Cpu;
        let image = Tensor::arange(0f32, 8.0, &device)
            .unwrap()
            .reshape((1, 1, 2, 2, 2))
            .unwrap();
        let label = Tensor::new(&[1f32, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], &device)
            .unwrap()
            .reshape((1, 1, 2, 2, 2))
            .unwrap();
        let mut batch = Batch::pair(
            image.clone(),
            image.clone(),
            Some(label.clone()),
            Some(label.clone()),
        );
        let zeros = Tensor::zeros((1, 3, 2, 2, 2), candle_core::DType::F32, &device).unwrap();
        let ones = Tensor::ones((1, 3, 2, 2, 2), candle_core::DType::F32, &device).unwrap();
        batch
            .tensors
            .put(names::TRUE_DDF, Kind::Field, Grid::Fixed, ones);
        let mut output = Tensors::new();
        output.put(names::DDF, Kind::Field, Grid::Fixed, zeros.clone());
        output.put(names::PRED_FIXED_IMAGE, Kind::Image, Grid::Fixed, image);
        output.put(names::PRED_FIXED_LABEL, Kind::Label, Grid::Fixed, label);
        output.put("inv/ddf", Kind::Field, Grid::Moving, zeros);
        let identity = [
            [2.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let info = BatchInfo {
            references: vec![],
            ids: vec![(id("moving"), id("fixed"))],
            fixed_affines: vec![identity],
        };
        let mut seen = Vec::new();
        let shapes = ImageShapes {
            moving: vec![2, 2, 2],
            fixed: vec![2, 2, 2],
        };
        add_batch_metrics(&batch, &info, &output, &shapes, |n, v| {
            seen.push((n.to_owned(), v))
        })
        .unwrap();
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "image_ssd",
                "label_binary_dice",
                "label_tre",
                "label_tre_mm",
                "out_of_view_fraction",
                "constant_warped_fraction",
                "ddf_error",
                "ddf_folding_fraction",
                "inv/ddf_folding_fraction"
            ]
        );
        assert_eq!((seen[4].1, seen[5].1), (0.0, 0.0), "in view, not flat");
        assert!((seen[6].1 - 3f64.sqrt()).abs() < 1e-9, "|(1, 1, 1)|");
        assert_eq!(seen[0].1, 0.0);
        assert!((seen[1].1 - 1.0).abs() < 1e-9);
        assert_eq!(seen[2].1, 0.0);
        assert_eq!(seen[3].1, 0.0);
        assert_eq!(seen[7].1, 0.0);
    }
}
