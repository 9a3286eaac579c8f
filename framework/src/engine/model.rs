//! A model: the method, its backbone and their trainable variables.

use candle_core::{DType, Device};
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
    /// Builds the model for the configured image shapes, with freshly initialised weights.
    pub fn build(config: &'c Config, device: &Device) -> Result<Self, EngineError> {
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
            VarBuilder::from_varmap(&variables, DType::F32, device),
        )?;
        Ok(Model {
            config,
            backbone,
            variables,
            shapes,
        })
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
        self.variables.load(path).map_err(|e| EngineError::Io {
            path: path.to_owned(),
            message: format!(
                "cannot load it into this configuration's model (a checkpoint of another configuration, or a damaged file): {e}"
            ),
        })
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
