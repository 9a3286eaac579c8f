//! The run folder's `loss_curve.png`: per epoch, the weighted total loss (training and
//! validation), each loss term, and the label Dice and TRE when the data has labels, one
//! panel each; every epoch is a marked point, so a one-epoch run shows its values too.

use std::path::Path;

use voxreg::engine::{EpochLog, SplitLog};

use super::line_chart::{self, Chart, Series};

/// The height of one panel in pixels.
pub const PANEL_HEIGHT: u32 = 360;

/// The series `<prefix>train` / `<prefix>valid` of one value of the epoch logs.
fn train_and_valid(
    epochs: &[EpochLog],
    prefix: &str,
    value: impl Fn(&SplitLog) -> Option<f64>,
) -> Vec<Series> {
    let train: Vec<(f64, f64)> = epochs
        .iter()
        .filter_map(|e| Some((e.epoch as f64, value(&e.train)?)))
        .collect();
    let valid: Vec<(f64, f64)> = epochs
        .iter()
        .filter_map(|e| Some((e.epoch as f64, value(e.valid.as_ref()?)?)))
        .collect();
    [
        (format!("{prefix}train"), train),
        (format!("{prefix}valid"), valid),
    ]
    .into_iter()
    .filter(|(_, points)| points.iter().any(|(_, y)| y.is_finite()))
    .map(|(label, points)| Series { label, points })
    .collect()
}

/// The value named `name` among a split's terms and metrics.
fn named(log: &SplitLog, name: &str) -> Option<f64> {
    log.terms
        .iter()
        .chain(&log.metrics)
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
}

/// Writes `<dir>/loss_curve.png` (through a temporary file renamed into place).
pub fn write(dir: &Path, epochs: &[EpochLog]) -> anyhow::Result<()> {
    let chart = |title: &'static str, y_desc: &'static str, series: Vec<Series>| Chart {
        title,
        x_desc: "epoch",
        y_desc,
        x_decimals: 0,
        series,
    };
    let mut charts = vec![chart(
        "loss per epoch",
        "loss",
        train_and_valid(epochs, "", |log| Some(log.loss)),
    )];
    let terms: Vec<String> = epochs
        .first()
        .map(|e| e.train.terms.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    if terms.len() > 1 {
        let series = terms
            .iter()
            .flat_map(|term| train_and_valid(epochs, &format!("{term} "), |log| named(log, term)))
            .collect();
        charts.push(chart("loss terms (unweighted)", "term", series));
    }
    for (name, title, y_desc) in [
        ("label_binary_dice", "label Dice", "Dice"),
        ("label_tre_mm", "label TRE", "TRE (mm)"),
    ] {
        let series = train_and_valid(epochs, "", |log| named(log, name));
        if !series.is_empty() {
            charts.push(chart(title, y_desc, series));
        }
    }
    if charts[0].series.is_empty() {
        anyhow::bail!("no finite loss to plot");
    }
    line_chart::write_panels(&dir.join("loss_curve.png"), &charts, PANEL_HEIGHT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use line_chart::WIDTH;

    fn split(loss: f64, dice: Option<f64>) -> SplitLog {
        SplitLog {
            loss,
            terms: vec![
                ("image/lncc".to_owned(), loss * 0.7),
                ("label/dice".to_owned(), loss * 0.3),
            ],
            metrics: dice
                .map(|d| {
                    vec![
                        ("label_binary_dice".to_owned(), d),
                        ("label_tre_mm".to_owned(), 3.0 - d),
                    ]
                })
                .unwrap_or_default(),
        }
    }

    fn epoch(epoch: usize, loss: f64, valid: Option<f64>) -> EpochLog {
        EpochLog {
            epoch,
            train: split(loss, Some(0.5 + 0.1 * epoch as f64)),
            valid: valid.map(|loss| split(loss, Some(0.6))),
        }
    }

    /// The PNG's size and its RGB pixels.
    fn read(dir: &Path) -> ((u32, u32), Vec<u8>) {
        let bytes = std::fs::read(dir.join("loss_curve.png")).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        ((info.width, info.height), pixels)
    }

    fn count(pixels: &[u8], rgb: [u8; 3]) -> usize {
        pixels.chunks(3).filter(|p| *p == rgb).count()
    }

    #[test]
    fn the_curve_has_a_panel_for_the_loss_terms_dice_and_tre() {
        let dir = tempfile::tempdir().unwrap();
        let epochs = [
            epoch(1, 1.0, Some(1.2)),
            epoch(2, 0.5, Some(0.8)),
            epoch(3, 0.25, None),
        ];
        write(dir.path(), &epochs).unwrap();
        let (size, pixels) = read(dir.path());
        assert_eq!(size, (WIDTH, 4 * PANEL_HEIGHT), "loss, terms, Dice, TRE");
        assert!(
            count(&pixels, [0, 0, 255]) > 300,
            "the blue train lines are drawn"
        );
        assert!(
            count(&pixels, [255, 0, 0]) > 300,
            "the red valid lines are drawn"
        );
        assert!(count(&pixels, [0, 0, 0]) > 300, "text and axes are drawn");
    }

    #[test]
    fn one_epoch_is_drawn_as_points() {
        let dir = tempfile::tempdir().unwrap();
        let mut only = epoch(1, 1.0, None);
        only.train.metrics.clear();
        only.train.terms.truncate(1);
        write(dir.path(), &[only]).unwrap();
        let (size, pixels) = read(dir.path());
        assert_eq!(size, (WIDTH, PANEL_HEIGHT), "the loss panel alone");
        assert!(
            count(&pixels, [0, 0, 255]) >= 20,
            "the train point is drawn"
        );
    }

    #[test]
    fn a_run_without_finite_losses_has_no_curve() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write(dir.path(), &[epoch(1, f64::NAN, None)]).is_err());
        assert!(!dir.path().join("loss_curve.png").exists());
    }
}
