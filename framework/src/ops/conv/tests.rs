use super::*;
use crate::ops::common::testing::{check_grads, max_abs_diff, values, Rng};
use candle_core::{DType, Device};

/// Direct-loop reference convolution in f64 (3D view of 2D shapes).
fn reference(x: &Tensor, w: &Tensor, stride: &[usize], padding: &[(usize, usize)]) -> Tensor {
    let (xd, wd) = (x.dims().to_vec(), w.dims().to_vec());
    let nd = xd.len() - 2;
    let off = 3 - nd;
    let (inp, k) = (dims3(&xd), dims3(&wd));
    let mut s = [1; 3];
    let mut lo = [0isize; 3];
    let mut hi = [0; 3];
    for a in 0..nd {
        s[off + a] = stride[a];
        lo[off + a] = padding[a].0 as isize;
        hi[off + a] = padding[a].1;
    }
    let out: Vec<usize> = (0..3)
        .map(|a| (inp[a] + lo[a] as usize + hi[a] - k[a]) / s[a] + 1)
        .collect();
    let xv = values(x);
    let wv = values(w);
    let (n, cin, cout) = (xd[0], xd[1], wd[0]);
    let mut y = Vec::new();
    for b in 0..n {
        for co in 0..cout {
            for oz in 0..out[0] {
                for oy in 0..out[1] {
                    for ox in 0..out[2] {
                        let mut acc = 0.0;
                        for ci in 0..cin {
                            for kz in 0..k[0] {
                                for ky in 0..k[1] {
                                    for kx in 0..k[2] {
                                        let iz = (oz * s[0] + kz) as isize - lo[0];
                                        let iy = (oy * s[1] + ky) as isize - lo[1];
                                        let ix = (ox * s[2] + kx) as isize - lo[2];
                                        if iz < 0
                                            || iy < 0
                                            || ix < 0
                                            || iz >= inp[0] as isize
                                            || iy >= inp[1] as isize
                                            || ix >= inp[2] as isize
                                        {
                                            continue;
                                        }
                                        let xi = (((b * cin + ci) * inp[0] + iz as usize) * inp[1]
                                            + iy as usize)
                                            * inp[2]
                                            + ix as usize;
                                        let wi =
                                            (((co * cin + ci) * k[0] + kz) * k[1] + ky) * k[2] + kx;
                                        acc += xv[xi] * wv[wi];
                                    }
                                }
                            }
                        }
                        y.push(acc);
                    }
                }
            }
        }
    }
    let mut shape = vec![n, cout];
    shape.extend_from_slice(&out[off..]);
    Tensor::from_vec(y, shape, &Device::Cpu).unwrap()
}

#[test]
fn hand_computed_2d() {
    // x = 1..9 on 3x3, w = [[1, 0], [0, -1]], no padding: y[i, j] = x[i, j] - x[i+1, j+1].
    let x = Tensor::arange(1.0f64, 10.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 3, 3))
        .unwrap();
    let w = Tensor::new(&[1.0f64, 0.0, 0.0, -1.0], &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 2, 2))
        .unwrap();
    let y = conv(&x, &w, None, &[1, 1], &valid_padding(2)).unwrap();
    assert_eq!(y.dims(), &[1, 1, 2, 2]);
    assert_eq!(values(&y), vec![-4.0; 4]);
    // Same padding (lo 0, hi 1) and a bias.
    let b = Tensor::new(&[0.5f64], &Device::Cpu).unwrap();
    let pad = same_padding(&[3, 3], &[2, 2], &[1, 1]);
    assert_eq!(pad, vec![(0, 1), (0, 1)]);
    let y = conv(&x, &w, Some(&b), &[1, 1], &pad).unwrap();
    assert_eq!(
        values(&y),
        vec![-3.5, -3.5, 3.5, -3.5, -3.5, 6.5, 7.5, 8.5, 9.5]
    );
}

