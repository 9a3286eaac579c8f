//! Benchmarks of the spatial ops on the peer workloads of `benches/peer/README.md` (peer: PyTorch).
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench -p voxreg-framework --bench ops`; the PyTorch
//! side of the extra workloads (pooling, resize, separable filter) is `framework/benches/peer_ops.py`,
//! the rest is `benches/peer/bench_peer.py`. Results: `docs/src/benchmarks.md`.
//!

#![allow(missing_docs)]

mod support;

use candle_core::{Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use support::{backward_with, uniform};
use voxreg_framework::ops::{
    avg_pool, batch_norm, conv, max_pool, rectangular_kernel, resize, separable_filter, warp,
    Align, Interp, Padding, ResizeMode,
};

fn bench_warp(c: &mut Criterion) {
    let mut g = c.benchmark_group("b_warp");
    g.sample_size(20);
    let img = uniform(&[1, 1, 128, 128, 128], 0.0, 1.0, 1);
    let ddf = uniform(&[1, 3, 128, 128, 128], -2.0, 2.0, 2);
    let gout = uniform(&[1, 1, 128, 128, 128], -1.0, 1.0, 3);
    g.bench_function("b_warp_fwd", |b| {
        b.iter(|| warp(&img, &ddf, Interp::Linear, Padding::Zeros).expect("warp"))
    });
    let ddf_var = Var::from_tensor(&ddf).expect("var");
    g.bench_function("b_warp_fwd_bwd", |b| {
        b.iter(|| {
            let out =
                warp(&img, ddf_var.as_tensor(), Interp::Linear, Padding::Zeros).expect("warp");
            backward_with(&out, &gout)
        })
    });
    let img_var = Var::from_tensor(&img).expect("var");
    g.bench_function("b_warp_fwd_bwd_image_and_ddf", |b| {
        b.iter(|| {
            let out = warp(
                img_var.as_tensor(),
                ddf_var.as_tensor(),
                Interp::Linear,
                Padding::Zeros,
            )
            .expect("warp");
            backward_with(&out, &gout)
        })
    });
    g.finish();
}

/// (a) conv3d x (1,16,64^3) * w (16,16,3^3), stride 1, padding 1, no bias.
fn bench_conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("a_conv3d");
    g.sample_size(10);
    let x = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 4);
    let w = uniform(&[16, 16, 3, 3, 3], -0.08, 0.08, 5);
    let gout = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 6);
    let pad = [(1, 1); 3];
    g.bench_function("a_conv3d_fwd", |b| {
        b.iter(|| conv(&x, &w, None, &[1, 1, 1], &pad).expect("conv"))
    });
    let xv = Var::from_tensor(&x).expect("var");
    let wv = Var::from_tensor(&w).expect("var");
    g.bench_function("a_conv3d_fwd_bwd", |b| {
        b.iter(|| {
            let y = conv(xv.as_tensor(), wv.as_tensor(), None, &[1, 1, 1], &pad).expect("conv");
            backward_with(&y, &gout)
        })
    });
    g.finish();
}

/// conv2d at atlalign's full resolution: the global network's first block at batch 4
/// (x (4,16,320,456) * w (16,16,3,3)) and the local U-Net's first convolution at batch 1
/// (x (1,2,320,448) * w (16,2,3,3)), stride 1, padding 1, no bias; forward + backward of x
/// and w (peer: `framework/benches/peer_ops.py`).
fn bench_conv2d(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv2d_atlalign");
    g.sample_size(10);
    let pad = [(1, 1); 2];
    for (name, x_shape, w_shape) in [
        ("conv2d_16_16_b4_320x456", [4, 16, 320, 456], [16, 16, 3, 3]),
        ("conv2d_2_16_b1_320x448", [1, 2, 320, 448], [16, 2, 3, 3]),
    ] {
        let x = uniform(&x_shape, -1.0, 1.0, 7);
        let w = uniform(&w_shape, -0.1, 0.1, 8);
        let mut out_shape = x_shape;
        out_shape[1] = w_shape[0];
        let gout = uniform(&out_shape, -1.0, 1.0, 9);
        g.bench_function(format!("{name}_fwd"), |b| {
            b.iter(|| conv(&x, &w, None, &[1, 1], &pad).expect("conv"))
        });
        let xv = Var::from_tensor(&x).expect("var");
        let wv = Var::from_tensor(&w).expect("var");
        g.bench_function(format!("{name}_fwd_bwd"), |b| {
            b.iter(|| {
                let y = conv(xv.as_tensor(), wv.as_tensor(), None, &[1, 1], &pad).expect("conv");
                backward_with(&y, &gout)
            })
        });
    }
    g.finish();
}

/// Pooling, resize and separable filtering (peer: `benches/peer_ops.py`).
fn bench_small_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("ops");
    g.sample_size(10);
    // Max pooling, kernel 2 stride 2, (1,16,64^3) -> 32^3.
    let x = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 7);
    let gp = uniform(&[1, 16, 32, 32, 32], -1.0, 1.0, 8);
    let xv = Var::from_tensor(&x).expect("var");
    g.bench_function("maxpool3d_k2_fwd_bwd", |b| {
        b.iter(|| {
            let y = max_pool(xv.as_tensor(), &[2, 2, 2], &[2, 2, 2], &[(0, 0); 3]).expect("pool");
            backward_with(&y, &gp)
        })
    });
    // Average pooling, the same shapes.
    g.bench_function("avgpool3d_k2_fwd_bwd", |b| {
        b.iter(|| {
            let y = avg_pool(xv.as_tensor(), &[2, 2, 2], &[2, 2, 2], &[(0, 0); 3]).expect("pool");
            backward_with(&y, &gp)
        })
    });
    // General pooling: overlapping windows 3^3, stride 2, padding 1, the same shapes.
    g.bench_function("maxpool3d_k3s2p1_fwd_bwd", |b| {
        b.iter(|| {
            let y = max_pool(xv.as_tensor(), &[3, 3, 3], &[2, 2, 2], &[(1, 1); 3]).expect("pool");
            backward_with(&y, &gp)
        })
    });
    g.bench_function("avgpool3d_k3s2p1_fwd_bwd", |b| {
        b.iter(|| {
            let y = avg_pool(xv.as_tensor(), &[3, 3, 3], &[2, 2, 2], &[(1, 1); 3]).expect("pool");
            backward_with(&y, &gp)
        })
    });
    // Trilinear 2x up-sampling (half-pixel), (1,32,32^3) -> 64^3.
    let u = uniform(&[1, 32, 32, 32, 32], -1.0, 1.0, 9);
    let gu = uniform(&[1, 32, 64, 64, 64], -1.0, 1.0, 10);
    let uv = Var::from_tensor(&u).expect("var");
    g.bench_function("resize_trilinear_x2_fwd_bwd", |b| {
        b.iter(|| {
            let y = resize(
                uv.as_tensor(),
                &[64, 64, 64],
                ResizeMode::Linear,
                Align::HalfPixel,
            )
            .expect("resize");
            backward_with(&y, &gu)
        })
    });
    // Separable box filter, 9 taps per axis, (1,1,128^3) (the LNCC window).
    let f = uniform(&[1, 1, 128, 128, 128], 0.0, 1.0, 11);
    let gf = uniform(&[1, 1, 128, 128, 128], -1.0, 1.0, 12);
    let fv = Var::from_tensor(&f).expect("var");
    let k = rectangular_kernel(9);
    g.bench_function("separable_box9_128_fwd", |b| {
        b.iter(|| separable_filter(&f, &k).expect("filter"))
    });
    g.bench_function("separable_box9_128_fwd_bwd", |b| {
        b.iter(|| {
            let y = separable_filter(fv.as_tensor(), &k).expect("filter");
            backward_with(&y, &gf)
        })
    });
    g.finish();
}

/// Batch norm (batch statistics, ε = 1e-3) + ReLU built from candle primitives, as
/// `voxreg-models` did before the fused op.
fn batch_norm_relu_primitives(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (n, c) = (dims[0], dims[1]);
    let flat = x.reshape((n, c, ()))?;
    let mean = flat.mean_keepdim(2)?.mean_keepdim(0)?;
    let centred = flat.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(2)?.mean_keepdim(0)?;
    let scale = (var + 1e-3)?
        .sqrt()?
        .recip()?
        .broadcast_mul(&gamma.reshape((1, c, 1))?)?;
    centred
        .broadcast_mul(&scale)?
        .broadcast_add(&beta.reshape((1, c, 1))?)?
        .reshape(dims)?
        .relu()
}

/// Batch norm + ReLU forward and backward (gradients of x, gamma and beta) on (1,16,64^3):
/// the fused op against the candle-primitive formula.
fn bench_batch_norm(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_norm");
    g.sample_size(10);
    let x = Var::from_tensor(&uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 13)).expect("var");
    let gamma = Var::from_tensor(&uniform(&[16], 0.5, 1.5, 14)).expect("var");
    let beta = Var::from_tensor(&uniform(&[16], -0.5, 0.5, 15)).expect("var");
    let gout = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 16);
    g.bench_function("batch_norm_relu_fused_fwd_bwd", |b| {
        b.iter(|| {
            let y = batch_norm(
                x.as_tensor(),
                gamma.as_tensor(),
                beta.as_tensor(),
                1e-3,
                true,
            )
            .expect("batch norm");
            backward_with(&y, &gout)
        })
    });
    g.bench_function("batch_norm_relu_primitives_fwd_bwd", |b| {
        b.iter(|| {
            let y = batch_norm_relu_primitives(x.as_tensor(), gamma.as_tensor(), beta.as_tensor())
                .expect("batch norm");
            backward_with(&y, &gout)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Measure what the `voxreg` binary runs: its allocation policy (`VOXREG_SYSTEM_MALLOC=1`
    // measures glibc's default instead).
    config = {
        voxreg_framework::allocator::apply();
        Criterion::default()
    };
    targets = bench_warp, bench_conv, bench_conv2d, bench_small_ops, bench_batch_norm
}
criterion_main!(benches);
