//! `voxreg train`: train the configuration's model, save it, and report how registration
//! changed the held-out pairs.

use std::path::PathBuf;

use anyhow::bail;
use voxreg::component::Split;
use voxreg::engine::{self, TrainOptions};

use super::{host, TrainArgs};

/// Trains (resuming from `--ckpt-path`, a `save/ckpt-<epoch>` folder, if given), writes
/// `<log-dir>/<exp-name>/{config.yaml, save/ckpt-<epoch>/, save/weights.safetensors}`, then
/// evaluates on the test split (or the validation split) and prints each metric before and
/// after registration.
pub fn train(plugins: &[PathBuf], args: &TrainArgs) -> anyhow::Result<()> {
    let (_registry, config) = host::load_config(plugins, &args.config_path)?;
    if args.max_epochs == Some(0) {
        bail!("--max-epochs must be at least 1");
    }
    let name = args.exp_name.clone().unwrap_or_else(timestamp);
    let run_dir = args.log_dir.join(&name);
    if run_dir.join("config.yaml").exists() {
        bail!(
            "{} already holds a run; choose another --exp-name so it is not overwritten",
            run_dir.display()
        );
    }
    let options = TrainOptions {
        seed: 0,
        max_epochs: args.max_epochs,
        run_dir: Some(run_dir.clone()),
        resume: args.ckpt_path.clone(),
    };
    let (model, summary) = engine::train(&config, &options, |log| {
        let terms: Vec<String> = log
            .terms
            .iter()
            .map(|(n, v)| format!("{n} {v:.4}"))
            .collect();
        tracing::info!(
            "epoch {}: loss {:.4} ({})",
            log.epoch,
            log.loss,
            terms.join(", ")
        );
    })?;
    println!(
        "trained {} epochs ({} steps); run folder {}",
        summary.epochs.len(),
        summary.steps,
        run_dir.display()
    );
    let split = if config.dataset.test.is_some() {
        Split::Test
    } else if config.dataset.valid.is_some() {
        Split::Valid
    } else {
        return Ok(());
    };
    let evaluation = engine::evaluate(&model, &config, split)?;
    super::report::print_improvement(split, &evaluation);
    Ok(())
}

/// The current UTC time as DeepReg names runs: `YYYYMMDD-HHMMSS`.
pub(super) fn timestamp() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn timestamps_look_like_deepregs() {
        let stamp = timestamp();
        assert_eq!(stamp.len(), 15);
        assert_eq!(&stamp[8..9], "-");
        assert!(stamp.starts_with("20"));
    }
}
