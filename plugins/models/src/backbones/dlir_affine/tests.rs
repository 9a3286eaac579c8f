//! Tests of the `dlir_affine` backbone.

use std::path::Path;

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use voxreg_framework::config::ConfigDocument;
use voxreg_framework::ops;

use super::*;

fn spec(image_size: &[usize]) -> BackboneSpec {
    BackboneSpec {
        spatial_dims: image_size.len(),
        image_size: image_size.to_vec(),
        in_channels: 2,
        out_channels: image_size.len(),
        head: SpecHead::Field,
    }
}

fn small(parametrisation: Parametrisation) -> DlirAffineConfig {
    DlirAffineConfig {
        kernels: Filters::PerLayer(vec![3, 4, 5]),
        num_conv_layers: 3,
        num_downsamplings: 2,
        linear_nodes: 6,
        parametrisation,
        ..DlirAffineConfig::default()
    }
}

fn build(config: &DlirAffineConfig, spec: &BackboneSpec, varmap: &VarMap) -> Box<dyn Backbone> {
    match config.build(
        spec,
        VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu),
    ) {
        Ok(net) => net,
        Err(e) => panic!("build failed: {e}"),
    }
}

fn theta(net: &dyn Backbone, input: &Tensor) -> candle::Result<Tensor> {
    match net.forward(input)? {
        BackboneOutput::Affine(t) => Ok(t),
        BackboneOutput::Dense(_) => panic!("expected an affine output"),
    }
}

fn input(batch: usize, size: &[usize]) -> candle::Result<Tensor> {
    Tensor::rand(0f32, 1.0, [&[batch, 2][..], size].concat(), &Device::Cpu)
}

fn max_abs(t: &Tensor) -> candle::Result<f32> {
    t.abs()?.max_all()?.to_scalar::<f32>()
}

fn parameter_count(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

#[test]
fn starts_at_the_identity_on_a_non_square_2d_image_and_in_3d() -> candle::Result<()> {
    for parametrisation in [Parametrisation::Bounded, Parametrisation::Raw] {
        let config = DlirAffineConfig {
            parametrisation,
            ..DlirAffineConfig::default()
        };
        for size in [vec![24usize, 40], vec![12, 10, 8]] {
            let net = build(&config, &spec(&size), &VarMap::new());
            let theta = theta(&*net, &input(2, &size)?)?;
            assert_eq!(theta.dims(), &[2, size.len() + 1, size.len()]);
            let ddf = ops::affine_to_ddf(&theta, &size)?;
            assert!(max_abs(&ddf)? < 1e-5, "{parametrisation:?} {size:?}");
        }
    }
    Ok(())
}

#[test]
fn runs_on_any_image_size() -> candle::Result<()> {
    let net = build(
        &small(Parametrisation::Bounded),
        &spec(&[16, 16]),
        &VarMap::new(),
    );
    for size in [[7usize, 13], [1, 1], [33, 5]] {
        assert_eq!(theta(&*net, &input(3, &size)?)?.dims(), &[3, 3, 2]);
    }
    assert!(net.forward(&input(1, &[4, 4, 4])?).is_err());
    Ok(())
}

#[test]
fn both_images_go_through_one_set_of_pipeline_weights() -> candle::Result<()> {
    let config = small(Parametrisation::Bounded);
    let varmap = VarMap::new();
    let plan = config.plan(&spec(&[12, 20])).map_err(candle::Error::msg)?;
    let net = DlirAffineNet::build(
        "test",
        plan,
        &VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    // One pipeline's variables: a weight and a bias per convolution.
    let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    let pipeline = names.iter().filter(|n| n.starts_with("features.")).count();
    assert_eq!(pipeline, 2 * 3, "{names:?}");
    // 1→3, 3→4, 4→5 convolutions (3×3), dense 10→6, 6→6, head 6→7.
    let conv = (3 * 9 + 3) + (4 * 3 * 9 + 4) + (5 * 4 * 9 + 5);
    let dense = (6 * 10 + 6) + (6 * 6 + 6) + (7 * 6 + 7);
    assert_eq!(parameter_count(&varmap), conv + dense);
    // Swapping the images swaps the two halves of the concatenated features.
    let x = input(2, &[12, 20])?;
    let swapped = Tensor::cat(&[x.narrow(1, 1, 1)?, x.narrow(1, 0, 1)?], 1)?;
    let (f, g) = (net.features(&x)?, net.features(&swapped)?);
    assert_eq!(f.dims(), &[2, 10]);
    let halves_swapped = Tensor::cat(&[f.narrow(1, 5, 5)?, f.narrow(1, 0, 5)?], 1)?;
    assert!(max_abs(&(g - halves_swapped)?)? < 1e-6);
    // The moving and fixed features of a pair differ (they are not one image twice).
    assert!(max_abs(&(f.narrow(1, 0, 5)? - f.narrow(1, 5, 5)?)?)? > 1e-4);
    Ok(())
}

/// TorchIR's `AIRNet` defaults (kernels 32, 5 convolutions, 2 dense layers of 64, 7 outputs in
/// 2D): convolutions 1→32 (320) and 4 × 32→32 (9248 each), dense 64→64 twice (4160 each),
/// heads 64→2, 1, 2, 2 (455): 46 087. In 3D (which TorchIR cannot build, its blocks are
/// always 2D) the same layout with 3³ kernels and 15 outputs: 896 + 4 × 27 680 + 8320 + 975.
#[test]
fn parameter_count_matches_torchir_airnet_defaults() {
    for (size, expected) in [(vec![32usize, 32], 46_087), (vec![16, 16, 16], 120_911)] {
        let varmap = VarMap::new();
        build(&DlirAffineConfig::default(), &spec(&size), &varmap);
        assert_eq!(parameter_count(&varmap), expected, "{size:?}");
    }
    // The raw head has ndim · (ndim + 1) outputs: 6 · 65 = 390 instead of 455.
    let varmap = VarMap::new();
    let raw = DlirAffineConfig {
        parametrisation: Parametrisation::Raw,
        ..DlirAffineConfig::default()
    };
    build(&raw, &spec(&[32, 32]), &varmap);
    assert_eq!(parameter_count(&varmap), 46_087 - 455 + 390);
}

#[test]
fn training_moves_the_transform_off_the_identity() -> candle::Result<()> {
    // Fit θ to a translation by (1, −2) voxels: the loss must fall, and after the first step
    // the pipeline weights (not just the head) receive gradient.
    let size = [10usize, 14];
    for parametrisation in [Parametrisation::Bounded, Parametrisation::Raw] {
        let varmap = VarMap::new();
        let net = build(&small(parametrisation), &spec(&size), &varmap);
        let x = input(2, &size)?;
        let target = ops::affine_to_ddf(
            &Tensor::new(&[[[1f32, 0.0], [0.0, 1.0], [1.0, -2.0]]], &Device::Cpu)?
                .broadcast_as((2, 3, 2))?
                .contiguous()?,
            &size,
        )?;
        let loss = |net: &dyn Backbone| -> candle::Result<Tensor> {
            (ops::affine_to_ddf(&theta(net, &x)?, &size)? - &target)?
                .sqr()?
                .mean_all()
        };
        let params = ParamsAdamW {
            lr: 0.01,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        };
        let mut sgd = AdamW::new(varmap.all_vars(), params)?;
        let first = loss(&*net)?;
        sgd.backward_step(&first)?;
        let grads = loss(&*net)?.backward()?;
        let conv_grad = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _)| name.starts_with("features."))
            .filter_map(|(_, v)| grads.get(v.as_tensor()).cloned())
            .map(|g| max_abs(&g))
            .collect::<candle::Result<Vec<f32>>>()?;
        assert!(conv_grad.iter().any(|&g| g > 0.0), "{parametrisation:?}");
        for _ in 0..50 {
            sgd.backward_step(&loss(&*net)?)?;
        }
        let (before, after) = (first.to_scalar::<f32>()?, loss(&*net)?.to_scalar::<f32>()?);
        assert!(
            after < 0.8 * before,
            "{parametrisation:?}: {before} → {after}"
        );
    }
    Ok(())
}

