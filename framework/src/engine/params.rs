//! The default parameter source, `variables`: seeded variables (each drawn from its name
//! and the run's seed), with `freeze` (name prefixes the optimiser leaves alone) and
//! `init_from` (a prefix of another run's checkpoint loaded into a prefix of this model).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::component::{ComponentError, ParamContext, ParamSource, ParamSourceConfig};

const COMPONENT: &str = "parameter_source `variables`";

/// `variables`: trained variables drawn from the run's seed.
///
/// ```yaml
/// parameters:
///   name: variables
///   freeze: [stage.0]
///   init_from: [{checkpoint: logs/affine/save/ckpt-5, from: stage.0, to: stage.0}]
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariablesConfig {
    /// Name prefixes (`stage.0`, `stage.0.output`) of weights the optimiser does not update;
    /// a prefix matches a name equal to it or continuing with `.`. Each must match a weight.
    #[serde(default)]
    pub freeze: Vec<String>,
    /// Weights loaded from other runs' checkpoints before training, applied in order.
    #[serde(default)]
    pub init_from: Vec<InitFrom>,
}

/// One `init_from` entry: every weight of `checkpoint` under the prefix `from` is loaded into
/// this model's weight of the same name under `to` instead (`from: stage.0`, `to: stage.1`
/// maps `stage.0.output.weight` to `stage.1.output.weight`; an empty prefix is the whole
/// model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitFrom {
    /// A checkpoint folder (`<run>/save/ckpt-<epoch>`) or a weights file.
    pub checkpoint: PathBuf,
    /// The prefix in the checkpoint.
    #[serde(default)]
    pub from: String,
    /// The prefix in this model.
    #[serde(default)]
    pub to: String,
}

#[typetag::serialize(name = "variables")]
impl ParamSourceConfig for VariablesConfig {
    fn build(&self, context: &ParamContext) -> Result<Box<dyn ParamSource>, ComponentError> {
        Ok(Box::new(Variables {
            config: self.clone(),
            variables: VarMap::new(),
            seed: context.seed,
            dtype: context.dtype,
            device: context.device.clone(),
            frozen: BTreeSet::new(),
        }))
    }
}

crate::register_component!(
    parameter_source,
    "variables",
    VariablesConfig,
    "Seeded trained variables; freeze name prefixes, initialise prefixes from other runs"
);

