//! RMSprop, as TensorFlow's Keras computes it.

use serde::{Deserialize, Serialize};
use voxreg_framework::candle::backprop::GradStore;
use voxreg_framework::candle::{self, Var};
use voxreg_framework::prelude::*;

use crate::state::{check_rate, Slots};

fn default_lr() -> f64 {
    0.001
}
fn default_rho() -> f64 {
    0.9
}
fn default_epsilon() -> f64 {
    1.0e-7
}

/// `RMSprop`: `s ← ρs + (1−ρ)g²`; centred: also `ḡ ← ρḡ + (1−ρ)g` and `s` replaced by
/// `s − ḡ²` below; `u ← μu + lr·g / √(s + ε)`; `θ ← θ − u`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RmspropConfig {
    /// Step size.
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// Decay of the squared-gradient average.
    #[serde(default = "default_rho")]
    pub rho: f64,
    /// Momentum `μ`.
    #[serde(default)]
    pub momentum: f64,
    /// Added under the square root.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
    /// Centred variant: divide by the gradient's estimated variance.
    #[serde(default)]
    pub centered: bool,
}

const NAME: &str = "optimizer `rmsprop`";

#[typetag::serialize(name = "rmsprop")]
impl OptimizerConfig for RmspropConfig {
    fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    fn build(&self, vars: Vec<Var>) -> Result<Box<dyn Optimizer>, ComponentError> {
        check_rate(NAME, "learning_rate", self.learning_rate, 0.0..=f64::MAX)?;
        check_rate(NAME, "rho", self.rho, 0.0..=1.0)?;
        check_rate(NAME, "momentum", self.momentum, 0.0..=1.0)?;
        check_rate(NAME, "epsilon", self.epsilon, 0.0..=f64::MAX)?;
        let slots =
            |prefix| Slots::zeros(prefix, &vars).map_err(|e| ComponentError::tensor(NAME, e));
        Ok(Box::new(Rmsprop {
            mean_square: slots("ms")?,
            mean_grad: slots("mg")?,
            momentum: slots("mom")?,
            config: self.clone(),
            vars,
            step: 0,
        }))
    }
}

register_component!(
    optimizer,
    "rmsprop",
    RmspropConfig,
    "RMSprop (Keras keys: learning_rate, rho, momentum, epsilon, centered)"
);

struct Rmsprop {
    config: RmspropConfig,
    vars: Vec<Var>,
    mean_square: Slots,
    mean_grad: Slots,
    momentum: Slots,
    step: u64,
}

impl Optimizer for Rmsprop {
    fn step(&mut self, grads: &GradStore) -> candle::Result<()> {
        self.step += 1;
        let RmspropConfig {
            learning_rate,
            rho,
            momentum,
            epsilon,
            centered,
        } = self.config;
        for (index, var) in self.vars.iter().enumerate() {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let mean_square =
                ((self.mean_square.get(index) * rho)? + (grad.sqr()? * (1.0 - rho))?)?;
            let variance = if centered {
                let mean_grad = ((self.mean_grad.get(index) * rho)? + (grad * (1.0 - rho))?)?;
                let variance = (&mean_square - mean_grad.sqr()?)?;
                self.mean_grad.set(index, mean_grad);
                variance
            } else {
                mean_square.clone()
            };
            let step = ((grad * learning_rate)? / (variance + epsilon)?.sqrt()?)?;
            let update = ((self.momentum.get(index) * momentum)? + step)?;
            var.set(&(var.as_tensor() - &update)?)?;
            self.mean_square.set(index, mean_square);
            self.momentum.set(index, update);
        }
        Ok(())
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = Vec::new();
        self.mean_square.export(&mut tensors);
        self.momentum.export(&mut tensors);
        if self.config.centered {
            self.mean_grad.export(&mut tensors);
        }
        OptimizerState {
            step: self.step,
            tensors,
        }
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<(), ComponentError> {
        self.mean_square.import(&state, NAME)?;
        self.momentum.import(&state, NAME)?;
        if self.config.centered {
            self.mean_grad.import(&state, NAME)?;
        }
        self.step = state.step;
        Ok(())
    }
}
