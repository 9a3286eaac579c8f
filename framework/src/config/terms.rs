//! Loss terms: a section of `train.loss`, a weight, the names of the inputs and a loss
//! component.

use candle_core::Tensor;

use super::value::{self, ConfigMapping, ConfigValue};
use crate::component::names;
use crate::registry::Category;

/// A section of `train.loss`: it chooses the registry category of its components and the
/// inputs a term gets when it names none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// `image`: `[pred_fixed_image, fixed_image]`.
    Image,
    /// `label`: `[pred_fixed_label, fixed_label]`.
    Label,
    /// `regularization`: `[ddf]`.
    Regularization,
    /// `field`: `[ddf, true_ddf]`.
    Field,
}

impl Section {
    /// Every section, in the order terms are evaluated and written.
    pub const ALL: [Section; 4] = [
        Section::Image,
        Section::Label,
        Section::Regularization,
        Section::Field,
    ];

    /// The key under `train.loss`.
    pub fn key(self) -> &'static str {
        match self {
            Section::Image => "image",
            Section::Label => "label",
            Section::Regularization => "regularization",
            Section::Field => "field",
        }
    }

    /// The registry category of the section's components.
    pub fn category(self) -> Category {
        match self {
            Section::Image => Category::ImageLoss,
            Section::Label => Category::LabelLoss,
            Section::Regularization => Category::Regularization,
            Section::Field => Category::FieldLoss,
        }
    }

    /// The inputs of a term that names none: `[prediction, target]`, or `[field]`.
    pub fn default_inputs(self) -> &'static [&'static str] {
        match self {
            Section::Image => &[names::PRED_FIXED_IMAGE, names::FIXED_IMAGE],
            Section::Label => &[names::PRED_FIXED_LABEL, names::FIXED_LABEL],
            Section::Regularization => &[names::DDF],
            Section::Field => &[names::DDF, names::TRUE_DDF],
        }
    }

    /// How many inputs a term of this section takes.
    pub fn arity(self) -> usize {
        self.default_inputs().len()
    }
}

/// A term's weight: a constant, or a function of a hyperparameter of the step evaluated
/// per sample: `scale · λ`, or with `complement` `scale · (1 − λ)`.
#[derive(Clone, Debug, PartialEq)]
pub enum Weight {
    /// The same weight for every sample; 0 disables the term.
    Constant(f64),
    /// `{hyper: <name>, complement: <bool>, scale: <number>}`.
    Hyper {
        /// The hyperparameter's name (e.g. `lambda`).
        hyper: String,
        /// Use `1 − λ` instead of `λ`.
        complement: bool,
        /// A factor (default 1).
        scale: f64,
    },
}

impl Weight {
    /// Whether the term can be skipped: a weight that is 0 for every sample.
    pub fn is_zero(&self) -> bool {
        match self {
            Weight::Constant(w) => *w == 0.0,
            Weight::Hyper { scale, .. } => *scale == 0.0,
        }
    }

    /// The weight as written in a resolved config.
    pub fn to_value(&self) -> ConfigValue {
        match self {
            Weight::Constant(w) => ConfigValue::from(*w),
            Weight::Hyper {
                hyper,
                complement,
                scale,
            } => {
                let mut mapping = ConfigMapping::new();
                mapping.insert(value::key("hyper"), ConfigValue::String(hyper.clone()));
                mapping.insert(value::key("complement"), ConfigValue::Bool(*complement));
                mapping.insert(value::key("scale"), ConfigValue::from(*scale));
                ConfigValue::Mapping(mapping)
            }
        }
    }

    /// The per-sample weights `(N,)` for a hyperparameter `values` `(N,)`:
    /// `scale · values` or `scale · (1 − values)`.
    pub fn per_sample(
        complement: bool,
        scale: f64,
        values: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let values = if complement {
            values.affine(-1.0, 1.0)?
        } else {
            values.clone()
        };
        values.affine(scale, 0.0)
    }
}

/// Which voxels an image term compares (`mask` of an image term).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TermMask {
    /// `field_of_view`: only fixed voxels whose sampling point lies inside the moving image,
    /// weighted by how much of their linear interpolation does (the moving grid's ones
    /// warped by the DDF, zeros outside; differentiable in the DDF, so the loss the gradient
    /// sees is the loss that is measured). Voxels filled
    /// with the warp's zero padding are left out, so moving the image out of view is not
    /// rewarded (DLIR's tiles overlap only partly).
    FieldOfView,
}

impl TermMask {
    /// The YAML spelling.
    pub fn key(self) -> &'static str {
        match self {
            TermMask::FieldOfView => "field_of_view",
        }
    }
}

/// A loss component with its weight and inputs.
#[derive(Debug)]
pub struct LossTerm<K: ?Sized> {
    /// `weight` (default 1.0).
    pub weight: Weight,
    /// `inputs`: the names of the tensors the loss gets (`[prediction, target]` or
    /// `[field]`); `None` for the section's defaults.
    pub inputs: Option<Vec<String>>,
    /// `mask` (image terms): compare only these voxels; `None`: all.
    pub mask: Option<TermMask>,
    /// The loss component.
    pub config: Box<K>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn hyper_weights_are_evaluated_per_sample() {
        let lambda = Tensor::new(&[0.25f32, 1.0], &Device::Cpu).unwrap();
        let weights = Weight::per_sample(true, 2.0, &lambda).unwrap();
        assert_eq!(weights.to_vec1::<f32>().unwrap(), [1.5, 0.0]);
        let weights = Weight::per_sample(false, 2.0, &lambda).unwrap();
        assert_eq!(weights.to_vec1::<f32>().unwrap(), [0.5, 2.0]);
    }

    #[test]
    fn sections_have_deepregs_default_inputs() {
        assert_eq!(
            Section::Image.default_inputs(),
            ["pred_fixed_image", "fixed_image"]
        );
        assert_eq!(Section::Regularization.arity(), 1);
        assert_eq!(Section::Field.category(), Category::FieldLoss);
        assert!(Weight::Constant(0.0).is_zero());
        let weight = Weight::Hyper {
            hyper: "lambda".to_owned(),
            complement: true,
            scale: 1.0,
        };
        assert!(!weight.is_zero());
        assert_eq!(
            value::to_yaml_string(&weight.to_value()).unwrap(),
            "hyper: lambda\ncomplement: true\nscale: 1.0\n"
        );
    }
}
