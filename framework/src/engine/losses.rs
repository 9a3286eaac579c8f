//! The configuration's loss terms, built once and applied to a batch and the method's
//! outputs, for training steps and validation alike.

use candle_core::Tensor;

use super::{tensor_error, EngineError};
use crate::component::{Batch, ComponentError, Loss, Tensors};
use crate::config::{Config, LossTerm, Section, TermMask, Weight};
use crate::ops::{self, Interp, Padding};
use crate::registry::ComponentKind;

/// One built term: its name (`image/lncc`, `label/dice`, `regularization/bending`), its
/// weight, its inputs and the loss.
struct Term {
    name: String,
    weight: Weight,
    inputs: Vec<String>,
    /// Whether the config named the inputs (a missing one is then an error, not a skip).
    explicit: bool,
    /// Which voxels the term compares.
    mask: Option<TermMask>,
    loss: Box<dyn Loss>,
}

/// The loss terms whose weight is not zero. DeepReg's rule for terms whose default inputs
/// the step lacks applies: an image loss needs a predicted fixed image, a label loss
/// labelled data and a predicted label, a regularization a DDF; such terms are skipped.
pub(super) struct LossTerms {
    terms: Vec<Term>,
}

/// One term's value on a batch.
pub(super) struct TermValue {
    /// The term's name.
    pub name: String,
    /// The batch mean of the per-sample loss, unweighted (attached to the graph).
    pub value: Tensor,
    /// The batch mean of the weighted per-sample loss (attached to the graph).
    pub weighted: Tensor,
    /// The weight, when it is a constant.
    pub constant_weight: Option<f64>,
}

fn term_name<K: ComponentKind + ?Sized>(section: Section, term: &LossTerm<K>) -> String {
    let name = K::serialized_name(&term.config).unwrap_or_else(|| "?".to_owned());
    format!("{}/{name}", section.key())
}

fn add<K: ComponentKind + ?Sized>(
    terms: &mut Vec<Term>,
    section: Section,
    configured: &[LossTerm<K>],
    build: impl Fn(&K) -> Result<Box<dyn Loss>, ComponentError>,
) -> Result<(), EngineError> {
    for term in configured.iter().filter(|t| !t.weight.is_zero()) {
        let base = term_name(section, term);
        // A second term of one loss in a section (e.g. VoxelMorph's bidirectional image
        // terms) is logged as `<name>_2`, and so on, so every term keeps its own column.
        let mut name = base.clone();
        let mut count = 1;
        while terms.iter().any(|t| t.name == name) {
            count += 1;
            name = format!("{base}_{count}");
        }
        let loss = build(&term.config).map_err(|source| EngineError::Build {
            what: format!("{} loss", section.key()),
            source: Box::new(source),
        })?;
        let (inputs, explicit) = match &term.inputs {
            Some(inputs) => (inputs.clone(), true),
            None => (
                section
                    .default_inputs()
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
                false,
            ),
        };
        terms.push(Term {
            name,
            weight: term.weight.clone(),
            inputs,
            explicit,
            mask: term.mask,
            loss,
        });
    }
    Ok(())
}

impl LossTerms {
    /// Builds every term of `config.train.loss` whose weight is not zero for images with
    /// `spatial_dims` spatial axes, section by section (image, label, regularization,
    /// field).
    pub fn build(config: &Config, spatial_dims: usize) -> Result<Self, EngineError> {
        let loss = &config.train.loss;
        let mut terms = Vec::new();
        add(&mut terms, Section::Image, &loss.image, |c| {
            c.build(spatial_dims)
        })?;
        add(&mut terms, Section::Label, &loss.label, |c| {
            c.build(spatial_dims)
        })?;
        add(
            &mut terms,
            Section::Regularization,
            &loss.regularization,
            |c| c.build(spatial_dims),
        )?;
        add(&mut terms, Section::Field, &loss.field, |c| {
            c.build(spatial_dims)
        })?;
        Ok(Self { terms })
    }

