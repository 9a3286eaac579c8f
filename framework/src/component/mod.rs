//! The component traits: what a backbone, method, loss, parameter source, optimiser, data
//! loader, file loader or augmentation must do, and the shapes of what goes in and out.
//!
//! Every component comes in two parts:
//!
//! * a **config** type (`XConfig` traits): the YAML mapping that selects the component by
//!   `name` plus its keys, deserialised by the [`Registry`](crate::registry::Registry) and
//!   serialised back (with `name`) through `typetag`, so a resolved config round-trips; a
//!   config may hold other components ([`Component`](crate::config::Component)), decoded
//!   through the registry too;
//! * a **runtime** object (`X` traits) that the config builds and the engine calls.
//!
//! What flows through a step are named [`Tensors`] with declared [`Kind`]s and [`Grid`]s.
//! Tensors are channel-first: `(N, C, H, W)` in 2D and `(N, C, D, H, W)` in 3D. A dense
//! displacement field (DDF) is `(N, ndim, *spatial)` in voxel units, component `i`
//! displacing along spatial axis `i`.

mod augmentation;
mod backbone;
mod data;
mod error;
mod loss;
mod method;
mod optimizer;
mod params;
mod tensors;

pub use augmentation::{Augmentation, AugmentationConfig};
pub use backbone::{Backbone, BackboneConfig, BackboneOutput, BackboneSpec, Head};
pub use data::{
    DataLoader, DataLoaderConfig, FileLoader, FileLoaderConfig, ImageId, ImageShapes, Sample,
    SampleRef, Split, SplitSource, Volume,
};
pub use error::ComponentError;
pub use loss::{
    required_target, FieldLossConfig, ImageLossConfig, LabelLossConfig, Loss, RegularizationConfig,
};
pub use method::{Method, MethodConfig, MethodContext};
pub use optimizer::{Optimizer, OptimizerConfig, OptimizerState};
pub use params::{ParamContext, ParamSource, ParamSourceConfig};
pub use tensors::{names, pair_decls, Batch, Decl, Grid, Kind, Tensors};
