//! `voxreg register --model`: one pair (or a CSV of pairs) registered by a trained network,
//! with the outputs at the fixed image's native resolution — VoxelMorph's `register.py`.
//!
//! The images are preprocessed as in training (min–max normalised, resized linearly to the
//! run's image shapes), the network predicts a DDF on the training fixed grid, and that field
//! is carried to the native grids ([`native_field`]); the moving image in its original
//! intensities (and its labels, by nearest neighbour) is warped by it onto the fixed image's
//! native grid.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use voxreg::candle::{Device, Tensor};
use voxreg::component::{names, Batch, Volume};
use voxreg::data::preprocess::{label_channel, normalize, resize_linear};
use voxreg::data::{read_volume_file, write_volume_file};
use voxreg::engine::Model;
use voxreg::metrics;
use voxreg::ops::{self, Interp, Padding};

use super::device::DeviceChoice;
use super::stdout::say;
use super::{host, hyper, trained_run, RegisterArgs};

/// One pair to register and where its outputs go.
#[derive(Clone, Debug, PartialEq)]
struct PairJob {
    moving: PathBuf,
    fixed: PathBuf,
    moved: PathBuf,
    warp: PathBuf,
    moving_label: Option<PathBuf>,
    fixed_label: Option<PathBuf>,
    moved_label: Option<PathBuf>,
}

impl PairJob {
    fn outputs(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.moved, &self.warp]
            .into_iter()
            .chain(self.moved_label.as_ref())
    }

    fn inputs(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.moving, &self.fixed]
            .into_iter()
            .chain(self.moving_label.as_ref())
            .chain(self.fixed_label.as_ref())
    }
}

/// The `.npz` array names of images and labels.
struct NpzKeys<'a> {
    image: &'a str,
    label: &'a str,
}

/// Registers `--moving` to `--fixed` (or every row of `--pairs`) with the trained model
/// `--model`, writes `--moved`, `--warp` (and `--moved-label`), and prints, with labels, the
/// Dice before → after on the native grid and on the training grid.
pub fn register_with_model(plugins: &[PathBuf], args: &RegisterArgs) -> anyhow::Result<()> {
    let Some(model_path) = &args.model else {
        bail!("--model is required here");
    };
    let jobs = match &args.pairs {
        Some(csv) => read_pairs(csv)?,
        None => vec![single_job(args)?],
    };
    check_outputs(&jobs)?;
    let trained = trained_run::locate(model_path, "model", None)?;
    let (_registry, mut config) =
        host::load_config(plugins, std::slice::from_ref(&trained.config))?;
    DeviceChoice::of(&args.device)?.apply(&mut config);
    let mut model = Model::build(&config, &Device::Cpu)?;
    model
        .load_weights(&trained.weights)
        .with_context(|| format!("loading {}", trained.weights.display()))?;
    for setting in &args.hyper {
        let (name, value) = hyper::parse_setting(setting)?;
        model.set_hyper(&name, value)?;
    }
    let keys = NpzKeys {
        image: &args.npz_key,
        label: &args.npz_label_key,
    };
    let mut summary = DiceSummary::default();
    for job in &jobs {
        let report = register_pair(&model, job, &keys).with_context(|| {
            format!(
                "registering {} to {}",
                job.moving.display(),
                job.fixed.display()
            )
        })?;
        print_report(job, &model, &report)?;
        summary.add(&report);
    }
    if jobs.len() > 1 {
        summary.print(jobs.len())?;
    }
    Ok(())
}

/// The job of `--moving`, `--fixed`, `--moved`, `--warp` and the label flags.
fn single_job(args: &RegisterArgs) -> anyhow::Result<PairJob> {
    let need = |path: &Option<PathBuf>, flag: &str| {
        path.clone()
            .with_context(|| format!("--model needs {flag} (or a CSV of pairs, --pairs)"))
    };
    Ok(PairJob {
        moving: need(&args.moving, "--moving")?,
        fixed: need(&args.fixed, "--fixed")?,
        moved: need(&args.moved, "--moved")?,
        warp: need(&args.warp, "--warp")?,
        moving_label: args.moving_label.clone(),
        fixed_label: args.fixed_label.clone(),
        moved_label: args.moved_label.clone(),
    })
}

