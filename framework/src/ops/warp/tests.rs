use super::*;
use crate::ops::common::testing::{check_grads, max_abs_diff, values, Rng};
use candle_core::{DType, Device, Var};

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

/// Straightforward reference: linear interpolation with zero or border padding, 3D view.
fn reference(image: &Tensor, ddf: &Tensor, padding: Padding) -> Vec<f64> {
    let (id, dd) = (image.dims().to_vec(), ddf.dims().to_vec());
    let (src, dst) = (spatial3(&id), spatial3(&dd));
    let d3 = id.len() == 5;
    let img = values(image);
    let u = values(ddf);
    let (n, c, nd) = (id[0], id[1], dd[1]);
    let dvol: usize = dst.iter().product();
    let svol: usize = src.iter().product();
    let mut out = Vec::new();
    let at = |b: usize, ch: usize, p: [isize; 3]| -> f64 {
        let mut q = [0usize; 3];
        for a in 0..3 {
            let m = src[a] as isize;
            let v = match padding {
                Padding::Zeros if p[a] < 0 || p[a] >= m => return 0.0,
                Padding::Zeros => p[a],
                Padding::Border => p[a].clamp(0, m - 1),
            };
            q[a] = v as usize;
        }
        img[(b * c + ch) * svol + (q[0] * src[1] + q[1]) * src[2] + q[2]]
    };
    for b in 0..n {
        for ch in 0..c {
            for z in 0..dst[0] {
                for y in 0..dst[1] {
                    for x in 0..dst[2] {
                        let o = (z * dst[1] + y) * dst[2] + x;
                        let mut loc = [z as f64, y as f64, x as f64];
                        for a in 0..nd {
                            let axis = if d3 { a } else { a + 1 };
                            loc[axis] += u[(b * nd + a) * dvol + o];
                        }
                        if padding == Padding::Border {
                            for a in 0..3 {
                                loc[a] = loc[a].clamp(0.0, (src[a] - 1) as f64);
                            }
                        }
                        let f: Vec<f64> = loc.iter().map(|v| v.floor()).collect();
                        let mut acc = 0.0;
                        for corner in 0..8 {
                            let mut w = 1.0;
                            let mut p = [0isize; 3];
                            for a in 0..3 {
                                let hi = (corner >> a) & 1 == 1;
                                let fr = loc[a] - f[a];
                                w *= if hi { fr } else { 1.0 - fr };
                                p[a] = f[a] as isize + hi as isize;
                            }
                            if w != 0.0 {
                                acc += w * at(b, ch, p);
                            }
                        }
                        out.push(acc);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn zero_field_is_identity() {
    let mut rng = Rng::new(1);
    for shape in [vec![2, 3, 5, 7], vec![1, 2, 5, 4, 7]] {
        let ndim = shape.len() - 2;
        let img = rng.tensor(&shape, -1.0, 1.0, DType::F32);
        let mut dshape = shape.clone();
        dshape[1] = ndim;
        let ddf = Tensor::zeros(dshape.as_slice(), DType::F32, &Device::Cpu).unwrap();
        for interp in [Interp::Linear, Interp::Nearest] {
            for padding in [Padding::Zeros, Padding::Border] {
                let out = warp(&img, &ddf, interp, padding).unwrap();
                assert_eq!(
                    max_abs_diff(&out, &img),
                    0.0,
                    "{shape:?} {interp:?} {padding:?}"
                );
            }
        }
    }
}

#[test]
fn half_voxel_shift_2d_by_hand() {
    // Image 1x3: [1, 2, 4]; shift +0.5 along x (component 1 of a 2D field).
    let img = t(&[1.0, 2.0, 4.0], &[1, 1, 1, 3]);
    let ddf = t(&[0.0, 0.0, 0.0, 0.5, 0.5, 0.5], &[1, 2, 1, 3]);
    let z = warp(&img, &ddf, Interp::Linear, Padding::Zeros).unwrap();
    assert_eq!(values(&z), vec![1.5, 3.0, 2.0]);
    let b = warp(&img, &ddf, Interp::Linear, Padding::Border).unwrap();
    assert_eq!(values(&b), vec![1.5, 3.0, 4.0]);
    // Shift -1 along y (component 0) on a 2x2 image: row 0 reads row -1.
    let img = t(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
    let ddf = t(&[-1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0], &[1, 2, 2, 2]);
    let z = warp(&img, &ddf, Interp::Linear, Padding::Zeros).unwrap();
    assert_eq!(values(&z), vec![0.0, 0.0, 1.0, 2.0]);
    let b = warp(&img, &ddf, Interp::Nearest, Padding::Border).unwrap();
    assert_eq!(values(&b), vec![1.0, 2.0, 1.0, 2.0]);
}

#[test]
fn axis_order_3d_by_hand() {
    // 2x2x2 image with value = 4z + 2y + x; displacing along component i moves along axis i.
    let img = t(&[0., 1., 2., 3., 4., 5., 6., 7.], &[1, 1, 2, 2, 2]);
    for (axis, step) in [(0usize, 4.0), (1, 2.0), (2, 1.0)] {
        let mut u = vec![0.0; 24];
        for v in &mut u[axis * 8..(axis + 1) * 8] {
            *v = 0.25;
        }
        let ddf = t(&u, &[1, 3, 2, 2, 2]);
        let out = warp(&img, &ddf, Interp::Linear, Padding::Border).unwrap();
        let got = values(&out);
        // Voxel 0 samples 0.25 steps along the axis.
        assert!((got[0] - 0.25 * step).abs() < 1e-12, "axis {axis}: {got:?}");
    }
}

#[test]
fn nearest_rounds_ties_to_even() {
    let img = t(&[10.0, 20.0, 30.0, 40.0], &[1, 1, 1, 4]);
    let ddf = t(
        &[0.0; 4]
            .iter()
            .chain(&[0.5, 0.5, 0.49, 0.51])
            .copied()
            .collect::<Vec<_>>(),
        &[1, 2, 1, 4],
    );
    let out = warp(&img, &ddf, Interp::Nearest, Padding::Zeros).unwrap();
    // 0.5 -> 0, 1.5 -> 2, 2.49 -> 2, 3.51 -> 4 (outside: zero).
    assert_eq!(values(&out), vec![10.0, 30.0, 30.0, 0.0]);
}

#[test]
fn matches_reference_on_random_fields() {
    let mut rng = Rng::new(2);
    let cases: [(&[usize], &[usize]); 4] = [
        (&[2, 3, 5, 6, 7], &[2, 3, 6, 5, 4]),
        (&[1, 1, 9, 8, 7], &[1, 3, 9, 8, 7]),
        (&[2, 2, 7, 9], &[2, 2, 8, 5]),
        (&[1, 1, 1, 5], &[1, 2, 3, 5]),
    ];
    for (ishape, dshape) in cases {
        for amp in [1.5, 6.0] {
            let img = rng.tensor(ishape, -1.0, 1.0, DType::F64);
            let ddf = rng.tensor(dshape, -amp, amp, DType::F64);
            for padding in [Padding::Zeros, Padding::Border] {
                let out = warp(&img, &ddf, Interp::Linear, padding).unwrap();
                let want = reference(&img, &ddf, padding);
                let got = values(&out);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-12, "{ishape:?} {padding:?} err {err}");
            }
        }
    }
}

#[test]
fn f32_matches_f64() {
    let mut rng = Rng::new(3);
    let img = rng.tensor(&[1, 2, 6, 7, 8], 0.0, 1.0, DType::F64);
    let ddf = rng.tensor(&[1, 3, 6, 7, 8], -2.0, 2.0, DType::F64);
    let a = warp(&img, &ddf, Interp::Linear, Padding::Zeros).unwrap();
    let img32 = img.to_dtype(DType::F32).unwrap();
    let ddf32 = ddf.to_dtype(DType::F32).unwrap();
    let b = warp(&img32, &ddf32, Interp::Linear, Padding::Zeros).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-5);
}

fn grad_case(ishape: &[usize], dshape: &[usize], amp: f64, interp: Interp, padding: Padding) {
    let mut rng = Rng::new(4 + ishape.len() as u64);
    let img = rng.tensor(ishape, -1.0, 1.0, DType::F64);
    let ddf = rng.tensor(dshape, -amp, amp, DType::F64);
    let f = move |ts: &[Tensor]| warp(&ts[0], &ts[1], interp, padding);
    check_grads(&f, &[img, ddf], 1e-6, 1e-6, &[]);
}

#[test]
fn gradients_3d_linear() {
    grad_case(
        &[1, 2, 4, 5, 3],
        &[1, 3, 4, 5, 3],
        1.5,
        Interp::Linear,
        Padding::Zeros,
    );
    grad_case(
        &[2, 1, 3, 4, 5],
        &[2, 3, 3, 4, 5],
        1.5,
        Interp::Linear,
        Padding::Border,
    );
}

#[test]
fn gradients_2d_linear() {
    grad_case(
        &[2, 2, 5, 7],
        &[2, 2, 5, 7],
        2.0,
        Interp::Linear,
        Padding::Zeros,
    );
    grad_case(
        &[1, 3, 6, 5],
        &[1, 2, 4, 3],
        2.0,
        Interp::Linear,
        Padding::Border,
    );
}

#[test]
fn gradients_large_displacements_merge_scatter_tasks() {
    // Displacements larger than the image make every task touch every row, forcing the
    // scatter plan to merge tasks; the gradient must not change.
    grad_case(
        &[1, 1, 6, 5, 4],
        &[1, 3, 6, 5, 4],
        8.0,
        Interp::Linear,
        Padding::Zeros,
    );
    grad_case(
        &[1, 2, 9, 4],
        &[1, 2, 9, 4],
        12.0,
        Interp::Linear,
        Padding::Border,
    );
}

#[test]
fn gradients_nearest() {
    grad_case(
        &[1, 2, 4, 3, 5],
        &[1, 3, 4, 3, 5],
        1.3,
        Interp::Nearest,
        Padding::Zeros,
    );
    grad_case(
        &[2, 1, 5, 4],
        &[2, 2, 5, 4],
        1.3,
        Interp::Nearest,
        Padding::Border,
    );
    // The field gradient exists and is zero.
    let mut rng = Rng::new(5);
    let img = rng.tensor(&[1, 1, 4, 4], 0.0, 1.0, DType::F64);
    let ddf = Var::from_tensor(&rng.tensor(&[1, 2, 4, 4], -1.0, 1.0, DType::F64)).unwrap();
    let out = warp(&img, &ddf, Interp::Nearest, Padding::Zeros).unwrap();
    let grads = out.sum_all().unwrap().backward().unwrap();
    let g = grads.get(ddf.as_tensor()).unwrap();
    assert!(values(g).iter().all(|v| *v == 0.0));
}

#[test]
fn field_only_gradients_from_kept_slopes() {
    // A single-channel image that does not track gradients: the forward keeps the slopes.
    let mut rng = Rng::new(8);
    for (ishape, dshape, padding) in [
        (&[2, 1, 4, 5, 3][..], &[2, 3, 4, 5, 3][..], Padding::Zeros),
        (&[1, 1, 3, 4, 5], &[1, 3, 4, 3, 5], Padding::Border),
        (&[2, 1, 5, 7], &[2, 2, 5, 7], Padding::Zeros),
        (&[1, 1, 6, 5], &[1, 2, 4, 3], Padding::Border),
    ] {
        let img = rng.tensor(ishape, -1.0, 1.0, DType::F64);
        let ddf = rng.tensor(dshape, -1.5, 1.5, DType::F64);
        let f = move |ts: &[Tensor]| warp(&ts[0].detach(), &ts[1], Interp::Linear, padding);
        check_grads(&f, &[img, ddf], 1e-6, 1e-6, &[0]);
    }
}

#[test]
fn kept_slopes_equal_the_gathered_field_gradient_of_a_unit_output_gradient() {
    let mut rng = Rng::new(10);
    for (is, ds, padding) in [
        (&[2, 1, 4, 5, 6][..], &[2, 3, 5, 4, 6][..], Padding::Zeros),
        (&[1, 1, 7, 6], &[1, 2, 6, 7], Padding::Border),
    ] {
        let img = values(&rng.tensor(is, -1.0, 1.0, DType::F64));
        let ddf = values(&rng.tensor(ds, -2.0, 2.0, DType::F64));
        let geo = Geometry::new(is, ds);
        let op = Warp {
            interp: Interp::Linear,
            padding,
            slope: Some(KeptSlope::default()),
        };
        let out = op.forward(&img, &ddf, geo);
        let plain = Warp { slope: None, ..op };
        assert_eq!(out, plain.forward(&img, &ddf, geo));
        let ones = vec![1.0; out.len()];
        let gathered = WarpBackward {
            interp: Interp::Linear,
            padding,
            want_img: false,
            want_ddf: true,
        }
        .run(&img, &ddf, &ones, geo);
        let gout = Tensor::from_vec(ones, geo.n * geo.dst_vol(), &Device::Cpu).unwrap();
        let mut grad_dims = ds.to_vec();
        grad_dims[1] = 1;
        let kept = plain
            .slope
            .unwrap_or_default()
            .take_scaled(&gout.reshape(grad_dims.as_slice()).unwrap(), ds[1])
            .unwrap();
        assert!(kept.is_none(), "a plain warp keeps nothing");
        let kept = op
            .slope
            .as_ref()
            .unwrap()
            .take_scaled(&gout.reshape(grad_dims.as_slice()).unwrap(), ds[1])
            .unwrap()
            .expect("kept slopes");
        assert_eq!(values(&kept), gathered);
    }
}

#[test]
fn a_second_backward_recomputes_the_kept_field_gradient() {
    let mut rng = Rng::new(9);
    let img = rng.tensor(&[1, 1, 5, 6, 7], 0.0, 1.0, DType::F32);
    let ddf = Var::from_tensor(&rng.tensor(&[1, 3, 5, 6, 7], -2.0, 2.0, DType::F32)).unwrap();
    let w = rng.tensor(&[1, 1, 5, 6, 7], -1.0, 1.0, DType::F32);
    let out = warp(&img, &ddf, Interp::Linear, Padding::Zeros).unwrap();
    let loss = (out * &w).unwrap().sum_all().unwrap();
    let kept = loss.backward().unwrap();
    let recomputed = loss.backward().unwrap();
    let (a, b) = (
        kept.get(ddf.as_tensor()).unwrap(),
        recomputed.get(ddf.as_tensor()).unwrap(),
    );
    assert!(max_abs_diff(a, b) < 1e-6, "{}", max_abs_diff(a, b));
}

#[test]
fn image_only_and_field_only_gradients_agree_with_joint() {
    let mut rng = Rng::new(6);
    let img = Var::from_tensor(&rng.tensor(&[1, 2, 5, 6, 7], 0.0, 1.0, DType::F32)).unwrap();
    let ddf = Var::from_tensor(&rng.tensor(&[1, 3, 5, 6, 7], -2.0, 2.0, DType::F32)).unwrap();
    let w = rng.tensor(&[1, 2, 5, 6, 7], -1.0, 1.0, DType::F32);
    let loss = |a: &Tensor, b: &Tensor| {
        (warp(a, b, Interp::Linear, Padding::Zeros).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let joint = loss(img.as_tensor(), ddf.as_tensor()).backward().unwrap();
    let only_img = loss(img.as_tensor(), &ddf.as_tensor().detach())
        .backward()
        .unwrap();
    let only_ddf = loss(&img.as_tensor().detach(), ddf.as_tensor())
        .backward()
        .unwrap();
    let gi = joint.get(img.as_tensor()).unwrap();
    let gd = joint.get(ddf.as_tensor()).unwrap();
    assert_eq!(
        max_abs_diff(gi, only_img.get(img.as_tensor()).unwrap()),
        0.0
    );
    assert_eq!(
        max_abs_diff(gd, only_ddf.get(ddf.as_tensor()).unwrap()),
        0.0
    );
    assert!(only_img.get(ddf.as_tensor()).is_none());
}

#[test]
fn non_contiguous_and_f32_gradients() {
    let mut rng = Rng::new(7);
    let img = rng.tensor(&[1, 2, 5, 6], -1.0, 1.0, DType::F32);
    let ddf = rng.tensor(&[1, 2, 6, 5], -1.5, 1.5, DType::F32);
    // A transposed (non-contiguous) field gives the same result as its contiguous copy.
    let ddf_t = ddf.transpose(2, 3).unwrap();
    assert!(!ddf_t.is_contiguous());
    let a = warp(&img, &ddf_t, Interp::Linear, Padding::Zeros).unwrap();
    let b = warp(
        &img,
        &ddf_t.contiguous().unwrap(),
        Interp::Linear,
        Padding::Zeros,
    )
    .unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    // f32 gradients agree with the f64 ones to f32 precision.
    let grads = |dtype: DType| {
        let i = Var::from_tensor(&img.to_dtype(dtype).unwrap()).unwrap();
        let d = Var::from_tensor(&ddf_t.to_dtype(dtype).unwrap()).unwrap();
        let out = warp(
            i.as_tensor(),
            d.as_tensor(),
            Interp::Linear,
            Padding::Border,
        )
        .unwrap();
        let g = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        (
            g.get(i.as_tensor()).unwrap().clone(),
            g.get(d.as_tensor()).unwrap().clone(),
        )
    };
    let (i32g, d32g) = grads(DType::F32);
    let (i64g, d64g) = grads(DType::F64);
    assert!(max_abs_diff(&i32g, &i64g) < 1e-4);
    assert!(max_abs_diff(&d32g, &d64g) < 1e-4);
}

#[test]
fn bad_shapes_are_errors() {
    let img = Tensor::zeros((1, 1, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let good = Tensor::zeros((1, 3, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let two = Tensor::zeros((1, 2, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let batch = Tensor::zeros((2, 3, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let rank = Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let f64s = Tensor::zeros((1, 3, 4, 4, 4), DType::F64, &Device::Cpu).unwrap();
    let flat = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(warp(&img, &good, Interp::Linear, Padding::Zeros).is_ok());
    for bad in [&two, &batch, &rank, &f64s] {
        assert!(warp(&img, bad, Interp::Linear, Padding::Zeros).is_err());
    }
    assert!(warp(&flat, &good, Interp::Linear, Padding::Zeros).is_err());
    let ints = Tensor::zeros((1, 1, 4, 4, 4), DType::U32, &Device::Cpu).unwrap();
    assert!(warp(&ints, &good, Interp::Linear, Padding::Zeros).is_err());
}
