//! Printing and writing evaluation results.

use std::path::Path;

use voxreg::component::{SampleRef, Split};
use voxreg::engine::{EvaluatedPair, Evaluation};

use super::atomic::write_text;
use super::stdout::say;

/// Prints each metric's mean before → after registration.
pub fn print_improvement(split: Split, evaluation: &Evaluation) -> std::io::Result<()> {
    say!(
        "{} split, {} samples: before registration → after",
        split.as_str(),
        evaluation.pairs.len()
    )?;
    let row = |name: &str, before: Option<f64>, after: Option<f64>| -> std::io::Result<()> {
        if let (Some(before), Some(after)) = (before, after) {
            say!("  {name:<22} {before:>10.4} → {after:.4}")?;
        }
        Ok(())
    };
    row(
        "label Dice (mean)",
        evaluation.mean(|p| p.before.label_dice),
        evaluation.mean(|p| p.after.label_dice),
    )?;
    row(
        "label IoU (mean)",
        evaluation.mean(|p| p.before.label_iou),
        evaluation.mean(|p| p.after.label_iou),
    )?;
    row(
        "label TRE, mm (mean)",
        evaluation.mean(|p| p.before.label_tre_mm),
        evaluation.mean(|p| p.after.label_tre_mm),
    )?;
    row(
        "field error, vx (mean)",
        evaluation.mean(|p| p.before.field_error),
        evaluation.mean(|p| p.after.field_error),
    )?;
    row(
        "field error, vx (median)",
        median(evaluation, |p| p.before.field_error),
        median(evaluation, |p| p.after.field_error),
    )?;
    if let Some(angle) = evaluation.mean(|p| p.after.angular_error) {
        // The identity has no direction: only the registered side has an angle.
        say!("  {:<22} {:>10} → {angle:.2}", "field angle error, deg", "")?;
    }
    row(
        "inverse field error, vx",
        evaluation.mean(|p| p.before.inverse_field_error),
        evaluation.mean(|p| p.after.inverse_field_error),
    )?;
    row(
        "image SSD (mean)",
        evaluation.mean(|p| Some(p.before.image_ssd)),
        evaluation.mean(|p| Some(p.after.image_ssd)),
    )?;
    if let Some(folding) =
        evaluation.mean(|p| p.jacobian.as_ref().map(|j| 100.0 * j.folding_fraction))
    {
        say!(
            "  {:<22} {:>10} → {folding:.3} % of voxels",
            "folding (det J ≤ 0)",
            "0 %"
        )?;
    }
    Ok(())
}

/// The median of `metric` over the samples that have it.
fn median(evaluation: &Evaluation, metric: impl Fn(&EvaluatedPair) -> Option<f64>) -> Option<f64> {
    describe(evaluation.pairs.iter().filter_map(metric).collect()).map(|stats| stats[5])
}

/// Writes one row per sample to `path` (CSV, atomically). DeepReg's columns come first, in
/// its order and formats: `image_ssd`, `label_binary_dice`, `label_tre` (voxels of the fixed,
/// resized grid), `pair_index` (a Python list: `[3]` for a paired sample, `[1, 4]` for
/// moving and fixed indices), `label_index` (`-1` without labels). Then voxreg's own:
/// `label_tre_mm`, the image ids `moving` and `fixed`, the same metrics before
/// registration, and the Jacobian determinant statistics; when the data provide the true
/// field, `ddf_error` and `ddf_error_before` (mean end-point error in voxels) and
/// `ddf_angular_error` (mean angle to the true displacement, degrees), and with a
/// true inverse field and the `inverse` method, `inv_ddf_error` and `inv_ddf_error_before`;
/// for labelled data `label_iou` and `label_iou_before` (binary IoU), last.
pub fn write_metrics_csv(path: &Path, evaluation: &Evaluation) -> anyhow::Result<()> {
    write_text(path, &metrics_csv(evaluation)?)
}

/// DeepReg's `pair_index` as pandas writes a Python list: `[3]` or `[1, 4]`.
fn python_pair_index(reference: &SampleRef) -> String {
    if reference.moving == reference.fixed {
        format!("[{}]", reference.moving)
    } else {
        format!("[{}, {}]", reference.moving, reference.fixed)
    }
}

