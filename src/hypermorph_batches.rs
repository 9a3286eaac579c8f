//! A HyperMorph model over a batch that mixes values of λ gives each sample the output of
//! its own λ: the same as running the samples one by one.

use crate::candle::{DType, Device, Tensor};
use crate::component::Batch;
use crate::config::ConfigSources;
use crate::engine::Model;
use crate::registry::Registry;

const CONFIG: &str = "
dataset:
  train: {dir: unused, format: nifti, labeled: false}
  type: paired
  moving_image_shape: [16, 16]
  fixed_image_shape: [16, 16]
train:
  method: ddf
  backbone:
    name: vxm_unet
    channels: [4, 4, 4, 4]
    unet_out_channels: 4
    final_conv_channels: [4]
  parameters: {name: hypernet, inputs: [lambda], layers: [8, 8], plain: []}
  hyperparameters:
    lambda: {range: [0.0, 1.0]}
  loss:
    image: {name: vxm_mse, weight: {hyper: lambda, complement: true}}
    regularization: {name: vxm_grad, penalty: l2, weight: {hyper: lambda}}
  optimizer: {name: Adam, learning_rate: 1.0e-4}
  preprocess: {batch_size: 3, shuffle_buffer_num_batch: 1}
  epochs: 1
  save_period: 1
";

fn model() -> Model {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hyper.yaml");
    std::fs::write(&file, CONFIG).unwrap();
    let registry = Registry::linked().unwrap();
    let config = ConfigSources::read(&[file])
        .and_then(|sources| sources.resolve(&registry))
        .unwrap();
    Model::build(&config, &Device::Cpu).unwrap()
}

fn batch(moving: &Tensor, fixed: &Tensor, lambda: &[f32]) -> Batch {
    let mut batch = Batch::pair(moving.clone(), fixed.clone(), None, None);
    batch.hyper.push((
        "lambda".to_owned(),
        Tensor::new(lambda, &Device::Cpu).unwrap(),
    ));
    batch
}

#[test]
fn a_batch_of_mixed_lambdas_equals_its_samples_run_one_by_one() {
    let model = model();
    // One pair three times: only λ differs between the samples.
    let moving = Tensor::rand(0f32, 1.0, (1, 1, 16, 16), &Device::Cpu).unwrap();
    let fixed = Tensor::rand(0f32, 1.0, (1, 1, 16, 16), &Device::Cpu).unwrap();
    let moving = Tensor::cat(&[&moving, &moving, &moving], 0).unwrap();
    let fixed = Tensor::cat(&[&fixed, &fixed, &fixed], 0).unwrap();
    let lambdas = [0.9f32, 0.1, 0.9];
    let together = model.forward(&batch(&moving, &fixed, &lambdas)).unwrap();
    let together = together.require("ddf").unwrap().clone();
    for (i, lambda) in lambdas.iter().enumerate() {
        let one = |t: &Tensor| t.narrow(0, i, 1).unwrap();
        let alone = model
            .forward(&batch(&one(&moving), &one(&fixed), &[*lambda]))
            .unwrap();
        let difference = (alone.require("ddf").unwrap() - one(&together))
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(difference < 1e-6, "sample {i}: {difference}");
    }
    let first = together.narrow(0, 0, 1).unwrap();
    let second = together.narrow(0, 1, 1).unwrap();
    let apart = (first - second).unwrap().abs().unwrap().sum_all().unwrap();
    assert!(
        apart.to_scalar::<f32>().unwrap() > 0.0,
        "λ changes the field"
    );
}
