//! Evaluation metrics for predictions (not training losses): binary Dice per label, centroid
//! distance (DeepReg's TRE) in voxels and millimetres, image SSD, and the Jacobian determinant
//! statistics of a DDF, and the distance of a DDF from the true one. All work on plain C-order
//! arrays, 2D or 3D.

/// DeepReg's ε, added to Dice's numerator and denominator.
const EPS: f64 = 1.0e-5;

/// Binary Dice of two label maps thresholded at 0.5: `(2|A∩B| + ε) / (|A| + |B| + ε)`
/// (1 when both are empty, as DeepReg's `DiceScore(binary=True)`).
pub fn binary_dice(fixed: &[f32], predicted: &[f32]) -> f64 {
    let (mut intersection, mut total) = (0usize, 0usize);
    for (&a, &b) in fixed.iter().zip(predicted) {
        let (a, b) = (a >= 0.5, b >= 0.5);
        intersection += usize::from(a && b);
        total += usize::from(a) + usize::from(b);
    }
    (2.0 * intersection as f64 + EPS) / (total as f64 + EPS)
}

/// Binary IoU (Jaccard index) of two label maps thresholded at 0.5:
/// `(|A∩B| + ε) / (|A∪B| + ε)` (1 when both are empty), atlalign's `iou_score` per label.
pub fn binary_iou(fixed: &[f32], predicted: &[f32]) -> f64 {
    let (mut intersection, mut union) = (0usize, 0usize);
    for (&a, &b) in fixed.iter().zip(predicted) {
        let (a, b) = (a >= 0.5, b >= 0.5);
        intersection += usize::from(a && b);
        union += usize::from(a || b);
    }
    (intersection as f64 + EPS) / (union as f64 + EPS)
}

/// Mean squared difference of two images.
pub fn image_ssd(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()).max(1);
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        / n as f64
}

