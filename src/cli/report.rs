//! Printing and writing evaluation results.

use std::path::Path;

use anyhow::Context;
use voxreg::component::Split;
use voxreg::engine::Evaluation;

/// Prints each metric's mean before → after registration.
pub fn print_improvement(split: Split, evaluation: &Evaluation) {
    println!(
        "{} split, {} samples: before registration → after",
        split.as_str(),
        evaluation.pairs.len()
    );
    let row = |name: &str, before: Option<f64>, after: Option<f64>| {
        if let (Some(before), Some(after)) = (before, after) {
            println!("  {name:<22} {before:>10.4} → {after:.4}");
        }
    };
    row(
        "label Dice (mean)",
        evaluation.mean(|p| p.before.label_dice),
        evaluation.mean(|p| p.after.label_dice),
    );
    row(
        "label TRE, mm (mean)",
        evaluation.mean(|p| p.before.label_tre_mm),
        evaluation.mean(|p| p.after.label_tre_mm),
    );
    row(
        "image SSD (mean)",
        evaluation.mean(|p| Some(p.before.image_ssd)),
        evaluation.mean(|p| Some(p.after.image_ssd)),
    );
    if let Some(folding) =
        evaluation.mean(|p| p.jacobian.as_ref().map(|j| 100.0 * j.folding_fraction))
    {
        println!(
            "  {:<22} {:>10} → {folding:.3} % of voxels",
            "folding (det J ≤ 0)", "0 %"
        );
    }
}

/// Writes one row per sample to `path` (CSV, atomically): DeepReg's columns `image_ssd`,
/// `label_binary_dice`, `label_tre` (mm), `pair_index`, `label_index`, the same metrics
/// before registration, and the Jacobian determinant statistics.
pub fn write_metrics_csv(path: &Path, evaluation: &Evaluation) -> anyhow::Result<()> {
    let optional = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    let mut csv = String::from(
        "pair_index,moving,fixed,label_index,image_ssd,label_binary_dice,label_tre,image_ssd_before,label_binary_dice_before,label_tre_before,jacobian_folding_count,jacobian_folding_fraction,jacobian_std\n",
    );
    for (index, pair) in evaluation.pairs.iter().enumerate() {
        let jacobian = pair.jacobian.as_ref();
        csv.push_str(&format!(
            "{index},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            pair.ids.0,
            pair.ids.1,
            pair.label.map(|l| l as i64).unwrap_or(-1),
            pair.after.image_ssd,
            optional(pair.after.label_dice),
            optional(pair.after.label_tre_mm),
            pair.before.image_ssd,
            optional(pair.before.label_dice),
            optional(pair.before.label_tre_mm),
            jacobian
                .map(|j| j.folding_count.to_string())
                .unwrap_or_default(),
            optional(jacobian.map(|j| j.folding_fraction)),
            optional(jacobian.map(|j| j.std)),
        ));
    }
    let temporary = path.with_extension("csv.partial");
    std::fs::write(&temporary, csv).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
