//! `--gpu` and `--num-workers`: what runs where, said once at start-up.

use anyhow::bail;
use voxreg::config::Config;

use super::DeviceArgs;

/// The environment variable rayon's global pool and candle's CPU kernels read for their
/// thread count.
const THREADS_VARIABLE: &str = "RAYON_NUM_THREADS";

/// What the device flags decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceChoice {
    /// Worker threads given with `--num-workers`, if any.
    pub workers: Option<usize>,
    /// The GPU ids asked for (non-empty `--gpu`), which run on the CPU.
    pub ignored_gpu: Option<String>,
}

impl DeviceChoice {
    /// Reads the flags: `--num-workers 0` is an error; a non-empty `--gpu` is noted (voxreg
    /// has no GPU path yet: everything runs on the CPU).
    pub fn of(args: &DeviceArgs) -> anyhow::Result<Self> {
        if args.num_workers == Some(0) {
            bail!("--num-workers must be at least 1");
        }
        Ok(Self {
            workers: args.num_workers,
            ignored_gpu: args.gpu.clone().filter(|ids| !ids.trim().is_empty()),
        })
    }

    /// Applies the choice before any worker thread starts: `--num-workers N` sets the
    /// compute threads (rayon's pool and candle's kernels, through `RAYON_NUM_THREADS`) and
    /// the data loader's threads (`train.preprocess.num_parallel_calls`) to `N`; a GPU asked
    /// for is a warning saying the CPU runs.
    pub fn apply(&self, config: &mut Config) {
        if let Some(workers) = self.workers {
            // Only the main thread runs yet, so changing the environment races nothing.
            std::env::set_var(THREADS_VARIABLE, workers.to_string());
            config.train.preprocess.num_parallel_calls = workers as i64;
        }
        if let Some(ids) = &self.ignored_gpu {
            tracing::warn!(
                "--gpu {ids}: voxreg has no GPU path yet; running on the CPU ({})",
                self.threads_text()
            );
        }
    }

    /// `8 threads` (the compute threads in use, once [`DeviceChoice::apply`] ran).
    pub fn threads_text(&self) -> String {
        let threads = self.workers.unwrap_or_else(compute_threads);
        if threads == 1 {
            "1 thread".to_owned()
        } else {
            format!("{threads} threads")
        }
    }
}

/// The compute threads without `--num-workers`: `RAYON_NUM_THREADS` if set, else one per
/// core.
fn compute_threads() -> usize {
    std::env::var(THREADS_VARIABLE)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(gpu: Option<&str>, workers: Option<usize>) -> DeviceArgs {
        DeviceArgs {
            gpu: gpu.map(str::to_owned),
            num_workers: workers,
            gpu_allow_growth: None,
        }
    }

    #[test]
    fn an_empty_gpu_list_is_the_cpu_and_zero_workers_an_error() {
        let choice = DeviceChoice::of(&args(Some(""), None)).unwrap();
        assert_eq!(choice.ignored_gpu, None);
        let choice = DeviceChoice::of(&args(Some("0"), Some(3))).unwrap();
        assert_eq!(choice.ignored_gpu.as_deref(), Some("0"));
        assert_eq!(choice.threads_text(), "3 threads");
        let error = DeviceChoice::of(&args(None, Some(0))).unwrap_err();
        assert_eq!(error.to_string(), "--num-workers must be at least 1");
    }
}