/// Reads a CSV of pairs: header columns `moving,fixed,moved,warp` and optionally
/// `moving_label,fixed_label,moved_label` (an empty cell: none), paths relative to the CSV's
/// folder. Errors name the file, the line and the column.
fn read_pairs(csv_path: &Path) -> anyhow::Result<Vec<PairJob>> {
    host::require_regular_file(csv_path, "pairs CSV")?;
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(csv_path)
        .with_context(|| format!("reading {}", csv_path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("reading the header of {}", csv_path.display()))?
        .clone();
    let known = [
        "moving",
        "fixed",
        "moved",
        "warp",
        "moving_label",
        "fixed_label",
        "moved_label",
    ];
    if let Some(unknown) = headers.iter().find(|h| !known.contains(h)) {
        bail!(
            "{}: unknown column `{unknown}`; the columns are {}",
            csv_path.display(),
            known.join(", ")
        );
    }
    let column = |name: &str| headers.iter().position(|h| h == name);
    for required in &known[..4] {
        if column(required).is_none() {
            bail!(
                "{}: no `{required}` column (the header needs moving, fixed, moved, warp)",
                csv_path.display()
            );
        }
    }
    let mut jobs = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = record.with_context(|| format!("{} line {line}", csv_path.display()))?;
        let cell = |name: &str| -> Option<PathBuf> {
            let value = record.get(column(name)?)?;
            (!value.is_empty()).then(|| base.join(value))
        };
        let required = |name: &str| {
            cell(name).with_context(|| {
                format!(
                    "{} line {line}: the `{name}` cell is empty",
                    csv_path.display()
                )
            })
        };
        let job = PairJob {
            moving: required("moving")?,
            fixed: required("fixed")?,
            moved: required("moved")?,
            warp: required("warp")?,
            moving_label: cell("moving_label"),
            fixed_label: cell("fixed_label"),
            moved_label: cell("moved_label"),
        };
        if job.moved_label.is_some() && job.moving_label.is_none() {
            bail!(
                "{} line {line}: `moved_label` needs a `moving_label`",
                csv_path.display()
            );
        }
        jobs.push(job);
    }
    if jobs.is_empty() {
        bail!("{}: no pairs below the header", csv_path.display());
    }
    Ok(jobs)
}

/// Refuses, before anything is computed, outputs that exist already (nothing is
/// overwritten), outputs named twice, and outputs that are also inputs.
fn check_outputs(jobs: &[PairJob]) -> anyhow::Result<()> {
    let inputs: HashSet<&PathBuf> = jobs.iter().flat_map(PairJob::inputs).collect();
    let mut seen = HashSet::new();
    for output in jobs.iter().flat_map(PairJob::outputs) {
        if output.exists() {
            bail!(
                "{} exists; choose another output path so nothing is overwritten",
                output.display()
            );
        }
        if inputs.contains(output) {
            bail!("{} is both an input and an output", output.display());
        }
        if !seen.insert(output) {
            bail!("{} is named as an output twice", output.display());
        }
    }
    Ok(())
}

/// A file read for registration, with what it is for error messages.
fn read_spatial(path: &Path, what: &str, key: &str, ndim: usize) -> anyhow::Result<Volume> {
    host::require_regular_file(path, what)?;
    let volume = read_volume_file(path, key).with_context(|| format!("reading the {what}"))?;
    if volume.shape.len() != ndim {
        bail!(
            "{what} {}: shape {:?}; the model registers {ndim}D images",
            path.display(),
            volume.shape
        );
    }
    Ok(volume)
}

