//! The training loop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::Device;

use super::batch_metrics::add_batch_metrics;
use super::checkpoint::{self, Progress};
use super::collapse::CollapseWatch;
use super::logs::{write_csv, Accumulator, EpochLog};
use super::pictures::Picture;
use super::run_dir::{config_yaml, save_weights, NewRunDir};
use super::step::Trainer;
use super::validate::validate;
use super::{tensor_error, EngineError, Model};
use crate::component::{DataLoader, Split, SplitSource};
use crate::config::{sample_hyper, Config};

/// Separates the hyperparameter draws' seed stream from the augmentations' (which use the
/// augmentation's index in the same position).
const HYPER_STREAM: u64 = 0x4859_5045_5200_0001;
use crate::data::{shuffle_buffer, to_batch, BatchStream, PipelineConfig};
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
    /// Validation of epoch `epoch` drew these pictures of its first sample.
    fn validation_pictures(&mut self, _epoch: usize, _pictures: &[Picture]) {}
    /// An epoch ended (after validation).
    fn epoch_finished(&mut self, _log: &EpochLog) {}
    /// Training is about to take its first step: what it runs on.
    fn training_started(&mut self, _start: &TrainStart) {}
}

/// What a training run works with, told to the observer before the first step.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainStart {
    /// Training samples per epoch.
    pub train_samples: usize,
    /// Validation samples, when the configuration has a `valid` split.
    pub valid_samples: Option<usize>,
    /// Trainable parameters (scalars).
    pub parameters: usize,
    /// Data-loader threads.
    pub loader_threads: usize,
    /// Compute threads (the CPU kernels' pool).
    pub compute_threads: usize,
    /// Where the tensors live.
    pub device: &'static str,
    /// The first epoch to run (after a resume, the one after the checkpoint's).
    pub first_epoch: usize,
    /// The last epoch.
    pub epochs: usize,
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

/// Builds the data loader of `split`; an error when the configuration lacks the split or its
/// data cannot be listed (missing folder, mismatched file names, …).
pub fn open_split(config: &Config, split: Split) -> Result<Arc<dyn DataLoader>, EngineError> {
    let section = config.dataset.split(split).ok_or_else(|| {
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
/// Each step: load a batch, apply the augmentations, draw the step's hyperparameters
/// (`train.hyperparameters`, per sample, from the run's seed, epoch and step), run the method, check its outputs are
/// finite, compute the loss terms (each must be finite), back-propagate, check the gradients
/// are finite, and step the optimiser. A NaN or infinity stops training with
/// [`EngineError::NonFinite`] naming the epoch, the step and where it appeared; the
/// checkpoints already written are kept.
pub fn train(
    config: &Config,
    options: &TrainOptions,
    observer: &mut dyn TrainObserver,
) -> Result<(Model, TrainSummary), EngineError> {
    let device = Device::Cpu;
    let mut trainer = Trainer::new(config, &device, options.seed)?;
    let loader = open_split(config, Split::Train)?;
    let valid_loader = match config.dataset.valid {
        Some(_) => Some(open_split(config, Split::Valid)?),
        None => None,
    };
    let preprocess = &config.train.preprocess;
    let augmentations = preprocess
        .data_augmentation
        .iter()
        .map(|a| a.build(&trainer.model.shapes))
        .collect::<Result<Vec<_>, _>>()?;
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
        progress = checkpoint::load(checkpoint, &mut trainer.model, &mut *trainer.optimizer)?;
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
    let mut new_run_dir = match &options.run_dir {
        Some(dir) => Some(NewRunDir::create(dir, &yaml)?),
        None => None,
    };
    let mut keep_run_dir = || {
        if let Some(guard) = &mut new_run_dir {
            guard.keep();
        }
    };
    let seed = progress.seed;
    observer.training_started(&TrainStart {
        train_samples: loader.epoch(0, seed).len(),
        valid_samples: valid_loader
            .as_ref()
            .map(|valid| valid.epoch(0, seed).len()),
        parameters: trainer
            .model
            .trainable()
            .iter()
            .map(|var| var.elem_count())
            .sum(),
        loader_threads: match pipeline.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            threads => threads,
        },
        compute_threads: rayon::current_num_threads(),
        device: "CPU",
        first_epoch: progress.epoch + 1,
        epochs,
    });
    let stop_requested = || {
        options
            .stop
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    };
    let mut collapse = CollapseWatch::default();
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
        let done = std::mem::take(&mut progress.epoch_step);
        if done > steps_in_epoch {
            return Err(EngineError::Config(format!(
                "the checkpoint {} says {done} steps of epoch {epoch} were taken, but the epoch has {steps_in_epoch}: its progress.txt is damaged or belongs to another dataset or batch_size",
                options.resume.as_deref().unwrap_or(std::path::Path::new("?")).display()
            )));
        }
        let mut accumulator = std::mem::take(&mut progress.partial);
        samples.drain(..done * preprocess.batch_size);
        observer.epoch_started(epoch, epochs, steps_in_epoch, done);
        let stream = BatchStream::start(Arc::clone(&loader), samples, &pipeline)?;
        for (index, loaded) in stream.enumerate() {
            let step = done + index + 1;
            let (mut batch, info) = to_batch(&loaded?, &trainer.model.shapes, &device)
                .map_err(tensor_error("stacking a batch"))?;
            for (a, augmentation) in augmentations.iter().enumerate() {
                batch = augmentation
                    .apply(&batch, mix(&[seed, epoch as u64, step as u64, a as u64]))?;
            }
            if !config.train.hyperparameters.is_empty() {
                let n = batch.batch_size().map_err(tensor_error("a batch"))?;
                let draw_seed = mix(&[seed, epoch as u64, step as u64, HYPER_STREAM]);
                batch.hyper = sample_hyper(&config.train.hyperparameters, n, draw_seed, &device)
                    .map_err(tensor_error("drawing the step's hyperparameters"))?;
            }
            let outcome = trainer
                .step(&batch)
                .map_err(|error| error.at(epoch, step))?;
            for (name, value) in &outcome.terms {
                accumulator.add_term(name, *value);
            }
            accumulator.add_loss(outcome.loss);
            let shapes = &trainer.model.shapes;
            add_batch_metrics(&batch, &info, &outcome.output, shapes, |name, value| {
                collapse.record(name, value);
                accumulator.add_metric(name, value)
            })?;
            collapse.finish_step(epoch, step);
            summary.steps += 1;
            observer.step_finished(step, outcome.loss);
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
                        keep_run_dir();
                        let path = dir.join("save").join(checkpoint::folder_name(&progress));
                        let (model, optimizer) = (&trainer.model, &*trainer.optimizer);
                        checkpoint::save(&path, model, optimizer, &progress, &yaml)?;
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
                let (log, pictures) = validate(
                    &trainer.model,
                    &trainer.terms,
                    valid_loader,
                    &pipeline,
                    &device,
                )?;
                observer.validation_pictures(epoch, &pictures);
                Some(log)
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
            keep_run_dir();
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
                checkpoint::save(&path, &trainer.model, &*trainer.optimizer, &progress, &yaml)?;
            }
        }
    }
    if let Some(dir) = &options.run_dir {
        save_weights(dir, &trainer.model)?;
    }
    Ok((trainer.model, summary))
}
