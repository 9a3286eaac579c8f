//! The forward pass of each registration method (DeepReg's `DDFModel`, `DVFModel` and
//! `ConditionalModel`): backbone input from a batch, backbone output turned into a transform,
//! moving image and labels warped onto the fixed grid.

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::ops::{self, Interp, Padding};
use voxreg_framework::prelude::*;

use crate::nn::resize_to;

/// The backbone input as DeepReg builds it: the moving image linearly resized to the fixed
/// shape, the fixed image and, with `with_moving_label`, the moving label resized, stacked as
/// channels: `(N, 2 or 3, *fixed)`.
///
/// Errors: missing or multi-channel moving label when one is asked for, or batch sizes that
/// disagree.
pub fn backbone_input(batch: &Batch, with_moving_label: bool) -> candle::Result<Tensor> {
    let fixed = batch.fixed_image()?;
    let size = &fixed.dims()[2..];
    let mut parts = vec![resize_to(batch.moving_image()?, size)?, fixed.clone()];
    if with_moving_label {
        let Some(label) = batch.moving_label() else {
            candle::bail!("the conditional method needs the moving label, the batch has none");
        };
        if label.dim(1)? != 1 {
            candle::bail!(
                "the conditional method takes one label channel at a time, got {:?}",
                label.dims()
            );
        }
        parts.push(resize_to(label, size)?);
    }
    Tensor::cat(&parts, 1)
}

/// Warps the moving image (and the moving labels, if any) by `ddf` onto the fixed grid:
/// linear interpolation, zeros outside the moving image (DeepReg's `Warping`), adding
/// `pred_fixed_image` and `pred_fixed_label` to `out`.
pub fn warp_moving(batch: &Batch, ddf: &Tensor, out: &mut Tensors) -> candle::Result<()> {
    let image = ops::warp(batch.moving_image()?, ddf, Interp::Linear, Padding::Zeros)?;
    out.put(names::PRED_FIXED_IMAGE, Kind::Image, Grid::Fixed, image);
    if let Some(label) = batch.moving_label() {
        let label = ops::warp(label, ddf, Interp::Linear, Padding::Zeros)?;
        out.put(names::PRED_FIXED_LABEL, Kind::Label, Grid::Fixed, label);
    }
    Ok(())
}

fn dense(output: BackboneOutput, method: &str) -> candle::Result<Tensor> {
    match output {
        BackboneOutput::Dense(t) => Ok(t),
        BackboneOutput::Affine(_) => candle::bail!(
            "the {method} method needs a dense backbone (unet, local), not an affine one (global)"
        ),
    }
}

/// VoxelMorph's `bidir`: the fixed image warped onto the moving grid by `inverse_ddf` (an
/// approximate inverse of the forward transform), added to `out` as `pred_moving_image`, for
/// an image loss on `[pred_moving_image, moving_image]`.
fn warp_fixed(batch: &Batch, inverse_ddf: &Tensor, out: &mut Tensors) -> candle::Result<()> {
    let image = ops::warp(
        batch.fixed_image()?,
        inverse_ddf,
        Interp::Linear,
        Padding::Zeros,
    )?;
    out.put(names::PRED_MOVING_IMAGE, Kind::Image, Grid::Moving, image);
    Ok(())
}

/// `ddf`: predicts the DDF (directly, or from the affine of a `global` backbone) and warps
/// the moving image and labels with it; with `bidir` also the fixed image by the negated
/// DDF (VoxelMorph's non-diffeomorphic `bidir`).
pub(crate) fn ddf_forward(
    backbone: &dyn Backbone,
    bidir: bool,
    batch: &Batch,
) -> candle::Result<Tensors> {
    let input = backbone_input(batch, false)?;
    let mut out = Tensors::new();
    match backbone.forward(&input)? {
        BackboneOutput::Dense(ddf) => out.put(names::DDF, Kind::Field, Grid::Fixed, ddf),
        BackboneOutput::Affine(theta) => {
            let ddf = ops::affine_to_ddf(&theta, &input.dims()[2..])?;
            out.put(names::DDF, Kind::Field, Grid::Fixed, ddf);
            out.put(names::THETA, Kind::Affine, Grid::None, theta);
        }
    }
    let ddf = out.require(names::DDF)?.clone();
    warp_moving(batch, &ddf, &mut out)?;
    if bidir {
        warp_fixed(batch, &ddf.neg()?, &mut out)?;
    }
    Ok(out)
}

