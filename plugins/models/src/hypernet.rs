//! `hypernet`: HyperMorph's hypernetwork as a parameter source. An MLP maps the step's
//! hyperparameters to a feature vector `h`, and every weight the method's networks ask for
//! gets its own linear head from `h`, so one trained model covers every value of the
//! regularisation weight λ.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use voxreg_framework::candle::{self, Shape, Tensor};
use voxreg_framework::candle_nn::var_builder::SimpleBackend;
use voxreg_framework::candle_nn::Init;
use voxreg_framework::engine::VariablesConfig;
use voxreg_framework::prelude::*;

const NAME: &str = "parameter_source `hypernet`";
/// The prefix of the hypernetwork's own variables.
const PREFIX: &str = "hypernet";

/// `hypernet`: every weight of the method's networks computed per step from the step's
/// hyperparameters, as HyperMorph's `HyperConvFromDense` layers do.
///
/// With `x` the hyperparameters `inputs` of a sample, the MLP gives
/// `h = relu(W_L·…relu(W_1·x + b_1)… + b_L)` (Keras `Dense`: glorot-uniform `W_i`, zero
/// `b_i`), and each generated weight `w` of shape `s` (`n = |s|` values) is
/// `w = reshape(h·K_w + c_w, s)` with its own head `K_w` `(U, n)` and `c_w` `(n,)`, `U` the
/// last layer's width; both drawn glorot-uniform as Keras draws a weight created without an
/// initializer: `K_w ~ U(±√(6/(U + n)))`, `c_w ~ U(±√(3/n))`. The head is linear (today's
/// neurite default; before April 2021 it was `tanh`). Weights whose names match a `plain`
/// pattern are ordinary trained variables, the same for every λ (today's VoxelMorph keeps
/// its flow layer plain; the 2021 paper generated it too: `plain: []`).
///
/// The reshape is row-major over the network's own weight layout (`(C_out, C_in, k…)`),
/// not TensorFlow's `(k…, C_in, C_out)`: the two differ by a fixed permutation of the
/// head's columns, the same family of functions with the same initial distribution.
///
/// One set of weights serves samples with equal hyperparameters; the model runs a batch
/// that mixes values in groups of equal values, so every sample gets the weights of its
/// own λ (as neurite's per-sample `map_fn`), and a batch of one value runs at once.
/// Backbones that normalise with batch statistics (`unet`, `local`) then see each group's
/// statistics.
///
/// ```yaml
/// parameters:
///   name: hypernet
///   inputs: [lambda]
///   layers: [32, 64, 128, 128]   # HyperMorph's tutorial; default 6 × 128
///   plain: [flow]
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HypernetConfig {
    /// The hyperparameters the MLP reads, in order (each declared under
    /// `train.hyperparameters`); default `[lambda]`.
    pub inputs: Vec<String>,
    /// The widths of the MLP's ReLU layers; default VoxelMorph's `HyperVxmDense`,
    /// `[128, 128, 128, 128, 128, 128]`.
    pub layers: Vec<usize>,
    /// Patterns of weights that stay plain trained variables instead of being generated: a
    /// pattern matches a weight whose dot-separated name contains the pattern's segments in
    /// a row (`flow` matches `flow.weight` and `stage.1.flow.bias`). Each must match a
    /// weight. Default `[flow]` (today's VoxelMorph); `[]` generates every weight.
    pub plain: Vec<String>,
}

impl Default for HypernetConfig {
    fn default() -> Self {
        Self {
            inputs: vec!["lambda".to_owned()],
            layers: vec![128; 6],
            plain: vec!["flow".to_owned()],
        }
    }
}

#[typetag::serialize(name = "hypernet")]
impl ParamSourceConfig for HypernetConfig {
    fn build(&self, context: &ParamContext) -> Result<Box<dyn ParamSource>, ComponentError> {
        if self.inputs.is_empty() {
            return Err(ComponentError::invalid(
                NAME,
                "`inputs` is empty: name the hyperparameters the hypernetwork reads (e.g. [lambda])",
            ));
        }
        if self.layers.is_empty() || self.layers.contains(&0) {
            return Err(ComponentError::invalid(
                NAME,
                format!(
                    "`layers` must be one or more widths ≥ 1, got {:?}",
                    self.layers
                ),
            ));
        }
        let variables = VariablesConfig::default().build(context)?;
        Ok(Box::new(Hypernet {
            config: self.clone(),
            variables,
            asked: Arc::new(Mutex::new(Asked::default())),
            mlp: Vec::new(),
            heads: Vec::new(),
        }))
    }

    fn hyperparameters(&self) -> Vec<String> {
        self.inputs.clone()
    }
}

register_component!(
    parameter_source,
    "hypernet",
    HypernetConfig,
    "HyperMorph hypernetwork: an MLP over train.hyperparameters (e.g. lambda) with a linear head per network weight"
);

