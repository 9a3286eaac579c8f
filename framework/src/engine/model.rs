//! A model: the configuration's method, built with its networks, and the parameter source
//! its weights come from. It owns everything it runs.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};

use super::params::VariablesConfig;
use super::EngineError;
use crate::component::{
    BackboneConfig, Batch, Decl, ImageShapes, Method, MethodConfig, MethodContext, ParamContext,
    ParamSource, ParamSourceConfig, Tensors,
};
use crate::config::Config;

/// The registration model of a configuration: `train.method` (around `train.backbone`
/// unless the method names its own networks), with its weights from `train.parameters`.
pub struct Model {
    method: Box<dyn Method>,
    method_config: Arc<dyn MethodConfig>,
    backbone: Option<Arc<dyn BackboneConfig>>,
    /// Where the weights come from.
    pub params: Box<dyn ParamSource>,
    /// Image shapes after preprocessing.
    pub shapes: ImageShapes,
    inputs: Vec<Decl>,
    outputs: Vec<Decl>,
    /// The value of each declared hyperparameter where a batch has none (evaluation,
    /// prediction), in the declared order.
    hyper: Vec<(String, f64)>,
}

/// Whether the configuration's data is labelled (its first split's `labeled`).
pub(super) fn labeled(config: &Config) -> bool {
    let dataset = &config.dataset;
    [&dataset.train, &dataset.valid, &dataset.test]
        .into_iter()
        .flatten()
        .next()
        .is_some_and(|split| split.labeled)
}

impl Model {
    /// Builds the model for the configured image shapes, with weights initialised from
    /// seed 0 (each weight from its name, so the same seed gives the same weights).
    pub fn build(config: &Config, device: &Device) -> Result<Self, EngineError> {
        Self::build_seeded(config, device, 0)
    }

    /// [`Model::build`] with an explicit initialisation seed.
    pub fn build_seeded(config: &Config, device: &Device, seed: u64) -> Result<Self, EngineError> {
        let shapes = config.dataset.loader.image_shapes();
        let inputs = config.dataset.loader.provides(labeled(config));
        let context = ParamContext {
            seed,
            device: device.clone(),
            dtype: DType::F32,
        };
        let default_source = VariablesConfig::default();
        let source: &dyn ParamSourceConfig = match &config.train.parameters {
            Some(source) => &**source,
            None => &default_source,
        };
        let mut params = source
            .build(&context)
            .map_err(|source| EngineError::Build {
                what: "the parameter source (train.parameters)".to_owned(),
                source: Box::new(source),
            })?;
        let method_config = Arc::clone(&config.train.method);
        let backbone = config.train.backbone.clone();
        let method_context = MethodContext {
            shapes: &shapes,
            inputs: &inputs,
            backbone: backbone.as_deref(),
        };
        let method = method_config.build(&method_context, params.builder())?;
        params.finish().map_err(|source| EngineError::Build {
            what: "the parameter source (train.parameters)".to_owned(),
            source: Box::new(source),
        })?;
        let frozen = params.frozen();
        if !frozen.is_empty() {
            tracing::info!(
                "{} of {} weights frozen: {}",
                frozen.len(),
                params.variables().len(),
                frozen.join(", ")
            );
        }
        let outputs = method_config.outputs(&method_context);
        let hyper = config
            .train
            .hyperparameters
            .iter()
            .map(|(name, entry)| (name.clone(), entry.fixed_value()))
            .collect();
        Ok(Model {
            method,
            method_config,
            backbone,
            params,
            shapes,
            inputs,
            outputs,
            hyper,
        })
    }

    /// The value each declared hyperparameter takes where a batch has none, in the order
    /// `train.hyperparameters` declares them.
    pub fn hyper_values(&self) -> &[(String, f64)] {
        &self.hyper
    }

    /// Sets the value a declared hyperparameter takes where a batch has none (`--hyper
    /// lambda=0.3`). An undeclared name is an error listing the declared ones.
    pub fn set_hyper(&mut self, name: &str, value: f64) -> Result<(), EngineError> {
        if !value.is_finite() {
            return Err(EngineError::Config(format!(
                "the hyperparameter `{name}` must be a finite number, got {value}"
            )));
        }
        if let Some(entry) = self.hyper.iter_mut().find(|(n, _)| n == name) {
            entry.1 = value;
            return Ok(());
        }
        let declared = if self.hyper.is_empty() {
            "declares none".to_owned()
        } else {
            let names: Vec<String> = self.hyper.iter().map(|(n, _)| format!("`{n}`")).collect();
            format!("declares {}", names.join(", "))
        };
        Err(EngineError::Config(format!(
            "no hyperparameter `{name}`: the configuration {declared} (train.hyperparameters)"
        )))
    }

