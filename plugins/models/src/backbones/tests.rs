//! Tests of the `unet`, `local` and `global` backbones (tiny shapes).

use std::collections::HashMap;

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::{Optimizer, VarMap, SGD};
use voxreg_framework::ops;

use super::*;

fn spec(image_size: &[usize], in_channels: usize, out_channels: usize) -> BackboneSpec {
    BackboneSpec {
        spatial_dims: image_size.len(),
        image_size: image_size.to_vec(),
        in_channels,
        out_channels,
        // DeepReg's conditional method: three channels in, one label out.
        head: if in_channels == 3 && out_channels == 1 {
            voxreg_framework::component::Head::Probability
        } else {
            voxreg_framework::component::Head::Field
        },
    }
}

fn local(num_channel_initial: usize, extract_levels: &[usize]) -> LocalNetConfig {
    LocalNetConfig {
        num_channel_initial,
        extract_levels: extract_levels.to_vec(),
        depth: None,
        use_additive_upsampling: true,
        pooling: true,
        concat_skip: false,
        decode_kernel_sizes: KernelSizes::Uniform(3),
        encode_num_channels: None,
        decode_num_channels: None,
        strides: 2,
        padding: "same".to_owned(),
        out_kernel_initializer: None,
        out_activation: None,
        out_channels: None,
        control_points: None,
    }
}

fn unet(num_channel_initial: usize, depth: usize) -> UNetConfig {
    UNetConfig {
        num_channel_initial,
        depth,
        extract_levels: vec![0],
        pooling: true,
        concat_skip: false,
        encode_kernel_sizes: KernelSizes::Uniform(3),
        decode_kernel_sizes: KernelSizes::Uniform(3),
        encode_num_channels: None,
        decode_num_channels: None,
        strides: 2,
        padding: "same".to_owned(),
        out_kernel_initializer: None,
        out_activation: None,
        out_channels: None,
        control_points: None,
    }
}

fn global(num_channel_initial: usize, depth: usize) -> GlobalNetConfig {
    GlobalNetConfig {
        num_channel_initial,
        depth: Some(depth),
        extract_levels: None,
        pooling: true,
        encode_kernel_sizes: KernelSizes::Uniform(3),
        encode_num_channels: None,
        strides: 2,
        padding: "same".to_owned(),
    }
}

fn build(config: &dyn BackboneConfig, spec: &BackboneSpec, varmap: &VarMap) -> Box<dyn Backbone> {
    match config.build(
        spec,
        VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu),
    ) {
        Ok(net) => net,
        Err(e) => panic!("build failed: {e}"),
    }
}

fn input(spec: &BackboneSpec, batch: usize) -> candle::Result<Tensor> {
    let mut shape = vec![batch, spec.in_channels];
    shape.extend(&spec.image_size);
    Tensor::rand(0f32, 1.0, shape, &Device::Cpu)
}

fn dense(out: BackboneOutput) -> Tensor {
    match out {
        BackboneOutput::Dense(t) => t,
        BackboneOutput::Affine(_) => panic!("expected a dense output"),
    }
}

fn affine(out: BackboneOutput) -> Tensor {
    match out {
        BackboneOutput::Affine(t) => t,
        BackboneOutput::Dense(_) => panic!("expected an affine output"),
    }
}

fn max_abs(t: &Tensor) -> candle::Result<f32> {
    t.abs()?.max_all()?.to_scalar::<f32>()
}

/// Runs `config` on random input and checks the dense output shape.
fn check_dense_shape(config: &dyn BackboneConfig, spec: &BackboneSpec) -> candle::Result<()> {
    let net = build(config, spec, &VarMap::new());
    let out = dense(net.forward(&input(spec, 2)?)?);
    let mut expected = vec![2, spec.out_channels];
    expected.extend(&spec.image_size);
    assert_eq!(out.dims(), &expected[..], "{config:?}");
    Ok(())
}

