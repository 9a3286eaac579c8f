//! Built-in optimisers with Keras' class names and keyword arguments, as DeepReg configs
//! write them (`name: Adam`, `learning_rate: 1.0e-4`); names match case-insensitively.

use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

fn default_lr() -> f64 {
    0.001
}
fn default_lr_sgd() -> f64 {
    0.01
}
fn default_beta_1() -> f64 {
    0.9
}
fn default_beta_2() -> f64 {
    0.999
}
fn default_epsilon() -> f64 {
    1.0e-7
}
fn default_rho() -> f64 {
    0.9
}

/// `Adam` (Keras defaults): `m ← β₁m + (1-β₁)g`, `v ← β₂v + (1-β₂)g²`,
/// `θ ← θ - lr · m̂ / (√v̂ + ε)` with bias-corrected `m̂`, `v̂`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Step size.
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// First-moment decay.
    #[serde(default = "default_beta_1")]
    pub beta_1: f64,
    /// Second-moment decay.
    #[serde(default = "default_beta_2")]
    pub beta_2: f64,
    /// Added to the denominator.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
    /// Use the AMSGrad variant.
    #[serde(default)]
    pub amsgrad: bool,
}

#[typetag::serialize(name = "adam")]
impl OptimizerConfig for AdamConfig {
    fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    fn build(&self, _vars: Vec<Var>) -> Result<Box<dyn Optimizer>, ComponentError> {
        Err(ComponentError::not_implemented("optimizer `adam`"))
    }
}

register_component!(
    optimizer,
    "adam",
    AdamConfig,
    "Adam (Keras keys: learning_rate, beta_1, beta_2, epsilon, amsgrad)"
);

/// `SGD` with optional (Nesterov) momentum: `v ← μv - lr·g`, `θ ← θ + v` (Nesterov:
/// `θ ← θ + μv - lr·g`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Step size.
    #[serde(default = "default_lr_sgd")]
    pub learning_rate: f64,
    /// Momentum `μ` (0: plain SGD).
    #[serde(default)]
    pub momentum: f64,
    /// Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
}

#[typetag::serialize(name = "sgd")]
impl OptimizerConfig for SgdConfig {
    fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    fn build(&self, _vars: Vec<Var>) -> Result<Box<dyn Optimizer>, ComponentError> {
        Err(ComponentError::not_implemented("optimizer `sgd`"))
    }
}

register_component!(
    optimizer,
    "sgd",
    SgdConfig,
    "Stochastic gradient descent with optional (Nesterov) momentum"
);

/// `RMSprop`: `s ← ρs + (1-ρ)g²`, `θ ← θ - lr·g / (√s + ε)` (with optional momentum).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RmspropConfig {
    /// Step size.
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// Decay of the squared-gradient average.
    #[serde(default = "default_rho")]
    pub rho: f64,
    /// Momentum.
    #[serde(default)]
    pub momentum: f64,
    /// Added to the denominator.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
    /// Centred variant (divides by the gradient's estimated variance).
    #[serde(default)]
    pub centered: bool,
}

#[typetag::serialize(name = "rmsprop")]
impl OptimizerConfig for RmspropConfig {
    fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    fn build(&self, _vars: Vec<Var>) -> Result<Box<dyn Optimizer>, ComponentError> {
        Err(ComponentError::not_implemented("optimizer `rmsprop`"))
    }
}

register_component!(
    optimizer,
    "rmsprop",
    RmspropConfig,
    "RMSprop (Keras keys: learning_rate, rho, momentum, epsilon, centered)"
);
