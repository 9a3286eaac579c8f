//! The command line: listing, showing, checking, and clean errors.

use std::fs;

use crate::util::{
    assert_clean_failure, repo_root, run, stderr, stdout, tiny_training_config, voxreg,
};

#[test]
fn plugins_list_shows_every_builtin_category() {
    let output = run(&["plugins", "list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for (category, name) in [
        ("backbone", "unet"),
        ("backbone", "local"),
        ("backbone", "global"),
        ("method", "ddf"),
        ("image_loss", "lncc"),
        ("label_loss", "dice"),
        ("regularization", "bending"),
        ("optimizer", "adam"),
        ("data_loader", "grouped"),
        ("file_loader", "nifti"),
        ("augmentation", "affine"),
    ] {
        let row = text
            .lines()
            .find(|l| l.starts_with(category) && l.split_whitespace().nth(1) == Some(name));
        let row = row.unwrap_or_else(|| panic!("no {category} {name} in:\n{text}"));
        assert!(row.contains("(linked)"), "{row}");
    }
}

/// `voxreg plugins list | grep -q name` closes the pipe early: the listing must end quietly
/// with success, not panic on the failed write (CI runs exactly that line).
#[test]
fn printing_into_a_closed_pipe_exits_quietly() {
    for args in [
        &["plugins", "list"][..],
        &["plugins", "show", "backbone", "unet"][..],
    ] {
        let (reader, writer) = std::io::pipe().expect("creating a pipe");
        drop(reader);
        let output = voxreg()
            .args(args)
            .stdout(writer)
            .output()
            .expect("running voxreg");
        let errors = stderr(&output);
        assert!(
            output.status.success(),
            "{args:?}: {:?}\n{errors}",
            output.status
        );
        assert!(errors.is_empty(), "{args:?} printed to stderr:\n{errors}");
    }
}

#[test]
fn plugins_list_filters_by_category_and_rejects_unknown_ones() {
    let output = run(&["plugins", "list", "--category", "optimizer"]);
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 4, "{text}");
    let output = run(&["plugins", "list", "--category", "losses"]);
    assert_clean_failure(&output, &["unknown category `losses`", "image_loss"]);
}

#[test]
fn plugins_show_prints_defaults_or_required_keys() {
    let output = run(&["plugins", "show", "image_loss", "lncc"]);
    let text = stdout(&output);
    assert!(text.contains("kernel_size: 9  "), "{text}");
    assert!(
        text.contains("kernel_type: rectangular  # a string"),
        "{text}"
    );
    let output = run(&["plugins", "show", "backbone", "unet"]);
    let text = stdout(&output);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(
        line("num_channel_initial").as_deref(),
        Some("num_channel_initial: # required: an integer"),
        "{text}"
    );
    assert_eq!(
        line("depth").as_deref(),
        Some("depth: # required: an integer")
    );
    assert_eq!(
        line("extract_levels").as_deref(),
        Some("extract_levels: [0] # a list")
    );
    assert_eq!(
        line("pooling").as_deref(),
        Some("pooling: true # a boolean")
    );
    assert_eq!(
        line("encode_num_channels").as_deref(),
        Some("encode_num_channels: null # optional: a list")
    );
    let keys = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(keys, 16, "name and 15 keys: {text}");
    let output = run(&["plugins", "show", "backbone", "unte"]);
    assert_clean_failure(&output, &["unknown backbone `unte`", "did you mean `unet`"]);
}

