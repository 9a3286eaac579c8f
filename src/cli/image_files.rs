//! PNG and animated GIF files from rasters, each written to a temporary file beside its
//! target and renamed into place, so a failure leaves no partial file.

use std::path::Path;

use anyhow::{bail, Context};

use super::atomic::write_atomically;
use super::raster::Raster;

/// Writes `raster` as an 8-bit grey or RGB PNG, with `text` as tEXt chunks (keyword,
/// value).
pub fn write_png(path: &Path, raster: &Raster, text: &[(&str, String)]) -> anyhow::Result<()> {
    let color = match raster.channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        other => bail!("a PNG raster has 1 or 3 channels, not {other}"),
    };
    let (width, height) = (u32::try_from(raster.width)?, u32::try_from(raster.height)?);
    write_atomically(path, |writer| {
        let mut encoder = png::Encoder::new(writer, width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        for (keyword, value) in text {
            encoder.add_text_chunk((*keyword).to_owned(), value.clone())?;
        }
        let mut png = encoder.write_header()?;
        png.write_image_data(&raster.pixels)?;
        png.finish()?;
        Ok(())
    })
    .with_context(|| format!("writing the PNG {}", path.display()))
}

/// The GIF frame delay in hundredths of a second for `interval_ms` milliseconds (at least
/// 1: viewers treat 0 as "as fast as you like").
pub fn gif_delay(interval_ms: u32) -> u16 {
    u16::try_from(interval_ms.div_ceil(10))
        .unwrap_or(u16::MAX)
        .max(1)
}

/// Writes grey rasters of one size as a looping animated GIF with a 256-level grey palette,
/// `interval_ms` between frames.
pub fn write_gif(path: &Path, frames: &[Raster], interval_ms: u32) -> anyhow::Result<()> {
    let Some(first) = frames.first() else {
        bail!("{}: an animation needs at least one frame", path.display());
    };
    let too_big = |v: usize| u16::try_from(v).ok();
    let (Some(width), Some(height)) = (too_big(first.width), too_big(first.height)) else {
        bail!(
            "{}: {}×{} pixels is larger than a GIF can hold (65535 per side)",
            path.display(),
            first.width,
            first.height
        );
    };
    if let Some(other) = frames
        .iter()
        .find(|f| f.channels != 1 || (f.width, f.height) != (first.width, first.height))
    {
        bail!(
            "{}: GIF frames must be grey and of one size ({}×{} and {}×{} with {} channels)",
            path.display(),
            first.width,
            first.height,
            other.width,
            other.height,
            other.channels
        );
    }
    let palette: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
    let delay = gif_delay(interval_ms);
    write_atomically(path, |writer| {
        let mut encoder = gif::Encoder::new(writer, width, height, &palette)?;
        encoder.set_repeat(gif::Repeat::Infinite)?;
        for raster in frames {
            let mut frame =
                gif::Frame::from_indexed_pixels(width, height, raster.pixels.as_slice(), None);
            frame.delay = delay;
            encoder.write_frame(&frame)?;
        }
        encoder.into_inner()?;
        Ok(())
    })
    .with_context(|| format!("writing the GIF {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn grey(width: usize, height: usize, value: u8) -> Raster {
        Raster {
            width,
            height,
            channels: 1,
            pixels: vec![value; width * height],
        }
    }

    #[test]
    fn png_round_trips_with_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        let raster = Raster {
            width: 3,
            height: 2,
            channels: 1,
            pixels: vec![0, 1, 2, 3, 4, 5],
        };
        write_png(&path, &raster, &[("Title", "moving | fixed".to_owned())]).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(info.uncompressed_latin1_text[0].text, "moving | fixed");
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut pixels).unwrap();
        assert_eq!(pixels, raster.pixels);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no partial file left"
        );
    }

    #[test]
    fn gif_holds_every_frame_with_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.gif");
        let frames: Vec<Raster> = (0..5).map(|v| grey(4, 3, v * 50)).collect();
        write_gif(&path, &frames, 50).unwrap();
        let mut decoder = gif::DecodeOptions::new()
            .read_info(File::open(&path).unwrap())
            .unwrap();
        assert_eq!((decoder.width(), decoder.height()), (4, 3));
        let mut count = 0;
        while let Some(frame) = decoder.read_next_frame().unwrap() {
            assert_eq!(frame.delay, 5);
            count += 1;
        }
        assert_eq!(count, 5);
    }

    #[test]
    fn bad_frames_are_errors_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.gif");
        assert!(write_gif(&path, &[], 50).is_err());
        assert!(write_gif(&path, &[grey(2, 2, 0), grey(3, 2, 0)], 50).is_err());
        assert!(!path.exists());
        let missing = dir.path().join("no/such/folder/a.png");
        assert!(write_png(&missing, &grey(1, 1, 0), &[]).is_err());
        assert_eq!(gif_delay(0), 1);
        assert_eq!(gif_delay(55), 6);
    }
}