fn invalid_message(config: &dyn BackboneConfig, spec: &BackboneSpec) -> String {
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu);
    match config.build(spec, vb) {
        Ok(_) => panic!("{config:?} should be rejected for {spec:?}"),
        Err(e @ ComponentError::InvalidConfig { .. }) => e.to_string(),
        Err(e) => panic!("expected an invalid-config error, got {e}"),
    }
}

#[test]
fn local_net_output_shapes_2d_and_3d() -> candle::Result<()> {
    check_dense_shape(&local(4, &[0, 1, 2]), &spec(&[16, 16], 2, 2))?;
    check_dense_shape(&local(2, &[0, 1]), &spec(&[8, 8, 8], 2, 3))?;
    // Variants: concatenated skips, strided-conv down-sampling, plain transposed conv, a
    // depth beyond the extracted levels, and a size that 2^depth does not divide.
    let mut variant = local(2, &[1, 2]);
    variant.concat_skip = true;
    variant.pooling = false;
    variant.use_additive_upsampling = false;
    variant.depth = Some(3);
    check_dense_shape(&variant, &spec(&[16, 12], 3, 1))?;
    check_dense_shape(&local(2, &[0, 1, 2]), &spec(&[10, 9], 2, 2))?;
    check_dense_shape(&local(2, &[0, 2]), &spec(&[6, 8, 5], 2, 3))
}

#[test]
fn unet_output_shapes_2d_and_3d() -> candle::Result<()> {
    check_dense_shape(&unet(4, 3), &spec(&[16, 16], 2, 2))?;
    check_dense_shape(&unet(2, 2), &spec(&[8, 8, 8], 2, 3))?;
    let mut variant = unet(2, 2);
    variant.concat_skip = true;
    variant.pooling = false;
    variant.encode_kernel_sizes = KernelSizes::PerLevel(vec![5, 3, 3]);
    variant.decode_kernel_sizes = KernelSizes::PerLevel(vec![3, 1]);
    variant.encode_num_channels = Some(vec![3, 5, 6]);
    variant.decode_num_channels = Some(vec![2, 4, 7]);
    variant.extract_levels = vec![0, 1];
    check_dense_shape(&variant, &spec(&[12, 10], 2, 2))?;
    check_dense_shape(&variant, &spec(&[6, 7, 8], 3, 3))
}

/// As in DeepReg (TensorFlow's `same` padding), the depth may pass the image size: the
/// levels of an 8-voxel axis are 8, 4, 2, 1, 1. DeepReg's own test configs combine a depth-4
/// LocalNet with 8³ fixed images.
#[test]
fn depth_past_the_image_size_works_as_in_deepreg() -> candle::Result<()> {
    let mut deep_local = local(2, &[0, 1, 2, 3, 4]);
    deep_local.out_kernel_initializer = Some("he_normal".to_owned());
    let cube = spec(&[8, 8, 8], 2, 3);
    check_dense_shape(&deep_local, &cube)?;
    check_gradients(&deep_local, &cube)?;
    let mut strided = unet(2, 3);
    strided.pooling = false;
    check_dense_shape(&strided, &spec(&[4, 6], 2, 2))?;
    let affine_out =
        affine(build(&global(2, 4), &cube, &VarMap::new()).forward(&input(&cube, 2)?)?);
    assert_eq!(affine_out.dims(), &[2, 4, 3]);
    check_gradients(&global(2, 4), &cube)
}

#[test]
fn untrained_dense_backbones_output_a_zero_field() -> candle::Result<()> {
    let configs: [(&dyn BackboneConfig, BackboneSpec); 3] = [
        (&local(2, &[0, 1, 2]), spec(&[8, 8, 8], 2, 3)),
        (&local(4, &[0, 1]), spec(&[16, 16], 2, 2)),
        (&unet(2, 2), spec(&[8, 8], 2, 2)),
    ];
    for (config, spec) in configs {
        let net = build(config, &spec, &VarMap::new());
        let ddf = dense(net.forward(&input(&spec, 2)?)?);
        assert_eq!(max_abs(&ddf)?, 0.0, "{config:?}");
        let warped = ops::warp(
            &input(&spec, 2)?.narrow(1, 0, 1)?,
            &ddf,
            ops::Interp::Linear,
            ops::Padding::Border,
        )?;
        assert_eq!(warped.dims()[2..], spec.image_size[..]);
    }
    Ok(())
}

