//! Validation after an epoch: every loss term and evaluation metric over the `valid` split,
//! each sample once, in the split's fixed order, without augmentation.

use std::sync::Arc;

use candle_core::Device;

use super::batch_metrics::add_batch_metrics;
use super::logs::{Accumulator, SplitLog};
use super::losses::LossTerms;
use super::pictures::{first_sample_pictures, Picture};
use super::{tensor_error, EngineError, Model};
use crate::component::DataLoader;
use crate::data::{to_batch, BatchStream, PipelineConfig};

/// Means of the total loss, each term (per batch) and each metric (per sample) over the
/// split that `loader` reads, and the pictures of its first sample.
pub(super) fn validate(
    model: &Model,
    terms: &LossTerms,
    loader: &Arc<dyn DataLoader>,
    pipeline: &PipelineConfig,
    device: &Device,
) -> Result<(SplitLog, Vec<Picture>), EngineError> {
    let samples = loader.epoch(0, 0);
    let pipeline = PipelineConfig {
        drop_remainder: false,
        ..pipeline.clone()
    };
    let mut accumulator = Accumulator::default();
    let mut pictures = None;
    for loaded in BatchStream::start(Arc::clone(loader), samples, &pipeline)? {
        let (batch, info) = to_batch(&loaded?, &model.shapes, device)
            .map_err(tensor_error("stacking a validation batch"))?;
        let batch = model.complete(&batch)?;
        let output = model.forward(&batch)?;
        if pictures.is_none() {
            pictures = Some(first_sample_pictures(&batch, &output)?);
        }
        let mut total = 0.0;
        for term in terms.evaluate(&batch, &output)? {
            let value = term
                .value
                .to_scalar::<f32>()
                .map_err(tensor_error(term.name.clone()))? as f64;
            accumulator.add_term(&term.name, value);
            total += match term.constant_weight {
                Some(weight) => weight * value,
                None => term
                    .weighted
                    .to_scalar::<f32>()
                    .map_err(tensor_error(term.name.clone()))? as f64,
            };
        }
        accumulator.add_loss(total);
        add_batch_metrics(&batch, &info, &output, &model.shapes, |name, value| {
            accumulator.add_metric(name, value)
        })?;
    }
    Ok((accumulator.means(), pictures.unwrap_or_default()))
}
