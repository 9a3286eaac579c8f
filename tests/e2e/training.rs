//! Training runs: validation metrics and the loss curve in the run folder, Ctrl-C, resuming
//! from an interrupted epoch, and NaN reports.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use voxreg::config::ConfigSources;
use voxreg::engine::{self, EngineError, TrainObserver, TrainOptions};
use voxreg::registry::Registry;

use crate::cli::load_weights;
use crate::util::{assert_clean_failure, repo_root, stderr, tiny_training_config, voxreg};

/// `voxreg train -c quickstart.yaml <tiny overlay> <extra…> --exp-name <name> --log-dir <logs>`.
fn train_command(dir: &Path, extra: &[&Path], name: &str) -> std::process::Command {
    let mut command = voxreg();
    command
        .arg("train")
        .arg("-c")
        .arg(repo_root().join("configs/quickstart.yaml"))
        .arg(tiny_training_config(dir))
        .args(extra)
        .arg("--exp-name")
        .arg(name)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .env("RAYON_NUM_THREADS", "2");
    command
}

fn csv_header(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect()
}

#[test]
fn training_writes_train_and_validation_metrics_and_a_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let output = train_command(dir.path(), &[], "run")
        .args(["--max-epochs", "2"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let run = dir.path().join("logs/run");
    let expected = [
        "epoch",
        "loss",
        "image/lncc",
        "label/dice",
        "regularization/bending",
        "image_ssd",
        "label_binary_dice",
        "label_tre",
        "label_tre_mm",
        "out_of_view_fraction",
        "constant_warped_fraction",
        "ddf_folding_fraction",
    ];
    for file in ["train_metrics.csv", "valid_metrics.csv"] {
        assert_eq!(csv_header(&run.join(file)), expected, "{file}");
        let text = fs::read_to_string(run.join(file)).unwrap();
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), 2, "{file}: one row per epoch");
        for row in rows {
            let values: Vec<f64> = row.split(',').map(|v| v.parse().unwrap()).collect();
            assert_eq!(values.len(), expected.len());
            assert!(values.iter().all(|v| v.is_finite()), "{file}: {row}");
            let dice = values[6];
            assert!((0.0..=1.0).contains(&dice), "{file}: Dice {dice}");
        }
    }
    let png = fs::read(run.join("loss_curve.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(run.join("save/ckpt-2/config.yaml").is_file());
    assert_eq!(
        fs::read_to_string(run.join("save/ckpt-2/config.yaml")).unwrap(),
        fs::read_to_string(run.join("config.yaml")).unwrap(),
        "the checkpoint carries the resolved configuration"
    );
    check_tensorboard_events(&run, &expected);
    check_validation_pictures(&run.join("validation"));
}

/// Every epoch's validation event file holds the moving, fixed and warped image of the first
/// validation sample as PNG image summaries (16 × 16 middle slices, not flat).
fn check_validation_pictures(dir: &Path) {
    let file = fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    let events = voxreg::tensorboard::read_events(&file).unwrap();
    let images: Vec<(String, i64, voxreg::tensorboard::SummaryImage)> = events
        .iter()
        .filter_map(|e| e.summary.as_ref().map(|s| (e.step, s)))
        .flat_map(|(step, s)| {
            s.value
                .iter()
                .filter_map(move |v| Some((v.tag.clone(), step, v.image.clone()?)))
        })
        .collect();
    for tag in ["moving_image", "fixed_image", "pred_fixed_image"] {
        let (_, step, image) = images
            .iter()
            .find(|(t, _, _)| t == tag)
            .unwrap_or_else(|| panic!("no `{tag}` image in {}", file.display()));
        assert_eq!(*step, 1, "{tag} at the first epoch");
        assert_eq!((image.height, image.width, image.colorspace), (16, 16, 1));
        let decoder = png::Decoder::new(std::io::Cursor::new(image.encoded_image_string.clone()));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut pixels).unwrap();
        assert!(pixels.iter().any(|&p| p > 0), "{tag} is not black");
        assert!(pixels.iter().any(|&p| p < 255), "{tag} is not white");
    }
}

/// The one event file in `dir`, read back (checksums checked) as `(tag, step, value)`.
fn event_scalars(dir: &Path) -> Vec<(String, i64, f32)> {
    let files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let events = voxreg::tensorboard::read_events(&files[0]).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    voxreg::tensorboard::scalars(&events)
}

