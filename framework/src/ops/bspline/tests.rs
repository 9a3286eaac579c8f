//! Tests of the cubic B-spline field: hand-computed values, partition of unity, linear
//! reproduction, the bound, and gradients against finite differences.

use candle_core::{DType, Device, Tensor, Var};

use super::*;

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn the_basis_has_its_textbook_values() {
    assert_eq!(cubic_bspline(0.0), 2.0 / 3.0);
    assert_eq!(cubic_bspline(1.0), 1.0 / 6.0);
    assert_eq!(cubic_bspline(-1.0), 1.0 / 6.0);
    assert_eq!(cubic_bspline(0.5), 2.0 / 3.0 - 0.25 + 0.0625);
    assert_eq!(cubic_bspline(1.5), 0.125 / 6.0);
    assert_eq!(cubic_bspline(2.0), 0.0);
    assert_eq!(cubic_bspline(-7.0), 0.0);
}

#[test]
fn a_single_coefficient_in_2d_gives_the_tensor_product_basis() {
    // Spacing 2 on 8 × 6: control points at 0.5, 2.5, 4.5, 6.5 (rows) and 0.5, 2.5, 4.5
    // (columns). One coefficient 6 at grid (1, 1), i.e. at voxel position (2.5, 2.5).
    let mut c = vec![0f64; 4 * 3];
    c[3 + 1] = 6.0;
    let c = Tensor::from_vec(c, (1, 1, 4, 3), &Device::Cpu).unwrap();
    let field = bspline_ddf(&c, &[8, 6], &[2, 2]).unwrap();
    assert_eq!(field.dims(), &[1, 1, 8, 6]);
    let got = values(&field);
    for x in 0..8 {
        for y in 0..6 {
            let expected =
                6.0 * cubic_bspline((x as f64 - 2.5) / 2.0) * cubic_bspline((y as f64 - 2.5) / 2.0);
            assert!((got[x * 6 + y] - expected).abs() < 1e-12, "({x}, {y})");
        }
    }
    // Voxel (2, 3): t = (−0.25, 0.25), β₃(0.25) = 2/3 − 1/16 + 1/128 = 0.611979…
    let b = 2.0 / 3.0 - 0.0625 + 0.25f64.powi(3) / 2.0;
    assert!((got[2 * 6 + 3] - 6.0 * b * b).abs() < 1e-12);
    // Voxel (7, 0) is 4.5 cells' half-widths away along rows: outside the support.
    assert_eq!(got[7 * 6], 0.0);
}

