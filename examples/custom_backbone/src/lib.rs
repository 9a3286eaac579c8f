//! An example third-party voxreg plugin crate: a backbone (`tiny_net`) and an image loss
//! (`charbonnier`).
//!
//! Used statically, a program depends on this crate and references it
//! (`use custom_backbone as _;`) so the linker keeps its registrations. Used dynamically, the
//! thin `custom_backbone_plugin` target (`plugin/lib.rs`, crate type `dylib`) wraps it with
//! `declare_plugin!()` and `voxreg --plugin libcustom_backbone_plugin.so` loads it.

use serde::{Deserialize, Serialize};
use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::Init;
use voxreg_framework::prelude::*;

fn default_hidden() -> usize {
    8
}

/// `tiny_net`: a per-voxel two-layer perceptron (two 1×1 convolutions),
/// `y = W₂ · tanh(W₁ · x + b₁) + b₂` applied at every voxel, for any number of spatial axes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TinyNetConfig {
    /// Hidden channels.
    #[serde(default = "default_hidden")]
    pub hidden_channels: usize,
}

#[typetag::serialize(name = "tiny_net")]
impl BackboneConfig for TinyNetConfig {
    fn build(
        &self,
        spec: &BackboneSpec,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Backbone>, ComponentError> {
        if self.hidden_channels == 0 {
            return Err(ComponentError::invalid(
                "backbone `tiny_net`",
                "hidden_channels must be at least 1",
            ));
        }
        let weights = || -> candle::Result<TinyNet> {
            let (hidden, inputs, outputs) =
                (self.hidden_channels, spec.in_channels, spec.out_channels);
            let fan_in = |n: usize| Init::Uniform {
                lo: -(1.0 / n as f64).sqrt(),
                up: (1.0 / n as f64).sqrt(),
            };
            Ok(TinyNet {
                w1: params.get_with_hints((hidden, inputs), "w1", fan_in(inputs))?,
                b1: params.get_with_hints((hidden, 1), "b1", Init::Const(0.0))?,
                w2: params.get_with_hints((outputs, hidden), "w2", fan_in(hidden))?,
                b2: params.get_with_hints((outputs, 1), "b2", Init::Const(0.0))?,
            })
        };
        let net = weights().map_err(|e| ComponentError::tensor("building tiny_net", e))?;
        Ok(Box::new(net))
    }
}

register_component!(
    backbone,
    "tiny_net",
    TinyNetConfig,
    "Example plugin: per-voxel two-layer perceptron (1x1 convolutions)"
);

struct TinyNet {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl Backbone for TinyNet {
    fn forward(&self, input: &Tensor) -> candle::Result<BackboneOutput> {
        let dims = input.dims();
        if dims.len() < 3 {
            candle::bail!("tiny_net expects (N, C, *spatial), got shape {dims:?}");
        }
        let (batch, channels) = (dims[0], dims[1]);
        let voxels: usize = dims[2..].iter().product();
        let flat = input.reshape((batch, channels, voxels))?;
        let hidden = self
            .w1
            .broadcast_matmul(&flat)?
            .broadcast_add(&self.b1)?
            .tanh()?;
        let out = self.w2.broadcast_matmul(&hidden)?.broadcast_add(&self.b2)?;
        let mut shape = vec![batch, self.w2.dim(0)?];
        shape.extend_from_slice(&dims[2..]);
        Ok(BackboneOutput::Dense(out.reshape(shape)?))
    }
}

fn default_epsilon() -> f64 {
    1.0e-3
}

/// `charbonnier`: a robust image dissimilarity, the mean over voxels of
/// `√((f − w)² + ε²)` per batch element.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CharbonnierConfig {
    /// ε, the smoothing of the absolute difference near 0.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
}

#[typetag::serialize(name = "charbonnier")]
impl ImageLossConfig for CharbonnierConfig {
    fn build(&self, _spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(ComponentError::invalid(
                "image_loss `charbonnier`",
                format!("epsilon must be a positive number, got {}", self.epsilon),
            ));
        }
        Ok(Box::new(Charbonnier {
            epsilon: self.epsilon,
        }))
    }
}

