//! Named tensors: what flows through one step. A data loader provides some (the moving and
//! fixed images and labels, ground-truth fields, …), a method adds its outputs (`ddf`,
//! `pred_fixed_image`, …), and losses, metrics, the NaN check and `predict`'s writers find
//! them by name and treat them by their declared [`Kind`] and [`Grid`].

use std::fmt;

use candle_core::Tensor;

/// The well-known tensor names. Anything else is allowed too; prefixes such as `inv/` (the
/// `inverse` method) and `stage.0/` (the `cascade` method) name the outputs of nested methods.
pub mod names {
    /// The moving images `(N, 1, *moving)`.
    pub const MOVING_IMAGE: &str = "moving_image";
    /// The fixed images `(N, 1, *fixed)`.
    pub const FIXED_IMAGE: &str = "fixed_image";
    /// The moving labels `(N, L, *moving)`.
    pub const MOVING_LABEL: &str = "moving_label";
    /// The fixed labels `(N, L, *fixed)`.
    pub const FIXED_LABEL: &str = "fixed_label";
    /// The predicted dense displacement field `(N, ndim, *fixed)`, in voxels.
    pub const DDF: &str = "ddf";
    /// The predicted velocity field `(N, ndim, *fixed)` (the `dvf` method).
    pub const DVF: &str = "dvf";
    /// Affine parameters `(N, ndim + 1, ndim)`.
    pub const THETA: &str = "theta";
    /// The moving image warped onto the fixed grid.
    pub const PRED_FIXED_IMAGE: &str = "pred_fixed_image";
    /// The moving labels warped onto the fixed grid, or the conditional prediction.
    pub const PRED_FIXED_LABEL: &str = "pred_fixed_label";
    /// The fixed image warped onto the moving grid by the inverse transform (the `bidir`
    /// option of the `ddf` and `dvf` methods).
    pub const PRED_MOVING_IMAGE: &str = "pred_moving_image";
    /// A ground-truth DDF (supervised registration).
    pub const TRUE_DDF: &str = "true_ddf";
    /// The moving image warped by the ground-truth DDF (a supervised image target, as
    /// atlalign trains its image loss).
    pub const TRUE_PRED_FIXED_IMAGE: &str = "true_pred_fixed_image";
    /// A ground-truth inverse DDF.
    pub const TRUE_INV_DDF: &str = "true_inv_ddf";
    /// The prefix of the `inverse` method's outputs on the swapped pair.
    pub const INVERSE_PREFIX: &str = "inv/";
}

/// What a tensor holds, which decides how losses, metrics and writers treat it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Intensities `(N, C, *spatial)`, normally in `[0, 1]`.
    Image,
    /// Labels `(N, L, *spatial)` with values in `[0, 1]`, one channel per label.
    Label,
    /// A dense displacement field `(N, ndim, *spatial)` in voxels: Jacobian statistics and a
    /// NIfTI file in `predict`.
    Field,
    /// A velocity field `(N, ndim, *spatial)` in voxels (integrated into a [`Kind::Field`]).
    Velocity,
    /// Affine parameters `(N, ndim + 1, ndim)` (DeepReg's convention).
    Affine,
    /// One value per sample, `(N,)`.
    Scalar,
}

impl Kind {
    /// The kind's name as written in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Label => "label",
            Kind::Field => "field",
            Kind::Velocity => "velocity field",
            Kind::Affine => "affine",
            Kind::Scalar => "scalar",
        }
    }

    /// Whether the tensor has a channel axis and spatial axes, `(N, C, *spatial)`.
    pub fn is_spatial(self) -> bool {
        matches!(
            self,
            Kind::Image | Kind::Label | Kind::Field | Kind::Velocity
        )
    }
}

/// The grid a spatial tensor lies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Grid {
    /// The moving image's grid.
    Moving,
    /// The fixed image's grid.
    Fixed,
    /// No grid (affine parameters, scalars).
    None,
}

impl Grid {
    /// The other image's grid (what the `inverse` method's swapped pair lies on).
    pub fn swapped(self) -> Grid {
        match self {
            Grid::Moving => Grid::Fixed,
            Grid::Fixed => Grid::Moving,
            Grid::None => Grid::None,
        }
    }
}

/// A declared tensor: its name, kind and grid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Decl {
    /// The name losses and writers find it by.
    pub name: String,
    /// What it holds.
    pub kind: Kind,
    /// Which grid it lies on.
    pub grid: Grid,
}

impl Decl {
    /// A declaration.
    pub fn new(name: impl Into<String>, kind: Kind, grid: Grid) -> Self {
        Decl {
            name: name.into(),
            kind,
            grid,
        }
    }

