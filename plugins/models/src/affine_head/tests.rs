//! Hand-computed matrices and finite-difference gradients of the affine heads.

use voxreg_framework::candle::{DType, Device, Tensor, Var};
use voxreg_framework::ops;

use super::*;

fn theta_rows(theta: &Tensor) -> Vec<Vec<f64>> {
    theta.squeeze(0).unwrap().to_vec2::<f64>().unwrap()
}

fn assert_close(got: &[Vec<f64>], expected: &[Vec<f64>], tol: f64) {
    for (g, e) in got.iter().zip(expected) {
        for (a, b) in g.iter().zip(e) {
            assert!((a - b).abs() < tol, "got {got:?}, expected {expected:?}");
        }
    }
}

/// The DDF value at voxel `p` of a 2D image.
fn ddf_at(theta: &Tensor, size: &[usize], p: [usize; 2]) -> Vec<f64> {
    let ddf = ops::affine_to_ddf(theta, size).unwrap();
    (0..2)
        .map(|a| {
            ddf.get(0)
                .unwrap()
                .get(a)
                .unwrap()
                .get(p[0])
                .unwrap()
                .get(p[1])
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        })
        .collect()
}

#[test]
fn all_zero_outputs_and_the_identity_matrix_are_the_identity() {
    let dev = Device::Cpu;
    for size in [vec![6usize, 11], vec![4, 7, 5]] {
        let ndim = size.len();
        let identity = ops::identity_theta(1, ndim, DType::F64, &dev).unwrap();
        let zeros = Tensor::zeros((1, AffineKind::Bounded.outputs(ndim)), DType::F64, &dev);
        let bounded = bounded_theta(&zeros.unwrap(), &size).unwrap();
        let mut raw = vec![0f64; ndim * (ndim + 1)];
        for i in 0..ndim {
            raw[i * (ndim + 1) + i] = 1.0;
        }
        let raw = Tensor::new(raw.as_slice(), &dev).unwrap().unsqueeze(0);
        let raw = raw_theta(&raw.unwrap(), &size).unwrap();
        for theta in [bounded, raw] {
            let diff = (theta - &identity).unwrap().abs().unwrap();
            assert!(diff.max_all().unwrap().to_scalar::<f64>().unwrap() < 1e-12);
        }
    }
    assert_eq!(AffineKind::Bounded.outputs(2), 7);
    assert_eq!(AffineKind::Bounded.outputs(3), 15);
    assert_eq!(AffineKind::Raw.outputs(2), 6);
    assert_eq!(AffineKind::Raw.outputs(3), 12);
}

