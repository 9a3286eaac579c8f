//! The configuration's loss terms, built once and applied to a batch and the method's
//! output, for training steps and validation alike.

use candle_core::Tensor;

use super::{tensor_error, EngineError};
use crate::component::{
    ComponentError, ImageLoss, LabelLoss, MethodOutput, PairBatch, Regularization,
};
use crate::config::{Config, LossTerm};
use crate::registry::ComponentKind;

/// One built term: its name (`image/lncc`, `label/dice`, `regularization/bending`), its
/// weight and the loss.
struct Term<L: ?Sized> {
    name: String,
    weight: f64,
    loss: Box<L>,
}

/// The loss terms with a weight above zero. DeepReg's rule for terms whose inputs the method
/// lacks applies: an image loss needs a predicted fixed image, a label loss labelled data and
/// a predicted label, a regularization a DDF; such terms are skipped.
pub(super) struct LossTerms {
    image: Vec<Term<dyn ImageLoss>>,
    label: Vec<Term<dyn LabelLoss>>,
    regularization: Vec<Term<dyn Regularization>>,
}

/// One term's value on a batch: the batch mean of the per-sample loss.
pub(super) struct TermValue {
    /// The term's name.
    pub name: String,
    /// Its weight in the total.
    pub weight: f64,
    /// The scalar mean over the batch (attached to the graph).
    pub value: Tensor,
}

fn built<T>(kind: &str, result: Result<T, ComponentError>) -> Result<T, EngineError> {
    result.map_err(|e| EngineError::Config(format!("{kind}: {e}")))
}

fn term_name<K: ComponentKind + ?Sized>(category: &str, term: &LossTerm<K>) -> String {
    let name = K::serialized_name(&term.config).unwrap_or_else(|| "?".to_owned());
    format!("{category}/{name}")
}

impl LossTerms {
    /// Builds every term of `config.train.loss` with a weight above zero for images with
    /// `spatial_dims` spatial axes.
    pub fn build(config: &Config, spatial_dims: usize) -> Result<Self, EngineError> {
        let loss = &config.train.loss;
        let mut image = Vec::new();
        for term in loss.image.iter().filter(|t| t.weight > 0.0) {
            image.push(Term {
                name: term_name("image", term),
                weight: term.weight,
                loss: built("image loss", term.config.build(spatial_dims))?,
            });
        }
        let mut label = Vec::new();
        for term in loss.label.iter().filter(|t| t.weight > 0.0) {
            label.push(Term {
                name: term_name("label", term),
                weight: term.weight,
                loss: built("label loss", term.config.build(spatial_dims))?,
            });
        }
        let mut regularization = Vec::new();
        for term in loss.regularization.iter().filter(|t| t.weight > 0.0) {
            regularization.push(Term {
                name: term_name("regularization", term),
                weight: term.weight,
                loss: built("regularization", term.config.build(spatial_dims))?,
            });
        }
        Ok(Self {
            image,
            label,
            regularization,
        })
    }

    /// The value of every term that applies to this batch and output, in the configuration's
    /// order (image, label, regularization). An empty result is an error: nothing to train.
    pub fn evaluate(
        &self,
        batch: &PairBatch,
        output: &MethodOutput,
    ) -> Result<Vec<TermValue>, EngineError> {
        let mut values = Vec::new();
        let mut push = |name: &str, weight: f64, value: candle_core::Result<Tensor>| {
            let value = value
                .and_then(|l| l.mean_all())
                .map_err(tensor_error(name))?;
            values.push(TermValue {
                name: name.to_owned(),
                weight,
                value,
            });
            Ok::<(), EngineError>(())
        };
        if let Some(predicted) = &output.pred_fixed_image {
            for term in &self.image {
                push(
                    &term.name,
                    term.weight,
                    term.loss.loss(&batch.fixed_image, predicted),
                )?;
            }
        }
        if let (Some(fixed), Some(predicted)) = (&batch.fixed_label, &output.pred_fixed_label) {
            for term in &self.label {
                push(&term.name, term.weight, term.loss.loss(fixed, predicted))?;
            }
        }
        if let Some(ddf) = &output.ddf {
            for term in &self.regularization {
                push(&term.name, term.weight, term.loss.loss(ddf))?;
            }
        }
        if values.is_empty() {
            return Err(EngineError::Config(
                "no loss term applies to this method and data: add a loss with a weight above 0"
                    .to_owned(),
            ));
        }
        Ok(values)
    }
}

/// The weighted total `Σ weight · value` of the terms (attached to the graph) and its value.
pub(super) fn weighted_total(values: &[TermValue]) -> Result<(Tensor, f64), EngineError> {
    let mut total: Option<Tensor> = None;
    for term in values {
        let weighted = (&term.value * term.weight).map_err(tensor_error(term.name.clone()))?;
        total = Some(match total {
            None => weighted,
            Some(sum) => (sum + weighted).map_err(tensor_error("the total loss"))?,
        });
    }
    let total = total.ok_or_else(|| EngineError::Config("no loss term".to_owned()))?;
    let value = total
        .to_scalar::<f32>()
        .map_err(tensor_error("the total loss"))? as f64;
    Ok((total, value))
}