/// A label file as one mask per label on its spatial grid `shape`: a 4D (3D) label is one
/// mask per channel (DeepReg's layout, thresholded later at 0.5), as is a label of the
/// image's rank with values in `[0, 1]`; one with other values is an integer segmentation
/// (VoxelMorph's `seg`), one mask per non-zero value, in increasing order.
#[derive(Debug)]
struct Labels {
    /// The channels to warp: `(*spatial)` each.
    channels: Vec<Vec<f32>>,
    /// The masks Dice is taken on, with the name of each.
    masks: Vec<(String, Vec<f32>)>,
}

fn read_labels(path: &Path, what: &str, key: &str, spatial: &[usize]) -> anyhow::Result<Labels> {
    host::require_regular_file(path, what)?;
    let volume = read_volume_file(path, key).with_context(|| format!("reading the {what}"))?;
    let ndim = spatial.len();
    let count = match volume.shape.len() {
        n if n == ndim => 1,
        n if n == ndim + 1 => volume.shape[ndim],
        _ => 0,
    };
    if count == 0 || volume.shape[..ndim] != *spatial {
        bail!(
            "{what} {}: shape {:?}; expected its image's shape {spatial:?}, optionally followed by one axis of labels",
            path.display(),
            volume.shape
        );
    }
    let channels: Vec<Vec<f32>> = (0..count)
        .map(|c| label_channel(&volume.data, count, c))
        .collect();
    let in_unit_range = volume.data.iter().all(|v| (0.0..=1.0).contains(v));
    let masks = if count == 1 && !in_unit_range {
        let mut values: Vec<i64> = Vec::new();
        for v in &volume.data {
            if v.fract() != 0.0 || *v < 0.0 {
                bail!(
                    "{what} {}: value {v} is neither a mask in [0, 1] nor a non-negative integer segmentation",
                    path.display()
                );
            }
            let v = *v as i64;
            if v != 0 && !values.contains(&v) {
                values.push(v);
            }
        }
        values.sort_unstable();
        values
            .into_iter()
            .map(|value| {
                let mask = volume
                    .data
                    .iter()
                    .map(|v| f32::from(*v as i64 == value))
                    .collect();
                (format!("label {value}"), mask)
            })
            .collect()
    } else {
        channels
            .iter()
            .enumerate()
            .map(|(index, channel)| (format!("label {index}"), channel.clone()))
            .collect()
    };
    Ok(Labels { channels, masks })
}

/// A `(1, C, *shape)` tensor from C channels on `shape`.
fn tensor(channels: &[Vec<f32>], shape: &[usize]) -> anyhow::Result<Tensor> {
    let mut dims = vec![1, channels.len()];
    dims.extend_from_slice(shape);
    Ok(Tensor::from_vec(channels.concat(), dims, &Device::Cpu)?)
}

/// The channels of a `(1, C, *shape)` tensor.
fn channels(tensor: &Tensor) -> anyhow::Result<Vec<Vec<f32>>> {
    let tensor = tensor.squeeze(0)?;
    let count = tensor.dim(0)?;
    (0..count)
        .map(|c| Ok(tensor.get(c)?.flatten_all()?.to_vec1::<f32>()?))
        .collect()
}

/// An image preprocessed as the data loaders do: min–max normalised, then resized linearly
/// to `shape`.
fn preprocessed(volume: &Volume, shape: &[usize]) -> Vec<f32> {
    let mut data = volume.data.clone();
    normalize(&mut data);
    resize_linear(&data, &volume.shape, shape)
}

