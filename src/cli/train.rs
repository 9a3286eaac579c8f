//! `voxreg train`: train the configuration's model, save it, and report how registration
//! changed the held-out pairs.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use voxreg::component::Split;
use voxreg::engine::{self, EpochLog, Picture, SplitLog, TrainObserver, TrainOptions, TrainStart};
use voxreg::tensorboard;

use super::device::DeviceChoice;
use super::stdout::say;
use super::{host, loss_curve, run_folder, TrainArgs};

/// Trains (resuming from `--ckpt-path`, a `save/ckpt-<epoch>` folder, if given), writes
/// `<log-dir>/<exp-name>/{config.yaml, train_metrics.csv, valid_metrics.csv, loss_curve.png,
/// save/ckpt-<epoch>/, save/weights.safetensors}`, then evaluates on the test split (or the
/// validation split) and prints each metric before and after registration. Ctrl-C stops after
/// the current step with a checkpoint.
pub fn train(plugins: &[PathBuf], args: &TrainArgs) -> anyhow::Result<()> {
    let device = DeviceChoice::of(&args.device)?;
    let (_registry, mut config) = host::load_config(plugins, &args.config_path)?;
    device.apply(&mut config);
    if args.max_epochs == Some(0) {
        bail!("--max-epochs must be at least 1");
    }
    // An explicit name is checked now so a taken folder fails before the data is read; the
    // engine claims the folder itself (exclusively) before writing into it.
    if let Some(name) = &args.exp_name {
        run_folder::check_name(name)?;
        let run_dir = args.log_dir.join(name);
        let holds_files = std::fs::read_dir(&run_dir).is_ok_and(|mut e| e.next().is_some());
        if holds_files || (run_dir.exists() && !run_dir.is_dir()) {
            bail!(
                "{} already holds a run; choose another --exp-name so it is not overwritten",
                run_dir.display()
            );
        }
    }
    // The split evaluated after training is opened now, so a wrong folder fails before
    // training rather than after it.
    let evaluation_split = if config.dataset.test.is_some() {
        Some(Split::Test)
    } else if config.dataset.valid.is_some() {
        Some(Split::Valid)
    } else {
        None
    };
    engine::check_data_folders(&config, &[Split::Train, Split::Valid, Split::Test])?;
    if let Some(split) = evaluation_split {
        engine::open_split(&config, split)?;
    }
    let run_dir = match &args.exp_name {
        Some(name) => args.log_dir.join(name),
        None => run_folder::create_default(&args.log_dir)?,
    };
    let options = TrainOptions {
        seed: 0,
        max_epochs: args.max_epochs,
        run_dir: Some(run_dir.clone()),
        resume: args.ckpt_path.clone(),
        stop: Some(stop_on_ctrl_c()),
    };
    let mut observer = Progress::new(&run_dir);
    let (model, summary) = match engine::train(&config, &options, &mut observer) {
        Ok(trained) => {
            observer.board.open(&run_dir);
            trained
        }
        Err(error) => {
            if args.exp_name.is_none() {
                run_folder::remove_if_empty(&run_dir);
            }
            return Err(error.into());
        }
    };
    say!(
        "trained {}; run folder {}",
        counted(summary.epochs.len(), summary.steps),
        run_dir.display()
    )?;
    let Some(split) = evaluation_split else {
        return Ok(());
    };
    let evaluation = engine::evaluate(&model, &config, split)?;
    super::report::print_improvement(split, &evaluation)?;
    Ok(())
}

/// A flag that the first Ctrl-C sets (training then stops after its current step and saves a
/// checkpoint); a second Ctrl-C exits at once.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "\nstopping after this step and saving a checkpoint (Ctrl-C again quits at once)"
        );
    });
    if let Err(error) = installed {
        tracing::warn!("Ctrl-C will stop training without a checkpoint: {error}");
    }
    stop
}

/// Training progress for people: a bar per epoch (steps, loss, rate, ETA) when stderr is a
/// terminal, plain log lines otherwise; the loss curve redrawn and the TensorBoard scalars
/// written after every epoch.
struct Progress<'a> {
    run_dir: &'a Path,
    bar: Option<ProgressBar>,
    terminal: bool,
    history: Vec<EpochLog>,
    board: Board,
    /// Steps per epoch and the current epoch, for the global step of `batch_loss`.
    steps_per_epoch: usize,
    epoch: usize,
    /// The pictures of the last validation, written with its epoch's scalars.
    pictures: Option<(usize, Vec<Picture>)>,
}

impl<'a> Progress<'a> {
    fn new(run_dir: &'a Path) -> Self {
        Self {
            run_dir,
            bar: None,
            terminal: std::io::stderr().is_terminal(),
            history: Vec::new(),
            board: Board::default(),
            steps_per_epoch: 0,
            epoch: 0,
            pictures: None,
        }
    }
}