    /// `batch` with every declared hyperparameter it lacks set to its value (see
    /// [`Model::set_hyper`]) for every sample.
    pub fn complete(&self, batch: &Batch) -> Result<Batch, EngineError> {
        let missing: Vec<(String, f64)> = self
            .hyper
            .iter()
            .filter(|(name, _)| batch.hyper(name).is_none())
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(batch.clone());
        }
        let context = super::tensor_error("setting the batch's hyperparameters");
        let image = batch
            .moving_image()
            .map_err(super::tensor_error("a batch"))?;
        let n = image.dim(0).map_err(super::tensor_error("a batch"))?;
        let mut completed = batch.clone();
        completed
            .hyper
            .extend(crate::config::fixed_hyper(&missing, n, image.device()).map_err(context)?);
        Ok(completed)
    }

    /// The tensors the data loader provides.
    pub fn inputs(&self) -> &[Decl] {
        &self.inputs
    }

    /// The tensors the method outputs.
    pub fn outputs(&self) -> &[Decl] {
        &self.outputs
    }

    /// The variables the optimiser updates, in a fixed order (by name), so an optimiser's
    /// per-variable state lines up with the same variables in every process.
    pub fn trainable(&self) -> Vec<Var> {
        self.named_trainable()
            .into_iter()
            .map(|(_, var)| var)
            .collect()
    }

    /// The trainable variables with their names, sorted by name.
    pub fn named_trainable(&self) -> Vec<(String, Var)> {
        self.params.trainable()
    }

    /// The names of the frozen weights, sorted.
    pub fn frozen(&self) -> Vec<String> {
        self.params.frozen()
    }

    /// Saves every weight (safetensors).
    pub fn save_weights(&self, path: &std::path::Path) -> candle_core::Result<()> {
        candle_core::safetensors::save(&self.weight_tensors(), path)
    }

    /// Loads trained weights (safetensors, as `train` saves them). A checkpoint that lacks a
    /// weight of this model, or holds one of another shape (a checkpoint from another
    /// configuration), or one that holds a NaN or an infinity, is an error saying so, and
    /// leaves every weight as it was.
    pub fn load_weights(&mut self, path: &std::path::Path) -> Result<(), EngineError> {
        let refused = |message: String| EngineError::Io {
            path: path.to_owned(),
            message,
        };
        if !path.is_file() {
            return Err(refused("no such checkpoint file".to_owned()));
        }
        if let Some(problem) = crate::files::regular_file_problem(path) {
            return Err(refused(problem));
        }
        let mut tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            refused(format!(
                "cannot read it as a weights file (a damaged file?): {e}"
            ))
        })?;
        let other = "cannot load it into this configuration's model (a checkpoint of another configuration)";
        let saved_groups = top_level_names(tensors.keys());
        let mut matched = Vec::new();
        let variables = self.params.variables();
        for (name, var) in &variables {
            let Some(tensor) = tensors.remove(name) else {
                let model_groups = top_level_names(variables.iter().map(|(n, _)| n));
                return Err(refused(format!(
                    "{other}: it has no weight `{name}` (the checkpoint's weights are under {saved_groups}; this model's under {model_groups}: a hypernetwork's checkpoint and a plain model's do not mix)"
                )));
            };
            if tensor.dims() != var.dims() {
                return Err(refused(format!(
                    "{other}: shape mismatch on weight `{name}`: the checkpoint's {:?}, this model's {:?}",
                    tensor.dims(),
                    var.dims()
                )));
            }
            matched.push((name.clone(), var.clone(), tensor));
        }
        super::finite::refuse_non_finite(
            path,
            "weight",
            matched
                .iter()
                .map(|(name, _, tensor)| (name.as_str(), tensor)),
        )?;
        for (name, var, tensor) in matched {
            var.set(&tensor)
                .map_err(|e| refused(format!("{other}: `{name}`: {e}")))?;
        }
        Ok(())
    }

    /// Every weight by name, the frozen ones too (what `save_weights` writes).
    pub fn weight_tensors(&self) -> HashMap<String, Tensor> {
        self.params
            .variables()
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().clone()))
            .collect()
    }

    /// Runs the method on a batch and returns its outputs. With a dynamic parameter source
    /// (a hypernetwork) the method is first rebuilt from the weights the source computes for
    /// this batch.
    ///
    /// A source whose weights depend on each sample ([`ParamSource::per_sample`]) gets the
    /// batch in groups of samples with equal hyperparameters (the whole batch when they all
    /// agree); the groups' outputs are put back in the batch's order. Hyperparameters the
    /// batch lacks take the model's values ([`Model::complete`]).
    pub fn forward(&self, batch: &Batch) -> Result<Tensors, EngineError> {
        if !self.params.per_sample() {
            return self.forward_group(batch);
        }
        let batch = self.complete(batch)?;
        let groups = super::hyper_groups::groups(&batch)?;
        if groups.len() == 1 {
            return self.forward_group(&batch);
        }
        let mut outputs = Vec::with_capacity(groups.len());
        for group in &groups {
            outputs.push(self.forward_group(&super::hyper_groups::select(&batch, group)?)?);
        }
        super::hyper_groups::reassemble(&outputs, &groups)
    }

    fn forward_group(&self, batch: &Batch) -> Result<Tensors, EngineError> {
        let weights = self
            .params
            .for_batch(batch)
            .map_err(super::tensor_error("the parameter source"))?;
        let forward = super::tensor_error("the model's forward pass");
        match weights {
            None => self.method.forward(batch).map_err(forward),
            Some(weights) => {
                let context = MethodContext {
                    shapes: &self.shapes,
                    inputs: &self.inputs,
                    backbone: self.backbone.as_deref(),
                };
                let method = self.method_config.build(&context, weights)?;
                method.forward(batch).map_err(forward)
            }
        }
    }
}

/// The distinct first name segments of `names`, as "`a`, `b`" (at most eight).
fn top_level_names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let groups: std::collections::BTreeSet<&str> =
        names.map(|n| n.split('.').next().unwrap_or(n)).collect();
    let mut listed: Vec<String> = groups.iter().take(8).map(|g| format!("`{g}`")).collect();
    if groups.len() > 8 {
        listed.push("…".to_owned());
    }
    listed.join(", ")
}
