//! The hostile-input corpus: every case is generated here (nothing is checked in), written
//! into a fresh temporary folder, and handed to the binary. Each must fail cleanly (exit 1,
//! no panic text) with a message naming the file, key or flag at fault, and leave the folder
//! as it was: nothing written, nothing changed.

use crate::util::{repo_root, run, snapshot, stderr};

/// What a case puts in its folder before the command runs.
enum Input {
    File(&'static str, Vec<u8>),
    Folder(&'static str),
    Fifo(&'static str),
}

/// A hostile case: its inputs, the command (`{dir}` is the case's folder) and what the error
/// must mention.
struct Case {
    name: &'static str,
    inputs: Vec<Input>,
    args: Vec<String>,
    needles: Vec<&'static str>,
}

fn case(name: &'static str, inputs: Vec<Input>, args: &[&str], needles: &[&'static str]) -> Case {
    Case {
        name,
        inputs,
        args: args.iter().map(|a| a.to_string()).collect(),
        needles: needles.to_vec(),
    }
}

/// Runs `case` and returns what went wrong, if anything: an exit other than 1 (an error) or
/// 2 (a command line clap refused), panic text, a needle missing from the message, or a
/// change to the case's folder.
fn run_case(case: &Case) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    for input in &case.inputs {
        match input {
            Input::File(name, bytes) => std::fs::write(dir.path().join(name), bytes).unwrap(),
            Input::Folder(name) => std::fs::create_dir(dir.path().join(name)).unwrap(),
            Input::Fifo(name) => {
                let made = std::process::Command::new("mkfifo")
                    .arg(dir.path().join(name))
                    .status()
                    .unwrap();
                assert!(made.success(), "mkfifo");
            }
        }
    }
    let before = snapshot(dir.path());
    let text = dir.path().to_str().unwrap();
    let args: Vec<String> = case.args.iter().map(|a| a.replace("{dir}", text)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(&args);
    let err = stderr(&output);
    let code = output.status.code();
    let missing: Vec<&&str> = case.needles.iter().filter(|n| !err.contains(*n)).collect();
    let problem = if !matches!(code, Some(1) | Some(2)) {
        Some(format!("exit {code:?}"))
    } else if err.contains("panicked at") || err.contains("RUST_BACKTRACE") {
        Some("panic text".to_owned())
    } else if !missing.is_empty() {
        Some(format!("{missing:?} not mentioned"))
    } else if snapshot(dir.path()) != before {
        Some("the folder changed".to_owned())
    } else {
        None
    };
    problem.map(|problem| format!("case `{}`: {problem}: {args:?}\n  stderr: {err}", case.name))
}

/// Runs every case, failing with all the problems found.
fn run_all(cases: Vec<Case>) {
    let problems: Vec<String> = cases.iter().filter_map(run_case).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A single-file NIfTI-1 header of `dims` with `datatype` / `bitpix`, voxels at
/// `vox_offset`, followed by `data_bytes` zero bytes.
pub fn nifti(
    dims: &[i16],
    datatype: i16,
    bitpix: i16,
    vox_offset: f32,
    data_bytes: usize,
) -> Vec<u8> {
    let mut bytes = vec![0u8; 352];
    bytes[0..4].copy_from_slice(&348i32.to_le_bytes());
    bytes[40..42].copy_from_slice(&(dims.len() as i16).to_le_bytes());
    for (i, d) in dims.iter().enumerate() {
        bytes[42 + 2 * i..44 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    bytes[70..72].copy_from_slice(&datatype.to_le_bytes());
    bytes[72..74].copy_from_slice(&bitpix.to_le_bytes());
    for i in 0..8 {
        bytes[76 + 4 * i..80 + 4 * i].copy_from_slice(&1f32.to_le_bytes());
    }
    bytes[108..112].copy_from_slice(&vox_offset.to_le_bytes());
    bytes[112..116].copy_from_slice(&1f32.to_le_bytes());
    bytes[344..348].copy_from_slice(b"n+1\0");
    bytes.resize(352 + data_bytes, 0);
    bytes
}

/// Deterministic junk bytes.
fn junk(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 2_654_435_761 % 251) as u8).collect()
}

/// The cases that hand `vis` a NIfTI image (`vis` reads it and writes pictures).
fn nifti_cases() -> Vec<Case> {
    let vis = |file: &str| {
        [
            "vis".to_owned(),
            "-m".to_owned(),
            "0".to_owned(),
            "-i".to_owned(),
            format!("{{dir}}/{file}"),
            "-s".to_owned(),
            "{dir}/vis".to_owned(),
        ]
    };
    let nii = |name: &'static str, bytes: Vec<u8>, needles: &[&'static str]| {
        let args = vis(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        case(name, vec![Input::File(name, bytes)], &args, needles)
    };
    let mut cases = vec![
        nii(
            "complex.nii",
            nifti(&[4, 4, 4], 32, 64, 352.0, 512),
            &["complex.nii", "complex"],
        ),
        nii(
            "rgb.nii",
            nifti(&[4, 4, 4], 128, 24, 352.0, 192),
            &["rgb.nii", "RGB"],
        ),
        nii(
            "offset_past_end.nii",
            nifti(&[4, 4, 4], 16, 32, 1.0e6, 256),
            &["offset_past_end.nii", "vox_offset"],
        ),
        nii(
            "offset_negative.nii",
            nifti(&[4, 4, 4], 16, 32, -8.0, 256),
            &["offset_negative.nii", "vox_offset"],
        ),
        nii(
            "offset_in_header.nii",
            nifti(&[4, 4, 4], 16, 32, 100.0, 256),
            &["offset_in_header.nii", "vox_offset"],
        ),
        nii(
            "offset_nan.nii",
            nifti(&[4, 4, 4], 16, 32, f32::NAN, 256),
            &["offset_nan.nii", "vox_offset"],
        ),
        nii(
            "truncated.nii",
            nifti(&[4, 4, 4], 16, 32, 352.0, 10),
            &["truncated.nii"],
        ),
        nii(
            "huge.nii",
            nifti(&[30000, 30000, 30000], 16, 32, 352.0, 64),
            &["huge.nii", "memory"],
        ),
        nii(
            "zero_dim.nii",
            nifti(&[0, 4, 4], 16, 32, 352.0, 0),
            &["zero_dim.nii"],
        ),
        nii(
            "negative_dim.nii",
            nifti(&[-4, 4, 4], 16, 32, 352.0, 256),
            &["negative_dim.nii"],
        ),
        nii("junk.nii", junk(700), &["junk.nii"]),
        nii("empty.nii", Vec::new(), &["empty.nii"]),
        nii("junk.nii.gz", junk(700), &["junk.nii.gz"]),
    ];
    let args = vis("folder.nii");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cases.push(case(
        "folder.nii",
        vec![Input::Folder("folder.nii")],
        &args,
        &["folder.nii", "folder"],
    ));
    let args = vis("fifo.nii");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cases.push(case(
        "fifo.nii",
        vec![Input::Fifo("fifo.nii")],
        &args,
        &["fifo.nii"],
    ));
    cases.push(case(
        "device",
        vec![],
        &["vis", "-m", "0", "-i", "/dev/null", "-s", "{dir}/vis"],
        &["/dev/null"],
    ));
    cases
}

/// The quick start's configuration with `replace` (a key's line) swapped for `with`.
fn quickstart_with(replace: &str, with: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(repo_root().join("configs/quickstart.yaml")).unwrap();
    assert!(text.contains(replace), "the quick start has `{replace}`");
    text.replacen(replace, with, 1).into_bytes()
}

/// The cases that hand `config check` a configuration file.
fn config_cases() -> Vec<Case> {
    let check = |name: &'static str, bytes: Vec<u8>, needles: &[&'static str]| {
        let path = format!("{{dir}}/{name}");
        case(
            name,
            vec![Input::File(name, bytes)],
            &["config", "check", &path],
            needles,
        )
    };
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let previous = format!("*a{}", level - 1);
        laughs.push_str(&format!(
            "a{level}: &a{level} [{}]\n",
            vec![previous; 10].join(", ")
        ));
    }
    let deep = "[".repeat(100_000);
    let long_list = format!(
        "dataset:\n  moving_image_shape: [{}]\n",
        vec!["1"; 2_000_000].join(", ")
    );
    vec![
        check("laughs.yaml", laughs.into_bytes(), &["laughs.yaml"]),
        check("deep.yaml", deep.into_bytes(), &["deep.yaml"]),
        check(
            "long_list.yaml",
            long_list.into_bytes(),
            &["long_list.yaml"],
        ),
        check(
            "not_utf8.yaml",
            vec![0xff, 0xfe, b':', b'\n'],
            &["not_utf8.yaml"],
        ),
        check("scalar.yaml", b"42\n".to_vec(), &["scalar.yaml"]),
        check("empty_key.yaml", b": 1\n".to_vec(), &["empty_key.yaml"]),
        check(
            "plugins_number.yaml",
            b"plugins: [42]\n".to_vec(),
            &["plugins_number.yaml", "plugins"],
        ),
        check(
            "huge_shape.yaml",
            quickstart_with(
                "moving_image_shape: [32, 32, 32]",
                "moving_image_shape: [100000, 100000, 100000]",
            ),
            &["huge_shape.yaml", "moving_image_shape"],
        ),
        check(
            "huge_channels.yaml",
            quickstart_with("num_channel_initial: 8", "num_channel_initial: 1000000"),
            &["huge_channels.yaml", "num_channel_initial"],
        ),
        check(
            "zero_channels.yaml",
            quickstart_with("num_channel_initial: 8", "num_channel_initial: 0"),
            &["zero_channels.yaml", "num_channel_initial"],
        ),
        check(
            "nan_rate.yaml",
            quickstart_with("learning_rate: 1.0e-3", "learning_rate: .nan"),
            &["nan_rate.yaml", "learning_rate"],
        ),
        check(
            "negative_rate.yaml",
            quickstart_with("learning_rate: 1.0e-3", "learning_rate: -1.0"),
            &["negative_rate.yaml", "learning_rate"],
        ),
        check(
            "infinite_rate.yaml",
            quickstart_with("learning_rate: 1.0e-3", "learning_rate: 1.0e400"),
            &["infinite_rate.yaml", "learning_rate"],
        ),
        check(
            "max_beta.yaml",
            quickstart_with(
                "learning_rate: 1.0e-3",
                "learning_rate: 1.0e-3\n    beta_1: 1.7976931348623157e308",
            ),
            &["max_beta.yaml", "beta_1", "got 1.7976931348623157e308"],
        ),
        check(
            "zero_kernel.yaml",
            quickstart_with("kernel_size: 7", "kernel_size: 0"),
            &["zero_kernel.yaml", "kernel_size"],
        ),
        check(
            "mixed_dims.yaml",
            quickstart_with(
                "fixed_image_shape: [32, 32, 32]",
                "fixed_image_shape: [32, 32]",
            ),
            &["mixed_dims.yaml", "image_shape"],
        ),
        check(
            "threads.yaml",
            quickstart_with("num_parallel_calls: -1", "num_parallel_calls: 100000"),
            &["threads.yaml", "num_parallel_calls"],
        ),
        check(
            "unknown_backbone.yaml",
            quickstart_with("name: local", "name: lokal"),
            &["unknown_backbone.yaml", "lokal"],
        ),
    ]
}

/// The cases that hand `dataset augment` a reference image in the other formats.
fn raster_and_array_cases() -> Vec<Case> {
    let augment = |name: &'static str, bytes: Vec<u8>| {
        let reference = format!("{{dir}}/{name}");
        case(
            name,
            vec![Input::File(name, bytes)],
            &[
                "dataset",
                "augment",
                "--reference",
                &reference,
                "-o",
                "{dir}/out",
            ],
            &[name],
        )
    };
    let mut lying_npy = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }";
    let padded = format!("{header:<117}\n");
    lying_npy.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    lying_npy.extend_from_slice(padded.as_bytes());
    lying_npy.extend_from_slice(&[0; 64]);
    let mut png_header_only = b"\x89PNG\r\n\x1a\n".to_vec();
    png_header_only.extend_from_slice(&junk(40));
    vec![
        augment("junk.png", junk(300)),
        augment("header_only.png", png_header_only),
        augment("junk.tif", junk(300)),
        augment("tiff_magic.tif", b"II*\0\x08\0\0\0\xff\xff".to_vec()),
        augment("junk.npz", junk(300)),
        augment("junk.npy", junk(300)),
        augment("lying.npy", lying_npy),
    ]
}