#[test]
fn config_check_prints_the_resolved_config() {
    let config = repo_root().join("configs/quickstart.yaml");
    let output = run(&["config", "check", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("name: local"), "{text}");
    assert!(text.contains("use_additive_upsampling: true"), "{text}");
    assert!(text.contains("type: paired"), "{text}");
}

#[test]
fn config_check_lists_every_problem_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let text = fs::read_to_string(repo_root().join("configs/quickstart.yaml"))
        .unwrap()
        .replace("name: local", "name: lokal")
        .replace("kernel_size: 7", "kernel_sise: 7")
        .replace("batch_size: 2", "batch_size: two")
        .replace("epochs: 20", "epochs: 20\n  warmup: 3");
    fs::write(&path, text).unwrap();
    let output = run(&["config", "check", path.to_str().unwrap()]);
    let file = path.display().to_string();
    assert_clean_failure(
        &output,
        &[
            "4 problems",
            &format!("{file}:23:5"),
            "`train.backbone.name`: unknown backbone `lokal`",
            "did you mean `local`",
            "`train.loss.image.kernel_sise`: unknown key",
            "did you mean `kernel_size`",
            "`train.preprocess.batch_size`: invalid type: string \"two\"",
            "`train.warmup`: unknown key",
        ],
    );
}

#[test]
fn config_check_reports_syntax_errors_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    fs::write(&path, "train:\n  epochs: [1, 2\n").unwrap();
    let output = run(&["config", "check", path.to_str().unwrap()]);
    assert_clean_failure(&output, &["broken.yaml:", "YAML syntax error"]);
    let output = run(&["config", "check", "/nonexistent/config.yaml"]);
    assert_clean_failure(
        &output,
        &["cannot read config file /nonexistent/config.yaml"],
    );
}

#[test]
fn config_check_reports_missing_required_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.yaml");
    fs::write(&path, "dataset:\n  type: unpaired\ntrain:\n  method: ddf\n").unwrap();
    let output = run(&["config", "check", path.to_str().unwrap()]);
    assert_clean_failure(
        &output,
        &[
            "`dataset`: missing field `image_shape` (data_loader `unpaired`)",
            "`train.backbone`: missing required key",
            "`train.epochs`: missing required key",
        ],
    );
}

#[test]
fn train_runs_on_the_demo_data_with_deepregs_flag_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let base = repo_root().join("configs/quickstart.yaml");
    let overlay = tiny_training_config(dir.path());
    let logs = dir.path().join("logs");
    let run = |name: &str| {
        voxreg()
            .args([
                "train",
                "--config_path",
                base.to_str().unwrap(),
                overlay.to_str().unwrap(),
            ])
            .args([
                "--exp_name",
                name,
                "--log_dir",
                logs.to_str().unwrap(),
                "--max_epochs",
                "1",
            ])
            .output()
            .unwrap()
    };
    let output = run("tiny");
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("trained 1 epoch (6 steps)"), "{text}");
    assert!(
        text.contains("test split, 4 samples: before registration → after"),
        "{text}"
    );
    assert!(text.contains("label Dice (mean)"), "{text}");
    assert!(logs.join("tiny/save/weights.safetensors").is_file());
    let epochs = fs::read_to_string(logs.join("tiny/train_metrics.csv")).unwrap();
    let mut lines = epochs.lines();
    assert_eq!(
        lines.next(),
        Some("epoch,loss,image/lncc,label/dice,regularization/bending,image_ssd,label_binary_dice,label_tre,label_tre_mm,out_of_view_fraction,constant_warped_fraction,ddf_folding_fraction"),
        "{epochs}"
    );
    assert!(lines.next().unwrap().starts_with("1,-"), "{epochs}");
    assert!(logs
        .join("tiny/save/ckpt-1/optimizer.safetensors")
        .is_file());
    let saved = fs::read_to_string(logs.join("tiny/config.yaml")).unwrap();
    assert!(saved.contains("num_channel_initial: 2"), "{saved}");
    // A second run under the same name would overwrite it: refused.
    assert_clean_failure(
        &run("tiny"),
        &["already holds a run; choose another --exp-name"],
    );
}

