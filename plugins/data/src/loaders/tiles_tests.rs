//! The `tiles` loader: grid parsing, neighbour pairs per split, seeding, the errors a user's
//! file names can cause, and aspect-preserving resizing through real PNG files.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use regex::Regex;
use voxreg_framework::prelude::*;

use super::{grid_pattern, TileGrid, TilesLoader};
use crate::RasterFormat;

fn grey_png(path: &Path, height: u32, width: u32, pixel: impl Fn(u32, u32) -> u8) {
    let pixels: Vec<u8> = (0..height)
        .flat_map(|row| (0..width).map(move |column| (row, column)))
        .map(|(row, column)| pixel(row, column))
        .collect();
    let file = fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
}

/// A `rows × columns` grid of 4 × 6 tiles of one mosaic, named `slide_Y<r>_X<c>.png`.
fn grid_dataset(root: &Path, rows: usize, columns: usize) {
    let images = root.join("images");
    fs::create_dir_all(&images).unwrap();
    for row in 0..rows {
        for column in 0..columns {
            let path = images.join(format!("slide_Y{row:03}_X{column:03}.png"));
            grey_png(&path, 4, 6, |r, c| (r * 6 + c + row as u32 * 10) as u8);
        }
    }
}

fn config() -> TilesLoader {
    TilesLoader {
        image_shape: vec![4, 4],
        pattern: r"Y(\d+)_X(\d+)".to_owned(),
        diagonal: false,
        keep_aspect: false,
        origins: None,
        sample_label: None,
        seed: None,
    }
}

fn build(
    config: &TilesLoader,
    split: Split,
    dirs: &[PathBuf],
) -> Result<Box<dyn DataLoader>, ComponentError> {
    let format = RasterFormat { voxel_size: None };
    config.build(&SplitSource {
        split,
        dirs,
        format: &format,
        labeled: false,
    })
}

fn pairs(samples: &[SampleRef]) -> Vec<(usize, usize)> {
    samples.iter().map(|s| (s.moving, s.fixed)).collect()
}

/// Tile index → (row, column) for the `grid_dataset` names (sorted: row-major).
fn position(index: usize, columns: usize) -> (i64, i64) {
    ((index / columns) as i64, (index % columns) as i64)
}

fn adjacent(a: (i64, i64), b: (i64, i64), diagonal: bool) -> bool {
    let (dr, dc) = ((a.0 - b.0).abs(), (a.1 - b.1).abs());
    (dr, dc) != (0, 0) && dr <= 1 && dc <= 1 && (diagonal || dr + dc == 1)
}

#[test]
fn training_pairs_each_tile_once_with_a_neighbour_and_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    grid_dataset(dir.path(), 2, 3);
    let dirs = [dir.path().to_path_buf()];
    let loader = build(&config(), Split::Train, &dirs).unwrap();
    let first = pairs(&loader.epoch(0, 7));
    assert_eq!(first.len(), 6);
    let moving: HashSet<usize> = first.iter().map(|p| p.0).collect();
    assert_eq!(moving.len(), 6, "every tile is moving once: {first:?}");
    for &(m, f) in &first {
        assert!(
            adjacent(position(m, 3), position(f, 3), false),
            "{m} and {f} are not 4-neighbours"
        );
    }
    assert_eq!(first, pairs(&loader.epoch(0, 7)), "same seed, same epoch");
    let later: Vec<_> = (1..6).map(|epoch| pairs(&loader.epoch(epoch, 7))).collect();
    assert!(later.iter().any(|p| *p != first), "epochs draw anew");
}

#[test]
fn validation_takes_every_ordered_neighbour_pair() {
    let dir = tempfile::tempdir().unwrap();
    grid_dataset(dir.path(), 2, 3);
    let dirs = [dir.path().to_path_buf()];
    let loader = build(&config(), Split::Valid, &dirs).unwrap();
    let all = pairs(&loader.epoch(0, 0));
    // A 2 × 3 grid has 4 horizontal and 3 vertical edges: 7 undirected, 14 ordered.
    assert_eq!(all.len(), 14);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 14);
    assert!(all
        .iter()
        .all(|&(m, f)| adjacent(position(m, 3), position(f, 3), false)));
    assert_eq!(all, pairs(&loader.epoch(3, 9)), "validation is fixed");

    let diagonal = TilesLoader {
        diagonal: true,
        ..config()
    };
    let all = pairs(&build(&diagonal, Split::Test, &dirs).unwrap().epoch(0, 0));
    // Plus 2 × 2 diagonal edges per 2 × 2 block, 2 blocks: 11 undirected, 22 ordered.
    assert_eq!(all.len(), 22);
    assert!(all
        .iter()
        .all(|&(m, f)| adjacent(position(m, 3), position(f, 3), true)));
}

#[test]
fn tiles_pair_only_within_their_mosaic() {
    let regex = Regex::new(r"Y(\d+)_X(\d+)").unwrap();
    let names = ["a_Y0_X0", "a_Y0_X1", "b_Y0_X0", "b_Y0_X1", "b_Y1_X1"];
    let grid = TileGrid::parse(&names, &regex, "p").unwrap();
    let neighbours = grid.neighbours(false).unwrap();
    assert_eq!(
        neighbours,
        vec![vec![1], vec![0], vec![3], vec![2, 4], vec![3]]
    );
}

#[test]
fn a_name_without_a_position_is_named() {
    let regex = Regex::new(r"Y(\d+)_X(\d+)").unwrap();
    let error = TileGrid::parse(&["a_Y0_X0", "overview", "a_Yx_X1"], &regex, "P").unwrap_err();
    assert!(error.contains("2 image name(s)"), "{error}");
    assert!(
        error.contains("overview") && error.contains("a_Yx_X1"),
        "{error}"
    );
    assert!(error.contains("`P`"), "{error}");
}