/// Carries a DDF predicted on the training grids to the native grids, channel-first
/// `(ndim, *fixed_native)` in voxels.
///
/// Resizing follows half-pixel centres (`tf.image.resize`, the data loaders'): native fixed
/// voxel `p` sits at training coordinate `q = (p + ½)·F_t/F_n − ½`, and training moving
/// coordinate `x` at native moving coordinate `(x + ½)·M_n/M_t − ½`. The network maps `q` to
/// `x = q + d(q)` (DeepReg's sampling: moving coordinates on the fixed grid), with `d(q)` the
/// training field resized linearly onto the native fixed grid, so
/// `D(p) = (q + d(q) + ½)·M_n/M_t − ½ − p` per axis. With equal grids `D = d`; with `d = 0`
/// it is the identity sample of the moving image on the fixed grid (what "before" compares).
///
/// # Shapes
/// * `ddf`: `ndim` channels of `Π fixed_train` values.
/// * the result: `ndim` channels of `Π fixed_native` values.
fn native_field(
    ddf: &[Vec<f32>],
    fixed_train: &[usize],
    fixed_native: &[usize],
    moving_train: &[usize],
    moving_native: &[usize],
) -> Vec<Vec<f32>> {
    let ndim = fixed_native.len();
    let voxels: usize = fixed_native.iter().product();
    (0..ndim)
        .map(|axis| {
            let resized = resize_linear(&ddf[axis], fixed_train, fixed_native);
            let stride: usize = fixed_native[axis + 1..].iter().product();
            let to_train = fixed_train[axis] as f64 / fixed_native[axis] as f64;
            let to_native = moving_native[axis] as f64 / moving_train[axis] as f64;
            (0..voxels)
                .map(|flat| {
                    let p = ((flat / stride) % fixed_native[axis]) as f64;
                    let q = (p + 0.5) * to_train - 0.5;
                    let x = q + f64::from(resized[flat]);
                    ((x + 0.5) * to_native - 0.5 - p) as f32
                })
                .collect()
        })
        .collect()
}

/// Dice before → after of one label.
struct LabelDice {
    name: String,
    native: (f64, f64),
    training: (f64, f64),
}

/// What registering one pair measured.
struct PairReport {
    fixed_native: Vec<usize>,
    dice: Vec<LabelDice>,
    folding_native: Option<f64>,
}

fn register_pair(model: &Model, job: &PairJob, keys: &NpzKeys<'_>) -> anyhow::Result<PairReport> {
    let moving_train = model.shapes.moving.clone();
    let fixed_train = model.shapes.fixed.clone();
    let ndim = fixed_train.len();
    let moving = read_spatial(&job.moving, "moving image", keys.image, ndim)?;
    let fixed = read_spatial(&job.fixed, "fixed image", keys.image, ndim)?;
    let moving_labels = job
        .moving_label
        .as_deref()
        .map(|p| read_labels(p, "moving label", keys.label, &moving.shape))
        .transpose()?;
    let fixed_labels = job
        .fixed_label
        .as_deref()
        .map(|p| read_labels(p, "fixed label", keys.label, &fixed.shape))
        .transpose()?;

    let batch = Batch::pair(
        tensor(&[preprocessed(&moving, &moving_train)], &moving_train)?,
        tensor(&[preprocessed(&fixed, &fixed_train)], &fixed_train)?,
        None,
        None,
    );
    let output = model.forward(&batch)?;
    let ddf_train = output
        .get(names::DDF)
        .context("the model outputs no `ddf`")?
        .clone();
    let field = native_field(
        &channels(&ddf_train)?,
        &fixed_train,
        &fixed.shape,
        &moving_train,
        &moving.shape,
    );
    let ddf_native = tensor(&field, &fixed.shape)?;

    let moved = ops::warp(
        &tensor(std::slice::from_ref(&moving.data), &moving.shape)?,
        &ddf_native,
        Interp::Linear,
        Padding::Zeros,
    )?;
    write_output(&job.moved, &channels(&moved)?, &fixed, keys.image)?;
    write_output(&job.warp, &field, &fixed, "vol")?;
    if let (Some(labels), Some(out)) = (&moving_labels, &job.moved_label) {
        let warped = ops::warp(
            &tensor(&labels.channels, &moving.shape)?,
            &ddf_native,
            Interp::Nearest,
            Padding::Zeros,
        )?;
        write_output(out, &channels(&warped)?, &fixed, keys.label)?;
    }

    let dice = match (&moving_labels, &fixed_labels) {
        (Some(m), Some(f)) => label_dice(
            m,
            f,
            &ddf_native,
            &ddf_train,
            (&moving.shape, &fixed.shape),
            (&moving_train, &fixed_train),
        )?,
        _ => Vec::new(),
    };
    let folding_native =
        metrics::jacobian_stats(&field.concat(), &fixed.shape).map(|stats| stats.folding_fraction);
    Ok(PairReport {
        fixed_native: fixed.shape.clone(),
        dice,
        folding_native,
    })
}

