//! Benchmarks of whole training steps and of prediction, against `shared/bench`'s workload
//! `f_localnet_train_64`: one step of a LocalNet (`num_channel_initial: 16`,
//! `extract_levels: [0, 1, 2, 3]`) on a (1, 2, 64³) pair — forward, warp, LNCC (kernel 9) +
//! 0.5 · bending energy, backward, Adam — and the forward pass alone (predict throughput).
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench --bench training`.

#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use voxreg::candle::{Device, Tensor};
use voxreg::component::PairBatch;
use voxreg::config::ConfigSources;
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

fn random_pair(shape: &[usize], device: &Device) -> PairBatch {
    let mut dims = vec![1, 1];
    dims.extend_from_slice(shape);
    let image = || Tensor::rand(0f32, 1.0, dims.as_slice(), device).expect("image");
    PairBatch {
        moving_image: image(),
        fixed_image: image(),
        moving_label: None,
        fixed_label: None,
    }
}

fn bench_localnet_step(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("localnet64.yaml");
    std::fs::write(&file, LOCALNET_64).expect("config");
    let registry = Registry::linked().expect("registry");
    let config = ConfigSources::read(&[file])
        .and_then(|sources| sources.resolve(&registry))
        .expect("config");
    let device = Device::Cpu;
    let mut trainer = Trainer::new(&config, &device, 0).expect("trainer");
    let batch = random_pair(&[64, 64, 64], &device);
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.bench_function("localnet_lncc_bending_adam_64", |b| {
        b.iter(|| match trainer.step(&batch) {
            Ok(outcome) => outcome.loss,
            Err(error) => panic!("{}", error.at(1, 1)),
        })
    });
    group.finish();
    let mut group = c.benchmark_group("predict");
    group.sample_size(10);
    group.bench_function("localnet_forward_64", |b| {
        b.iter(|| trainer.model.forward(&batch).expect("forward"))
    });
    group.finish();
}

criterion_group!(benches, bench_localnet_step);
criterion_main!(benches);
