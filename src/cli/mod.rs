//! Command-line definitions and dispatch. Flags are kebab-case; DeepReg's underscore
//! spellings (`--config_path`, …) are accepted as aliases so DeepReg users' scripts run.

mod atlalign_export;
mod atomic;
mod config;
mod dataset;
mod device;
pub mod error_text;
mod host;
mod hyper;
mod image_files;
mod line_chart;
mod loss_curve;
mod pair_outputs;
mod plugin_build;
mod plugin_new;
mod plugins;
mod predict;
mod raster;
mod register;
mod register_model;
mod report;
mod run_folder;
pub mod stdout;
mod train;
mod trained_run;
mod vis;
mod warp;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// voxreg: deep-learning image registration (DeepReg-compatible configs, plugins).
///
/// A flag given twice takes its last value, as with DeepReg's argparse command lines;
/// repeatable flags (`--plugin`, `--config-path`) collect every value.
#[derive(Debug, Parser)]
#[command(
    name = "voxreg",
    version,
    about,
    propagate_version = true,
    args_override_self = true
)]
pub struct Cli {
    /// Dynamic plugin library to load before anything else (repeatable). Also read from the
    /// VOXREG_PLUGINS environment variable (a `:`-separated list).
    #[arg(long = "plugin", global = true, value_name = "PATH")]
    plugins: Vec<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List registered components, or show one component's keys and defaults.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Check configuration files: parse, merge, validate, print the resolved YAML.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Train a registration network (DeepReg's deepreg_train).
    Train(TrainArgs),
    /// Predict with a trained network on a data split (DeepReg's deepreg_predict).
    Predict(PredictArgs),
    /// Warp an image with a saved displacement field (DeepReg's deepreg_warp).
    Warp(WarpArgs),
    /// Register a pair of images by iterative optimisation, without training.
    Register(RegisterArgs),
    /// Visualise images and fields as PNG tiles or animated GIFs (DeepReg's deepreg_vis).
    Vis(VisArgs),
    /// Build datasets in DeepReg's layout.
    #[command(subcommand)]
    Dataset(DatasetCommand),
}

#[derive(Debug, Subcommand)]
enum DatasetCommand {
    /// A paired NIfTI dataset from one template (e.g. the MNI brain): each moving and fixed
    /// image is the template warped by its own known random smooth field; label maps are
    /// warped alike (binary masks, one channel each); the true fields are written too.
    FromTemplate(FromTemplateArgs),
    /// A tile dataset for the `tiles` data loader, cut from one 2D image (or one plane of a
    /// 3D one, e.g. the MNI brain) as a microscope scans a slide: per mosaic a grid of
    /// overlapping tiles at known origins (a regular step plus a small random stage error),
    /// written as PNG files named `mosaic<k>_Y<row>_X<column>.png` in `<split>/images/`, the
    /// origins in `<split>/tiles.csv`.
    Tiles(TilesArgs),
    /// An atlalign-format dataset (`<out>/<split>/dataset.h5` and `<out>/reference.nii.gz`)
    /// for the `atlalign` data loader: sections of a reference volume, each deformed by known
    /// random smooth fields whose inverse is computed numerically; folding draws are redrawn
    /// (atlalign's `DatasetAugmenter` rule). Train, valid and test use different sections.
    Augment(AugmentArgs),
}

