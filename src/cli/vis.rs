//! `voxreg vis`: DeepReg's `deepreg_vis` modes, drawn as 8-bit grey images (each volume
//! min-max normalised over all its voxels, so frames of one animation share a scale).
//!
//! * mode 0: for each image, a GIF through its slices along the last axis (`<stem>.gif`);
//! * mode 1: for each image and slice index, a GIF of the image warped by the DDF scaled
//!   from 0 to 1 in `--num-interval` steps (`<stem>_slice_<k>.gif`);
//! * mode 2: a PNG with one row per slice index and one column per image (`--fname`,
//!   default `visualisation.png`); column titles go into the PNG's `Title` text field, as no
//!   font is bundled;
//! * mode 3: a GIF through the slices of `rows × cols` images tiled on a grid (`--size`;
//!   `--fname`, default `visualisation.gif`).
//!
//! `--scale N` enlarges every pixel to an `N × N` block. Tiles are 2 pixels apart.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use voxreg::component::Volume;
use voxreg::data::read_nifti;
use voxreg::ops::Padding;

use super::image_files::{write_gif, write_png};
use super::raster::{enlarge, slice_raster, tile, Layout, Raster, Window};
use super::stdout::say;
use super::{host, VisArgs};

/// Pixels between tiles.
const GAP: usize = 2;

/// A scalar 3D volume read for display.
struct Image {
    path: PathBuf,
    volume: Volume,
    layout: Layout,
    window: Window,
}

impl Image {
    fn read(path: &Path) -> anyhow::Result<Self> {
        host::require_regular_file(path, "image")?;
        let volume = read_nifti(path)?;
        let layout =
            Layout::of(&volume.shape).with_context(|| format!("image {}", path.display()))?;
        ensure!(
            layout.channels == 1,
            "image {} has shape {:?}: vis shows scalar 3D images (d1, d2, d3)",
            path.display(),
            volume.shape
        );
        let window = Window::min_max(&volume.data);
        Ok(Image {
            path: path.to_owned(),
            volume,
            layout,
            window,
        })
    }

    /// The file name up to its first dot, as DeepReg names outputs.
    fn stem(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        name.split('.').next().unwrap_or_default().to_owned()
    }

    fn check_slice(&self, k: usize) -> anyhow::Result<()> {
        let depth = self.layout.depth();
        ensure!(
            k < depth,
            "--slice-inds {k} is out of range for image {}, which has {depth} slices along its last axis (0 to {})",
            self.path.display(),
            depth - 1
        );
        Ok(())
    }

    fn slice(&self, k: usize, scale: usize) -> anyhow::Result<Raster> {
        let raster = slice_raster(&self.volume.data, self.layout, k, self.window)?;
        Ok(enlarge(&raster, scale))
    }
}

/// DeepReg's comma-separated lists: items trimmed, empty ones dropped.
fn split_list(text: &str) -> Vec<&str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

fn parse_numbers(flag: &str, text: &str) -> anyhow::Result<Vec<usize>> {
    split_list(text)
        .into_iter()
        .map(|item| {
            item.parse::<usize>()
                .with_context(|| format!("{flag}: `{item}` is not a non-negative whole number"))
        })
        .collect()
}

/// `n` evenly spaced values from 0 to 1 (numpy's `linspace(0, 1, n)`).
pub fn linspace_unit(n: usize) -> Vec<f32> {
    match n {
        0 => Vec::new(),
        1 => vec![0.0],
        _ => (0..n).map(|i| i as f32 / (n - 1) as f32).collect(),
    }
}