/// Dice per label before → after, each mask warped linearly and thresholded at 0.5 as
/// predict (and DeepReg) measures it: on the native fixed grid (the native field; before:
/// the identity sample) and on the training grid (masks resized linearly as the data
/// loaders do, warped by the network's field). With equal grids the two agree exactly.
fn label_dice(
    moving: &Labels,
    fixed: &Labels,
    ddf_native: &Tensor,
    ddf_train: &Tensor,
    (moving_native, fixed_native): (&[usize], &[usize]),
    (moving_train, fixed_train): (&[usize], &[usize]),
) -> anyhow::Result<Vec<LabelDice>> {
    let identity_native = tensor(
        &native_field(
            &vec![vec![0.0; fixed_train.iter().product()]; fixed_train.len()],
            fixed_train,
            fixed_native,
            moving_train,
            moving_native,
        ),
        fixed_native,
    )?;
    let zero_train = ddf_train.zeros_like()?;
    let mut dice = Vec::new();
    for (name, moving_mask) in &moving.masks {
        let Some((_, fixed_mask)) = fixed.masks.iter().find(|(n, _)| n == name) else {
            tracing::warn!("{name} is in the moving label but not in the fixed one: skipped");
            continue;
        };
        let native_mask = tensor(std::slice::from_ref(moving_mask), moving_native)?;
        let on_native = |field: &Tensor| -> anyhow::Result<f64> {
            let warped = ops::warp(&native_mask, field, Interp::Linear, Padding::Zeros)?;
            Ok(metrics::binary_dice(fixed_mask, &channels(&warped)?[0]))
        };
        let train_mask = tensor(
            &[resize_linear(moving_mask, moving_native, moving_train)],
            moving_train,
        )?;
        let fixed_train_mask = resize_linear(fixed_mask, fixed_native, fixed_train);
        let on_train = |field: &Tensor| -> anyhow::Result<f64> {
            let warped = ops::warp(&train_mask, field, Interp::Linear, Padding::Zeros)?;
            Ok(metrics::binary_dice(
                &fixed_train_mask,
                &channels(&warped)?[0],
            ))
        };
        dice.push(LabelDice {
            name: name.clone(),
            native: (on_native(&identity_native)?, on_native(ddf_native)?),
            training: (on_train(&zero_train)?, on_train(ddf_train)?),
        });
    }
    Ok(dice)
}

/// Writes channels on the fixed native grid, with the fixed image's affine: `(*shape)` for
/// one channel, `(*shape, C)` (DeepReg's layout) for several.
fn write_output(
    path: &Path,
    channels: &[Vec<f32>],
    fixed: &Volume,
    npz_key: &str,
) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let voxels = channels.first().map_or(0, Vec::len);
    let mut shape = fixed.shape.clone();
    let data = if channels.len() == 1 {
        channels[0].clone()
    } else {
        shape.push(channels.len());
        (0..voxels)
            .flat_map(|v| channels.iter().map(move |c| c[v]))
            .collect()
    };
    let volume = Volume {
        data,
        shape,
        affine: fixed.affine,
    };
    write_volume_file(path, &volume, npz_key).with_context(|| format!("writing {}", path.display()))
}