#[test]
fn matches_reference_2d_and_3d() {
    let mut rng = Rng::new(10);
    type Case = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<(usize, usize)>);
    let cases: Vec<Case> = vec![
        (
            vec![2, 3, 7, 6],
            vec![4, 3, 3, 3],
            vec![1, 1],
            vec![(1, 1), (1, 1)],
        ),
        (
            vec![1, 2, 9, 8],
            vec![3, 2, 3, 2],
            vec![2, 3],
            vec![(0, 2), (1, 0)],
        ),
        (
            vec![1, 2, 5, 6, 7],
            vec![3, 2, 3, 3, 3],
            vec![1, 1, 1],
            vec![(1, 1); 3],
        ),
        (
            vec![2, 1, 7, 5, 6],
            vec![2, 1, 2, 3, 1],
            vec![2, 1, 3],
            vec![(1, 0), (0, 2), (0, 0)],
        ),
        (
            vec![1, 3, 4, 4, 4],
            vec![2, 3, 1, 1, 1],
            vec![1, 1, 1],
            vec![(0, 0); 3],
        ),
    ];
    for (xs, ws, st, pad) in cases {
        let x = rng.tensor(&xs, -1.0, 1.0, DType::F64);
        let w = rng.tensor(&ws, -1.0, 1.0, DType::F64);
        let y = conv(&x, &w, None, &st, &pad).unwrap();
        let r = reference(&x, &w, &st, &pad);
        assert_eq!(y.dims(), r.dims(), "{xs:?} {ws:?}");
        assert!(max_abs_diff(&y, &r) < 1e-12, "{xs:?} {ws:?}");
        let y32 = conv(
            &x.to_dtype(DType::F32).unwrap(),
            &w.to_dtype(DType::F32).unwrap(),
            None,
            &st,
            &pad,
        )
        .unwrap();
        assert!(max_abs_diff(&y32, &r) < 1e-5);
    }
}

#[test]
fn matches_candle_conv2d() {
    let mut rng = Rng::new(11);
    let x = rng.tensor(&[2, 3, 9, 10], -1.0, 1.0, DType::F32);
    let w = rng.tensor(&[5, 3, 3, 3], -1.0, 1.0, DType::F32);
    let ours = conv(&x, &w, None, &[2, 2], &[(1, 1), (1, 1)]).unwrap();
    let theirs = x.conv2d(&w, 1, 2, 1, 1).unwrap();
    assert!(max_abs_diff(&ours, &theirs) < 1e-5);
}

#[test]
fn transpose_matches_candle_and_is_the_adjoint() {
    let mut rng = Rng::new(12);
    let x = rng.tensor(&[1, 4, 5, 6], -1.0, 1.0, DType::F32);
    let w = rng.tensor(&[4, 3, 3, 3], -1.0, 1.0, DType::F32);
    let ours = conv_transpose(&x, &w, None, &[2, 2], &[(1, 1), (1, 1)], &[1, 1]).unwrap();
    let theirs = x.conv_transpose2d(&w, 1, 1, 2, 1).unwrap();
    assert_eq!(ours.dims(), &[1, 3, 10, 12]);
    assert!(max_abs_diff(&ours, &theirs) < 1e-5);
    // <conv(a), b> == <a, conv_transpose(b)> in 3D with a stride and asymmetric padding.
    let w = rng.tensor(&[3, 2, 3, 2, 3], -1.0, 1.0, DType::F64);
    let a = rng.tensor(&[2, 2, 7, 6, 8], -1.0, 1.0, DType::F64);
    let (st, pad) = ([2, 1, 3], [(1, 0), (0, 1), (2, 1)]);
    let ca = conv(&a, &w, None, &st, &pad).unwrap();
    let b = rng.tensor(ca.dims(), -1.0, 1.0, DType::F64);
    let mut op = vec![];
    for ax in 0..3 {
        // Pick output_padding so the transposed output has the size of `a`.
        let base = (ca.dims()[2 + ax] - 1) * st[ax] + w.dims()[2 + ax] - pad[ax].0 - pad[ax].1;
        op.push(a.dims()[2 + ax] - base);
    }
    let tb = conv_transpose(&b, &w, None, &st, &pad, &op).unwrap();
    assert_eq!(tb.dims(), a.dims());
    let lhs = (ca * &b)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let rhs = (a * tb)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((lhs - rhs).abs() < 1e-10, "{lhs} vs {rhs}");
}

