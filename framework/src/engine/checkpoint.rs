//! Training checkpoints: the weights, the optimiser's state, the progress and the resolved
//! configuration, in one folder (`<run>/save/ckpt-<epoch>/` at the end of an epoch,
//! `<run>/save/ckpt-<epoch>-step-<step>/` when training is interrupted during an epoch), written to
//! a temporary folder and renamed into place so a failed write never leaves a half-written
//! checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::logs::Accumulator;
use super::run_dir::{io_error, save_tensors};
use super::{EngineError, Model};
use crate::component::{Optimizer, OptimizerState};

const WEIGHTS: &str = "weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const PROGRESS: &str = "progress.txt";
const CONFIG: &str = "config.yaml";

/// Where training stood when a checkpoint was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Epochs completed.
    pub epoch: usize,
    /// Steps already taken in the next epoch (an interrupted epoch), else 0.
    pub epoch_step: usize,
    /// Optimiser steps taken in all.
    pub steps: usize,
    /// The run's seed: every random draw derives from it, the epoch and the step, so it is
    /// the whole random state.
    pub seed: u64,
    /// The interrupted epoch's running sums of losses and metrics.
    pub partial: Accumulator,
}

/// The folder name of a checkpoint: `ckpt-<epoch>` after a whole epoch (DeepReg's name),
/// `ckpt-<epoch>-step-<step>` after `step` steps of epoch `epoch` (an interrupted epoch).
pub fn folder_name(progress: &Progress) -> String {
    match progress.epoch_step {
        0 => format!("ckpt-{}", progress.epoch),
        step => format!("ckpt-{}-step-{step}", progress.epoch + 1),
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

/// Writes a checkpoint folder `dir` (which must not exist yet) holding the weights, the
/// optimiser state, the progress and `config_yaml`.
pub fn save(
    dir: &Path,
    model: &Model,
    optimizer: &dyn Optimizer,
    progress: &Progress,
    config_yaml: &str,
) -> Result<(), EngineError> {
    if dir.exists() {
        return Err(EngineError::Io {
            path: dir.to_owned(),
            message: "a checkpoint is already there".to_owned(),
        });
    }
    let partial = crate::files::temporary_sibling(dir);
    let written = write_folder(&partial, dir, model, optimizer, progress, config_yaml);
    if written.is_err() {
        // A half-written temporary folder is useless; failing to remove it changes nothing.
        let _ = std::fs::remove_dir_all(&partial);
    }
    written
}

/// Writes the checkpoint's files into the temporary folder `partial` and renames it to `dir`.
fn write_folder(
    partial: &Path,
    dir: &Path,
    model: &Model,
    optimizer: &dyn Optimizer,
    progress: &Progress,
    config_yaml: &str,
) -> Result<(), EngineError> {
    std::fs::create_dir_all(partial).map_err(io_error(partial))?;
    save_tensors(&partial.join(WEIGHTS), &model.weight_tensors())?;
    let state = optimizer.state();
    let tensors: HashMap<String, Tensor> = state.tensors.into_iter().collect();
    save_tensors(&partial.join(OPTIMIZER), &tensors)?;
    let text = format!(
        "epoch={}\nepoch_step={}\nsteps={}\nseed={}\noptimizer_step={}\n{}",
        progress.epoch,
        progress.epoch_step,
        progress.steps,
        progress.seed,
        state.step,
        progress.partial.to_lines()
    );
    std::fs::write(partial.join(PROGRESS), text).map_err(io_error(partial))?;
    std::fs::write(partial.join(CONFIG), config_yaml).map_err(io_error(partial))?;
    std::fs::rename(partial, dir).map_err(io_error(dir))
}

/// The largest progress file read: it holds a few lines per loss term and metric.
const PROGRESS_LIMIT: u64 = 1 << 20;

/// Reads a progress file, refusing non-regular files and ones too large to be one.
fn read_progress(path: &Path) -> Result<String, EngineError> {
    let invalid = |message: String| EngineError::Io {
        path: path.to_owned(),
        message,
    };
    if let Some(problem) = crate::files::regular_file_problem(path) {
        return Err(invalid(problem));
    }
    let size = std::fs::metadata(path).map_err(io_error(path))?.len();
    if size > PROGRESS_LIMIT {
        return Err(invalid(format!(
            "{size} bytes, more than a progress file can hold ({PROGRESS_LIMIT}): it is damaged"
        )));
    }
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    String::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text: it is damaged".to_owned()))
}

/// Restores a checkpoint folder into `model` and `optimizer` and returns its progress.
/// Errors name the folder and what does not fit.
pub fn load(
    dir: &Path,
    model: &mut Model,
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
    let progress_file = dir.join(PROGRESS);
    let text = read_progress(&progress_file)?;
    let field = |key: &str| -> Result<u64, EngineError> {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| invalid(format!("{PROGRESS} lacks a valid `{key}`")))
    };
    let progress = Progress {
        epoch: field("epoch")? as usize,
        epoch_step: if text.lines().any(|l| l.starts_with("epoch_step=")) {
            field("epoch_step")? as usize
        } else {
            0
        },
        steps: field("steps")? as usize,
        seed: field("seed")?,
        partial: Accumulator::from_lines(&text)
            .ok_or_else(|| invalid(format!("{PROGRESS} has a malformed `sum.` line")))?,
    };
    if progress.epoch_step > progress.steps {
        return Err(invalid(format!(
            "{PROGRESS} says {} steps were taken in the interrupted epoch but {} in all: it is damaged",
            progress.epoch_step, progress.steps
        )));
    }
    model.load_weights(&dir.join(WEIGHTS))?;
    let optimizer_file = dir.join(OPTIMIZER);
    if let Some(problem) = crate::files::regular_file_problem(&optimizer_file) {
        return Err(EngineError::Io {
            path: optimizer_file,
            message: problem,
        });
    }
    let tensors = candle_core::safetensors::load(&optimizer_file, &Device::Cpu)
        .map_err(|e| invalid(format!("cannot read {OPTIMIZER}: {e}")))?;
    super::finite::refuse_non_finite(
        &optimizer_file,
        "optimiser state",
        tensors.iter().map(|(name, tensor)| (name.as_str(), tensor)),
    )?;
    optimizer.load_state(OptimizerState {
        step: field("optimizer_step")?,
        tensors: tensors.into_iter().collect(),
    })?;
    Ok(progress)
}