/// How the `dvf` method integrates its velocity field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Integration {
    /// Scaling-and-squaring steps.
    pub steps: usize,
    /// Integrate at `1/downsize` of the resolution (VoxelMorph's `int_downsize`); 1: full.
    pub downsize: usize,
}

/// The grid a field of `size` is integrated on at `1/downsize` of its resolution:
/// `⌊s / downsize⌋` per axis (PyTorch's `interpolate(scale_factor=1/downsize)`).
pub(crate) fn integration_size(size: &[usize], downsize: usize) -> Vec<usize> {
    size.iter().map(|s| s / downsize.max(1)).collect()
}

/// Resizes a displacement or velocity field `(N, ndim, *s)` to `size` with corners aligned
/// (VoxelMorph's `ResizeTransform`), scaling each component by its axis's voxel ratio
/// `(size − 1)/(s − 1)` so it stays in voxels of the new grid. VoxelMorph scales by the
/// nominal factor (`int_downsize` or its inverse) instead, which differs from the ratio by
/// `(s − 1)/(s' − 1)` vs `s/s'` (3 % at 32 → 16 voxels): voxreg keeps the field exact.
fn resize_field(field: &Tensor, size: &[usize]) -> candle::Result<Tensor> {
    let from = field.dims()[2..].to_vec();
    if from == size {
        return Ok(field.clone());
    }
    let resized = ops::resize(field, size, ops::ResizeMode::Linear, ops::Align::Corners)?;
    let components = (0..size.len())
        .map(|axis| {
            let ratio = (size[axis].max(2) - 1) as f64 / (from[axis].max(2) - 1) as f64;
            resized.narrow(1, axis, 1)?.affine(ratio, 0.0)
        })
        .collect::<candle::Result<Vec<_>>>()?;
    Tensor::cat(&components, 1)
}

/// Integrates `dvf` by scaling and squaring, at reduced resolution when
/// `integration.downsize > 1` (resized down, integrated, resized back, see
/// [`resize_field`]).
fn integrate(dvf: &Tensor, integration: Integration) -> candle::Result<Tensor> {
    if integration.downsize <= 1 {
        return ops::dvf_to_ddf(dvf, integration.steps);
    }
    let size = dvf.dims()[2..].to_vec();
    let low = resize_field(dvf, &integration_size(&size, integration.downsize))?;
    resize_field(&ops::dvf_to_ddf(&low, integration.steps)?, &size)
}

/// `dvf`: predicts a velocity field, integrates it into a DDF by scaling and squaring (see
/// [`Integration`]), and warps the moving image and labels with it; with `bidir` also the
/// fixed image by the integral of the negated velocity (the inverse transform, VoxelMorph's
/// diffeomorphic `bidir`).
pub(crate) fn dvf_forward(
    backbone: &dyn Backbone,
    integration: Integration,
    bidir: bool,
    batch: &Batch,
) -> candle::Result<Tensors> {
    let input = backbone_input(batch, false)?;
    let dvf = dense(backbone.forward(&input)?, "dvf")?;
    let ddf = integrate(&dvf, integration)?;
    let mut out = Tensors::new();
    out.put(names::DDF, Kind::Field, Grid::Fixed, ddf.clone());
    if bidir {
        warp_fixed(batch, &integrate(&dvf.neg()?, integration)?, &mut out)?;
    }
    out.put(names::DVF, Kind::Velocity, Grid::Fixed, dvf);
    warp_moving(batch, &ddf, &mut out)?;
    Ok(out)
}