/// The cases that hand `train` a damaged checkpoint or plugin.
fn checkpoint_and_plugin_cases() -> Vec<Case> {
    let config = repo_root().join("configs/quickstart.yaml");
    let config = config.to_str().unwrap().to_owned();
    let resume = |name: &'static str, inputs: Vec<Input>, needles: &[&'static str]| {
        let mut inputs = inputs;
        inputs.insert(0, Input::Folder("ckpt-1"));
        case(
            name,
            inputs,
            &[
                "train",
                "-c",
                &config,
                "--ckpt-path",
                "{dir}/ckpt-1",
                "--log-dir",
                "{dir}",
                "--exp-name",
                "run",
            ],
            needles,
        )
    };
    let progress = b"epoch=1\nepoch_step=0\nsteps=4\nseed=1\noptimizer_step=4\n".to_vec();
    vec![
        resume("no_progress", vec![], &["ckpt-1", "progress.txt"]),
        resume(
            "junk_weights",
            vec![
                Input::File("ckpt-1/progress.txt", progress.clone()),
                Input::File("ckpt-1/weights.safetensors", junk(500)),
            ],
            &["weights.safetensors"],
        ),
        resume(
            "impossible_progress",
            vec![Input::File(
                "ckpt-1/progress.txt",
                b"epoch=1\nepoch_step=9\nsteps=4\nseed=1\noptimizer_step=4\n".to_vec(),
            )],
            &["progress.txt", "damaged"],
        ),
        resume(
            "binary_progress",
            vec![Input::File("ckpt-1/progress.txt", junk(200))],
            &["progress.txt"],
        ),
        case(
            "text_plugin",
            vec![Input::File("plugin.so", b"not a library".to_vec())],
            &["--plugin", "{dir}/plugin.so", "plugins", "list"],
            &["plugin.so"],
        ),
        case(
            "missing_plugin",
            vec![],
            &["--plugin", "{dir}/missing.so", "plugins", "list"],
            &["missing.so"],
        ),
    ]
}

