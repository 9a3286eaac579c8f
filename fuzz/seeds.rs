//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/`: small valid
//! files made by voxreg's own writers, the repository's configs, and a checkpoint saved from
//! a small model. Built in the main workspace (the fuzz build instruments every binary of its
//! crate for libFuzzer): `cargo run --example fuzz_seeds`.

#[path = "src/shared.rs"]
mod shared;

use std::path::{Path, PathBuf};

use voxreg::engine::checkpoint::{self, Progress};
use voxreg::prelude::Volume;

const IDENTITY: [[f64; 4]; 4] = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn volume(shape: &[usize]) -> Volume {
    let count: usize = shape.iter().product();
    Volume {
        data: (0..count).map(|i| (i % 17) as f32 / 4.0).collect(),
        shape: shape.to_vec(),
        affine: IDENTITY,
    }
}

/// A seed file `corpus/<target>/seed-<name>` holding `mode` (when given) then `bytes`.
fn seed(target: &str, name: &str, mode: Option<u8>, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("the corpus folder");
    let mut data = mode.map(|m| vec![m]).unwrap_or_default();
    data.extend_from_slice(bytes);
    std::fs::write(dir.join(format!("seed-{name}")), data).expect("a seed file");
}

fn written(scratch: &Path, name: &str, write: impl FnOnce(&Path)) -> Vec<u8> {
    let path: PathBuf = scratch.join(name);
    write(&path);
    std::fs::read(&path).expect("the written file")
}

fn png_bytes(width: u32, height: u32, color: png::ColorType, depth: png::BitDepth) -> Vec<u8> {
    let channels = match color {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::GrayscaleAlpha => 2,
        _ => 1,
    };
    let bytes_per_sample = if depth == png::BitDepth::Sixteen {
        2
    } else {
        1
    };
    let pixels: Vec<u8> = (0..width * height * channels * bytes_per_sample)
        .map(|i| (i * 37 % 256) as u8)
        .collect();
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(color);
    encoder.set_depth(depth);
    let mut writer = encoder.write_header().expect("a PNG header");
    writer.write_image_data(&pixels).expect("PNG pixels");
    writer.finish().expect("a PNG file");
    out
}

fn tiff_bytes(pages: usize) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut encoder = tiff::encoder::TiffEncoder::new(&mut out).expect("a TIFF encoder");
    for page in 0..pages {
        let pixels: Vec<u8> = (0..6 * 5).map(|i| (i * 11 + page * 3) as u8).collect();
        encoder
            .write_image::<tiff::encoder::colortype::Gray8>(6, 5, &pixels)
            .expect("a TIFF page");
    }
    out.into_inner()
}

fn main() {
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let scratch = scratch.path();

    for (name, shape) in [
        ("3d", &[4, 5, 6][..]),
        ("2d", &[7, 3]),
        ("4d", &[3, 3, 2, 2]),
    ] {
        let bytes = written(scratch, &format!("{name}.nii"), |path| {
            voxreg::data::write_nifti(path, &volume(shape)).expect("a NIfTI file")
        });
        seed("nifti", &format!("{name}-nii"), Some(0), &bytes);
        seed("nifti", &format!("{name}-nii-gz"), Some(1), &bytes);
        let npy = written(scratch, &format!("{name}.npy"), |path| {
            voxreg::data::write_npy(path, &volume(shape)).expect("a .npy file")
        });
        seed("npz", &format!("{name}-npy"), Some(0), &npy);
        let npz = written(scratch, &format!("{name}.npz"), |path| {
            voxreg::data::write_npz(path, &[("vol", &volume(shape))]).expect("a .npz file")
        });
        seed("npz", &format!("{name}-npz"), Some(1), &npz);
    }

    let pngs = [
        ("grey8", png::ColorType::Grayscale, png::BitDepth::Eight),
        ("grey16", png::ColorType::Grayscale, png::BitDepth::Sixteen),
        ("rgb8", png::ColorType::Rgb, png::BitDepth::Eight),
        ("rgba8", png::ColorType::Rgba, png::BitDepth::Eight),
    ];
    for (name, color, depth) in pngs {
        seed(
            "raster",
            &format!("{name}-png"),
            Some(0),
            &png_bytes(5, 4, color, depth),
        );
    }
    seed("raster", "one-page-tif", Some(1), &tiff_bytes(1));
    seed("raster", "three-page-tif", Some(1), &tiff_bytes(3));

    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&configs)
        .expect("the repository's configs folder")
        .map(|entry| entry.expect("a configs entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read(&path).expect("a config file");
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        seed("config", &stem, None, &text);
    }
    seed("config", "small", None, shared::SMALL_CONFIG.as_bytes());

    let (model, optimizer) = shared::small_training();
    let progress = Progress {
        epoch: 1,
        epoch_step: 0,
        steps: 4,
        seed: 7,
        partial: Default::default(),
    };
    let dir = scratch.join("ckpt-1");
    checkpoint::save(
        &dir,
        &model,
        optimizer.as_ref(),
        &progress,
        shared::SMALL_CONFIG,
    )
    .expect("a checkpoint");
    let mut joined = Vec::new();
    for (index, name) in [
        "progress.txt",
        "weights.safetensors",
        "optimizer.safetensors",
    ]
    .iter()
    .enumerate()
    {
        if index > 0 {
            joined.extend_from_slice(shared::PART_SEPARATOR);
        }
        joined.extend(std::fs::read(dir.join(name)).expect("a checkpoint file"));
    }
    seed("checkpoint", "small", None, &joined);
    println!(
        "seeds written under {}/fuzz/corpus",
        env!("CARGO_MANIFEST_DIR")
    );
}
