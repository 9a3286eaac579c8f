//! Ties each config trait object type to its category.

use serde::Serialize;

use super::{Category, DecodeError, Registry};
use crate::component::{
    AugmentationConfig, BackboneConfig, DataLoaderConfig, FieldLossConfig, FileLoaderConfig,
    ImageLossConfig, LabelLossConfig, MethodConfig, OptimizerConfig, ParamSourceConfig,
    RegularizationConfig,
};
use crate::config::{self, ConfigValue, KeyPath, Problem};

/// A config trait object type (`dyn BackboneConfig`, …) and the category it is registered
/// under.
pub trait ComponentKind: Serialize + 'static {
    /// The category of this kind.
    const CATEGORY: Category;

    /// The `name` a config serialises with (its `typetag` name).
    fn serialized_name(config: &Self) -> Option<String> {
        match config::to_value(config).ok()? {
            ConfigValue::Mapping(mapping) => mapping
                .get(config::key("name"))
                .and_then(|name| name.as_str())
                .map(str::to_owned),
            _ => None,
        }
    }
}

macro_rules! kinds {
    ($($trait:ident => $category:ident),* $(,)?) => {
        $(impl ComponentKind for dyn $trait {
            const CATEGORY: Category = Category::$category;
        })*

        /// Decodes a component of any category and serialises it back (defaults filled in).
        pub(crate) fn decode_to_value(
            registry: &Registry,
            category: Category,
            name: &str,
            value: ConfigValue,
        ) -> Result<ConfigValue, DecodeError> {
            let serialized = match category {
                $(Category::$category => {
                    config::to_value(&registry.decode::<dyn $trait>(name, value)?)
                })*
            };
            serialized.map_err(|message| {
                DecodeError::Invalid(vec![Problem::new(KeyPath::root(), message)])
            })
        }
    };
}

kinds! {
    BackboneConfig => Backbone,
    MethodConfig => Method,
    ImageLossConfig => ImageLoss,
    LabelLossConfig => LabelLoss,
    RegularizationConfig => Regularization,
    FieldLossConfig => FieldLoss,
    ParamSourceConfig => ParamSource,
    OptimizerConfig => Optimizer,
    DataLoaderConfig => DataLoader,
    FileLoaderConfig => FileLoader,
    AugmentationConfig => Augmentation,
}