/// Whether the dot-separated `name` contains the segments of `pattern` in a row.
pub fn matches_pattern(name: &str, pattern: &str) -> bool {
    let name: Vec<&str> = name.split('.').collect();
    let pattern: Vec<&str> = pattern.split('.').collect();
    !pattern.is_empty() && name.windows(pattern.len()).any(|w| w == pattern.as_slice())
}

/// The weights the method asked for while it was built.
#[derive(Default)]
struct Asked {
    /// Generated weights by name, with their shapes.
    generated: BTreeMap<String, Shape>,
    /// Names of the plain weights.
    plain: BTreeSet<String>,
}

/// A generated weight's head.
struct WeightHead {
    name: String,
    shape: Shape,
    kernel: Var,
    bias: Var,
}

/// The built `hypernet` source.
struct Hypernet {
    config: HypernetConfig,
    /// Every trained variable: the MLP's, the heads' and the plain weights.
    variables: Box<dyn ParamSource>,
    asked: Arc<Mutex<Asked>>,
    /// `(kernel (in, out), bias (out,))` per layer.
    mlp: Vec<(Var, Var)>,
    heads: Vec<WeightHead>,
}

fn lock(asked: &Mutex<Asked>) -> MutexGuard<'_, Asked> {
    asked
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn glorot(fan_in: usize, fan_out: usize) -> Init {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Init::Uniform {
        lo: -limit,
        up: limit,
    }
}

fn tensor_error(what: String) -> impl FnOnce(candle::Error) -> ComponentError {
    move |e| ComponentError::tensor(what, e)
}

impl Hypernet {
    /// The hyperparameters `(1, P)` shared by every sample of `batch`.
    fn input(&self, batch: &Batch) -> candle::Result<Tensor> {
        let mut values = Vec::with_capacity(self.config.inputs.len());
        for name in &self.config.inputs {
            let Some(column) = batch.hyper(name) else {
                candle::bail!("the hypernetwork reads the hyperparameter `{name}`, which this batch does not have");
            };
            let column = column.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            let Some(&first) = column.first() else {
                candle::bail!("the hyperparameter `{name}` has no value");
            };
            if column.iter().any(|v| v.to_bits() != first.to_bits()) {
                candle::bail!(
                    "the hypernetwork got a batch whose samples differ in `{name}` ({column:?}): run it through the model, which groups samples of equal hyperparameters"
                );
            }
            values.push(first);
        }
        let device = self
            .mlp
            .first()
            .map(|(k, _)| k.device().clone())
            .unwrap_or(Device::Cpu);
        Tensor::from_vec(values, (1, self.config.inputs.len()), &device)
    }

    /// `h`, `(1, U)`: the MLP's last ReLU layer for `x` `(1, P)`.
    fn features(&self, x: &Tensor) -> candle::Result<Tensor> {
        let mut h = x.to_dtype(self.mlp[0].0.dtype())?;
        for (kernel, bias) in &self.mlp {
            h = h.matmul(kernel.as_tensor())?.broadcast_add(bias)?.relu()?;
        }
        Ok(h)
    }
}