#[derive(Debug, Args)]
struct AugmentArgs {
    /// The reference volume (3D): NIfTI, NumPy .npy / .npz (its array `vol`).
    #[arg(long, required = true)]
    reference: PathBuf,
    /// A label map on the reference's grid (repeatable), e.g. a tissue probability map:
    /// thresholded at half its maximum, resliced as the reference and written as
    /// `reference_labels.nii.gz` for the loader's `reference_labels`.
    #[arg(long)]
    label: Vec<PathBuf>,
    /// The axis the sections are cut across (0, 1 or 2; 1 is coronal in the MNI template).
    #[arg(long, default_value_t = 1)]
    axis: usize,
    /// Output folder (created; must be new or empty).
    #[arg(short = 'o', long, required = true)]
    out: PathBuf,
    /// Section size ROWS,COLUMNS in pixels (atlalign's 320,456).
    #[arg(long, value_delimiter = ',', default_value = "64,80")]
    shape: Vec<usize>,
    /// Distinct sections in the train, valid and test splits.
    #[arg(long, value_delimiter = ',', default_value = "12,3,3")]
    sections: Vec<usize>,
    /// Deformed samples per section (atlalign's n_iter).
    #[arg(long = "samples-per-section", default_value_t = 4)]
    samples_per_section: usize,
    /// Largest standard deviation of the random fields, in pixels.
    #[arg(long = "field-strength", default_value_t = 3.0)]
    field_strength: f64,
    /// Size of the random low-resolution fields ROWS,COLUMNS.
    #[arg(long = "low-res-size", value_delimiter = ',', default_value = "4,4")]
    low_res_size: Vec<usize>,
    /// Largest rotation of the random affine part, degrees.
    #[arg(long, default_value_t = 5.0)]
    rotation: f64,
    /// Largest relative scale change of the random affine part, per axis.
    #[arg(long, default_value_t = 0.05)]
    scale: f64,
    /// Largest translation of the random affine part, pixels per axis.
    #[arg(long, default_value_t = 3.0)]
    translation: f64,
    /// Redraw a sample whose forward or inverse field folds this many pixels or more
    /// (atlalign's max_corrupted_pixels).
    #[arg(long = "max-folded-pixels", default_value_t = 1)]
    max_folded_pixels: usize,
    /// Draws per sample before its section is stored undeformed (atlalign's max_trials).
    #[arg(long = "max-trials", default_value_t = 5)]
    max_trials: usize,
    /// Seed of the fields.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Debug, Args)]
struct TilesArgs {
    /// The source image: NIfTI, NumPy .npz (its array `vol`), PNG or TIFF.
    #[arg(long, required = true)]
    image: PathBuf,
    /// Take one plane of a 3D image: AXIS,INDEX in voxels, e.g. 2,40.
    #[arg(long, value_delimiter = ',', value_name = "AXIS,INDEX")]
    slice: Option<Vec<usize>>,
    /// Output folder (created; must be new or empty).
    #[arg(short = 'o', long, required = true)]
    out: PathBuf,
    /// Tile size ROWS,COLUMNS in pixels.
    #[arg(long, value_delimiter = ',', default_value = "32,32")]
    tile: Vec<usize>,
    /// Tiles per mosaic: ROWS,COLUMNS of the grid.
    #[arg(long, value_delimiter = ',', default_value = "2,2")]
    grid: Vec<usize>,
    /// Fraction of a tile shared with a grid neighbour, in [0, 1).
    #[arg(long, default_value_t = 0.5)]
    overlap: f64,
    /// Largest random error of a tile origin, in pixels per axis.
    #[arg(long, default_value_t = 2)]
    jitter: usize,
    /// Mosaics in the train, valid and test splits.
    #[arg(long, value_delimiter = ',', default_value = "4,1,1")]
    mosaics: Vec<usize>,
    /// Seed of the mosaic places and the jitter.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Debug, Args)]
struct FromTemplateArgs {
    /// Template image (NIfTI).
    #[arg(long, required = true)]
    template: PathBuf,
    /// Label map on the template's grid (repeatable), e.g. a tissue probability map.
    #[arg(long)]
    label: Vec<PathBuf>,
    /// Take one plane of a 3D template (and its labels) as a 2D template: AXIS,INDEX in
    /// template voxels, e.g. 2,40 for the axial plane 40.
    #[arg(long, value_delimiter = ',', value_name = "AXIS,INDEX")]
    slice: Option<Vec<usize>>,
    /// Output folder (created; must be new or empty).
    #[arg(short = 'o', long, required = true)]
    out: PathBuf,
    /// Image shape of the dataset, e.g. 32,32,32.
    #[arg(long, value_delimiter = ',', required = true)]
    shape: Vec<usize>,
    /// Crop start in template voxels, e.g. 40,50,40 (with --crop-size).
    #[arg(long = "crop-start", value_delimiter = ',')]
    crop_start: Option<Vec<usize>>,
    /// Crop size in template voxels, e.g. 96,96,96 (with --crop-start).
    #[arg(long = "crop-size", value_delimiter = ',')]
    crop_size: Option<Vec<usize>>,
    /// Pairs in the train, valid and test splits.
    #[arg(long, value_delimiter = ',', default_value = "8,2,2")]
    pairs: Vec<usize>,
    /// Largest standard deviation of the random fields, in voxels.
    #[arg(long = "field-strength", default_value_t = 2.0)]
    field_strength: f64,
    /// Size of the random low-resolution fields, e.g. 4,4,4.
    #[arg(long = "low-res-size", value_delimiter = ',', default_value = "4,4,4")]
    low_res_size: Vec<usize>,
    /// Seed of the fields.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Do not write the true fields (they are large and compress poorly).
    #[arg(long = "no-fields")]
    no_fields: bool,
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// List every registered component: category, name, source and description.
    List {
        /// Only this category (backbone, method, image_loss, label_loss, regularization,
        /// optimizer, data_loader, file_loader, augmentation).
        #[arg(long)]
        category: Option<String>,
    },
    /// Print a component's config with every default filled in.
    Show {
        /// The category (e.g. backbone).
        category: String,
        /// The component name (e.g. unet).
        name: String,
    },
    /// Create a dynamic plugin crate (a backbone and an image loss) in a new folder.
    New {
        /// The folder to create (must not exist or be empty).
        dir: PathBuf,
        /// The crate name (default: the folder's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Compile a plugin crate against this binary's own framework library, so it loads into
    /// this voxreg; prints the library's path.
    Build {
        /// The plugin crate's folder (holding its Cargo.toml).
        dir: PathBuf,
        /// Optimise the plugin's code.
        #[arg(long)]
        release: bool,
        /// Folder for the library (default: <target dir>/voxreg-plugin/<debug|release>).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Parse and merge the files (later ones win), resolve every component, and print the
    /// resolved configuration, or every problem found.
    Check {
        /// Config files, merged in order.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// Flags shared by the commands that run models.
#[derive(Debug, Args)]
struct DeviceArgs {
    /// DeepReg's GPU ids. voxreg has no GPU path yet: everything runs on the CPU, and a
    /// non-empty value says so in a warning.
    #[arg(short = 'g', long)]
    gpu: Option<String>,
    /// Worker threads: the data loader's (overriding train.preprocess.num_parallel_calls)
    /// and the compute threads (default: RAYON_NUM_THREADS, else one per core).
    #[arg(long = "num-workers", alias = "num_workers")]
    num_workers: Option<usize>,
    /// Accepted for DeepReg's command lines (`--gpu_allow_growth`, `-gr`, with or without a
    /// value) and ignored: voxreg allocates memory as it needs it.
    #[arg(
        long = "gpu-allow-growth",
        alias = "gpu_allow_growth",
        num_args = 0..=1,
        value_name = "VALUE",
        default_missing_value = "true"
    )]
    gpu_allow_growth: Option<String>,
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// Config files, merged in order (later ones win).
    #[arg(short = 'c', long = "config-path", alias = "config_path", num_args = 1.., required = true)]
    config_path: Vec<PathBuf>,
    /// Run name: the folder under --log-dir (default: a timestamp). `-n` is the spelling in
    /// DeepReg's documentation, `-l` the one its code accepts.
    #[arg(short = 'l', short_alias = 'n', long = "exp-name", alias = "exp_name")]
    exp_name: Option<String>,
    /// Root folder of runs.
    #[arg(long = "log-dir", alias = "log_dir", default_value = "logs")]
    log_dir: PathBuf,
    /// Checkpoint to resume from.
    #[arg(short = 'k', long = "ckpt-path", alias = "ckpt_path")]
    ckpt_path: Option<PathBuf>,
    /// Override train.epochs (and cap save_period).
    #[arg(long = "max-epochs", alias = "max_epochs")]
    max_epochs: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Debug, Args)]
struct PredictArgs {
    /// Checkpoint to predict with.
    #[arg(short = 'k', long = "ckpt-path", alias = "ckpt_path", required = true)]
    ckpt_path: PathBuf,
    /// Data split: train, valid or test.
    #[arg(long, value_parser = ["train", "valid", "test"], required = true)]
    split: String,
    /// Config files (default: the run's config.yaml beside the checkpoint).
    #[arg(short = 'c', long = "config-path", alias = "config_path", num_args = 1..)]
    config_path: Vec<PathBuf>,
    /// Pairs per batch (backbones normalise with batch statistics, so predictions can
    /// depend on it).
    #[arg(
        short = 'b',
        long = "batch-size",
        alias = "batch_size",
        default_value_t = 1
    )]
    batch_size: usize,
    /// Write each pair's arrays as NIfTI (default; the last of --save-nifti / --no-nifti
    /// wins).
    #[arg(long = "save-nifti", alias = "save_nifti", overrides_with = "no_nifti")]
    save_nifti: bool,
    /// Do not write NIfTI outputs.
    #[arg(long = "no-nifti", alias = "no_nifti", overrides_with = "save_nifti")]
    no_nifti: bool,
    /// Write each pair's arrays as PNG slices (the last of --save-png / --no-png wins).
    #[arg(long = "save-png", alias = "save_png", overrides_with = "no_png")]
    save_png: bool,
    /// Do not write PNG slices (default, as in DeepReg's predict command).
    #[arg(long = "no-png", alias = "no_png", overrides_with = "save_png")]
    no_png: bool,
    /// Output folder name under --log-dir (default: a timestamp).
    #[arg(short = 'n', long = "exp-name", alias = "exp_name")]
    exp_name: Option<String>,
    /// Root folder of outputs.
    #[arg(long = "log-dir", alias = "log_dir", default_value = "logs")]
    log_dir: PathBuf,
    /// Set a hyperparameter declared under train.hyperparameters for every pair, as
    /// NAME=VALUE (e.g. lambda=0.3); repeatable. Default: each one's `value`. A range
    /// NAME=START:END:COUNT sweeps it, as --hyper-sweep.
    #[arg(long = "hyper", value_name = "NAME=VALUE")]
    hyper: Vec<String>,
    /// Evaluate at evenly spaced values of one hyperparameter, NAME=START:END:COUNT (e.g.
    /// lambda=0:1:11): each value's outputs in its own folder, sweep.csv and best.csv
    /// (the value of highest mean Dice per label and over all), dice_vs_NAME.png and
    /// folding_vs_NAME.png.
    #[arg(long = "hyper-sweep", value_name = "NAME=START:END:COUNT")]
    hyper_sweep: Option<String>,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Debug, Args)]
