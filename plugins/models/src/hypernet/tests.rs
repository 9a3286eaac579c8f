//! Tests of the `hypernet` parameter source (tiny shapes).

use voxreg_framework::candle::Tensor;

use super::*;
use crate::VxmUNetConfig;

fn context(dtype: DType) -> ParamContext {
    ParamContext {
        seed: 5,
        device: Device::Cpu,
        dtype,
    }
}

fn batch_with_lambda(values: &[f32]) -> Batch {
    let image = Tensor::zeros((values.len(), 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let mut batch = Batch::pair(image.clone(), image, None, None);
    batch.hyper.push((
        "lambda".to_owned(),
        Tensor::new(values, &Device::Cpu).unwrap(),
    ));
    batch
}

fn config(layers: &[usize], plain: &[&str]) -> HypernetConfig {
    HypernetConfig {
        inputs: vec!["lambda".to_owned()],
        layers: layers.to_vec(),
        plain: plain.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn var(source: &dyn ParamSource, name: &str) -> Var {
    source
        .variables()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no variable {name}"))
        .1
}

fn set(source: &dyn ParamSource, name: &str, values: &[f64], shape: &[usize]) {
    let v = var(source, name);
    let tensor = Tensor::from_vec(values.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(v.dtype())
        .unwrap();
    v.set(&tensor).unwrap();
}

/// A source for a "network" of one generated weight `w` `(2,)` and one plain weight
/// `flow.b` `(1,)`.
fn tiny(layers: &[usize], dtype: DType) -> Box<dyn ParamSource> {
    let mut source = config(layers, &["flow"]).build(&context(dtype)).unwrap();
    let builder = source.builder();
    builder.get_with_hints(2, "w", Init::Const(0.0)).unwrap();
    builder
        .get_with_hints(1, "flow.b", Init::Const(3.0))
        .unwrap();
    source.finish().unwrap();
    source
}

fn generated(source: &dyn ParamSource, lambda: f32, name: &str, shape: usize) -> Tensor {
    let weights = source
        .for_batch(&batch_with_lambda(&[lambda]))
        .unwrap()
        .unwrap();
    weights.get(shape, name).unwrap()
}

#[test]
fn patterns_match_runs_of_name_segments() {
    assert!(matches_pattern("flow.weight", "flow"));
    assert!(matches_pattern("stage.1.flow.bias", "flow"));
    assert!(matches_pattern("stage.1.flow.bias", "1.flow"));
    assert!(!matches_pattern("overflow.weight", "flow"));
    assert!(!matches_pattern("flow.weight", "flow.bias"));
}

#[test]
fn a_hand_set_hypernetwork_gives_the_hand_computed_weights() {
    let source = tiny(&[2], DType::F32);
    set(&*source, "hypernet.mlp.0.kernel", &[1.0, -1.0], &[1, 2]);
    set(&*source, "hypernet.mlp.0.bias", &[0.5, 0.5], &[2]);
    set(
        &*source,
        "hypernet.head.w.kernel",
        &[1.0, 2.0, 3.0, 4.0],
        &[2, 2],
    );
    set(&*source, "hypernet.head.w.bias", &[0.1, 0.2], &[2]);
    // λ = 0.25: h = relu([0.75, 0.25]); w = [0.75 + 0.75 + 0.1, 1.5 + 1.0 + 0.2].
    let w = generated(&*source, 0.25, "w", 2).to_vec1::<f32>().unwrap();
    assert!(
        (w[0] - 1.6).abs() < 1e-6 && (w[1] - 2.7).abs() < 1e-6,
        "{w:?}"
    );
    // λ = 2: h = relu([2.5, −1.5]) = [2.5, 0]; w = [2.5 + 0.1, 5.0 + 0.2].
    let w = generated(&*source, 2.0, "w", 2).to_vec1::<f32>().unwrap();
    assert!(
        (w[0] - 2.6).abs() < 1e-6 && (w[1] - 5.2).abs() < 1e-6,
        "{w:?}"
    );
    // The plain weight is a variable of its own, the same for every λ.
    let b = generated(&*source, 0.7, "flow.b", 1)
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(b, [3.0]);
    let names: Vec<String> = source.trainable().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "flow.b",
            "hypernet.head.w.bias",
            "hypernet.head.w.kernel",
            "hypernet.mlp.0.bias",
            "hypernet.mlp.0.kernel"
        ]
    );
}

#[test]
fn heads_and_layers_are_glorot_uniform_as_keras_draws_them() {
    let source = tiny(&[4, 3], DType::F32);
    let limit = |fan_in: usize, fan_out: usize| (6.0 / (fan_in + fan_out) as f32).sqrt();
    let max_abs = |name: &str| {
        var(&*source, name)
            .as_tensor()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let dims = |name: &str| var(&*source, name).dims().to_vec();
    assert_eq!(dims("hypernet.mlp.0.kernel"), [1, 4]);
    assert_eq!(dims("hypernet.mlp.1.kernel"), [4, 3]);
    assert_eq!(dims("hypernet.head.w.kernel"), [3, 2]);
    assert_eq!(dims("hypernet.head.w.bias"), [2]);
    assert!(max_abs("hypernet.mlp.1.kernel") <= limit(4, 3));
    assert!(max_abs("hypernet.head.w.kernel") <= limit(3, 2));
    // A 1-D weight has fan_in = fan_out = n: the limit is √(3/n).
    assert!(max_abs("hypernet.head.w.bias") <= (3.0f32 / 2.0).sqrt());
    assert!(max_abs("hypernet.head.w.bias") > 0.0);
    assert_eq!(max_abs("hypernet.mlp.0.bias"), 0.0);
}

#[test]
fn gradients_through_the_heads_match_finite_differences() {
    let source = tiny(&[3, 2], DType::F64);
    // Keep every ReLU of the MLP active at λ = 0.6 so the loss is smooth around the point.
    set(&*source, "hypernet.mlp.0.bias", &[0.3, 0.2, 0.4], &[3]);
    set(&*source, "hypernet.mlp.1.bias", &[0.5, 0.6], &[2]);
    set(
        &*source,
        "hypernet.mlp.1.kernel",
        &[0.4, 0.1, 0.2, 0.3, 0.1, 0.5],
        &[3, 2],
    );
    let loss = |source: &dyn ParamSource| -> Tensor {
        let w = generated(source, 0.6, "w", 2);
        let c = Tensor::new(&[1.5f64, -0.7], &Device::Cpu).unwrap();
        (w * c).unwrap().sqr().unwrap().sum_all().unwrap()
    };
    let grads = loss(&*source).backward().unwrap();
    let eps = 1e-6;
    for (name, variable) in source.trainable() {
        if name == "flow.b" {
            assert!(grads.get(&variable).is_none(), "flow.b is not in the loss");
            continue;
        }
        let analytic = grads.get(&variable).unwrap().flatten_all().unwrap();
        let analytic = analytic.to_vec1::<f64>().unwrap();
        let original = variable.as_tensor().flatten_all().unwrap();
        let original = original.to_vec1::<f64>().unwrap();
        for i in 0..original.len() {
            let at = |delta: f64| {
                let mut values = original.clone();
                values[i] += delta;
                let t = Tensor::from_vec(values, variable.shape(), &Device::Cpu).unwrap();
                variable.set(&t).unwrap();
                loss(&*source).to_scalar::<f64>().unwrap()
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            at(0.0);
            let error = (numeric - analytic[i]).abs() / numeric.abs().max(1e-3);
            assert!(
                error < 1e-5,
                "{name}[{i}]: analytic {} numeric {numeric}",
                analytic[i]
            );
        }
    }
}

fn spec() -> BackboneSpec {
    BackboneSpec {
        spatial_dims: 2,
        image_size: vec![8, 8],
        in_channels: 2,
        out_channels: 2,
        head: Head::Field,
    }
}

fn small_unet() -> VxmUNetConfig {
    VxmUNetConfig {
        channels: vec![4, 4, 4, 4],
        unet_out_channels: 4,
        final_conv_channels: vec![4],
        ..VxmUNetConfig::default()
    }
}

fn dense(output: BackboneOutput) -> Tensor {
    match output {
        BackboneOutput::Dense(t) => t,
        BackboneOutput::Affine(_) => panic!("a dense backbone"),
    }
}

fn input() -> Tensor {
    let values: Vec<f32> = (0..128).map(|i| ((i * 37) % 17) as f32 / 17.0).collect();
    Tensor::from_vec(values, (1, 2, 8, 8), &Device::Cpu).unwrap()
}

#[test]
fn it_wraps_vxm_unet_and_hand_set_heads_reproduce_a_fixed_network() {
    let unet = small_unet();
    let fixed_source = VariablesConfig::default()
        .build(&context(DType::F32))
        .unwrap();
    let fixed = unet.build(&spec(), fixed_source.builder()).unwrap();
    let expected = dense(fixed.forward(&input()).unwrap());

    let mut hyper = config(&[8, 8], &["flow"])
        .build(&context(DType::F32))
        .unwrap();
    unet.build(&spec(), hyper.builder()).unwrap();
    hyper.finish().unwrap();
    let names: Vec<String> = hyper.variables().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"flow.weight".to_owned()), "{names:?}");
    assert!(names.contains(&"hypernet.head.encode.0.weight.kernel".to_owned()));
    assert!(!names.contains(&"encode.0.weight".to_owned()));
    // Zero head kernels and the fixed network's weights as head biases: the generated
    // network is the fixed one, for every λ.
    for (name, variable) in fixed_source.variables() {
        let values = variable.as_tensor().flatten_all().unwrap();
        if name.starts_with("flow.") {
            var(&*hyper, &name).set(variable.as_tensor()).unwrap();
            continue;
        }
        let n = values.dim(0).unwrap();
        var(&*hyper, &format!("hypernet.head.{name}.bias"))
            .set(&values)
            .unwrap();
        let kernel = var(&*hyper, &format!("hypernet.head.{name}.kernel"));
        kernel
            .set(&Tensor::zeros((8, n), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
    }
    for lambda in [0.0, 0.8] {
        let weights = hyper.for_batch(&batch_with_lambda(&[lambda])).unwrap();
        let net = unet.build(&spec(), weights.unwrap()).unwrap();
        let output = dense(net.forward(&input()).unwrap());
        let difference = (output - &expected)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(difference, 0.0, "λ = {lambda}");
    }
}

#[test]
fn generated_networks_differ_with_lambda_and_refuse_mixed_batches() {
    let unet = small_unet();
    let mut hyper = config(&[8], &[]).build(&context(DType::F32)).unwrap();
    unet.build(&spec(), hyper.builder()).unwrap();
    hyper.finish().unwrap();
    assert!(hyper.per_sample());
    let names: Vec<String> = hyper.variables().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"hypernet.head.flow.weight.kernel".to_owned()));
    let at = |lambda: f32| {
        let weights = hyper.for_batch(&batch_with_lambda(&[lambda])).unwrap();
        weights
            .unwrap()
            .get((4, 2, 3, 3), "encode.0.weight")
            .unwrap()
    };
    let difference = (at(0.0) - at(1.0))
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(difference > 0.0);
    let error = hyper
        .for_batch(&batch_with_lambda(&[0.0, 1.0]))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("differ in `lambda`"), "{error}");
    let mut wrong = config(&[8], &["flo"]).build(&context(DType::F32)).unwrap();
    unet.build(&spec(), wrong.builder()).unwrap();
    let error = wrong.finish().unwrap_err().to_string();
    assert!(error.contains("`plain: flo` matches no weight"), "{error}");
    let empty = HypernetConfig {
        inputs: Vec::new(),
        ..HypernetConfig::default()
    };
    let error = empty.build(&context(DType::F32)).err().unwrap().to_string();
    assert!(error.contains("`inputs` is empty"), "{error}");
}

/// HyperMorph's tutorial network in 2D (VoxelMorph's default features, the tutorial's
/// hypernetwork 1 → 32 → 64 → 128 → 128, a plain flow layer) has the inventory the
/// reference code gives: 108,880 generated U-Net parameters, each with a head row of 128 and
/// a head bias (129 × 108,880 = 14,045,520), 27,008 MLP parameters and a flow conv of 290:
/// 14,072,818 in all.
#[test]
fn the_tutorial_network_has_hypermorphs_parameter_inventory() {
    let unet = VxmUNetConfig {
        channels: vec![16, 32, 32, 32, 32, 32, 32, 32],
        unet_out_channels: 32,
        final_conv_channels: vec![16, 16],
        ..VxmUNetConfig::default()
    };
    let spec = BackboneSpec {
        image_size: vec![32, 32],
        ..spec()
    };
    let mut hyper = config(&[32, 64, 128, 128], &["flow"])
        .build(&context(DType::F32))
        .unwrap();
    unet.build(&spec, hyper.builder()).unwrap();
    hyper.finish().unwrap();
    let count = |prefix: &str| -> usize {
        hyper
            .variables()
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, var)| var.elem_count())
            .sum()
    };
    let heads = count("hypernet.head.");
    let mlp = count("hypernet.") - heads;
    let flow = count("flow.");
    assert_eq!(heads, 129 * 108_880);
    assert_eq!(mlp, 27_008);
    assert_eq!(flow, 290);
    assert_eq!(heads + mlp + flow, 14_072_818);
    let generated: usize = hyper
        .variables()
        .iter()
        .filter(|(name, _)| name.ends_with(".bias") && name.starts_with("hypernet.head."))
        .map(|(_, var)| var.elem_count())
        .sum();
    assert_eq!(generated, 108_880);
}
