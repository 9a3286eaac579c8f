//! Adam, as Keras (and so DeepReg) computes it.

use serde::{Deserialize, Serialize};
use voxreg_framework::candle::backprop::GradStore;
use voxreg_framework::candle::{self, Tensor, Var};
use voxreg_framework::ops::inplace;
use voxreg_framework::prelude::*;

use crate::state::{check_rate, Slots};

fn default_lr() -> f64 {
    0.001
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

/// `Adam` with Keras' defaults and update (the "epsilon hat" form):
///
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ − lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε)`; with `amsgrad`, `v` in the last step is
/// replaced by the running maximum of `v`.
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

const NAME: &str = "optimizer `adam`";

#[typetag::serialize(name = "adam")]
impl OptimizerConfig for AdamConfig {
    fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    fn build(&self, vars: Vec<Var>) -> Result<Box<dyn Optimizer>, ComponentError> {
        check_rate(NAME, "learning_rate", self.learning_rate, 0.0..=f64::MAX)?;
        check_rate(NAME, "beta_1", self.beta_1, 0.0..=1.0)?;
        check_rate(NAME, "beta_2", self.beta_2, 0.0..=1.0)?;
        check_rate(NAME, "epsilon", self.epsilon, 0.0..=f64::MAX)?;
        let slots =
            |prefix| Slots::zeros(prefix, &vars).map_err(|e| ComponentError::tensor(NAME, e));
        Ok(Box::new(Adam {
            m: slots("m")?,
            v: slots("v")?,
            v_max: slots("v_max")?,
            config: self.clone(),
            vars,
            step: 0,
        }))
    }
}

register_component!(
    optimizer,
    "adam",
    AdamConfig,
    "Adam (Keras keys: learning_rate, beta_1, beta_2, epsilon, amsgrad)"
);

struct Adam {
    config: AdamConfig,
    vars: Vec<Var>,
    m: Slots,
    v: Slots,
    v_max: Slots,
    step: u64,
}

impl Adam {
    /// The update of weight `index` in one pass over its buffers where the in-place kernels
    /// apply (contiguous f32 / f64 on the CPU): the same values as the tensor-op form
    /// below, without its full-size temporaries. Returns whether it ran.
    fn step_in_place(
        &self,
        index: usize,
        var: &Var,
        grad: &Tensor,
        step_size: f64,
    ) -> candle::Result<bool> {
        let (m, v, v_max) = (self.m.get(index), self.v.get(index), self.v_max.get(index));
        let mut buffers = vec![var.as_tensor(), grad, m, v];
        if self.config.amsgrad {
            buffers.push(v_max);
        }
        if !inplace::applies(&buffers) {
            return Ok(false);
        }
        let AdamConfig {
            beta_1,
            beta_2,
            epsilon,
            amsgrad,
            ..
        } = self.config;
        inplace::moment_update(m, grad, beta_1, false)?;
        inplace::moment_update(v, grad, beta_2, true)?;
        let denominator = if amsgrad {
            inplace::maximum_update(v_max, v)?;
            v_max
        } else {
            v
        };
        inplace::adam_update(var.as_tensor(), m, denominator, step_size, epsilon)?;
        Ok(true)
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore) -> candle::Result<()> {
        self.step += 1;
        let AdamConfig {
            learning_rate,
            beta_1,
            beta_2,
            epsilon,
            amsgrad,
        } = self.config;
        let t = self.step as i32;
        let step_size = learning_rate * (1.0 - beta_2.powi(t)).sqrt() / (1.0 - beta_1.powi(t));
        for (index, var) in self.vars.iter().enumerate() {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            if self.step_in_place(index, var, grad, step_size)? {
                continue;
            }
            let m = ((self.m.get(index) * beta_1)? + (grad * (1.0 - beta_1))?)?;
            let v = ((self.v.get(index) * beta_2)? + (grad.sqr()? * (1.0 - beta_2))?)?;
            let denominator = if amsgrad {
                let v_max = self.v_max.get(index).maximum(&v)?;
                self.v_max.set(index, v_max.clone());
                v_max
            } else {
                v.clone()
            };
            let update = (&m / (denominator.sqrt()? + epsilon)?)?;
            var.set(&(var.as_tensor() - (update * step_size)?)?)?;
            self.m.set(index, m);
            self.v.set(index, v);
        }
        Ok(())
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = Vec::new();
        self.m.export(&mut tensors);
        self.v.export(&mut tensors);
        if self.config.amsgrad {
            self.v_max.export(&mut tensors);
        }
        OptimizerState {
            step: self.step,
            tensors,
        }
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<(), ComponentError> {
        self.m.import(&state, NAME)?;
        self.v.import(&state, NAME)?;
        if self.config.amsgrad {
            self.v_max.import(&state, NAME)?;
        }
        self.step = state.step;
        Ok(())
    }
}