    /// The value of every term that applies to this batch and these outputs, in the
    /// configuration's order. An input is looked up among the outputs, then the batch. An
    /// empty result is an error: nothing to train.
    pub fn evaluate(&self, batch: &Batch, output: &Tensors) -> Result<Vec<TermValue>, EngineError> {
        let mut values = Vec::with_capacity(self.terms.len());
        'terms: for term in &self.terms {
            let mut inputs = Vec::with_capacity(term.inputs.len());
            for name in &term.inputs {
                match output.get(name).or_else(|| batch.tensors.get(name)) {
                    Some(tensor) => inputs.push(tensor),
                    None if term.explicit => {
                        return Err(EngineError::Config(format!(
                            "loss term `{}`: its input `{name}` is not in this step",
                            term.name
                        )))
                    }
                    None => continue 'terms,
                }
            }
            let context = || tensor_error(term.name.clone());
            let per_sample = match term.mask {
                None => term.loss.loss(inputs[0], inputs.get(1).copied()),
                Some(TermMask::FieldOfView) => {
                    let mask = field_of_view(batch, output).map_err(|problem| {
                        EngineError::Config(format!("loss term `{}`: {problem}", term.name))
                    })?;
                    term.loss
                        .masked_loss(inputs[0], inputs.get(1).copied(), &mask)
                }
            }
            .map_err(context())?;
            let value = per_sample.mean_all().map_err(context())?;
            let weighted = match &term.weight {
                Weight::Constant(weight) => (&value * *weight).map_err(context())?,
                Weight::Hyper {
                    hyper,
                    complement,
                    scale,
                } => {
                    let lambda = batch.hyper(hyper).ok_or_else(|| {
                        EngineError::Config(format!(
                            "loss term `{}`: its weight uses the hyperparameter `{hyper}`, which this batch does not have",
                            term.name
                        ))
                    })?;
                    let weights = Weight::per_sample(*complement, *scale, lambda)
                        .and_then(|w| w.to_dtype(per_sample.dtype()))
                        .map_err(context())?;
                    (per_sample * weights)
                        .and_then(|l| l.mean_all())
                        .map_err(context())?
                }
            };
            let constant_weight = match term.weight {
                Weight::Constant(weight) => Some(weight),
                Weight::Hyper { .. } => None,
            };
            values.push(TermValue {
                name: term.name.clone(),
                value,
                weighted,
                constant_weight,
            });
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

/// The field of view of the moving image on the fixed grid: ones on the moving grid warped
/// by the method's `ddf` (linear, zeros outside). It is not detached: the gradient also sees
/// how the field moves voxels into and out of view (with a detached mask, a B-spline stage
/// after a frozen affine stage made the masked NCC worse as it trained; see the tile demo in
/// the quick start).
///
/// # Shapes
/// Output: `(N, 1, *fixed)`.
fn field_of_view(batch: &Batch, output: &Tensors) -> Result<Tensor, String> {
    let ddf = output.get(crate::component::names::DDF).ok_or_else(|| {
        "`mask: field_of_view` needs the method's displacement field `ddf`".to_owned()
    })?;
    let moving = batch
        .moving_image()
        .map_err(|e| format!("the batch's moving image: {e}"))?;
    let ones = moving
        .narrow(1, 0, 1)
        .and_then(|m| m.ones_like())
        .and_then(|ones| ops::warp(&ones, ddf, Interp::Linear, Padding::Zeros))
        .map_err(|e| format!("the field of view: {e}"))?;
    Ok(ones)
}

/// The weighted total `Σ weighted` of the terms (attached to the graph) and its value.
pub(super) fn weighted_total(values: &[TermValue]) -> Result<(Tensor, f64), EngineError> {
    let mut total: Option<Tensor> = None;
    for term in values {
        let weighted = term.weighted.clone();
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