#[test]
fn out_activation_and_initializer_are_applied() -> candle::Result<()> {
    let mut config = local(2, &[0, 1]);
    config.out_kernel_initializer = Some("glorot_uniform".to_owned());
    config.out_activation = Some("sigmoid".to_owned());
    let spec = spec(&[8, 8], 3, 1);
    let out = dense(build(&config, &spec, &VarMap::new()).forward(&input(&spec, 1)?)?);
    let (lo, hi) = (
        out.min_all()?.to_scalar::<f32>()?,
        out.max_all()?.to_scalar::<f32>()?,
    );
    assert!(lo > 0.0 && hi < 1.0 && hi > lo, "sigmoid range: {lo}..{hi}");
    Ok(())
}

/// Every variable gets a finite, non-zero gradient from a loss on the output.
fn check_gradients(config: &dyn BackboneConfig, spec: &BackboneSpec) -> candle::Result<()> {
    let varmap = VarMap::new();
    let net = build(config, spec, &varmap);
    let out = match net.forward(&input(spec, 2)?)? {
        BackboneOutput::Dense(t) | BackboneOutput::Affine(t) => t,
    };
    let target = out.rand_like(-1.0, 1.0)?.detach();
    let loss = (out - target)?.sqr()?.mean_all()?;
    let grads = loss.backward()?;
    let data = varmap
        .data()
        .lock()
        .map_err(|e| candle::Error::Msg(e.to_string()))?;
    assert!(!data.is_empty());
    for (name, var) in data.iter() {
        let Some(grad) = grads.get(var.as_tensor()) else {
            panic!("{config:?}: no gradient for `{name}`");
        };
        let size = max_abs(grad)?;
        assert!(
            size.is_finite() && size > 0.0,
            "{config:?}: `{name}` gradient {size}"
        );
    }
    Ok(())
}

#[test]
fn gradients_reach_every_weight() -> candle::Result<()> {
    let mut config = local(2, &[0, 1, 2]);
    config.out_kernel_initializer = Some("he_normal".to_owned());
    check_gradients(&config, &spec(&[8, 8, 8], 2, 3))?;
    config.pooling = false;
    config.concat_skip = true;
    check_gradients(&config, &spec(&[16, 16], 2, 2))?;
    let mut config = unet(2, 2);
    config.out_kernel_initializer = Some("glorot_uniform".to_owned());
    check_gradients(&config, &spec(&[8, 8], 2, 2))?;
    check_gradients(&global(2, 2), &spec(&[8, 8, 8], 2, 3))?;
    check_gradients(&global(2, 2), &spec(&[16, 12], 2, 2))
}

#[test]
fn sgd_steps_reduce_a_simple_loss() -> candle::Result<()> {
    let spec = spec(&[16, 16], 2, 2);
    let varmap = VarMap::new();
    let net = build(&local(4, &[0, 1, 2]), &spec, &varmap);
    let x = input(&spec, 2)?;
    // Target: a smooth field derived from the input plus an offset, so the net can fit it.
    let target = ((ops::resize(
        &ops::avg_pool(&x, &[4, 4], &[4, 4], &[(0, 0), (0, 0)])?,
        &spec.image_size,
        ops::ResizeMode::Linear,
        ops::Align::HalfPixel,
    )? * 0.5)?
        + 0.2)?;
    let loss = |net: &dyn Backbone| -> candle::Result<Tensor> {
        (dense(net.forward(&x)?) - &target)?.sqr()?.mean_all()
    };
    let mut sgd = SGD::new(varmap.all_vars(), 0.1)?;
    let first = loss(net.as_ref())?.to_scalar::<f32>()?;
    for _ in 0..12 {
        sgd.backward_step(&loss(net.as_ref())?)?;
    }
    let last = loss(net.as_ref())?.to_scalar::<f32>()?;
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    Ok(())
}

