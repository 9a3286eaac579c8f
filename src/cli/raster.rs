//! 8-bit rasters from volumes: slicing, intensity scaling, tiling and enlarging.
//!
//! Volumes are f32 arrays in C order over `(d0, d1, d2)`, optionally with a trailing axis of
//! channels. A slice at depth `k` of the last spatial axis is shown as DeepReg's
//! `imshow(volume[:, :, k])` shows it: rows are axis 0, columns axis 1.

use anyhow::{bail, ensure};

/// An 8-bit image, row-major, with 1 (grey) or 3 (RGB) interleaved channels per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raster {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Channels per pixel: 1 or 3.
    pub channels: usize,
    /// `height · width · channels` values.
    pub pixels: Vec<u8>,
}

/// The intensity window `[lo, hi]` mapped to `[0, 255]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Maps to 0.
    pub lo: f32,
    /// Maps to 255.
    pub hi: f32,
}

impl Window {
    /// The smallest and largest finite values of `data` (min-max normalisation); `[0, 1]`
    /// when it holds no finite value.
    pub fn min_max(data: &[f32]) -> Self {
        let finite = data.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if lo > hi {
            Window { lo: 0.0, hi: 1.0 }
        } else {
            Window { lo, hi }
        }
    }

    /// `round(255 · (v − lo) / (hi − lo))`, clamped to `[0, 255]`; 0 for a window of zero
    /// width or a value that is not finite.
    pub fn to_u8(self, value: f32) -> u8 {
        let width = self.hi - self.lo;
        if width.is_nan() || width <= 0.0 || !value.is_finite() {
            return 0;
        }
        (255.0 * ((value - self.lo) / width).clamp(0.0, 1.0)).round() as u8
    }
}

/// The spatial layout of a 3D volume: `(d0, d1, d2)` and channels per voxel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Spatial sizes.
    pub spatial: [usize; 3],
    /// Values per voxel (1 for a scalar image, 3 for a DDF).
    pub channels: usize,
}

impl Layout {
    /// The layout of an array of `shape`: three spatial axes, then at most one axis of
    /// channels.
    pub fn of(shape: &[usize]) -> anyhow::Result<Self> {
        match *shape {
            [d0, d1, d2] => Ok(Layout {
                spatial: [d0, d1, d2],
                channels: 1,
            }),
            [d0, d1, d2, c] => Ok(Layout {
                spatial: [d0, d1, d2],
                channels: c,
            }),
            _ => bail!(
                "shape {shape:?}: expected a 3D volume (d1, d2, d3), optionally with one trailing axis of channels"
            ),
        }
    }

    /// Slices along the last spatial axis.
    pub fn depth(&self) -> usize {
        self.spatial[2]
    }
}

/// The values of slice `k` of the last spatial axis: `d0 · d1 · channels` values, rows
/// first.
pub fn slice_values(data: &[f32], layout: Layout, k: usize) -> anyhow::Result<Vec<f32>> {
    let [d0, d1, d2] = layout.spatial;
    let c = layout.channels;
    ensure!(
        data.len() == d0 * d1 * d2 * c,
        "{} values do not fill shape {:?} with {c} channels",
        data.len(),
        layout.spatial
    );
    ensure!(
        k < d2,
        "slice index {k} is out of range: the volume has {d2} slices along its last axis (0 to {})",
        d2.saturating_sub(1)
    );
    let mut values = Vec::with_capacity(d0 * d1 * c);
    for row in 0..d0 {
        for col in 0..d1 {
            let start = ((row * d1 + col) * d2 + k) * c;
            values.extend_from_slice(&data[start..start + c]);
        }
    }
    Ok(values)
}

/// Slice `k` of a volume as a raster: grey for one channel, RGB for three (each channel
/// through the same window, as matplotlib shows a normalised DDF).
pub fn slice_raster(
    data: &[f32],
    layout: Layout,
    k: usize,
    window: Window,
) -> anyhow::Result<Raster> {
    ensure!(
        layout.channels == 1 || layout.channels == 3,
        "a slice shows 1 (grey) or 3 (RGB) channels, not {}",
        layout.channels
    );
    let values = slice_values(data, layout, k)?;
    Ok(Raster {
        width: layout.spatial[1],
        height: layout.spatial[0],
        channels: layout.channels,
        pixels: values.into_iter().map(|v| window.to_u8(v)).collect(),
    })
}

/// Enlarges each pixel to a `factor × factor` block (nearest neighbour).
pub fn enlarge(raster: &Raster, factor: usize) -> Raster {
    if factor <= 1 {
        return raster.clone();
    }
    let c = raster.channels;
    let width = raster.width * factor;
    let mut pixels = Vec::with_capacity(raster.pixels.len() * factor * factor);
    for row in 0..raster.height {
        let line: Vec<u8> = (0..width)
            .flat_map(|x| {
                let start = (row * raster.width + x / factor) * c;
                raster.pixels[start..start + c].iter().copied()
            })
            .collect();
        for _ in 0..factor {
            pixels.extend_from_slice(&line);
        }
    }
    Raster {
        width,
        height: raster.height * factor,
        channels: c,
        pixels,
    }
}