#[test]
fn up_padding_doubles_the_size() {
    let mut rng = Rng::new(13);
    for k in [2usize, 3, 4, 1] {
        let (pad, op) = up_padding(&[k, k, k], &[2, 2, 2]);
        let x = rng.tensor(&[1, 2, 3, 4, 5], -1.0, 1.0, DType::F32);
        let w = rng.tensor(&[2, 1, k, k, k], -1.0, 1.0, DType::F32);
        let y = conv_transpose(&x, &w, None, &[2, 2, 2], &pad, &op).unwrap();
        assert_eq!(y.dims(), &[1, 1, 6, 8, 10], "k = {k}");
    }
}

#[test]
fn gradients_2d() {
    let mut rng = Rng::new(14);
    let x = rng.tensor(&[2, 2, 5, 6], -1.0, 1.0, DType::F64);
    let w = rng.tensor(&[3, 2, 3, 2], -1.0, 1.0, DType::F64);
    let b = rng.tensor(&[3], -1.0, 1.0, DType::F64);
    let f = |t: &[Tensor]| conv(&t[0], &t[1], Some(&t[2]), &[2, 1], &[(1, 1), (0, 1)]);
    check_grads(&f, &[x, w, b], 1e-6, 1e-7, &[]);
}

#[test]
fn gradients_3d() {
    let mut rng = Rng::new(15);
    let x = rng.tensor(&[1, 2, 4, 5, 3], -1.0, 1.0, DType::F64);
    let w = rng.tensor(&[2, 2, 3, 3, 2], -1.0, 1.0, DType::F64);
    let f = |t: &[Tensor]| conv(&t[0], &t[1], None, &[1, 2, 1], &[(1, 1), (1, 1), (1, 0)]);
    check_grads(&f, &[x, w], 1e-6, 1e-7, &[]);
}

#[test]
fn transpose_gradients_2d_and_3d() {
    let mut rng = Rng::new(16);
    let x = rng.tensor(&[1, 2, 3, 4], -1.0, 1.0, DType::F64);
    let w = rng.tensor(&[2, 3, 3, 3], -1.0, 1.0, DType::F64);
    let b = rng.tensor(&[3], -1.0, 1.0, DType::F64);
    let f = |t: &[Tensor]| {
        conv_transpose(
            &t[0],
            &t[1],
            Some(&t[2]),
            &[2, 2],
            &[(1, 1), (1, 1)],
            &[1, 0],
        )
    };
    check_grads(&f, &[x, w, b], 1e-6, 1e-7, &[]);
    let x = rng.tensor(&[1, 2, 2, 3, 2], -1.0, 1.0, DType::F64);
    let w = rng.tensor(&[2, 2, 2, 2, 2], -1.0, 1.0, DType::F64);
    let (pad, op) = up_padding(&[2, 2, 2], &[2, 2, 2]);
    let f = |t: &[Tensor]| conv_transpose(&t[0], &t[1], None, &[2, 2, 2], &pad, &op);
    check_grads(&f, &[x, w], 1e-6, 1e-7, &[]);
}