/// A float as pandas writes it (Python's `repr`): `4.0`, `0.25`, `1e-05`, `nan`.
pub fn python_float(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        // Rust writes `1e-5`, Python `1e-05`: at least two exponent digits, with a sign.
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(digits) => ('-', digits),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let text = format!("{value}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// A missing value as pandas writes it: an empty field.
fn optional(value: Option<f64>) -> String {
    value.map(python_float).unwrap_or_default()
}

/// The text of `metrics.csv`, written by a CSV writer so ids holding a comma, a quote or a
/// line break are quoted and every row keeps its columns.
fn metrics_csv(evaluation: &Evaluation) -> anyhow::Result<String> {
    let with_field = evaluation
        .pairs
        .iter()
        .any(|p| p.after.field_error.or(p.before.field_error).is_some());
    let mut csv = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        "image_ssd",
        "label_binary_dice",
        "label_tre",
        "pair_index",
        "label_index",
        "label_tre_mm",
        "moving",
        "fixed",
        "image_ssd_before",
        "label_binary_dice_before",
        "label_tre_before",
        "label_tre_mm_before",
        "jacobian_folding_count",
        "jacobian_folding_fraction",
        "jacobian_std",
    ];
    if with_field {
        header.extend(["ddf_error", "ddf_error_before", "ddf_angular_error"]);
    }
    let with_inverse = evaluation
        .pairs
        .iter()
        .any(|p| p.after.inverse_field_error.is_some());
    if with_inverse {
        header.extend(["inv_ddf_error", "inv_ddf_error_before"]);
    }
    let with_labels = evaluation.pairs.iter().any(|p| p.after.label_iou.is_some());
    if with_labels {
        header.extend(["label_iou", "label_iou_before"]);
    }
    csv.write_record(header)?;
    for pair in &evaluation.pairs {
        let jacobian = pair.jacobian.as_ref();
        let mut row = vec![
            python_float(pair.after.image_ssd),
            optional(pair.after.label_dice),
            optional(pair.after.label_tre),
            python_pair_index(&pair.reference),
            pair.label.map(|l| l as i64).unwrap_or(-1).to_string(),
            optional(pair.after.label_tre_mm),
            pair.ids.0.to_string(),
            pair.ids.1.to_string(),
            python_float(pair.before.image_ssd),
            optional(pair.before.label_dice),
            optional(pair.before.label_tre),
            optional(pair.before.label_tre_mm),
            jacobian
                .map(|j| j.folding_count.to_string())
                .unwrap_or_default(),
            optional(jacobian.map(|j| j.folding_fraction)),
            optional(jacobian.map(|j| j.std)),
        ];
        if with_field {
            row.extend([
                optional(pair.after.field_error),
                optional(pair.before.field_error),
                optional(pair.after.angular_error),
            ]);
        }
        if with_inverse {
            row.extend([
                optional(pair.after.inverse_field_error),
                optional(pair.before.inverse_field_error),
            ]);
        }
        if with_labels {
            row.extend([
                optional(pair.after.label_iou),
                optional(pair.before.label_iou),
            ]);
        }
        csv.write_record(row)?;
    }
    let bytes = csv
        .into_inner()
        .map_err(|e| anyhow::anyhow!("{}", e.error()))?;
    Ok(String::from_utf8(bytes)?)
}

/// The metrics DeepReg summarises, with how to read each from a sample.
type Metric = (&'static str, fn(&EvaluatedPair) -> Option<f64>);

const METRICS: [Metric; 3] = [
    ("image_ssd", |p| Some(p.after.image_ssd)),
    ("label_binary_dice", |p| p.after.label_dice),
    ("label_tre", |p| p.after.label_tre),
];

/// Sample statistics as pandas computes them: std with ddof 1, quantiles by linear
/// interpolation.
fn describe(mut values: Vec<f64>) -> Option<[f64; 8]> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        f64::NAN
    };
    let quantile = |q: f64| {
        let position = q * (n - 1.0);
        let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
        values[lo] + (values[hi] - values[lo]) * (position - lo as f64)
    };
    Some([
        n,
        mean,
        std,
        values[0],
        quantile(0.25),
        quantile(0.5),
        quantile(0.75),
        values[values.len() - 1],
    ])
}

