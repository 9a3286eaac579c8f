//! The run folder's `loss_curve.png`: the mean training loss and the validation loss of each
//! epoch, drawn with plotters.

use std::path::Path;

use anyhow::{anyhow, Context};

use super::image_files::write_png;
use super::raster::Raster;
use plotters::prelude::*;
use voxreg::engine::EpochLog;

/// The font of the axis labels: DejaVu Sans reduced to ASCII (assets/fonts/LICENSE).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-ascii.ttf");
const FONT_NAME: &str = "voxreg-sans";
const WIDTH: u32 = 800;
const HEIGHT: u32 = 480;

/// Registers the font once per process.
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT).is_ok());
    ok.then_some(())
        .ok_or_else(|| anyhow!("the bundled plot font cannot be read"))
}

/// The y range covering every value, padded by 5 % (a flat curve gets a unit-wide range).
fn value_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return None;
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 0.5 };
    Some((lo - pad, hi + pad))
}

/// Draws the curves into an RGB buffer of `WIDTH × HEIGHT`.
fn draw(epochs: &[EpochLog], buffer: &mut [u8]) -> anyhow::Result<()> {
    let values = epochs
        .iter()
        .flat_map(|e| std::iter::once(e.train.loss).chain(e.valid.as_ref().map(|v| v.loss)));
    let (lo, hi) = value_range(values).context("no finite loss to plot")?;
    let first = epochs.first().map_or(1, |e| e.epoch);
    let last = epochs.last().map_or(1, |e| e.epoch).max(first + 1);
    let root = BitMapBackend::with_buffer(buffer, (WIDTH, HEIGHT)).into_drawing_area();
    let failed = |e: &dyn std::fmt::Display| anyhow!("drawing the loss curve: {e}");
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("loss per epoch", (FONT_NAME, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(first as f64..last as f64, lo..hi)
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels((last - first + 1).min(10))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("loss")
        .label_style((FONT_NAME, 14))
        .draw()
        .map_err(|e| failed(&e))?;
    let train = epochs.iter().map(|e| (e.epoch as f64, e.train.loss));
    chart
        .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))
        .map_err(|e| failed(&e))?
        .label("train")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let valid: Vec<(f64, f64)> = epochs
        .iter()
        .filter_map(|e| e.valid.as_ref().map(|v| (e.epoch as f64, v.loss)))
        .collect();
    if !valid.is_empty() {
        chart
            .draw_series(LineSeries::new(valid, RED.stroke_width(2)))
            .map_err(|e| failed(&e))?
            .label("valid")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font((FONT_NAME, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(&e))?;
    root.present().map_err(|e| failed(&e))
}

/// Writes `<dir>/loss_curve.png` (through a temporary file renamed into place).
pub fn write(dir: &Path, epochs: &[EpochLog]) -> anyhow::Result<()> {
    register_font()?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(epochs, &mut pixels)?;
    let raster = Raster {
        width: WIDTH as usize,
        height: HEIGHT as usize,
        channels: 3,
        pixels,
    };
    write_png(&dir.join("loss_curve.png"), &raster, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxreg::engine::SplitLog;

    fn epoch(epoch: usize, loss: f64, valid: Option<f64>) -> EpochLog {
        EpochLog {
            epoch,
            train: SplitLog {
                loss,
                ..SplitLog::default()
            },
            valid: valid.map(|loss| SplitLog {
                loss,
                ..SplitLog::default()
            }),
        }
    }

    #[test]
    fn ranges_are_padded_and_skip_non_finite_values() {
        assert_eq!(
            value_range([1.0, 3.0, f64::NAN].into_iter()),
            Some((0.9, 3.1))
        );
        assert_eq!(value_range([2.0].into_iter()), Some((1.5, 2.5)));
        assert_eq!(value_range([f64::INFINITY].into_iter()), None);
    }

    #[test]
    fn the_curve_is_a_png_with_both_lines() {
        let dir = tempfile::tempdir().unwrap();
        let epochs = [
            epoch(1, 1.0, Some(1.2)),
            epoch(2, 0.5, Some(0.8)),
            epoch(3, 0.25, None),
        ];
        write(dir.path(), &epochs).unwrap();
        let bytes = std::fs::read(dir.path().join("loss_curve.png")).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        let count = |rgb: [u8; 3]| pixels.chunks(3).filter(|p| *p == rgb).count();
        assert!(count([0, 0, 255]) > 100, "the blue train line is drawn");
        assert!(count([255, 0, 0]) > 100, "the red valid line is drawn");
        assert!(count([0, 0, 0]) > 100, "text and axes are drawn");
    }

    #[test]
    fn a_run_without_finite_losses_has_no_curve() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write(dir.path(), &[epoch(1, f64::NAN, None)]).is_err());
        assert!(!dir.path().join("loss_curve.png").exists());
    }
}
