//! The training loop.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::{tensor_error, EngineError, Model};
use crate::component::{ComponentError, DataLoader, Split, SplitSource};
use crate::config::{Config, LossTerm};
use crate::data::{shuffle_buffer, to_pair_batch, BatchStream, PipelineConfig};
use crate::registry::ComponentKind;
use crate::rng::{mix, SplitMix};

/// Options beyond the configuration.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Seed of sampling and augmentation (same seed + same config → same losses).
    pub seed: u64,
    /// Overrides `train.epochs`.
    pub max_epochs: Option<usize>,
    /// Where to write `config.yaml`, `save/ckpt-<epoch>/` checkpoints and
    /// `save/weights.safetensors`; nothing is written when `None`.
    pub run_dir: Option<PathBuf>,
    /// A checkpoint folder to resume from: its weights, optimiser state and epoch.
    pub resume: Option<PathBuf>,
}

/// The mean losses of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean weighted total loss.
    pub loss: f64,
    /// Mean of each loss term (unweighted), named `image/lncc`, `label/dice`, ….
    pub terms: Vec<(String, f64)>,
}

/// What training did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainSummary {
    /// One entry per epoch.
    pub epochs: Vec<EpochLog>,
    /// Optimiser steps taken.
    pub steps: usize,
}

/// A build error, prefixed with what was being built.
fn built<T>(kind: &str, result: Result<T, ComponentError>) -> Result<T, EngineError> {
    result.map_err(|e| EngineError::Config(format!("{kind}: {e}")))
}

fn term_name<K: ComponentKind + ?Sized>(category: &str, term: &LossTerm<K>) -> String {
    let name = K::serialized_name(&term.config).unwrap_or_else(|| "?".to_owned());
    format!("{category}/{name}")
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

/// Trains the configuration's model on its `train` split and returns it with the per-epoch
/// losses. `on_epoch` sees each epoch's log as it ends.
pub fn train<'c>(
    config: &'c Config,
    options: &TrainOptions,
    mut on_epoch: impl FnMut(&EpochLog),
) -> Result<(Model<'c>, TrainSummary), EngineError> {
    let device = Device::Cpu;
    let mut model = Model::build_seeded(config, &device, options.seed)?;
    let spatial_dims = model.shapes.fixed.len();
    let loader = split_loader(config, Split::Train)?;
    let preprocess = &config.train.preprocess;
    let mut image_losses = Vec::new();
    for term in config.train.loss.image.iter().filter(|t| t.weight > 0.0) {
        image_losses.push((
            term_name("image", term),
            term.weight,
            built("image loss", term.config.build(spatial_dims))?,
        ));
    }
    let mut label_losses = Vec::new();
    for term in config.train.loss.label.iter().filter(|t| t.weight > 0.0) {
        label_losses.push((
            term_name("label", term),
            term.weight,
            built("label loss", term.config.build(spatial_dims))?,
        ));
    }
    let mut regularizers = Vec::new();
    for term in config
        .train
        .loss
        .regularization
        .iter()
        .filter(|t| t.weight > 0.0)
    {
        regularizers.push((
            term_name("regularization", term),
            term.weight,
            built("regularization", term.config.build(spatial_dims))?,
        ));
    }
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
    let mut seed = options.seed;
    let mut first_epoch = 1;
    if let Some(checkpoint) = &options.resume {
        let progress = super::checkpoint::load(checkpoint, &mut model, &mut *optimizer)?;
        if progress.epoch >= epochs {
            return Err(EngineError::Config(format!(
                "the checkpoint {} is at epoch {}: train for more epochs than that (train.epochs or --max-epochs)",
                checkpoint.display(),
                progress.epoch
            )));
        }
        first_epoch = progress.epoch + 1;
        summary.steps = progress.steps;
        seed = progress.seed;
    }
    if let Some(dir) = &options.run_dir {
        write_config(dir, config)?;
    }
    for epoch in first_epoch..=epochs {
        let mut samples = loader.epoch(epoch as u64 - 1, seed);
        let mut generator = SplitMix::new(mix(&[seed, epoch as u64]));
        samples = shuffle_buffer(
            samples,
            preprocess.batch_size * preprocess.shuffle_buffer_num_batch,
            |n| (generator.next_u64() % n as u64) as usize,
        );
        if samples.len() < preprocess.batch_size {
            return Err(EngineError::Config(format!(
                "the train split gives {} samples per epoch, fewer than batch_size {}",
                samples.len(),
                preprocess.batch_size
            )));
        }
        let (mut totals, mut term_sums, mut steps) = (0.0, Vec::<(String, f64)>::new(), 0usize);
        for (index, loaded) in
            BatchStream::start(Arc::clone(&loader), samples, &pipeline)?.enumerate()
        {
            let step = index + 1;
            let (mut batch, _) = to_pair_batch(&loaded?, &model.shapes, &device)
                .map_err(tensor_error("stacking a batch"))?;
            for (a, augmentation) in augmentations.iter().enumerate() {
                batch = augmentation.apply(
                    &batch,
                    mix(&[options.seed, epoch as u64, step as u64, a as u64]),
                )?;
            }
            let output = model.forward(&batch)?;
            let mut terms: Vec<(String, f64, Tensor)> = Vec::new();
            if let Some(predicted) = &output.pred_fixed_image {
                for (name, weight, loss) in &image_losses {
                    let value = loss
                        .loss(&batch.fixed_image, predicted)
                        .and_then(|l| l.mean_all());
                    terms.push((
                        name.clone(),
                        *weight,
                        value.map_err(tensor_error(name.clone()))?,
                    ));
                }
            }
            if let (Some(fixed), Some(predicted)) = (&batch.fixed_label, &output.pred_fixed_label) {
                for (name, weight, loss) in &label_losses {
                    let value = loss.loss(fixed, predicted).and_then(|l| l.mean_all());
                    terms.push((
                        name.clone(),
                        *weight,
                        value.map_err(tensor_error(name.clone()))?,
                    ));
                }
            }
            if let Some(ddf) = &output.ddf {
                for (name, weight, loss) in &regularizers {
                    let value = loss.loss(ddf).and_then(|l| l.mean_all());
                    terms.push((
                        name.clone(),
                        *weight,
                        value.map_err(tensor_error(name.clone()))?,
                    ));
                }
            }
            if terms.is_empty() {
                return Err(EngineError::Config(
                    "no loss term applies to this method and data: add a loss with a weight above 0".to_owned(),
                ));
            }
            let mut total: Option<Tensor> = None;
            for (position, (name, weight, value)) in terms.iter().enumerate() {
                let scalar = value
                    .to_scalar::<f32>()
                    .map_err(tensor_error(name.clone()))? as f64;
                if !scalar.is_finite() {
                    return Err(EngineError::NonFinite {
                        epoch,
                        step,
                        term: name.clone(),
                        value: scalar,
                    });
                }
                match term_sums.get_mut(position) {
                    Some((_, sum)) => *sum += scalar,
                    None => term_sums.push((name.clone(), scalar)),
                }
                let weighted = (value * *weight).map_err(tensor_error(name.clone()))?;
                total = Some(match total {
                    None => weighted,
                    Some(sum) => (sum + weighted).map_err(tensor_error("the total loss"))?,
                });
            }
            let total = total.ok_or_else(|| EngineError::Config("no loss".to_owned()))?;
            totals += total
                .to_scalar::<f32>()
                .map_err(tensor_error("the total loss"))? as f64;
            let grads = total.backward().map_err(tensor_error("back-propagation"))?;
            optimizer
                .step(&grads)
                .map_err(tensor_error("the optimiser step"))?;
            steps += 1;
            summary.steps += 1;
        }
        let mean = |sum: f64| sum / steps.max(1) as f64;
        let log = EpochLog {
            epoch,
            loss: mean(totals),
            terms: term_sums.into_iter().map(|(n, s)| (n, mean(s))).collect(),
        };
        on_epoch(&log);
        summary.epochs.push(log);
        if let Some(dir) = &options.run_dir {
            write_epoch_csv(dir, &summary.epochs)?;
            if epoch % config.train.save_period == 0 || epoch == epochs {
                let progress = super::checkpoint::Progress {
                    epoch,
                    steps: summary.steps,
                    seed,
                };
                super::checkpoint::save(
                    &dir.join("save").join(format!("ckpt-{epoch}")),
                    &model,
                    &*optimizer,
                    progress,
                )?;
            }
        }
    }
    if let Some(dir) = &options.run_dir {
        save_weights(dir, &model)?;
    }
    Ok((model, summary))
}

fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Writes the resolved configuration to `<dir>/config.yaml` (through a temporary file).
fn write_config(dir: &std::path::Path, config: &Config) -> Result<(), EngineError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let yaml = config
        .to_yaml()
        .map_err(|e| EngineError::Config(e.to_string()))?;
    replace_file(dir, "config.yaml", &yaml)
}

/// Rewrites `<dir>/train_metrics.csv`: one row per epoch, the mean total loss and the mean
/// of each loss term (through a temporary file).
fn write_epoch_csv(dir: &std::path::Path, epochs: &[EpochLog]) -> Result<(), EngineError> {
    let Some(first) = epochs.first() else {
        return Ok(());
    };
    let mut csv = String::from("epoch,loss");
    for (name, _) in &first.terms {
        csv.push(',');
        csv.push_str(name);
    }
    csv.push('\n');
    for log in epochs {
        csv.push_str(&format!("{},{}", log.epoch, log.loss));
        for (_, value) in &log.terms {
            csv.push_str(&format!(",{value}"));
        }
        csv.push('\n');
    }
    replace_file(dir, "train_metrics.csv", &csv)
}

/// Writes `<dir>/<name>` through a temporary file renamed into place, so a failed write never
/// leaves a partial file.
fn replace_file(dir: &std::path::Path, name: &str, contents: &str) -> Result<(), EngineError> {
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.partial"));
    std::fs::write(&temporary, contents).map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io_error(&path))
}

/// Writes the final weights to `<dir>/save/weights.safetensors` (through a temporary file).
fn save_weights(dir: &std::path::Path, model: &Model<'_>) -> Result<(), EngineError> {
    let save = dir.join("save");
    std::fs::create_dir_all(&save).map_err(io_error(&save))?;
    let weights = save.join("weights.safetensors");
    let temporary = save.join(".weights.partial.safetensors");
    model
        .variables
        .save(&temporary)
        .map_err(tensor_error(format!("saving {}", weights.display())))?;
    std::fs::rename(&temporary, &weights).map_err(io_error(&weights))
}