/// Flags whose values are wrong in ways a parser alone does not catch.
fn flag_cases() -> Vec<Case> {
    let demo = repo_root().join("demo/data/paired/train");
    let first = |kind: &str| {
        let dir = demo.join(kind);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names[0].to_str().unwrap().to_owned()
    };
    let (moving, fixed) = (first("moving_images"), first("fixed_images"));
    let template = nifti(&[6, 6, 6], 16, 32, 352.0, 864);
    let label = nifti(&[5, 6, 6], 16, 32, 352.0, 720);
    vec![
        case(
            "negative_scale",
            vec![Input::File(
                "image.nii",
                nifti(&[4, 4, 4], 16, 32, 352.0, 256),
            )],
            &[
                "vis",
                "-m",
                "0",
                "-i",
                "{dir}/image.nii",
                "-s",
                "{dir}/vis",
                "--scale",
                "-1",
            ],
            &["--scale", "negative"],
        ),
        case(
            "register_out_is_a_file",
            vec![Input::File("out", b"keep me".to_vec())],
            &[
                "register",
                "--moving",
                &moving,
                "--fixed",
                &fixed,
                "--iterations",
                "1",
                "-o",
                "{dir}/out",
            ],
            &["--out", "/out", "a file, not a folder"],
        ),
        case(
            "label_shape",
            vec![
                Input::File("template.nii", template),
                Input::File("label.nii", label),
            ],
            &[
                "dataset",
                "from-template",
                "--template",
                "{dir}/template.nii",
                "--label",
                "{dir}/label.nii",
                "--shape",
                "6,6,6",
                "-o",
                "{dir}/ds",
            ],
            &["--label", "label.nii", "[5, 6, 6]"],
        ),
    ]
}

#[test]
fn hostile_nifti_files_are_refused_by_name() {
    run_all(nifti_cases());
}

#[test]
fn hostile_configs_are_refused_by_file_and_key() {
    run_all(config_cases());
}

#[test]
fn hostile_images_and_arrays_are_refused_by_name() {
    run_all(raster_and_array_cases());
}

#[test]
fn damaged_checkpoints_and_plugins_are_refused_by_name() {
    run_all(checkpoint_and_plugin_cases());
}

#[test]
fn wrong_flag_values_are_refused_by_flag() {
    run_all(flag_cases());
}

#[test]
fn the_corpus_covers_each_class() {
    let all: Vec<Case> = [
        nifti_cases(),
        config_cases(),
        raster_and_array_cases(),
        checkpoint_and_plugin_cases(),
        flag_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut names: Vec<&str> = all.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), all.len(), "case names are unique");
    assert!(all.len() >= 45, "{} cases", all.len());
}