/// Tiles of equal size and channels placed on a `rows × cols` grid in row-major order,
/// `gap` pixels apart, on a white background.
pub fn tile(tiles: &[Raster], rows: usize, cols: usize, gap: usize) -> anyhow::Result<Raster> {
    ensure!(
        tiles.len() == rows * cols && !tiles.is_empty(),
        "{} tiles do not fill a {rows} × {cols} grid",
        tiles.len()
    );
    let first = &tiles[0];
    if let Some(other) = tiles
        .iter()
        .find(|t| (t.width, t.height, t.channels) != (first.width, first.height, first.channels))
    {
        bail!(
            "tiles differ in size: {}×{} and {}×{} pixels (the images' slices must have the same shape)",
            first.height,
            first.width,
            other.height,
            other.width
        );
    }
    let c = first.channels;
    let width = cols * first.width + (cols - 1) * gap;
    let height = rows * first.height + (rows - 1) * gap;
    let mut pixels = vec![255u8; width * height * c];
    for (index, tile) in tiles.iter().enumerate() {
        let (top, left) = (
            (index / cols) * (first.height + gap),
            (index % cols) * (first.width + gap),
        );
        for row in 0..tile.height {
            let source = &tile.pixels[row * tile.width * c..(row + 1) * tile.width * c];
            let start = ((top + row) * width + left) * c;
            pixels[start..start + source.len()].copy_from_slice(source);
        }
    }
    Ok(Raster {
        width,
        height,
        channels: c,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(width: usize, height: usize, pixels: Vec<u8>) -> Raster {
        Raster {
            width,
            height,
            channels: 1,
            pixels,
        }
    }

    #[test]
    fn min_max_windows_map_the_range_onto_0_to_255() {
        let window = Window::min_max(&[2.0, f32::NAN, 6.0, 4.0]);
        assert_eq!(window, Window { lo: 2.0, hi: 6.0 });
        assert_eq!(
            [2.0, 4.0, 6.0, 3.0, 100.0, -1.0].map(|v| window.to_u8(v)),
            [0, 128, 255, 64, 255, 0]
        );
        // A constant volume is black; a volume without finite values gets [0, 1].
        assert_eq!(Window::min_max(&[3.0, 3.0]).to_u8(3.0), 0);
        assert_eq!(Window::min_max(&[f32::NAN]), Window { lo: 0.0, hi: 1.0 });
        assert_eq!(window.to_u8(f32::INFINITY), 0);
    }

    #[test]
    fn slices_follow_imshow_of_the_last_axis() {
        // shape (2, 3, 4): value = 100·i + 10·j + k.
        let data: Vec<f32> = (0..2)
            .flat_map(|i| {
                (0..3).flat_map(move |j| (0..4).map(move |k| (100 * i + 10 * j + k) as f32))
            })
            .collect();
        let layout = Layout::of(&[2, 3, 4]).unwrap();
        assert_eq!(
            slice_values(&data, layout, 3).unwrap(),
            vec![3.0, 13.0, 23.0, 103.0, 113.0, 123.0]
        );
        let raster = slice_raster(&data, layout, 0, Window { lo: 0.0, hi: 255.0 }).unwrap();
        assert_eq!((raster.width, raster.height, raster.channels), (3, 2, 1));
        assert_eq!(raster.pixels, vec![0, 10, 20, 100, 110, 120]);
        let error = slice_values(&data, layout, 4).unwrap_err().to_string();
        assert!(error.contains("slice index 4 is out of range"), "{error}");
        assert!(error.contains("4 slices"), "{error}");
    }

    #[test]
    fn channels_stay_together_in_a_slice() {
        // shape (1, 2, 2, 3).
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let layout = Layout::of(&[1, 2, 2, 3]).unwrap();
        assert_eq!(
            slice_values(&data, layout, 1).unwrap(),
            vec![3.0, 4.0, 5.0, 9.0, 10.0, 11.0]
        );
        let rgb = slice_raster(&data, layout, 1, Window { lo: 0.0, hi: 255.0 }).unwrap();
        assert_eq!((rgb.width, rgb.height, rgb.channels), (2, 1, 3));
        assert!(slice_raster(
            &data,
            Layout::of(&[1, 3, 2, 2]).unwrap(),
            0,
            Window::min_max(&data)
        )
        .is_err());
        assert!(Layout::of(&[4, 4]).is_err());
        assert!(slice_values(&data[..11], layout, 0).is_err());
    }

    #[test]
    fn enlarging_repeats_each_pixel_in_a_block() {
        let big = enlarge(&grey(2, 1, vec![1, 2]), 2);
        assert_eq!((big.width, big.height), (4, 2));
        assert_eq!(big.pixels, vec![1, 1, 2, 2, 1, 1, 2, 2]);
        assert_eq!(enlarge(&grey(2, 1, vec![1, 2]), 1).pixels, vec![1, 2]);
    }

    #[test]
    fn tiles_sit_on_a_grid_with_white_gaps() {
        let tiles: Vec<Raster> = (0..4).map(|v| grey(2, 1, vec![v, v])).collect();
        let grid = tile(&tiles, 2, 2, 1).unwrap();
        assert_eq!((grid.width, grid.height), (5, 3));
        assert_eq!(
            grid.pixels,
            vec![0, 0, 255, 1, 1, 255, 255, 255, 255, 255, 2, 2, 255, 3, 3]
        );
        let row = tile(&tiles[..3], 1, 3, 0).unwrap();
        assert_eq!(row.pixels, vec![0, 0, 1, 1, 2, 2]);
        assert!(tile(&tiles, 1, 3, 0).is_err());
        let mixed = [grey(2, 1, vec![0, 0]), grey(1, 1, vec![0])];
        let error = tile(&mixed, 1, 2, 0).unwrap_err().to_string();
        assert!(error.contains("tiles differ in size"), "{error}");
    }
}