/// Whether `name` lies under `prefix`: equal to it or continuing with `.`; every name lies
/// under the empty prefix.
pub fn under_prefix(name: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// `name` (under `from`) renamed to lie under `to` instead.
fn renamed(name: &str, from: &str, to: &str) -> String {
    let rest = &name[from.len()..];
    match (to.is_empty(), rest.strip_prefix('.')) {
        (true, Some(rest)) => rest.to_owned(),
        (true, None) => rest.to_owned(),
        (false, _) if from.is_empty() => format!("{to}.{rest}"),
        (false, _) => format!("{to}{rest}"),
    }
}

/// The built `variables` source.
struct Variables {
    config: VariablesConfig,
    variables: VarMap,
    seed: u64,
    dtype: DType,
    device: Device,
    frozen: BTreeSet<String>,
}

impl Variables {
    fn sorted(&self) -> Vec<(String, Var)> {
        let data = self
            .variables
            .data()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut named: Vec<(String, Var)> = data
            .iter()
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    fn init(&self, entry: &InitFrom, model: &BTreeMap<String, Var>) -> Result<(), ComponentError> {
        let file = super::checkpoint::weights_file(&entry.checkpoint);
        let invalid = |message: String| ComponentError::Data {
            path: file.clone(),
            message,
        };
        if !file.is_file() {
            return Err(invalid(
                "no such checkpoint (give a checkpoint folder <run>/save/ckpt-<epoch> or a weights file) for `init_from`".to_owned(),
            ));
        }
        let tensors = candle_core::safetensors::load(&file, &self.device)
            .map_err(|e| invalid(format!("cannot read the weights for `init_from`: {e}")))?;
        let mut loaded = BTreeSet::new();
        let mut names: Vec<&String> = tensors
            .keys()
            .filter(|n| under_prefix(n, &entry.from))
            .collect();
        names.sort();
        if names.is_empty() {
            let mut known: Vec<&String> = tensors.keys().collect();
            known.sort();
            let shown: Vec<&str> = known.iter().take(5).map(|s| s.as_str()).collect();
            return Err(invalid(format!(
                "`init_from`: no weight under the prefix `{}` (its weights are named like {})",
                entry.from,
                shown.join(", ")
            )));
        }
        for name in names {
            let target = renamed(name, &entry.from, &entry.to);
            let Some(var) = model.get(&target) else {
                return Err(invalid(format!(
                    "`init_from`: the checkpoint's weight `{name}` would go to `{target}`, which this model does not have (its weights under `{}` are: {})",
                    entry.to,
                    model
                        .keys()
                        .filter(|n| under_prefix(n, &entry.to))
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            let tensor = &tensors[name];
            if tensor.dims() != var.dims() {
                return Err(invalid(format!(
                    "`init_from`: the checkpoint's weight `{name}` has shape {:?}, this model's `{target}` {:?}",
                    tensor.dims(),
                    var.dims()
                )));
            }
            let tensor = tensor
                .to_dtype(self.dtype)
                .map_err(|e| ComponentError::tensor(format!("loading `{name}`"), e))?;
            var.set(&tensor)
                .map_err(|e| ComponentError::tensor(format!("loading `{name}`"), e))?;
            loaded.insert(target);
        }
        let missing: Vec<&String> = model
            .keys()
            .filter(|n| under_prefix(n, &entry.to) && !loaded.contains(*n))
            .collect();
        if let Some(first) = missing.first() {
            return Err(invalid(format!(
                "`init_from`: the checkpoint has no weight for this model's `{first}` ({} of this model's weights under `{}` are missing)",
                missing.len(),
                entry.to
            )));
        }
        Ok(())
    }
}

impl ParamSource for Variables {
    fn builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(SeededInit {
                variables: self.variables.clone(),
                seed: self.seed,
            }),
            self.dtype,
            self.device.clone(),
        )
    }

    fn finish(&mut self) -> Result<(), ComponentError> {
        let model: BTreeMap<String, Var> = self.sorted().into_iter().collect();
        for entry in &self.config.init_from {
            self.init(entry, &model)?;
        }
        let mut frozen = BTreeSet::new();
        for prefix in &self.config.freeze {
            let matched: Vec<&String> = model.keys().filter(|n| under_prefix(n, prefix)).collect();
            if matched.is_empty() {
                let shown: Vec<&str> = model.keys().take(5).map(String::as_str).collect();
                return Err(ComponentError::invalid(
                    COMPONENT,
                    format!(
                        "`freeze: {prefix}` matches no weight (weights are named like {})",
                        shown.join(", ")
                    ),
                ));
            }
            frozen.extend(matched.into_iter().cloned());
        }
        self.frozen = frozen;
        Ok(())
    }

    fn variables(&self) -> Vec<(String, Var)> {
        self.sorted()
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        self.sorted()
            .into_iter()
            .filter(|(name, _)| !self.frozen.contains(name))
            .collect()
    }

    fn frozen(&self) -> Vec<String> {
        self.frozen.iter().cloned().collect()
    }
}

/// A `VarMap` backend whose new variables are drawn from a seeded generator keyed by the
/// variable's name (candle's CPU initialisers use an unseedable thread generator), so a
/// model is reproducible from its seed.
struct SeededInit {
    variables: VarMap,
    seed: u64,
}

impl SeededInit {
    fn sample(
        &self,
        shape: &Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let count = shape.elem_count();
        let mut rng =
            crate::rng::SplitMix::new(crate::rng::mix(&[self.seed, crate::rng::hash_name(name)]));
        let values: Vec<f64> = match init {
            Init::Const(value) => vec![value; count],
            Init::Randn { mean, stdev } => {
                (0..count).map(|_| mean + stdev * rng.normal()).collect()
            }
            Init::Uniform { lo, up } => {
                (0..count).map(|_| lo + (up - lo) * rng.uniform()).collect()
            }
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        (0..count)
                            .map(|_| bound * (2.0 * rng.uniform() - 1.0))
                            .collect()
                    }
                    NormalOrUniform::Normal => (0..count).map(|_| std * rng.normal()).collect(),
                }
            }
        };
        Tensor::from_vec(values, shape.clone(), device)?.to_dtype(dtype)
    }
}

impl SimpleBackend for SeededInit {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self
            .variables
            .data()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = data.get(name) {
            if existing.shape() != &shape {
                candle_core::bail!(
                    "shape mismatch on {name}: {shape:?} <> {:?}",
                    existing.shape()
                );
            }
            return Ok(existing.as_tensor().clone());
        }
        let var = Var::from_tensor(&self.sample(&shape, name, init, dtype, device)?)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_owned(), var);
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("`{name}`: a model's weights are created with their shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.variables
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(config: VariablesConfig) -> Box<dyn ParamSource> {
        let context = ParamContext {
            seed: 3,
            device: Device::Cpu,
            dtype: DType::F32,
        };
        let source = config.build(&context).unwrap();
        let builder = source.builder();
        for prefix in ["stage.0", "stage.1"] {
            builder
                .pp(prefix)
                .get_with_hints(
                    (2, 3),
                    "w",
                    Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                )
                .unwrap();
        }
        source
    }

    #[test]
    fn prefixes_match_whole_name_segments() {
        assert!(under_prefix("stage.0.w", "stage.0"));
        assert!(under_prefix("stage.0", "stage.0"));
        assert!(!under_prefix("stage.01.w", "stage.0"));
        assert!(under_prefix("anything", ""));
        assert_eq!(renamed("stage.0.w", "stage.0", "stage.1"), "stage.1.w");
        assert_eq!(renamed("output.w", "", "stage.0"), "stage.0.output.w");
        assert_eq!(renamed("stage.0.w", "stage.0", ""), "w");
    }

    #[test]
    fn frozen_prefixes_leave_the_trainable_list() {
        let mut source = source(VariablesConfig {
            freeze: vec!["stage.0".to_owned()],
            init_from: Vec::new(),
        });
        source.finish().unwrap();
        let names = |v: Vec<(String, Var)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(source.trainable()), ["stage.1.w"]);
        assert_eq!(names(source.variables()), ["stage.0.w", "stage.1.w"]);
        assert_eq!(source.frozen(), ["stage.0.w"]);
        let mut bad = self::source(VariablesConfig {
            freeze: vec!["stage.2".to_owned()],
            init_from: Vec::new(),
        });
        let error = bad.finish().unwrap_err().to_string();
        assert!(
            error.contains("`freeze: stage.2` matches no weight"),
            "{error}"
        );
    }

    #[test]
    fn init_from_loads_a_prefix_into_another_and_refuses_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weights.safetensors");
        let saved = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let wrong = Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap();
        let tensors = std::collections::HashMap::from([
            ("stage.0.w".to_owned(), saved.clone()),
            ("other.w".to_owned(), wrong),
        ]);
        candle_core::safetensors::save(&tensors, &file).unwrap();
        let entry = |from: &str, to: &str| InitFrom {
            checkpoint: file.clone(),
            from: from.to_owned(),
            to: to.to_owned(),
        };
        let mut source = source(VariablesConfig {
            freeze: Vec::new(),
            init_from: vec![entry("stage.0", "stage.1")],
        });
        source.finish().unwrap();
        let vars: BTreeMap<String, Var> = source.variables().into_iter().collect();
        let loaded = vars["stage.1.w"].as_tensor().to_vec2::<f32>().unwrap();
        assert_eq!(loaded, saved.to_vec2::<f32>().unwrap());
        let error = |from: &str, to: &str| {
            let mut source = self::source(VariablesConfig {
                freeze: Vec::new(),
                init_from: vec![entry(from, to)],
            });
            source.finish().unwrap_err().to_string()
        };
        let shape = error("other", "stage.5");
        assert!(shape.contains("which this model does not have"), "{shape}");
        let shape = error("other.w", "stage.0.w");
        assert!(shape.contains("has shape [3, 3]"), "{shape}");
        let none = error("missing", "stage.0");
        assert!(
            none.contains("no weight under the prefix `missing`"),
            "{none}"
        );
        let partial = error("stage.0", "");
        assert!(
            partial.contains("which this model does not have"),
            "{partial}"
        );
    }
}
