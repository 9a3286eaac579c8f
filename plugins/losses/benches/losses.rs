//! Loss benchmarks on the workloads of `benches/peer/bench_peer.py` (peer: MONAI), forward +
//! backward:
//! (c) LNCC with a rectangular window of 9 on two (1, 1, 128³) images, gradient w.r.t. the
//! warped image; (d) bending energy of a (1, 3, 128³) DDF.
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench -p voxreg-losses --bench losses`; the
//! `loss_probe` example runs one of them per process, for peak RSS and CPU time.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion};
use voxreg_framework::candle::{Device, Tensor, Var};
use voxreg_framework::prelude::*;
use voxreg_losses::{BendingConfig, LnccConfig, LnccKernel};

fn losses(c: &mut Criterion) {
    let device = Device::Cpu;
    let mut group = c.benchmark_group("losses");
    group.sample_size(10);

    let lncc = LnccConfig {
        kernel_size: 9,
        kernel_type: LnccKernel::Rectangular,
        smooth_nr: 1e-5,
        smooth_dr: 1e-5,
    }
    .build(3)
    .unwrap();
    let fixed = Tensor::rand(0f32, 1.0, (1, 1, 128, 128, 128), &device).unwrap();
    let warped = Var::rand(0f32, 1.0, (1, 1, 128, 128, 128), &device).unwrap();
    group.bench_function("c_lncc_fwd_bwd_128", |b| {
        b.iter(|| {
            let loss = lncc
                .loss(warped.as_tensor(), Some(&fixed))
                .unwrap()
                .sum_all()
                .unwrap();
            loss.backward().unwrap()
        })
    });

    let bending = BendingConfig {}.build(3).unwrap();
    let ddf = Var::randn(0f32, 1.0, (1, 3, 128, 128, 128), &device).unwrap();
    group.bench_function("d_bending_fwd_bwd_128", |b| {
        b.iter(|| {
            let loss = bending
                .loss(ddf.as_tensor(), None)
                .unwrap()
                .sum_all()
                .unwrap();
            loss.backward().unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Measure what the `voxreg` binary runs: its allocation policy (`VOXREG_SYSTEM_MALLOC=1`
    // measures glibc's default instead).
    config = {
        voxreg_framework::allocator::apply();
        Criterion::default()
    };
    targets = losses
}
criterion_main!(benches);