/// DeepReg's (Keras') TensorBoard folders `train/` and `validation/`: `batch_loss` at every
/// step, and per epoch `epoch_loss` and `epoch_<column>` for every term and metric, equal to
/// the metrics CSVs.
fn check_tensorboard_events(run: &Path, columns: &[&str]) {
    for (folder, csv) in [
        ("train", "train_metrics.csv"),
        ("validation", "valid_metrics.csv"),
    ] {
        let scalars = event_scalars(&run.join(folder));
        let text = fs::read_to_string(run.join(csv)).unwrap();
        for (row, line) in text.lines().skip(1).enumerate() {
            let epoch = row as i64 + 1;
            for (column, value) in columns.iter().zip(line.split(',')).skip(1) {
                let tag = format!("epoch_{column}");
                let logged = scalars
                    .iter()
                    .find(|(t, s, _)| *t == tag && *s == epoch)
                    .unwrap_or_else(|| panic!("{folder}: no {tag} at epoch {epoch}"));
                let value: f64 = value.parse().unwrap();
                assert_eq!(logged.2, value as f32, "{folder}: {tag} at epoch {epoch}");
            }
        }
        let steps: Vec<i64> = scalars
            .iter()
            .filter(|(t, _, _)| t == "batch_loss")
            .map(|(_, s, _)| *s)
            .collect();
        if folder == "train" {
            assert!(steps.len() >= 2, "a batch_loss per step: {steps:?}");
            assert!(steps.windows(2).all(|w| w[1] == w[0] + 1), "{steps:?}");
        } else {
            assert!(steps.is_empty(), "validation has no steps: {steps:?}");
        }
    }
}

