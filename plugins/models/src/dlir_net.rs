//! The built `dlir_affine` network: DLIR's affine ConvNet (TorchIR's `AIRNet`). The moving
//! and the fixed image go through one feature pipeline (the same weights for both), each is
//! reduced to one feature vector by global average pooling, the two vectors are concatenated
//! and dense layers predict the raw affine parameters, turned into DeepReg's affine matrix by
//! [`AffineKind::theta`].

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::Init;
use voxreg_framework::ops;
use voxreg_framework::prelude::*;

use crate::affine_head::AffineKind;

/// A validated `dlir_affine` description.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DlirPlan {
    /// Spatial axes (2 or 3).
    pub ndim: usize,
    /// Convolution kernel size (odd).
    pub kernel_size: usize,
    /// Output channels of each convolution of the pipeline (one per layer).
    pub filters: Vec<usize>,
    /// The first `num_downsamplings` convolutions are followed by 2× average pooling.
    pub num_downsamplings: usize,
    /// Units of each dense layer.
    pub linear_nodes: usize,
    /// Number of dense layers (at least 1).
    pub num_dense_layers: usize,
    /// The affine parametrisation of the head.
    pub kind: AffineKind,
}

/// PyTorch's default initialisation (TorchIR's): weights and bias uniform in `±1/√fan_in`.
pub(crate) fn torch_default(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Checks that `input` is a non-empty `(N, 2, *s)` pair (moving and fixed image as
/// channels) with `ndim` spatial axes; the error names the network `name`.
pub(crate) fn check_pair_input(name: &str, ndim: usize, input: &Tensor) -> candle::Result<()> {
    let dims = input.dims();
    if dims.len() != ndim + 2 || dims[1] != 2 || dims[2..].contains(&0) {
        candle::bail!(
            "{name}: input must be (N, 2, {}) (moving and fixed image as channels), got {dims:?}",
            if ndim == 2 { "H, W" } else { "D, H, W" }
        );
    }
    Ok(())
}

/// A convolution with bias, `same` padding, stride 1.
pub(crate) struct ConvLayer {
    weight: Tensor,
    bias: Tensor,
    kernel: Vec<usize>,
}

impl ConvLayer {
    /// PyTorch-default initialised `weight` `(cout, cin, k, …)` and `bias` `(cout)`.
    pub(crate) fn new(
        params: &VarBuilder<'_>,
        ndim: usize,
        cin: usize,
        cout: usize,
        kernel: usize,
    ) -> candle::Result<Self> {
        let fan_in = cin * kernel.pow(ndim as u32);
        Self::with_init(params, ndim, (cin, cout), kernel, torch_default(fan_in))
    }

    /// `weight` and `bias` both initialised by `init` (`Init::Const(0.0)` for a layer that
    /// starts at zero output).
    pub(crate) fn with_init(
        params: &VarBuilder<'_>,
        ndim: usize,
        (cin, cout): (usize, usize),
        kernel: usize,
        init: Init,
    ) -> candle::Result<Self> {
        let mut shape = vec![cout, cin];
        shape.extend(std::iter::repeat_n(kernel, ndim));
        Ok(Self {
            weight: params.get_with_hints(shape, "weight", init)?,
            bias: params.get_with_hints(cout, "bias", init)?,
            kernel: vec![kernel; ndim],
        })
    }

    /// The convolution with `same` padding.
    pub(crate) fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let stride = vec![1; self.kernel.len()];
        let padding = ops::same_padding(&x.dims()[2..], &self.kernel, &stride);
        ops::conv(x, &self.weight, Some(&self.bias), &stride, &padding)
    }
}

/// A dense layer `y = x Wᵀ + b`.
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    /// PyTorch-default initialised weights, or all zeros with `zero`.
    fn new(params: &VarBuilder<'_>, cin: usize, cout: usize, zero: bool) -> candle::Result<Self> {
        let init = if zero {
            Init::Const(0.0)
        } else {
            torch_default(cin)
        };
        Ok(Self {
            weight: params.get_with_hints((cout, cin), "weight", init)?,
            bias: params.get_with_hints(cout, "bias", init)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

/// The built network.
pub(crate) struct DlirAffineNet {
    name: &'static str,
    plan: DlirPlan,
    convs: Vec<ConvLayer>,
    dense: Vec<Dense>,
    head: Dense,
    /// The raw head's identity `[I | 0]` (flattened), added to its output: the head's bias
    /// is stored as an offset from it, so zero weights start at the identity.
    identity: Option<Tensor>,
}

impl DlirAffineNet {
    /// Takes every weight from `params`: `features.{i}.{weight,bias}` (the one pipeline both
    /// images go through), `dense.{j}.{weight,bias}`, `head.{weight,bias}`. The head starts
    /// at zero, so the network starts at the identity transform in both parametrisations.
    pub fn build(
        name: &'static str,
        plan: DlirPlan,
        params: &VarBuilder<'_>,
    ) -> candle::Result<Self> {
        let mut convs = Vec::with_capacity(plan.filters.len());
        let mut cin = 1;
        for (i, &cout) in plan.filters.iter().enumerate() {
            let p = params.pp(format!("features.{i}"));
            convs.push(ConvLayer::new(&p, plan.ndim, cin, cout, plan.kernel_size)?);
            cin = cout;
        }
        let mut dense = Vec::with_capacity(plan.num_dense_layers);
        let mut width = 2 * cin;
        for j in 0..plan.num_dense_layers {
            let p = params.pp(format!("dense.{j}"));
            dense.push(Dense::new(&p, width, plan.linear_nodes, false)?);
            width = plan.linear_nodes;
        }
        let outputs = plan.kind.outputs(plan.ndim);
        let head = Dense::new(&params.pp("head"), width, outputs, true)?;
        let identity = match plan.kind {
            AffineKind::Bounded | AffineKind::Translation => None,
            AffineKind::Raw => {
                let n = plan.ndim;
                let eye = Tensor::eye(n, head.bias.dtype(), head.bias.device())?;
                let zero = Tensor::zeros((n, 1), head.bias.dtype(), head.bias.device())?;
                Some(Tensor::cat(&[&eye, &zero], 1)?.flatten_all()?)
            }
        };
        Ok(Self {
            name,
            plan,
            convs,
            dense,
            head,
            identity,
        })
    }

    /// One pipeline: convolution → ELU (→ 2× average pooling for the first
    /// `num_downsamplings` layers), then the mean over space.
    ///
    /// # Shapes
    /// * `x`: `(M, 1, *s)`; output `(M, filters.last())`.
    fn pipeline(&self, x: &Tensor) -> candle::Result<Tensor> {
        let ndim = self.plan.ndim;
        let two = vec![2; ndim];
        let mut x = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(&x)?.elu(1.0)?;
            if i < self.plan.num_downsamplings {
                // `same` padding (the padded voxels are not counted): a size of 1 stays 1,
                // so any image size works.
                let padding = ops::same_padding(&x.dims()[2..], &two, &two);
                x = ops::avg_pool(&x, &two, &two, &padding)?;
            }
        }
        let (m, c) = (x.dim(0)?, x.dim(1)?);
        x.reshape((m, c, ()))?.mean(2)
    }

    /// The concatenated feature vectors `[f(moving), f(fixed)]` of each pair, both from the
    /// same pipeline (run once on the `2N` images).
    ///
    /// # Shapes
    /// * `input`: `(N, 2, *s)` (channel 0 moving, 1 fixed); output `(N, 2 · filters.last())`.
    pub fn features(&self, input: &Tensor) -> candle::Result<Tensor> {
        check_pair_input(self.name, self.plan.ndim, input)?;
        let dims = input.dims();
        let n = dims[0];
        let mut single = vec![2 * n, 1];
        single.extend(&dims[2..]);
        let features = self.pipeline(&input.reshape(single)?)?;
        features.reshape((n, ()))
    }

    /// The head's raw outputs before the parametrisation (`(N, outputs)`).
    pub fn raw(&self, input: &Tensor) -> candle::Result<Tensor> {
        let mut h = self.features(input)?;
        for layer in &self.dense {
            h = layer.forward(&h)?.elu(1.0)?;
        }
        let raw = self.head.forward(&h)?;
        match &self.identity {
            Some(identity) => raw.broadcast_add(identity),
            None => Ok(raw),
        }
    }
}

impl Backbone for DlirAffineNet {
    fn forward(&self, input: &Tensor) -> candle::Result<BackboneOutput> {
        let raw = self.raw(input)?;
        let theta = self.plan.kind.theta(&raw, &input.dims()[2..])?;
        Ok(BackboneOutput::Affine(theta))
    }
}
