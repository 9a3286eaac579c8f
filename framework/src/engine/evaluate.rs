//! Evaluating a model on a split: each pair's metrics before registration (the moving image
//! under the identity transform, sampled as the methods sample it) and after (the warped
//! moving image).

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::batch_metrics::grid_shape;
use super::train::{loader_threads, open_split};
use super::{tensor_error, EngineError, Model};
use crate::component::{names, Grid, ImageId, ImageShapes, Kind, SampleRef, Split, Tensors};
use crate::data::{to_batch, BatchStream, PipelineConfig};
use crate::metrics::{self, JacobianStats};
use crate::ops::{self, Interp, Padding};

/// The metrics of one side of the comparison (before or after registration).
#[derive(Clone, Debug, PartialEq)]
pub struct PairMetrics {
    /// Mean squared difference between the fixed image and the (warped) moving image.
    pub image_ssd: f64,
    /// Binary Dice of the fixed label and the (warped) moving label, for labelled data.
    pub label_dice: Option<f64>,
    /// Binary IoU (Jaccard index) of the same labels, for labelled data.
    pub label_iou: Option<f64>,
    /// Distance between their centroids in voxels of the fixed (resized) grid, as
    /// DeepReg's `label_tre` computes it.
    pub label_tre: Option<f64>,
    /// The same distance in millimetres (through the fixed image's affine).
    pub label_tre_mm: Option<f64>,
    /// When the data provide the true field (`true_ddf`): the mean end-point error of the
    /// predicted DDF against it in voxels of the fixed grid ([`metrics::field_error`]);
    /// before registration the true field's mean length (the error of the identity).
    pub field_error: Option<f64>,
    /// When the data provide the true inverse field (`true_inv_ddf`) and the method outputs
    /// `inv/ddf` (the `inverse` method): its mean end-point error in voxels of the moving
    /// grid; before registration the true inverse field's mean length.
    pub inverse_field_error: Option<f64>,
    /// With a true field: the mean angle (degrees) between the predicted and the true
    /// displacements ([`metrics::angular_error`]); `None` before registration (the
    /// identity has no direction).
    pub angular_error: Option<f64>,
}

/// One evaluated sample.
#[derive(Clone, Debug, PartialEq)]
pub struct EvaluatedPair {
    /// Which pair and label this is.
    pub reference: SampleRef,
    /// Moving and fixed image ids.
    pub ids: (ImageId, ImageId),
    /// The label index, for labelled data.
    pub label: Option<usize>,
    /// Metrics of the unregistered pair: the moving image under the identity transform (see
    /// [`identity_sample`]).
    pub before: PairMetrics,
    /// Metrics after registration.
    pub after: PairMetrics,
    /// Jacobian determinant statistics of the predicted DDF (`ddf`).
    pub jacobian: Option<JacobianStats>,
    /// Jacobian determinant statistics of every displacement field the method outputs
    /// (`ddf`, `inv/ddf`, `stage.0/ddf`, …), in its order.
    pub jacobians: Vec<(String, JacobianStats)>,
}

/// A split's evaluation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluation {
    /// One entry per sample (pair and label).
    pub pairs: Vec<EvaluatedPair>,
}

