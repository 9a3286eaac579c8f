//! Decoding 2D image files (PNG, TIFF) into grey volumes.
//!
//! * Pixels keep their stored values as f32 (0–255 for 8 bits, 0–65535 for 16 bits, the
//!   value itself for float TIFF); the data loaders normalise intensities afterwards.
//! * Colour becomes grey by the ITU-R BT.601 luma rule, `0.299·R + 0.587·G + 0.114·B`
//!   (what PIL's `convert("L")` uses); an alpha channel is dropped; a PNG palette is expanded
//!   to its colours first, and PNG grey below 8 bits to 8 bits.
//! * The array shape is `[height, width]` (rows, then columns); a multi-page TIFF is a 3D
//!   volume `[height, width, pages]`, every page the same size and kind.
//! * Unsupported kinds are errors naming the file: TIFF palette, CMYK, YCbCr, L\*a\*b\* and
//!   multi-band pixels, signed or 64-bit samples, pages of different sizes.

use std::io::{BufReader, Read, Seek};
use std::path::Path;

use tiff::decoder::{Decoder, DecodingResult};
use tiff::ColorType;
use voxreg_framework::memory;
use voxreg_framework::prelude::*;

use super::data_error;

/// The luma weights of R, G and B (ITU-R BT.601).
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// Which decoder a file name asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RasterKind {
    /// `.png`
    Png,
    /// `.tif`, `.tiff`
    Tiff,
}

impl RasterKind {
    /// The kind and the name without its extension, for PNG and TIFF file names
    /// (extensions compared case-insensitively).
    pub(super) fn of(name: &str) -> Option<(RasterKind, &str)> {
        let lower = name.to_ascii_lowercase();
        let (kind, suffix) = if lower.ends_with(".png") {
            (RasterKind::Png, 4)
        } else if lower.ends_with(".tiff") {
            (RasterKind::Tiff, 5)
        } else if lower.ends_with(".tif") {
            (RasterKind::Tiff, 4)
        } else {
            return None;
        };
        let stem = &name[..name.len() - suffix];
        (!stem.is_empty()).then_some((kind, stem))
    }
}

/// Grey pixels `[height, width(, pages)]`.
pub(super) struct Grey {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>, ComponentError> {
    if let Some(problem) = voxreg_framework::files::regular_file_problem(path) {
        return Err(data_error(path, problem));
    }
    let file = std::fs::File::open(path).map_err(|e| data_error(path, e.to_string()))?;
    Ok(BufReader::new(file))
}

/// Runs a decoder, turning a panic inside it into an error naming the file.
fn guarded<T>(
    path: &Path,
    decode: impl FnOnce() -> Result<T, ComponentError> + std::panic::UnwindSafe,
) -> Result<T, ComponentError> {
    std::panic::catch_unwind(decode)
        .unwrap_or_else(|_| Err(data_error(path, "the image decoder failed on this file")))
}

/// Reads a PNG or TIFF file as grey pixels.
pub(super) fn read_raster(path: &Path, kind: RasterKind) -> Result<Grey, ComponentError> {
    let reader = open(path)?;
    let owned = path.to_owned();
    guarded(path, move || match kind {
        RasterKind::Png => read_png(&owned, reader),
        RasterKind::Tiff => read_tiff(&owned, reader),
    })
}

/// The shape of a PNG or TIFF file, reading headers only.
pub(super) fn raster_shape(path: &Path, kind: RasterKind) -> Result<Vec<usize>, ComponentError> {
    let reader = open(path)?;
    let owned = path.to_owned();
    guarded(path, move || match kind {
        RasterKind::Png => {
            let info = png::Decoder::new(reader)
                .read_info()
                .map_err(|e| data_error(&owned, format!("not a readable PNG: {e}")))?;
            let (width, height) = info.info().size();
            Ok(vec![height as usize, width as usize])
        }
        RasterKind::Tiff => {
            let mut decoder = tiff_decoder(&owned, reader)?;
            let (width, height) = dimensions(&owned, &mut decoder, 0)?;
            let mut pages = 1;
            while decoder.more_images() {
                decoder
                    .next_image()
                    .map_err(|e| data_error(&owned, format!("TIFF page {pages}: {e}")))?;
                pages += 1;
            }
            Ok(page_shape(height, width, pages))
        }
    })
}

fn page_shape(height: usize, width: usize, pages: usize) -> Vec<usize> {
    if pages == 1 {
        vec![height, width]
    } else {
        vec![height, width, pages]
    }
}

/// Grey values from interleaved samples with `channels` per pixel: 1 grey, 2 grey + alpha,
/// 3 RGB, 4 RGBA.
fn to_grey(samples: impl Iterator<Item = f32>, channels: usize) -> Vec<f32> {
    let samples: Vec<f32> = samples.collect();
    match channels {
        1 => samples,
        2 => samples.chunks_exact(2).map(|p| p[0]).collect(),
        _ => samples
            .chunks_exact(channels)
            .map(|p| LUMA[0] * p[0] + LUMA[1] * p[1] + LUMA[2] * p[2])
            .collect(),
    }
}

fn check_memory(path: &Path, shape: &[usize]) -> Result<(), ComponentError> {
    let bytes = memory::element_count(shape).and_then(|n| memory::byte_count(n, 4));
    memory::check_fits(bytes, &format!("{} (shape {shape:?})", path.display()))
        .map_err(|message| data_error(path, message))
}

fn read_png(path: &Path, reader: BufReader<std::fs::File>) -> Result<Grey, ComponentError> {
    let mut decoder = png::Decoder::new(reader);
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder
        .read_info()
        .map_err(|e| data_error(path, format!("not a readable PNG: {e}")))?;
    let (width, height) = reader.info().size();
    let shape = vec![height as usize, width as usize];
    check_memory(path, &shape)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| data_error(path, "PNG too large to decode"))?;
    let mut buffer = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buffer)
        .map_err(|e| data_error(path, format!("cannot decode the PNG: {e}")))?;
    buffer.truncate(frame.buffer_size());
    let channels = frame.color_type.samples();
    let data = match frame.bit_depth {
        png::BitDepth::Eight => to_grey(buffer.iter().map(|&v| f32::from(v)), channels),
        png::BitDepth::Sixteen => to_grey(
            buffer
                .chunks_exact(2)
                .map(|b| f32::from(u16::from_be_bytes([b[0], b[1]]))),
            channels,
        ),
        other => {
            return Err(data_error(
                path,
                format!("PNG with {other:?}-bit samples after expansion: not supported"),
            ))
        }
    };
    if data.len() != shape[0] * shape[1] {
        return Err(data_error(
            path,
            format!(
                "PNG decoded to {} values for {width}×{height} pixels",
                data.len()
            ),
        ));
    }
    Ok(Grey { shape, data })
}

