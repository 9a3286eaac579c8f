//! Benchmarks of the spatial ops on the workloads of `shared/bench/README.md` (peer: PyTorch).
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench -p voxreg-framework --bench ops`.
//!
//! The framework is a `dylib`; an executable that links it needs `-C prefer-dynamic` for the
//! whole build (one copy of std). Until the workspace sets that, the bench compiles the `ops`
//! module's source into itself (the same code, built with the same profile) and uses candle
//! directly, so `cargo bench` works without extra flags.

#![allow(missing_docs)]

#[allow(dead_code, unused_imports)]
#[path = "../src/ops/mod.rs"]
mod ops;

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use ops::{warp, Interp, Padding};

fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)) as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

/// `out.backward(gout)` as in PyTorch: a scalar node whose gradient w.r.t. `out` is `gout`
/// (candle's `backward` starts from a scalar; multiplying by `gout` and summing would add two
/// full passes and a broadcast that the peer does not do).
struct SeedGrad(Tensor);

impl candle_core::CustomOp1 for SeedGrad {
    fn name(&self) -> &'static str {
        "seed-grad"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        Ok((candle_core::CpuStorage::F32(vec![0.0]), ().into()))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.0.clone()))
    }
}

fn backward_with(out: &Tensor, gout: &Tensor) {
    out.apply_op1(SeedGrad(gout.clone()))
        .and_then(|s| s.backward())
        .expect("backward");
}

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

criterion_group!(benches, bench_warp);
criterion_main!(benches);
