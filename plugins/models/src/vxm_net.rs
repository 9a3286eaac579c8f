//! The network of the `vxm_unet` backbone: VoxelMorph's U-Net as MONAI's `VoxelMorphUNet`
//! builds it, for 2D and 3D.
//!
//! With `n` channel pairs `(a_i, b_i)`, level `i = 0 … n − 1` runs at `size / 2^i` and the
//! bottom at `size / 2^n`:
//! * encoder level `i`: (max pool by 2 if `i > 0`) → conv `c_i → a_i` → LeakyReLU(0.2),
//!   with `c_0 = in_channels`, `c_i = a_{i−1}`; its output is kept as the skip;
//! * bottom: max pool by 2 → conv `a_{n−1} → b_{n−1}` → LeakyReLU → nearest ×2;
//! * decoder level `i = n − 1 … 0`: concatenate `[skip_i, below]` (`a_i + b_i` channels) →
//!   conv to `b_{i−1}` (`unet_out_channels` at level 0) → LeakyReLU → nearest ×2 if `i > 0`;
//! * final convolutions (each → LeakyReLU), then the flow convolution to `ndim` channels.
//!
//! Without max pooling the pool + conv pairs are stride-2 convolutions. Convolutions pad
//! `k / 2` on both sides (PyTorch's `padding=k // 2`) and are initialised as PyTorch's
//! defaults, `U(±1/√fan_in)` for weight and bias; the flow layer as VoxelMorph's,
//! `weight ~ N(0, 10⁻⁵)` and a zero bias.

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::Init;
use voxreg_framework::ops::{self, Rectifier, ResizeMode};
use voxreg_framework::prelude::*;

/// LeakyReLU slope (VoxelMorph's TensorFlow default, kept by MONAI).
const NEGATIVE_SLOPE: f64 = 0.2;

/// Standard deviation of the flow layer's initial weights (VoxelMorph).
const FLOW_INIT_STD: f64 = 1.0e-5;

/// A validated `vxm_unet` description.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VxmPlan {
    /// Spatial axes (2 or 3).
    pub ndim: usize,
    /// Input spatial size, divisible by `2^(channels.len() / 2)`.
    pub image_size: Vec<usize>,
    /// Input channels.
    pub in_channels: usize,
    /// MONAI's `channels`: pairs `(a_i, b_i)`, at least one, all positive.
    pub channels: Vec<usize>,
    /// Channels of the top decoder convolution.
    pub unet_out_channels: usize,
    /// Channels of the convolutions before the flow layer.
    pub final_conv_channels: Vec<usize>,
    /// Odd kernel size of the encoder, bottom and final convolutions.
    pub kernel_size: usize,
    /// Odd kernel size of the decoder convolutions.
    pub up_kernel_size: usize,
    /// Max pool + conv (true) or a stride-2 conv (false) to down-sample.
    pub use_maxpool: bool,
    /// Whether the convolutions have a bias.
    pub bias: bool,
}

/// A convolution with PyTorch's symmetric padding `k / 2` (odd `k`).
struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: Vec<usize>,
    padding: Vec<(usize, usize)>,
}

impl Conv {
    /// Takes `weight` `(cout, cin, k, …)` and, with `bias`, `bias` `(cout,)` from `params`.
    fn new(
        params: &VarBuilder<'_>,
        shape: ConvShape,
        weight_init: Init,
        bias_init: Init,
    ) -> candle::Result<Self> {
        let ConvShape {
            ndim,
            cin,
            cout,
            kernel,
            stride,
            bias,
        } = shape;
        let mut dims = vec![cout, cin];
        dims.extend(std::iter::repeat_n(kernel, ndim));
        let weight = params.get_with_hints(dims, "weight", weight_init)?;
        let bias = if bias {
            Some(params.get_with_hints(cout, "bias", bias_init)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride: vec![stride; ndim],
            padding: vec![(kernel / 2, kernel / 2); ndim],
        })
    }

    /// A hidden layer, initialised as PyTorch's `ConvNd`: weight and bias `U(±1/√fan_in)`.
    fn hidden(params: &VarBuilder<'_>, shape: ConvShape) -> candle::Result<Self> {
        let bound = 1.0 / (shape.fan_in() as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Self::new(params, shape, init, init)
    }

    /// The flow layer, initialised as VoxelMorph's: weight `N(0, 10⁻⁵)`, bias zero.
    fn flow(params: &VarBuilder<'_>, shape: ConvShape) -> candle::Result<Self> {
        let init = Init::Randn {
            mean: 0.0,
            stdev: FLOW_INIT_STD,
        };
        Self::new(params, shape, init, Init::Const(0.0))
    }

    /// `(N, cin, *s) -> (N, cout, *(s / stride))`.
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        ops::conv(
            x,
            &self.weight,
            self.bias.as_ref(),
            &self.stride,
            &self.padding,
        )
    }

    /// The convolution, its bias and a LeakyReLU (`max(v, α v)`), the bias and the
    /// activation as one fused op.
    fn forward_leaky(&self, x: &Tensor) -> candle::Result<Tensor> {
        let y = ops::conv(x, &self.weight, None, &self.stride, &self.padding)?;
        ops::bias_rectify(&y, self.bias.as_ref(), Rectifier::Leaky(NEGATIVE_SLOPE))
    }
}