#[test]
fn global_net_starts_at_the_identity_affine() -> candle::Result<()> {
    for (size, ndim) in [(vec![8, 8, 8], 3), (vec![16, 12], 2)] {
        let spec = spec(&size, 2, ndim);
        let varmap = VarMap::new();
        let net = build(&global(2, 2), &spec, &varmap);
        let theta = affine(net.forward(&input(&spec, 3)?)?);
        assert_eq!(theta.dims(), &[3, ndim + 1, ndim]);
        // A zero input gives zero features, so theta is the bias: DeepReg's identity.
        let zero = input(&spec, 2)?.zeros_like()?;
        let theta = affine(net.forward(&zero)?);
        let identity = ops::identity_theta(2, ndim, DType::F32, &Device::Cpu)?;
        assert_eq!(max_abs(&(&theta - identity)?)?, 0.0);
        let ddf = ops::affine_to_ddf(&theta, &size)?;
        assert!(max_abs(&ddf)? < 1e-5);
    }
    Ok(())
}

#[test]
fn weights_have_stable_hierarchical_names() {
    let varmap = VarMap::new();
    let _ = build(&local(2, &[0, 1]), &spec(&[8, 8], 2, 2), &varmap);
    let data = varmap.data().lock().expect("varmap lock");
    for name in [
        "encode.0.conv_block.conv.weight",
        "encode.0.conv_block.norm.gamma",
        "encode.0.residual.1.conv.weight",
        "bottom.conv.weight",
        "decode.0.up.deconv.weight",
        "decode.0.conv.residual.0.norm.beta",
        "output.0.weight",
        "output.1.bias",
    ] {
        assert!(data.contains_key(name), "missing `{name}`");
    }
    assert_eq!(
        data["encode.0.conv_block.conv.weight"].dims(),
        &[2, 2, 7, 7]
    );
    assert_eq!(data["bottom.conv.weight"].dims(), &[4, 2, 3, 3]);
}

#[test]
fn backbones_run_from_externally_supplied_weights() -> candle::Result<()> {
    let mut local_config = local(2, &[0, 1]);
    local_config.out_kernel_initializer = Some("glorot_uniform".to_owned());
    let cases: [(&dyn BackboneConfig, BackboneSpec); 3] = [
        (&local_config, spec(&[8, 8, 8], 2, 3)),
        (&unet(2, 2), spec(&[8, 8], 2, 2)),
        (&global(2, 2), spec(&[8, 8], 2, 2)),
    ];
    for (config, spec) in cases {
        let varmap = VarMap::new();
        let net = build(config, &spec, &varmap);
        let x = input(&spec, 2)?;
        let expected = match net.forward(&x)? {
            BackboneOutput::Dense(t) | BackboneOutput::Affine(t) => t,
        };
        // What a hypernetwork would do: supply every weight as a computed tensor.
        let tensors: HashMap<String, Tensor> = varmap
            .data()
            .lock()
            .map_err(|e| candle::Error::Msg(e.to_string()))?
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        let supplied = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
        let net = config
            .build(&spec, supplied)
            .map_err(|e| candle::Error::Msg(e.to_string()))?;
        let got = match net.forward(&x)? {
            BackboneOutput::Dense(t) | BackboneOutput::Affine(t) => t,
        };
        assert_eq!(max_abs(&(got - &expected)?)?, 0.0, "{config:?}");
        // A missing weight is an error, not a panic.
        let mut partial = tensors;
        partial.remove("encode.0.conv_block.conv.weight");
        let partial = VarBuilder::from_tensors(partial, DType::F32, &Device::Cpu);
        assert!(matches!(
            config.build(&spec, partial),
            Err(ComponentError::Tensor { .. })
        ));
    }
    Ok(())
}

