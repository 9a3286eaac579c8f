//! `voxreg vis`: slice GIFs, DDF GIFs, tiled PNGs and GIFs of NIfTI volumes, and clean
//! errors for bad inputs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use voxreg::component::Volume;

use crate::util::{assert_clean_failure, stderr, stdout, voxreg};

/// Writes a `shape` volume whose voxel `i` (C order) holds `i + offset`.
fn write_volume(path: &Path, shape: &[usize], offset: f32) -> String {
    let count: usize = shape.iter().product();
    let mut affine = [[0.0; 4]; 4];
    for (i, row) in affine.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    let volume = Volume {
        data: (0..count).map(|i| i as f32 + offset).collect(),
        shape: shape.to_vec(),
        affine,
    };
    voxreg::data::write_nifti(path, &volume).unwrap();
    path.to_str().unwrap().to_owned()
}

fn vis(args: &[&str]) -> Output {
    voxreg()
        .arg("vis")
        .args(args)
        .output()
        .expect("the voxreg binary runs")
}

/// The pixels of each frame of a GIF, and its size.
fn gif_pixels(path: &Path) -> (Vec<Vec<u8>>, u16, u16) {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = gif::DecodeOptions::new().read_info(file).unwrap();
    let (width, height) = (decoder.width(), decoder.height());
    let mut frames = Vec::new();
    while let Some(frame) = decoder.read_next_frame().unwrap() {
        frames.push(frame.buffer.to_vec());
    }
    (frames, width, height)
}