/// The shape of one convolution.
#[derive(Clone, Copy)]
struct ConvShape {
    ndim: usize,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    bias: bool,
}

impl ConvShape {
    fn fan_in(self) -> usize {
        self.cin * self.kernel.pow(self.ndim as u32)
    }
}

/// The built `vxm_unet` network.
pub(crate) struct VxmNet {
    name: &'static str,
    plan: VxmPlan,
    /// Encoder convolutions, level `0 … n − 1`.
    encode: Vec<Conv>,
    bottom: Conv,
    /// Decoder convolutions, level `0 … n − 1`.
    decode: Vec<Conv>,
    finals: Vec<Conv>,
    flow: Conv,
}

impl VxmNet {
    /// Takes every weight from `params`: `encode.{i}.{weight,bias}`, `bottom.…`,
    /// `decode.{i}.…`, `final.{j}.…` and `flow.{weight,bias}`.
    pub fn build(
        name: &'static str,
        plan: VxmPlan,
        params: &VarBuilder<'_>,
    ) -> candle::Result<Self> {
        let levels = plan.channels.len() / 2;
        let a = |i: usize| plan.channels[2 * i];
        let b = |i: usize| plan.channels[2 * i + 1];
        let down_stride = if plan.use_maxpool { 1 } else { 2 };
        let shape = |cin, cout, kernel, stride| ConvShape {
            ndim: plan.ndim,
            cin,
            cout,
            kernel,
            stride,
            bias: plan.bias,
        };
        let k = plan.kernel_size;
        let encode = (0..levels)
            .map(|i| {
                let (cin, stride) = if i == 0 {
                    (plan.in_channels, 1)
                } else {
                    (a(i - 1), down_stride)
                };
                Conv::hidden(
                    &params.pp(format!("encode.{i}")),
                    shape(cin, a(i), k, stride),
                )
            })
            .collect::<candle::Result<_>>()?;
        let last = levels - 1;
        let bottom = Conv::hidden(
            &params.pp("bottom"),
            shape(a(last), b(last), k, down_stride),
        )?;
        let decode = (0..levels)
            .map(|i| {
                let cout = if i == 0 {
                    plan.unet_out_channels
                } else {
                    b(i - 1)
                };
                let s = shape(a(i) + b(i), cout, plan.up_kernel_size, 1);
                Conv::hidden(&params.pp(format!("decode.{i}")), s)
            })
            .collect::<candle::Result<_>>()?;
        let mut cin = plan.unet_out_channels;
        let mut finals = Vec::with_capacity(plan.final_conv_channels.len());
        for (j, &cout) in plan.final_conv_channels.iter().enumerate() {
            finals.push(Conv::hidden(
                &params.pp(format!("final.{j}")),
                shape(cin, cout, k, 1),
            )?);
            cin = cout;
        }
        let flow = Conv::flow(&params.pp("flow"), shape(cin, plan.ndim, k, 1))?;
        Ok(Self {
            name,
            plan,
            encode,
            bottom,
            decode,
            finals,
            flow,
        })
    }

    fn check_input(&self, input: &Tensor) -> candle::Result<()> {
        let dims = input.dims();
        let plan = &self.plan;
        if dims.len() != plan.ndim + 2
            || dims[1] != plan.in_channels
            || dims[2..] != plan.image_size[..]
        {
            candle::bail!(
                "{}: input must be (N, {}, {:?}) as the network was built for, got {dims:?}",
                self.name,
                plan.in_channels,
                plan.image_size
            );
        }
        Ok(())
    }

    /// Halves every axis by max pooling (without max pooling, the next convolution strides).
    fn down(&self, x: &Tensor) -> candle::Result<Tensor> {
        if self.plan.use_maxpool {
            let two = vec![2; self.plan.ndim];
            ops::max_pool(x, &two, &two, &vec![(0, 0); self.plan.ndim])
        } else {
            Ok(x.clone())
        }
    }

    /// `(N, in_channels, *image_size)` to the field `(N, ndim, *image_size)`.
    fn run(&self, input: &Tensor) -> candle::Result<Tensor> {
        self.check_input(input)?;
        let mut skips = Vec::with_capacity(self.encode.len());
        let mut x = input.clone();
        for (i, conv) in self.encode.iter().enumerate() {
            if i > 0 {
                x = self.down(&x)?;
            }
            x = conv.forward_leaky(&x)?;
            skips.push(x.clone());
        }
        x = self.bottom.forward_leaky(&self.down(&x)?)?;
        x = ops::upsample2x(&x, ResizeMode::Nearest)?;
        for (i, (conv, skip)) in self.decode.iter().zip(&skips).enumerate().rev() {
            x = conv.forward_leaky(&Tensor::cat(&[skip, &x], 1)?)?;
            if i > 0 {
                x = ops::upsample2x(&x, ResizeMode::Nearest)?;
            }
        }
        for conv in &self.finals {
            x = conv.forward_leaky(&x)?;
        }
        self.flow.forward(&x)
    }
}

impl Backbone for VxmNet {
    fn forward(&self, input: &Tensor) -> candle::Result<BackboneOutput> {
        Ok(BackboneOutput::Dense(self.run(input)?))
    }
}