#[test]
fn configs_that_cannot_work_are_rejected_with_a_reason() {
    let s2 = spec(&[16, 16], 2, 2);
    let mut c = unet(2, 2);
    c.extract_levels = vec![];
    assert!(invalid_message(&c, &s2).contains("extract_levels is empty"));
    c.extract_levels = vec![0, 3];
    assert!(invalid_message(&c, &s2).contains("outside [0, depth = 2]"));
    c.extract_levels = vec![0];
    c.encode_num_channels = Some(vec![2, 4]);
    assert!(invalid_message(&c, &s2).contains("3 values for depth 2"));
    c.encode_num_channels = Some(vec![2, 4, 8]);
    c.decode_num_channels = Some(vec![2, 2, 8]);
    assert!(invalid_message(&c, &s2).contains("concat_skip: true"));
    c.decode_num_channels = None;
    c.decode_kernel_sizes = KernelSizes::PerLevel(vec![3, 3, 3]);
    assert!(invalid_message(&c, &s2).contains("list of 2 sizes"));
    c.decode_kernel_sizes = KernelSizes::Uniform(3);
    c.padding = "valid".to_owned();
    assert!(invalid_message(&c, &s2).contains("use padding: same"));
    c.padding = "same".to_owned();
    c.out_activation = Some("swish".to_owned());
    assert!(invalid_message(&c, &s2).contains("sigmoid"));
    c.out_activation = None;
    c.control_points = Some(ControlPoints::Flag(true));
    assert!(invalid_message(&c, &s2).contains("does not give a spacing"));
    c.control_points = Some(ControlPoints::PerAxis(vec![4, 4, 4]));
    assert!(invalid_message(&c, &s2).contains("one spacing per axis"));
    c.control_points = Some(ControlPoints::Spacing(0));
    assert!(invalid_message(&c, &s2).contains("at least 1 voxel"));
    c.control_points = Some(ControlPoints::Flag(false));
    c.out_channels = Some(3);
    assert!(invalid_message(&c, &s2).contains("remove out_channels"));

    let l = local(2, &[]);
    assert!(invalid_message(&l, &s2).contains("extract_levels is empty"));
    let mut l = local(2, &[0, 1]);
    l.depth = Some(0);
    assert!(invalid_message(&l, &s2).contains("outside [0, depth = 0]"));
    l.depth = None;
    l.encode_num_channels = Some(vec![2, 3]);
    l.decode_num_channels = Some(vec![2, 3]);
    assert!(invalid_message(&l, &s2).contains("use_additive_upsampling: false"));

    let mut g = global(2, 2);
    g.depth = None;
    assert!(invalid_message(&g, &s2).contains("needs `depth`"));
    g.extract_levels = Some(vec![]);
    assert!(invalid_message(&g, &s2).contains("extract_levels is empty"));
    assert!(invalid_message(&global(0, 1), &s2).contains("num_channel_initial"));
    assert!(invalid_message(&global(2, 1), &spec(&[8, 8, 8, 8], 2, 4)).contains("2 or 3"));
}

