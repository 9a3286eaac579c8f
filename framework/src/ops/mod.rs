//! Spatial tensor ops for 2D and 3D registration, as candle custom ops with forward and
//! backward passes.
//!
//! Every op takes channel-first batched tensors (`(N, C, H, W)` or `(N, C, D, H, W)`), checks
//! shapes and returns a candle error on a mismatch, and has a hand-written CPU kernel for its
//! forward and backward passes (f32 and f64).

mod common;
pub mod conv;
pub mod diff;
pub mod filter;
pub mod pool;
pub mod resize;
pub mod transform;
pub mod warp;

pub use conv::{conv, conv_transpose, same_padding, up_padding, valid_padding};
pub use diff::{central_diff, central_diffs};
pub use filter::{
    gaussian_kernel, gaussian_kernel_sized, rectangular_kernel, separable_filter,
    separable_filter_axes, triangular_kernel,
};
pub use pool::{avg_pool, max_pool, pool, PoolKind};
pub use resize::{resize, upsample2x, Align, ResizeMode};
pub use transform::{
    affine_to_ddf, compose_ddf, dvf_to_ddf, identity_theta, random_ddf, reference_grid,
};
pub use warp::{warp, Interp, Padding};
