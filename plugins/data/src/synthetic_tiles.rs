//! Building a tile dataset from one 2D image, the way a microscope scans a slide: each mosaic
//! is a grid of overlapping tiles whose origins are known (a regular step plus a small random
//! stage error), written as PNG files with DeepReg's unpaired layout and the grid position in
//! the name, ready for the `tiles` data loader. The origins go to `tiles.csv`, so a
//! registration's recovered translation can be checked against the truth.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voxreg_framework::prelude::*;

/// How to cut the tiles.
#[derive(Clone, Debug)]
pub struct TileDataset {
    /// The 2D image the tiles are cut from.
    pub image: Volume,
    /// Tile size `[rows, columns]` in pixels.
    pub tile: [usize; 2],
    /// Tiles per mosaic `[rows, columns]` of the grid.
    pub grid: [usize; 2],
    /// Fraction of a tile shared with its grid neighbour along each axis, in `[0, 1)`: the
    /// nominal step between neighbours is `round(tile · (1 − overlap))`.
    pub overlap: f64,
    /// Largest random error of each tile's origin, in pixels per axis (uniform integers in
    /// `[−jitter, jitter]`), as a microscope stage adds.
    pub jitter: usize,
    /// Mosaics in the train, valid and test splits; each sits at its own random place in
    /// the image.
    pub mosaics: [usize; 3],
    /// Seed of the mosaic places and the jitter.
    pub seed: u64,
}

/// One tile written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileRecord {
    /// File name (in `<split>/images/`).
    pub file: String,
    /// Mosaic index within the split.
    pub mosaic: usize,
    /// Grid row and column.
    pub grid: [usize; 2],
    /// The tile's first pixel in the source image `[row, column]`.
    pub origin: [usize; 2],
}

/// What was written.
#[derive(Clone, Debug, PartialEq)]
pub struct TileSummary {
    /// The split folders (`<out>/train`, …) to use as `dataset.<split>.dir`.
    pub split_dirs: [PathBuf; 3],
    /// Tiles per split.
    pub tiles: [Vec<TileRecord>; 3],
    /// The nominal step between grid neighbours `[rows, columns]`.
    pub step: [usize; 2],
}

const NAME: &str = "tile dataset";

/// The CSV header of `tiles.csv`.
pub const TILES_CSV_HEADER: [&str; 6] = [
    "file",
    "mosaic",
    "row",
    "column",
    "origin_row",
    "origin_column",
];

