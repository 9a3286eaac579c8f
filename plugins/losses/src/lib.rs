//! Built-in losses with DeepReg's names, keys and defaults (`deepreg/loss/*.py`).
//!
//! DeepReg lets any loss sit in any category; here each is registered in the categories
//! DeepReg's documentation uses it in (`ssd` both as image and as label loss).
//!
//! Each loss is built from its config (`build(spatial_dims)`) and returns one value per batch
//! element, to be minimised (similarities negated). Image losses take `(N, 1, *spatial)`,
//! label losses `(N, L, *spatial)` (scored per label channel, averaged over channels),
//! regularisers a DDF `(N, ndim, *spatial)`, field losses two fields (`ssd` against a
//! ground truth, `inverse_consistency` of a field and its inverse). Losses with `scales` average the loss
//! over Gaussian- or Cauchy-smoothed copies of both inputs, as DeepReg's `MultiScaleMixin`.

mod atlalign;
mod atlalign_image;
mod atlalign_names;
mod config;
mod cpu;
mod deform;
mod deform_kernel;
mod field;
mod image;
mod jacobian;
mod kinds;
mod label;
#[cfg(test)]
mod lncc;
mod lncc_kernel;
mod perceptual;
mod saved;
mod scale;
mod simd;
#[cfg(test)]
mod testing;
mod util;
mod voxelmorph;
mod window;

pub use atlalign::{
    Dvf2ImgConfig, MsePoConfig, VdClipConfig, VectorDistanceConfig, VECTOR_DISTANCE_EPSILON,
};
pub use atlalign_image::{PearsonConfig, PsnrConfig, SsimConfig};
pub use atlalign_names::{
    AtlalignGradConfig, AtlalignNcc12Config, AtlalignNcc20Config, AtlalignNcc5Config,
    AtlalignNcc9Config, AtlalignVdClip2Config, AtlalignVdClip3Config,
};
pub use config::{
    BendingConfig, CrossEntropyConfig, DiceConfig, GmiConfig, GnccConfig, GradientConfig,
    JaccardConfig, LnccConfig, LnccKernel, OverlapConfig, ScaleKernel, SsdConfig,
};
pub use field::{FieldSsdConfig, InverseConsistencyConfig};
pub use jacobian::{jacobian_determinant, FoldingConfig, JacobianDistanceConfig, JacobianNorm};
pub use perceptual::{LpipsModel, LpipsNet, PerceptualConfig};
pub use voxelmorph::{GradPenalty, VxmDiceConfig, VxmGradConfig, VxmMseConfig, VxmNccConfig};