#[test]
fn constant_coefficients_translate_and_linear_ones_reproduce_x_in_3d() {
    // Spacing (2, 3, 1) on 12 × 12 × 5: a voxel has the basis's full support (every point
    // within 2s exists) from 1.5·s − ½ to (m − 1.5)·s − ½ along each axis.
    let spacing = [2usize, 3, 1];
    let shape = [12usize, 12, 5];
    let grid = bspline_grid_shape(&shape, &spacing).unwrap();
    assert_eq!(grid, vec![6, 4, 5]);
    let count: usize = grid.iter().product();
    let constant = Tensor::full(1.5f64, (1, 1, grid[0], grid[1], grid[2]), &Device::Cpu).unwrap();
    let field = values(&bspline_ddf(&constant, &shape, &spacing).unwrap());
    let interior = |x: usize, a: usize| {
        let s = spacing[a] as f64;
        let x = x as f64;
        x >= 1.5 * s - 0.5 && x <= (grid[a] as f64 - 1.5) * s - 0.5
    };
    let mut checked = 0;
    for x in 0..shape[0] {
        for y in 0..shape[1] {
            for z in 0..shape[2] {
                if interior(x, 0) && interior(y, 1) && interior(z, 2) {
                    let v = field[(x * shape[1] + y) * shape[2] + z];
                    assert!((v - 1.5).abs() < 1e-12, "({x}, {y}, {z}): {v}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0);
    // c_j = p_j along axis 0 (the control point's row position) reproduces u(x) = x there.
    let positions: Vec<f64> = (0..count)
        .map(|i| {
            let j = i / (grid[1] * grid[2]);
            (j as f64 + 0.5) * spacing[0] as f64 - 0.5
        })
        .collect();
    let linear =
        Tensor::from_vec(positions, (1, 1, grid[0], grid[1], grid[2]), &Device::Cpu).unwrap();
    let field = values(&bspline_ddf(&linear, &shape, &spacing).unwrap());
    for x in 0..shape[0] {
        for y in 0..shape[1] {
            for z in 0..shape[2] {
                if interior(x, 0) && interior(y, 1) && interior(z, 2) {
                    let v = field[(x * shape[1] + y) * shape[2] + z];
                    assert!((v - x as f64).abs() < 1e-12, "({x}, {y}, {z}): {v}");
                }
            }
        }
    }
}

#[test]
fn channels_and_batch_items_are_independent_and_f32_matches_f64() {
    let c: Vec<f64> = (0..2 * 2 * 3 * 3)
        .map(|i| ((i * 7) % 5) as f64 - 2.0)
        .collect();
    let all = Tensor::from_vec(c.clone(), (2, 2, 3, 3), &Device::Cpu).unwrap();
    let field = bspline_ddf(&all, &[5, 7], &[2, 3]).unwrap();
    for n in 0..2 {
        for ch in 0..2 {
            let one = all.narrow(0, n, 1).unwrap().narrow(1, ch, 1).unwrap();
            let alone = values(&bspline_ddf(&one, &[5, 7], &[2, 3]).unwrap());
            let part = values(&field.narrow(0, n, 1).unwrap().narrow(1, ch, 1).unwrap());
            assert_eq!(alone, part);
        }
    }
    let single = bspline_ddf(&all.to_dtype(DType::F32).unwrap(), &[5, 7], &[2, 3]).unwrap();
    assert_eq!(single.dtype(), DType::F32);
    for (a, b) in values(&single).iter().zip(values(&field)) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn gradients_match_finite_differences() {
    let grid = (1, 3, 3, 2, 2);
    let start: Vec<f64> = (0..36)
        .map(|i| ((i * 13) % 11) as f64 / 11.0 - 0.5)
        .collect();
    let weights: Vec<f64> = (0..3 * 7 * 4 * 5)
        .map(|i| ((i * 5) % 9) as f64 / 9.0)
        .collect();
    let weights = Tensor::from_vec(weights, (1, 3, 7, 4, 5), &Device::Cpu).unwrap();
    let loss = |c: &Tensor| -> Tensor {
        let u = bounded_coefficients(c, &[3, 2, 2], 0.4).unwrap();
        let field = bspline_ddf(&u, &[7, 4, 5], &[3, 2, 2]).unwrap();
        (field.sqr().unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let var =
        Var::from_tensor(&Tensor::from_vec(start.clone(), grid, &Device::Cpu).unwrap()).unwrap();
    let grads = loss(var.as_tensor()).backward().unwrap();
    let analytic = values(grads.get(var.as_tensor()).unwrap());
    let h = 1e-6;
    for i in 0..start.len() {
        let at = |delta: f64| {
            let mut v = start.clone();
            v[i] += delta;
            let t = Tensor::from_vec(v, grid, &Device::Cpu).unwrap();
            loss(&t).to_scalar::<f64>().unwrap()
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (numeric - analytic[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
            "coefficient {i}: finite differences {numeric}, backward {}",
            analytic[i]
        );
    }
}

#[test]
fn the_bound_scales_each_component_by_its_axis_spacing() {
    let c = Tensor::from_vec(vec![100.0f64, -100.0, 0.0, 1.0], (1, 2, 2, 1), &Device::Cpu).unwrap();
    let bounded = values(&bounded_coefficients(&c, &[4, 2], 0.4).unwrap());
    assert!((bounded[0] - 1.6).abs() < 1e-12);
    assert!((bounded[1] + 1.6).abs() < 1e-12);
    assert_eq!(bounded[2], 0.0);
    assert!((bounded[3] - 0.8 * 1f64.tanh()).abs() < 1e-12);
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let c = Tensor::zeros((1, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
    for (shape, spacing, needle) in [
        (&[4usize][..], &[2usize][..], "2D or 3D"),
        (&[4, 4, 4][..], &[2, 2, 2][..], "rank 5"),
        (&[4, 4][..], &[2, 0][..], "spacings"),
        (&[4, 0][..], &[2, 2][..], "empty image"),
    ] {
        let message = bspline_ddf(&c, shape, spacing).unwrap_err().to_string();
        assert!(message.contains(needle), "{message}");
    }
    let empty = Tensor::zeros((1, 2, 0, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(bspline_ddf(&empty, &[4, 4], &[2, 2])
        .unwrap_err()
        .to_string()
        .contains("empty control grid"));
    assert!(bounded_coefficients(&c, &[2, 2, 2], 0.4).is_err());
    assert!(bspline_grid_shape(&[4, 4], &[2]).is_err());
}
