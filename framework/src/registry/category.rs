//! The kinds of component a config can select by name.

use std::fmt;

use super::{ComponentKind, DecodeError, Registry};
use crate::config::{self, ConfigValue, KeyPath, Problem};

/// The one table of categories: each line gives the enum variant, the name (as printed, as
/// accepted on the command line and as the first argument of `register_component!`) and the
/// config trait. Adding a category is one line here (and its trait in `component`); the enum,
/// [`Category::ALL`], [`Category::as_str`], the [`ComponentKind`] impls, the decoding by
/// category and the registration macros' lookup all come from it.
macro_rules! categories {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:ident : $config:ident,)*) => {
        /// A category of registered components. Names are unique within a category.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Category {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Category {
            /// Every category, in display order.
            pub const ALL: [Category; [$(stringify!($variant)),*].len()] =
                [$(Category::$variant),*];

            /// The category's name as printed and as accepted on the command line
            /// (`image_loss`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Category::$variant => stringify!($name),)*
                }
            }
        }

        $(impl ComponentKind for dyn crate::component::$config {
            const CATEGORY: Category = Category::$variant;
        })*

        /// Decodes a component of any category and serialises it back (defaults filled in).
        pub(crate) fn decode_to_value(
            registry: &Registry,
            category: Category,
            name: &str,
            value: ConfigValue,
        ) -> Result<ConfigValue, DecodeError> {
            let serialized = match category {
                $(Category::$variant => config::to_value(
                    &registry.decode::<dyn crate::component::$config>(name, value)?,
                ),)*
            };
            serialized.map_err(|message| {
                DecodeError::Invalid(vec![Problem::new(KeyPath::root(), message)])
            })
        }

        /// For `register_component!`: per category name, its [`Category`] and config trait.
        #[doc(hidden)]
        pub mod slot {
            $(
                #[doc(hidden)]
                pub mod $name {
                    /// The category.
                    pub const CATEGORY: super::super::Category = super::super::Category::$variant;
                    /// The config trait object type.
                    pub type Config = dyn crate::component::$config;
                }
            )*
        }
    };
}

categories! {
    /// Networks mapping the stacked moving/fixed images to a field or affine parameters
    /// (`train.backbone`).
    Backbone = backbone: BackboneConfig,
    /// Registration methods: how backbone outputs become a transform (`train.method`).
    Method = method: MethodConfig,
    /// Image dissimilarity losses (`train.loss.image`).
    ImageLoss = image_loss: ImageLossConfig,
    /// Label (segmentation) losses (`train.loss.label`).
    LabelLoss = label_loss: LabelLossConfig,
    /// Deformation regularisers (`train.loss.regularization`).
    Regularization = regularization: RegularizationConfig,
    /// Losses between two fields, e.g. against a ground truth (`train.loss.field`).
    FieldLoss = field_loss: FieldLossConfig,
    /// Where a model's weights come from (`train.parameters`).
    ParamSource = parameter_source: ParamSourceConfig,
    /// Optimisers (`train.optimizer`).
    Optimizer = optimizer: OptimizerConfig,
    /// Samplers of image pairs from a dataset (`dataset.type`).
    DataLoader = data_loader: DataLoaderConfig,
    /// Readers of image files (`dataset.<split>.format`).
    FileLoader = file_loader: FileLoaderConfig,
    /// Random training-time transforms (`train.preprocess.data_augmentation`).
    Augmentation = augmentation: AugmentationConfig,
}

impl Category {
    /// Parses a category name as printed by [`Category::as_str`] (`-` and `_` are equivalent).
    pub fn parse(text: &str) -> Option<Category> {
        let wanted = text.replace('-', "_");
        Category::ALL.into_iter().find(|c| c.as_str() == wanted)
    }

    /// Whether names in this category match regardless of case. Optimiser names are: DeepReg
    /// configs spell them both as Keras classes (`Adam`) and in lower case (`adam`).
    pub fn case_insensitive(self) -> bool {
        matches!(self, Category::Optimizer)
    }

    /// The form under which a name is stored and looked up in this category.
    pub fn normalize(self, name: &str) -> String {
        if self.case_insensitive() {
            name.to_ascii_lowercase()
        } else {
            name.to_owned()
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_every_category() {
        for category in Category::ALL {
            assert_eq!(Category::parse(category.as_str()), Some(category));
        }
        assert_eq!(Category::parse("image-loss"), Some(Category::ImageLoss));
        assert_eq!(Category::parse("loss"), None);
    }

    #[test]
    fn only_optimizers_ignore_case() {
        assert_eq!(Category::Optimizer.normalize("Adam"), "adam");
        assert_eq!(Category::Backbone.normalize("UNet"), "UNet");
    }
}