#[test]
fn workflow_commands_check_their_inputs() {
    let output = run(&[
        "predict",
        "--ckpt-path",
        "/nonexistent/ckpt",
        "--split",
        "test",
    ]);
    assert_clean_failure(&output, &["checkpoint /nonexistent/ckpt: no such file"]);
    let output = run(&["predict", "--ckpt-path", "x", "--split", "training"]);
    assert_eq!(output.status.code(), Some(2), "clap rejects unknown splits");
    let output = run(&["vis", "-m", "1", "-i", ""]);
    assert_clean_failure(&output, &["--mode 1 animates a DDF"]);
}

fn write_volume(path: &std::path::Path, shape: &[usize], data: Vec<f32>, origin: f64) {
    let mut affine = [[0.0; 4]; 4];
    for (i, row) in affine.iter_mut().enumerate() {
        row[i] = 2.0;
    }
    affine[0][3] = origin;
    affine[3][3] = 1.0;
    let volume = voxreg::component::Volume {
        data,
        shape: shape.to_vec(),
        affine,
    };
    voxreg::data::write_nifti(path, &volume).unwrap();
}

#[test]
fn warp_applies_a_saved_ddf_in_the_ddf_space() {
    let dir = tempfile::tempdir().unwrap();
    let (image, ddf, out) = (
        dir.path().join("image.nii.gz"),
        dir.path().join("ddf.nii.gz"),
        dir.path().join("warped.nii.gz"),
    );
    write_volume(&image, &[3, 3, 3], (0..27).map(|v| v as f32).collect(), 0.0);
    // Sample one voxel further along the first axis everywhere.
    let field: Vec<f32> = (0..27).flat_map(|_| [1.0, 0.0, 0.0]).collect();
    write_volume(&ddf, &[3, 3, 3, 3], field, -7.0);
    let output = run(&[
        "warp",
        "--image",
        image.to_str().unwrap(),
        "--ddf",
        ddf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let warped = voxreg::data::read_nifti(&out).unwrap();
    assert_eq!(warped.shape, vec![3, 3, 3]);
    // Voxel (0, 0, 0) now holds the value of (1, 0, 0) = 9; the last slice samples outside
    // the image: zero, as predict warps.
    assert_eq!(warped.data[0], 9.0);
    assert_eq!(warped.data[26], 0.0);
    assert_eq!(
        warped.affine[0][3], -7.0,
        "the output carries the DDF's space"
    );
    let output = run(&[
        "warp",
        "--image",
        image.to_str().unwrap(),
        "--ddf",
        ddf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--padding",
        "border",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let warped = voxreg::data::read_nifti(&out).unwrap();
    assert_eq!(warped.data[0], 9.0);
    assert_eq!(warped.data[26], 26.0, "the last slice clamps to itself");
}

#[test]
fn warp_errors_name_the_file_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("warped.nii.gz");
    let output = run(&[
        "warp",
        "-i",
        "/nonexistent/a.nii.gz",
        "-d",
        "b.nii.gz",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_clean_failure(&output, &["/nonexistent/a.nii.gz: no such file"]);
    let image = dir.path().join("image.nii.gz");
    write_volume(&image, &[2, 2, 2], vec![0.0; 8], 0.0);
    let ddf = dir.path().join("bad_ddf.nii.gz");
    write_volume(&ddf, &[2, 2, 2, 2], vec![0.0; 16], 0.0);
    let output = run(&[
        "warp",
        "-i",
        image.to_str().unwrap(),
        "-d",
        ddf.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_clean_failure(&output, &["the DDF has shape [2, 2, 2, 2]"]);
    let output = run(&[
        "warp",
        "-i",
        image.to_str().unwrap(),
        "-d",
        ddf.to_str().unwrap(),
        "-o",
        "out.png",
    ]);
    assert_clean_failure(&output, &["--out out.png: must end in .nii or .nii.gz"]);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "only the two inputs exist"
    );
}

#[test]
fn dataset_from_template_writes_deepregs_paired_layout() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("t1.nii.gz");
    let label = dir.path().join("mask.nii.gz");
    write_volume(
        &template,
        &[12, 12, 12],
        (0..1728).map(|v| (v % 17) as f32).collect(),
        0.0,
    );
    write_volume(
        &label,
        &[12, 12, 12],
        (0..1728)
            .map(|v| f32::from(u8::from(v % 144 < 72)))
            .collect(),
        0.0,
    );
    let out = dir.path().join("dataset");
    let args = |out: &std::path::Path| {
        vec![
            "dataset".to_owned(),
            "from-template".to_owned(),
            "--template".to_owned(),
            template.display().to_string(),
            "--label".to_owned(),
            label.display().to_string(),
            "--out".to_owned(),
            out.display().to_string(),
            "--shape".to_owned(),
            "8,8,8".to_owned(),
            "--pairs".to_owned(),
            "2,1,0".to_owned(),
        ]
    };
    let output = voxreg().args(args(&out)).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("wrote 3 pairs"));
    for kind in [
        "moving_images",
        "fixed_images",
        "moving_labels",
        "fixed_labels",
    ] {
        assert_eq!(
            std::fs::read_dir(out.join("train").join(kind))
                .unwrap()
                .count(),
            2,
            "{kind}"
        );
    }
    let label = voxreg::data::read_nifti(&out.join("valid/fixed_labels/case_002.nii.gz")).unwrap();
    assert_eq!(label.shape, vec![8, 8, 8, 1]);
    let again = voxreg().args(args(&out)).output().unwrap();
    assert_clean_failure(&again, &["the folder exists and is not empty"]);
}

pub(crate) fn load_weights(path: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    let mut tensors: Vec<(String, Vec<f32>)> =
        voxreg::candle::safetensors::load(path, &voxreg::candle::Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(name, t)| (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// Two epochs straight through give exactly the weights of one epoch, a checkpoint and one
/// more epoch resumed from it (CPU, same thread count).
#[test]
fn resuming_from_a_checkpoint_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let base = repo_root().join("configs/quickstart.yaml");
    let overlay = tiny_training_config(dir.path());
    let logs = dir.path().join("logs");
    let train = |name: &str, epochs: &str, resume: Option<&std::path::Path>| {
        let mut command = voxreg();
        command
            .args([
                "train",
                "-c",
                base.to_str().unwrap(),
                overlay.to_str().unwrap(),
            ])
            .args([
                "--exp-name",
                name,
                "--log-dir",
                logs.to_str().unwrap(),
                "--max-epochs",
                epochs,
            ])
            .env("RAYON_NUM_THREADS", "2");
        if let Some(checkpoint) = resume {
            command.args(["--ckpt-path", checkpoint.to_str().unwrap()]);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{name}: {}", stderr(&output));
    };
    train("straight", "2", None);
    train("first", "1", None);
    let checkpoint = logs.join("first/save/ckpt-1");
    assert!(checkpoint.join("optimizer.safetensors").is_file());
    train("resumed", "2", Some(&checkpoint));
    let straight = load_weights(&logs.join("straight/save/weights.safetensors"));
    let resumed = load_weights(&logs.join("resumed/save/weights.safetensors"));
    assert_eq!(straight.len(), resumed.len());
    for ((name, a), (_, b)) in straight.iter().zip(&resumed) {
        assert_eq!(a, b, "{name} differs after resuming");
    }
    let first = load_weights(&logs.join("first/save/weights.safetensors"));
    assert_ne!(first, straight, "the second epoch changed the weights");
    // A checkpoint at or past the target epoch is refused.
    let output = voxreg()
        .args([
            "train",
            "-c",
            base.to_str().unwrap(),
            overlay.to_str().unwrap(),
        ])
        .args([
            "--exp-name",
            "again",
            "--log-dir",
            logs.to_str().unwrap(),
            "--max-epochs",
            "1",
        ])
        .args(["--ckpt-path", checkpoint.to_str().unwrap()])
        .output()
        .unwrap();
    assert_clean_failure(&output, &["is at epoch 1: train for more epochs"]);
}