#[test]
fn many_tiles_and_batches_match_candle_autograd() {
    // Enough channels and rows that the column tiles split the output (several tiles per
    // batch item), with gradients checked against candle's own conv2d backward.
    let mut rng = Rng::new(17);
    let x = candle_core::Var::from_tensor(&rng.tensor(&[2, 64, 45, 11], -1.0, 1.0, DType::F32))
        .unwrap();
    let w =
        candle_core::Var::from_tensor(&rng.tensor(&[8, 64, 3, 3], -0.1, 0.1, DType::F32)).unwrap();
    let g = rng.tensor(&[2, 8, 45, 11], -1.0, 1.0, DType::F32);
    let core = Core::forward(
        &ConvSpec {
            ndim: 2,
            stride: [1; 3],
            lo: [0, 1, 1],
            hi: [0, 1, 1],
        },
        x.dims(),
        8,
        [1, 3, 3],
    );
    assert!(
        core.tile_rows() < core.rows(),
        "test must span several tiles"
    );
    let ours = conv(
        x.as_tensor(),
        w.as_tensor(),
        None,
        &[1, 1],
        &[(1, 1), (1, 1)],
    )
    .unwrap();
    let theirs = x.as_tensor().conv2d(w.as_tensor(), 1, 1, 1, 1).unwrap();
    assert!(max_abs_diff(&ours, &theirs) < 1e-4);
    let ga = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let gb = (theirs * &g)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for v in [x.as_tensor(), w.as_tensor()] {
        let (a, b) = (ga.get(v).unwrap(), gb.get(v).unwrap());
        let scale = values(b).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(a, b) < 1e-5 * (1.0 + scale), "{:?}", v.dims());
    }
}

#[test]
fn f32_stride_one_path_matches_f64_with_gradients() {
    // f32 stride-1 convolutions run the direct kernels, f64 the im2col path: forward and
    // both gradients must agree (3D, odd sizes, channels not multiples of the SIMD width).
    let mut rng = Rng::new(19);
    let x64 = rng.tensor(&[2, 3, 5, 6, 7], -1.0, 1.0, DType::F64);
    let w64 = rng.tensor(&[5, 3, 3, 2, 3], -1.0, 1.0, DType::F64);
    let g64 = rng.tensor(&[2, 5, 5, 6, 7], -1.0, 1.0, DType::F64);
    let pad = [(1, 1), (0, 1), (1, 1)];
    let run = |dt: DType| {
        let x = candle_core::Var::from_tensor(&x64.to_dtype(dt).unwrap()).unwrap();
        let w = candle_core::Var::from_tensor(&w64.to_dtype(dt).unwrap()).unwrap();
        let y = conv(x.as_tensor(), w.as_tensor(), None, &[1, 1, 1], &pad).unwrap();
        let g = g64.to_dtype(dt).unwrap();
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = grads
            .get(x.as_tensor())
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let gw = grads
            .get(w.as_tensor())
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        (y.to_dtype(DType::F64).unwrap(), gx, gw)
    };
    let (y32, gx32, gw32) = run(DType::F32);
    let (y64, gx64, gw64) = run(DType::F64);
    assert_eq!(y32.dims(), &[2, 5, 5, 6, 7]);
    assert!(max_abs_diff(&y32, &y64) < 1e-5);
    assert!(max_abs_diff(&gx32, &gx64) < 1e-5);
    assert!(max_abs_diff(&gw32, &gw64) < 1e-4);
}

