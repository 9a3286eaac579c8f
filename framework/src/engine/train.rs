//! The training loop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::batch_metrics::{add_batch_metrics, first_non_finite, first_non_finite_output};
use super::checkpoint::{self, Progress};
use super::logs::{write_csv, Accumulator, EpochLog};
use super::losses::LossTerms;
use super::run_dir::{config_yaml, save_weights, write_config};
use super::validate::validate;
use super::{tensor_error, EngineError, Model};
use crate::component::{DataLoader, Split, SplitSource};
use crate::config::Config;
use crate::data::{shuffle_buffer, to_pair_batch, BatchStream, PipelineConfig};
use crate::rng::{mix, SplitMix};

/// Options beyond the configuration.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Seed of weight initialisation, sampling and augmentation (same seed + same config →
    /// same losses and weights).
    pub seed: u64,
    /// Overrides `train.epochs`.
    pub max_epochs: Option<usize>,
    /// Where to write `config.yaml`, `train_metrics.csv`, `valid_metrics.csv`,
    /// `save/ckpt-<epoch>/` checkpoints and `save/weights.safetensors`; nothing is written when
    /// `None`.
    pub run_dir: Option<PathBuf>,
    /// A checkpoint folder to resume from: its weights, optimiser state and progress.
    pub resume: Option<PathBuf>,
    /// When set (e.g. by Ctrl-C), training stops after the current step, writes a checkpoint
    /// and returns [`EngineError::Interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
}

/// Hooks that see training progress as it happens (progress bars, logs). Every method does
/// nothing by default.
pub trait TrainObserver {
    /// Epoch `epoch` of `epochs` starts; it has `steps` steps, of which `done` were taken
    /// before a resume.
    fn epoch_started(&mut self, _epoch: usize, _epochs: usize, _steps: usize, _done: usize) {}
    /// A step (1-based within the epoch) finished with this total loss.
    fn step_finished(&mut self, _step: usize, _loss: f64) {}
    /// Validation of the epoch starts.
    fn validation_started(&mut self) {}
    /// An epoch ended (after validation).
    fn epoch_finished(&mut self, _log: &EpochLog) {}
}

/// The observer that watches nothing.
impl TrainObserver for () {}

/// What training did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainSummary {
    /// One entry per epoch run.
    pub epochs: Vec<EpochLog>,
    /// Optimiser steps taken in all (including those before a resume).
    pub steps: usize,
}

/// Builds the split's data loader.
pub(super) fn split_loader(
    config: &Config,
    split: Split,
) -> Result<Arc<dyn DataLoader>, EngineError> {
    let section = match split {
        Split::Train => &config.dataset.train,
        Split::Valid => &config.dataset.valid,
        Split::Test => &config.dataset.test,
    };
    let section = section.as_ref().ok_or_else(|| {
        EngineError::Config(format!(
            "the configuration has no `dataset.{}` split with a `dir`",
            split.as_str()
        ))
    })?;
    let loader = config.dataset.loader.build(&SplitSource {
        split,
        dirs: &section.dir,
        format: &*section.format,
        labeled: section.labeled,
    })?;
    Ok(Arc::from(loader))
}

/// Loader threads from `num_parallel_calls` (-1: one per core).
pub(super) fn loader_threads(config: &Config) -> usize {
    usize::try_from(config.train.preprocess.num_parallel_calls).unwrap_or(0)
}

