//! Test-time hyperparameters: `--hyper lambda=0.3` and `--hyper-sweep lambda=0:1:11`, and
//! the sweep's tables (metrics per value, and the value that maximises each label's Dice).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use voxreg::engine::Evaluation;

use super::atomic::write_text;
use super::line_chart::{self, Chart, Series};

/// `name=value`.
pub fn parse_setting(text: &str) -> anyhow::Result<(String, f64)> {
    let Some((name, value)) = text.split_once('=') else {
        bail!("--hyper `{text}`: write it as NAME=VALUE, e.g. lambda=0.3");
    };
    let number: f64 = value
        .trim()
        .parse()
        .with_context(|| format!("--hyper `{text}`: `{value}` is not a number"))?;
    if !number.is_finite() {
        bail!("--hyper `{text}`: the value must be finite");
    }
    Ok((name.trim().to_owned(), number))
}

/// A sweep: `count` values evenly spaced from `start` to `end`, both included.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// The hyperparameter.
    pub name: String,
    /// The values, in order.
    pub values: Vec<f64>,
}

/// The most values one sweep may evaluate (each evaluates the whole split).
const MAX_SWEEP_VALUES: usize = 1001;

/// `name=start:end:count`, as `numpy.linspace(start, end, count)`.
pub fn parse_sweep(text: &str) -> anyhow::Result<Sweep> {
    let usage = "write it as NAME=START:END:COUNT, e.g. lambda=0:1:11";
    let Some((name, range)) = text.split_once('=') else {
        bail!("sweep `{text}`: {usage}");
    };
    let parts: Vec<&str> = range.split(':').collect();
    let [start, end, count] = parts.as_slice() else {
        bail!("sweep `{text}`: {usage}");
    };
    let number = |s: &str| -> anyhow::Result<f64> {
        let v: f64 = s
            .trim()
            .parse()
            .with_context(|| format!("sweep `{text}`: `{s}` is not a number"))?;
        if !v.is_finite() {
            bail!("sweep `{text}`: `{s}` is not finite");
        }
        Ok(v)
    };
    let (start, end) = (number(start)?, number(end)?);
    let count: usize = count
        .trim()
        .parse()
        .with_context(|| format!("sweep `{text}`: `{count}` is not a count"))?;
    if count == 0 || count > MAX_SWEEP_VALUES {
        bail!("sweep `{text}`: the count must be 1 to {MAX_SWEEP_VALUES}");
    }
    let values = if count == 1 {
        vec![start]
    } else {
        let step = (end - start) / (count - 1) as f64;
        (0..count)
            .map(|i| {
                if i + 1 == count {
                    end
                } else {
                    start + step * i as f64
                }
            })
            .collect()
    };
    Ok(Sweep {
        name: name.trim().to_owned(),
        values,
    })
}

/// The folder name of one swept value: `lambda_0.300`.
pub fn value_folder(name: &str, value: f64) -> String {
    format!("{name}_{value:.3}")
}

/// The means of one value's evaluation, per label and over all samples.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRow {
    /// The swept value.
    pub value: f64,
    /// `None` for the row over every label.
    pub label: Option<usize>,
    /// Mean Dice after registration, for labelled data.
    pub dice: Option<f64>,
    /// Mean image SSD after registration.
    pub image_ssd: f64,
    /// Mean folding fraction of the predicted DDF.
    pub folding_fraction: Option<f64>,
    /// Samples averaged.
    pub samples: usize,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let values: Vec<f64> = values.collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// One row per label (in index order) and one over every sample for `value`.
pub fn rows(value: f64, evaluation: &Evaluation) -> Vec<SweepRow> {
    let mut labels: BTreeMap<Option<usize>, Vec<&voxreg::engine::EvaluatedPair>> = BTreeMap::new();
    for pair in &evaluation.pairs {
        if pair.label.is_some() {
            labels.entry(pair.label).or_default().push(pair);
        }
    }
    labels.insert(None, evaluation.pairs.iter().collect());
    let row = |label: Option<usize>, pairs: &[&voxreg::engine::EvaluatedPair]| SweepRow {
        value,
        label,
        dice: mean(pairs.iter().filter_map(|p| p.after.label_dice)),
        image_ssd: mean(pairs.iter().map(|p| p.after.image_ssd)).unwrap_or(f64::NAN),
        folding_fraction: mean(
            pairs
                .iter()
                .filter_map(|p| p.jacobian.as_ref().map(|j| j.folding_fraction)),
        ),
        samples: pairs.len(),
    };
    let mut rows: Vec<SweepRow> = labels
        .iter()
        .filter(|(label, _)| label.is_some())
        .map(|(label, pairs)| row(*label, pairs))
        .collect();
    rows.push(row(None, &labels[&None]));
    rows
}

fn label_name(label: Option<usize>) -> String {
    label.map_or_else(|| "all".to_owned(), |l| l.to_string())
}

fn optional(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.6}")).unwrap_or_default()
}