struct WarpArgs {
    /// NIfTI image or label to warp.
    #[arg(short = 'i', long, required = true)]
    image: PathBuf,
    /// NIfTI DDF, shape (d1, d2, d3, 3) as DeepReg saves it.
    #[arg(short = 'd', long, required = true)]
    ddf: PathBuf,
    /// Output file (.nii or .nii.gz; default warped.nii.gz).
    #[arg(short = 'o', long, default_value = "warped.nii.gz")]
    out: PathBuf,
    /// Values sampled outside the image: zeros (as predict and the DDF methods warp) or
    /// border (the border voxels extend outwards).
    #[arg(long, value_enum, default_value_t = WarpPadding::Zeros)]
    padding: WarpPadding,
}

/// `voxreg warp --padding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum WarpPadding {
    /// Zero outside the image, as predict's `pred_fixed_image` is warped.
    Zeros,
    /// Locations clamped to the image.
    Border,
}

#[derive(Debug, Args)]
struct RegisterArgs {
    /// Moving image (NIfTI; with --model also .npz, .png, .tif).
    #[arg(long, required_unless_present = "pairs")]
    moving: Option<PathBuf>,
    /// Fixed image (NIfTI; with --model also .npz, .png, .tif).
    #[arg(long, required_unless_present = "pairs")]
    fixed: Option<PathBuf>,
    /// Moving label (NIfTI, one channel): warped too, and used by label losses and metrics.
    #[arg(long = "moving-label", alias = "moving_label")]
    moving_label: Option<PathBuf>,
    /// Fixed label (NIfTI, one channel).
    #[arg(long = "fixed-label", alias = "fixed_label")]
    fixed_label: Option<PathBuf>,
    /// Config files: their `train.loss` and `train.optimizer` replace the defaults (lncc
    /// kernel 9 + 0.5 · bending; Adam at 0.1 for a DDF, 0.01 for an affine transform).
    #[arg(short = 'c', long = "config-path", alias = "config_path", num_args = 1..)]
    config_path: Vec<PathBuf>,
    /// What is optimised: a dense displacement field or an affine matrix.
    #[arg(long, value_parser = ["ddf", "affine"], default_value = "ddf")]
    transform: String,
    /// Optimiser steps.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Output folder (must be new or empty).
    #[arg(short = 'o', long, default_value = "registered")]
    out: PathBuf,
    /// Register with a trained network instead of optimising: a run folder, a checkpoint
    /// folder (`<run>/save/ckpt-<epoch>`) or a weights file. Writes --moved and --warp.
    #[arg(long, value_name = "RUN_OR_CHECKPOINT", conflicts_with_all = ["transform", "iterations", "out", "config_path"])]
    model: Option<PathBuf>,
    /// With --model: the moving image warped onto the fixed image's grid, in its original
    /// intensities (.nii, .nii.gz or .npz).
    #[arg(long, requires = "model")]
    moved: Option<PathBuf>,
    /// With --model: the displacement field on the fixed image's grid, `(*fixed, ndim)` in
    /// voxels, DeepReg's layout (.nii, .nii.gz or .npz).
    #[arg(long, requires = "model")]
    warp: Option<PathBuf>,
    /// With --model: the moving label warped by nearest neighbour onto the fixed grid.
    #[arg(long = "moved-label", alias = "moved_label", requires = "moving_label")]
    moved_label: Option<PathBuf>,
    /// With --model: a CSV of pairs instead of --moving/--fixed, with the header columns
    /// `moving,fixed,moved,warp` and optionally `moving_label,fixed_label,moved_label`;
    /// relative paths are taken from the CSV's folder.
    #[arg(long, requires = "model", conflicts_with_all = ["moving", "fixed", "moved", "warp", "moving_label", "fixed_label", "moved_label"])]
    pairs: Option<PathBuf>,
    /// With --model: set a hyperparameter of the trained run (HyperMorph's lambda),
    /// NAME=VALUE (repeatable).
    #[arg(long = "hyper", value_name = "NAME=VALUE", requires = "model")]
    hyper: Vec<String>,
    /// With --model: the array read from .npz files (VoxelMorph's `vol`); labels read
    /// `--npz-label-key`. Written .npz files use the same keys.
    #[arg(long = "npz-key", default_value = "vol")]
    npz_key: String,
    /// With --model: the array read from .npz label files (VoxelMorph's `seg`).
    #[arg(long = "npz-label-key", default_value = "seg")]
    npz_label_key: String,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Debug, Args)]
