//! Tests of the `dlir_bspline` backbone.

use std::path::Path;

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use voxreg_framework::config::ConfigDocument;
use voxreg_framework::ops;

use super::*;
use crate::dlir_bspline_net::DIFFEOMORPHIC_BOUND;

fn spec(image_size: &[usize]) -> BackboneSpec {
    BackboneSpec {
        spatial_dims: image_size.len(),
        image_size: image_size.to_vec(),
        in_channels: 2,
        out_channels: image_size.len(),
        head: SpecHead::Field,
    }
}

fn small(spacing: GridSpacing) -> DlirBsplineConfig {
    DlirBsplineConfig {
        grid_spacing: spacing,
        kernels: Filters::PerLayer(vec![3, 4, 5]),
        num_conv_layers: 3,
        num_dense_layers: 1,
        ..DlirBsplineConfig::default()
    }
}

fn build(config: &DlirBsplineConfig, spec: &BackboneSpec, varmap: &VarMap) -> Box<dyn Backbone> {
    match config.build(
        spec,
        VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu),
    ) {
        Ok(net) => net,
        Err(e) => panic!("build failed: {e}"),
    }
}

fn ddf(net: &dyn Backbone, input: &Tensor) -> candle::Result<Tensor> {
    match net.forward(input)? {
        BackboneOutput::Dense(t) => Ok(t),
        BackboneOutput::Affine(_) => panic!("expected a dense output"),
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
fn starts_at_the_identity_with_a_field_of_the_image_size() -> candle::Result<()> {
    for limits in [false, true] {
        let config = DlirBsplineConfig {
            apply_diffeomorphic_limits: limits,
            ..DlirBsplineConfig::default()
        };
        for size in [vec![24usize, 40], vec![12, 10, 8], vec![13, 7]] {
            let net = build(&config, &spec(&size), &VarMap::new());
            let field = ddf(&*net, &input(2, &size)?)?;
            assert_eq!(field.dims(), [&[2, size.len()][..], &size].concat());
            assert_eq!(max_abs(&field)?, 0.0, "{size:?} limits {limits}");
        }
    }
    Ok(())
}

#[test]
fn pools_each_axis_down_to_one_control_point_per_cell() -> candle::Result<()> {
    let varmap = VarMap::new();
    let config = small(GridSpacing::PerAxis(vec![4, 2]));
    let plan = config.plan(&spec(&[13, 10])).map_err(candle::Error::msg)?;
    assert_eq!(plan.pooling(0), Some(vec![2, 2]));
    assert_eq!(plan.pooling(1), Some(vec![2, 1]));
    assert_eq!(plan.pooling(2), None);
    let net = DlirBsplineNet::build(
        "test",
        plan,
        &VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let x = input(3, &[13, 10])?;
    let coefficients = net.coefficients(&x)?;
    let grid = ops::bspline_grid_shape(&[13, 10], &[4, 2])?;
    assert_eq!(grid, [4, 5]);
    assert_eq!(coefficients.dims(), &[3, 2, 4, 5]);
    // The input size is taken from the input, not the spec.
    assert_eq!(ddf(&net, &input(1, &[9, 6])?)?.dims(), &[1, 2, 9, 6]);
    assert!(net.forward(&input(1, &[4, 4, 4])?).is_err());
    Ok(())
}

/// TorchIR's `DIRNet` defaults (kernels 32, 5 convolutions, 2 dense layers) in 2D:
/// convolutions 2→32 (608) and 4 × 32→32 (9248 each), 1 × 1 convolutions 32→32 twice
/// (1056 each), the coefficient layer 32→2 (66): 39 778. In 3D: 1760 + 4 × 27 680 +
/// 2 × 1056 + 99 = 114 691.
#[test]
fn parameter_count_matches_torchir_dirnet_defaults() {
    for (size, expected) in [(vec![32usize, 32], 39_778), (vec![16, 16, 16], 114_691)] {
        let varmap = VarMap::new();
        build(&DlirBsplineConfig::default(), &spec(&size), &varmap);
        assert_eq!(parameter_count(&varmap), expected, "{size:?}");
    }
}

/// Sets every variable whose name starts with `prefix` to `value`.
/// Sets the layer under `prefix` to output `value` whatever its input: weights 0, bias
/// `value` (a constant output, so the test does not depend on the random input and weights).
fn fill(varmap: &VarMap, prefix: &str, value: f32) -> candle::Result<()> {
    for (name, var) in varmap.data().lock().unwrap().iter() {
        if name.starts_with(prefix) {
            let scale = if name.ends_with("weight") { 0.0 } else { 1.0 };
            var.set(
                &var.as_tensor()
                    .ones_like()?
                    .affine(scale * value as f64, 0.0)?,
            )?;
        }
    }
    Ok(())
}

#[test]
fn the_diffeomorphic_limit_bounds_the_field_by_four_tenths_of_the_spacing() -> candle::Result<()> {
    let size = [16usize, 24];
    for limits in [false, true] {
        let varmap = VarMap::new();
        let config = DlirBsplineConfig {
            apply_diffeomorphic_limits: limits,
            ..small(GridSpacing::PerAxis(vec![4, 8]))
        };
        let net = build(&config, &spec(&size), &varmap);
        fill(&varmap, "coefficients.", 50.0)?;
        let field = ddf(&*net, &input(2, &size)?)?;
        // The basis is non-negative and sums to at most 1, so |u_a| ≤ max |c_a|.
        for (axis, spacing) in [(0usize, 4.0f32), (1, 8.0)] {
            let component = max_abs(&field.narrow(1, axis, 1)?)?;
            let bound = DIFFEOMORPHIC_BOUND as f32 * spacing;
            if limits {
                assert!(component <= bound + 1e-4, "axis {axis}: {component}");
                assert!(component > 0.5 * bound, "axis {axis}: {component}");
            } else {
                assert!(component > 10.0 * bound, "axis {axis}: {component}");
            }
        }
    }
    Ok(())
}

#[test]
fn training_fits_a_smooth_field_and_reaches_the_feature_layers() -> candle::Result<()> {
    // Fit the field to a translation by (1, −0.5) voxels in the interior: the loss must
    // fall, and from the second step on the feature convolutions receive gradient.
    let size = [16usize, 16];
    let varmap = VarMap::new();
    let net = build(&small(GridSpacing::Uniform(4)), &spec(&size), &varmap);
    let x = input(2, &size)?;
    let shift = Tensor::new(&[1f32, -0.5], &Device::Cpu)?.reshape((1, 2, 1, 1))?;
    let target = shift.broadcast_as((2, 2, 16, 16))?.contiguous()?;
    let interior = |t: &Tensor| t.narrow(2, 6, 4)?.narrow(3, 6, 4);
    let loss = |net: &dyn Backbone| -> candle::Result<Tensor> {
        (interior(&ddf(net, &x)?)? - interior(&target)?)?
            .sqr()?
            .mean_all()
    };
    let params = ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.0,
        ..ParamsAdamW::default()
    };
    let mut adam = AdamW::new(varmap.all_vars(), params)?;
    let first = loss(&*net)?;
    adam.backward_step(&first)?;
    let grads = loss(&*net)?.backward()?;
    let feature_grad = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with("features."))
        .filter_map(|(_, v)| grads.get(v.as_tensor()).cloned())
        .map(|g| max_abs(&g))
        .collect::<candle::Result<Vec<f32>>>()?;
    assert!(feature_grad.iter().any(|&g| g > 0.0));
    for _ in 0..60 {
        adam.backward_step(&loss(&*net)?)?;
    }
    let (before, after) = (first.to_scalar::<f32>()?, loss(&*net)?.to_scalar::<f32>()?);
    assert!(after < 0.2 * before, "{before} → {after}");
    Ok(())
}

fn decode(text: &str) -> Result<Box<dyn BackboneConfig>, String> {
    let value = ConfigDocument::parse(text, Path::new("test.yaml"))
        .map_err(|e| e.to_string())?
        .value;
    let registry = Registry::linked().map_err(|e| e.to_string())?;
    registry
        .decode::<dyn BackboneConfig>("dlir_bspline", value)
        .map_err(|e| e.to_string())
}

#[test]
fn the_registry_selects_it_by_name_with_its_keys() {
    let config = decode("{grid_spacing: [4, 8], apply_diffeomorphic_limits: true}").unwrap();
    assert!(!config.is_affine());
    let text = format!("{config:?}");
    assert!(text.contains("[4, 8]") && text.contains("true"), "{text}");
    let defaults = decode("{}").unwrap();
    assert_eq!(
        format!("{defaults:?}"),
        format!("{:?}", DlirBsplineConfig::default())
    );
    assert!(decode("{grid_spacing: eight}").is_err());
}

fn invalid(config: &DlirBsplineConfig, spec: &BackboneSpec) -> String {
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
    let base = DlirBsplineConfig::default();
    let cases: [(DlirBsplineConfig, &str); 6] = [
        (
            DlirBsplineConfig {
                grid_spacing: GridSpacing::Uniform(6),
                ..base.clone()
            },
            "powers of 2",
        ),
        (
            DlirBsplineConfig {
                grid_spacing: GridSpacing::PerAxis(vec![4, 4, 4]),
                ..base.clone()
            },
            "one per axis (2 values)",
        ),
        (
            DlirBsplineConfig {
                grid_spacing: GridSpacing::Uniform(64),
                ..base.clone()
            },
            "needs 6 2× poolings",
        ),
        (
            DlirBsplineConfig {
                kernel_size: 2,
                ..base.clone()
            },
            "kernel_size must be odd",
        ),
        (
            DlirBsplineConfig {
                kernels: Filters::PerLayer(vec![8]),
                ..base.clone()
            },
            "one per convolution (5 values",
        ),
        (
            DlirBsplineConfig {
                grid_spacing: GridSpacing::Uniform(0),
                ..base.clone()
            },
            "powers of 2",
        ),
    ];
    for (config, expected) in cases {
        let message = invalid(&config, &s);
        assert!(
            message.contains(expected) && message.contains("dlir_bspline"),
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
