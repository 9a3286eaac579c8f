//! The run folder's `loss_curve.png`: the mean training loss and the validation loss of each
//! epoch.

use std::path::Path;

use voxreg::engine::EpochLog;

use super::line_chart::{self, Chart, Series};

/// Writes `<dir>/loss_curve.png` (through a temporary file renamed into place).
pub fn write(dir: &Path, epochs: &[EpochLog]) -> anyhow::Result<()> {
    let train = epochs
        .iter()
        .map(|e| (e.epoch as f64, e.train.loss))
        .collect();
    let valid: Vec<(f64, f64)> = epochs
        .iter()
        .filter_map(|e| e.valid.as_ref().map(|v| (e.epoch as f64, v.loss)))
        .collect();
    let mut series = vec![Series {
        label: "train".to_owned(),
        points: train,
    }];
    if !valid.is_empty() {
        series.push(Series {
            label: "valid".to_owned(),
            points: valid,
        });
    }
    let chart = Chart {
        title: "loss per epoch",
        x_desc: "epoch",
        y_desc: "loss",
        x_decimals: 0,
        series,
    };
    line_chart::write(&dir.join("loss_curve.png"), &chart)
}

#[cfg(test)]
mod tests {
    use super::*;
    use line_chart::{HEIGHT, WIDTH};
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
