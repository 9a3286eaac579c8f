//! The resolved configuration: DeepReg's sections as typed structs, each component a boxed
//! config chosen by name. [`Config::to_value`] writes it back in DeepReg's layout with every
//! default filled in; that YAML resolves to the same configuration again.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::hyper::HyperParameter;
use super::terms::{LossTerm, Section};
use super::value::{self, ConfigMapping, ConfigValue};
use super::ConfigError;
use crate::component::{
    AugmentationConfig, BackboneConfig, DataLoaderConfig, FieldLossConfig, FileLoaderConfig,
    ImageLossConfig, LabelLossConfig, MethodConfig, OptimizerConfig, ParamSourceConfig,
    RegularizationConfig, Split,
};

/// A whole configuration: `dataset` and `train`, plus the plugin libraries it asked for.
#[derive(Debug)]
pub struct Config {
    /// Plugin libraries listed under `plugins:` (already loaded when this was resolved).
    pub plugins: Vec<PathBuf>,
    /// The `dataset` section.
    pub dataset: DatasetConfig,
    /// The `train` section.
    pub train: TrainConfig,
}

/// The `dataset` section: the splits, and the data loader chosen by `type` with its keys
/// (`moving_image_shape`, `image_shape`, `sample_label`, grouped keys, …).
#[derive(Debug)]
pub struct DatasetConfig {
    /// `dataset.train`; `None` when absent or its `dir` is empty.
    pub train: Option<SplitConfig>,
    /// `dataset.valid`.
    pub valid: Option<SplitConfig>,
    /// `dataset.test`.
    pub test: Option<SplitConfig>,
    /// `dataset.type` and the loader's keys.
    pub loader: Box<dyn DataLoaderConfig>,
}

/// One split of the dataset.
#[derive(Debug)]
pub struct SplitConfig {
    /// Data directories (`dir`: one path or a list).
    pub dir: Vec<PathBuf>,
    /// The file format (`format: nifti`).
    pub format: Box<dyn FileLoaderConfig>,
    /// Whether labels are used (`labeled`).
    pub labeled: bool,
}

/// The `train` section.
#[derive(Debug)]
pub struct TrainConfig {
    /// `method`: ddf, dvf, conditional, cascade, inverse, …
    pub method: Arc<dyn MethodConfig>,
    /// `backbone`: the network of a method without its own `backbone` key (DeepReg's
    /// configs always give it; a cascade whose stages name theirs need not).
    pub backbone: Option<Arc<dyn BackboneConfig>>,
    /// `parameters`: where the weights come from; absent means seeded variables, nothing
    /// frozen, nothing loaded.
    pub parameters: Option<Box<dyn ParamSourceConfig>>,
    /// `hyperparameters`: the named hyperparameters drawn per sample in training (e.g.
    /// HyperMorph's `lambda`), in the order written; empty when absent.
    pub hyperparameters: Vec<(String, HyperParameter)>,
    /// `loss`: weighted image, label and regularisation terms.
    pub loss: LossConfig,
    /// `optimizer`.
    pub optimizer: Box<dyn OptimizerConfig>,
    /// `preprocess`: batching, shuffling, parallelism, augmentation.
    pub preprocess: PreprocessConfig,
    /// `epochs`: number of training epochs.
    pub epochs: usize,
    /// `save_period`: a checkpoint every this many epochs (and one at the end).
    pub save_period: usize,
    /// `update_freq`: DeepReg's TensorBoard update frequency, kept as written.
    pub update_freq: Option<ConfigValue>,
}

/// The loss terms by section; each section holds zero or more weighted terms.
#[derive(Debug, Default)]
pub struct LossConfig {
    /// `loss.image`.
    pub image: Vec<LossTerm<dyn ImageLossConfig>>,
    /// `loss.label`.
    pub label: Vec<LossTerm<dyn LabelLossConfig>>,
    /// `loss.regularization`.
    pub regularization: Vec<LossTerm<dyn RegularizationConfig>>,
    /// `loss.field`.
    pub field: Vec<LossTerm<dyn FieldLossConfig>>,
}

