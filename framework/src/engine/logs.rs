//! Per-epoch logs: running means of the loss, each loss term and each metric over an epoch's
//! steps (or a validation pass), and their CSV files in the run folder.

use std::path::Path;

use super::run_dir::replace_file;
use super::EngineError;

/// The means over one split in one epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SplitLog {
    /// Mean weighted total loss.
    pub loss: f64,
    /// Mean of each loss term (unweighted), named `image/lncc`, `label/dice`, ….
    pub terms: Vec<(String, f64)>,
    /// Mean of each evaluation metric after registration: `image_ssd`, `label_binary_dice`,
    /// `label_tre`, `label_tre_mm`, `ddf_folding_fraction` (those the method and data have).
    pub metrics: Vec<(String, f64)>,
}

/// What one epoch did.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// Means over the epoch's training steps.
    pub train: SplitLog,
    /// Means over the validation split after the epoch, when the configuration has one.
    pub valid: Option<SplitLog>,
}

/// Sum and count of one named value.
#[derive(Clone, Debug, PartialEq)]
struct Running {
    name: String,
    sum: f64,
    count: usize,
}

/// Adds values under names, keeping first-seen order.
fn add(list: &mut Vec<Running>, name: &str, value: f64) {
    match list.iter_mut().find(|r| r.name == name) {
        Some(running) => {
            running.sum += value;
            running.count += 1;
        }
        None => list.push(Running {
            name: name.to_owned(),
            sum: value,
            count: 1,
        }),
    }
}

fn means(list: &[Running]) -> Vec<(String, f64)> {
    list.iter()
        .map(|r| (r.name.clone(), r.sum / r.count.max(1) as f64))
        .collect()
}

/// Running sums of a split's loss, terms and metrics; saved in mid-epoch checkpoints so a
/// resumed epoch's means cover all its steps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Accumulator {
    loss: Vec<Running>,
    terms: Vec<Running>,
    metrics: Vec<Running>,
}

const LOSS: &str = "loss";

impl Accumulator {
    /// Adds one step's (or sample's) total loss.
    pub fn add_loss(&mut self, value: f64) {
        add(&mut self.loss, LOSS, value);
    }

    /// Adds one value of a loss term.
    pub fn add_term(&mut self, name: &str, value: f64) {
        add(&mut self.terms, name, value);
    }

    /// Adds one value of a metric.
    pub fn add_metric(&mut self, name: &str, value: f64) {
        add(&mut self.metrics, name, value);
    }

    /// The means so far.
    pub fn means(&self) -> SplitLog {
        SplitLog {
            loss: means(&self.loss).first().map_or(0.0, |(_, v)| *v),
            terms: means(&self.terms),
            metrics: means(&self.metrics),
        }
    }

    /// `key=value` lines (`sum.<kind>.<name>=<sum>,<count>`) for a checkpoint's progress file;
    /// floats are written in Rust's shortest round-trip form, so reading them back is exact.
    pub fn to_lines(&self) -> String {
        let mut text = String::new();
        for (kind, list) in [
            ("loss", &self.loss),
            ("term", &self.terms),
            ("metric", &self.metrics),
        ] {
            for running in list {
                text.push_str(&format!(
                    "sum.{kind}.{}={:?},{}\n",
                    running.name, running.sum, running.count
                ));
            }
        }
        text
    }

    /// Reads the lines [`Accumulator::to_lines`] wrote (other lines are ignored). `None` if a
    /// `sum.` line is malformed.
    pub fn from_lines(text: &str) -> Option<Self> {
        let mut accumulator = Self::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("sum.") else {
                continue;
            };
            let (key, value) = rest.split_once('=')?;
            let (kind, name) = key.split_once('.')?;
            let (sum, count) = value.split_once(',')?;
            let running = Running {
                name: name.to_owned(),
                sum: sum.parse().ok()?,
                count: count.parse().ok()?,
            };
            match kind {
                "loss" => accumulator.loss.push(running),
                "term" => accumulator.terms.push(running),
                "metric" => accumulator.metrics.push(running),
                _ => return None,
            }
        }
        Some(accumulator)
    }
}

