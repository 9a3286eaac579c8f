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

/// `ddf`: predicts the DDF (directly, or from the affine of a `global` backbone) and warps
/// the moving image and labels with it.
pub(crate) fn ddf_forward(backbone: &dyn Backbone, batch: &Batch) -> candle::Result<Tensors> {
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
    Ok(out)
}

/// `dvf`: predicts a velocity field, integrates it into a DDF by scaling and squaring in
/// `int_steps` steps, and warps the moving image and labels with it.
pub(crate) fn dvf_forward(
    backbone: &dyn Backbone,
    int_steps: usize,
    batch: &Batch,
) -> candle::Result<Tensors> {
    let input = backbone_input(batch, false)?;
    let dvf = dense(backbone.forward(&input)?, "dvf")?;
    let ddf = ops::dvf_to_ddf(&dvf, int_steps)?;
    let mut out = Tensors::new();
    out.put(names::DDF, Kind::Field, Grid::Fixed, ddf.clone());
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
            let out = ddf_forward(net.as_ref(), &b)?;
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
        let out = ddf_forward(net.as_ref(), &b)?;
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
        let out = ddf_forward(net.as_ref(), &batch(&fixed, &fixed, 0)?)?;
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
        let out = dvf_forward(&net, 7, &b)?;
        assert!(max_abs(&(output(&out, names::DDF) - &dvf)?)? < 1e-5);
        let warped = output(&out, names::PRED_FIXED_IMAGE);
        let shifted = b.moving_image()?.narrow(2, 1, 5)?;
        assert!(max_abs(&(warped.narrow(2, 0, 5)? - shifted)?)? < 1e-5);
        assert!(out.get(names::DVF).is_some());
        // An affine backbone cannot drive the dvf method.
        let theta = ops::identity_theta(2, 3, DType::F32, &dev)?;
        assert!(dvf_forward(&Fixed(BackboneOutput::Affine(theta)), 7, &b).is_err());
        Ok(())
    }

    #[test]
    fn dvf_method_passes_gradients_to_the_backbone() -> candle::Result<()> {
        let varmap = VarMap::new();
        let fixed = [8, 8];
        let net = build(&local(None, None), &fixed, field_io(2), &varmap);
        let b = batch(&fixed, &fixed, 0)?;
        let out = dvf_forward(net.as_ref(), 3, &b)?;
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
