//! Per-variable state buffers, shared by the optimisers.

use voxreg_framework::candle::{Result, Tensor, Var};
use voxreg_framework::prelude::*;

/// One named buffer per variable (e.g. Adam's first moments `m.0`, `m.1`, …), zero at start.
pub(crate) struct Slots {
    prefix: &'static str,
    tensors: Vec<Tensor>,
}

impl Slots {
    /// Zero buffers shaped like `vars`.
    pub(crate) fn zeros(prefix: &'static str, vars: &[Var]) -> Result<Self> {
        let tensors = vars
            .iter()
            .map(|v| v.as_tensor().zeros_like())
            .collect::<Result<Vec<_>>>()?;
        Ok(Slots { prefix, tensors })
    }

    /// Buffer `index`. Optimisers may update it in place: each buffer's storage is its own
    /// (created here, or restored as a copy).
    pub(crate) fn get(&self, index: usize) -> &Tensor {
        &self.tensors[index]
    }

    pub(crate) fn set(&mut self, index: usize, value: Tensor) {
        self.tensors[index] = value;
    }

    /// The buffers as named state tensors. They share storage with the buffers, which later
    /// steps update in place: a caller saves them before the next step (as checkpoints do).
    pub(crate) fn export(&self, out: &mut Vec<(String, Tensor)>) {
        for (index, tensor) in self.tensors.iter().enumerate() {
            out.push((format!("{}.{index}", self.prefix), tensor.clone()));
        }
    }

    /// Restores every buffer from `state`, checking names and shapes.
    pub(crate) fn import(
        &mut self,
        state: &OptimizerState,
        optimizer: &str,
    ) -> std::result::Result<(), ComponentError> {
        for (index, slot) in self.tensors.iter_mut().enumerate() {
            let name = format!("{}.{index}", self.prefix);
            let saved = state
                .tensors
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| {
                    ComponentError::invalid(optimizer, format!("saved state lacks `{name}`"))
                })?;
            if saved.dims() != slot.dims() {
                return Err(ComponentError::invalid(
                    optimizer,
                    format!(
                        "saved `{name}` has shape {:?}, the variable {:?}",
                        saved.dims(),
                        slot.dims()
                    ),
                ));
            }
            // A copy the optimiser owns: it updates its buffers in place.
            *slot = saved
                .to_dtype(slot.dtype())
                .and_then(|t| t.copy())
                .map_err(|e| {
                    ComponentError::tensor(format!("{optimizer}: restoring `{name}`"), e)
                })?;
        }
        Ok(())
    }
}

/// A learning rate or decay rate that makes sense: finite, and in `range`.
pub(crate) fn check_rate(
    optimizer: &str,
    key: &str,
    value: f64,
    range: std::ops::RangeInclusive<f64>,
) -> std::result::Result<(), ComponentError> {
    if value.is_finite() && range.contains(&value) {
        Ok(())
    } else {
        Err(ComponentError::invalid(
            optimizer,
            if *range.end() == f64::MAX {
                format!(
                    "`{key}` must be a finite number ≥ {}, got {value}",
                    range.start()
                )
            } else {
                format!(
                    "`{key}` must be in [{}, {}], got {value}",
                    range.start(),
                    range.end()
                )
            },
        ))
    }
}