impl Evaluation {
    /// The mean of `metric` over the samples that have it.
    pub fn mean(&self, metric: impl Fn(&EvaluatedPair) -> Option<f64>) -> Option<f64> {
        let values: Vec<f64> = self.pairs.iter().filter_map(metric).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// One evaluated sample's inputs and outputs with the batch axis removed, for writing
/// DeepReg's per-pair outputs: the batch's tensors (the moving image and label on the fixed
/// grid under the identity transform, see [`identity_sample`]) followed by the method's
/// outputs, each with its declaration.
#[derive(Clone, Debug)]
pub struct PairTensors {
    /// Which pair and label this is.
    pub reference: SampleRef,
    /// Moving and fixed image ids.
    pub ids: (ImageId, ImageId),
    /// The fixed image's voxel-to-world affine on the (resized) fixed grid.
    pub fixed_affine: [[f64; 4]; 4],
    /// The named tensors: `(C, *spatial)` for spatial kinds, `(ndim + 1, ndim)` for
    /// affine parameters.
    pub tensors: Tensors,
}

impl PairTensors {
    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }
}

/// Evaluates `model` on `split`, one sample at a time, in the split's fixed order.
pub fn evaluate(
    model: &Model,
    config: &crate::config::Config,
    split: Split,
) -> Result<Evaluation, EngineError> {
    evaluate_each(model, config, split, 1, |_, _| Ok::<(), EngineError>(()))
}

/// Evaluates `model` on `split` in batches of `batch_size` samples, in the split's fixed
/// order, and hands each sample's metrics and tensors to `on_pair` as it goes (an error
/// from `on_pair` stops the evaluation). Backbones normalise with batch statistics, so
/// predictions can depend on `batch_size`; [`evaluate`] uses 1.
pub fn evaluate_each<E: From<EngineError>>(
    model: &Model,
    config: &crate::config::Config,
    split: Split,
    batch_size: usize,
    mut on_pair: impl FnMut(&EvaluatedPair, &PairTensors) -> Result<(), E>,
) -> Result<Evaluation, E> {
    if batch_size == 0 {
        return Err(EngineError::Config("the batch size must be at least 1".to_owned()).into());
    }
    let device = Device::Cpu;
    let loader = open_split(config, split)?;
    let samples = loader.epoch(0, 0);
    let pipeline = PipelineConfig {
        batch_size,
        drop_remainder: false,
        threads: loader_threads(config),
        prefetch: 2,
    };
    let fixed_shape = model.shapes.fixed.clone();
    let mut evaluation = Evaluation::default();
    for loaded in
        BatchStream::start(Arc::clone(&loader), samples, &pipeline).map_err(EngineError::from)?
    {
        let loaded = loaded.map_err(EngineError::from)?;
        let (batch, info) =
            to_batch(&loaded, &model.shapes, &device).map_err(tensor_error("stacking a sample"))?;
        let batch = model.complete(&batch)?;
        let output = model.forward(&batch)?;
        let mut all = batch
            .tensors
            .map(|decl, tensor| {
                if decl.kind.is_spatial() && decl.grid == Grid::Moving {
                    identity_sample(tensor, &fixed_shape)
                } else {
                    Ok(tensor.clone())
                }
            })
            .map_err(tensor_error("sampling the moving image on the fixed grid"))?;
        all.extend(output);
        for index in 0..loaded.len() {
            let tensors = PairTensors {
                reference: info.references[index].clone(),
                ids: info.ids[index].clone(),
                fixed_affine: info.fixed_affines[index],
                tensors: all
                    .map(|_, t| t.get(index))
                    .map_err(tensor_error("taking a sample out of its batch"))?,
            };
            let pair = evaluate_pair(&tensors, &model.shapes)?;
            on_pair(&pair, &tensors)?;
            evaluation.pairs.push(pair);
        }
    }
    Ok(evaluation)
}

/// A moving-grid tensor on the fixed grid as the methods' warp samples it under the identity
/// (a zero displacement): fixed voxel `p` takes the moving tensor's value at voxel `p`,
/// linearly, zero outside the moving grid — `warp(x, 0)`. This is DeepReg's convention: its
/// warping layer samples the moving image on the fixed grid in the moving image's own voxel
/// coordinates, so when the shapes differ an untrained network starts from the moving
/// image's corner, not from the moving image resized. "Before registration" is measured on
/// this, so before and after differ only by what the predicted transform does. With equal
/// shapes it is the tensor itself.
///
/// # Shapes
/// * `tensor`: `(N, C, *moving)`. Output: `(N, C, *fixed)`.
pub(crate) fn identity_sample(
    tensor: &Tensor,
    fixed_shape: &[usize],
) -> candle_core::Result<Tensor> {
    let dims = tensor.dims();
    if dims.len() < 2 || dims[2..] == *fixed_shape {
        return Ok(tensor.clone());
    }
    let mut field_shape = vec![dims[0], fixed_shape.len()];
    field_shape.extend_from_slice(fixed_shape);
    let zero = Tensor::zeros(field_shape, tensor.dtype(), tensor.device())?;
    ops::warp(tensor, &zero, Interp::Linear, Padding::Zeros)
}

/// The first channel of a `(C, *spatial)` tensor, flattened.
fn channel_data(tensor: &Tensor) -> Result<Vec<f32>, EngineError> {
    tensor
        .get(0)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(tensor_error("reading an output"))
}

/// One sample's metrics before and after registration.
fn evaluate_pair(
    tensors: &PairTensors,
    shapes: &ImageShapes,
) -> Result<EvaluatedPair, EngineError> {
    let fixed_shape = &shapes.fixed;
    let required = |name: &str| {
        tensors
            .get(name)
            .ok_or_else(|| EngineError::Config(format!("the evaluated pair has no `{name}`")))
    };
    let fixed_image = channel_data(required(names::FIXED_IMAGE)?)?;
    let moving_image = channel_data(required(names::MOVING_IMAGE)?)?;
    let affine = tensors.fixed_affine;
    let label_metrics = |fixed: &[f32], moved: &[f32]| {
        (
            Some((
                metrics::binary_dice(fixed, moved),
                metrics::binary_iou(fixed, moved),
            )),
            metrics::centroid_distance(fixed, moved, fixed_shape, &affine),
        )
    };
    let (before_dice, before_tre, after_dice, after_tre) = match (
        tensors.get(names::FIXED_LABEL),
        tensors.get(names::MOVING_LABEL),
        tensors.get(names::PRED_FIXED_LABEL),
    ) {
        (Some(fixed_label), Some(moving_label), Some(predicted)) => {
            let fixed = channel_data(fixed_label)?;
            let (bd, bt) = label_metrics(&fixed, &channel_data(moving_label)?);
            let (ad, at) = label_metrics(&fixed, &channel_data(predicted)?);
            (bd, bt, ad, at)
        }
        _ => (None, None, None, None),
    };
    let after_image = match tensors.get(names::PRED_FIXED_IMAGE) {
        Some(predicted) => channel_data(predicted)?,
        None => moving_image.clone(),
    };
    let field_values = |name: &str, field: &Tensor| -> Result<Vec<f32>, EngineError> {
        field
            .flatten_all()
            .and_then(|d| d.to_vec1::<f32>())
            .map_err(tensor_error(format!("reading `{name}`")))
    };
    let mut jacobians = Vec::new();
    let mut ddf_values = None;
    let mut inverse_values = None;
    let inverse_name = format!("{}{}", names::INVERSE_PREFIX, names::DDF);
    for (decl, field) in tensors.tensors.iter() {
        if decl.kind != Kind::Field || decl.name.starts_with("true_") {
            continue;
        }
        let data = field_values(&decl.name, field)?;
        if let Some(stats) = metrics::jacobian_stats(&data, grid_shape(shapes, decl.grid)) {
            jacobians.push((decl.name.clone(), stats));
        }
        if decl.name == names::DDF {
            ddf_values = Some(data);
        } else if decl.name == inverse_name {
            inverse_values = Some(data);
        }
    }
    let ndim = fixed_shape.len();
    let (before_field, after_field, angular) = match tensors.get(names::TRUE_DDF) {
        Some(truth) => {
            let truth = field_values(names::TRUE_DDF, truth)?;
            (
                metrics::field_error(&truth, &vec![0.0; truth.len()], ndim),
                ddf_values
                    .as_ref()
                    .and_then(|ddf| metrics::field_error(ddf, &truth, ndim)),
                ddf_values
                    .as_ref()
                    .and_then(|ddf| metrics::angular_error(ddf, &truth, ndim)),
            )
        }
        None => (None, None, None),
    };
    let (before_inverse, after_inverse) = match tensors.get(names::TRUE_INV_DDF) {
        Some(truth) => {
            let truth = field_values(names::TRUE_INV_DDF, truth)?;
            (
                metrics::field_error(&truth, &vec![0.0; truth.len()], ndim),
                inverse_values.and_then(|inv| metrics::field_error(&inv, &truth, ndim)),
            )
        }
        None => (None, None),
    };
    let jacobian = jacobians
        .iter()
        .find(|(name, _)| name == names::DDF)
        .map(|(_, stats)| stats.clone());
    Ok(EvaluatedPair {
        reference: tensors.reference.clone(),
        ids: tensors.ids.clone(),
        label: tensors.reference.label,
        before: PairMetrics {
            image_ssd: metrics::image_ssd(&fixed_image, &moving_image),
            label_dice: before_dice.map(|(dice, _)| dice),
            label_iou: before_dice.map(|(_, iou)| iou),
            label_tre: before_tre.map(|(voxels, _)| voxels),
            label_tre_mm: before_tre.map(|(_, mm)| mm),
            field_error: before_field,
            inverse_field_error: before_inverse,
            angular_error: None,
        },
        after: PairMetrics {
            image_ssd: metrics::image_ssd(&fixed_image, &after_image),
            label_dice: after_dice.map(|(dice, _)| dice),
            label_iou: after_dice.map(|(_, iou)| iou),
            label_tre: after_tre.map(|(voxels, _)| voxels),
            label_tre_mm: after_tre.map(|(_, mm)| mm),
            field_error: after_field,
            inverse_field_error: after_inverse,
            angular_error: angular,
        },
        jacobian,
        jacobians,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32], channels: usize) -> Tensor {
        Tensor::from_vec(values.to_vec(), (channels, 2, 2, 2), &Device::Cpu).unwrap()
    }

    /// A pair on a 2×2×2 grid with 2 mm voxels: the moving image is black, the prediction
    /// equals the fixed image; the moving label sits one voxel (2 mm) off the fixed label
    /// along axis 1, the predicted label on it.
    fn pair() -> PairTensors {
        let fixed: Vec<f32> = (0..8).map(|v| v as f32 / 8.0).collect();
        let fixed_label = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let moving_label = [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let mut affine = [[0.0; 4]; 4];
        for (axis, row) in affine.iter_mut().enumerate() {
            row[axis] = if axis < 3 { 2.0 } else { 1.0 };
        }
        PairTensors {
            reference: SampleRef {
                moving: 0,
                fixed: 0,
                label: Some(1),
            },
            ids: (
                ImageId {
                    group: None,
                    name: "m".to_owned(),
                },
                ImageId {
                    group: None,
                    name: "f".to_owned(),
                },
            ),
            fixed_affine: affine,
            tensors: {
                let mut t = Tensors::new();
                let fixed_grid = Grid::Fixed;
                t.put(
                    names::MOVING_IMAGE,
                    Kind::Image,
                    fixed_grid,
                    tensor(&[0.0; 8], 1),
                );
                t.put(
                    names::FIXED_IMAGE,
                    Kind::Image,
                    fixed_grid,
                    tensor(&fixed, 1),
                );
                t.put(
                    names::MOVING_LABEL,
                    Kind::Label,
                    fixed_grid,
                    tensor(&moving_label, 1),
                );
                t.put(
                    names::FIXED_LABEL,
                    Kind::Label,
                    fixed_grid,
                    tensor(&fixed_label, 1),
                );
                t.put(names::DDF, Kind::Field, fixed_grid, tensor(&[0.0; 24], 3));
                t.put(
                    names::PRED_FIXED_IMAGE,
                    Kind::Image,
                    fixed_grid,
                    tensor(&fixed, 1),
                );
                t.put(
                    names::PRED_FIXED_LABEL,
                    Kind::Label,
                    fixed_grid,
                    tensor(&fixed_label, 1),
                );
                t
            },
        }
    }

    fn shapes() -> ImageShapes {
        ImageShapes {
            moving: vec![2, 2, 2],
            fixed: vec![2, 2, 2],
        }
    }

    #[test]
    fn a_pair_is_measured_before_and_after_registration() {
        let evaluated = evaluate_pair(&pair(), &shapes()).unwrap();
        assert_eq!(evaluated.label, Some(1));
        assert_eq!(evaluated.reference.label, Some(1));
        // Σ (i/8)² over i < 8 = 140/64, averaged over 8 voxels.
        assert!((evaluated.before.image_ssd - 140.0 / 512.0).abs() < 1e-9);
        assert_eq!(evaluated.after.image_ssd, 0.0);
        assert!(evaluated.before.label_dice.unwrap() < 1e-5);
        assert!((evaluated.after.label_dice.unwrap() - 1.0).abs() < 1e-9);
        assert!((evaluated.before.label_tre_mm.unwrap() - 2.0).abs() < 1e-9);
        assert!(evaluated.before.label_tre.unwrap() > 0.0);
        assert_eq!(evaluated.after.label_tre, Some(0.0));
        assert_eq!(evaluated.after.label_tre_mm, Some(0.0));
        assert_eq!(evaluated.jacobian.unwrap().folding_count, 0);
        assert_eq!(evaluated.jacobians.len(), 1);
        assert_eq!(evaluated.after.field_error, None, "no true field");
    }

    #[test]
    fn a_true_field_gives_the_field_error_before_and_after() {
        let mut tensors = pair();
        // The truth moves every voxel by (0, 3, 4): length 5; the prediction by (0, 3, 0).
        let truth: Vec<f32> = [0.0, 3.0, 4.0].iter().flat_map(|&v| [v; 8]).collect();
        let ddf: Vec<f32> = [0.0, 3.0, 0.0].iter().flat_map(|&v| [v; 8]).collect();
        tensors
            .tensors
            .put(names::TRUE_DDF, Kind::Field, Grid::Fixed, tensor(&truth, 3));
        tensors
            .tensors
            .put(names::DDF, Kind::Field, Grid::Fixed, tensor(&ddf, 3));
        let evaluated = evaluate_pair(&tensors, &shapes()).unwrap();
        assert_eq!(evaluated.before.field_error, Some(5.0));
        assert_eq!(evaluated.after.field_error, Some(4.0));
        assert_eq!(
            evaluated.jacobians.len(),
            1,
            "the true field is not measured"
        );
    }

    #[test]
    fn the_identity_samples_the_moving_grid_in_its_own_voxel_coordinates() {
        let moving = Tensor::arange(0f32, 9.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 3, 3))
            .unwrap();
        let smaller = identity_sample(&moving, &[2, 2]).unwrap();
        assert_eq!(smaller.dims(), [1, 1, 2, 2]);
        assert_eq!(
            smaller.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 1.0, 3.0, 4.0],
            "the moving image's corner, not the image resized"
        );
        let larger = identity_sample(&moving, &[4, 4]).unwrap();
        assert_eq!(
            larger.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 5.0, 0.0, 6.0, 7.0, 8.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            "zero outside the moving grid"
        );
        let same = identity_sample(&moving, &[3, 3]).unwrap();
        assert_eq!(
            same.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            (0..9).map(|v| v as f32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn without_a_prediction_the_moving_image_is_the_after_image() {
        let mut tensors = pair();
        tensors.tensors.remove(names::PRED_FIXED_IMAGE);
        tensors.tensors.remove(names::PRED_FIXED_LABEL);
        tensors.tensors.remove(names::DDF);
        let evaluated = evaluate_pair(&tensors, &shapes()).unwrap();
        assert_eq!(evaluated.after.image_ssd, evaluated.before.image_ssd);
        assert_eq!(evaluated.after.label_dice, None);
        assert!(evaluated.jacobian.is_none());
    }
}