/// Cuts the tiles and writes `<out>/<split>/images/mosaic<k>_Y<row>_X<column>.png` (8-bit
/// grey, the image's range mapped linearly to 0–255) and `<out>/<split>/tiles.csv` (one
/// row per tile: [`TILES_CSV_HEADER`]). The displacement that aligns tile `a` (moving) to its
/// neighbour `b` (fixed) is `origin_b − origin_a` in pixels.
pub fn build_tile_dataset(
    out: &Path,
    options: &TileDataset,
) -> Result<TileSummary, ComponentError> {
    let image = &options.image;
    let [height, width] = image.shape[..] else {
        return Err(ComponentError::invalid(
            NAME,
            format!(
                "the image has shape {:?}: tiles are cut from a 2D image (take a plane of a 3D one)",
                image.shape
            ),
        ));
    };
    if !(0.0..1.0).contains(&options.overlap) {
        return Err(ComponentError::invalid(
            NAME,
            format!("the overlap {} is not in [0, 1)", options.overlap),
        ));
    }
    if options.tile.contains(&0) || options.grid.contains(&0) {
        return Err(ComponentError::invalid(
            NAME,
            "the tile size and the grid need at least 1 on each axis",
        ));
    }
    let step = options
        .tile
        .map(|t| ((t as f64 * (1.0 - options.overlap)).round() as usize).max(1));
    let extent: Vec<usize> = (0..2)
        .map(|a| options.tile[a] + (options.grid[a] - 1) * step[a] + 2 * options.jitter)
        .collect();
    if extent[0] > height || extent[1] > width {
        return Err(ComponentError::invalid(
            NAME,
            format!(
                "a mosaic of {:?} tiles of {:?} with step {step:?} and jitter {} spans {extent:?} pixels, more than the image's {:?}",
                options.grid, options.tile, options.jitter, image.shape
            ),
        ));
    }
    let pixels = to_u8(&image.data);
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let splits = ["train", "valid", "test"];
    let mut tiles: [Vec<TileRecord>; 3] = Default::default();
    for (index, split) in splits.iter().enumerate() {
        let root = out.join(split);
        let images = root.join("images");
        std::fs::create_dir_all(&images).map_err(|e| folder_error(&images, &e))?;
        for mosaic in 0..options.mosaics[index] {
            let corner = [
                rng.random_range(0..=height - extent[0]) + options.jitter,
                rng.random_range(0..=width - extent[1]) + options.jitter,
            ];
            for row in 0..options.grid[0] {
                for column in 0..options.grid[1] {
                    let mut origin = [corner[0] + row * step[0], corner[1] + column * step[1]];
                    for value in &mut origin {
                        let shift = rng.random_range(0..=2 * options.jitter);
                        *value = *value + shift - options.jitter;
                    }
                    let file = format!("mosaic{mosaic}_Y{row:03}_X{column:03}.png");
                    let cut = cut(&pixels, width, origin, options.tile);
                    write_grey_png(&images.join(&file), options.tile, &cut)?;
                    tiles[index].push(TileRecord {
                        file,
                        mosaic,
                        grid: [row, column],
                        origin,
                    });
                }
            }
        }
        write_csv(&root.join("tiles.csv"), &tiles[index])?;
    }
    Ok(TileSummary {
        split_dirs: splits.map(|s| out.join(s)),
        tiles,
        step,
    })
}

fn folder_error(folder: &Path, error: &std::io::Error) -> ComponentError {
    ComponentError::Data {
        path: folder.to_path_buf(),
        message: format!("cannot create folder: {error}"),
    }
}

/// The image's finite range mapped linearly to 0–255 (0 for a flat image or a value that is
/// not finite).
fn to_u8(data: &[f32]) -> Vec<u8> {
    let (lo, hi) = data
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    data.iter()
        .map(|&v| {
            if hi > lo && v.is_finite() {
                (255.0 * (v - lo) / (hi - lo)).round() as u8
            } else {
                0
            }
        })
        .collect()
}

/// The `tile` pixels from `origin` of a row-major image `width` pixels wide.
fn cut(pixels: &[u8], width: usize, origin: [usize; 2], tile: [usize; 2]) -> Vec<u8> {
    (0..tile[0])
        .flat_map(|r| {
            let start = (origin[0] + r) * width + origin[1];
            pixels[start..start + tile[1]].iter().copied()
        })
        .collect()
}

fn write_grey_png(path: &Path, shape: [usize; 2], pixels: &[u8]) -> Result<(), ComponentError> {
    let failed = |message: String| ComponentError::Data {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::create(path).map_err(|e| failed(format!("cannot create: {e}")))?;
    let size = |n: usize| u32::try_from(n).map_err(|_| failed(format!("{n} pixels is too large")));
    let mut encoder = png::Encoder::new(
        std::io::BufWriter::new(file),
        size(shape[1])?,
        size(shape[0])?,
    );
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| {
            writer.write_image_data(pixels)?;
            writer.finish()
        })
        .map_err(|e| failed(format!("cannot write the PNG: {e}")))
}

