//! voxreg framework: component traits, registry, configuration, plugin ABI and tensor ops.

pub use candle_core as candle;
pub use candle_nn;

pub mod ops;