fn print_report(job: &PairJob, model: &Model, report: &PairReport) -> anyhow::Result<()> {
    say!(
        "registered {} to {}: {} (warp {})",
        job.moving.display(),
        job.fixed.display(),
        job.moved.display(),
        job.warp.display()
    )?;
    say!(
        "  network grid {:?} (the run's fixed image shape), outputs on the native grid {:?}",
        model.shapes.fixed,
        report.fixed_native
    )?;
    for label in &report.dice {
        say!(
            "  {} Dice  native {:.4} → {:.4}   training grid {:.4} → {:.4}",
            label.name,
            label.native.0,
            label.native.1,
            label.training.0,
            label.training.1
        )?;
    }
    if let Some(folding) = report.folding_native {
        say!(
            "  folding (det J ≤ 0)  {:.3} % of native voxels",
            100.0 * folding
        )?;
    }
    Ok(())
}

/// Mean Dice over every label of every pair.
#[derive(Default)]
struct DiceSummary {
    native: [f64; 2],
    training: [f64; 2],
    count: usize,
}

impl DiceSummary {
    fn add(&mut self, report: &PairReport) {
        for label in &report.dice {
            self.native[0] += label.native.0;
            self.native[1] += label.native.1;
            self.training[0] += label.training.0;
            self.training[1] += label.training.1;
            self.count += 1;
        }
    }

    fn print(&self, pairs: usize) -> anyhow::Result<()> {
        if self.count == 0 {
            say!("registered {pairs} pairs")?;
            return Ok(());
        }
        let n = self.count as f64;
        say!(
            "{pairs} pairs, mean Dice over {} labels: native {:.4} → {:.4}, training grid {:.4} → {:.4}",
            self.count,
            self.native[0] / n,
            self.native[1] / n,
            self.training[0] / n,
            self.training[1] / n
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_grids_keep_the_field() {
        let ddf = vec![vec![0.5, -1.0, 2.0, 0.0], vec![1.0, 1.0, 0.0, -0.25]];
        let field = native_field(&ddf, &[2, 2], &[2, 2], &[2, 2], &[2, 2]);
        for (a, b) in field.iter().flatten().zip(ddf.iter().flatten()) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn a_zero_field_maps_voxel_centres_between_grids() {
        // Fixed native 4 voxels, training 2; moving native 6, training 2 (1D-like axis 0,
        // axis 1 of size 1 everywhere). p = 0: q = (0.5)·0.5 − 0.5 = −0.25;
        // x = −0.25 → native (0.25)·3 − 0.5 = 0.25, D = 0.25. p = 3: q = 1.25,
        // native (1.75)·3 − 0.5 = 4.75, D = 1.75.
        let ddf = vec![vec![0.0; 2], vec![0.0; 2]];
        let field = native_field(&ddf, &[2, 1], &[4, 1], &[2, 1], &[6, 1]);
        let expected = [0.25, 0.75, 1.25, 1.75];
        for (got, want) in field[0].iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert!(field[1].iter().all(|v| v.abs() < 1e-6));
    }

    #[test]
    fn a_training_displacement_scales_to_native_voxels() {
        // Same fixed and moving grids, native twice the training size: one training voxel
        // of displacement is two native voxels.
        let ddf = vec![vec![1.0; 4], vec![0.0; 4]];
        let field = native_field(&ddf, &[2, 2], &[4, 4], &[2, 2], &[4, 4]);
        assert!(
            field[0].iter().all(|v| (v - 2.0).abs() < 1e-6),
            "{:?}",
            field[0]
        );
    }

    #[test]
    fn integer_segmentations_give_one_mask_per_value_and_masks_stay_channels() {
        let dir = tempfile::tempdir().unwrap();
        let affine = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let write = |name: &str, data: Vec<f32>, shape: Vec<usize>| {
            let path = dir.path().join(name);
            let volume = Volume {
                data,
                shape,
                affine,
            };
            voxreg::data::write_nifti(&path, &volume).unwrap();
            path
        };
        let seg = write("seg.nii", vec![0.0, 5.0, 2.0, 5.0], vec![2, 2]);
        let labels = read_labels(&seg, "label", "seg", &[2, 2]).unwrap();
        let names: Vec<&str> = labels.masks.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["label 2", "label 5"]);
        assert_eq!(labels.masks[1].1, [0.0, 1.0, 0.0, 1.0]);
        assert_eq!(labels.channels, [vec![0.0, 5.0, 2.0, 5.0]]);
        let masks = write(
            "masks.nii",
            vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0],
            vec![2, 2, 2],
        );
        let labels = read_labels(&masks, "label", "seg", &[2, 2]).unwrap();
        assert_eq!(
            labels.channels,
            [vec![1.0, 0.0, 1.0, 0.0], vec![0.0, 1.0, 1.0, 0.0]]
        );
        assert_eq!(labels.masks.len(), 2);
        let soft = write("soft.nii", vec![0.0, 0.5, 1.5, 1.0], vec![2, 2]);
        let error = read_labels(&soft, "label", "seg", &[2, 2])
            .unwrap_err()
            .to_string();
        assert!(error.contains("neither a mask in [0, 1]"), "{error}");
        let probability = write("p.nii", vec![0.0, 0.5, 0.25, 1.0], vec![2, 2]);
        let labels = read_labels(&probability, "label", "seg", &[2, 2]).unwrap();
        assert_eq!(labels.masks.len(), 1, "a probability map is one mask");
        let wrong = read_labels(&seg, "label", "seg", &[2, 3])
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("expected its image's shape"), "{wrong}");
    }

