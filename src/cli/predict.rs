//! `voxreg predict`: evaluate a trained model on a split and write its metrics and
//! per-pair outputs.

use std::path::PathBuf;

use anyhow::{bail, Context};
use voxreg::candle::Device;
use voxreg::component::Split;
use voxreg::engine::{self, Evaluation, Model};

use super::atlalign_export::AtlalignExport;
use super::device::DeviceChoice;
use super::pair_outputs::{Formats, PairWriter};
use super::stdout::say;
use super::{host, hyper, report, run_folder, trained_run, PredictArgs};

/// Loads the run's configuration (or `--config-path`), builds the model with the
/// checkpoint's weights, evaluates it on `--split` in batches of `--batch-size`, prints the
/// before → after means and writes, as DeepReg lays them out, into the new folder
/// `<log-dir>/<exp-name>/<split>/` each pair's images, labels and fields under
/// `pair_<indices>/` (NIfTI and/or PNG, see [`PairWriter`]), `metrics.csv`, the statistics
/// CSVs, and `pairs.csv` (each pair folder's image ids). An existing folder is refused, so
/// earlier outputs are never replaced. `--hyper NAME=VALUE` sets a hyperparameter;
/// `--hyper-sweep NAME=START:END:COUNT` evaluates each value into its own subfolder
/// `<exp-name>/<name>_<value>/<split>/` and writes `sweep.csv` and `best.csv` in
/// `<exp-name>/`.
pub fn predict(plugins: &[PathBuf], args: &PredictArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let (ranges, values): (Vec<&String>, Vec<&String>) =
        args.hyper.iter().partition(|s| s.contains(':'));
    let settings = values
        .iter()
        .map(|s| hyper::parse_setting(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sweeps: Vec<&str> = ranges
        .iter()
        .map(|s| s.as_str())
        .chain(args.hyper_sweep.as_deref())
        .collect();
    let sweep = match sweeps.as_slice() {
        [] => None,
        [one] => Some(hyper::parse_sweep(one)?),
        _ => bail!(
            "sweep one hyperparameter at a time: got {}",
            sweeps.join(", ")
        ),
    };
    let trained = trained_run::locate(&args.ckpt_path, "checkpoint", None)?;
    let config_paths = if args.config_path.is_empty() {
        vec![trained.config.clone()]
    } else {
        args.config_path.clone()
    };
    let device = DeviceChoice::of(&args.device)?;
    let (_registry, mut config) = host::load_config(plugins, &config_paths)?;
    device.apply(&mut config);
    let split = match args.split.as_str() {
        "train" => Split::Train,
        "valid" => Split::Valid,
        _ => Split::Test,
    };
    if let Some(name) = &args.exp_name {
        run_folder::check_name(name)?;
        let out = args.log_dir.join(name);
        if out.exists() {
            bail!(
                "{} exists; choose another --exp-name so earlier outputs are not overwritten",
                out.display()
            );
        }
    }
    let mut model = Model::build(&config, &Device::Cpu)?;
    model.load_weights(&trained.weights)?;
    for (name, value) in &settings {
        model.set_hyper(name, *value)?;
    }
    if let Some(sweep) = &sweep {
        model.set_hyper(&sweep.name, sweep.values[0])?;
    }
    // The split's data is listed before the output folder exists: a wrong folder leaves
    // nothing behind.
    engine::check_data_folders(&config, &[split])?;
    engine::open_split(&config, split)?;
    // Created exclusively: a folder that appeared meanwhile is refused too.
    let out = run_folder::create_new(&args.log_dir, args.exp_name.as_deref())?;
    let formats = Formats {
        nifti: !args.no_nifti,
        png: args.save_png && !args.no_png,
        atlalign: loader_name(&config).as_deref() == Some("atlalign"),
    };
    let Some(sweep) = sweep else {
        predict_into(&model, &config, split, args, formats, &out)?;
        return Ok(());
    };
    let mut rows = Vec::new();
    for value in &sweep.values {
        model.set_hyper(&sweep.name, *value)?;
        say!("{} = {value}", sweep.name)?;
        let folder = out.join(hyper::value_folder(&sweep.name, *value));
        std::fs::create_dir(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        let evaluation = predict_into(&model, &config, split, args, formats, &folder)?;
        rows.extend(hyper::rows(*value, &evaluation));
    }
    let best = hyper::write_tables(&out, &sweep.name, &rows)?;
    let plots = hyper::write_plots(&out, &sweep.name, &rows)?;
    for row in &best {
        let label = row
            .label
            .map_or_else(|| "all labels".to_owned(), |l| format!("label {l}"));
        say!(
            "best {} for {label}: {} (mean Dice {:.4})",
            sweep.name,
            row.value,
            row.dice.unwrap_or(f64::NAN)
        )?;
    }
    say!(
        "metrics per value: {}; best value per label: {}",
        out.join("sweep.csv").display(),
        out.join("best.csv").display()
    )?;
    for plot in plots {
        say!("plot: {}", plot.display())?;
    }
    Ok(())
}

/// Evaluates `model` on `split` and writes each pair's outputs, `metrics.csv`, the
/// statistics CSVs and `pairs.csv` into the new folder `out/<split>/`.
fn predict_into(
    model: &Model,
    config: &voxreg::config::Config,
    split: Split,
    args: &PredictArgs,
    formats: Formats,
    out: &std::path::Path,
) -> anyhow::Result<Evaluation> {
    let out = out.join(split.as_str());
    std::fs::create_dir(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = PairWriter::new(&out, formats);
    let mut export = formats.atlalign.then(AtlalignExport::default);
    let evaluation = engine::evaluate_each(model, config, split, args.batch_size, |_, tensors| {
        let folder = writer.write(tensors)?;
        tracing::debug!("wrote {}", folder.display());
        if let Some(export) = &mut export {
            export.add(tensors)?;
        }
        anyhow::Ok(())
    })?;
    if let Some(export) = &export {
        let path = out.join("predictions.h5");
        if export.write(&path)? {
            say!("predicted fields in atlalign's layout: {}", path.display())?;
        }
    }
    let metrics_path = out.join("metrics.csv");
    report::write_metrics_csv(&metrics_path, &evaluation)?;
    report::write_stats_csvs(&out, &evaluation)?;
    let index_path = out.join("pairs.csv");
    writer.write_index(&index_path)?;
    report::print_improvement(split, &evaluation)?;
    say!("metrics of every sample: {}", metrics_path.display())?;
    if formats.nifti || formats.png {
        say!(
            "images, labels and fields of every pair: {}/pair_* (their image ids: {})",
            out.display(),
            index_path.display()
        )?;
    }
    Ok(evaluation)
}

/// The name of the config's data loader (`dataset.type`), as its config serialises it.
fn loader_name(config: &voxreg::config::Config) -> Option<String> {
    let value = serde_json::to_value(config.dataset.loader.as_ref()).ok()?;
    value.get("name")?.as_str().map(str::to_owned)
}