/// Writes `sweep.csv` (one row per value and label: `<name>, label, dice, image_ssd,
/// folding_fraction, samples`) and `best.csv` (per label and over all: the value with the
/// highest mean Dice, the first on ties) into `dir`, and returns the best rows.
pub fn write_tables(dir: &Path, name: &str, rows: &[SweepRow]) -> anyhow::Result<Vec<SweepRow>> {
    let mut sweep = csv::Writer::from_writer(Vec::new());
    sweep.write_record([
        name,
        "label",
        "dice",
        "image_ssd",
        "folding_fraction",
        "samples",
    ])?;
    for row in rows {
        sweep.write_record([
            format!("{:.6}", row.value),
            label_name(row.label),
            optional(row.dice),
            format!("{:.6}", row.image_ssd),
            optional(row.folding_fraction),
            row.samples.to_string(),
        ])?;
    }
    write_text(
        &dir.join("sweep.csv"),
        &String::from_utf8(sweep.into_inner()?)?,
    )?;
    let mut best: BTreeMap<Option<usize>, SweepRow> = BTreeMap::new();
    for row in rows {
        let Some(dice) = row.dice else { continue };
        let better = best
            .get(&row.label)
            .is_none_or(|b| b.dice.is_some_and(|d| dice > d));
        if better {
            best.insert(row.label, row.clone());
        }
    }
    let mut ordered: Vec<SweepRow> = best
        .iter()
        .filter(|(l, _)| l.is_some())
        .map(|(_, r)| r.clone())
        .collect();
    ordered.extend(best.get(&None).cloned());
    let mut table = csv::Writer::from_writer(Vec::new());
    table.write_record(["label", name, "dice"])?;
    for row in &ordered {
        table.write_record([
            label_name(row.label),
            format!("{:.6}", row.value),
            optional(row.dice),
        ])?;
    }
    write_text(
        &dir.join("best.csv"),
        &String::from_utf8(table.into_inner()?)?,
    )?;
    Ok(ordered)
}

/// Writes `dice_vs_<name>.png` (mean Dice against the value, one line per label and one
/// over all, for labelled data) and `folding_vs_<name>.png` (the mean percentage of voxels
/// with det J ≤ 0) into `dir`; returns the files written.
pub fn write_plots(dir: &Path, name: &str, rows: &[SweepRow]) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut labels: BTreeMap<Option<usize>, Vec<(f64, f64)>> = BTreeMap::new();
    for row in rows {
        if let Some(dice) = row.dice {
            labels.entry(row.label).or_default().push((row.value, dice));
        }
    }
    if !labels.is_empty() {
        let series = labels
            .into_iter()
            .map(|(label, points)| Series {
                label: label.map_or_else(|| "all labels".to_owned(), |l| format!("label {l}")),
                points,
            })
            .collect();
        let path = dir.join(format!("dice_vs_{name}.png"));
        let title = format!("mean Dice against {name}");
        line_chart::write(
            &path,
            &Chart {
                title: &title,
                x_desc: name,
                y_desc: "Dice",
                x_decimals: 2,
                series,
            },
        )?;
        written.push(path);
    }
    let folding: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.label.is_none())
        .filter_map(|r| r.folding_fraction.map(|f| (r.value, 100.0 * f)))
        .collect();
    if !folding.is_empty() {
        let path = dir.join(format!("folding_vs_{name}.png"));
        let title = format!("folding (det J <= 0) against {name}");
        line_chart::write(
            &path,
            &Chart {
                title: &title,
                x_desc: name,
                y_desc: "% of voxels",
                x_decimals: 2,
                series: vec![Series {
                    label: "all samples".to_owned(),
                    points: folding,
                }],
            },
        )?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_sweeps_parse_or_say_how_to_write_them() {
        assert_eq!(
            parse_setting("lambda=0.3").unwrap(),
            ("lambda".to_owned(), 0.3)
        );
        let error = parse_setting("lambda").unwrap_err().to_string();
        assert!(error.contains("NAME=VALUE"), "{error}");
        let error = parse_setting("lambda=x").unwrap_err().to_string();
        assert!(error.contains("`x` is not a number"), "{error}");
        let sweep = parse_sweep("lambda=0:1:5").unwrap();
        assert_eq!(sweep.name, "lambda");
        assert_eq!(sweep.values, [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(parse_sweep("g=0.2:0.2:1").unwrap().values, [0.2]);
        let error = parse_sweep("lambda=0:1").unwrap_err().to_string();
        assert!(error.contains("START:END:COUNT"), "{error}");
        let error = parse_sweep("lambda=0:1:0").unwrap_err().to_string();
        assert!(error.contains("the count must be"), "{error}");
        assert_eq!(value_folder("lambda", 0.25), "lambda_0.250");
    }

    #[test]
    fn the_best_value_per_label_is_the_highest_mean_dice() {
        let row = |value: f64, label: Option<usize>, dice: f64| SweepRow {
            value,
            label,
            dice: Some(dice),
            image_ssd: 0.1,
            folding_fraction: Some(0.0),
            samples: 2,
        };
        let rows = vec![
            row(0.0, Some(0), 0.5),
            row(0.0, Some(1), 0.7),
            row(0.0, None, 0.6),
            row(1.0, Some(0), 0.8),
            row(1.0, Some(1), 0.6),
            row(1.0, None, 0.7),
        ];
        let dir = tempfile::tempdir().unwrap();
        let best = write_tables(dir.path(), "lambda", &rows).unwrap();
        let picked: Vec<(Option<usize>, f64)> = best.iter().map(|r| (r.label, r.value)).collect();
        assert_eq!(picked, [(Some(0), 1.0), (Some(1), 0.0), (None, 1.0)]);
        let table = std::fs::read_to_string(dir.path().join("best.csv")).unwrap();
        assert_eq!(
            table,
            "label,lambda,dice\n0,1.000000,0.800000\n1,0.000000,0.700000\nall,1.000000,0.700000\n"
        );
        let sweep = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
        assert!(sweep.starts_with("lambda,label,dice,image_ssd,folding_fraction,samples\n"));
        assert_eq!(sweep.lines().count(), 7);
        let plots = write_plots(dir.path(), "lambda", &rows).unwrap();
        assert_eq!(
            plots,
            [
                dir.path().join("dice_vs_lambda.png"),
                dir.path().join("folding_vs_lambda.png")
            ]
        );
        for plot in plots {
            assert!(std::fs::read(plot).unwrap().starts_with(b"\x89PNG"));
        }
    }
}