/// Writes DeepReg's summaries beside `metrics.csv` as pandas writes them:
/// `metrics_stats_per_label.csv` (indexed by `label_index`; the mean, median and std of
/// each metric, columns sorted by name) and `metrics_stats_overall.csv` (`describe()`: an
/// empty first header cell, rows count, mean, std, min, 25%, 50%, 75%, max, floats
/// throughout, an empty field for NaN).
pub fn write_stats_csvs(dir: &Path, evaluation: &Evaluation) -> anyhow::Result<()> {
    let mut labels: Vec<i64> = evaluation
        .pairs
        .iter()
        .map(|p| p.label.map(|l| l as i64).unwrap_or(-1))
        .collect();
    labels.sort_unstable();
    labels.dedup();
    let mut per_label = String::from("label_index");
    for (name, _) in METRICS {
        per_label.push_str(&format!(",{name}_mean,{name}_median,{name}_std"));
    }
    let cell = |value: f64| {
        if value.is_nan() {
            String::new()
        } else {
            python_float(value)
        }
    };
    per_label.push('\n');
    for label in labels {
        per_label.push_str(&label.to_string());
        for (_, read) in METRICS {
            let values: Vec<f64> = evaluation
                .pairs
                .iter()
                .filter(|p| p.label.map(|l| l as i64).unwrap_or(-1) == label)
                .filter_map(read)
                .collect();
            match describe(values) {
                Some(stats) => per_label.push_str(&format!(
                    ",{},{},{}",
                    cell(stats[1]),
                    cell(stats[5]),
                    cell(stats[2])
                )),
                None => per_label.push_str(",,,"),
            }
        }
        per_label.push('\n');
    }
    write_text(&dir.join("metrics_stats_per_label.csv"), &per_label)?;
    let mut overall = String::new();
    for (name, _) in METRICS {
        overall.push_str(&format!(",{name}"));
    }
    overall.push('\n');
    let stats: Vec<Option<[f64; 8]>> = METRICS
        .iter()
        .map(|(_, read)| describe(evaluation.pairs.iter().filter_map(read).collect()))
        .collect();
    for (row, name) in ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
        .iter()
        .enumerate()
    {
        overall.push_str(name);
        for column in &stats {
            match column {
                Some(values) => overall.push_str(&format!(",{}", cell(values[row]))),
                // pandas counts 0 values in a column of NaN and leaves the rest empty.
                None if row == 0 => overall.push_str(",0.0"),
                None => overall.push(','),
            }
        }
        overall.push('\n');
    }
    write_text(&dir.join("metrics_stats_overall.csv"), &overall)
}

#[cfg(test)]
mod tests {
    use super::{describe, metrics_csv, python_float};
    use voxreg::component::{ImageId, SampleRef};
    use voxreg::engine::{EvaluatedPair, Evaluation, PairMetrics};

    #[test]
    fn ids_with_commas_quotes_and_line_breaks_keep_their_row() {
        let id = |name: &str| ImageId {
            group: None,
            name: name.to_owned(),
        };
        let metrics = PairMetrics {
            image_ssd: 0.5,
            label_dice: None,
            label_iou: None,
            label_tre: None,
            label_tre_mm: None,
            field_error: None,
            inverse_field_error: None,
            angular_error: None,
        };
        let evaluation = Evaluation {
            pairs: vec![EvaluatedPair {
                reference: SampleRef {
                    moving: 0,
                    fixed: 0,
                    label: None,
                },
                ids: (id("a,b"), id("say \"hi\"\nthere")),
                label: None,
                before: metrics.clone(),
                after: metrics,
                jacobian: None,
                jacobians: Vec::new(),
            }],
        };
        let text = metrics_csv(&evaluation).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1, "{text}");
        assert_eq!(rows[0].len(), 15, "{text}");
        assert_eq!(&rows[0][0], "0.5");
        assert_eq!(&rows[0][3], "[0]");
        assert_eq!(&rows[0][4], "-1");
        assert_eq!(&rows[0][6], "a,b");
        assert_eq!(&rows[0][7], "say \"hi\"\nthere");
        assert!(text.starts_with(
            "image_ssd,label_binary_dice,label_tre,pair_index,label_index,label_tre_mm,"
        ));
    }

    #[test]
    fn floats_are_written_as_python_does() {
        assert_eq!(python_float(4.0), "4.0");
        assert_eq!(python_float(0.25), "0.25");
        assert_eq!(python_float(-3.0), "-3.0");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(1.5e20), "1.5e+20");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(f64::NAN), "nan");
    }

    #[test]
    fn describes_like_pandas() {
        let stats = describe(vec![4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(stats[0], 4.0);
        assert_eq!(stats[1], 2.5);
        assert!((stats[2] - 1.2909944487358056).abs() < 1e-12);
        assert_eq!(
            [stats[3], stats[4], stats[5], stats[6], stats[7]],
            [1.0, 1.75, 2.5, 3.25, 4.0]
        );
        assert!(describe(Vec::new()).is_none());
        assert!(describe(vec![1.0]).unwrap()[2].is_nan());
    }
}