/// The `train.preprocess` section.
#[derive(Debug)]
pub struct PreprocessConfig {
    /// `batch_size`: pairs per batch.
    pub batch_size: usize,
    /// `shuffle_buffer_num_batch`: the shuffle buffer holds this many batches (0: no shuffle).
    pub shuffle_buffer_num_batch: usize,
    /// `num_parallel_calls`: loader threads; -1 means one per core.
    pub num_parallel_calls: i64,
    /// `data_augmentation`: applied in order to training batches. DeepReg inserts
    /// `{name: affine}` when the key is absent; `null` or `[]` disables augmentation.
    pub data_augmentation: Vec<Box<dyn AugmentationConfig>>,
}

impl Config {
    /// The configuration as a YAML value in DeepReg's layout, every default written out.
    pub fn to_value(&self) -> Result<ConfigValue, ConfigError> {
        let mut root = ConfigMapping::new();
        if !self.plugins.is_empty() {
            let plugins = self
                .plugins
                .iter()
                .map(|p| ConfigValue::String(p.display().to_string()))
                .collect();
            root.insert(value::key("plugins"), ConfigValue::Sequence(plugins));
        }
        root.insert(value::key("dataset"), self.dataset.to_value()?);
        root.insert(value::key("train"), self.train.to_value()?);
        Ok(ConfigValue::Mapping(root))
    }

    /// The configuration as a YAML document (see [`Config::to_value`]).
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        value::to_yaml_string(&self.to_value()?).map_err(ConfigError::Serialize)
    }
}

impl DatasetConfig {
    /// The section of `split` (`train`, `valid`, `test`), when the configuration has it.
    pub fn split(&self, split: Split) -> Option<&SplitConfig> {
        match split {
            Split::Train => self.train.as_ref(),
            Split::Valid => self.valid.as_ref(),
            Split::Test => self.test.as_ref(),
        }
    }

    fn to_value(&self) -> Result<ConfigValue, ConfigError> {
        let mut mapping = ConfigMapping::new();
        for (name, split) in [
            ("train", &self.train),
            ("valid", &self.valid),
            ("test", &self.test),
        ] {
            if let Some(split) = split {
                mapping.insert(value::key(name), split.to_value()?);
            }
        }
        let loader = component_mapping(&*self.loader)?;
        for (key, value) in loader {
            let key = if key == value::key("name") {
                value::key("type")
            } else {
                key
            };
            mapping.insert(key, value);
        }
        Ok(ConfigValue::Mapping(mapping))
    }
}

impl SplitConfig {
    fn to_value(&self) -> Result<ConfigValue, ConfigError> {
        let mut mapping = ConfigMapping::new();
        let dirs: Vec<ConfigValue> = self
            .dir
            .iter()
            .map(|d| ConfigValue::String(d.display().to_string()))
            .collect();
        let dir = if dirs.len() == 1 {
            dirs.into_iter().next().unwrap_or(ConfigValue::Null)
        } else {
            ConfigValue::Sequence(dirs)
        };
        mapping.insert(value::key("dir"), dir);
        mapping.insert(value::key("format"), compact_component(&*self.format)?);
        mapping.insert(value::key("labeled"), ConfigValue::Bool(self.labeled));
        Ok(ConfigValue::Mapping(mapping))
    }
}

