//! Collapse detection: a warped moving image that is constant, or a transform that samples
//! mostly outside the moving image, leaves an image similarity without gradient (a constant
//! image has zero NCC and zero NCC gradient; zero padding has zero coordinate gradient), so
//! training cannot leave that state and its loss stays flat. Both are measured per sample,
//! logged per epoch, and reported once per epoch as they happen, with epoch and step.

/// Metric name: the fraction of fixed voxels whose sampling point `p + ddf(p)` lies outside
/// the moving image.
pub(crate) const OUT_OF_VIEW: &str = "out_of_view_fraction";

/// Metric name: the fraction of samples whose warped moving image is constant.
pub(crate) const CONSTANT_WARPED: &str = "constant_warped_fraction";

/// A batch mean of [`OUT_OF_VIEW`] above this is reported.
const MOSTLY_OUT_OF_VIEW: f64 = 0.5;

/// The fraction of the fixed grid's voxels `p` whose sampling point `p + ddf(p)` falls
/// outside `[0, n_a − 1]` on some axis `a` of the moving grid `moving`; `ddf` is
/// channel-first `(ndim, *fixed)` in C order. 0 for an empty or malformed field.
pub(crate) fn out_of_view_fraction(ddf: &[f32], fixed: &[usize], moving: &[usize]) -> f64 {
    let ndim = fixed.len();
    let voxels: usize = fixed.iter().product();
    if voxels == 0 || moving.len() != ndim || ddf.len() != ndim * voxels {
        return 0.0;
    }
    let strides: Vec<usize> = (0..ndim).map(|a| fixed[a + 1..].iter().product()).collect();
    let outside = (0..voxels)
        .filter(|&flat| {
            (0..ndim).any(|axis| {
                let index = (flat / strides[axis]) % fixed[axis];
                let q = index as f64 + f64::from(ddf[axis * voxels + flat]);
                !(0.0..=(moving[axis] as f64 - 1.0)).contains(&q)
            })
        })
        .count();
    outside as f64 / voxels as f64
}

/// Whether every value of `image` lies within 1e-6 of the others (images are normalised to
/// [0, 1], so this is flat to well below one grey level).
pub(crate) fn is_constant(image: &[f32]) -> bool {
    let (lo, hi) = image
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    hi - lo <= 1e-6
}

/// Reports collapse at most once per epoch and kind, as `tracing` warnings.
#[derive(Debug, Default)]
pub(crate) struct CollapseWatch {
    /// The current batch's per-sample out-of-view fractions.
    out_of_view: Vec<f64>,
    /// The current batch's per-sample "warped image is constant".
    constant: Vec<bool>,
    reported_constant: Option<usize>,
    reported_out_of_view: Option<usize>,
}

impl CollapseWatch {
    /// Records one sample's metric, if it is one of the collapse metrics.
    pub(crate) fn record(&mut self, name: &str, value: f64) {
        match name {
            OUT_OF_VIEW => self.out_of_view.push(value),
            CONSTANT_WARPED => self.constant.push(value > 0.5),
            _ => {}
        }
    }

    /// Checks the batch recorded since the last call and reports what collapsed; returns
    /// the messages it reported.
    pub(crate) fn finish_step(&mut self, epoch: usize, step: usize) -> Vec<String> {
        let out_of_view = std::mem::take(&mut self.out_of_view);
        let constant = std::mem::take(&mut self.constant);
        let mut reports = Vec::new();
        let flat = constant.iter().filter(|c| **c).count();
        if flat > 0 && self.reported_constant != Some(epoch) {
            self.reported_constant = Some(epoch);
            reports.push(format!(
                "epoch {epoch}, step {step}: the warped moving image is constant in {flat} of {} samples; an image similarity then has no gradient, so training cannot leave this state (the transform collapsed or left the image: lower the learning rate, bound the affine head, mask the similarity with `mask: field_of_view`)",
                constant.len()
            ));
        }
        if !out_of_view.is_empty() && self.reported_out_of_view != Some(epoch) {
            let mean = out_of_view.iter().sum::<f64>() / out_of_view.len() as f64;
            if mean > MOSTLY_OUT_OF_VIEW {
                self.reported_out_of_view = Some(epoch);
                reports.push(format!(
                    "epoch {epoch}, step {step}: {:.0} % of the sampling points fall outside the moving image (batch mean); the zero padding there has no gradient",
                    100.0 * mean
                ));
            }
        }
        for report in &reports {
            tracing::warn!("{report}");
        }
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_points_outside_the_moving_grid_are_counted() {
        // A 2 × 2 fixed grid on a 2 × 2 moving grid: shifting axis 1 by +1 moves column 1
        // out (2 of 4 voxels); by 0.5 nothing leaves [0, 1] on column 0 but column 1 does.
        let shift = |v: f32| [0.0, 0.0, 0.0, 0.0, v, v, v, v];
        assert_eq!(out_of_view_fraction(&shift(0.0), &[2, 2], &[2, 2]), 0.0);
        assert_eq!(out_of_view_fraction(&shift(1.0), &[2, 2], &[2, 2]), 0.5);
        assert_eq!(out_of_view_fraction(&shift(0.5), &[2, 2], &[2, 2]), 0.5);
        assert_eq!(out_of_view_fraction(&shift(-3.0), &[2, 2], &[2, 2]), 1.0);
        assert_eq!(out_of_view_fraction(&shift(1.0), &[2, 2], &[2, 3]), 0.0);
        assert_eq!(out_of_view_fraction(&[0.0; 3], &[2, 2], &[2, 2]), 0.0);
    }

    #[test]
    fn a_flat_image_is_constant() {
        assert!(is_constant(&[0.25; 9]));
        assert!(!is_constant(&[0.25, 0.25, 0.26]));
    }

    #[test]
    fn collapse_is_reported_once_per_epoch_with_its_step() {
        let mut watch = CollapseWatch::default();
        for _ in 0..2 {
            watch.record(OUT_OF_VIEW, 0.9);
            watch.record(CONSTANT_WARPED, 1.0);
        }
        let reports = watch.finish_step(3, 7);
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert!(reports[0]
            .starts_with("epoch 3, step 7: the warped moving image is constant in 2 of 2"));
        assert!(
            reports[1].contains("90 % of the sampling points"),
            "{}",
            reports[1]
        );
        watch.record(OUT_OF_VIEW, 0.9);
        watch.record(CONSTANT_WARPED, 1.0);
        assert!(watch.finish_step(3, 8).is_empty(), "once per epoch");
        watch.record(OUT_OF_VIEW, 0.9);
        watch.record(CONSTANT_WARPED, 1.0);
        assert_eq!(watch.finish_step(4, 1).len(), 2, "again the next epoch");
        watch.record(OUT_OF_VIEW, 0.1);
        watch.record(CONSTANT_WARPED, 0.0);
        assert!(watch.finish_step(5, 1).is_empty(), "a healthy batch");
    }
}