fn write_csv(path: &Path, tiles: &[TileRecord]) -> Result<(), ComponentError> {
    let failed = |e: csv::Error| ComponentError::Data {
        path: path.to_path_buf(),
        message: format!("cannot write: {e}"),
    };
    let mut writer = csv::Writer::from_path(path).map_err(failed)?;
    writer.write_record(TILES_CSV_HEADER).map_err(failed)?;
    for tile in tiles {
        writer
            .write_record([
                tile.file.clone(),
                tile.mosaic.to_string(),
                tile.grid[0].to_string(),
                tile.grid[1].to_string(),
                tile.origin[0].to_string(),
                tile.origin[1].to_string(),
            ])
            .map_err(failed)?;
    }
    writer.flush().map_err(|e| failed(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_image;

    fn ramp(height: usize, width: usize) -> Volume {
        Volume {
            data: (0..height * width).map(|v| v as f32).collect(),
            shape: vec![height, width],
            affine: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        }
    }

    fn options(image: Volume) -> TileDataset {
        TileDataset {
            image,
            tile: [8, 10],
            grid: [2, 3],
            overlap: 0.5,
            jitter: 1,
            mosaics: [2, 1, 0],
            seed: 3,
        }
    }

    #[test]
    fn each_tile_holds_the_image_at_its_recorded_origin() {
        let dir = tempfile::tempdir().unwrap();
        // Values below 256 so the 0–255 mapping is the identity: pixel = 16·row + column.
        let image = Volume {
            data: (0..16 * 16).map(|v| v as f32).collect(),
            ..ramp(16, 16)
        };
        let mut setup = options(image);
        setup.tile = [6, 6];
        setup.grid = [2, 2];
        let summary = build_tile_dataset(dir.path(), &setup).unwrap();
        assert_eq!(summary.step, [3, 3]);
        assert_eq!(summary.tiles.each_ref().map(|t| t.len()), [8, 4, 0]);
        for tile in &summary.tiles[0] {
            let path = summary.split_dirs[0].join("images").join(&tile.file);
            let read = read_image(&path, None).unwrap();
            assert_eq!(read.shape, vec![6, 6]);
            for (k, value) in read.data.iter().enumerate() {
                let (r, c) = (tile.origin[0] + k / 6, tile.origin[1] + k % 6);
                assert_eq!(*value, (r * 16 + c) as f32, "{} at {k}", tile.file);
            }
        }
        let first = &summary.tiles[0][0];
        let second = &summary.tiles[0][1];
        assert_eq!((first.grid, second.grid), ([0, 0], [0, 1]));
        assert!(
            second.origin[1].abs_diff(first.origin[1] + 3) <= 2,
            "jitter ≤ 1 each"
        );
        let csv = std::fs::read_to_string(summary.split_dirs[0].join("tiles.csv")).unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("file,mosaic,row,column,origin_row,origin_column")
        );
        assert_eq!(
            lines.next().unwrap(),
            format!(
                "mosaic0_Y000_X000.png,0,0,0,{},{}",
                first.origin[0], first.origin[1]
            )
        );
        assert_eq!(lines.count(), 7);
    }

    #[test]
    fn the_same_seed_cuts_the_same_tiles() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = build_tile_dataset(a.path(), &options(ramp(40, 40))).unwrap();
        let second = build_tile_dataset(b.path(), &options(ramp(40, 40))).unwrap();
        assert_eq!(first.tiles, second.tiles);
        let other = TileDataset {
            seed: 4,
            ..options(ramp(40, 40))
        };
        let c = tempfile::tempdir().unwrap();
        assert_ne!(
            build_tile_dataset(c.path(), &other).unwrap().tiles,
            first.tiles
        );
    }

    #[test]
    fn a_mosaic_larger_than_the_image_is_refused_with_its_extent() {
        let dir = tempfile::tempdir().unwrap();
        let error = build_tile_dataset(dir.path(), &options(ramp(12, 40)))
            .unwrap_err()
            .to_string();
        // 8 + 1·4 + 2 = 14 rows > 12.
        assert!(error.contains("[14, 22]"), "{error}");
        let flat = TileDataset {
            image: Volume {
                shape: vec![4, 4, 4],
                data: vec![0.0; 64],
                ..ramp(1, 1)
            },
            ..options(ramp(1, 1))
        };
        let error = build_tile_dataset(dir.path(), &flat)
            .unwrap_err()
            .to_string();
        assert!(error.contains("2D image"), "{error}");
        let overlap = TileDataset {
            overlap: 1.0,
            ..options(ramp(40, 40))
        };
        let error = build_tile_dataset(dir.path(), &overlap)
            .unwrap_err()
            .to_string();
        assert!(error.contains("overlap"), "{error}");
    }
}