    /// The same declaration under `prefix` (`inv/`, `stage.0/`).
    pub fn prefixed(&self, prefix: &str) -> Self {
        Decl {
            name: format!("{prefix}{}", self.name),
            ..self.clone()
        }
    }
}

impl fmt::Display for Decl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({})", self.name, self.kind.as_str())
    }
}

/// The declarations of DeepReg's inputs: the moving and fixed images and, for labelled data,
/// their labels.
pub fn pair_decls(labeled: bool) -> Vec<Decl> {
    let mut decls = vec![
        Decl::new(names::MOVING_IMAGE, Kind::Image, Grid::Moving),
        Decl::new(names::FIXED_IMAGE, Kind::Image, Grid::Fixed),
    ];
    if labeled {
        decls.push(Decl::new(names::MOVING_LABEL, Kind::Label, Grid::Moving));
        decls.push(Decl::new(names::FIXED_LABEL, Kind::Label, Grid::Fixed));
    }
    decls
}

/// Named tensors with their declarations, in insertion order (the order the NaN check, the
/// metrics and the writers visit them). Inserting a name again replaces the tensor in place.
#[derive(Clone, Debug, Default)]
pub struct Tensors {
    entries: Vec<(Decl, Tensor)>,
}

impl Tensors {
    /// No tensors.
    pub fn new() -> Self {
        Tensors::default()
    }

    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, decl: Decl, tensor: Tensor) {
        match self.entries.iter_mut().find(|(d, _)| d.name == decl.name) {
            Some(entry) => *entry = (decl, tensor),
            None => self.entries.push((decl, tensor)),
        }
    }

    /// Adds (or replaces) a tensor of `kind` on `grid` under `name`.
    pub fn put(&mut self, name: &str, kind: Kind, grid: Grid, tensor: Tensor) {
        self.insert(Decl::new(name, kind, grid), tensor);
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entry(name).map(|(_, t)| t)
    }

    /// The tensor named `name` with its declaration.
    pub fn entry(&self, name: &str) -> Option<(&Decl, &Tensor)> {
        self.entries
            .iter()
            .find(|(d, _)| d.name == name)
            .map(|(d, t)| (d, t))
    }

    /// The tensor named `name`, or an error naming it and what there is.
    pub fn require(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.entries.iter().map(|(d, _)| d.name.as_str()).collect();
            candle_core::Error::Msg(format!(
                "no tensor `{name}` in this step (there are: {})",
                known.join(", ")
            ))
        })
    }

    /// Removes and returns the tensor named `name`.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        let index = self.entries.iter().position(|(d, _)| d.name == name)?;
        Some(self.entries.remove(index).1)
    }

    /// Every tensor with its declaration, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&Decl, &Tensor)> {
        self.entries.iter().map(|(d, t)| (d, t))
    }

    /// The declarations, in insertion order.
    pub fn decls(&self) -> impl Iterator<Item = &Decl> {
        self.entries.iter().map(|(d, _)| d)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds every tensor of `other` under `prefix` (`inv/`, `stage.0/`).
    pub fn extend_prefixed(&mut self, prefix: &str, other: &Tensors) {
        for (decl, tensor) in other.iter() {
            self.insert(decl.prefixed(prefix), tensor.clone());
        }
    }

    /// Adds every tensor of `other`, replacing those of the same name.
    pub fn extend(&mut self, other: Tensors) {
        for (decl, tensor) in other.entries {
            self.insert(decl, tensor);
        }
    }

    /// Applies `f` to every tensor (e.g. taking one sample out of a batch), keeping the
    /// declarations.
    pub fn map(
        &self,
        mut f: impl FnMut(&Decl, &Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensors> {
        let entries = self
            .entries
            .iter()
            .map(|(d, t)| Ok((d.clone(), f(d, t)?)))
            .collect::<candle_core::Result<_>>()?;
        Ok(Tensors { entries })
    }
}

/// A batch as a step sees it: the data loader's named tensors (already resized and
/// normalised) and the step's hyperparameters, one value per sample.
///
/// # Shapes
/// * `moving_image`: `(N, 1, *moving)`, `fixed_image`: `(N, 1, *fixed)`, intensities in
///   `[0, 1]`;
/// * `moving_label` / `fixed_label`: `(N, L, *spatial)` with values in `[0, 1]`, one channel
///   per label, present only for labelled data;
/// * any other tensor as its declaration says; each hyperparameter `(N,)`.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// The named tensors.
    pub tensors: Tensors,
    /// Hyperparameters of the step by name (e.g. HyperMorph's `lambda`), each `(N,)`.
    pub hyper: Vec<(String, Tensor)>,
}

impl Batch {
    /// DeepReg's pair batch: the moving and fixed images and, if given, their labels.
    pub fn pair(
        moving_image: Tensor,
        fixed_image: Tensor,
        moving_label: Option<Tensor>,
        fixed_label: Option<Tensor>,
    ) -> Self {
        let mut tensors = Tensors::new();
        tensors.put(names::MOVING_IMAGE, Kind::Image, Grid::Moving, moving_image);
        tensors.put(names::FIXED_IMAGE, Kind::Image, Grid::Fixed, fixed_image);
        if let Some(label) = moving_label {
            tensors.put(names::MOVING_LABEL, Kind::Label, Grid::Moving, label);
        }
        if let Some(label) = fixed_label {
            tensors.put(names::FIXED_LABEL, Kind::Label, Grid::Fixed, label);
        }
        Batch {
            tensors,
            hyper: Vec::new(),
        }
    }

    /// The moving images.
    pub fn moving_image(&self) -> candle_core::Result<&Tensor> {
        self.tensors.require(names::MOVING_IMAGE)
    }

    /// The fixed images.
    pub fn fixed_image(&self) -> candle_core::Result<&Tensor> {
        self.tensors.require(names::FIXED_IMAGE)
    }

    /// The moving labels, for labelled data.
    pub fn moving_label(&self) -> Option<&Tensor> {
        self.tensors.get(names::MOVING_LABEL)
    }

    /// The fixed labels, for labelled data.
    pub fn fixed_label(&self) -> Option<&Tensor> {
        self.tensors.get(names::FIXED_LABEL)
    }

    /// The hyperparameter `name`, `(N,)`.
    pub fn hyper(&self, name: &str) -> Option<&Tensor> {
        self.hyper.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The batch size (of the moving images).
    pub fn batch_size(&self) -> candle_core::Result<usize> {
        self.moving_image()?.dim(0)
    }

    /// The same batch with moving and fixed exchanged: images, labels and every other
    /// tensor's grid (the `inverse` method runs its inner method on this).
    pub fn swapped(&self) -> Batch {
        let swap = |name: &str| -> String {
            match name {
                names::MOVING_IMAGE => names::FIXED_IMAGE.to_owned(),
                names::FIXED_IMAGE => names::MOVING_IMAGE.to_owned(),
                names::MOVING_LABEL => names::FIXED_LABEL.to_owned(),
                names::FIXED_LABEL => names::MOVING_LABEL.to_owned(),
                names::TRUE_DDF => names::TRUE_INV_DDF.to_owned(),
                names::TRUE_INV_DDF => names::TRUE_DDF.to_owned(),
                other => other.to_owned(),
            }
        };
        let mut tensors = Tensors::new();
        for (decl, tensor) in self.tensors.iter() {
            let decl = Decl::new(swap(&decl.name), decl.kind, decl.grid.swapped());
            tensors.insert(decl, tensor.clone());
        }
        Batch {
            tensors,
            hyper: self.hyper.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn zeros(c: usize) -> Tensor {
        Tensor::zeros((1, c, 2, 2), DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn tensors_keep_their_order_and_replace_in_place() {
        let mut tensors = Tensors::new();
        tensors.put("ddf", Kind::Field, Grid::Fixed, zeros(2));
        tensors.put("pred_fixed_image", Kind::Image, Grid::Fixed, zeros(1));
        tensors.put("ddf", Kind::Field, Grid::Fixed, zeros(2));
        let names: Vec<&str> = tensors.decls().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["ddf", "pred_fixed_image"]);
        let error = tensors.require("theta").unwrap_err().to_string();
        assert!(error.contains("no tensor `theta`"), "{error}");
        assert!(error.contains("ddf, pred_fixed_image"), "{error}");
        let mut outer = Tensors::new();
        outer.extend_prefixed("inv/", &tensors);
        assert_eq!(outer.entry("inv/ddf").unwrap().0.kind, Kind::Field);
        assert_eq!(tensors.remove("ddf").unwrap().dims(), &[1, 2, 2, 2]);
        assert_eq!(tensors.len(), 1);
    }

    #[test]
    fn a_swapped_batch_exchanges_moving_and_fixed() {
        let moving = Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let mut batch = Batch::pair(moving, zeros(1), Some(zeros(1)), Some(zeros(1)));
        batch
            .tensors
            .put(names::TRUE_DDF, Kind::Field, Grid::Fixed, zeros(2));
        let swapped = batch.swapped();
        let sum = |t: &Tensor| t.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(sum(swapped.fixed_image().unwrap()), 4.0);
        assert_eq!(sum(swapped.moving_image().unwrap()), 0.0);
        let (decl, _) = swapped.tensors.entry(names::TRUE_INV_DDF).unwrap();
        assert_eq!(decl.grid, Grid::Moving);
        assert_eq!(swapped.moving_label().unwrap().dims(), &[1, 1, 2, 2]);
    }
}