impl ParamSource for Hypernet {
    fn builder(&self) -> VarBuilder<'static> {
        let probe = self.variables.builder();
        let (dtype, device) = (probe.dtype(), probe.device().clone());
        VarBuilder::from_backend(
            Box::new(Recording {
                plain: self.config.plain.clone(),
                variables: self.variables.builder(),
                asked: Arc::clone(&self.asked),
            }),
            dtype,
            device,
        )
    }

    fn finish(&mut self) -> Result<(), ComponentError> {
        let (generated, plain) = {
            let asked = lock(&self.asked);
            (asked.generated.clone(), asked.plain.clone())
        };
        for pattern in &self.config.plain {
            if !plain.iter().any(|n| matches_pattern(n, pattern)) {
                let shown: Vec<&str> = generated.keys().take(5).map(String::as_str).collect();
                return Err(ComponentError::invalid(
                    NAME,
                    format!(
                        "`plain: {pattern}` matches no weight of the network (its weights are named like {}); give `plain: []` to generate every weight",
                        shown.join(", ")
                    ),
                ));
            }
        }
        if generated.is_empty() {
            return Err(ComponentError::invalid(
                NAME,
                "every weight of the network is `plain`: the hypernetwork would generate nothing",
            ));
        }
        let builder = self.variables.builder();
        let mut fan_in = self.config.inputs.len();
        let mut mlp = Vec::with_capacity(self.config.layers.len());
        for (i, &width) in self.config.layers.iter().enumerate() {
            let layer = builder.pp(format!("{PREFIX}.mlp.{i}"));
            let kernel = layer
                .get_with_hints((fan_in, width), "kernel", glorot(fan_in, width))
                .map_err(tensor_error(format!("the hypernetwork's layer {i}")))?;
            let bias = layer
                .get_with_hints(width, "bias", Init::Const(0.0))
                .map_err(tensor_error(format!("the hypernetwork's layer {i}")))?;
            mlp.push((kernel, bias));
            fan_in = width;
        }
        let units = fan_in;
        let mut heads = Vec::with_capacity(generated.len());
        for (name, shape) in &generated {
            let n = shape.elem_count();
            let head = builder.pp(format!("{PREFIX}.head.{name}"));
            let what = || format!("the head of `{name}`");
            head.get_with_hints((units, n), "kernel", glorot(units, n))
                .map_err(tensor_error(what()))?;
            head.get_with_hints(n, "bias", glorot(n, n))
                .map_err(tensor_error(what()))?;
            heads.push(name.clone());
        }
        self.variables.finish()?;
        let vars: BTreeMap<String, Var> = self.variables.variables().into_iter().collect();
        let var = |name: String| {
            vars.get(&name).cloned().ok_or_else(|| {
                ComponentError::invalid(NAME, format!("the variable `{name}` was not created"))
            })
        };
        self.mlp = (0..self.config.layers.len())
            .map(|i| {
                Ok((
                    var(format!("{PREFIX}.mlp.{i}.kernel"))?,
                    var(format!("{PREFIX}.mlp.{i}.bias"))?,
                ))
            })
            .collect::<Result<_, ComponentError>>()?;
        self.heads = heads
            .into_iter()
            .map(|name| {
                Ok(WeightHead {
                    kernel: var(format!("{PREFIX}.head.{name}.kernel"))?,
                    bias: var(format!("{PREFIX}.head.{name}.bias"))?,
                    shape: generated[&name].clone(),
                    name,
                })
            })
            .collect::<Result<_, ComponentError>>()?;
        Ok(())
    }

    fn for_batch(&self, batch: &Batch) -> candle::Result<Option<VarBuilder<'static>>> {
        let h = self.features(&self.input(batch)?)?;
        let mut generated = BTreeMap::new();
        for head in &self.heads {
            let weight = h
                .matmul(head.kernel.as_tensor())?
                .broadcast_add(head.bias.as_tensor())?
                .reshape(head.shape.clone())?;
            generated.insert(head.name.clone(), weight);
        }
        let dtype = h.dtype();
        let device = h.device().clone();
        Ok(Some(VarBuilder::from_backend(
            Box::new(Generated {
                generated,
                variables: self.variables.builder(),
                plain: lock(&self.asked).plain.clone(),
            }),
            dtype,
            device,
        )))
    }

    fn per_sample(&self) -> bool {
        true
    }

    fn variables(&self) -> Vec<(String, Var)> {
        self.variables.variables()
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        self.variables.trainable()
    }

    fn frozen(&self) -> Vec<String> {
        self.variables.frozen()
    }
}

/// The builder of the first build: records each generated weight's shape (and hands back
/// zeros, never used), and creates the plain weights as trained variables.
struct Recording {
    plain: Vec<String>,
    variables: VarBuilder<'static>,
    asked: Arc<Mutex<Asked>>,
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle::Result<Tensor> {
        if name == PREFIX || name.starts_with(&format!("{PREFIX}.")) {
            candle::bail!("`{name}`: names under `{PREFIX}.` belong to the hypernetwork");
        }
        let mut asked = lock(&self.asked);
        if self.plain.iter().any(|p| matches_pattern(name, p)) {
            asked.plain.insert(name.to_owned());
            drop(asked);
            return self.variables.get_with_hints(shape, name, init);
        }
        if let Some(known) = asked.generated.get(name) {
            if known != &shape {
                candle::bail!("shape mismatch on {name}: {shape:?} <> {known:?}");
            }
        } else {
            asked.generated.insert(name.to_owned(), shape.clone());
        }
        Tensor::zeros(shape, dtype, device)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle::Result<Tensor> {
        candle::bail!("`{name}`: a network's weights are asked for with their shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let asked = lock(&self.asked);
        asked.generated.contains_key(name) || asked.plain.contains(name)
    }
}

/// The builder of a step: the generated weights, and the plain weights' variables.
struct Generated {
    generated: BTreeMap<String, Tensor>,
    variables: VarBuilder<'static>,
    plain: BTreeSet<String>,
}

impl SimpleBackend for Generated {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        _dtype: DType,
        _device: &Device,
    ) -> candle::Result<Tensor> {
        if let Some(weight) = self.generated.get(name) {
            if weight.shape() != &shape {
                candle::bail!(
                    "shape mismatch on {name}: {shape:?} <> {:?}",
                    weight.shape()
                );
            }
            return Ok(weight.clone());
        }
        if self.plain.contains(name) {
            return self.variables.get_with_hints(shape, name, init);
        }
        candle::bail!(
            "`{name}`: the network asked for a weight it did not ask for when it was built"
        )
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle::Result<Tensor> {
        candle::bail!("`{name}`: a network's weights are asked for with their shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.generated.contains_key(name) || self.plain.contains(name)
    }
}

#[cfg(test)]
mod tests;