/// Frame count and size of a GIF.
fn gif_frames(path: &Path) -> (usize, u16, u16) {
    let (frames, width, height) = gif_pixels(path);
    (frames.len(), width, height)
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

struct Inputs {
    _dir: tempfile::TempDir,
    out: PathBuf,
    /// Three (6, 5, 4) images.
    images: Vec<String>,
    /// A (6, 5, 4, 3) zero DDF.
    ddf: String,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let images = ["moving", "warped", "fixed"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            write_volume(
                &dir.path().join(format!("{name}.nii.gz")),
                &[6, 5, 4],
                i as f32,
            )
        })
        .collect();
    let ddf_path = dir.path().join("ddf.nii.gz");
    let volume = Volume {
        data: vec![0.0; 6 * 5 * 4 * 3],
        shape: vec![6, 5, 4, 3],
        affine: [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
    };
    voxreg::data::write_nifti(&ddf_path, &volume).unwrap();
    Inputs {
        out: dir.path().join("vis"),
        ddf: ddf_path.to_str().unwrap().to_owned(),
        images,
        _dir: dir,
    }
}

#[test]
fn mode_0_animates_each_image_through_its_slices() {
    let inputs = inputs();
    let paths = inputs.images[..2].join(",");
    let output = vis(&["-m", "0", "-i", &paths, "-s", inputs.out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(files(&inputs.out), ["moving.gif", "warped.gif"]);
    // One frame per slice of the last axis; width axis 1, height axis 0.
    assert_eq!(gif_frames(&inputs.out.join("moving.gif")), (4, 5, 6));
    assert!(stdout(&output).contains("moving.gif"));
}

#[test]
fn mode_1_animates_the_ddf_from_0_to_1_per_slice() {
    let inputs = inputs();
    // Two voxels along axis 0 at full scale.
    let shift = inputs.out.parent().unwrap().join("shift.nii.gz");
    let mut ddf = voxreg::data::read_nifti(Path::new(&inputs.ddf)).unwrap();
    for voxel in ddf.data.chunks_mut(3) {
        voxel[0] = 2.0;
    }
    voxreg::data::write_nifti(&shift, &ddf).unwrap();
    let output = vis(&[
        "--mode",
        "1",
        "--image-paths",
        &inputs.images[0],
        "--ddf-path",
        shift.to_str().unwrap(),
        "--num-interval",
        "7",
        "--slice-inds",
        "0,3",
        "--scale",
        "3",
        "--save-path",
        inputs.out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        files(&inputs.out),
        ["moving_slice_0.gif", "moving_slice_3.gif"]
    );
    let (frames, width, height) = gif_pixels(&inputs.out.join("moving_slice_3.gif"));
    assert_eq!((frames.len(), width, height), (7, 15, 18));
    // Frame 0 is the image; the last is it moved up by two rows (6 enlarged pixel rows),
    // zero below the image (zero padding, as predict warps).
    let row = |frame: &[u8], r: usize| frame[r * 15..(r + 1) * 15].to_vec();
    assert_ne!(frames[0], frames[6]);
    assert_eq!(row(&frames[6], 0), row(&frames[0], 6));
    assert!(
        row(&frames[6], 17).iter().all(|v| *v == 0),
        "{:?}",
        row(&frames[6], 17)
    );
}

#[test]
fn mode_2_tiles_slices_of_images_side_by_side() {
    let inputs = inputs();
    let paths = inputs.images.join(",");
    let output = vis(&[
        "-m",
        "2",
        "-i",
        &paths,
        "--slice-inds",
        "1,3",
        "--scale",
        "2",
        "--fname",
        "tiles.png",
        "--col-titles",
        "M,W,F",
        "-s",
        inputs.out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let file = fs::File::open(inputs.out.join("tiles.png")).unwrap();
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let info = reader.info();
    // Three columns of 5·2 pixels and two rows of 6·2 pixels, 2 pixels apart.
    assert_eq!((info.width, info.height), (3 * 10 + 2 * 2, 2 * 12 + 2));
    assert_eq!(info.uncompressed_latin1_text[0].text, "M | W | F");
}

#[test]
fn mode_3_animates_a_grid_of_images() {
    let inputs = inputs();
    let paths = [&inputs.images[..], &inputs.images[..1]].concat().join(",");
    let output = vis(&["-m", "3", "-i", &paths, "-s", inputs.out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        gif_frames(&inputs.out.join("visualisation.gif")),
        (4, 2 * 5 + 2, 2 * 6 + 2)
    );
}

#[test]
fn bad_inputs_are_clear_errors_that_write_nothing() {
    let inputs = inputs();
    let out = inputs.out.to_str().unwrap();
    let missing = format!("{},/no/such/image.nii.gz", inputs.images[0]);
    assert_clean_failure(
        &vis(&["-m", "0", "-i", &missing, "-s", out]),
        &["image /no/such/image.nii.gz: no such file"],
    );
    assert_clean_failure(
        &vis(&[
            "-m",
            "2",
            "-i",
            &inputs.images[0],
            "--slice-inds",
            "1,4",
            "-s",
            out,
        ]),
        &[
            "--slice-inds 4 is out of range",
            "4 slices along its last axis",
        ],
    );
    assert_clean_failure(
        &vis(&[
            "-m",
            "1",
            "-i",
            &inputs.images[0],
            "--ddf-path",
            &inputs.ddf,
            "--slice-inds",
            "9",
            "-s",
            out,
        ]),
        &["--slice-inds 9 is out of range for the DDF"],
    );
    let dir = inputs.out.parent().unwrap();
    let other = write_volume(&dir.join("other.nii.gz"), &[6, 4, 4], 0.0);
    let mismatched = format!("{},{other}", inputs.images[0]);
    assert_clean_failure(
        &vis(&["-m", "2", "-i", &mismatched, "-s", out]),
        &["the images' slices differ in shape", "[6, 5]", "[6, 4]"],
    );
    let four = format!("{mismatched},{mismatched}");
    assert_clean_failure(
        &vis(&["-m", "3", "-i", &four, "-s", out]),
        &["the images do not have equal shapes"],
    );
    assert_clean_failure(
        &vis(&["-m", "3", "-i", &mismatched, "--size", "2,2", "-s", out]),
        &["--size 2,2 needs 4 images, but 2 were given"],
    );
    assert_clean_failure(
        &vis(&[
            "-m",
            "1",
            "-i",
            &inputs.images[0],
            "--ddf-path",
            &inputs.images[1],
            "-s",
            out,
        ]),
        &["expected (d1, d2, d3, 3)"],
    );
    assert_clean_failure(
        &vis(&["-m", "0", "-i", &inputs.ddf, "-s", out]),
        &["vis shows scalar 3D images"],
    );
    assert_clean_failure(
        &vis(&[
            "-m",
            "2",
            "-i",
            &inputs.images[0],
            "--slice-inds",
            "x",
            "-s",
            out,
        ]),
        &["--slice-inds: `x` is not a non-negative whole number"],
    );
    assert_clean_failure(
        &vis(&[
            "-m",
            "2",
            "-i",
            &inputs.images[0],
            "--fname",
            "a.jpeg",
            "-s",
            out,
        ]),
        &["--fname a.jpeg: mode 2 writes a PNG file"],
    );
    let written = files(&inputs.out);
    assert!(written.is_empty(), "{written:?}");
}