fn decode(text: &str) -> Result<Box<dyn BackboneConfig>, String> {
    let value = ConfigDocument::parse(text, Path::new("test.yaml"))
        .map_err(|e| e.to_string())?
        .value;
    let registry = Registry::linked().map_err(|e| e.to_string())?;
    registry
        .decode::<dyn BackboneConfig>("dlir_affine", value)
        .map_err(|e| e.to_string())
}

#[test]
fn the_registry_selects_it_by_name_with_its_keys() {
    let config = decode("{parametrisation: raw, kernels: [4, 8], num_conv_layers: 2}").unwrap();
    assert!(config.is_affine());
    let text = format!("{config:?}");
    assert!(text.contains("Raw") && text.contains("[4, 8]"), "{text}");
    let defaults = decode("{}").unwrap();
    assert_eq!(
        format!("{defaults:?}"),
        format!("{:?}", DlirAffineConfig::default())
    );
    assert!(decode("{parametrisation: free}").is_err());
}

fn invalid(config: &DlirAffineConfig, spec: &BackboneSpec) -> String {
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu);
    match config.build(spec, vb) {
        Ok(_) => panic!("{config:?} should be rejected"),
        Err(e @ ComponentError::InvalidConfig { .. }) => e.to_string(),
        Err(e) => panic!("expected an invalid-config error, got {e}"),
    }
}

#[test]
fn invalid_configs_say_what_would_work() {
    let s = spec(&[16, 16]);
    let base = DlirAffineConfig::default();
    let cases: [(DlirAffineConfig, &str); 6] = [
        (
            DlirAffineConfig {
                kernel_size: 4,
                ..base.clone()
            },
            "kernel_size must be odd",
        ),
        (
            DlirAffineConfig {
                num_conv_layers: 0,
                ..base.clone()
            },
            "num_conv_layers",
        ),
        (
            DlirAffineConfig {
                num_downsamplings: 6,
                ..base.clone()
            },
            "num_downsamplings 6",
        ),
        (
            DlirAffineConfig {
                kernels: Filters::PerLayer(vec![8, 8]),
                ..base.clone()
            },
            "one per convolution (5 values",
        ),
        (
            DlirAffineConfig {
                kernels: Filters::Uniform(0),
                ..base.clone()
            },
            "kernels must be in",
        ),
        (
            DlirAffineConfig {
                num_dense_layers: 0,
                ..base.clone()
            },
            "num_dense_layers",
        ),
    ];
    for (config, expected) in cases {
        let message = invalid(&config, &s);
        assert!(
            message.contains(expected) && message.contains("dlir_affine"),
            "{message}"
        );
    }
    let conditional = BackboneSpec {
        in_channels: 3,
        out_channels: 1,
        head: SpecHead::Probability,
        ..s
    };
    assert!(invalid(&base, &conditional).contains("method ddf"));
}
