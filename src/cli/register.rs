//! `voxreg register`: classical registration of one pair (DeepReg's classical demos): a DDF
//! or an affine transform optimised directly on the pair, no network.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use voxreg::candle::{Device, Tensor};
use voxreg::component::{names, Batch, Volume};
use voxreg::config::{ConfigDocument, ConfigSources};
use voxreg::data::preprocess::{label_channel, normalize, resize_linear};
use voxreg::data::{read_nifti, write_nifti};
use voxreg::engine::{self, Transform};
use voxreg::metrics;

use super::atomic::write_text;
use super::device::DeviceChoice;
use super::stdout::say;
use super::{host, RegisterArgs};

/// The configuration under the user's files: only `train.loss` and `train.optimizer` are
/// used; the dataset and backbone entries exist because a configuration needs them.
const DEFAULTS: &str = "
dataset:
  train: {dir: unused, format: nifti, labeled: false}
  type: paired
  moving_image_shape: [16, 16, 16]
  fixed_image_shape: [16, 16, 16]
train:
  method: ddf
  backbone: {name: local, num_channel_initial: 4, extract_levels: [0]}
  loss:
    image: {name: lncc, kernel_size: 9, weight: 1.0}
    regularization: {name: bending, weight: 0.5}
  optimizer: {name: Adam, learning_rate: 0.1}
  preprocess: {batch_size: 1, shuffle_buffer_num_batch: 1}
  epochs: 1
  save_period: 1
";

/// An affine matrix's entries multiply voxel coordinates: the default step is smaller.
const AFFINE_DEFAULTS: &str = "
train:
  optimizer: {name: Adam, learning_rate: 0.01}
";

fn read_image(path: &Path, what: &str) -> anyhow::Result<Volume> {
    host::require_regular_file(path, what)?;
    let volume = read_nifti(path).with_context(|| format!("reading the {what}"))?;
    if !(2..=3).contains(&volume.shape.len()) {
        bail!(
            "{what} {}: shape {:?}; classical registration takes a 2D or 3D image",
            path.display(),
            volume.shape
        );
    }
    Ok(volume)
}

/// Reads the image at `path`, resizes it linearly onto `shape` and min–max normalises it.
fn image_on_grid(path: &Path, what: &str, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
    let volume = read_image(path, what)?;
    if volume.shape.len() != shape.len() {
        bail!(
            "{what} {} has {} axes, the fixed image {}",
            path.display(),
            volume.shape.len(),
            shape.len()
        );
    }
    let mut data = resize_linear(&volume.data, &volume.shape, shape);
    normalize(&mut data);
    Ok(data)
}

/// Reads the label at `path` (`*spatial`, or `(*spatial, C)` for C labels) and resizes each
/// label linearly onto `shape`: one `Vec` per label.
fn labels_on_grid(path: &Path, what: &str, shape: &[usize]) -> anyhow::Result<Vec<Vec<f32>>> {
    host::require_regular_file(path, what)?;
    let volume = read_nifti(path).with_context(|| format!("reading the {what}"))?;
    let ndim = shape.len();
    let (spatial, channels) = match volume.shape.len() {
        n if n == ndim => (volume.shape.clone(), 1),
        n if n == ndim + 1 => (volume.shape[..ndim].to_vec(), volume.shape[ndim]),
        _ => bail!(
            "{what} {}: shape {:?}; expected {ndim} spatial axes, optionally followed by one axis of labels",
            path.display(),
            volume.shape
        ),
    };
    Ok((0..channels)
        .map(|c| {
            let label = label_channel(&volume.data, channels, c);
            resize_linear(&label, &spatial, shape)
        })
        .collect())
}

/// A `(1, C, *shape)` tensor from C channels.
fn tensor(channels: &[Vec<f32>], shape: &[usize]) -> anyhow::Result<Tensor> {
    let mut dims = vec![1, channels.len()];
    dims.extend_from_slice(shape);
    Ok(Tensor::from_vec(channels.concat(), dims, &Device::Cpu)?)
}

fn values(tensor: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(tensor.flatten_all()?.to_vec1::<f32>()?)
}

/// Writes a channel-first `(1, C, *shape)` tensor as NIfTI `(*shape)` (C = 1) or
/// `(*shape, C)` (DeepReg's DDF layout) in the fixed image's space.
fn write_on_fixed_grid(path: &Path, tensor: &Tensor, fixed: &Volume) -> anyhow::Result<()> {
    let channels = tensor.dim(1)?;
    let ndim = fixed.shape.len();
    let mut order: Vec<usize> = (1..=ndim).collect();
    order.push(0);
    let data = values(&tensor.squeeze(0)?.permute(order)?.contiguous()?)?;
    let mut shape = fixed.shape.clone();
    if channels > 1 {
        shape.push(channels);
    }
    let volume = Volume {
        data,
        shape,
        affine: fixed.affine,
    };
    write_nifti(path, &volume).with_context(|| format!("writing {}", path.display()))
}

