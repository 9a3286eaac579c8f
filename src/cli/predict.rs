//! `voxreg predict`: evaluate a trained model on a split and write its metrics.

use std::path::PathBuf;

use anyhow::{bail, Context};
use voxreg::candle::Device;
use voxreg::component::Split;
use voxreg::engine::{self, Model};

use super::{host, report, PredictArgs};

/// Loads the run's configuration (or `--config-path`), builds the model with the
/// checkpoint's weights, evaluates it on `--split`, prints the before → after means and
/// writes `<log-dir>/<exp-name>/metrics.csv`.
pub fn predict(plugins: &[PathBuf], args: &PredictArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    host::require_file(&args.ckpt_path, "checkpoint")?;
    // A checkpoint folder (<run>/save/ckpt-N) or a weights file (<run>/save/weights.safetensors):
    // either way the run folder is two levels up.
    let config_paths = if args.config_path.is_empty() {
        // DeepReg's rule: <run>/save/<checkpoint> → <run>/config.yaml.
        let run = args.ckpt_path.parent().and_then(|save| save.parent());
        let config = run.map(|r| r.join("config.yaml")).filter(|c| c.is_file());
        match config {
            Some(config) => vec![config],
            None => bail!(
                "no config.yaml two folders above {} (a run folder's save/ checkpoint): give --config-path",
                args.ckpt_path.display()
            ),
        }
    } else {
        args.config_path.clone()
    };
    let (_registry, config) = host::load_config(plugins, &config_paths)?;
    let split = match args.split.as_str() {
        "train" => Split::Train,
        "valid" => Split::Valid,
        _ => Split::Test,
    };
    let out = args.log_dir.join(
        args.exp_name
            .clone()
            .unwrap_or_else(|| format!("predict-{}", args.split)),
    );
    let metrics_path = out.join("metrics.csv");
    if metrics_path.exists() {
        bail!(
            "{} exists; choose another --exp-name so it is not overwritten",
            metrics_path.display()
        );
    }
    let mut model = Model::build(&config, &Device::Cpu)?;
    model.load_weights(&engine::checkpoint::weights_file(&args.ckpt_path))?;
    let evaluation = engine::evaluate(&model, &config, split)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    report::write_metrics_csv(&metrics_path, &evaluation)?;
    report::write_stats_csvs(&out, &evaluation)?;
    report::print_improvement(split, &evaluation);
    println!("metrics of every sample: {}", metrics_path.display());
    if args.save_nifti || args.save_png {
        println!("(NIfTI and PNG outputs per pair are not built in this version of voxreg)");
    }
    Ok(())
}
