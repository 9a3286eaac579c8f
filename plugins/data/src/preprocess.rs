//! Preprocessing of loaded volumes: intensity normalisation and linear resizing, on the CPU.
//! (The differentiable resampling ops live in the framework; data loading needs neither
//! gradients nor tensors.)

/// DeepReg's ε.
pub const EPS: f32 = 1.0e-5;

/// Min–max normalisation of an image to `[0, 1]`, as DeepReg documents it:
/// `(x − min + ε) / (max − min + ε)`.
pub fn normalize(data: &mut [f32]) {
    let (min, max) = data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if data.is_empty() {
        return;
    }
    let scale = 1.0 / (max - min + EPS);
    for value in data.iter_mut() {
        *value = (*value - min + EPS) * scale;
    }
}

/// Resizes a C-order array of shape `from` to `to` (same rank) by separable linear
/// interpolation with half-pixel centres — what `tf.image.resize` (and so DeepReg) does:
/// output voxel `o` samples input coordinate `(o + ½)·n_in/n_out − ½`, clamped to the edge.
/// Axes whose size does not change are passed through untouched.
pub fn resize_linear(data: &[f32], from: &[usize], to: &[usize]) -> Vec<f32> {
    assert_eq!(from.len(), to.len(), "resize_linear: ranks differ");
    let mut current = data.to_vec();
    let mut shape = from.to_vec();
    for axis in 0..from.len() {
        if shape[axis] != to[axis] {
            current = resize_axis(&current, &shape, axis, to[axis]);
            shape[axis] = to[axis];
        }
    }
    current
}

/// Linear resize of one axis.
fn resize_axis(data: &[f32], shape: &[usize], axis: usize, size: usize) -> Vec<f32> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let n_in = shape[axis];
    let weights: Vec<(usize, usize, f32)> = (0..size)
        .map(|o| {
            let x =
                ((o as f64 + 0.5) * n_in as f64 / size as f64 - 0.5).clamp(0.0, (n_in - 1) as f64);
            let lo = x.floor() as usize;
            let hi = (lo + 1).min(n_in - 1);
            (lo, hi, (x - lo as f64) as f32)
        })
        .collect();
    let mut out = vec![0.0f32; outer * size * inner];
    for block in 0..outer {
        let source = &data[block * n_in * inner..(block + 1) * n_in * inner];
        let target = &mut out[block * size * inner..(block + 1) * size * inner];
        for (o, &(lo, hi, t)) in weights.iter().enumerate() {
            let (a, b) = (
                &source[lo * inner..(lo + 1) * inner],
                &source[hi * inner..(hi + 1) * inner],
            );
            for (value, (&a, &b)) in target[o * inner..(o + 1) * inner]
                .iter_mut()
                .zip(a.iter().zip(b))
            {
                *value = a + (b - a) * t;
            }
        }
    }
    out
}

/// The largest shape with `from`'s aspect ratio that fits inside `within`: every axis scaled
/// by `s = min_a within_a / from_a` and rounded, at least 1, at most `within_a` (the
/// notebook's "resize keeping the aspect ratio to a longest side").
pub fn fitted_shape(from: &[usize], within: &[usize]) -> Vec<usize> {
    let scale = from
        .iter()
        .zip(within)
        .map(|(&f, &w)| w as f64 / f.max(1) as f64)
        .fold(f64::INFINITY, f64::min);
    from.iter()
        .zip(within)
        .map(|(&f, &w)| ((f as f64 * scale).round() as usize).clamp(1, w))
        .collect()
}

/// Places a C-order array of shape `from` at the start of a zero array of shape `to`
/// (each `from_a ≤ to_a`): padding goes after the data on every axis, so voxel indices,
/// and with them the voxel-to-world affine, are unchanged.
pub fn pad_end(data: &[f32], from: &[usize], to: &[usize]) -> Vec<f32> {
    if from == to {
        return data.to_vec();
    }
    let mut out = vec![0.0f32; to.iter().product()];
    let rows: usize = from[..from.len() - 1].iter().product();
    let width = from[from.len() - 1];
    for row in 0..rows {
        let mut rest = row;
        let mut target = 0;
        let mut stride = to[to.len() - 1];
        for axis in (0..from.len() - 1).rev() {
            target += (rest % from[axis]) * stride;
            rest /= from[axis];
            stride *= to[axis];
        }
        out[target..target + width].copy_from_slice(&data[row * width..(row + 1) * width]);
    }
    out
}