/// A non-square 5 × 9 image, centre (2, 4). Raw values chosen so that tanh gives round
/// numbers: rotation tanh = 1/3 → π/6; scales tanh = ±1/2 → 2^±½; shear (0, 1) tanh = 1/3 →
/// tan(π/12) = 2 − √3; shear (1, 0) = 0; translation (1.5, −2).
#[test]
fn bounded_matrix_matches_the_hand_computed_one_about_the_true_centre() {
    let size = [5usize, 9];
    let raw = [
        1.5,
        -2.0,
        (1.0f64 / 3.0).atanh(),
        0.5f64.atanh(),
        (-0.5f64).atanh(),
        (1.0f64 / 3.0).atanh(),
        0.0,
    ];
    let raw = Tensor::new(&raw, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let theta = bounded_theta(&raw, &size).unwrap();
    // Sh · R = [[1, 2 − √3], [0, 1]] · [[√3/2, −1/2], [1/2, √3/2]] = [[1, √3 − 2], [1/2, √3/2]];
    // T = diag(√2, 1/√2) · Sh · R.
    let (r2, r3) = (2f64.sqrt(), 3f64.sqrt());
    let t = [[r2, r2 * (r3 - 2.0)], [0.5 / r2, r3 / (2.0 * r2)]];
    let c = [2.0, 4.0];
    let offset = [
        1.5 + c[0] - (t[0][0] * c[0] + t[0][1] * c[1]),
        -2.0 + c[1] - (t[1][0] * c[0] + t[1][1] * c[1]),
    ];
    let expected = vec![
        vec![t[0][0], t[1][0]],
        vec![t[0][1], t[1][1]],
        offset.to_vec(),
    ];
    assert_close(&theta_rows(&theta), &expected, 1e-12);
    // The centre voxel moves by exactly the translation; TorchIR's centre (x = H/2, y = W/2)
    // would move it by something else here.
    let at_centre = ddf_at(&theta, &size, [2, 4]);
    assert_close(&[at_centre], &[vec![1.5, -2.0]], 1e-12);
    let at_corner = ddf_at(&theta, &size, [0, 0]);
    assert!((at_corner[0] - 1.5).abs() > 0.1);
}

#[test]
fn bounded_3d_rotations_are_proper_and_turn_the_right_planes() {
    let dev = Device::Cpu;
    let size = [4usize, 7, 6];
    // A rotation about axis 2 alone by π/6 turns the plane (0, 1).
    let mut raw = vec![0f64; 15];
    raw[5] = (1.0f64 / 3.0).atanh();
    let theta = bounded_theta(
        &Tensor::new(raw.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
        &size,
    )
    .unwrap();
    let rows = theta_rows(&theta);
    let (c, s) = (3f64.sqrt() / 2.0, 0.5);
    // θ's linear rows are Tᵀ, T = [[c, −s, 0], [s, c, 0], [0, 0, 1]].
    assert_close(
        &rows[..3],
        &[vec![c, s, 0.0], vec![-s, c, 0.0], vec![0.0, 0.0, 1.0]],
        1e-12,
    );
    // Random angles only (scales and shears zero): T is a rotation, Tᵀ T = I, det 1.
    let mut raw = vec![0f64; 15];
    raw[3..6].copy_from_slice(&[0.7, -1.3, 2.1]);
    let theta = bounded_theta(
        &Tensor::new(raw.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
        &size,
    )
    .unwrap();
    let m = theta.narrow(1, 0, 3).unwrap().squeeze(0).unwrap();
    let gram = m.matmul(&m.t().unwrap()).unwrap().to_vec2::<f64>().unwrap();
    let eye: Vec<Vec<f64>> = (0..3)
        .map(|i| (0..3).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    assert_close(&gram, &eye, 1e-12);
    let a = m.to_vec2::<f64>().unwrap();
    let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
    assert!((det - 1.0).abs() < 1e-12);
    // The centre (1.5, 3, 2.5) is fixed by a pure rotation.
    let centre_moved: Vec<f64> = (0..3)
        .map(|j| {
            let c = [1.5, 3.0, 2.5];
            (0..3).map(|i| c[i] * a[i][j]).sum::<f64>() + rows_offset(&theta)[j] - c[j]
        })
        .collect();
    assert!(
        centre_moved.iter().all(|v| v.abs() < 1e-12),
        "{centre_moved:?}"
    );
}

fn rows_offset(theta: &Tensor) -> Vec<f64> {
    theta_rows(theta)[theta.dims()[1] - 1].clone()
}

/// Bounds: however large the raw outputs, rotation stays within ±90°, scale within (½, 2)
/// and the shear entries within (−1, 1).
#[test]
fn bounded_parameters_stay_within_their_bounds() {
    let size = [8usize, 8];
    let raw = Tensor::new(
        &[[0.0f64, 0.0, 0.0, 50.0, -50.0, 50.0, -50.0]],
        &Device::Cpu,
    )
    .unwrap();
    let rows = theta_rows(&bounded_theta(&raw, &size).unwrap());
    // T = diag(2, ½) · [[1, 1], [−1, 1]]: θ's rows are Tᵀ.
    assert_close(&rows[..2], &[vec![2.0, -0.5], vec![2.0, 0.5]], 1e-9);
}

#[test]
fn raw_matrix_acts_on_normalised_coordinates() {
    // 5 × 9 image: c = (2, 4), h = (2, 4). A = [[1, 0.5], [0, 1]], b = (0.25, −0.5).
    let size = [5usize, 9];
    let raw = Tensor::new(&[[1.0f64, 0.5, 0.25, 0.0, 1.0, -0.5]], &Device::Cpu).unwrap();
    let theta = raw_theta(&raw, &size).unwrap();
    // Voxel (0, 0) is u = (−1, −1); u' = A u + b = (−1.25, −1.5); q = c + h u' = (−0.5, −2).
    assert_close(&[ddf_at(&theta, &size, [0, 0])], &[vec![-0.5, -2.0]], 1e-12);
    // The centre moves by H b = (0.5, −2).
    assert_close(&[ddf_at(&theta, &size, [2, 4])], &[vec![0.5, -2.0]], 1e-12);
    // In voxels T = H A H⁻¹ = [[1, 0.25], [0, 1]].
    assert_close(
        &theta_rows(&theta)[..2],
        &[vec![1.0, 0.0], vec![0.25, 1.0]],
        1e-12,
    );
}

#[test]
fn shape_errors_name_the_head() {
    let raw = Tensor::zeros((1, 6), DType::F64, &Device::Cpu).unwrap();
    let error = bounded_theta(&raw, &[4, 4]).unwrap_err().to_string();
    assert!(
        error.contains("bounded affine head") && error.contains('7'),
        "{error}"
    );
    let error = raw_theta(&raw, &[4, 4, 4]).unwrap_err().to_string();
    assert!(
        error.contains("raw affine head") && error.contains("12"),
        "{error}"
    );
    assert!(raw_theta(&raw, &[4]).is_err());
}

/// Central differences of `Σ θ ⊙ W` against the backward pass, in f64.
fn check_gradient(kind: AffineKind, size: &[usize]) {
    let dev = Device::Cpu;
    let outputs = kind.outputs(size.len());
    let raw = (Tensor::randn(0f64, 0.7, (2, outputs), &dev).unwrap()
        + if kind == AffineKind::Raw { 0.5 } else { 0.0 })
    .unwrap();
    let weights = Tensor::randn(0f64, 1.0, (2, size.len() + 1, size.len()), &dev).unwrap();
    let objective = |x: &Tensor| -> Tensor {
        (kind.theta(x, size).unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let var = Var::from_tensor(&raw).unwrap();
    let grads = objective(var.as_tensor()).backward().unwrap();
    let analytic = grads
        .get(var.as_tensor())
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let values = raw.to_vec2::<f64>().unwrap();
    let eps = 1e-6;
    for n in 0..2 {
        for k in 0..outputs {
            let shifted = |delta: f64| {
                let mut v = values.clone();
                v[n][k] += delta;
                let t = Tensor::new(v, &dev).unwrap();
                objective(&t).to_scalar::<f64>().unwrap()
            };
            let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
            let err = (numeric - analytic[n][k]).abs();
            assert!(
                err < 1e-6 * (1.0 + numeric.abs()),
                "{kind:?} {size:?} [{n}, {k}]: numeric {numeric}, analytic {}",
                analytic[n][k]
            );
        }
    }
}

#[test]
fn head_gradients_match_finite_differences() {
    for size in [vec![5usize, 9], vec![4, 6, 3]] {
        check_gradient(AffineKind::Bounded, &size);
        check_gradient(AffineKind::Raw, &size);
        check_gradient(AffineKind::Translation, &size);
    }
}

#[test]
fn the_translation_head_moves_every_voxel_by_t() {
    let t = Tensor::new(&[[1.5f64, -2.0]], &Device::Cpu).unwrap();
    let theta = translation_theta(&t, &[5, 9]).unwrap();
    assert_close(
        &theta_rows(&theta),
        &[vec![1.0, 0.0], vec![0.0, 1.0], vec![1.5, -2.0]],
        1e-12,
    );
    for p in [[0, 0], [2, 4], [4, 8]] {
        assert_close(&[ddf_at(&theta, &[5, 9], p)], &[vec![1.5, -2.0]], 1e-12);
    }
    assert_eq!(AffineKind::Translation.outputs(3), 3);
    assert!(
        translation_theta(&t, &[5, 9, 2]).is_err(),
        "3 outputs in 3D"
    );
}