/// Polls until `path` exists (the first epoch ended) or a minute passes.
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_stops_after_a_step_saves_a_checkpoint_and_resuming_continues() {
    let dir = tempfile::tempdir().unwrap();
    let child = train_command(dir.path(), &[], "long")
        .args(["--max-epochs", "10000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = dir.path().join("logs/long");
    wait_for(&run.join("train_metrics.csv"));
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted after step"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let checkpoints: Vec<PathBuf> = fs::read_dir(run.join("save"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().contains("-step-"))
        .collect();
    assert_eq!(checkpoints.len(), 1, "{err}");
    let checkpoint = &checkpoints[0];
    assert!(err.contains(&checkpoint.display().to_string()), "{err}");
    for file in [
        "weights.safetensors",
        "optimizer.safetensors",
        "progress.txt",
        "config.yaml",
    ] {
        assert!(checkpoint.join(file).is_file(), "{file}");
    }
    let progress = fs::read_to_string(checkpoint.join("progress.txt")).unwrap();
    let epoch: usize = progress
        .lines()
        .find_map(|l| l.strip_prefix("epoch="))
        .unwrap()
        .parse()
        .unwrap();
    let output = train_command(dir.path(), &[], "resumed")
        .args(["--max-epochs", &(epoch + 2).to_string()])
        .arg("--ckpt-path")
        .arg(checkpoint)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = fs::read_to_string(dir.path().join("logs/resumed/train_metrics.csv")).unwrap();
    let epochs: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        epochs,
        [(epoch + 1).to_string(), (epoch + 2).to_string()],
        "the interrupted epoch is finished, then the next one"
    );
}

#[test]
fn a_loss_that_overflows_is_reported_where_it_first_appears() {
    let dir = tempfile::tempdir().unwrap();
    let exploding = dir.path().join("exploding.yaml");
    fs::write(
        &exploding,
        "train:\n  optimizer: {name: sgd, learning_rate: 1.0e+30}\n",
    )
    .unwrap();
    let output = train_command(dir.path(), &[&exploding], "nan")
        .output()
        .unwrap();
    assert_clean_failure(
        &output,
        &["became", "at epoch 1, step 2", "training stopped"],
    );
    let err = stderr(&output);
    assert!(
        err.contains("loss term `") || err.contains("the network's output `"),
        "{err}"
    );
    assert!(
        !dir.path().join("logs/nan").exists(),
        "a run stopped before any result leaves no folder"
    );
}

/// Sets the stop flag once `step` of `epoch` has finished, as Ctrl-C would.
struct StopAt {
    epoch: usize,
    step: usize,
    current: usize,
    flag: Arc<AtomicBool>,
}

impl TrainObserver for StopAt {
    fn epoch_started(&mut self, epoch: usize, _epochs: usize, _steps: usize, _done: usize) {
        self.current = epoch;
    }

    fn step_finished(&mut self, step: usize, _loss: f64) {
        if self.current == self.epoch && step == self.step {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

/// Stopping in the middle of an epoch and resuming from that checkpoint gives the weights and
/// the epoch means of an uninterrupted run.
#[test]
fn resuming_from_the_middle_of_an_epoch_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        repo_root().join("configs/quickstart.yaml"),
        tiny_training_config(dir.path()),
    ];
    let registry = Registry::linked().unwrap();
    let config = ConfigSources::read(&files)
        .unwrap()
        .resolve(&registry)
        .unwrap();
    let options = |name: &str| TrainOptions {
        seed: 7,
        max_epochs: Some(2),
        run_dir: Some(dir.path().join(name)),
        resume: None,
        stop: None,
    };
    let (_, straight) = engine::train(&config, &options("straight"), &mut ()).unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let mut stop = StopAt {
        epoch: 1,
        step: 2,
        current: 0,
        flag: Arc::clone(&flag),
    };
    let interrupted = engine::train(
        &config,
        &TrainOptions {
            stop: Some(flag),
            ..options("interrupted")
        },
        &mut stop,
    );
    let checkpoint = match interrupted {
        Err(EngineError::Interrupted {
            epoch: 1,
            step: 2,
            checkpoint: Some(path),
        }) => path,
        Err(other) => panic!("expected an interruption after step 2 of epoch 1, got {other}"),
        Ok(_) => panic!("training was not interrupted"),
    };
    assert!(checkpoint.ends_with("save/ckpt-1-step-2"));
    let (_, resumed) = engine::train(
        &config,
        &TrainOptions {
            resume: Some(checkpoint),
            ..options("resumed")
        },
        &mut (),
    )
    .unwrap();
    assert_eq!(resumed.epochs, straight.epochs, "same epoch means");
    assert_eq!(resumed.steps, straight.steps);
    let weights =
        |name: &str| load_weights(&dir.path().join(name).join("save/weights.safetensors"));
    assert_eq!(weights("resumed"), weights("straight"));
}

#[test]
fn a_wrong_test_folder_fails_before_training_and_a_failed_run_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let wrong_test = dir.path().join("wrong-test.yaml");
    fs::write(
        &wrong_test,
        format!(
            "dataset:\n  test: {{dir: {}, format: nifti, labeled: true}}\n",
            dir.path().join("nowhere").display()
        ),
    )
    .unwrap();
    let output = train_command(dir.path(), &[&wrong_test], "wrong-test")
        .output()
        .unwrap();
    assert_clean_failure(&output, &["nowhere"]);
    assert!(!dir.path().join("logs/wrong-test").exists());
    // Bending energy needs 5 voxels per axis: the first step fails, after the run folder
    // was created; the folder is removed so the name can be used again.
    let small = dir.path().join("small.yaml");
    fs::write(
        &small,
        "dataset:\n  moving_image_shape: [4, 4, 4]\n  fixed_image_shape: [4, 4, 4]\ntrain:\n  backbone: {name: local, num_channel_initial: 2, extract_levels: [0]}\n",
    )
    .unwrap();
    let output = train_command(dir.path(), &[&small], "small")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(!dir.path().join("logs/small").exists());
    let output = train_command(dir.path(), &[], "small").output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

/// The shipped VoxelMorph config (VoxelMorph U-Net, diffeomorphic `dvf`) trains and
/// evaluates on 16³ crops of the demo data.
#[test]
fn the_voxelmorph_config_trains() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.yaml");
    fs::write(
        &small,
        "dataset:\n  moving_image_shape: [16, 16, 16]\n  fixed_image_shape: [16, 16, 16]\ntrain:\n  backbone: {name: vxm_unet, channels: [4, 8, 8, 8]}\n",
    )
    .unwrap();
    let output = voxreg()
        .arg("train")
        .arg("-c")
        .arg(repo_root().join("configs/voxelmorph.yaml"))
        .arg(&small)
        .args(["--max-epochs", "1", "--exp-name", "vxm", "--log-dir"])
        .arg(dir.path().join("logs"))
        .env("RAYON_NUM_THREADS", "2")
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let header = csv_header(&dir.path().join("logs/vxm/train_metrics.csv"));
    assert_eq!(
        header[..4],
        ["epoch", "loss", "image/ssd", "regularization/gradient"]
    );
    assert!(header.contains(&"ddf_folding_fraction".to_owned()));
}

#[test]
fn device_flags_say_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let output = train_command(dir.path(), &[], "on_gpu_0")
        .args(["--max-epochs", "1", "--gpu", "0", "--num-workers", "1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output)
            .contains("--gpu 0: voxreg has no GPU path yet; running on the CPU (1 thread)"),
        "{}",
        stderr(&output)
    );
    let saved = fs::read_to_string(dir.path().join("logs/on_gpu_0/config.yaml")).unwrap();
    assert!(saved.contains("num_parallel_calls: 1"), "{saved}");
    let output = train_command(dir.path(), &[], "no_workers")
        .args(["--max-epochs", "1", "--num-workers", "0"])
        .output()
        .unwrap();
    assert_clean_failure(&output, &["--num-workers must be at least 1"]);
    assert!(!dir.path().join("logs/no_workers").exists());
}
