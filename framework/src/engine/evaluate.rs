//! Evaluating a model on a split: each pair's metrics before registration (the moving image
//! as it is) and after (the warped moving image).

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::train::{loader_threads, split_loader};
use super::{tensor_error, EngineError, Model};
use crate::component::{ImageId, Split};
use crate::data::{to_pair_batch, BatchStream, PipelineConfig};
use crate::metrics::{self, JacobianStats};
use crate::ops::{self, Align, ResizeMode};

/// The metrics of one side of the comparison (before or after registration).
#[derive(Clone, Debug, PartialEq)]
pub struct PairMetrics {
    /// Mean squared difference between the fixed image and the (warped) moving image.
    pub image_ssd: f64,
    /// Binary Dice of the fixed label and the (warped) moving label, for labelled data.
    pub label_dice: Option<f64>,
    /// Distance between their centroids in millimetres (DeepReg's TRE).
    pub label_tre_mm: Option<f64>,
}

/// One evaluated sample.
#[derive(Clone, Debug, PartialEq)]
pub struct EvaluatedPair {
    /// Moving and fixed image ids.
    pub ids: (ImageId, ImageId),
    /// The label index, for labelled data.
    pub label: Option<usize>,
    /// Metrics of the unregistered pair.
    pub before: PairMetrics,
    /// Metrics after registration.
    pub after: PairMetrics,
    /// Jacobian determinant statistics of the predicted DDF.
    pub jacobian: Option<JacobianStats>,
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

fn first_channel_data(
    tensor: &Tensor,
    sample: usize,
    channel: usize,
) -> Result<Vec<f32>, EngineError> {
    tensor
        .get(sample)
        .and_then(|t| t.get(channel))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(tensor_error("reading an output"))
}

/// Evaluates `model` on `split`, one sample at a time, in the split's fixed order.
pub fn evaluate(
    model: &Model<'_>,
    config: &crate::config::Config,
    split: Split,
) -> Result<Evaluation, EngineError> {
    let device = Device::Cpu;
    let loader = split_loader(config, split)?;
    let samples = loader.epoch(0, 0);
    let pipeline = PipelineConfig {
        batch_size: 1,
        drop_remainder: false,
        threads: loader_threads(config),
        prefetch: 2,
    };
    let fixed_shape = &model.shapes.fixed;
    let mut evaluation = Evaluation::default();
    for loaded in BatchStream::start(Arc::clone(&loader), samples, &pipeline)? {
        let loaded = loaded?;
        let (batch, info) = to_pair_batch(&loaded, &model.shapes, &device)
            .map_err(tensor_error("stacking a sample"))?;
        let output = model.forward(&batch)?;
        let resize = |t: &Tensor| {
            ops::resize(t, fixed_shape, ResizeMode::Linear, Align::HalfPixel)
                .map_err(tensor_error("resizing the moving image"))
        };
        let moving = resize(&batch.moving_image)?;
        let fixed_image = first_channel_data(&batch.fixed_image, 0, 0)?;
        let affine = info.fixed_affines[0];
        let label_metrics = |fixed: &[f32], moved: &[f32]| {
            (
                Some(metrics::binary_dice(fixed, moved)),
                metrics::centroid_distance(fixed, moved, fixed_shape, &affine).map(|(_, mm)| mm),
            )
        };
        let (before_dice, before_tre, after_dice, after_tre) = match (
            &batch.fixed_label,
            &batch.moving_label,
            &output.pred_fixed_label,
        ) {
            (Some(fixed_label), Some(moving_label), Some(predicted)) => {
                let fixed = first_channel_data(fixed_label, 0, 0)?;
                let before = first_channel_data(&resize(moving_label)?, 0, 0)?;
                let after = first_channel_data(predicted, 0, 0)?;
                let (bd, bt) = label_metrics(&fixed, &before);
                let (ad, at) = label_metrics(&fixed, &after);
                (bd, bt, ad, at)
            }
            _ => (None, None, None, None),
        };
        let after_image = match &output.pred_fixed_image {
            Some(predicted) => first_channel_data(predicted, 0, 0)?,
            None => first_channel_data(&moving, 0, 0)?,
        };
        let jacobian = match &output.ddf {
            Some(ddf) => {
                let data = ddf
                    .get(0)
                    .and_then(|d| d.flatten_all())
                    .and_then(|d| d.to_vec1::<f32>())
                    .map_err(tensor_error("reading the DDF"))?;
                metrics::jacobian_stats(&data, fixed_shape)
            }
            None => None,
        };
        evaluation.pairs.push(EvaluatedPair {
            ids: info.ids[0].clone(),
            label: info.references[0].label,
            before: PairMetrics {
                image_ssd: metrics::image_ssd(&fixed_image, &first_channel_data(&moving, 0, 0)?),
                label_dice: before_dice,
                label_tre_mm: before_tre,
            },
            after: PairMetrics {
                image_ssd: metrics::image_ssd(&fixed_image, &after_image),
                label_dice: after_dice,
                label_tre_mm: after_tre,
            },
            jacobian,
        });
    }
    Ok(evaluation)
}