#[test]
fn winograd_path_matches_f64_with_gradients() {
    // 3³ stride-1 f32 convolutions wide enough for the lanes and with 16 channels each way
    // run the Winograd kernels (forward, input gradient, weight gradient), f64 the im2col
    // path: all three must agree through the public op and candle's backward.
    let mut rng = Rng::new(21);
    let x64 = rng.tensor(&[1, 16, 3, 4, 64], -1.0, 1.0, DType::F64);
    let w64 = rng.tensor(&[16, 16, 3, 3, 3], -0.2, 0.2, DType::F64);
    let g64 = rng.tensor(&[1, 16, 3, 4, 64], -1.0, 1.0, DType::F64);
    let pad = [(1, 1); 3];
    let core = Core::forward(
        &ConvSpec {
            ndim: 3,
            stride: [1; 3],
            lo: [1; 3],
            hi: [1; 3],
        },
        x64.dims(),
        16,
        [3; 3],
    );
    assert!(winograd::pays_off(&core, Isa::detect()));
    assert!(winograd_weight::pays_off(&core, Isa::detect()));
    let run = |dt: DType| {
        let x = candle_core::Var::from_tensor(&x64.to_dtype(dt).unwrap()).unwrap();
        let w = candle_core::Var::from_tensor(&w64.to_dtype(dt).unwrap()).unwrap();
        let y = conv(x.as_tensor(), w.as_tensor(), None, &[1, 1, 1], &pad).unwrap();
        let grads = (&y * g64.to_dtype(dt).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let as64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        (
            as64(&y),
            as64(grads.get(x.as_tensor()).unwrap()),
            as64(grads.get(w.as_tensor()).unwrap()),
        )
    };
    let (y32, gx32, gw32) = run(DType::F32);
    let (y64, gx64, gw64) = run(DType::F64);
    for (name, a, b) in [("y", y32, y64), ("dx", gx32, gx64), ("dw", gw32, gw64)] {
        let scale = values(&b).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&a, &b);
        assert!(
            diff < 1e-5 * (1.0 + scale),
            "{name}: {diff} (scale {scale})"
        );
    }
}

#[test]
fn im2col_weight_gradient_does_not_depend_on_the_thread_count() {
    let mut rng = Rng::new(20);
    let x = rng.tensor(&[2, 3, 9, 10, 11], -1.0, 1.0, DType::F64);
    let w = rng.tensor(&[4, 3, 3, 3, 3], -1.0, 1.0, DType::F64);
    let x = candle_core::Var::from_tensor(&x).unwrap();
    let w = candle_core::Var::from_tensor(&w).unwrap();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let y = conv(x.as_tensor(), w.as_tensor(), None, &[2, 2, 2], &[(1, 1); 3]).unwrap();
                let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                values(grads.get(w.as_tensor()).unwrap())
            })
    };
    let one = run(1);
    assert_eq!(one, run(3));
    assert_eq!(one, run(5));
}

#[test]
fn non_contiguous_inputs() {
    let mut rng = Rng::new(18);
    let x = rng.tensor(&[1, 2, 6, 5], -1.0, 1.0, DType::F64);
    let w = rng.tensor(&[3, 2, 3, 3], -1.0, 1.0, DType::F64);
    let xt = x
        .transpose(2, 3)
        .unwrap()
        .contiguous()
        .unwrap()
        .transpose(2, 3)
        .unwrap();
    assert!(!xt.is_contiguous());
    let p = [(1, 1), (1, 1)];
    let a = conv(&x, &w, None, &[1, 1], &p).unwrap();
    let b = conv(&xt, &w, None, &[1, 1], &p).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn bad_arguments_are_errors() {
    let x = Tensor::zeros((1, 2, 5, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((3, 2, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let p = vec![(1, 1); 3];
    assert!(conv(&x, &w, None, &[1, 1, 1], &p).is_ok());
    let w_bad_c = Tensor::zeros((3, 4, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(conv(&x, &w_bad_c, None, &[1, 1, 1], &p).is_err());
    let w_2d = Tensor::zeros((3, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(conv(&x, &w_2d, None, &[1, 1, 1], &p).is_err());
    assert!(conv(&x, &w, None, &[1, 1], &p).is_err());
    assert!(conv(&x, &w, None, &[1, 0, 1], &p).is_err());
    let big = Tensor::zeros((3, 2, 9, 3, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(conv(&x, &big, None, &[1, 1, 1], &p).is_err());
    let bias = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    assert!(conv(&x, &w, Some(&bias), &[1, 1, 1], &p).is_err());
    let w64 = w.to_dtype(DType::F64).unwrap();
    assert!(conv(&x, &w64, None, &[1, 1, 1], &p).is_err());
    let wt = Tensor::zeros((2, 3, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(conv_transpose(&x, &wt, None, &[2, 2, 2], &p, &[2, 0, 0]).is_err());
    assert!(conv_transpose(&x, &wt, None, &[2, 2, 2], &p, &[1, 0, 0]).is_ok());
}
