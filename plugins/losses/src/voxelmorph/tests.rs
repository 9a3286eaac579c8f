use voxreg_framework::candle::{Device, Tensor};

use super::*;
use crate::testing::{assert_close, check_gradient, pseudo_random, Pair, Penal};

fn ncc(win: usize, clamp: bool) -> Pair {
    let config = VxmNccConfig {
        win: vec![win],
        eps: 1e-5,
        clamp,
    };
    Pair(config.build(2).unwrap())
}

/// VoxelMorph's NCC written out voxel by voxel: window sums by explicit loops over a 2D
/// single-channel image, zero outside.
fn naive_ncc(f: &[Vec<f64>], w: &[Vec<f64>], win: usize, clamp: bool) -> f64 {
    let (h, wd) = (f.len() as isize, f[0].len() as isize);
    let lo = (win as isize - 1) / 2;
    let v = (win * win) as f64;
    let mut total = 0.0;
    for i in 0..h {
        for j in 0..wd {
            let (mut sf, mut sw, mut sff, mut sww, mut sfw) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for di in 0..win as isize {
                for dj in 0..win as isize {
                    let (y, x) = (i + di - lo, j + dj - lo);
                    if y < 0 || x < 0 || y >= h || x >= wd {
                        continue;
                    }
                    let (a, b) = (f[y as usize][x as usize], w[y as usize][x as usize]);
                    sf += a;
                    sw += b;
                    sff += a * a;
                    sww += b * b;
                    sfw += a * b;
                }
            }
            let (uf, uw) = (sf / v, sw / v);
            let mut cross = sfw - uw * sf - uf * sw + uf * uw * v;
            let mut vf = sff - 2.0 * uf * sf + uf * uf * v;
            let mut vw = sww - 2.0 * uw * sw + uw * uw * v;
            let cc = if clamp {
                cross = cross.max(1e-5);
                vf = vf.max(1e-5);
                vw = vw.max(1e-5);
                (cross / vf) * (cross / vw)
            } else {
                cross * cross / (vf * vw + 1e-5)
            };
            total += cc;
        }
    }
    -total / (h * wd) as f64
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap()
}

#[test]
fn mse_scales_by_one_over_sigma_squared() {
    let loss = Pair(VxmMseConfig { image_sigma: 0.5 }.build(2).unwrap());
    let fixed = Tensor::ones((2, 1, 3, 4), DType::F64, &Device::Cpu).unwrap();
    let warped = Tensor::zeros((2, 1, 3, 4), DType::F64, &Device::Cpu).unwrap();
    assert_close(&loss.loss(&fixed, &warped).unwrap(), &[4.0, 4.0], 1e-12);
    let bad = VxmMseConfig { image_sigma: 0.0 }.build(2).err().unwrap();
    assert!(bad.to_string().contains("image_sigma"), "{bad}");
}

#[test]
fn ncc_matches_the_formula_written_out_per_voxel() {
    for (win, clamp) in [(3, false), (3, true), (5, false), (4, true)] {
        let f = pseudo_random(&[1, 1, 6, 7], 0.0, 1.0, 1);
        let noise = pseudo_random(&[1, 1, 6, 7], -1.0, 1.0, 2);
        let w = ((&f * 0.5).unwrap() + (noise * 0.5).unwrap()).unwrap();
        let value = ncc(win, clamp).loss(&f, &w).unwrap();
        let expected = naive_ncc(&rows(&f), &rows(&w), win, clamp);
        assert_close(&value, &[expected], 1e-12);
    }
}

#[test]
fn ncc_clamp_counts_anti_correlated_windows_as_zero() {
    // Zero padding biases the border windows' statistics; a wide image keeps them few.
    let f = pseudo_random(&[1, 1, 40, 40], 0.0, 1.0, 3);
    let anti = (1.0 - &f).unwrap();
    let torch = ncc(3, false)
        .loss(&f, &anti)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0];
    let tf = ncc(3, true)
        .loss(&f, &anti)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0];
    assert!(
        torch < -0.9,
        "squared correlation of −1 counts as 1: {torch}"
    );
    assert!(tf > -0.1, "clamped cross ≈ 0 away from the border: {tf}");
}

