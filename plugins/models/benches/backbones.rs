//! Benchmarks of backbones, forward + backward at `(1, 2, 64, 64, 64)`:
//! * the LocalNet of the peer workload `f_localnet_train_64` (`benches/peer`): `local` (3D,
//!   2 → 3 channels, `num_channel_initial: 16`, `extract_levels: [0, 1, 2, 3]`). The peer's
//!   workload also warps, computes LNCC + bending energy and takes an Adam step; this
//!   measures the network alone;
//! * `vxm_unet` with its defaults (VoxelMorph's network, MONAI `VoxelMorphUNet`'s keys).
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench -p voxreg-models --bench backbones`. On a shared,
//! loaded machine, `VOXREG_PROBE_ITERS=3 cargo bench -p voxreg-models --bench backbones` instead
//! runs 3 timed LocalNet steps (after one warm-up) and prints wall and process CPU time per
//! step (CPU time is less disturbed by other processes).

#![allow(missing_docs)]

use criterion::{criterion_group, Criterion};
use voxreg_framework::candle::{DType, Device, Tensor};
use voxreg_framework::candle_nn::{VarBuilder, VarMap};
use voxreg_framework::prelude::*;
use voxreg_models::{KernelSizes, LocalNetConfig, VxmUNetConfig};

/// The LocalNet of workload (f).
fn local_net_config() -> LocalNetConfig {
    LocalNetConfig {
        num_channel_initial: 16,
        extract_levels: vec![0, 1, 2, 3],
        depth: None,
        use_additive_upsampling: true,
        pooling: true,
        concat_skip: false,
        decode_kernel_sizes: KernelSizes::Uniform(3),
        encode_num_channels: None,
        decode_num_channels: None,
        strides: 2,
        padding: "same".to_owned(),
        out_kernel_initializer: Some("glorot_uniform".to_owned()),
        out_activation: None,
        out_channels: None,
        control_points: None,
    }
}

/// `config` built for `(1, 2, 64, 64, 64)`, 2 → 3 channels, with a random input (and the
/// variables, kept alive by the caller).
fn build(config: &dyn BackboneConfig) -> (Box<dyn Backbone>, Tensor, VarMap) {
    let spec = BackboneSpec {
        spatial_dims: 3,
        image_size: vec![64, 64, 64],
        in_channels: 2,
        out_channels: 3,
        head: Default::default(),
    };
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let net = config
        .build(&spec, VarBuilder::from_varmap(&varmap, DType::F32, &device))
        .expect("build the backbone");
    let x = Tensor::rand(0f32, 1.0, (1, 2, 64, 64, 64), &device).expect("input");
    (net, x, varmap)
}

/// One forward + backward pass (mean squared output).
fn step(name: &str, net: &dyn Backbone, x: &Tensor) {
    let BackboneOutput::Dense(ddf) = net.forward(x).expect("forward") else {
        panic!("{name} is dense")
    };
    let loss = ddf.sqr().and_then(|t| t.mean_all()).expect("loss");
    loss.backward().expect("backward");
}

/// Forward + backward of `config` as the criterion group `group`.
fn bench_forward_backward(c: &mut Criterion, group: &str, config: &dyn BackboneConfig) {
    let (net, x, _vars) = build(config);
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.bench_function("forward_backward_64", |b| {
        b.iter(|| step(group, net.as_ref(), &x))
    });
    g.finish();
}

fn bench_local_net(c: &mut Criterion) {
    bench_forward_backward(c, "local_net", &local_net_config());
}

fn bench_vxm_unet(c: &mut Criterion) {
    bench_forward_backward(c, "vxm_unet", &VxmUNetConfig::default());
}

/// Process CPU time (user + system) in milliseconds, from `/proc/self/stat`.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) * 10.0
}

/// Times `iters` LocalNet steps after a warm-up one, printing wall and CPU time per step.
fn probe(iters: usize) {
    let (net, x, _vars) = build(&local_net_config());
    step("local_net", net.as_ref(), &x);
    let (c0, t0) = (cpu_ms(), std::time::Instant::now());
    for _ in 0..iters {
        step("local_net", net.as_ref(), &x);
    }
    let wall = t0.elapsed().as_secs_f64() * 1e3 / iters as f64;
    let cpu = (cpu_ms() - c0) / iters as f64;
    println!("local_net forward_backward_64: wall {wall:.0} ms, cpu {cpu:.0} ms per iteration");
}

criterion_group!(benches, bench_local_net, bench_vxm_unet);

fn main() {
    // Measure what the `voxreg` binary runs: its allocation policy (`VOXREG_SYSTEM_MALLOC=1`
    // measures glibc's default instead).
    voxreg_framework::allocator::apply();
    match std::env::var("VOXREG_PROBE_ITERS").map(|v| v.parse::<usize>()) {
        Ok(Ok(iters)) if iters > 0 => probe(iters),
        _ => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
