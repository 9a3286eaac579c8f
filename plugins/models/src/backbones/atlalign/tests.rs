//! Tests of the `atlalign_global` and `atlalign_local` backbones.

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::{Optimizer, VarMap, SGD};
use voxreg_framework::ops;

use super::*;

fn field_spec(image_size: &[usize]) -> BackboneSpec {
    BackboneSpec {
        spatial_dims: image_size.len(),
        image_size: image_size.to_vec(),
        in_channels: 2,
        out_channels: image_size.len(),
        head: SpecHead::Field,
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

fn parameter_count(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

fn input(spec: &BackboneSpec) -> candle::Result<Tensor> {
    let mut shape = vec![2, 2];
    shape.extend(&spec.image_size);
    Tensor::rand(0f32, 1.0, shape, &Device::Cpu)
}

fn invalid_message(config: &dyn BackboneConfig, spec: &BackboneSpec) -> String {
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu);
    match config.build(spec, vb) {
        Ok(_) => panic!("{config:?} should be rejected for {spec:?}"),
        Err(e @ ComponentError::InvalidConfig { .. }) => e.to_string(),
        Err(e) => panic!("expected an invalid-config error, got {e}"),
    }
}

/// atlalign's documentation ("Deep Learning – Training") prints the Keras summaries of its
/// best models at 320 × 456: 237 630 parameters for the global network
/// (`filters=(16, 16, 32, 32, 32)`, `dense_layers=(40,)`) and 192 578 for the local one
/// (`end_filters=(64, 64)`).
#[test]
fn documented_best_models_have_atlaligns_parameter_counts() {
    let spec = field_spec(&[320, 456]);
    let global = AtlalignGlobalConfig {
        filters: vec![16, 16, 32, 32, 32],
        dense_layers: vec![40],
    };
    let varmap = VarMap::new();
    let _ = build(&global, &spec, &varmap);
    assert_eq!(parameter_count(&varmap), 237_630);

    let local = AtlalignLocalConfig {
        end_filters: vec![64, 64],
        ..AtlalignLocalConfig::default()
    };
    let varmap = VarMap::new();
    let _ = build(&local, &spec, &varmap);
    assert_eq!(parameter_count(&varmap), 192_578);
}

#[test]
fn the_global_network_starts_at_the_identity_on_any_size() -> candle::Result<()> {
    for size in [vec![13, 17], vec![8, 9, 10]] {
        let spec = field_spec(&size);
        let config = AtlalignGlobalConfig {
            filters: vec![4, 4],
            dense_layers: vec![5],
        };
        let net = build(&config, &spec, &VarMap::new());
        let BackboneOutput::Affine(theta) = net.forward(&input(&spec)?)? else {
            panic!("atlalign_global outputs an affine");
        };
        let identity = ops::identity_theta(2, size.len(), DType::F32, &Device::Cpu)?;
        let gap = (theta - identity)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(gap, 0.0, "{size:?}");
    }
    Ok(())
}

/// atlalign's `Affine2DVF`: `Δ = A (x, y, 1)ᵀ − (x, y)ᵀ` with `x` the column. A matrix that
/// shifts `x` by 3 and shears `x` by half of `y` (`f_x = x + 0.5 y + 3`), and shifts `y` by
/// −2, is a DDF whose column component is `0.5 · row + 3` and whose row component is −2.
#[test]
fn atlaligns_matrix_order_becomes_deepregs_theta() -> candle::Result<()> {
    let size = [4, 5];
    let config = AtlalignGlobalConfig {
        filters: vec![2],
        dense_layers: vec![],
    };
    let plan = config.plan(&field_spec(&size)).expect("valid");
    let net = GlobalNet::build(
        "test",
        plan,
        &VarBuilder::from_varmap(&VarMap::new(), DType::F64, &Device::Cpu),
    )?;
    let a = Tensor::new(&[[[1.0f64, 0.5, 3.0], [0.0, 1.0, -2.0]]], &Device::Cpu)?;
    let ddf = ops::affine_to_ddf(&net.theta(&a)?, &size)?;
    let ddf = ddf.squeeze(0)?.to_vec3::<f64>()?;
    assert!(ddf[0].iter().flatten().all(|v| (v + 2.0).abs() < 1e-12));
    for (r, row) in ddf[1].iter().enumerate() {
        assert!(row
            .iter()
            .all(|v| (v - (0.5 * r as f64 + 3.0)).abs() < 1e-12));
    }
    Ok(())
}

#[test]
fn the_local_network_crops_to_the_levels_and_pads_the_field_back() -> candle::Result<()> {
    let config = AtlalignLocalConfig {
        start_filters: vec![3],
        downsample_filters: vec![4, 4],
        middle_filters: vec![4],
        upsample_filters: vec![4, 3],
        end_filters: vec![3],
    };
    // 22 columns: two halvings need a multiple of 4, so one column is cropped on each side.
    let spec = field_spec(&[12, 22]);
    let net = build(&config, &spec, &VarMap::new());
    let BackboneOutput::Dense(field) = net.forward(&input(&spec)?)? else {
        panic!("atlalign_local outputs a field");
    };
    assert_eq!(field.dims(), &[2, 2, 12, 22]);
    let border = |c: usize| -> candle::Result<f32> {
        field.narrow(3, c, 1)?.abs()?.max_all()?.to_scalar::<f32>()
    };
    assert_eq!(border(0)?, 0.0);
    assert_eq!(border(21)?, 0.0);
    assert!(
        border(1)? > 0.0,
        "the inner field is the network's (random init)"
    );

    let spec3 = field_spec(&[8, 9, 8]);
    let net = build(&config, &spec3, &VarMap::new());
    let BackboneOutput::Dense(field) = net.forward(&input(&spec3)?)? else {
        panic!("atlalign_local outputs a field");
    };
    assert_eq!(field.dims(), &[2, 3, 8, 9, 8]);
    Ok(())
}

#[test]
fn every_weight_of_both_networks_gets_a_gradient() -> candle::Result<()> {
    let spec = field_spec(&[8, 12]);
    let local = AtlalignLocalConfig {
        start_filters: vec![2],
        downsample_filters: vec![3, 3],
        middle_filters: vec![3],
        upsample_filters: vec![3, 2],
        end_filters: vec![2],
    };
    let global = AtlalignGlobalConfig {
        filters: vec![2, 3],
        dense_layers: vec![4],
    };
    for config in [&local as &dyn BackboneConfig, &global] {
        let varmap = VarMap::new();
        let net = build(config, &spec, &varmap);
        let x = input(&spec)?;
        // A loss that every weight reaches: the field against a target ≠ its start.
        let loss = || -> candle::Result<Tensor> {
            let out = match net.forward(&x)? {
                BackboneOutput::Dense(t) => t,
                BackboneOutput::Affine(theta) => ops::affine_to_ddf(&theta, &spec.image_size)?,
            };
            (out - 0.3)?.sqr()?.sum_all()
        };
        // The global head starts at zero weights (atlalign's identity start), so only the
        // head has a gradient before the first step; after it, every layer does.
        let mut sgd = SGD::new(varmap.all_vars(), 1e-3)?;
        sgd.backward_step(&loss()?)?;
        let grads = loss()?.backward()?;
        for var in varmap.all_vars() {
            let grad = grads.get(var.as_tensor()).expect("every weight is used");
            let size = grad.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(size > 0.0, "{config:?}: a weight of shape {:?}", var.dims());
        }
    }
    Ok(())
}

#[test]
fn configs_that_cannot_work_are_refused_saying_why() {
    let spec = field_spec(&[12, 22]);
    let unequal = AtlalignLocalConfig {
        upsample_filters: vec![32, 32],
        ..AtlalignLocalConfig::default()
    };
    assert!(invalid_message(&unequal, &spec).contains("upsample_filters has 2 blocks"));
    let deep = AtlalignLocalConfig::default();
    assert!(invalid_message(&deep, &field_spec(&[8, 64])).contains("at least 16 voxels"));
    let global = AtlalignGlobalConfig {
        filters: vec![4; 5],
        dense_layers: vec![10],
    };
    assert!(invalid_message(&global, &spec).contains("smaller than 32"));
    let zero = AtlalignGlobalConfig {
        filters: vec![4, 0],
        dense_layers: vec![10],
    };
    assert!(invalid_message(&zero, &spec).contains("filters must hold"));
    let mut three_in = field_spec(&[16, 16]);
    three_in.in_channels = 3;
    assert!(invalid_message(&AtlalignGlobalConfig::default(), &three_in).contains("method ddf"));
}