/// The backbone and method of every shipped config (the quick start, `voxelmorph.yaml` and
/// DeepReg's) build for the config's image shape (16³ for overlays without one), and the
/// small ones run.
#[test]
fn shipped_configs_backbones_build_and_run() -> candle::Result<()> {
    use voxreg_framework::config::{ConfigDocument, ConfigValue};
    use voxreg_framework::registry::Registry;

    let registry = Registry::linked().map_err(|e| candle::Error::Msg(e.to_string()))?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut paths = vec![root.join("quickstart.yaml"), root.join("voxelmorph.yaml")];
    let mut deepreg: Vec<_> = std::fs::read_dir(root.join("deepreg"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    deepreg.sort();
    paths.extend(deepreg);
    let mut built = 0;
    for path in paths {
        let doc = ConfigDocument::read(&path).map_err(|e| candle::Error::Msg(e.to_string()))?;
        let train = &doc.value["train"];
        // DeepReg v0.1.x layouts (`train.model.backbone`) are upgraded by the config module.
        let Some(backbone) = train["backbone"].as_mapping() else {
            continue;
        };
        let mut backbone = backbone.clone();
        let name = backbone
            .remove("name")
            .and_then(|n| n.as_str().map(str::to_owned))
            .unwrap_or_default();
        let config = registry
            .decode::<dyn BackboneConfig>(&name, ConfigValue::Mapping(backbone))
            .map_err(|e| candle::Error::Msg(format!("{}: {e}", path.display())))?;
        let dataset = &doc.value["dataset"];
        let shape_value = match &dataset["fixed_image_shape"] {
            ConfigValue::Null => &dataset["image_shape"],
            shape => shape,
        };
        let shape: Vec<usize> = match shape_value.as_sequence() {
            Some(seq) => seq
                .iter()
                .filter_map(|v| v.as_u64().map(|x| x as usize))
                .collect(),
            None => vec![16, 16, 16],
        };
        let (in_channels, out_channels) = match train["method"].as_str() {
            Some("conditional") => (3, 1),
            _ => (2, shape.len()),
        };
        let spec = spec(&shape, in_channels, out_channels);
        let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu);
        let net = match config.build(&spec, vb) {
            Ok(net) => net,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        if shape.iter().product::<usize>() <= 16 * 16 * 16 {
            let out = net.forward(&input(&spec, 1)?)?;
            if let BackboneOutput::Dense(t) = out {
                assert_eq!(t.dims()[2..], shape[..], "{}", path.display());
            }
        }
        built += 1;
    }
    assert!(built >= 6, "only {built} configs have a backbone");
    Ok(())
}

/// The LocalNet of the benchmark (3D, 2 → 3 channels, `num_channel_initial: 16`, levels
/// 0–3) has DeepReg's layer sizes: MONAI's port of it counts 1,500,400 parameters, and
/// DeepReg's output convolutions add a bias of 3 values at each of the 4 levels.
#[test]
fn local_net_has_deepreg_parameter_count() {
    let varmap = VarMap::new();
    let _ = build(&local(16, &[0, 1, 2, 3]), &spec(&[8, 8, 8], 2, 3), &varmap);
    let count: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    assert_eq!(count, 1_500_400 + 4 * 3);
}

#[test]
fn control_points_give_a_smooth_dense_field() -> candle::Result<()> {
    let mut config = local(2, &[0, 1]);
    config.control_points = Some(ControlPoints::Spacing(4));
    let spec3 = spec(&[8, 8, 8], 2, 3);
    check_dense_shape(&config, &spec3)?;
    let net = build(&config, &spec3, &VarMap::new());
    assert_eq!(max_abs(&dense(net.forward(&input(&spec3, 1)?)?))?, 0.0);
    config.out_kernel_initializer = Some("glorot_uniform".to_owned());
    check_gradients(&config, &spec3)?;
    let mut config = unet(2, 2);
    config.control_points = Some(ControlPoints::PerAxis(vec![2, 3]));
    check_dense_shape(&config, &spec(&[12, 10], 2, 2))
}

/// Weights computed from another network's variables (as a hypernetwork computes them from λ)
/// pass the gradient back to those variables.
#[test]
fn gradients_flow_into_supplied_weights() -> candle::Result<()> {
    let mut config = local(2, &[0, 1]);
    config.out_kernel_initializer = Some("glorot_uniform".to_owned());
    let spec = spec(&[8, 8], 2, 2);
    let varmap = VarMap::new();
    let _ = build(&config, &spec, &varmap);
    // Every weight = its initial value scaled by one hyper-variable.
    let scale = Var::new(1.0f32, &Device::Cpu)?;
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|e| candle::Error::Msg(e.to_string()))?
        .iter()
        .map(|(name, var)| {
            let w = var.as_tensor().detach().broadcast_mul(scale.as_tensor())?;
            Ok((name.clone(), w))
        })
        .collect::<candle::Result<_>>()?;
    let net = config
        .build(
            &spec,
            VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
        )
        .map_err(|e| candle::Error::Msg(e.to_string()))?;
    let out = dense(net.forward(&input(&spec, 2)?)?);
    let grads = out.sqr()?.mean_all()?.backward()?;
    let grad = grads
        .get(scale.as_tensor())
        .expect("gradient of the hyper-variable");
    assert!(grad.abs()?.to_scalar::<f32>()? > 0.0);
    Ok(())
}