struct VisArgs {
    /// 0: a GIF through the slices of each image; 1: a GIF of each image warped by a DDF
    /// scaled from 0 to 1; 2: a tiled PNG of slices (rows: slices, columns: images); 3: a
    /// GIF through the slices of images tiled on a grid.
    #[arg(short = 'm', long, value_parser = clap::value_parser!(u8).range(0..=3), required = true)]
    mode: u8,
    /// Comma-separated NIfTI image paths.
    #[arg(
        short = 'i',
        long = "image-paths",
        alias = "image_paths",
        required = true
    )]
    image_paths: String,
    /// Output folder (created if missing).
    #[arg(
        short = 's',
        long = "save-path",
        alias = "save_path",
        default_value = "."
    )]
    save_path: PathBuf,
    /// DDF (d1, d2, d3, 3) for mode 1.
    #[arg(long = "ddf-path", alias = "ddf_path")]
    ddf_path: Option<PathBuf>,
    /// Comma-separated slice indices along the last axis (modes 1, 2; default: the middle
    /// slice).
    #[arg(long = "slice-inds", alias = "slice_inds")]
    slice_inds: Option<String>,
    /// Milliseconds between frames (modes 0, 1, 3).
    #[arg(long, default_value_t = 50)]
    interval: u32,
    /// Frames of the DDF animation (mode 1).
    #[arg(long = "num-interval", alias = "num_interval", default_value_t = 100)]
    num_interval: usize,
    /// Output file name (modes 2, 3).
    #[arg(long)]
    fname: Option<String>,
    /// Comma-separated column titles (mode 2; default: the file names), stored in the PNG's
    /// Title text field.
    #[arg(long = "col-titles", alias = "col_titles")]
    col_titles: Option<String>,
    /// Rows and columns of the tiled GIF (mode 3).
    #[arg(long, default_value = "2,2")]
    size: String,
    /// Enlarge every pixel to a scale × scale block.
    #[arg(long, default_value_t = 1)]
    scale: usize,
}