/// Rewrites `<dir>/<file>` with one row per epoch: `epoch`, `loss`, each term, each metric,
/// taking the columns from the first row that has the split (through a temporary file).
/// Nothing is written when no epoch has the split.
pub(super) fn write_csv(
    dir: &Path,
    file: &str,
    epochs: &[EpochLog],
    split: impl Fn(&EpochLog) -> Option<&SplitLog>,
) -> Result<(), EngineError> {
    let rows: Vec<(usize, &SplitLog)> = epochs
        .iter()
        .filter_map(|e| split(e).map(|s| (e.epoch, s)))
        .collect();
    let Some((_, first)) = rows.first() else {
        return Ok(());
    };
    let columns: Vec<&str> = first
        .terms
        .iter()
        .chain(&first.metrics)
        .map(|(n, _)| n.as_str())
        .collect();
    let csv_error = |e: csv::Error| EngineError::Io {
        path: dir.join(file),
        message: e.to_string(),
    };
    let mut csv = csv::Writer::from_writer(Vec::new());
    let header = ["epoch", "loss"].into_iter().chain(columns.iter().copied());
    csv.write_record(header).map_err(csv_error)?;
    for (epoch, log) in rows {
        let mut record = vec![epoch.to_string(), log.loss.to_string()];
        for column in &columns {
            let value = log
                .terms
                .iter()
                .chain(&log.metrics)
                .find(|(n, _)| n == column)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default();
            record.push(value);
        }
        csv.write_record(&record).map_err(csv_error)?;
    }
    let bytes = csv.into_inner().map_err(|e| EngineError::Io {
        path: dir.join(file),
        message: e.error().to_string(),
    })?;
    replace_file(dir, file, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_follow_first_seen_order() {
        let mut accumulator = Accumulator::default();
        accumulator.add_loss(1.0);
        accumulator.add_loss(2.0);
        accumulator.add_term("image/lncc", -0.5);
        accumulator.add_term("regularization/bending", 0.25);
        accumulator.add_term("image/lncc", -0.25);
        accumulator.add_metric("label_binary_dice", 0.5);
        let log = accumulator.means();
        assert_eq!(log.loss, 1.5);
        assert_eq!(
            log.terms,
            vec![
                ("image/lncc".to_owned(), -0.375),
                ("regularization/bending".to_owned(), 0.25)
            ]
        );
        assert_eq!(log.metrics, vec![("label_binary_dice".to_owned(), 0.5)]);
    }

    #[test]
    fn checkpoint_lines_round_trip_exactly() {
        let mut accumulator = Accumulator::default();
        accumulator.add_loss(0.1 + 0.2);
        accumulator.add_term("label/dice", 1.0 / 3.0);
        accumulator.add_metric("label_tre_mm", 2.5e-7);
        let text = format!("epoch=3\n{}", accumulator.to_lines());
        assert_eq!(Accumulator::from_lines(&text), Some(accumulator));
        assert_eq!(Accumulator::from_lines("sum.term.x=nope,1\n"), None);
        assert_eq!(Accumulator::from_lines("sum.other.x=1,1\n"), None);
    }

    #[test]
    fn csv_has_one_row_per_epoch_with_the_split() {
        let dir = tempfile::tempdir().unwrap();
        let log = |epoch, loss| EpochLog {
            epoch,
            train: SplitLog {
                loss,
                terms: vec![("image/ssd".to_owned(), loss)],
                metrics: vec![("image_ssd".to_owned(), 0.5)],
            },
            valid: (epoch == 2).then(SplitLog::default),
        };
        let epochs = [log(1, 1.0), log(2, 0.5)];
        write_csv(dir.path(), "train.csv", &epochs, |e| Some(&e.train)).unwrap();
        let text = std::fs::read_to_string(dir.path().join("train.csv")).unwrap();
        assert_eq!(
            text,
            "epoch,loss,image/ssd,image_ssd\n1,1,1,0.5\n2,0.5,0.5,0.5\n"
        );
        write_csv(dir.path(), "valid.csv", &epochs, |e| e.valid.as_ref()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("valid.csv")).unwrap();
        assert_eq!(text, "epoch,loss\n2,0\n");
        write_csv(dir.path(), "none.csv", &epochs[..1], |e| e.valid.as_ref()).unwrap();
        let odd = [EpochLog {
            epoch: 1,
            train: SplitLog {
                loss: 1.0,
                terms: vec![("plugin,\"term\"".to_owned(), 2.0)],
                metrics: Vec::new(),
            },
            valid: None,
        }];
        write_csv(dir.path(), "odd.csv", &odd, |e| Some(&e.train)).unwrap();
        let text = std::fs::read_to_string(dir.path().join("odd.csv")).unwrap();
        assert_eq!(text, "epoch,loss,\"plugin,\"\"term\"\"\"\n1,1,2\n");
        assert!(!dir.path().join("none.csv").exists());
    }
}