/// Runs the chosen mode and prints each file written.
pub fn vis(args: &VisArgs) -> anyhow::Result<()> {
    if args.mode == 1 && args.ddf_path.is_none() {
        bail!("--mode 1 animates a DDF: give --ddf-path");
    }
    let paths = split_list(&args.image_paths);
    if paths.is_empty() {
        bail!("--image-paths is empty: give one or more comma-separated NIfTI files");
    }
    if args.scale == 0 {
        bail!("--scale must be at least 1");
    }
    let slices = args
        .slice_inds
        .as_deref()
        .map(|text| parse_numbers("--slice-inds", text))
        .transpose()?;
    let images = paths
        .iter()
        .map(|p| Image::read(Path::new(p)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    check_output_size(&images, slices.as_ref().map_or(1, Vec::len), args)?;
    std::fs::create_dir_all(&args.save_path)
        .with_context(|| format!("creating {}", args.save_path.display()))?;
    let written = match args.mode {
        0 => gif_slices(&images, args)?,
        1 => gif_warp(&images, slices, args)?,
        2 => vec![tile_slices(&images, slices, args)?],
        _ => vec![gif_tile_slices(&images, args)?],
    };
    for path in written {
        say!("wrote {}", path.display())?;
    }
    Ok(())
}

/// The longest side of a frame: GIF stores sizes in 16 bits.
const MAX_SIDE: usize = u16::MAX as usize;
/// The most frames of a DDF animation (`--num-interval`).
const MAX_INTERVALS: usize = 10_000;

/// Refuses `--scale` and `--num-interval` values whose frames could not be encoded or would
/// not fit in memory, before anything is drawn: every size is counted with checked
/// arithmetic.
fn check_output_size(images: &[Image], slices: usize, args: &VisArgs) -> anyhow::Result<()> {
    if args.num_interval > MAX_INTERVALS {
        bail!(
            "--num-interval {}: at most {MAX_INTERVALS} frames (DeepReg's default is 100)",
            args.num_interval
        );
    }
    let mut total: u64 = 0;
    for image in images {
        let [height, width, depth] = image.layout.spatial;
        let side = |n: usize| n.checked_mul(args.scale).filter(|&s| s <= MAX_SIDE);
        let (Some(w), Some(h)) = (side(width), side(height)) else {
            bail!(
                "--scale {}: the {width}×{height} slices of {} would exceed {MAX_SIDE} pixels per side (the GIF limit); give a smaller --scale",
                args.scale,
                image.path.display()
            );
        };
        let frames = match args.mode {
            0 | 3 => depth as u64,
            1 => (args.num_interval as u64).saturating_mul(slices as u64),
            _ => slices as u64,
        };
        let frame_bytes = (w as u64) * (h as u64) * 3;
        total = total.saturating_add(frame_bytes.saturating_mul(frames));
    }
    voxreg::memory::check_fits(
        Some(total),
        &"the frames that --scale and --num-interval ask for",
    )
    .map_err(anyhow::Error::msg)
}

/// Mode 0: one GIF per image through all its slices.
fn gif_slices(images: &[Image], args: &VisArgs) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for image in images {
        let frames = (0..image.layout.depth())
            .map(|k| image.slice(k, args.scale))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let path = args.save_path.join(format!("{}.gif", image.stem()));
        write_gif(&path, &frames, args.interval)?;
        written.push(path);
    }
    Ok(written)
}

/// Mode 1: per image and slice, a GIF of the image warped by `s · DDF`, `s` from 0 to 1.
fn gif_warp(
    images: &[Image],
    slices: Option<Vec<usize>>,
    args: &VisArgs,
) -> anyhow::Result<Vec<PathBuf>> {
    let ddf_path = args
        .ddf_path
        .as_deref()
        .context("--mode 1 animates a DDF: give --ddf-path")?;
    host::require_regular_file(ddf_path, "DDF")?;
    let ddf = read_nifti(ddf_path)?;
    ensure!(
        ddf.shape.len() == 4 && ddf.shape[3] == 3,
        "DDF {} has shape {:?}: expected (d1, d2, d3, 3) as DeepReg saves it",
        ddf_path.display(),
        ddf.shape
    );
    if args.num_interval == 0 {
        bail!("--num-interval must be at least 1");
    }
    let depth = ddf.shape[2];
    let slices = slices.unwrap_or_else(|| vec![depth / 2]);
    for &k in &slices {
        ensure!(
            k < depth,
            "--slice-inds {k} is out of range for the DDF {}, whose grid has {depth} slices along its last axis (0 to {})",
            ddf_path.display(),
            depth - 1
        );
    }
    let mut written = Vec::new();
    for image in images {
        let mut frames: Vec<Vec<Raster>> = vec![Vec::new(); slices.len()];
        for scale in linspace_unit(args.num_interval) {
            let scaled = Volume {
                data: ddf.data.iter().map(|v| v * scale).collect(),
                shape: ddf.shape.clone(),
                affine: ddf.affine,
            };
            let warped = super::warp::warp_volume(&image.volume, &scaled, Padding::Zeros)
                .with_context(|| {
                    format!("warping {} by {}", image.path.display(), ddf_path.display())
                })?;
            let layout = Layout::of(&warped.shape)?;
            for (frames, &k) in frames.iter_mut().zip(&slices) {
                let raster = slice_raster(&warped.data, layout, k, image.window)?;
                frames.push(enlarge(&raster, args.scale));
            }
        }
        for (frames, k) in frames.iter().zip(&slices) {
            let path = args
                .save_path
                .join(format!("{}_slice_{k}.gif", image.stem()));
            write_gif(&path, frames, args.interval)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Mode 2: a PNG of slices, one row per slice index and one column per image.
fn tile_slices(
    images: &[Image],
    slices: Option<Vec<usize>>,
    args: &VisArgs,
) -> anyhow::Result<PathBuf> {
    let slices = slices.unwrap_or_else(|| vec![images[0].layout.depth() / 2]);
    if slices.is_empty() {
        bail!("--slice-inds is empty");
    }
    let titles: Vec<String> = match &args.col_titles {
        Some(text) => split_list(text).into_iter().map(str::to_owned).collect(),
        None => images.iter().map(Image::stem).collect(),
    };
    ensure!(
        titles.len() == images.len(),
        "--col-titles has {} titles for {} images",
        titles.len(),
        images.len()
    );
    check_equal_slices(images)?;
    let mut tiles = Vec::with_capacity(slices.len() * images.len());
    for &k in &slices {
        for image in images {
            image.check_slice(k)?;
            tiles.push(image.slice(k, args.scale)?);
        }
    }
    let grid = tile(&tiles, slices.len(), images.len(), GAP)?;
    let path = output_path(args, "png")?;
    write_png(&path, &grid, &[("Title", titles.join(" | "))])?;
    Ok(path)
}

/// Mode 3: a GIF through the slices of images tiled on a `rows × cols` grid.
fn gif_tile_slices(images: &[Image], args: &VisArgs) -> anyhow::Result<PathBuf> {
    let size = parse_numbers("--size", &args.size)?;
    let [rows, cols] = size[..] else {
        bail!("--size {}: give rows,cols such as 2,2", args.size);
    };
    ensure!(
        rows * cols == images.len(),
        "--size {rows},{cols} needs {} images, but {} were given",
        rows * cols,
        images.len()
    );
    let first = &images[0];
    if let Some(other) = images.iter().find(|i| i.volume.shape != first.volume.shape) {
        bail!(
            "the images do not have equal shapes: {} is {:?}, {} is {:?}",
            first.path.display(),
            first.volume.shape,
            other.path.display(),
            other.volume.shape
        );
    }
    let frames = (0..first.layout.depth())
        .map(|k| {
            let tiles = images
                .iter()
                .map(|image| image.slice(k, args.scale))
                .collect::<anyhow::Result<Vec<_>>>()?;
            tile(&tiles, rows, cols, GAP)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let path = output_path(args, "gif")?;
    write_gif(&path, &frames, args.interval)?;
    Ok(path)
}

/// `--save-path` joined with `--fname` (default `visualisation.<extension>`), which must
/// end in `.<extension>`: the file is written in that format.
fn output_path(args: &VisArgs, extension: &str) -> anyhow::Result<PathBuf> {
    let default = format!("visualisation.{extension}");
    let name = args.fname.as_deref().unwrap_or(&default);
    ensure!(
        name.to_ascii_lowercase()
            .ends_with(&format!(".{extension}")),
        "--fname {name}: mode {} writes a {} file, so the name must end in .{extension}",
        args.mode,
        extension.to_ascii_uppercase()
    );
    Ok(args.save_path.join(name))
}

/// Side-by-side slices need images whose first two axes agree.
fn check_equal_slices(images: &[Image]) -> anyhow::Result<()> {
    let first = &images[0];
    let plane = |i: &Image| [i.layout.spatial[0], i.layout.spatial[1]];
    if let Some(other) = images.iter().find(|i| plane(i) != plane(first)) {
        bail!(
            "the images' slices differ in shape: {} has {:?}, {} has {:?} (the first two axes must agree to tile them)",
            first.path.display(),
            plane(first),
            other.path.display(),
            plane(other)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_numbers_parse_like_deepregs() {
        assert_eq!(split_list(" a.nii , b.nii,,"), vec!["a.nii", "b.nii"]);
        assert_eq!(parse_numbers("--slice-inds", "1, 4").unwrap(), vec![1, 4]);
        let error = parse_numbers("--slice-inds", "1,-2")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`-2` is not a non-negative whole number"),
            "{error}"
        );
    }

    #[test]
    fn linspace_runs_from_0_to_1() {
        assert_eq!(linspace_unit(5), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(linspace_unit(1), vec![0.0]);
        assert!(linspace_unit(0).is_empty());
    }
}