/// Trains the configuration's model on its `train` split, validating after every epoch when
/// the configuration has a `valid` split, and returns it with the per-epoch logs.
///
/// Each step: load a batch, apply the augmentations, run the method, check its outputs are
/// finite, compute the loss terms (each must be finite), back-propagate, check the gradients
/// are finite, and step the optimiser. A NaN or infinity stops training with
/// [`EngineError::NonFinite`] naming the epoch, the step and where it appeared; the
/// checkpoints already written are kept.
pub fn train<'c>(
    config: &'c Config,
    options: &TrainOptions,
    observer: &mut dyn TrainObserver,
) -> Result<(Model<'c>, TrainSummary), EngineError> {
    let device = Device::Cpu;
    let mut model = Model::build_seeded(config, &device, options.seed)?;
    let loader = split_loader(config, Split::Train)?;
    let valid_loader = match config.dataset.valid {
        Some(_) => Some(split_loader(config, Split::Valid)?),
        None => None,
    };
    let preprocess = &config.train.preprocess;
    let terms = LossTerms::build(config, model.shapes.fixed.len())?;
    let augmentations = preprocess
        .data_augmentation
        .iter()
        .map(|a| a.build(&model.shapes))
        .collect::<Result<Vec<_>, _>>()?;
    let mut optimizer = config.train.optimizer.build(model.trainable())?;
    let pipeline = PipelineConfig {
        batch_size: preprocess.batch_size,
        drop_remainder: true,
        threads: loader_threads(config),
        prefetch: 2,
    };
    let epochs = options.max_epochs.unwrap_or(config.train.epochs);
    let mut summary = TrainSummary::default();
    let mut progress = Progress {
        epoch: 0,
        epoch_step: 0,
        steps: 0,
        seed: options.seed,
        partial: Accumulator::default(),
    };
    if let Some(checkpoint) = &options.resume {
        progress = checkpoint::load(checkpoint, &mut model, &mut *optimizer)?;
        if progress.epoch >= epochs {
            return Err(EngineError::Config(format!(
                "the checkpoint {} is at epoch {}: train for more epochs than that (train.epochs or --max-epochs)",
                checkpoint.display(),
                progress.epoch
            )));
        }
        summary.steps = progress.steps;
    }
    let yaml = config_yaml(config)?;
    if let Some(dir) = &options.run_dir {
        write_config(dir, &yaml)?;
    }
    let seed = progress.seed;
    let stop_requested = || {
        options
            .stop
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    };
    for epoch in progress.epoch + 1..=epochs {
        let mut samples = loader.epoch(epoch as u64 - 1, seed);
        let mut generator = SplitMix::new(mix(&[seed, epoch as u64]));
        samples = shuffle_buffer(
            samples,
            preprocess.batch_size * preprocess.shuffle_buffer_num_batch,
            |n| (generator.next_u64() % n as u64) as usize,
        );
        let steps_in_epoch = samples.len() / preprocess.batch_size;
        if steps_in_epoch == 0 {
            return Err(EngineError::Config(format!(
                "the train split gives {} samples per epoch, fewer than batch_size {}",
                samples.len(),
                preprocess.batch_size
            )));
        }
        let done = std::mem::take(&mut progress.epoch_step).min(steps_in_epoch);
        let mut accumulator = std::mem::take(&mut progress.partial);
        samples.drain(..done * preprocess.batch_size);
        observer.epoch_started(epoch, epochs, steps_in_epoch, done);
        let stream = BatchStream::start(Arc::clone(&loader), samples, &pipeline)?;
        for (index, loaded) in stream.enumerate() {
            let step = done + index + 1;
            let (mut batch, info) = to_pair_batch(&loaded?, &model.shapes, &device)
                .map_err(tensor_error("stacking a batch"))?;
            for (a, augmentation) in augmentations.iter().enumerate() {
                batch = augmentation.apply(
                    &batch,
                    mix(&[options.seed, epoch as u64, step as u64, a as u64]),
                )?;
            }
            let output = model.forward(&batch)?;
            let non_finite = |place: String, value: f64| EngineError::NonFinite {
                epoch,
                step,
                place,
                value,
            };
            if let Some((name, value)) = first_non_finite_output(&output)? {
                return Err(non_finite(
                    format!("the network's output `{name}`"),
                    value.into(),
                ));
            }
            let mut total: Option<Tensor> = None;
            for term in terms.evaluate(&batch, &output)? {
                let value = term
                    .value
                    .to_scalar::<f32>()
                    .map_err(tensor_error(term.name.clone()))? as f64;
                if !value.is_finite() {
                    return Err(non_finite(format!("loss term `{}`", term.name), value));
                }
                accumulator.add_term(&term.name, value);
                let weighted = (term.value * term.weight).map_err(tensor_error(term.name))?;
                total = Some(match total {
                    None => weighted,
                    Some(sum) => (sum + weighted).map_err(tensor_error("the total loss"))?,
                });
            }
            let total = total.ok_or_else(|| EngineError::Config("no loss".to_owned()))?;
            let loss = total
                .to_scalar::<f32>()
                .map_err(tensor_error("the total loss"))? as f64;
            if !loss.is_finite() {
                return Err(non_finite("the total loss".to_owned(), loss));
            }
            accumulator.add_loss(loss);
            add_batch_metrics(
                &batch,
                &info,
                &output,
                &model.shapes.fixed,
                |name, value| accumulator.add_metric(name, value),
            )?;
            let grads = total.backward().map_err(tensor_error("back-propagation"))?;
            for (name, var) in model.named_trainable() {
                if let Some(gradient) = grads.get(&var) {
                    if let Some(value) = first_non_finite(gradient)? {
                        return Err(non_finite(
                            format!("the gradient of weight `{name}`"),
                            value.into(),
                        ));
                    }
                }
            }
            optimizer
                .step(&grads)
                .map_err(tensor_error("the optimiser step"))?;
            summary.steps += 1;
            observer.step_finished(step, loss);
            if stop_requested() {
                let progress = Progress {
                    epoch: epoch - 1,
                    epoch_step: step,
                    steps: summary.steps,
                    seed,
                    partial: accumulator,
                };
                let checkpoint = match &options.run_dir {
                    Some(dir) => {
                        let path = dir.join("save").join(checkpoint::folder_name(&progress));
                        checkpoint::save(&path, &model, &*optimizer, &progress, &yaml)?;
                        Some(path)
                    }
                    None => None,
                };
                return Err(EngineError::Interrupted {
                    epoch,
                    step,
                    checkpoint,
                });
            }
        }
        let valid = match &valid_loader {
            Some(valid_loader) => {
                observer.validation_started();
                Some(validate(&model, &terms, valid_loader, &pipeline, &device)?)
            }
            None => None,
        };
        let log = EpochLog {
            epoch,
            train: accumulator.means(),
            valid,
        };
        observer.epoch_finished(&log);
        summary.epochs.push(log);
        if let Some(dir) = &options.run_dir {
            write_csv(dir, "train_metrics.csv", &summary.epochs, |e| {
                Some(&e.train)
            })?;
            write_csv(dir, "valid_metrics.csv", &summary.epochs, |e| {
                e.valid.as_ref()
            })?;
            if epoch % config.train.save_period == 0 || epoch == epochs {
                let progress = Progress {
                    epoch,
                    epoch_step: 0,
                    steps: summary.steps,
                    seed,
                    partial: Accumulator::default(),
                };
                let path = dir.join("save").join(checkpoint::folder_name(&progress));
                checkpoint::save(&path, &model, &*optimizer, &progress, &yaml)?;
            }
        }
    }
    if let Some(dir) = &options.run_dir {
        save_weights(dir, &model)?;
    }
    Ok((model, summary))
}
