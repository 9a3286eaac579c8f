//! Built-in losses with DeepReg's names, keys and defaults (`deepreg/loss/*.py`).
//!
//! DeepReg lets any loss sit in any category; here each is registered in the categories
//! DeepReg's documentation uses it in (`ssd` both as image and as label loss).

mod config;

pub use config::{
    BendingConfig, CrossEntropyConfig, DiceConfig, GmiConfig, GnccConfig, GradientConfig,
    JaccardConfig, LnccConfig, LnccKernel, OverlapConfig, ScaleKernel, SsdConfig,
};
