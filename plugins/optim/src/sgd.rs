//! Stochastic gradient descent with (Nesterov) momentum, as Keras computes it.

use serde::{Deserialize, Serialize};
use voxreg_framework::candle::backprop::GradStore;
use voxreg_framework::candle::{self, Var};
use voxreg_framework::prelude::*;

use crate::state::{check_rate, Slots};

fn default_lr() -> f64 {
    0.01
}

/// `SGD`: `u ← μu − lr·g`, then `θ ← θ + u` (plain momentum) or `θ ← θ + μu − lr·g`
/// (Nesterov). With `μ = 0` this is `θ ← θ − lr·g`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Step size.
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// Momentum `μ` in [0, 1].
    #[serde(default)]
    pub momentum: f64,
    /// Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
}

const NAME: &str = "optimizer `sgd`";

#[typetag::serialize(name = "sgd")]
impl OptimizerConfig for SgdConfig {
    fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    fn build(&self, vars: Vec<Var>) -> Result<Box<dyn Optimizer>, ComponentError> {
        check_rate(NAME, "learning_rate", self.learning_rate, 0.0..=f64::MAX)?;
        check_rate(NAME, "momentum", self.momentum, 0.0..=1.0)?;
        let velocity =
            Slots::zeros("velocity", &vars).map_err(|e| ComponentError::tensor(NAME, e))?;
        Ok(Box::new(Sgd {
            config: self.clone(),
            vars,
            velocity,
            step: 0,
        }))
    }
}

register_component!(
    optimizer,
    "sgd",
    SgdConfig,
    "Stochastic gradient descent with optional (Nesterov) momentum"
);

struct Sgd {
    config: SgdConfig,
    vars: Vec<Var>,
    velocity: Slots,
    step: u64,
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> candle::Result<()> {
        self.step += 1;
        let SgdConfig {
            learning_rate,
            momentum,
            nesterov,
        } = self.config;
        for (index, var) in self.vars.iter().enumerate() {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let scaled = (grad * learning_rate)?;
            if momentum == 0.0 {
                var.set(&(var.as_tensor() - scaled)?)?;
                continue;
            }
            let velocity = ((self.velocity.get(index) * momentum)? - &scaled)?;
            let delta = if nesterov {
                ((&velocity * momentum)? - scaled)?
            } else {
                velocity.clone()
            };
            var.set(&(var.as_tensor() + delta)?)?;
            self.velocity.set(index, velocity);
        }
        Ok(())
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = Vec::new();
        self.velocity.export(&mut tensors);
        OptimizerState {
            step: self.step,
            tensors,
        }
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<(), ComponentError> {
        self.velocity.import(&state, NAME)?;
        self.step = state.step;
        Ok(())
    }
}
