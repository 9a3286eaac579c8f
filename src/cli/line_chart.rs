//! Line charts as PNG files, drawn with plotters: the run folder's loss curve and the
//! hyperparameter sweep's plots.

use std::path::Path;

use anyhow::{anyhow, Context};
use plotters::prelude::*;

use super::image_files::write_png;
use super::raster::Raster;

/// The font of the axis labels: DejaVu Sans reduced to ASCII (assets/fonts/LICENSE).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-ascii.ttf");
const FONT_NAME: &str = "voxreg-sans";
/// The chart's size in pixels.
pub const WIDTH: u32 = 800;
/// The chart's height in pixels.
pub const HEIGHT: u32 = 480;
/// Line colours, in series order (cycled).
const COLOURS: [RGBColor; 6] = [
    BLUE,
    RED,
    RGBColor(0, 150, 0),
    RGBColor(230, 140, 0),
    MAGENTA,
    RGBColor(0, 160, 160),
];

/// One line of a chart.
pub struct Series {
    /// The legend entry.
    pub label: String,
    /// The points, in x order; non-finite values are skipped.
    pub points: Vec<(f64, f64)>,
}

/// A chart: a title, axis names, the x labels' format and its lines.
pub struct Chart<'a> {
    /// The caption above the plot.
    pub title: &'a str,
    /// The x axis's name.
    pub x_desc: &'a str,
    /// The y axis's name.
    pub y_desc: &'a str,
    /// Decimals of the x labels (0 for epochs).
    pub x_decimals: usize,
    /// The lines.
    pub series: Vec<Series>,
}

/// Registers the font once per process.
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT).is_ok());
    ok.then_some(())
        .ok_or_else(|| anyhow!("the bundled plot font cannot be read"))
}

/// The range covering every finite value, padded by 5 % (a single value gets a unit-wide
/// range).
pub fn value_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
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

fn finite(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> + '_ {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// Draws the chart onto `area` (a whole image or one panel of it).
fn draw_on<DB: DrawingBackend>(
    chart: &Chart<'_>,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> anyhow::Result<()> {
    let all = || chart.series.iter().flat_map(|s| finite(&s.points));
    let (y_lo, y_hi) = value_range(all().map(|(_, y)| y)).context("no finite value to plot")?;
    let (x_lo, x_hi) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (x, _)| {
        (lo.min(x), hi.max(x))
    });
    // A single epoch gets a unit-wide x range around it, so its point is drawn inside.
    let (x_lo, x_hi) = if x_hi > x_lo {
        (x_lo, x_hi)
    } else {
        (x_lo - 0.5, x_lo + 0.5)
    };
    let failed = |e: &dyn std::fmt::Display| anyhow!("drawing `{}`: {e}", chart.title);
    area.fill(&WHITE).map_err(|e| failed(&e))?;
    let mut plot = ChartBuilder::on(area)
        .caption(chart.title, (FONT_NAME, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
        .map_err(|e| failed(&e))?;
    let decimals = chart.x_decimals;
    // Whole-number axes (epochs) get one label per whole number, up to ten.
    let x_labels = if decimals == 0 {
        ((x_hi - x_lo).floor() as usize + 1).clamp(2, 10)
    } else {
        10
    };
    plot.configure_mesh()
        .x_desc(chart.x_desc)
        .x_labels(x_labels)
        .x_label_formatter(&|x| format!("{x:.decimals$}"))
        .y_desc(chart.y_desc)
        .label_style((FONT_NAME, 14))
        .draw()
        .map_err(|e| failed(&e))?;
    for (series, colour) in chart.series.iter().zip(COLOURS.iter().cycle()) {
        let points: Vec<(f64, f64)> = finite(&series.points).collect();
        if points.is_empty() {
            continue;
        }
        let style = colour.stroke_width(2);
        plot.draw_series(
            points
                .iter()
                .map(|&point| Circle::new(point, 3, colour.filled())),
        )
        .map_err(|e| failed(&e))?;
        plot.draw_series(LineSeries::new(points, style))
            .map_err(|e| failed(&e))?
            .label(series.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    plot.configure_series_labels()
        .label_font((FONT_NAME, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(&e))?;
    Ok(())
}

/// Writes the chart as a PNG at `path` (through a temporary file renamed into place).
pub fn write(path: &Path, chart: &Chart<'_>) -> anyhow::Result<()> {
    write_panels(path, std::slice::from_ref(chart), HEIGHT)
}

/// Writes the charts stacked top to bottom, each `panel_height` pixels high and [`WIDTH`]
/// wide, as one PNG at `path` (through a temporary file renamed into place).
pub fn write_panels(path: &Path, charts: &[Chart<'_>], panel_height: u32) -> anyhow::Result<()> {
    register_font()?;
    let height = panel_height * charts.len().max(1) as u32;
    let mut pixels = vec![0u8; (WIDTH * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, height)).into_drawing_area();
        let panels = root.split_evenly((charts.len().max(1), 1));
        for (chart, panel) in charts.iter().zip(&panels) {
            draw_on(chart, panel)?;
        }
        root.present()
            .map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    }
    let raster = Raster {
        width: WIDTH as usize,
        height: height as usize,
        channels: 3,
        pixels,
    };
    write_png(path, &raster, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_padded_and_skip_non_finite_values() {
        assert_eq!(
            value_range([1.0, 3.0, f64::NAN].into_iter()),
            Some((0.9, 3.1))
        );
        assert_eq!(value_range([2.0].into_iter()), Some((1.5, 2.5)));
        assert_eq!(value_range([f64::INFINITY].into_iter()), None);
    }
}