fn tiff_decoder<R: Read + Seek>(path: &Path, reader: R) -> Result<Decoder<R>, ComponentError> {
    Decoder::new(reader).map_err(|e| data_error(path, format!("not a readable TIFF: {e}")))
}

fn dimensions<R: Read + Seek>(
    path: &Path,
    decoder: &mut Decoder<R>,
    page: usize,
) -> Result<(usize, usize), ComponentError> {
    let (width, height) = decoder
        .dimensions()
        .map_err(|e| data_error(path, format!("TIFF page {page}: {e}")))?;
    Ok((width as usize, height as usize))
}

/// The samples per pixel of a supported TIFF colour type.
fn tiff_channels(path: &Path, page: usize, color: ColorType) -> Result<usize, ComponentError> {
    match color {
        ColorType::Gray(_) => Ok(1),
        ColorType::GrayA(_) => Ok(2),
        ColorType::RGB(_) => Ok(3),
        ColorType::RGBA(_) => Ok(4),
        other => Err(data_error(
            path,
            format!(
                "TIFF page {page} has {other:?} pixels: voxreg reads grey, grey+alpha, RGB and RGBA TIFF"
            ),
        )),
    }
}

fn tiff_samples(
    path: &Path,
    page: usize,
    decoded: DecodingResult,
) -> Result<Vec<f32>, ComponentError> {
    Ok(match decoded {
        DecodingResult::U8(v) => v.into_iter().map(f32::from).collect(),
        DecodingResult::U16(v) => v.into_iter().map(f32::from).collect(),
        DecodingResult::U32(v) => v.into_iter().map(|x| x as f32).collect(),
        DecodingResult::F32(v) => v,
        DecodingResult::F64(v) => v.into_iter().map(|x| x as f32).collect(),
        _ => {
            return Err(data_error(
                path,
                format!(
                    "TIFF page {page} has signed, 16-bit float or 64-bit integer samples: voxreg reads unsigned 8/16/32-bit and float 32/64-bit TIFF"
                ),
            ))
        }
    })
}

fn read_tiff(path: &Path, reader: BufReader<std::fs::File>) -> Result<Grey, ComponentError> {
    let mut decoder = tiff_decoder(path, reader)?;
    let mut pages: Vec<Vec<f32>> = Vec::new();
    let mut size = None;
    loop {
        let page = pages.len();
        let (width, height) = dimensions(path, &mut decoder, page)?;
        match size {
            None => {
                check_memory(path, &[height, width])?;
                size = Some((width, height));
            }
            Some(first) if first != (width, height) => {
                return Err(data_error(
                    path,
                    format!(
                        "TIFF page {page} is {width}×{height} pixels but page 0 is {}×{}: a multi-page TIFF is read as one volume, so every page needs the same size",
                        first.0, first.1
                    ),
                ))
            }
            Some(_) => {}
        }
        let color = decoder
            .colortype()
            .map_err(|e| data_error(path, format!("TIFF page {page}: {e}")))?;
        let channels = tiff_channels(path, page, color)?;
        let decoded = decoder
            .read_image()
            .map_err(|e| data_error(path, format!("cannot decode TIFF page {page}: {e}")))?;
        let grey = to_grey(tiff_samples(path, page, decoded)?.into_iter(), channels);
        if grey.len() != width * height {
            return Err(data_error(
                path,
                format!(
                    "TIFF page {page} decoded to {} values for {width}×{height} pixels",
                    grey.len()
                ),
            ));
        }
        pages.push(grey);
        if !decoder.more_images() {
            break;
        }
        decoder
            .next_image()
            .map_err(|e| data_error(path, format!("TIFF page {}: {e}", page + 1)))?;
    }
    let (width, height) = size.unwrap_or_default();
    let shape = page_shape(height, width, pages.len());
    check_memory(path, &shape)?;
    let data = if pages.len() == 1 {
        pages.pop().unwrap_or_default()
    } else {
        // [height, width, pages]: the page index varies fastest.
        let count = pages.len();
        let mut data = vec![0.0f32; width * height * count];
        for (k, page) in pages.iter().enumerate() {
            for (pixel, &value) in page.iter().enumerate() {
                data[pixel * count + k] = value;
            }
        }
        data
    };
    Ok(Grey { shape, data })
}
