//! Classical (iterative) registration of one pair, without a network: a transform — a dense
//! displacement field or an affine matrix — is optimised directly to minimise the
//! configuration's loss terms, as DeepReg's classical demos do.

use candle_core::{Device, Tensor, Var};

use super::batch_metrics::first_non_finite;
use super::losses::{weighted_total, LossTerms};
use super::{tensor_error, EngineError};
use crate::component::{names, Batch, Grid, Kind, Tensors};
use crate::config::Config;
use crate::ops::{self, Interp, Padding};

/// What classical registration optimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// A dense displacement field `(1, ndim, *fixed)` in voxels, starting at zero.
    Ddf,
    /// An affine matrix `(1, ndim + 1, ndim)` (DeepReg's layout), starting at the identity.
    Affine,
}

/// The optimised transform and the loss at every iteration.
#[derive(Debug)]
pub struct Registration {
    /// The final DDF `(1, ndim, *fixed)`.
    pub ddf: Tensor,
    /// The final affine matrix, for [`Transform::Affine`].
    pub theta: Option<Tensor>,
    /// The final `ddf` and the moving image (and labels) warped by it
    /// (`pred_fixed_image`, `pred_fixed_label`).
    pub output: Tensors,
    /// The weighted total loss before each update.
    pub losses: Vec<f64>,
}

/// The DDF of the current parameters.
fn current_ddf(
    transform: Transform,
    parameters: &Var,
    shape: &[usize],
) -> candle_core::Result<Tensor> {
    match transform {
        Transform::Ddf => Ok(parameters.as_tensor().clone()),
        Transform::Affine => ops::affine_to_ddf(parameters.as_tensor(), shape),
    }
}

/// The moving image and labels warped by `ddf` (linear, zeros outside, as the methods warp).
fn warped(batch: &Batch, ddf: Tensor) -> candle_core::Result<Tensors> {
    let warp = |t: &Tensor| ops::warp(t, &ddf, Interp::Linear, Padding::Zeros);
    let mut output = Tensors::new();
    let image = warp(batch.moving_image()?)?;
    let label = batch.moving_label().map(warp).transpose()?;
    output.put(names::DDF, Kind::Field, Grid::Fixed, ddf);
    output.put(names::PRED_FIXED_IMAGE, Kind::Image, Grid::Fixed, image);
    if let Some(label) = label {
        output.put(names::PRED_FIXED_LABEL, Kind::Label, Grid::Fixed, label);
    }
    Ok(output)
}

/// Registers `batch` (one pair, moving already on the fixed grid: `(1, 1, *fixed)` images and
/// optional labels) by `iterations` steps of the configuration's optimiser (`train.optimizer`)
/// on its loss terms (`train.loss`: image losses, label losses when labels are given,
/// regularization of the DDF). `on_iteration` sees each iteration's total loss.
///
/// Errors: no loss term applies, a term fails, or the loss becomes NaN or infinite (named
/// with the iteration).
pub fn register(
    config: &Config,
    batch: &Batch,
    transform: Transform,
    iterations: usize,
    on_iteration: &mut dyn FnMut(usize, f64),
) -> Result<Registration, EngineError> {
    let device = Device::Cpu;
    let dims = batch
        .fixed_image()
        .map_err(tensor_error("the pair's fixed image"))?
        .dims();
    let shape = dims.get(2..).unwrap_or_default().to_vec();
    if dims.first() != Some(&1) || !(2..=3).contains(&shape.len()) {
        return Err(EngineError::Config(format!(
            "classical registration takes one 2D or 3D pair, (1, 1, *spatial); got {dims:?}"
        )));
    }
    let ndim = shape.len();
    let terms = LossTerms::build(config, ndim)?;
    let initial = match transform {
        Transform::Ddf => {
            let mut field = vec![1, ndim];
            field.extend_from_slice(&shape);
            Tensor::zeros(field, candle_core::DType::F32, &device)
        }
        Transform::Affine => ops::identity_theta(1, ndim, candle_core::DType::F32, &device),
    }
    .map_err(tensor_error("the initial transform"))?;
    let parameters = Var::from_tensor(&initial).map_err(tensor_error("the initial transform"))?;
    let mut optimizer = config.train.optimizer.build(vec![parameters.clone()])?;
    let mut losses = Vec::with_capacity(iterations);
    for iteration in 1..=iterations {
        let ddf = current_ddf(transform, &parameters, &shape)
            .map_err(tensor_error("the transform's DDF"))?;
        let output = warped(batch, ddf).map_err(tensor_error("warping the moving image"))?;
        let (total, loss) = weighted_total(&terms.evaluate(batch, &output)?)?;
        if !loss.is_finite() {
            return Err(EngineError::Config(format!(
                "the loss became {loss} at iteration {iteration}: lower the learning rate (train.optimizer.learning_rate)"
            )));
        }
        let grads = super::gradients::backward_detached(&total, [&parameters])
            .map_err(tensor_error("back-propagation"))?;
        if let Some(gradient) = grads.get(&parameters) {
            if let Some(value) = first_non_finite(gradient)? {
                return Err(EngineError::Config(format!(
                    "the transform's gradient became {value} at iteration {iteration}"
                )));
            }
        }
        optimizer
            .step(&grads)
            .map_err(tensor_error("the optimiser step"))?;
        losses.push(loss);
        on_iteration(iteration, loss);
    }
    let ddf = current_ddf(transform, &parameters, &shape)
        .and_then(|t| t.detach().contiguous())
        .map_err(tensor_error("the transform's DDF"))?;
    let output = warped(batch, ddf.clone()).map_err(tensor_error("warping the moving image"))?;
    Ok(Registration {
        ddf,
        theta: (transform == Transform::Affine).then(|| parameters.as_tensor().detach()),
        output,
        losses,
    })
}
