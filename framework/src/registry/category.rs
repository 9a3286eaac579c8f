//! The kinds of component a config can select by name.

use std::fmt;

/// A category of registered components. Names are unique within a category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Networks mapping the stacked moving/fixed images to a field or affine parameters
    /// (`train.backbone`).
    Backbone,
    /// Registration methods: how backbone outputs become a transform (`train.method`).
    Method,
    /// Image dissimilarity losses (`train.loss.image`).
    ImageLoss,
    /// Label (segmentation) losses (`train.loss.label`).
    LabelLoss,
    /// Deformation regularisers (`train.loss.regularization`).
    Regularization,
    /// Losses between two fields, e.g. against a ground truth (`train.loss.field`).
    FieldLoss,
    /// Where a model's weights come from (`train.parameters`).
    ParamSource,
    /// Optimisers (`train.optimizer`).
    Optimizer,
    /// Samplers of image pairs from a dataset (`dataset.type`).
    DataLoader,
    /// Readers of image files (`dataset.<split>.format`).
    FileLoader,
    /// Random training-time transforms (`train.preprocess.data_augmentation`).
    Augmentation,
}

impl Category {
    /// Every category, in display order.
    pub const ALL: [Category; 11] = [
        Category::Backbone,
        Category::Method,
        Category::ImageLoss,
        Category::LabelLoss,
        Category::Regularization,
        Category::FieldLoss,
        Category::ParamSource,
        Category::Optimizer,
        Category::DataLoader,
        Category::FileLoader,
        Category::Augmentation,
    ];

    /// The category's name as printed and as accepted on the command line (`image_loss`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Backbone => "backbone",
            Category::Method => "method",
            Category::ImageLoss => "image_loss",
            Category::LabelLoss => "label_loss",
            Category::Regularization => "regularization",
            Category::FieldLoss => "field_loss",
            Category::ParamSource => "parameter_source",
            Category::Optimizer => "optimizer",
            Category::DataLoader => "data_loader",
            Category::FileLoader => "file_loader",
            Category::Augmentation => "augmentation",
        }
    }

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
