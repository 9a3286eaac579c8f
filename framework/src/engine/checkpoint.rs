//! Training checkpoints: the weights, the optimiser's state and the progress, in one folder
//! (`<run>/save/ckpt-<epoch>/`), written to a temporary folder and renamed into place so a
//! failed write never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::{tensor_error, EngineError, Model};
use crate::component::{Optimizer, OptimizerState};

const WEIGHTS: &str = "weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const PROGRESS: &str = "progress.txt";

/// Where training stood when a checkpoint was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// The run's seed.
    pub seed: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The weights file of a checkpoint given as its folder, or the file itself.
pub fn weights_file(checkpoint: &Path) -> PathBuf {
    if checkpoint.is_dir() {
        checkpoint.join(WEIGHTS)
    } else {
        checkpoint.to_owned()
    }
}

/// Writes a checkpoint folder `dir` (which must not exist yet).
pub fn save(
    dir: &Path,
    model: &Model<'_>,
    optimizer: &dyn Optimizer,
    progress: Progress,
) -> Result<(), EngineError> {
    if dir.exists() {
        return Err(EngineError::Io {
            path: dir.to_owned(),
            message: "a checkpoint is already there".to_owned(),
        });
    }
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("ckpt");
    let partial = dir.with_file_name(format!(".{name}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    model
        .variables
        .save(partial.join(WEIGHTS))
        .map_err(tensor_error(format!(
            "saving {}",
            dir.join(WEIGHTS).display()
        )))?;
    let state = optimizer.state();
    let tensors: HashMap<String, Tensor> = state.tensors.into_iter().collect();
    candle_core::safetensors::save(&tensors, partial.join(OPTIMIZER)).map_err(tensor_error(
        format!("saving {}", dir.join(OPTIMIZER).display()),
    ))?;
    let text = format!(
        "epoch={}\nsteps={}\nseed={}\noptimizer_step={}\n",
        progress.epoch, progress.steps, progress.seed, state.step
    );
    std::fs::write(partial.join(PROGRESS), text).map_err(io(&partial))?;
    std::fs::rename(&partial, dir).map_err(io(dir))
}

/// Restores a checkpoint folder into `model` and `optimizer` and returns its progress.
/// Errors name the folder and what does not fit.
pub fn load(
    dir: &Path,
    model: &mut Model<'_>,
    optimizer: &mut dyn Optimizer,
) -> Result<Progress, EngineError> {
    let invalid = |message: String| EngineError::Io {
        path: dir.to_owned(),
        message,
    };
    if !dir.is_dir() {
        return Err(invalid(
            "not a checkpoint folder (training writes them as <run>/save/ckpt-<epoch>)".to_owned(),
        ));
    }
    let text = std::fs::read_to_string(dir.join(PROGRESS)).map_err(io(&dir.join(PROGRESS)))?;
    let field = |key: &str| -> Result<u64, EngineError> {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| invalid(format!("{PROGRESS} lacks a valid `{key}`")))
    };
    let progress = Progress {
        epoch: field("epoch")? as usize,
        steps: field("steps")? as usize,
        seed: field("seed")?,
    };
    model.load_weights(&dir.join(WEIGHTS))?;
    let tensors = candle_core::safetensors::load(dir.join(OPTIMIZER), &Device::Cpu)
        .map_err(|e| invalid(format!("cannot read {OPTIMIZER}: {e}")))?;
    optimizer.load_state(OptimizerState {
        step: field("optimizer_step")?,
        tensors: tensors.into_iter().collect(),
    })?;
    Ok(progress)
}
