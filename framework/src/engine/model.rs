//! A model: the method, its backbone and their trainable variables.

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};

use super::EngineError;
use crate::component::{Backbone, BackboneSpec, ImageShapes, MethodOutput, PairBatch};
use crate::config::Config;

/// The registration model of a configuration: `train.method` around `train.backbone`, with
/// its weights in a `VarMap`.
pub struct Model<'c> {
    config: &'c Config,
    backbone: Box<dyn Backbone>,
    /// The trainable variables.
    pub variables: VarMap,
    /// Image shapes after preprocessing.
    pub shapes: ImageShapes,
}

impl<'c> Model<'c> {
    /// Builds the model for the configured image shapes, with weights initialised from
    /// `seed` (each weight from its name, so the same seed gives the same weights).
    pub fn build(config: &'c Config, device: &Device) -> Result<Self, EngineError> {
        Self::build_seeded(config, device, 0)
    }

    /// [`Model::build`] with an explicit initialisation seed.
    pub fn build_seeded(
        config: &'c Config,
        device: &Device,
        seed: u64,
    ) -> Result<Self, EngineError> {
        let shapes = config.dataset.loader.image_shapes();
        let spatial_dims = shapes.fixed.len();
        let io = config.train.method.backbone_io(spatial_dims);
        let spec = BackboneSpec {
            spatial_dims,
            image_size: shapes.fixed.clone(),
            in_channels: io.in_channels,
            out_channels: io.out_channels,
        };
        let variables = VarMap::new();
        let backbone = config.train.backbone.build(
            &spec,
            VarBuilder::from_backend(
                Box::new(SeededInit {
                    variables: variables.clone(),
                    seed,
                }),
                DType::F32,
                device.clone(),
            ),
        )?;
        Ok(Model {
            config,
            backbone,
            variables,
            shapes,
        })
    }

    /// The trainable variables in a fixed order (by name), so an optimiser's per-variable
    /// state lines up with the same variables in every process.
    pub fn trainable(&self) -> Vec<candle_core::Var> {
        self.named_trainable()
            .into_iter()
            .map(|(_, var)| var)
            .collect()
    }

    /// The trainable variables with their names, sorted by name.
    pub fn named_trainable(&self) -> Vec<(String, candle_core::Var)> {
        let data = self
            .variables
            .data()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut named: Vec<(String, candle_core::Var)> = data
            .iter()
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    /// Loads trained weights (safetensors, as `train` saves them). A checkpoint that lacks a
    /// weight of this model, or holds one of another shape (a checkpoint from another
    /// configuration), is an error saying so.
    pub fn load_weights(&mut self, path: &std::path::Path) -> Result<(), EngineError> {
        if !path.is_file() {
            return Err(EngineError::Io {
                path: path.to_owned(),
                message: "no such checkpoint file".to_owned(),
            });
        }
        if let Some(problem) = crate::files::regular_file_problem(path) {
            return Err(EngineError::Io {
                path: path.to_owned(),
                message: problem,
            });
        }
        self.variables.load(path).map_err(|e| EngineError::Io {
            path: path.to_owned(),
            message: format!(
                "cannot load it into this configuration's model (a checkpoint of another configuration, or a damaged file): {e}"
            ),
        })?;
        let named = self.named_trainable();
        super::finite::refuse_non_finite(
            path,
            "weight",
            named
                .iter()
                .map(|(name, var)| (name.as_str(), var.as_tensor())),
        )
    }

    /// Runs the method on a batch.
    pub fn forward(&self, batch: &PairBatch) -> Result<MethodOutput, EngineError> {
        self.config
            .train
            .method
            .forward(&*self.backbone, batch)
            .map_err(super::tensor_error("the model's forward pass"))
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