register_component!(
    image_loss,
    "charbonnier",
    CharbonnierConfig,
    "Example plugin: Charbonnier (smooth L1) intensity difference"
);

struct Charbonnier {
    epsilon: f64,
}

impl Loss for Charbonnier {
    fn loss(&self, warped: &Tensor, fixed: Option<&Tensor>) -> candle::Result<Tensor> {
        let fixed = required_target("image_loss `charbonnier`", fixed)?;
        if fixed.dims() != warped.dims() {
            candle::bail!(
                "charbonnier: fixed {:?} and warped {:?} differ in shape",
                fixed.dims(),
                warped.dims()
            );
        }
        let batch = fixed.dim(0)?;
        let squared = (fixed - warped)?.sqr()?;
        let robust = (squared + self.epsilon * self.epsilon)?.sqrt()?;
        robust.reshape((batch, ()))?.mean(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxreg_framework::candle_nn::VarMap;

    #[test]
    fn tiny_net_maps_every_voxel_in_2d_and_3d() -> candle::Result<()> {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let spec = BackboneSpec {
            spatial_dims: 3,
            image_size: vec![3, 4, 5],
            in_channels: 2,
            out_channels: 3,
            head: Default::default(),
        };
        let config = TinyNetConfig { hidden_channels: 4 };
        let net = config
            .build(&spec, VarBuilder::from_varmap(&varmap, DType::F32, &device))
            .unwrap();
        let input = Tensor::randn(0f32, 1.0, (2, 2, 3, 4, 5), &device)?;
        let BackboneOutput::Dense(out) = net.forward(&input)? else {
            panic!("tiny_net is dense");
        };
        assert_eq!(out.dims(), &[2, 3, 3, 4, 5]);
        // A 1x1 network: voxel (1, 2, 3) of the output depends only on that voxel's input.
        let voxel = |t: &Tensor| -> candle::Result<Tensor> {
            t.narrow(2, 1, 1)?.narrow(3, 2, 1)?.narrow(4, 3, 1)
        };
        let alone = input.narrow(2, 1, 1)?.narrow(3, 2, 1)?.narrow(4, 3, 1)?;
        let BackboneOutput::Dense(out_alone) = net.forward(&alone)? else {
            panic!("tiny_net is dense");
        };
        let diff = (voxel(&out)? - out_alone)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6);
        let input_2d = Tensor::randn(0f32, 1.0, (1, 2, 6, 7), &device)?;
        let BackboneOutput::Dense(out_2d) = net.forward(&input_2d)? else {
            panic!("tiny_net is dense");
        };
        assert_eq!(out_2d.dims(), &[1, 3, 6, 7]);
        Ok(())
    }

    #[test]
    fn charbonnier_matches_hand_computed_values() -> candle::Result<()> {
        let device = Device::Cpu;
        let loss = CharbonnierConfig { epsilon: 0.5 }.build(2).unwrap();
        let fixed = Tensor::new(&[[[[0f32, 1.0], [2.0, 3.0]]]], &device)?;
        let warped = Tensor::new(&[[[[0f32, 1.0], [0.0, 3.0]]]], &device)?;
        // Voxels: 0, 0, 2, 0 differences → (0.5 + 0.5 + √4.25 + 0.5) / 4.
        let expected = (1.5 + 4.25f32.sqrt()) / 4.0;
        let value = loss.loss(&warped, Some(&fixed))?.to_vec1::<f32>()?;
        assert!(
            (value[0] - expected).abs() < 1e-6,
            "{value:?} vs {expected}"
        );
        assert!(loss.loss(&warped.narrow(3, 0, 1)?, Some(&fixed)).is_err());
        Ok(())
    }
}