/// The mean end-point error of two channel-first DDFs `(ndim, *shape)` of `voxels` voxels:
/// `(1 / V) Σ_p ‖a(p) − b(p)‖₂`, in their unit (voxels). With `b` zero it is the mean length
/// of `a`. `None` unless both hold `ndim · voxels` values and `voxels > 0`.
pub fn field_error(a: &[f32], b: &[f32], ndim: usize) -> Option<f64> {
    if ndim == 0 || a.len() != b.len() || a.is_empty() || !a.len().is_multiple_of(ndim) {
        return None;
    }
    let voxels = a.len() / ndim;
    let total: f64 = (0..voxels)
        .map(|p| {
            (0..ndim)
                .map(|c| f64::from(a[c * voxels + p] - b[c * voxels + p]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum();
    Some(total / voxels as f64)
}

/// Displacements shorter than this (voxels) have no direction for [`angular_error`].
pub const ANGULAR_MIN_LENGTH: f64 = 1.0e-6;

/// The mean angle, in degrees, between the displacements of two channel-first DDFs
/// `(ndim, *shape)`: `(1 / V') Σ_p arccos(clip(⟨a(p), b(p)⟩ / (‖a(p)‖ ‖b(p)‖), −1, 1))` over
/// the `V'` voxels where both are longer than [`ANGULAR_MIN_LENGTH`] (atlalign's
/// `angular_error_of`, which leaves zero-length vectors undefined). `None` unless both hold
/// `ndim · voxels` values and some voxel has two directions.
pub fn angular_error(a: &[f32], b: &[f32], ndim: usize) -> Option<f64> {
    if ndim == 0 || a.len() != b.len() || a.is_empty() || !a.len().is_multiple_of(ndim) {
        return None;
    }
    let voxels = a.len() / ndim;
    let (mut total, mut counted) = (0.0, 0usize);
    for p in 0..voxels {
        let component = |f: &[f32], c: usize| f64::from(f[c * voxels + p]);
        let dot: f64 = (0..ndim).map(|c| component(a, c) * component(b, c)).sum();
        let length = |f: &[f32]| {
            (0..ndim)
                .map(|c| component(f, c).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let (la, lb) = (length(a), length(b));
        if la > ANGULAR_MIN_LENGTH && lb > ANGULAR_MIN_LENGTH {
            total += (dot / (la * lb)).clamp(-1.0, 1.0).acos().to_degrees();
            counted += 1;
        }
    }
    (counted > 0).then(|| total / counted as f64)
}

/// The centroid (in voxel indices) of a label thresholded at 0.5, or `None` if it is empty.
pub fn centroid(label: &[f32], shape: &[usize]) -> Option<Vec<f64>> {
    let mut sum = vec![0.0f64; shape.len()];
    let mut count = 0usize;
    for (flat, _) in label.iter().enumerate().filter(|(_, v)| **v >= 0.5) {
        let mut rest = flat;
        for axis in (0..shape.len()).rev() {
            sum[axis] += (rest % shape[axis]) as f64;
            rest /= shape[axis];
        }
        count += 1;
    }
    (count > 0).then(|| sum.into_iter().map(|s| s / count as f64).collect())
}

/// Distance between the centroids of two thresholded labels (DeepReg's TRE): in voxels, and
/// in millimetres through the voxel-to-world `affine` (its linear part). `None` when a label
/// is empty.
pub fn centroid_distance(
    fixed: &[f32],
    predicted: &[f32],
    shape: &[usize],
    affine: &[[f64; 4]; 4],
) -> Option<(f64, f64)> {
    let a = centroid(fixed, shape)?;
    let b = centroid(predicted, shape)?;
    let delta: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    let voxels = delta.iter().map(|d| d * d).sum::<f64>().sqrt();
    let millimetres = (0..3)
        .map(|row| {
            delta
                .iter()
                .enumerate()
                .filter(|(axis, _)| *axis < 3)
                .map(|(axis, d)| affine[row][axis] * d)
                .sum::<f64>()
                .powi(2)
        })
        .sum::<f64>()
        .sqrt();
    Some((voxels, millimetres))
}

/// Statistics of the Jacobian determinant `det(I + ∇u)` of a DDF `u`: folding shows as
/// determinants ≤ 0.
#[derive(Clone, Debug, PartialEq)]
pub struct JacobianStats {
    /// Voxels with a determinant ≤ 0.
    pub folding_count: usize,
    /// Their fraction of all voxels.
    pub folding_fraction: f64,
    /// Mean determinant.
    pub mean: f64,
    /// Standard deviation of the determinant.
    pub std: f64,
    /// Smallest determinant.
    pub min: f64,
}

/// Jacobian determinant statistics of a channel-first DDF `(ndim, *shape)` in voxel units.
/// Derivatives are `numpy.gradient`'s: central differences inside, one-sided at the borders
/// (an axis of size 1 has derivative 0). `None` unless `ddf` holds `ndim · Π shape` values
/// with `ndim` = 2 or 3 = `shape.len()`.
pub fn jacobian_stats(ddf: &[f32], shape: &[usize]) -> Option<JacobianStats> {
    let ndim = shape.len();
    let voxels: usize = shape.iter().product();
    if !(2..=3).contains(&ndim) || ddf.len() != ndim * voxels || voxels == 0 {
        return None;
    }
    let strides: Vec<usize> = (0..ndim).map(|a| shape[a + 1..].iter().product()).collect();
    let derivative = |component: usize, axis: usize, flat: usize| -> f64 {
        let field = &ddf[component * voxels..(component + 1) * voxels];
        let i = (flat / strides[axis]) % shape[axis];
        let n = shape[axis];
        let at = |k: usize| f64::from(field[flat - i * strides[axis] + k * strides[axis]]);
        match (n, i) {
            (1, _) => 0.0,
            (_, 0) => at(1) - at(0),
            (_, i) if i == n - 1 => at(i) - at(i - 1),
            (_, i) => (at(i + 1) - at(i - 1)) / 2.0,
        }
    };
    let mut determinants = Vec::with_capacity(voxels);
    for flat in 0..voxels {
        let j = |r: usize, c: usize| derivative(r, c, flat) + if r == c { 1.0 } else { 0.0 };
        let det = if ndim == 2 {
            j(0, 0) * j(1, 1) - j(0, 1) * j(1, 0)
        } else {
            j(0, 0) * (j(1, 1) * j(2, 2) - j(1, 2) * j(2, 1))
                - j(0, 1) * (j(1, 0) * j(2, 2) - j(1, 2) * j(2, 0))
                + j(0, 2) * (j(1, 0) * j(2, 1) - j(1, 1) * j(2, 0))
        };
        determinants.push(det);
    }
    let n = voxels as f64;
    let mean = determinants.iter().sum::<f64>() / n;
    let variance = determinants.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n;
    let folding_count = determinants.iter().filter(|d| **d <= 0.0).count();
    Some(JacobianStats {
        folding_count,
        folding_fraction: folding_count as f64 / n,
        mean,
        std: variance.sqrt(),
        min: determinants.iter().copied().fold(f64::INFINITY, f64::min),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_is_intersection_over_union() {
        let fixed = [1.0, 1.0, 0.0, 0.0];
        let predicted = [1.0, 0.0, 1.0, 0.0];
        // |A∩B| = 1, |A∪B| = 3.
        assert!((binary_iou(&fixed, &predicted) - (1.0 + EPS) / (3.0 + EPS)).abs() < 1e-12);
        assert_eq!(binary_iou(&[0.0; 4], &[0.0; 4]), 1.0);
    }

    #[test]
    fn the_angular_error_is_the_mean_angle_where_both_fields_have_a_direction() {
        // Two voxels, 2D: (1, 0) vs (0, 2) is 90°, (1, 1) vs (2, 2) is 0°; a third voxel with
        // a zero vector is left out.
        let a = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        let b = [0.0, 2.0, 5.0, 2.0, 2.0, 0.0];
        let error = angular_error(&a, &b, 2).unwrap();
        // f32 inputs: arccos near 1 amplifies their rounding.
        assert!((error - 45.0).abs() < 1e-4, "{error}");
        assert_eq!(angular_error(&a, &[0.0; 6], 2), None);
        assert_eq!(angular_error(&a, &b[..4], 2), None);
        let opposite = angular_error(&[1.0, 0.0], &[-1.0, 0.0], 2).unwrap();
        assert!((opposite - 180.0).abs() < 1e-4);
    }

    #[test]
    fn the_field_error_is_the_mean_end_point_distance() {
        // Two voxels, 2D, channel-first: displacements (3, 4) and (0, 0) against zero.
        let a = [3.0, 0.0, 4.0, 0.0];
        assert_eq!(field_error(&a, &[0.0; 4], 2), Some(2.5));
        let b = [3.0, 1.0, 4.0, 0.0];
        assert_eq!(field_error(&a, &b, 2), Some(0.5));
        assert_eq!(field_error(&a, &b[..3], 2), None);
        assert_eq!(field_error(&a[..3], &b[..3], 2), None);
    }

    #[test]
    fn dice_of_hand_cases() {
        assert!(
            (binary_dice(&[1.0, 1.0, 0.0, 0.0], &[1.0, 0.0, 0.0, 0.0]) - (2.0 + EPS) / (3.0 + EPS))
                .abs()
                < 1e-12
        );
        assert!(
            (binary_dice(&[0.9, 0.2], &[0.6, 0.4]) - 1.0).abs() < 1e-12,
            "thresholded at 0.5"
        );
        assert!((binary_dice(&[0.0; 4], &[0.0; 4]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ssd_is_the_mean_squared_difference() {
        assert_eq!(image_ssd(&[1.0, 2.0], &[1.0, 0.0]), 2.0);
    }

    #[test]
    fn centroid_distance_in_voxels_and_millimetres() {
        // A 1×2×4 grid; fixed label at (0, 0, 0), predicted at (0, 1, 3).
        let mut fixed = vec![0.0; 8];
        fixed[0] = 1.0;
        let mut predicted = vec![0.0; 8];
        predicted[7] = 1.0;
        let mut affine = [[0.0; 4]; 4];
        affine[0][0] = 1.0;
        affine[1][1] = 2.0;
        affine[2][2] = 0.5;
        let (voxels, mm) = centroid_distance(&fixed, &predicted, &[1, 2, 4], &affine).unwrap();
        assert!((voxels - 10f64.sqrt()).abs() < 1e-12);
        assert!((mm - (4.0f64 + 2.25).sqrt()).abs() < 1e-12);
        assert!(centroid_distance(&[0.0; 8], &predicted, &[1, 2, 4], &affine).is_none());
    }

    #[test]
    fn a_zero_field_has_unit_determinant() {
        let stats = jacobian_stats(&[0.0; 3 * 27], &[3, 3, 3]).unwrap();
        assert_eq!(stats.folding_count, 0);
        assert!((stats.mean - 1.0).abs() < 1e-12 && stats.std < 1e-12);
    }

    #[test]
    fn an_affine_field_has_its_matrix_determinant() {
        // u(p) = A p with A = diag(1, 0, -0.5): det(I + A) = 2 · 1 · 0.5 = 1 in 3D.
        let shape = [4, 3, 5];
        let voxels = 60;
        let mut ddf = vec![0.0f32; 3 * voxels];
        for flat in 0..voxels {
            let (x, z) = (flat / 15, flat % 5);
            ddf[flat] = x as f32;
            ddf[2 * voxels + flat] = -0.5 * z as f32;
        }
        let stats = jacobian_stats(&ddf, &shape).unwrap();
        assert!((stats.mean - 1.0).abs() < 1e-9 && stats.std < 1e-9);
    }

    #[test]
    fn a_folding_field_is_counted() {
        // 2D: u(p) = (−2x, 0) flips the first axis: det = −1 everywhere.
        let shape = [3, 2];
        let mut ddf = vec![0.0f32; 12];
        for (flat, value) in ddf.iter_mut().take(6).enumerate() {
            *value = -2.0 * (flat / 2) as f32;
        }
        let stats = jacobian_stats(&ddf, &shape).unwrap();
        assert_eq!(stats.folding_count, 6);
        assert_eq!(stats.folding_fraction, 1.0);
        assert!((stats.min + 1.0).abs() < 1e-12);
        assert!(jacobian_stats(&ddf, &[3, 3]).is_none(), "wrong size");
    }
}