/// Scalars held until the run has results: the folder, the step, the values.
type HeldScalars = (&'static str, usize, Vec<(String, f64)>);

/// The run's TensorBoard event files, as DeepReg's Keras callback lays them out:
/// `<run>/train/` (`batch_loss` per step; `epoch_loss`, `epoch_<term>`, `epoch_<metric>` per
/// epoch) and `<run>/validation/` (the epoch scalars of the validation pass). Until the run
/// has results (the first epoch's end, or training returning), scalars are held in memory,
/// so a run that fails in its first epoch leaves no folder behind; then the folders are
/// created and written at every event. A failure is a warning and stops TensorBoard
/// logging, not training.
#[derive(Default)]
struct Board {
    train: Option<tensorboard::EventWriter>,
    validation: Option<tensorboard::EventWriter>,
    failed: bool,
    open: bool,
    pending: Vec<HeldScalars>,
}

/// The epoch scalars of a split: `epoch_loss`, then `epoch_<name>` for every term and metric.
fn epoch_scalars(log: &SplitLog) -> Vec<(String, f64)> {
    std::iter::once(("epoch_loss".to_owned(), log.loss))
        .chain(
            log.terms
                .iter()
                .chain(&log.metrics)
                .map(|(name, value)| (format!("epoch_{name}"), *value)),
        )
        .collect()
}

impl Board {
    /// The run has results: writes what was held and every later event straight away.
    fn open(&mut self, run_dir: &Path) {
        if self.open {
            return;
        }
        self.open = true;
        for (folder, step, scalars) in std::mem::take(&mut self.pending) {
            self.write(run_dir, folder, step, &scalars);
        }
    }

    /// Writes `scalars` at `step` into `<run>/<folder>/` (`train` or `validation`), or holds
    /// them until [`Board::open`].
    fn write(
        &mut self,
        run_dir: &Path,
        folder: &'static str,
        step: usize,
        scalars: &[(String, f64)],
    ) {
        if self.failed {
            return;
        }
        if !self.open {
            self.pending.push((folder, step, scalars.to_vec()));
            return;
        }
        self.with_writer(run_dir, folder, |writer| {
            writer.scalars(step, scalars.iter().map(|(t, v)| (t.as_str(), *v)))
        });
    }

    /// Writes `pictures` at `step` into `<run>/validation/` as image summaries; only once the
    /// board is open (they come with the epoch's end, which opens it).
    fn images(&mut self, run_dir: &Path, step: usize, pictures: &[Picture]) {
        if self.failed || !self.open || pictures.is_empty() {
            return;
        }
        self.with_writer(run_dir, "validation", |writer| {
            writer.images(
                step,
                pictures
                    .iter()
                    .map(|p| (p.tag.as_str(), p.height, p.width, p.values.as_slice())),
            )
        });
    }

    /// Runs `write` on the event file of `<run>/<folder>/` (created on first use) and
    /// flushes it; a failure is a warning and stops TensorBoard logging.
    fn with_writer(
        &mut self,
        run_dir: &Path,
        folder: &'static str,
        write: impl FnOnce(&mut tensorboard::EventWriter) -> Result<(), tensorboard::EventFileError>,
    ) {
        let slot = if folder == "train" {
            &mut self.train
        } else {
            &mut self.validation
        };
        let written = (|| -> Result<(), tensorboard::EventFileError> {
            if slot.is_none() {
                *slot = Some(tensorboard::EventWriter::create(&run_dir.join(folder))?);
            }
            let writer = slot.as_mut().expect("created above");
            write(writer)?;
            writer.flush()
        })();
        if let Err(error) = written {
            tracing::warn!("TensorBoard logging stops: {error:#}");
            self.failed = true;
        }
    }
}

/// One line on what training runs: `training epochs 1–20 on 6 samples (valid 2), 12,345
/// parameters, 2 loader and 2 compute threads, CPU`.
fn start_line(start: &TrainStart) -> String {
    let epochs = if start.first_epoch == start.epochs {
        format!("epoch {}", start.epochs)
    } else {
        format!("epochs {}–{}", start.first_epoch, start.epochs)
    };
    let valid = start
        .valid_samples
        .map_or_else(String::new, |n| format!(" (valid {n})"));
    format!(
        "training {epochs} on {} samples{valid}, {} parameters, {} loader and {} compute threads, {}",
        start.train_samples,
        thousands(start.parameters),
        start.loader_threads,
        start.compute_threads,
        start.device
    )
}

/// `12345` as `12,345`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The widest line of an epoch summary's metrics, so a summary reads in an 80-column
/// terminal after the log prefix.
const SUMMARY_WIDTH: usize = 72;

/// An epoch's summary: `loss 0.1234 (image/lncc -0.5000, …)` with the loss terms, then the
/// metrics on indented lines of at most [`SUMMARY_WIDTH`] characters.
fn describe(log: &SplitLog) -> String {
    let terms: Vec<String> = log
        .terms
        .iter()
        .map(|(n, v)| format!("{n} {v:.4}"))
        .collect();
    let mut text = format!("loss {:.4} ({})", log.loss, terms.join(", "));
    let mut line = String::new();
    for (name, value) in &log.metrics {
        let item = format!("{name} {value:.4}");
        if !line.is_empty() && line.len() + 2 + item.len() > SUMMARY_WIDTH {
            text.push_str(&format!("\n    {line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str(&item);
    }
    if !line.is_empty() {
        text.push_str(&format!("\n    {line}"));
    }
    text
}

impl TrainObserver for Progress<'_> {
    fn epoch_started(&mut self, epoch: usize, epochs: usize, steps: usize, done: usize) {
        self.epoch = epoch;
        self.steps_per_epoch = steps;
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::new(steps as u64).with_position(done as u64);
        let style = ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    fn step_finished(&mut self, step: usize, loss: f64) {
        let global = self.epoch.saturating_sub(1) * self.steps_per_epoch + step;
        self.board.write(
            self.run_dir,
            "train",
            global,
            &[("batch_loss".to_owned(), loss)],
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(format!("loss {loss:.4}"));
            }
            None => tracing::debug!("step {step}: loss {loss:.4}"),
        }
    }

    fn validation_started(&mut self) {
        if let Some(bar) = &self.bar {
            bar.set_message("validating");
        }
    }

    fn training_started(&mut self, start: &TrainStart) {
        tracing::info!("{}", start_line(start));
    }

    fn validation_pictures(&mut self, epoch: usize, pictures: &[Picture]) {
        self.pictures = Some((epoch, pictures.to_vec()));
    }

    fn epoch_finished(&mut self, log: &EpochLog) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        tracing::info!("epoch {} train: {}", log.epoch, describe(&log.train));
        self.board.open(self.run_dir);
        if let Some(valid) = &log.valid {
            tracing::info!("epoch {} valid: {}", log.epoch, describe(valid));
        }
        self.board
            .write(self.run_dir, "train", log.epoch, &epoch_scalars(&log.train));
        if let Some(valid) = &log.valid {
            self.board
                .write(self.run_dir, "validation", log.epoch, &epoch_scalars(valid));
        }
        if let Some((epoch, pictures)) = self.pictures.take() {
            self.board.images(self.run_dir, epoch, &pictures);
        }
        self.history.push(log.clone());
        if let Err(error) = loss_curve::write(self.run_dir, &self.history) {
            tracing::warn!(
                "{}: {error:#}",
                self.run_dir.join("loss_curve.png").display()
            );
        }
    }
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

/// `1 epoch (6 steps)`, `20 epochs (120 steps)`: the training summary's counts in words.
fn counted(epochs: usize, steps: usize) -> String {
    let plural = |n: usize, word: &str| {
        if n == 1 {
            format!("{n} {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    format!("{} ({})", plural(epochs, "epoch"), plural(steps, "step"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_start_line_says_what_training_runs() {
        let start = voxreg::engine::TrainStart {
            train_samples: 6,
            valid_samples: Some(2),
            parameters: 1_234_567,
            loader_threads: 2,
            compute_threads: 4,
            device: "CPU",
            first_epoch: 3,
            epochs: 20,
        };
        assert_eq!(
            super::start_line(&start),
            "training epochs 3–20 on 6 samples (valid 2), 1,234,567 parameters, 2 loader and 4 compute threads, CPU"
        );
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
    }

    #[test]
    fn epoch_summaries_wrap_their_metrics() {
        let log = voxreg::engine::SplitLog {
            loss: -1.275,
            terms: vec![
                ("image/lncc".to_owned(), -0.8781),
                ("label/dice".to_owned(), -0.3969),
            ],
            metrics: [
                "image_ssd",
                "label_binary_dice",
                "label_tre",
                "label_tre_mm",
                "out_of_view_fraction",
                "ddf_folding_fraction",
            ]
            .iter()
            .map(|n| (n.to_string(), 0.5))
            .collect(),
        };
        let text = super::describe(&log);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "loss -1.2750 (image/lncc -0.8781, label/dice -0.3969)"
        );
        assert!(lines.len() >= 3, "{text}");
        assert!(
            lines[1..]
                .iter()
                .all(|l| l.starts_with("    ") && l.len() <= 4 + super::SUMMARY_WIDTH),
            "{text}"
        );
        assert!(text.contains("ddf_folding_fraction 0.5000"), "{text}");
    }

    use super::{counted, timestamp};

    #[test]
    fn counts_are_in_words() {
        assert_eq!(counted(1, 1), "1 epoch (1 step)");
        assert_eq!(counted(20, 120), "20 epochs (120 steps)");
    }

    #[test]
    fn timestamps_look_like_deepregs() {
        let stamp = timestamp();
        assert_eq!(stamp.len(), 15);
        assert_eq!(&stamp[8..9], "-");
        assert!(stamp.starts_with("20"));
    }
}