#[test]
fn two_tiles_at_one_position_are_named() {
    let regex = Regex::new(r"Y(\d+)_X(\d+)").unwrap();
    let error = TileGrid::parse(&["s_Y1_X2_a", "s_Y1_X2_a"], &regex, "p").unwrap_err();
    assert!(
        error.contains("same grid position (row 1, column 2)"),
        "{error}"
    );
}

#[test]
fn a_lone_tile_is_named_with_the_diagonal_hint() {
    let regex = Regex::new(r"Y(\d+)_X(\d+)").unwrap();
    let grid = TileGrid::parse(&["s_Y0_X0", "s_Y0_X1", "s_Y1_X2"], &regex, "p").unwrap();
    let error = grid.neighbours(false).unwrap_err();
    assert!(
        error.contains("`s_Y1_X2`") && error.contains("diagonal: true"),
        "{error}"
    );
    assert_eq!(
        grid.neighbours(true).unwrap(),
        vec![vec![1], vec![0, 2], vec![1]]
    );
}

#[test]
fn the_pattern_must_compile_and_capture_a_row_and_a_column() {
    let bad = grid_pattern("Y(").unwrap_err().to_string();
    assert!(bad.contains("not a regular expression"), "{bad}");
    let one = grid_pattern(r"Y(\d+)").unwrap_err().to_string();
    assert!(one.contains("two capture groups"), "{one}");
    assert!(grid_pattern(r"r(\d+)c(\d+)").is_ok());
}

#[test]
fn bad_names_fail_the_build_naming_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    grid_dataset(dir.path(), 1, 2);
    grey_png(&dir.path().join("images").join("stray.png"), 4, 6, |_, _| 1);
    let dirs = [dir.path().to_path_buf()];
    let error = build(&config(), Split::Train, &dirs)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("stray"), "{error}");
}

#[test]
fn keep_aspect_resizes_inside_the_shape_and_pads_after_the_data() {
    let dir = tempfile::tempdir().unwrap();
    grid_dataset(dir.path(), 1, 2);
    let dirs = [dir.path().to_path_buf()];
    // 4 × 6 tiles into 6 × 6: the fit is 4 × 6 (scale 1), then 2 rows of zeros.
    let fit = TilesLoader {
        image_shape: vec![6, 6],
        keep_aspect: true,
        ..config()
    };
    let loader = build(&fit, Split::Valid, &dirs).unwrap();
    let sample = loader.load(&loader.epoch(0, 0)[0]).unwrap();
    let image = &sample.moving_image;
    assert_eq!(image.len(), 36);
    // Pixel (r, c) = 6r + c, normalised to [0, 1] by its range 0..=23.
    for row in 0..4 {
        for column in 0..6 {
            let expected = (row * 6 + column) as f32 / 23.0;
            let got = image[row * 6 + column];
            assert!((got - expected).abs() < 1e-5, "({row}, {column}): {got}");
        }
    }
    assert!(image[24..].iter().all(|v| *v == 0.0), "{:?}", &image[24..]);

    let stretch = TilesLoader {
        image_shape: vec![6, 6],
        ..config()
    };
    let loader = build(&stretch, Split::Valid, &dirs).unwrap();
    let sample = loader.load(&loader.epoch(0, 0)[0]).unwrap();
    assert!(
        sample.moving_image[30..].iter().all(|v| *v > 0.5),
        "stretching fills the last row with data"
    );
}

#[test]
fn known_origins_give_each_pair_its_true_field() {
    let dir = tempfile::tempdir().unwrap();
    let image = Volume {
        data: (0..40 * 40).map(|v| (v % 37) as f32).collect(),
        shape: vec![40, 40],
        affine: [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
    };
    let summary = crate::synthetic_tiles::build_tile_dataset(
        dir.path(),
        &crate::synthetic_tiles::TileDataset {
            image,
            tile: [16, 16],
            grid: [2, 2],
            overlap: 0.5,
            jitter: 2,
            mosaics: [1, 1, 0],
            seed: 5,
        },
    )
    .unwrap();
    let dirs = [summary.split_dirs[1].clone()];
    let known = TilesLoader {
        image_shape: vec![8, 8],
        origins: Some("tiles.csv".to_owned()),
        ..config()
    };
    assert!(known
        .provides(false)
        .iter()
        .any(|d| d.name == names::TRUE_DDF));
    let loader = build(&known, Split::Valid, &dirs).unwrap();
    let tiles = &summary.tiles[1];
    for reference in loader.epoch(0, 0) {
        let sample = loader.load(&reference).unwrap();
        let (decl, shape, field) = &sample.extra[0];
        assert_eq!(decl.name, names::TRUE_DDF);
        assert_eq!(shape, &vec![2, 8, 8]);
        let (m, f) = (&tiles[reference.moving], &tiles[reference.fixed]);
        for axis in 0..2 {
            // Tiles halved: the true shift is half the origin difference.
            let expected = (f.origin[axis] as f32 - m.origin[axis] as f32) / 2.0;
            assert!(
                field[axis * 64..(axis + 1) * 64]
                    .iter()
                    .all(|v| (v - expected).abs() < 1e-5),
                "{} → {}: axis {axis}",
                m.file,
                f.file
            );
        }
    }
    let missing = TilesLoader {
        origins: Some("absent.csv".to_owned()),
        ..known.clone()
    };
    let error = build(&missing, Split::Valid, &dirs)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("absent.csv"), "{error}");
    let volumes = TilesLoader {
        image_shape: vec![8, 8, 8],
        ..known
    };
    let error = build(&volumes, Split::Valid, &dirs)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("2D"), "{error}");
}
