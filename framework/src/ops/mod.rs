//! Spatial tensor ops for 2D and 3D registration, as candle custom ops with forward and
//! backward passes.
//!
//! Every op takes channel-first batched tensors (`(N, C, H, W)` or `(N, C, D, H, W)`), checks
//! shapes and returns a candle error on a mismatch (never a panic), and has a hand-written CPU
//! kernel for its forward and backward passes, in f32 and f64. Gradients are checked against
//! central finite differences in the tests beside each op.
//!
//! | op | functions |
//! | --- | --- |
//! | warping / resampling by a DDF | [`warp()`] ([`Interp`], [`Padding`]) |
//! | convolution, transposed convolution | [`conv()`], [`conv_transpose`], [`same_padding`], [`valid_padding`], [`up_padding`] |
//! | pooling | [`pool()`], [`max_pool`], [`avg_pool`] ([`PoolKind`]) |
//! | resizing | [`resize()`], [`upsample2x`] ([`ResizeMode`], [`Align`]) |
//! | separable filtering | [`separable_filter`], [`separable_filter_axes`], [`gaussian_kernel`], [`gaussian_kernel_sized`], [`rectangular_kernel`], [`triangular_kernel`] |
//! | batch normalisation (+ ReLU) | [`batch_norm`] |
//! | finite differences | [`central_diff`], [`central_diffs`] |
//! | bias + rectifier (fused) | [`bias_rectify`] ([`Rectifier`]) |
//! | cubic B-spline fields | [`bspline_ddf`], [`bspline_grid_shape`], [`bounded_coefficients`] |
//! | in-place optimiser updates (CPU) | [`inplace::moment_update`], [`inplace::maximum_update`], [`inplace::adam_update`] |
//! | transforms | [`reference_grid`], [`affine_to_ddf`], [`identity_theta`], [`compose_ddf`], [`dvf_to_ddf`], [`random_ddf`] |
//!
//! Conventions: a DDF is `(N, ndim, *spatial)` in voxel units, component `i` displacing along
//! spatial axis `i` (axis 0 = the first spatial axis). Kernels split their work into rayon
//! tasks that own disjoint parts of the output; scatters (adjoints) either run per channel or
//! accumulate in bounded private buffers (see each module). Only the CPU is implemented: each
//! op is a `CustomOp` whose `cuda_fwd` can be added without touching callers.

pub mod activation;
pub mod bspline;
pub mod common;
pub mod conv;
pub mod diff;
pub mod filter;
pub mod inplace;
pub mod norm;
pub mod pool;
pub mod resize;
pub mod transform;
pub mod warp;

pub use activation::{bias_rectify, Rectifier};
pub use bspline::{bounded_coefficients, bspline_ddf, bspline_grid_shape};
pub use conv::{conv, conv_transpose, same_padding, up_padding, valid_padding};
pub use diff::{central_diff, central_diffs};
pub use filter::{
    gaussian_kernel, gaussian_kernel_sized, rectangular_kernel, separable_filter,
    separable_filter_axes, triangular_kernel,
};
pub use norm::batch_norm;
pub use pool::{avg_pool, max_pool, pool, PoolKind};
pub use resize::{resize, upsample2x, Align, ResizeMode};
pub use transform::{
    affine_to_ddf, compose_ddf, dvf_to_ddf, identity_theta, random_ddf, reference_grid,
};
pub use warp::{warp, Interp, Padding};