/// Registers `--moving` to `--fixed` and writes into the new folder `--out`:
/// `warped_moving_image.nii.gz`, `ddf.nii.gz` (`(*fixed, ndim)`, voxels), `affine.txt` for an
/// affine transform, `warped_moving_label.nii.gz` with labels, and `loss.csv` (the loss at
/// each iteration); then prints SSD (and Dice, TRE with labels) before → after.
pub fn register(plugins: &[PathBuf], args: &RegisterArgs) -> anyhow::Result<()> {
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    if args.moving_label.is_some() != args.fixed_label.is_some() {
        bail!("give both --moving-label and --fixed-label, or neither");
    }
    let transform = match args.transform.as_str() {
        "affine" => Transform::Affine,
        _ => Transform::Ddf,
    };
    let mut documents = vec![ConfigDocument::parse(
        DEFAULTS,
        Path::new("<voxreg register defaults>"),
    )?];
    if transform == Transform::Affine {
        documents.push(ConfigDocument::parse(
            AFFINE_DEFAULTS,
            Path::new("<voxreg register affine defaults>"),
        )?);
    }
    for path in &args.config_path {
        documents.push(ConfigDocument::read(path)?);
    }
    let sources = ConfigSources::from_documents(documents)?;
    let mut registry = host::registry(plugins)?;
    host::load_plugins(&mut registry, sources.plugins())?;
    let mut config = sources.resolve(&registry)?;
    DeviceChoice::of(&args.device)?.apply(&mut config);

    let (Some(moving_path), Some(fixed_path)) = (&args.moving, &args.fixed) else {
        bail!("give --moving and --fixed (a CSV of pairs, --pairs, needs --model)");
    };
    let fixed_volume = read_image(fixed_path, "fixed image")?;
    let shape = fixed_volume.shape.clone();
    let moving = image_on_grid(moving_path, "moving image", &shape)?;
    let fixed = image_on_grid(fixed_path, "fixed image", &shape)?;
    let labels = match (&args.moving_label, &args.fixed_label) {
        (Some(m), Some(f)) => {
            let moving = labels_on_grid(m, "moving label", &shape)?;
            let fixed = labels_on_grid(f, "fixed label", &shape)?;
            if moving.len() != fixed.len() {
                bail!(
                    "the moving label has {} labels, the fixed label {}",
                    moving.len(),
                    fixed.len()
                );
            }
            Some((moving, fixed))
        }
        _ => None,
    };
    super::run_folder::require_new_or_empty("--out", &args.out)?;
    let batch = Batch::pair(
        tensor(std::slice::from_ref(&moving), &shape)?,
        tensor(std::slice::from_ref(&fixed), &shape)?,
        labels
            .as_ref()
            .map(|(m, _)| tensor(m, &shape))
            .transpose()?,
        labels
            .as_ref()
            .map(|(_, f)| tensor(f, &shape))
            .transpose()?,
    );
    let every = (args.iterations / 10).max(1);
    let result = engine::register(
        &config,
        &batch,
        transform,
        args.iterations,
        &mut |iteration, loss| {
            if iteration % every == 0 || iteration == 1 {
                tracing::info!("iteration {iteration}: loss {loss:.5}");
            }
        },
    )?;

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let predicted = result
        .output
        .get(names::PRED_FIXED_IMAGE)
        .context("the warped image")?;
    write_on_fixed_grid(
        &args.out.join("warped_moving_image.nii.gz"),
        predicted,
        &fixed_volume,
    )?;
    write_on_fixed_grid(&args.out.join("ddf.nii.gz"), &result.ddf, &fixed_volume)?;
    if let Some(theta) = &result.theta {
        let rows: Vec<String> = theta
            .squeeze(0)?
            .to_vec2::<f32>()?
            .iter()
            .map(|row| row.iter().map(f32::to_string).collect::<Vec<_>>().join(" "))
            .collect();
        write_text(&args.out.join("affine.txt"), &(rows.join("\n") + "\n"))?;
    }
    if let Some(label) = &result.output.get(names::PRED_FIXED_LABEL) {
        write_on_fixed_grid(
            &args.out.join("warped_moving_label.nii.gz"),
            label,
            &fixed_volume,
        )?;
    }
    let mut csv = String::from("iteration,loss\n");
    for (index, loss) in result.losses.iter().enumerate() {
        csv.push_str(&format!("{},{loss}\n", index + 1));
    }
    write_text(&args.out.join("loss.csv"), &csv)?;

    say!(
        "registered {} to {} ({} iterations); outputs in {}",
        moving_path.display(),
        fixed_path.display(),
        args.iterations,
        args.out.display()
    )?;
    let after = values(predicted)?;
    say!(
        "  image SSD                  {:.4} → {:.4}",
        metrics::image_ssd(&fixed, &moving),
        metrics::image_ssd(&fixed, &after)
    )?;
    if let (Some((moving_labels, fixed_labels)), Some(warped_labels)) =
        (&labels, &result.output.get(names::PRED_FIXED_LABEL))
    {
        let voxels: usize = shape.iter().product();
        let warped_labels = values(warped_labels)?;
        for (index, (moving_label, fixed_label)) in
            moving_labels.iter().zip(fixed_labels).enumerate()
        {
            let warped_label = &warped_labels[index * voxels..(index + 1) * voxels];
            say!(
                "  label {index} Dice               {:.4} → {:.4}",
                metrics::binary_dice(fixed_label, moving_label),
                metrics::binary_dice(fixed_label, warped_label)
            )?;
            let tre = |label: &[f32]| {
                metrics::centroid_distance(fixed_label, label, &shape, &fixed_volume.affine)
                    .map_or("-".to_owned(), |(_, mm)| format!("{mm:.4}"))
            };
            say!(
                "  label {index} TRE, mm            {} → {}",
                tre(moving_label),
                tre(warped_label)
            )?;
        }
    }
    if let Some(stats) = metrics::jacobian_stats(&values(&result.ddf)?, &shape) {
        say!(
            "  folding (det J ≤ 0)        {:.3} % of voxels",
            100.0 * stats.folding_fraction
        )?;
    }
    Ok(())
}