impl Cli {
    /// Parses the process's arguments. DeepReg's two-letter short flag `-gr` is read as
    /// `--gpu-allow-growth` first (clap's short flags are one letter, and would read it as
    /// `-g r`). A negative number is read as a flag's value (`--scale -1`), so a flag that
    /// takes none is refused by name with the range it takes rather than as an unknown
    /// argument.
    pub fn parse_args() -> Self {
        match Self::try_parse_from_args(deepreg_spellings(std::env::args_os())) {
            Ok(cli) => cli,
            Err(error) => exit_with(error),
        }
    }

    /// Parses `args` (the program name first) as [`Cli::parse_args`] does.
    pub fn try_parse_from_args(args: Vec<OsString>) -> Result<Self, clap::Error> {
        let matches = negative_numbers_allowed(<Self as clap::CommandFactory>::command())
            .try_get_matches_from(args)?;
        <Self as clap::FromArgMatches>::from_arg_matches(&matches)
    }

    /// Runs the chosen command.
    pub fn run(self) -> anyhow::Result<()> {
        let plugins = host::plugin_paths(&self.plugins);
        match self.command {
            Command::Plugins(PluginsCommand::List { category }) => {
                plugins::list(&plugins, category.as_deref())
            }
            Command::Plugins(PluginsCommand::Show { category, name }) => {
                plugins::show(&plugins, &category, &name)
            }
            Command::Plugins(PluginsCommand::New { dir, name }) => {
                plugins::new(&dir, name.as_deref())
            }
            Command::Plugins(PluginsCommand::Build {
                dir,
                release,
                out_dir,
            }) => plugin_build::build(&dir, &plugin_build::BuildOptions { release, out_dir })
                .map(drop),
            Command::Config(ConfigCommand::Check { files }) => config::check(&plugins, &files),
            Command::Train(args) => train::train(&plugins, &args),
            Command::Predict(args) => predict::predict(&plugins, &args),
            Command::Warp(args) => warp::warp(&args),
            Command::Register(args) => match &args.model {
                Some(_) => register_model::register_with_model(&plugins, &args),
                None => register::register(&plugins, &args),
            },
            Command::Vis(args) => vis::vis(&args),
            Command::Dataset(DatasetCommand::FromTemplate(args)) => dataset::from_template(&args),
            Command::Dataset(DatasetCommand::Tiles(args)) => dataset::tiles(&args),
            Command::Dataset(DatasetCommand::Augment(args)) => dataset::augment(&args),
        }
    }
}