impl TrainConfig {
    fn to_value(&self) -> Result<ConfigValue, ConfigError> {
        let mut mapping = ConfigMapping::new();
        mapping.insert(value::key("method"), compact_component(&*self.method)?);
        if let Some(backbone) = &self.backbone {
            mapping.insert(
                value::key("backbone"),
                ConfigValue::Mapping(component_mapping(&**backbone)?),
            );
        }
        if let Some(parameters) = &self.parameters {
            mapping.insert(
                value::key("parameters"),
                ConfigValue::Mapping(component_mapping(&**parameters)?),
            );
        }
        if !self.hyperparameters.is_empty() {
            let mut hyper = ConfigMapping::new();
            for (name, entry) in &self.hyperparameters {
                hyper.insert(
                    value::key(name),
                    value::to_value(entry).map_err(ConfigError::Serialize)?,
                );
            }
            mapping.insert(value::key("hyperparameters"), ConfigValue::Mapping(hyper));
        }
        let mut loss = ConfigMapping::new();
        insert_terms(&mut loss, Section::Image, &self.loss.image)?;
        insert_terms(&mut loss, Section::Label, &self.loss.label)?;
        insert_terms(
            &mut loss,
            Section::Regularization,
            &self.loss.regularization,
        )?;
        insert_terms(&mut loss, Section::Field, &self.loss.field)?;
        mapping.insert(value::key("loss"), ConfigValue::Mapping(loss));
        mapping.insert(
            value::key("optimizer"),
            ConfigValue::Mapping(component_mapping(&*self.optimizer)?),
        );
        mapping.insert(value::key("preprocess"), self.preprocess.to_value()?);
        mapping.insert(value::key("epochs"), ConfigValue::from(self.epochs as u64));
        mapping.insert(
            value::key("save_period"),
            ConfigValue::from(self.save_period as u64),
        );
        if let Some(update_freq) = &self.update_freq {
            mapping.insert(value::key("update_freq"), update_freq.clone());
        }
        Ok(ConfigValue::Mapping(mapping))
    }
}

impl PreprocessConfig {
    fn to_value(&self) -> Result<ConfigValue, ConfigError> {
        let mut mapping = ConfigMapping::new();
        let augmentations = self
            .data_augmentation
            .iter()
            .map(|a| component_mapping(&**a).map(ConfigValue::Mapping))
            .collect::<Result<Vec<_>, _>>()?;
        mapping.insert(
            value::key("data_augmentation"),
            ConfigValue::Sequence(augmentations),
        );
        mapping.insert(
            value::key("batch_size"),
            ConfigValue::from(self.batch_size as u64),
        );
        mapping.insert(
            value::key("shuffle_buffer_num_batch"),
            ConfigValue::from(self.shuffle_buffer_num_batch as u64),
        );
        mapping.insert(
            value::key("num_parallel_calls"),
            ConfigValue::from(self.num_parallel_calls),
        );
        Ok(ConfigValue::Mapping(mapping))
    }
}

fn insert_terms<K: Serialize + ?Sized>(
    loss: &mut ConfigMapping,
    section: Section,
    terms: &[LossTerm<K>],
) -> Result<(), ConfigError> {
    if terms.is_empty() {
        return Ok(());
    }
    let items = terms
        .iter()
        .map(|term| {
            let mut mapping = component_mapping(&*term.config)?;
            mapping.insert(value::key("weight"), term.weight.to_value());
            if let Some(inputs) = &term.inputs {
                let inputs = inputs.iter().cloned().map(ConfigValue::String).collect();
                mapping.insert(value::key("inputs"), ConfigValue::Sequence(inputs));
            }
            if let Some(mask) = term.mask {
                mapping.insert(
                    value::key("mask"),
                    ConfigValue::String(mask.key().to_owned()),
                );
            }
            Ok(ConfigValue::Mapping(mapping))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    loss.insert(value::key(section.key()), ConfigValue::Sequence(items));
    Ok(())
}

/// A component config as its mapping (`name` first).
fn component_mapping<K: Serialize + ?Sized>(config: &K) -> Result<ConfigMapping, ConfigError> {
    match value::to_value(config).map_err(ConfigError::Serialize)? {
        ConfigValue::Mapping(mapping) => Ok(mapping),
        other => Err(ConfigError::Serialize(format!(
            "a component config must serialise to a mapping, got {}",
            value::kind_name(&other)
        ))),
    }
}

/// A component as its bare name when it has no other keys (`method: ddf`), else its mapping.
fn compact_component<K: Serialize + ?Sized>(config: &K) -> Result<ConfigValue, ConfigError> {
    let mapping = component_mapping(config)?;
    if mapping.len() == 1 {
        if let Some(name) = mapping.get(value::key("name")) {
            return Ok(name.clone());
        }
    }
    Ok(ConfigValue::Mapping(mapping))
}
