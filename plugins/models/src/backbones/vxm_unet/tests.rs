//! Tests of the `vxm_unet` backbone (tiny shapes).

use std::collections::HashMap;

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::VarMap;
use voxreg_framework::config::{ConfigMapping, ConfigValue};
use voxreg_framework::registry::Registry;

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

/// A field spec: 2 input channels (moving + fixed), `ndim` output channels.
fn field_spec(image_size: &[usize]) -> BackboneSpec {
    spec(image_size, 2, image_size.len())
}

/// A small network: two levels of 4 channels, one final convolution.
fn small() -> VxmUNetConfig {
    VxmUNetConfig {
        channels: vec![4, 6, 6, 6],
        unet_out_channels: 5,
        final_conv_channels: vec![3],
        ..VxmUNetConfig::default()
    }
}

fn build(config: &VxmUNetConfig, spec: &BackboneSpec, varmap: &VarMap) -> Box<dyn Backbone> {
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

fn field(net: &dyn Backbone, x: &Tensor) -> candle::Result<Tensor> {
    match net.forward(x)? {
        BackboneOutput::Dense(t) => Ok(t),
        BackboneOutput::Affine(_) => panic!("vxm_unet outputs a dense field"),
    }
}

fn max_abs(t: &Tensor) -> candle::Result<f32> {
    t.abs()?.max_all()?.to_scalar::<f32>()
}

fn parameter_count(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

fn invalid_message(config: &VxmUNetConfig, spec: &BackboneSpec) -> String {
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu);
    match config.build(spec, vb) {
        Ok(_) => panic!("{config:?} should be rejected for {spec:?}"),
        Err(e @ ComponentError::InvalidConfig { .. }) => e.to_string(),
        Err(e) => panic!("expected an invalid-config error, got {e}"),
    }
}

#[test]
fn output_is_a_field_of_the_image_size_in_2d_and_3d() -> candle::Result<()> {
    let strided = VxmUNetConfig {
        use_maxpool: false,
        bias: false,
        final_conv_channels: vec![],
        kernel_size: 5,
        up_kernel_size: 1,
        ..small()
    };
    let cases = [
        (VxmUNetConfig::default(), field_spec(&[16, 32])),
        (VxmUNetConfig::default(), field_spec(&[16, 16, 16])),
        (small(), field_spec(&[8, 12])),
        (small(), field_spec(&[4, 8, 12])),
        (strided.clone(), field_spec(&[8, 4])),
        (strided, field_spec(&[4, 4, 8])),
    ];
    for (config, spec) in cases {
        let net = build(&config, &spec, &VarMap::new());
        let out = field(net.as_ref(), &input(&spec, 2)?)?;
        let mut expected = vec![2, spec.spatial_dims];
        expected.extend(&spec.image_size);
        assert_eq!(out.dims(), &expected[..], "{config:?}");
    }
    Ok(())
}

/// MONAI's `VoxelMorphUNet(spatial_dims, in_channels=2, unet_out_channels=32, channels=(16,
/// 32, 32, 32, 32, 32, 32, 32), final_conv_channels=(16, 16))` has these counts, from
/// `sum(p.numel() for p in net.parameters())` with MONAI 1.x in the peer venv (by hand: nine
/// U-Net convolutions 2→16, 16→32, 3 × 32→32, 3 × 64→32, 48→32, then 32→16, 16→16, 16→ndim,
/// each `cin · cout · 3^ndim + cout`).
#[test]
fn default_network_has_monais_parameter_count() {
    for (size, monai_count) in [(vec![16, 16, 16], 327_331), (vec![16, 16], 109_170)] {
        let varmap = VarMap::new();
        let _ = build(&VxmUNetConfig::default(), &field_spec(&size), &varmap);
        assert_eq!(parameter_count(&varmap), monai_count, "{size:?}");
    }
}

#[test]
fn weights_have_stable_names_and_shapes() {
    let varmap = VarMap::new();
    let _ = build(&small(), &field_spec(&[8, 8]), &varmap);
    let data = varmap.data().lock().expect("varmap lock");
    let expected: [(&str, &[usize]); 12] = [
        ("encode.0.weight", &[4, 2, 3, 3]),
        ("encode.0.bias", &[4]),
        ("encode.1.weight", &[6, 4, 3, 3]),
        ("bottom.weight", &[6, 6, 3, 3]),
        ("decode.1.weight", &[6, 12, 3, 3]),
        ("decode.1.bias", &[6]),
        ("decode.0.weight", &[5, 10, 3, 3]),
        ("final.0.weight", &[3, 5, 3, 3]),
        ("final.0.bias", &[3]),
        ("flow.weight", &[2, 3, 3, 3]),
        ("flow.bias", &[2]),
        ("encode.1.bias", &[6]),
    ];
    for (name, dims) in expected {
        let Some(var) = data.get(name) else {
            panic!("missing `{name}`")
        };
        assert_eq!(var.dims(), dims, "{name}");
    }
    // Besides those: bottom.bias and decode.0.bias.
    assert_eq!(data.len(), expected.len() + 2);
}

/// The flow layer starts as VoxelMorph's (`N(0, 10⁻⁵)`, zero bias), so the untrained network
/// predicts a near-zero field; hidden layers are PyTorch's `U(±1/√fan_in)`.
#[test]
fn flow_layer_starts_near_zero_as_in_voxelmorph() -> candle::Result<()> {
    let varmap = VarMap::new();
    let spec = field_spec(&[16, 16, 16]);
    let net = build(&VxmUNetConfig::default(), &spec, &varmap);
    let data = varmap.data().lock().expect("varmap lock").clone();
    let flow = data["flow.weight"].as_tensor().flatten_all()?;
    let std = flow.sqr()?.mean_all()?.sqrt()?.to_scalar::<f32>()?;
    assert!((0.9e-5..1.1e-5).contains(&std), "flow weight std {std}");
    assert_eq!(max_abs(data["flow.bias"].as_tensor())?, 0.0);
    // encode.0: fan_in = 2 · 27, bound 1/√54 ≈ 0.136.
    let hidden = data["encode.0.weight"].as_tensor();
    let bound = 1.0 / 54f32.sqrt();
    let largest = max_abs(hidden)?;
    assert!(
        largest <= bound && largest > 0.8 * bound,
        "{largest} vs {bound}"
    );
    let out = field(net.as_ref(), &input(&spec, 1)?)?;
    let size = max_abs(&out)?;
    assert!(size > 0.0 && size < 1e-3, "initial field {size}");
    Ok(())
}

#[test]
fn gradients_reach_every_weight() -> candle::Result<()> {
    for (config, spec) in [
        (small(), field_spec(&[8, 8, 4])),
        (
            VxmUNetConfig {
                use_maxpool: false,
                ..small()
            },
            field_spec(&[8, 12]),
        ),
    ] {
        let varmap = VarMap::new();
        let net = build(&config, &spec, &varmap);
        let out = field(net.as_ref(), &input(&spec, 2)?)?;
        let loss = (out - 0.5)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        let data = varmap.data().lock().expect("varmap lock");
        for (name, var) in data.iter() {
            let Some(grad) = grads.get(var.as_tensor()) else {
                panic!("{config:?}: no gradient for `{name}`")
            };
            let size = max_abs(grad)?;
            assert!(
                size.is_finite() && size > 0.0,
                "{config:?}: `{name}` {size}"
            );
        }
    }
    Ok(())
}

#[test]
fn runs_from_externally_supplied_weights() -> candle::Result<()> {
    let spec = field_spec(&[8, 8]);
    let config = small();
    let varmap = VarMap::new();
    let net = build(&config, &spec, &varmap);
    let x = input(&spec, 2)?;
    let expected = field(net.as_ref(), &x)?;
    // What a hypernetwork does: supply every weight as a computed tensor.
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
        .collect();
    let supplied = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let net = config
        .build(&spec, supplied)
        .map_err(|e| candle::Error::Msg(e.to_string()))?;
    assert_eq!(max_abs(&(field(net.as_ref(), &x)? - &expected)?)?, 0.0);
    let mut partial = tensors;
    partial.remove("decode.1.weight");
    let partial = VarBuilder::from_tensors(partial, DType::F32, &Device::Cpu);
    assert!(matches!(
        config.build(&spec, partial),
        Err(ComponentError::Tensor { .. })
    ));
    Ok(())
}

/// A hand-computed case: one level, 1×1 kernels, every weight 1 and bias 0, on a 2×2 image of
/// one channel with values 1, −2, 3, −4. Encoder: LeakyReLU(x) = [1, −0.4, 3, −0.8]. Bottom:
/// max pool 3, conv 3, nearest up [3, 3, 3, 3]. Decoder on `[skip, up]` with weights (1, 2):
/// LeakyReLU(skip + 2 · up) = [7, 5.6, 9, 5.2]. The flow layer copies it into both outputs,
/// plus the biases 0 and 1.
#[test]
fn matches_a_hand_computed_forward_pass() -> candle::Result<()> {
    let config = VxmUNetConfig {
        channels: vec![1, 1],
        unet_out_channels: 1,
        final_conv_channels: vec![],
        kernel_size: 1,
        up_kernel_size: 1,
        use_maxpool: true,
        bias: true,
    };
    let spec = spec(&[2, 2], 1, 2);
    let dev = Device::Cpu;
    let ones = |shape: &[usize]| Tensor::ones(shape, DType::F32, &dev);
    let zeros = |n: usize| Tensor::zeros(n, DType::F32, &dev);
    let tensors = HashMap::from([
        ("encode.0.weight".to_owned(), ones(&[1, 1, 1, 1])?),
        ("encode.0.bias".to_owned(), zeros(1)?),
        ("bottom.weight".to_owned(), ones(&[1, 1, 1, 1])?),
        ("bottom.bias".to_owned(), zeros(1)?),
        (
            "decode.0.weight".to_owned(),
            Tensor::new(&[1f32, 2.0], &dev)?.reshape((1, 2, 1, 1))?,
        ),
        ("decode.0.bias".to_owned(), zeros(1)?),
        ("flow.weight".to_owned(), ones(&[2, 1, 1, 1])?),
        ("flow.bias".to_owned(), Tensor::new(&[0f32, 1.0], &dev)?),
    ]);
    let net = config
        .build(&spec, VarBuilder::from_tensors(tensors, DType::F32, &dev))
        .map_err(|e| candle::Error::Msg(e.to_string()))?;
    let x = Tensor::new(&[1f32, -2.0, 3.0, -4.0], &dev)?.reshape((1, 1, 2, 2))?;
    let out = field(net.as_ref(), &x)?.flatten_all()?.to_vec1::<f32>()?;
    let expected = [7.0, 5.6, 9.0, 5.2, 8.0, 6.6, 10.0, 6.2];
    for (got, want) in out.iter().zip(expected) {
        assert!((got - want).abs() < 1e-6, "{out:?}");
    }
    Ok(())
}

#[test]
fn configs_that_cannot_work_are_rejected_with_a_reason() {
    let s3 = field_spec(&[16, 16, 16]);
    let default = VxmUNetConfig::default();
    let message = invalid_message(&default, &field_spec(&[16, 24, 16]));
    assert!(message.contains("divisible by 2^4 = 16"), "{message}");
    assert!(message.contains("[16, 32, 16]"), "{message}");
    let message = invalid_message(&small(), &field_spec(&[6, 8]));
    assert!(message.contains("divisible by 2^2 = 4"), "{message}");
    assert!(invalid_message(&default, &spec(&[16, 16, 16], 3, 1)).contains("use method ddf"));
    let odd_list = VxmUNetConfig {
        channels: vec![16, 32, 32],
        ..small()
    };
    assert!(invalid_message(&odd_list, &s3).contains("pairs"));
    let empty = VxmUNetConfig {
        channels: vec![],
        ..small()
    };
    assert!(invalid_message(&empty, &s3).contains("at least one pair"));
    let zero = VxmUNetConfig {
        final_conv_channels: vec![16, 0],
        ..small()
    };
    assert!(invalid_message(&zero, &s3).contains("must be positive"));
    let even = VxmUNetConfig {
        up_kernel_size: 2,
        ..small()
    };
    assert!(invalid_message(&even, &s3).contains("up_kernel_size must be odd"));
    assert!(invalid_message(&small(), &field_spec(&[8, 8, 8, 8])).contains("2 or 3"));
    let deep = VxmUNetConfig {
        channels: vec![4; 200],
        ..small()
    };
    assert!(invalid_message(&deep, &s3).contains("too many levels"));
    let too_deep_for_16 = VxmUNetConfig {
        channels: vec![4; 10],
        ..small()
    };
    let message = invalid_message(&too_deep_for_16, &s3);
    assert!(message.contains("[32, 32, 32]"), "{message}");
    assert!(invalid_message(&small(), &field_spec(&[0, 8])).contains("divisible"));
}

/// An empty mapping decodes to the defaults (VoxelMorph's network), and unknown keys are
/// rejected.
#[test]
fn keys_default_to_voxelmorphs_network() {
    let registry = Registry::linked().expect("registry");
    let empty = ConfigValue::Mapping(Default::default());
    let config = registry
        .decode::<dyn BackboneConfig>("vxm_unet", empty)
        .expect("defaults decode");
    let expected: Box<dyn BackboneConfig> = Box::new(VxmUNetConfig::default());
    assert_eq!(format!("{config:?}"), format!("{expected:?}"));
    let mut unknown = ConfigMapping::default();
    unknown.insert("depth".into(), ConfigValue::from(3u64));
    assert!(registry
        .decode::<dyn BackboneConfig>("vxm_unet", ConfigValue::Mapping(unknown))
        .is_err());
}