/// `command` and every subcommand below it reading `-1`, `-0.5` as values.
fn negative_numbers_allowed(command: clap::Command) -> clap::Command {
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    names
        .into_iter()
        .fold(command.allow_negative_numbers(true), |command, name| {
            command.mut_subcommand(name, negative_numbers_allowed)
        })
}

/// The hint for a negative number given to a flag that takes a count or size.
fn negative_value_hint(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::ValueValidation {
        return None;
    }
    let ContextValue::String(value) = error.get(ContextKind::InvalidValue)? else {
        return None;
    };
    let ContextValue::String(flag) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    value
        .starts_with('-')
        .then(|| format!("  tip: {flag} takes a whole number, 0 or more; {value} is negative"))
}

/// Prints a parse error (with the hint for a negative count) and exits as clap does.
fn exit_with(error: clap::Error) -> ! {
    match negative_value_hint(&error) {
        Some(hint) => {
            let _ = error.print();
            eprintln!("{hint}");
            std::process::exit(error.exit_code());
        }
        None => error.exit(),
    }
}

/// `args` with DeepReg's `-gr` spelled `--gpu-allow-growth`.
fn deepreg_spellings(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| {
            if arg == "-gr" {
                OsString::from("--gpu-allow-growth")
            } else {
                arg
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{deepreg_spellings, Cli, Command};

    #[test]
    fn a_repeated_flag_takes_its_last_value_and_lists_collect() {
        let cli = Cli::try_parse_from([
            "voxreg",
            "train",
            "--plugin",
            "a.so",
            "--plugin",
            "b.so",
            "--config_path",
            "base.yaml",
            "-c",
            "tiny.yaml",
            "--max_epochs",
            "1",
            "--max-epochs",
            "3",
            "--exp_name",
            "first",
            "-l",
            "second",
        ])
        .unwrap();
        assert_eq!(cli.plugins.len(), 2);
        let Command::Train(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.max_epochs, Some(3));
        assert_eq!(args.exp_name.as_deref(), Some("second"));
        assert_eq!(args.config_path.len(), 2);
    }

    /// DeepReg's train and predict flags, as its documentation and code spell them.
    #[test]
    fn deepregs_flag_spellings_parse() {
        let parse = |args: &[&str]| {
            let args = args.iter().map(std::ffi::OsString::from);
            Cli::try_parse_from(deepreg_spellings(
                std::iter::once("voxreg".into()).chain(args),
            ))
        };
        for growth in [&["-gr"][..], &["-gr", "true"], &["--gpu_allow_growth"]] {
            let mut args = vec!["train", "--gpu", "", "-c", "a.yaml", "-n", "run"];
            args.extend_from_slice(growth);
            args.extend_from_slice(&["--num_workers", "2", "--log_dir", "logs"]);
            let cli = parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let Command::Train(train) = cli.command else {
                panic!("parsed as another command");
            };
            assert_eq!(train.exp_name.as_deref(), Some("run"));
            assert!(train.device.gpu_allow_growth.is_some());
            assert_eq!(train.device.gpu.as_deref(), Some(""));
        }
        let cli = parse(&[
            "predict",
            "-g",
            "",
            "-gr",
            "-k",
            "logs/run/save/ckpt-2",
            "--split",
            "test",
            "-b",
            "1",
            "-n",
            "out",
            "--save_nifti",
            "--no_png",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Predict(_)));
    }
}
