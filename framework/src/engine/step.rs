//! One training step: a model with its loss terms and optimiser, stepped on a batch.

use candle_core::Device;

use super::batch_metrics::{first_non_finite, first_non_finite_output};
use super::losses::{weighted_total, LossTerms};
use super::{tensor_error, EngineError, Model};
use crate::component::{Batch, Optimizer, Tensors};
use crate::config::Config;

/// The configuration's model (weights drawn from a seed), loss terms and optimiser, ready to
/// take training steps. [`train`](super::train) drives one over the data; benchmarks and
/// custom loops can drive one directly.
pub struct Trainer {
    /// The model being trained.
    pub model: Model,
    pub(super) terms: LossTerms,
    pub(super) optimizer: Box<dyn Optimizer>,
}

/// What a step computed.
pub struct StepOutcome {
    /// The weighted total loss before the update.
    pub loss: f64,
    /// Each loss term's value (unweighted), in the configuration's order.
    pub terms: Vec<(String, f64)>,
    /// The method's outputs before the update (for metrics).
    pub output: Tensors,
}

/// Where a NaN or an infinity first appeared in a step.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    /// `the network's output `ddf``, `loss term `image/lncc``, `the total loss`,
    /// `the gradient of weight `…``.
    pub place: String,
    /// The value.
    pub value: f64,
}

/// Why a step failed.
#[derive(Debug)]
pub enum StepError {
    /// A NaN or an infinity appeared; the weights were not updated.
    NonFinite(NonFinite),
    /// Anything else.
    Engine(Box<EngineError>),
}

impl From<EngineError> for StepError {
    fn from(error: EngineError) -> Self {
        Self::Engine(Box::new(error))
    }
}

impl StepError {
    /// The engine error, with the epoch and step for a NaN report.
    pub fn at(self, epoch: usize, step: usize) -> EngineError {
        match self {
            Self::NonFinite(NonFinite { place, value }) => EngineError::NonFinite {
                epoch,
                step,
                place,
                value,
            },
            Self::Engine(error) => *error,
        }
    }
}

fn non_finite(place: String, value: f64) -> StepError {
    StepError::NonFinite(NonFinite { place, value })
}

impl Trainer {
    /// Builds the model with weights drawn from `seed`, the loss terms whose weight is not
    /// zero, and the optimiser over the model's trainable (not frozen) weights, in name
    /// order.
    pub fn new(config: &Config, device: &Device, seed: u64) -> Result<Self, EngineError> {
        let model = Model::build_seeded(config, device, seed)?;
        let terms = LossTerms::build(config, model.shapes.fixed.len())?;
        let optimizer = config.train.optimizer.build(model.trainable())?;
        Ok(Self {
            model,
            terms,
            optimizer,
        })
    }

    /// One step: run the method, check its outputs are finite, compute the loss terms (each
    /// finite), back-propagate the weighted total, check every weight's gradient is finite,
    /// and update the weights. On a NaN or an infinity nothing is updated.
    pub fn step(&mut self, batch: &Batch) -> Result<StepOutcome, StepError> {
        let output = self.model.forward(batch)?;
        if let Some((name, value)) = first_non_finite_output(&output)? {
            let name = name.to_owned();
            return Err(non_finite(
                format!("the network's output `{name}`"),
                value.into(),
            ));
        }
        let values = self.terms.evaluate(batch, &output)?;
        let mut terms = Vec::with_capacity(values.len());
        for term in &values {
            let value = term
                .value
                .to_scalar::<f32>()
                .map_err(tensor_error(term.name.clone()))? as f64;
            if !value.is_finite() {
                return Err(non_finite(format!("loss term `{}`", term.name), value));
            }
            terms.push((term.name.clone(), value));
        }
        let (total, loss) = weighted_total(&values)?;
        if !loss.is_finite() {
            return Err(non_finite("the total loss".to_owned(), loss));
        }
        let trainable = self.model.named_trainable();
        let grads = super::gradients::backward_detached(&total, trainable.iter().map(|(_, v)| v))
            .map_err(tensor_error("back-propagation"))?;
        for (name, var) in trainable {
            if let Some(gradient) = grads.get(&var) {
                if let Some(value) = first_non_finite(gradient)? {
                    return Err(non_finite(
                        format!("the gradient of weight `{name}`"),
                        value.into(),
                    ));
                }
            }
        }
        self.optimizer
            .step(&grads)
            .map_err(tensor_error("the optimiser step"))?;
        Ok(StepOutcome {
            loss,
            terms,
            output,
        })
    }
}
