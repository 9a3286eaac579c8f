//! Benchmarks of whole training steps and of prediction, against the peer workloads of
//! `benches/peer/bench_peer.py`: `f_localnet_train_64`, one step of a LocalNet (`num_channel_initial: 16`,
//! `extract_levels: [0, 1, 2, 3]`) on a (1, 2, 64³) pair — forward, warp, LNCC (kernel 9) +
//! 0.5 · bending energy, backward, Adam — and `e_vxm_train_64`: the same with MONAI's
//! VoxelMorph U-Net, SSD + 0.01 · gradient L2; and each forward pass alone (predict
//! throughput); `g_hypermorph_2d_train`: one HyperMorph 2-D step at (1, 2, 192, 160) — the
//! tutorial hypernetwork over λ generating every VoxelMorph U-Net conv, a plain flow layer,
//! `(1 − λ)·MSE/0.05² + λ·Grad-l2`, Adam, λ drawn afresh each step — and its forward pass at
//! λ = 0.5; `h_atlalign_local_train` and `h_atlalign_global_train`: atlalign's local U-Net
//! (both orders of the pair) and global network at 320 × 456, supervised, Keras' RMSprop.
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench --bench training`. Like the `voxreg` binary, the
//! benchmark keeps freed memory for reuse ([`voxreg::allocator::apply`]); set
//! `VOXREG_SYSTEM_MALLOC=1` to measure with glibc's default policy instead.

#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use voxreg::candle::{Device, Tensor};
use voxreg::component::Batch;
use voxreg::config::{sample_hyper, ConfigSources};
use voxreg::engine::Trainer;
use voxreg::registry::Registry;

/// The peer's LocalNet step as a DeepReg config (the dataset folder is never read).
const LOCALNET_64: &str = "
dataset:
  train: {dir: unused, format: nifti, labeled: false}
  type: paired
  moving_image_shape: [64, 64, 64]
  fixed_image_shape: [64, 64, 64]
train:
  method: ddf
  backbone: {name: local, num_channel_initial: 16, extract_levels: [0, 1, 2, 3]}
  loss:
    image: {name: lncc, kernel_size: 9, weight: 1.0}
    regularization: {name: bending, weight: 0.5}
  optimizer: {name: Adam, learning_rate: 1.0e-4}
  preprocess: {batch_size: 1, shuffle_buffer_num_batch: 1}
  epochs: 1
  save_period: 1
";

/// The peer's VoxelMorph step (`e_vxm_train_64`: MONAI's VoxelMorph U-Net, DDF output, MSE +
/// 0.01 · gradient L2, Adam); voxreg's `gradient` regularizer takes central differences where
/// VoxelMorph's takes forward differences, the same work.
const VXM_64: &str = "
dataset:
  train: {dir: unused, format: nifti, labeled: false}
  type: paired
  moving_image_shape: [64, 64, 64]
  fixed_image_shape: [64, 64, 64]
train:
  method: ddf
  backbone: {name: vxm_unet}
  loss:
    image: {name: ssd, weight: 1.0}
    regularization: {name: gradient, l1: false, weight: 0.01}
  optimizer: {name: Adam, learning_rate: 1.0e-4}
  preprocess: {batch_size: 1, shuffle_buffer_num_batch: 1}
  epochs: 1
  save_period: 1
";

/// The peer's HyperMorph 2-D step (`g_hypermorph_2d_train`; 14,072,818 parameters).
const HYPERMORPH_2D: &str = "
dataset:
  train: {dir: unused, format: nifti, labeled: false}
  type: paired
  moving_image_shape: [192, 160]
  fixed_image_shape: [192, 160]
train:
  method: ddf
  backbone:
    name: vxm_unet
    channels: [16, 32, 32, 32, 32, 32, 32, 32]
    unet_out_channels: 32
    final_conv_channels: [16, 16]
  parameters: {name: hypernet, inputs: [lambda], layers: [32, 64, 128, 128], plain: [flow]}
  hyperparameters:
    lambda: {range: [0.0, 1.0], oversample_rate: 0.0, value: 0.5}
  loss:
    image: {name: vxm_mse, image_sigma: 0.05, weight: {hyper: lambda, complement: true}}
    regularization: {name: vxm_grad, penalty: l2, weight: {hyper: lambda}}
  optimizer: {name: Adam, learning_rate: 1.0e-4}
  preprocess: {batch_size: 1, shuffle_buffer_num_batch: 1}
  epochs: 1
  save_period: 1
";

/// The peer's atlalign local step (`h_atlalign_local_train`): atlalign's U-Net with the
/// docs' best settings (192,578 parameters) run on both orders of the pair (the `inverse`
/// method), SSD of the warped moving image against the target + `vector_distance` of both
/// fields, Keras' RMSprop, at (1, 2, 320, 456).
const ATLALIGN_LOCAL: &str = "
dataset:
  train: {dir: unused, format: h5, labeled: false}
  type: atlalign
  image_shape: [320, 456]
  reference: unused.npy
  inverse: true
train:
  method: {name: inverse, method: ddf}
  backbone: {name: atlalign_local, end_filters: [64, 64]}
  loss:
    image: {name: ssd, inputs: [pred_fixed_image, true_pred_fixed_image]}
    field:
      - {name: vector_distance, inputs: [ddf, true_ddf]}
      - {name: vector_distance, inputs: [inv/ddf, true_inv_ddf]}
  optimizer: {name: rmsprop, learning_rate: 1.0e-3}
  preprocess: {batch_size: 1, shuffle_buffer_num_batch: 1}
  epochs: 1
  save_period: 1
";

/// The peer's atlalign global step (`h_atlalign_global_train`): the docs' best global network
/// (237,630 parameters), SSD + 0.1 · `vector_distance`, Keras' RMSprop, at (4, 2, 320, 456).
const ATLALIGN_GLOBAL: &str = "
dataset:
  train: {dir: unused, format: h5, labeled: false}
  type: atlalign
  image_shape: [320, 456]
  reference: unused.npy
train:
  method: ddf
  backbone: {name: atlalign_global, filters: [16, 16, 32, 32, 32], dense_layers: [40]}
  loss:
    image: {name: ssd, inputs: [pred_fixed_image, true_pred_fixed_image]}
    field: {name: vector_distance, weight: 0.1}
  optimizer: {name: rmsprop, learning_rate: 1.0e-3}
  preprocess: {batch_size: 4, shuffle_buffer_num_batch: 1}
  epochs: 1
  save_period: 1
";

/// A random atlalign batch of `n` pairs at 320 × 456: images U(0, 1), the target image and
/// the true fields (U(−4, 4) px) the loader would provide.
fn atlalign_batch(n: usize, device: &Device) -> Batch {
    use voxreg::component::{names, Grid, Kind};
    let image = || Tensor::rand(0f32, 1.0, (n, 1, 320, 456), device).expect("image");
    let field = || {
        (Tensor::rand(0f32, 1.0, (n, 2, 320, 456), device).expect("field") - 0.5)
            .and_then(|t| t * 8.0)
            .expect("field")
    };
    let mut batch = Batch::pair(image(), image(), None, None);
    let tensors = &mut batch.tensors;
    tensors.put(
        names::TRUE_PRED_FIXED_IMAGE,
        Kind::Image,
        Grid::Fixed,
        image(),
    );
    tensors.put(names::TRUE_DDF, Kind::Field, Grid::Fixed, field());
    tensors.put(names::TRUE_INV_DDF, Kind::Field, Grid::Moving, field());
    batch
}

/// Times `trainer`'s training step on `batch` as `train_step/<name>`.
fn bench_step(c: &mut Criterion, name: &str, trainer: &mut Trainer, batch: &Batch) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.bench_function(name, |b| {
        b.iter(|| match trainer.step(batch) {
            Ok(outcome) => outcome.loss,
            Err(error) => panic!("{}", error.at(1, 1)),
        })
    });
    group.finish();
}

/// Times the training step (`train_step/<name>`) of `yaml` on an atlalign batch of `n`.
fn bench_atlalign_step(c: &mut Criterion, name: &str, yaml: &str, n: usize) {
    voxreg::allocator::apply();
    let device = Device::Cpu;
    let mut trainer = Trainer::new(&config(yaml), &device, 0).expect("trainer");
    bench_step(c, name, &mut trainer, &atlalign_batch(n, &device));
}

fn bench_atlalign(c: &mut Criterion) {
    bench_atlalign_step(c, "atlalign_local_320x456", ATLALIGN_LOCAL, 1);
    bench_atlalign_step(c, "atlalign_global_320x456_b4", ATLALIGN_GLOBAL, 4);
}

fn random_pair(shape: &[usize], device: &Device) -> Batch {
    let mut dims = vec![1, 1];
    dims.extend_from_slice(shape);
    let image = || Tensor::rand(0f32, 1.0, dims.as_slice(), device).expect("image");
    Batch::pair(image(), image(), None, None)
}

fn config(yaml: &str) -> voxreg::config::Config {
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, yaml).expect("config");
    let registry = Registry::linked().expect("registry");
    ConfigSources::read(&[file])
        .and_then(|sources| sources.resolve(&registry))
        .expect("config")
}

/// Times a training step (`train_step/<name>`) and the forward pass (`predict/<name>`).
fn bench_step_and_forward(c: &mut Criterion, name: &str, yaml: &str) {
    voxreg::allocator::apply();
    let config = config(yaml);
    let device = Device::Cpu;
    let mut trainer = Trainer::new(&config, &device, 0).expect("trainer");
    let batch = random_pair(&[64, 64, 64], &device);
    bench_step(c, name, &mut trainer, &batch);
    let mut group = c.benchmark_group("predict");
    group.sample_size(10);
    group.bench_function(name, |b| {
        b.iter(|| trainer.model.forward(&batch).expect("forward"))
    });
    group.finish();
}

/// HyperMorph: a step draws its own λ (as the peer's), prediction runs at λ = 0.5.
fn bench_hypermorph(c: &mut Criterion) {
    voxreg::allocator::apply();
    let config = config(HYPERMORPH_2D);
    let device = Device::Cpu;
    let mut trainer = Trainer::new(&config, &device, 0).expect("trainer");
    let mut batch = random_pair(&[192, 160], &device);
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    let mut draw = 0u64;
    group.bench_function("hypermorph_2d", |b| {
        b.iter(|| {
            draw += 1;
            batch.hyper = sample_hyper(&config.train.hyperparameters, 1, draw, &device).expect("λ");
            match trainer.step(&batch) {
                Ok(outcome) => outcome.loss,
                Err(error) => panic!("{}", error.at(1, 1)),
            }
        })
    });
    group.finish();
    batch.hyper = Vec::new();
    trainer.model.set_hyper("lambda", 0.5).expect("λ");
    let mut group = c.benchmark_group("predict");
    group.sample_size(10);
    group.bench_function("hypermorph_2d", |b| {
        b.iter(|| trainer.model.forward(&batch).expect("forward"))
    });
    group.finish();
}

fn bench_localnet(c: &mut Criterion) {
    bench_step_and_forward(c, "localnet_lncc_bending_adam_64", LOCALNET_64);
}

fn bench_voxelmorph(c: &mut Criterion) {
    bench_step_and_forward(c, "vxm_unet_ssd_gradient_adam_64", VXM_64);
}

criterion_group!(
    benches,
    bench_localnet,
    bench_voxelmorph,
    bench_hypermorph,
    bench_atlalign
);
criterion_main!(benches);