#[test]
fn ncc_gradients_match_finite_differences() {
    let f = pseudo_random(&[2, 1, 5, 6], 0.0, 1.0, 4);
    for clamp in [false, true] {
        let loss = ncc(3, clamp);
        let w = pseudo_random(&[2, 1, 5, 6], 0.0, 1.0, 5);
        check_gradient(|w| loss.loss(&f, w), &w, 1e-6);
    }
    let three = Pair(
        VxmNccConfig {
            win: vec![3, 2, 3],
            eps: 1e-5,
            clamp: false,
        }
        .build(3)
        .unwrap(),
    );
    let f3 = pseudo_random(&[1, 1, 4, 3, 4], 0.0, 1.0, 6);
    let w3 = pseudo_random(&[1, 1, 4, 3, 4], 0.0, 1.0, 7);
    check_gradient(|w| three.loss(&f3, w), &w3, 1e-6);
}

#[test]
fn ncc_rejects_a_window_of_the_wrong_length() {
    let config = VxmNccConfig {
        win: vec![3, 3],
        eps: 1e-5,
        clamp: false,
    };
    let error = config.build(3).err().unwrap().to_string();
    assert!(error.contains("win"), "{error}");
}

/// `u_0(i, j) = 2i`, `u_1 = 0` on a 3 × 4 grid.
fn ramp() -> Tensor {
    let values: Vec<f64> = (0..3)
        .flat_map(|i| (0..4).map(move |_| 2.0 * i as f64))
        .chain(std::iter::repeat_n(0.0, 12))
        .collect();
    Tensor::from_vec(values, (1, 2, 3, 4), &Device::Cpu).unwrap()
}

#[test]
fn grad_is_the_forward_difference_penalty_averaged_over_axes() {
    let grad = |penalty, loss_mult| Penal(VxmGradConfig { penalty, loss_mult }.build(2).unwrap());
    // Axis 0: Δ = 2 on half the components' 2 × 4 differences; axis 1: Δ = 0.
    assert_close(
        &grad(GradPenalty::L2, None).loss(&ramp()).unwrap(),
        &[1.0],
        1e-12,
    );
    assert_close(
        &grad(GradPenalty::L1, None).loss(&ramp()).unwrap(),
        &[0.5],
        1e-12,
    );
    assert_close(
        &grad(GradPenalty::L2, Some(2.0)).loss(&ramp()).unwrap(),
        &[2.0],
        1e-12,
    );
}

#[test]
fn grad_gradients_match_finite_differences() {
    for penalty in [GradPenalty::L1, GradPenalty::L2] {
        let grad = Penal(
            VxmGradConfig {
                penalty,
                loss_mult: Some(2.0),
            }
            .build(3)
            .unwrap(),
        );
        let u = pseudo_random(&[2, 3, 3, 4, 2], -1.0, 1.0, 8);
        check_gradient(|u| grad.loss(u), &u, 1e-6);
    }
}

#[test]
fn dice_is_zero_for_channels_empty_in_both() {
    let ones = Tensor::ones((1, 1, 3, 3), DType::F64, &Device::Cpu).unwrap();
    let zeros = ones.zeros_like().unwrap();
    let labels = Tensor::cat(&[&ones, &zeros], 1).unwrap();
    let dice = Pair(VxmDiceConfig {}.build(2).unwrap());
    assert_close(&dice.loss(&labels, &labels).unwrap(), &[-0.5], 1e-12);
}

#[test]
fn dice_gradients_match_finite_differences() {
    let dice = Pair(VxmDiceConfig {}.build(2).unwrap());
    let t = pseudo_random(&[2, 2, 4, 5], 0.0, 1.0, 9);
    let p = pseudo_random(&[2, 2, 4, 5], 0.0, 1.0, 10);
    check_gradient(|p| dice.loss(&t, p), &p, 1e-6);
}
