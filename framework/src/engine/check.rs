//! The checks every command that runs a configuration makes before touching data, shared by
//! `config check` and `train`, so a configuration `config check` accepts is one `train` can
//! build: image shapes, the memory the first layer alone would need, and every component
//! built once (the model with its weights, the loss terms, the optimiser, the augmentations).
//! Each problem names the key it concerns; the caller adds the file and line.

use candle_core::Device;

use super::{EngineError, Trainer};
use crate::component::ComponentError;
use crate::config::{Config, KeyPath, Problem};
use crate::memory;

/// The channels DeepReg's backbones start with when a config does not say.
const DEFAULT_CHANNELS: u64 = 16;

/// Runs the checks; every problem found is returned (`Ok` when there is none).
pub fn check(config: &Config) -> Result<(), Vec<Problem>> {
    let shapes = config.dataset.loader.image_shapes();
    let (moving_key, fixed_key) = shape_keys(config);
    let mut problems = Vec::new();
    for (key, shape) in [(&moving_key, &shapes.moving), (&fixed_key, &shapes.fixed)] {
        if !(2..=3).contains(&shape.len()) || shape.contains(&0) {
            problems.push(Problem::new(
                key.clone(),
                format!("{shape:?}: give 2 or 3 sizes, each at least 1"),
            ));
        }
    }
    if shapes.moving.len() != shapes.fixed.len() {
        problems.push(Problem::new(
            moving_key.clone(),
            format!(
                "{:?} has {} axes but the fixed image shape {:?} has {}: both images need the same number of axes",
                shapes.moving,
                shapes.moving.len(),
                shapes.fixed,
                shapes.fixed.len()
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if let Err(problem) = check_memory(config, &moving_key, &fixed_key) {
        return Err(vec![problem]);
    }
    let built = Trainer::new(config, &Device::Cpu, 0).and_then(|trainer| {
        for augmentation in &config.train.preprocess.data_augmentation {
            augmentation.build(&trainer.model.shapes)?;
        }
        Ok(())
    });
    built.map_err(|error| vec![problem_of(error)])
}

/// The keys of the moving and fixed image shapes: `moving_image_shape` and
/// `fixed_image_shape` (paired data), or the one `image_shape`.
fn shape_keys(config: &Config) -> (KeyPath, KeyPath) {
    let declared = crate::config::to_value(&*config.dataset.loader).ok();
    let has = |key: &str| {
        declared
            .as_ref()
            .and_then(|v| v.as_mapping())
            .is_some_and(|m| m.contains_key(crate::config::key(key)))
    };
    if has("moving_image_shape") {
        (
            KeyPath::keys(&["dataset", "moving_image_shape"]),
            KeyPath::keys(&["dataset", "fixed_image_shape"]),
        )
    } else {
        let key = KeyPath::keys(&["dataset", "image_shape"]);
        (key.clone(), key)
    }
}

/// Refuses a configuration whose first layer's activations alone (batch × fixed voxels ×
/// initial channels, f32, with their gradients), or whose batch of moving images (batch ×
/// moving voxels, f32, with gradients), exceed the memory available.
fn check_memory(config: &Config, moving_key: &KeyPath, fixed_key: &KeyPath) -> Result<(), Problem> {
    let shapes = config.dataset.loader.image_shapes();
    let backbone = config
        .train
        .backbone
        .as_deref()
        .and_then(|backbone| crate::config::to_value(backbone).ok());
    let channels = backbone
        .as_ref()
        .and_then(|v| v.get("num_channel_initial"))
        .and_then(|v| v.as_u64())
        .unwrap_or(DEFAULT_CHANNELS)
        .max(1);
    let batch = config.train.preprocess.batch_size as u64;
    let activations = |shape: &[usize], channels: u64| {
        memory::element_count(shape)
            .and_then(|voxels| voxels.checked_mul(batch))
            .and_then(|n| n.checked_mul(channels))
            .and_then(|n| n.checked_mul(4 * 2))
    };
    let moving = activations(&shapes.moving, 1);
    memory::check_fits(
        moving,
        &format!("moving images {:?} with batch_size {batch}", shapes.moving),
    )
    .map_err(|message| {
        Problem::new(
            moving_key.clone(),
            format!("{message} (`train.preprocess.batch_size` and the image shape set it)"),
        )
    })?;
    let what = format!(
        "{:?} with batch_size {batch} and {channels} channels at the first level",
        shapes.fixed
    );
    memory::check_fits(activations(&shapes.fixed, channels), &what).map_err(|message| {
        Problem::new(
            fixed_key.clone(),
            format!("{message} (`train.preprocess.batch_size`, `train.backbone.num_channel_initial` and the image shape set it)"),
        )
    })
}

/// The problem of a build error, at the key of the component it names.
fn problem_of(error: EngineError) -> Problem {
    let (component, message) = match &error {
        EngineError::Component(ComponentError::InvalidConfig { component, message }) => {
            (component.as_str(), message.clone())
        }
        EngineError::Build { source, .. } => match source.as_ref() {
            ComponentError::InvalidConfig { component, message } => {
                (component.as_str(), message.clone())
            }
            _ => ("", error.to_string()),
        },
        other => ("", other.to_string()),
    };
    let category = component.split_whitespace().next().unwrap_or("");
    let keys: &[&str] = match category {
        "backbone" => &["train", "backbone"],
        "method" => &["train", "method"],
        "optimizer" => &["train", "optimizer"],
        "image_loss" => &["train", "loss", "image"],
        "label_loss" => &["train", "loss", "label"],
        "regularization" => &["train", "loss", "regularization"],
        "field_loss" => &["train", "loss", "field"],
        "parameter_source" => &["train", "parameters"],
        "augmentation" => &["train", "preprocess", "data_augmentation"],
        "data_loader" => &["dataset"],
        _ => &["train"],
    };
    let message = if component.is_empty() {
        message
    } else {
        format!("{component}: {message}")
    };
    Problem::new(KeyPath::keys(keys), message)
}
