//! Benchmarks of backbones, forward + backward at `(1, 2, 64, 64, 64)`:
//! * the LocalNet of `shared/bench` workload (f): `local` (3D, 2 → 3 channels,
//!   `num_channel_initial: 16`, `extract_levels: [0, 1, 2, 3]`). The peer's workload (f) also
//!   warps, computes LNCC + bending energy and takes an Adam step; this measures the network
//!   alone;
//! * `vxm_unet` with its defaults (VoxelMorph's network, MONAI `VoxelMorphUNet`'s keys).
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench -p voxreg-models --bench backbones`.

#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use voxreg_framework::candle::{DType, Device, Tensor};
use voxreg_framework::candle_nn::{VarBuilder, VarMap};
use voxreg_framework::prelude::*;
use voxreg_models::{KernelSizes, LocalNetConfig, VxmUNetConfig};

fn bench_local_net(c: &mut Criterion) {
    let config = LocalNetConfig {
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
    };
    bench_forward_backward(c, "local_net", &config);
}

fn bench_vxm_unet(c: &mut Criterion) {
    bench_forward_backward(c, "vxm_unet", &VxmUNetConfig::default());
}

/// Forward + backward (mean squared output) of `config` at `(1, 2, 64, 64, 64)`, 2 → 3 channels.
fn bench_forward_backward(c: &mut Criterion, group: &str, config: &dyn BackboneConfig) {
    let spec = BackboneSpec {
        spatial_dims: 3,
        image_size: vec![64, 64, 64],
        in_channels: 2,
        out_channels: 3,
    };
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let net = config
        .build(&spec, VarBuilder::from_varmap(&varmap, DType::F32, &device))
        .expect("build the backbone");
    let x = Tensor::rand(0f32, 1.0, (1, 2, 64, 64, 64), &device).expect("input");
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.bench_function("forward_backward_64", |b| {
        b.iter(|| {
            let BackboneOutput::Dense(ddf) = net.forward(&x).expect("forward") else {
                panic!("{group} is dense")
            };
            let loss = ddf.sqr().and_then(|t| t.mean_all()).expect("loss");
            loss.backward().expect("backward")
        })
    });
    g.finish();
}

criterion_group!(benches, bench_local_net, bench_vxm_unet);
criterion_main!(benches);