    fn job(name: &str) -> PairJob {
        PairJob {
            moving: PathBuf::from("m.nii"),
            fixed: PathBuf::from("f.nii"),
            moved: PathBuf::from(format!("{name}_moved.nii")),
            warp: PathBuf::from(format!("{name}_warp.nii")),
            moving_label: None,
            fixed_label: None,
            moved_label: None,
        }
    }

    #[test]
    fn outputs_named_twice_or_as_inputs_are_refused() {
        check_outputs(&[job("a"), job("b")]).unwrap();
        let twice = check_outputs(&[job("a"), job("a")]).unwrap_err();
        assert!(twice.to_string().contains("twice"), "{twice}");
        let mut clash = job("a");
        clash.moved = PathBuf::from("m.nii");
        let error = check_outputs(&[clash]).unwrap_err();
        assert!(
            error.to_string().contains("both an input and an output"),
            "{error}"
        );
    }

    #[test]
    fn the_pairs_csv_resolves_paths_and_names_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("pairs.csv");
        std::fs::write(
            &csv,
            "moving,fixed,moved,warp,moving_label,moved_label\na.nii,b.nii,out/a.nii,out/w.nii,,\nc.nii,d.nii,o.nii,w2.nii,cl.nii,ol.nii\n",
        )
        .unwrap();
        let jobs = read_pairs(&csv).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].moving, dir.path().join("a.nii"));
        assert_eq!(jobs[0].moving_label, None);
        assert_eq!(jobs[1].moved_label, Some(dir.path().join("ol.nii")));
        std::fs::write(&csv, "moving,fixed,moved\na,b,c\n").unwrap();
        let missing = read_pairs(&csv).unwrap_err().to_string();
        assert!(missing.contains("no `warp` column"), "{missing}");
        std::fs::write(&csv, "moving,fixed,moved,warp,extra\na,b,c,d,e\n").unwrap();
        let unknown = read_pairs(&csv).unwrap_err().to_string();
        assert!(unknown.contains("unknown column `extra`"), "{unknown}");
        std::fs::write(&csv, "moving,fixed,moved,warp\na,,c,d\n").unwrap();
        let empty = read_pairs(&csv).unwrap_err().to_string();
        assert!(
            empty.contains("line 2") && empty.contains("`fixed`"),
            "{empty}"
        );
    }
}