/// One label channel `channel` of a label array whose last axis holds `channels` labels
/// (C order, spatial axes first).
pub fn label_channel(data: &[f32], channels: usize, channel: usize) -> Vec<f32> {
    data.iter()
        .skip(channel)
        .step_by(channels)
        .copied()
        .collect()
}

/// The voxel-to-world affine of the resized grid: output voxel `o` sits at input coordinate
/// `(o + ½)·n_in/n_out − ½` along each resized axis.
pub fn resized_affine(affine: &[[f64; 4]; 4], from: &[usize], to: &[usize]) -> [[f64; 4]; 4] {
    let mut out = *affine;
    for axis in 0..from.len().min(3) {
        let scale = from[axis] as f64 / to[axis] as f64;
        let shift = 0.5 * scale - 0.5;
        for row in out.iter_mut().take(3) {
            row[3] += row[axis] * shift;
            row[axis] *= scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fitted_shape_keeps_the_aspect_ratio_inside_the_bounds() {
        assert_eq!(fitted_shape(&[512, 1024], &[256, 256]), vec![128, 256]);
        assert_eq!(fitted_shape(&[300, 200], &[256, 256]), vec![256, 171]);
        assert_eq!(fitted_shape(&[10, 1000], &[64, 64]), vec![1, 64]);
        assert_eq!(fitted_shape(&[8, 8, 4], &[16, 16, 16]), vec![16, 16, 8]);
    }

    #[test]
    fn padding_at_the_end_keeps_every_value_at_its_index() {
        let data: Vec<f32> = (1..=6).map(|v| v as f32).collect();
        let padded = pad_end(&data, &[2, 3], &[3, 4]);
        assert_eq!(
            padded,
            vec![1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        let cube: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let padded = pad_end(&cube, &[2, 2, 2], &[2, 3, 3]);
        assert_eq!(padded.len(), 18);
        assert_eq!(padded[0..2], [1.0, 2.0]);
        assert_eq!(padded[3..5], [3.0, 4.0]);
        assert_eq!(padded[9..11], [5.0, 6.0]);
        assert_eq!(padded[12..14], [7.0, 8.0]);
        assert_eq!(padded.iter().filter(|v| **v == 0.0).count(), 10);
    }

    #[test]
    fn normalizes_to_the_unit_interval_with_deepregs_epsilon() {
        let mut data = vec![2.0, 4.0, 6.0];
        normalize(&mut data);
        assert!((data[0] - EPS / (4.0 + EPS)).abs() < 1e-7);
        assert!((data[1] - (2.0 + EPS) / (4.0 + EPS)).abs() < 1e-7);
        assert!((data[2] - 1.0).abs() < 1e-7);
        let mut constant = vec![3.0; 4];
        normalize(&mut constant);
        assert_eq!(constant, vec![1.0; 4]);
    }

    #[test]
    fn resizes_with_half_pixel_centres() {
        // 2 → 4: samples at −0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
        let out = resize_linear(&[0.0, 1.0], &[2], &[4]);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
        // 4 → 2: samples at 0.5 and 2.5.
        let out = resize_linear(&[0.0, 1.0, 2.0, 3.0], &[4], &[2]);
        assert_eq!(out, vec![0.5, 2.5]);
        // Same size: unchanged.
        let data: Vec<f32> = (0..24).map(|v| v as f32).collect();
        assert_eq!(resize_linear(&data, &[2, 3, 4], &[2, 3, 4]), data);
    }

    #[test]
    fn resizes_each_axis_of_a_volume() {
        // A linear ramp along axis 1 stays a ramp; axis 0 and 2 are constant.
        let data: Vec<f32> = (0..2 * 3 * 2).map(|i| ((i / 2) % 3) as f32).collect();
        let out = resize_linear(&data, &[2, 3, 2], &[1, 6, 3]);
        assert_eq!(out.len(), 18);
        let along: Vec<f32> = (0..6).map(|j| out[j * 3]).collect();
        let expected = [0.0, 0.25, 0.75, 1.25, 1.75, 2.0];
        for (a, e) in along.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{along:?}");
        }
    }

    #[test]
    fn extracts_one_label_channel() {
        let data = [0.0, 1.0, 0.5, 0.2, 0.3, 0.9];
        assert_eq!(label_channel(&data, 2, 1), vec![1.0, 0.2, 0.9]);
        assert_eq!(label_channel(&data, 1, 0), data.to_vec());
    }
}