/// `conditional`: predicts the fixed label from the moving image, the fixed image and the
/// moving label (one label channel); no transform.
pub(crate) fn conditional_forward(
    backbone: &dyn Backbone,
    batch: &Batch,
) -> candle::Result<Tensors> {
    let input = backbone_input(batch, true)?;
    let label = dense(backbone.forward(&input)?, "conditional")?;
    let mut out = Tensors::new();
    out.put(names::PRED_FIXED_LABEL, Kind::Label, Grid::Fixed, label);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use voxreg_framework::candle_nn::VarMap;

    use super::*;
    use crate::{GlobalNetConfig, KernelSizes, LocalNetConfig};

    fn local(out_init: Option<&str>, activation: Option<&str>) -> LocalNetConfig {
        LocalNetConfig {
            num_channel_initial: 2,
            extract_levels: vec![0, 1],
            depth: None,
            use_additive_upsampling: true,
            pooling: true,
            concat_skip: false,
            decode_kernel_sizes: KernelSizes::Uniform(3),
            encode_num_channels: None,
            decode_num_channels: None,
            strides: 2,
            padding: "same".to_owned(),
            out_kernel_initializer: out_init.map(str::to_owned),
            out_activation: activation.map(str::to_owned),
            out_channels: None,
            control_points: None,
        }
    }

    /// Channels in and out and the head of a method's backbone.
    #[derive(Clone, Copy)]
    struct BackboneIo {
        in_channels: usize,
        out_channels: usize,
        head: Head,
    }

    fn field_io(ndim: usize) -> BackboneIo {
        BackboneIo {
            in_channels: 2,
            out_channels: ndim,
            head: Head::Field,
        }
    }

    fn build(
        config: &dyn BackboneConfig,
        fixed: &[usize],
        io: BackboneIo,
        varmap: &VarMap,
    ) -> Box<dyn Backbone> {
        let spec = BackboneSpec {
            spatial_dims: fixed.len(),
            image_size: fixed.to_vec(),
            in_channels: io.in_channels,
            out_channels: io.out_channels,
            head: io.head,
        };
        match config.build(
            &spec,
            VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu),
        ) {
            Ok(net) => net,
            Err(e) => panic!("build failed: {e}"),
        }
    }

    fn batch(moving: &[usize], fixed: &[usize], labels: usize) -> candle::Result<Batch> {
        let shape = |c: usize, s: &[usize]| [&[2, c][..], s].concat();
        let dev = Device::Cpu;
        let label = |s: &[usize]| -> candle::Result<Option<Tensor>> {
            Ok(if labels == 0 {
                None
            } else {
                Some(Tensor::rand(0f32, 1.0, shape(labels, s), &dev)?)
            })
        };
        Ok(Batch::pair(
            Tensor::rand(0f32, 1.0, shape(1, moving), &dev)?,
            Tensor::rand(0f32, 1.0, shape(1, fixed), &dev)?,
            label(moving)?,
            label(fixed)?,
        ))
    }

    fn output(out: &Tensors, name: &str) -> Tensor {
        out.get(name).expect(name).clone()
    }

    fn max_abs(t: &Tensor) -> candle::Result<f32> {
        t.abs()?.max_all()?.to_scalar::<f32>()
    }

    /// A backbone that always outputs the same tensor.
    struct Fixed(BackboneOutput);

    /// Integration at full resolution in `steps` steps.
    fn full(steps: usize) -> Integration {
        Integration { steps, downsize: 1 }
    }

    impl Backbone for Fixed {
        fn forward(&self, _input: &Tensor) -> candle::Result<BackboneOutput> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn ddf_method_with_an_untrained_net_returns_the_moving_image() -> candle::Result<()> {
        for size in [vec![8, 8], vec![8, 8, 8]] {
            let net = build(
                &local(None, None),
                &size,
                field_io(size.len()),
                &VarMap::new(),
            );
            let b = batch(&size, &size, 2)?;
            let out = ddf_forward(net.as_ref(), false, &b)?;
            let ddf = output(&out, names::DDF);
            assert_eq!(ddf.dims(), &[&[2, size.len()][..], &size].concat()[..]);
            assert_eq!(max_abs(&ddf)?, 0.0);
            let image = output(&out, names::PRED_FIXED_IMAGE);
            assert!(max_abs(&(image - b.moving_image()?)?)? < 1e-6);
            let label = output(&out, names::PRED_FIXED_LABEL);
            assert!(max_abs(&(label - b.moving_label().expect("label"))?)? < 1e-6);
            assert!(out.get(names::DVF).is_none() && out.get(names::THETA).is_none());
        }
        Ok(())
    }

    #[test]
    fn moving_images_of_another_size_are_resized_for_the_backbone() -> candle::Result<()> {
        let fixed = [8, 8];
        let net = build(&local(None, None), &fixed, field_io(2), &VarMap::new());
        let b = batch(&[12, 10], &fixed, 1)?;
        assert_eq!(backbone_input(&b, false)?.dims(), &[2, 2, 8, 8]);
        let out = ddf_forward(net.as_ref(), false, &b)?;
        assert_eq!(output(&out, names::PRED_FIXED_IMAGE).dims(), &[2, 1, 8, 8]);
        assert_eq!(output(&out, names::PRED_FIXED_LABEL).dims(), &[2, 1, 8, 8]);
        Ok(())
    }

    #[test]
    fn ddf_method_turns_a_global_backbone_affine_into_a_ddf() -> candle::Result<()> {
        let config = GlobalNetConfig {
            num_channel_initial: 2,
            depth: Some(2),
            extract_levels: None,
            pooling: true,
            encode_kernel_sizes: KernelSizes::Uniform(3),
            encode_num_channels: None,
            strides: 2,
            padding: "same".to_owned(),
        };
        let fixed = [8, 8, 8];
        let net = build(&config, &fixed, field_io(3), &VarMap::new());
        let out = ddf_forward(net.as_ref(), false, &batch(&fixed, &fixed, 0)?)?;
        let theta = output(&out, names::THETA);
        assert_eq!(theta.dims(), &[2, 4, 3]);
        let ddf = output(&out, names::DDF);
        assert!(max_abs(&(ops::affine_to_ddf(&theta, &fixed)? - ddf)?)? < 1e-6);
        assert!(out.get(names::PRED_FIXED_LABEL).is_none());
        Ok(())
    }

    #[test]
    fn dvf_method_integrates_a_constant_velocity_into_a_shift() -> candle::Result<()> {
        let dev = Device::Cpu;
        // One voxel along axis 0 everywhere: a translation, its own exponential.
        let dvf = Tensor::cat(
            &[
                Tensor::ones((2, 1, 6, 6, 6), DType::F32, &dev)?,
                Tensor::zeros((2, 2, 6, 6, 6), DType::F32, &dev)?,
            ],
            1,
        )?;
        let net = Fixed(BackboneOutput::Dense(dvf.clone()));
        let b = batch(&[6, 6, 6], &[6, 6, 6], 0)?;
        let out = dvf_forward(&net, full(7), false, &b)?;
        assert!(max_abs(&(output(&out, names::DDF) - &dvf)?)? < 1e-5);
        let warped = output(&out, names::PRED_FIXED_IMAGE);
        let shifted = b.moving_image()?.narrow(2, 1, 5)?;
        assert!(max_abs(&(warped.narrow(2, 0, 5)? - shifted)?)? < 1e-5);
        assert!(out.get(names::DVF).is_some());
        // An affine backbone cannot drive the dvf method.
        let theta = ops::identity_theta(2, 3, DType::F32, &dev)?;
        assert!(dvf_forward(&Fixed(BackboneOutput::Affine(theta)), full(7), false, &b).is_err());
        Ok(())
    }

    /// A field `(2, 3, n, n, n)` of `value` along axis 0 and zero along the others.
    fn along_axis_0(value: f32, n: usize) -> candle::Result<Tensor> {
        let dev = Device::Cpu;
        Tensor::cat(
            &[
                (Tensor::ones((2, 1, n, n, n), DType::F32, &dev)? * f64::from(value))?,
                Tensor::zeros((2, 2, n, n, n), DType::F32, &dev)?,
            ],
            1,
        )
    }

    #[test]
    fn bidir_warps_the_fixed_image_by_the_inverse_shift() -> candle::Result<()> {
        let b = batch(&[6, 6, 6], &[6, 6, 6], 0)?;
        // The fixed image moved back by one voxel along axis 0: output p samples p − 1.
        let expected = b.fixed_image()?.narrow(2, 0, 5)?;
        let ddf_net = Fixed(BackboneOutput::Dense(along_axis_0(1.0, 6)?));
        let dvf_net = Fixed(BackboneOutput::Dense(along_axis_0(1.0, 6)?));
        let outputs = [
            ddf_forward(&ddf_net, true, &b)?,
            dvf_forward(&dvf_net, full(7), true, &b)?,
        ];
        for out in &outputs {
            let inverse = output(out, names::PRED_MOVING_IMAGE);
            assert!(max_abs(&(inverse.narrow(2, 1, 5)? - &expected)?)? < 1e-5);
            assert!(max_abs(&inverse.narrow(2, 0, 1)?)? < 1e-6, "zero outside");
        }
        assert!(ddf_forward(&ddf_net, false, &b)?
            .get(names::PRED_MOVING_IMAGE)
            .is_none());
        Ok(())
    }

    #[test]
    fn resized_fields_stay_in_voxels_of_their_grid() -> candle::Result<()> {
        // u(x) = 0.3 x along axis 0 on 8 voxels; on 4 voxels with corners aligned
        // (x = y · 7/3) it must be 0.3 y in the new voxels (VoxelMorph's factor ½ would
        // give 0.35 y).
        let dev = Device::Cpu;
        let ramp: Vec<f32> = (0..8).map(|x| 0.3 * x as f32).collect();
        let axis0 = Tensor::from_vec(ramp, (1, 1, 8, 1, 1), &dev)?.broadcast_as((1, 1, 8, 8, 8))?;
        let field = Tensor::cat(
            &[
                axis0.contiguous()?,
                Tensor::zeros((1, 2, 8, 8, 8), DType::F32, &dev)?,
            ],
            1,
        )?;
        let low = resize_field(&field, &[4, 4, 4])?;
        let values = low.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        for (index, value) in values.iter().enumerate() {
            let y = (index / 16) as f32;
            assert!((value - 0.3 * y).abs() < 1e-5, "{index}: {value}");
        }
        Ok(())
    }

    #[test]
    fn integration_at_half_resolution_keeps_a_translation() -> candle::Result<()> {
        let dvf = along_axis_0(1.5, 8)?;
        let net = Fixed(BackboneOutput::Dense(dvf.clone()));
        let b = batch(&[8, 8, 8], &[8, 8, 8], 0)?;
        let integration = Integration {
            steps: 7,
            downsize: 2,
        };
        assert_eq!(integration_size(&[8, 9, 5], 2), [4, 4, 2]);
        let out = dvf_forward(&net, integration, false, &b)?;
        assert!(max_abs(&(output(&out, names::DDF) - &dvf)?)? < 1e-5);
        assert_eq!(
            output(&out, names::DVF).dims(),
            dvf.dims(),
            "dvf at full resolution"
        );
        Ok(())
    }

    #[test]
    fn dvf_method_passes_gradients_to_the_backbone() -> candle::Result<()> {
        let varmap = VarMap::new();
        let fixed = [8, 8];
        let net = build(&local(None, None), &fixed, field_io(2), &varmap);
        let b = batch(&fixed, &fixed, 0)?;
        let out = dvf_forward(net.as_ref(), full(3), false, &b)?;
        let loss = (output(&out, names::PRED_FIXED_IMAGE) - b.fixed_image()?)?
            .sqr()?
            .mean_all()?;
        let grads = loss.backward()?;
        let data = varmap
            .data()
            .lock()
            .map_err(|e| candle::Error::Msg(e.to_string()))?;
        let weight = grads
            .get(data["output.0.weight"].as_tensor())
            .expect("grad");
        assert!(max_abs(weight)? > 0.0);
        Ok(())
    }

    #[test]
    fn conditional_method_predicts_a_label_in_the_unit_interval() -> candle::Result<()> {
        let fixed = [8, 8, 8];
        // DeepReg's conditional defaults (Glorot-uniform, sigmoid) come with its channels.
        let config = local(None, None);
        let io = BackboneIo {
            in_channels: 3,
            out_channels: 1,
            head: Head::Probability,
        };
        let net = build(&config, &fixed, io, &VarMap::new());
        let b = batch(&[10, 8, 6], &fixed, 1)?;
        let label = output(
            &conditional_forward(net.as_ref(), &b)?,
            names::PRED_FIXED_LABEL,
        );
        assert_eq!(label.dims(), &[2, 1, 8, 8, 8]);
        let (lo, hi) = (
            label.min_all()?.to_scalar::<f32>()?,
            label.max_all()?.to_scalar::<f32>()?,
        );
        assert!(lo > 0.0 && hi < 1.0, "{lo}..{hi}");
        assert!(conditional_forward(net.as_ref(), &batch(&fixed, &fixed, 0)?).is_err());
        assert!(conditional_forward(net.as_ref(), &batch(&fixed, &fixed, 2)?).is_err());
        Ok(())
    }
}
