//! The encoder–decoder network shared by the `unet`, `local` and `global` backbones (in
//! DeepReg, `LocalNet` and `GlobalNet` are subclasses of `UNet` that swap some blocks).

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::Init;
use voxreg_framework::ops;
use voxreg_framework::prelude::*;

use crate::nn::{
    control_point_field, resize_to, sum_channel_halves, Activation, Conv, ConvBlock, DeconvBlock,
    KernelInit, ResidualBlock,
};

/// The bottom block of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bottom {
    /// Conv block + residual block (UNet, GlobalNet).
    ConvResidual,
    /// One conv block (LocalNet).
    Conv,
}

/// How the decoder up-samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Upsampling {
    /// Transposed-conv block.
    Deconv,
    /// Transposed-conv block plus the linearly resized input with its channel halves summed.
    Additive,
}

/// What the network outputs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Head {
    /// DeepReg's `Extraction`: per extract level a 3-kernel conv to `out_channels` with
    /// `activation`, resized to the image size; the mean over levels.
    Extract {
        /// Levels in `[0, depth]`, at least one.
        levels: Vec<usize>,
        /// Output channels.
        out_channels: usize,
        /// Initialiser of the output convolutions' kernels.
        init: KernelInit,
        /// Output activation.
        activation: Activation,
    },
    /// DeepReg's `AffineHead`: flatten the bottom features, dense layer to the
    /// `(ndim + 1) × ndim` affine parameters with the bias set to the identity.
    Affine,
}

/// A validated network description.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    /// Spatial axes (2 or 3).
    pub ndim: usize,
    /// Input spatial size.
    pub image_size: Vec<usize>,
    /// Input channels.
    pub in_channels: usize,
    /// Number of down-sampling levels.
    pub depth: usize,
    /// Max pooling (true) or strided conv block (false).
    pub pooling: bool,
    /// Concatenate (true) or add (false) skip connections.
    pub concat_skip: bool,
    /// Encoder kernel sizes, `depth + 1` (the last is the bottom's).
    pub encode_kernels: Vec<usize>,
    /// Decoder kernel sizes, `depth`.
    pub decode_kernels: Vec<usize>,
    /// Encoder channels, `depth + 1`.
    pub encode_channels: Vec<usize>,
    /// Decoder channels, `depth + 1` (index `depth` unused, as in DeepReg).
    pub decode_channels: Vec<usize>,
    /// Down/up-sampling factor.
    pub strides: usize,
    /// Bottom block.
    pub bottom: Bottom,
    /// Decoder up-sampling.
    pub upsampling: Upsampling,
    /// B-spline control-point spacing per axis applied to a dense output (DeepReg's
    /// `control_points`), or `None`.
    pub control_points: Option<Vec<usize>>,
    /// Output.
    pub head: Head,
}

impl Plan {
    /// The spatial size at every level `0..=depth` (`same` padding: `ceil(size / strides)`).
    pub fn level_sizes(&self) -> Vec<Vec<usize>> {
        let mut sizes = vec![self.image_size.clone()];
        for _ in 0..self.depth {
            let last = sizes.last().map(|s| {
                s.iter()
                    .map(|&x| x.div_ceil(self.strides))
                    .collect::<Vec<_>>()
            });
            sizes.extend(last);
        }
        sizes
    }

    /// The lowest decoder level that is computed.
    fn min_level(&self) -> usize {
        match &self.head {
            Head::Extract { levels, .. } => levels.iter().copied().min().unwrap_or(0),
            Head::Affine => self.depth,
        }
    }

    /// Checks the channel arithmetic of the decoder (skip connections and additive
    /// up-sampling); the message says what would work.
    pub fn check_decoder(&self) -> Result<(), String> {
        if !self.concat_skip && self.decode_channels != self.encode_channels {
            return Err(format!(
                "with concat_skip: false the skipped tensors are added, so decode_num_channels \
                 must equal encode_num_channels, got {:?} and {:?}; use the same list (or omit \
                 decode_num_channels) or set concat_skip: true",
                self.decode_channels, self.encode_channels
            ));
        }
        if self.upsampling == Upsampling::Additive {
            for d in self.min_level()..self.depth {
                let below = self.channels_out_of(d + 1);
                if below != 2 * self.decode_channels[d] {
                    return Err(format!(
                        "additive up-sampling sums the two halves of the channels of level {} \
                         ({below} channels) into level {d}, which needs {} channels; make each \
                         level have twice the channels of the one above (the default from \
                         num_channel_initial does) or set use_additive_upsampling: false",
                        d + 1,
                        self.decode_channels[d]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Channels of the decoder output at `level` (the bottom's at `depth`).
    fn channels_out_of(&self, level: usize) -> usize {
        if level == self.depth {
            self.encode_channels[self.depth]
        } else {
            self.decode_channels[level]
        }
    }
}

/// Encoder block: conv block then residual block.
struct ConvResidual {
    conv: ConvBlock,
    residual: ResidualBlock,
}

impl ConvResidual {
    fn new(
        params: &VarBuilder<'_>,
        ndim: usize,
        cin: usize,
        cout: usize,
        kernel: usize,
    ) -> candle::Result<Self> {
        Ok(Self {
            conv: ConvBlock::new(&params.pp("conv_block"), ndim, cin, cout, kernel, 1)?,
            residual: ResidualBlock::new(&params.pp("residual"), ndim, cout, kernel)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.residual.forward(&self.conv.forward(x)?)
    }
}

enum Down {
    Pool,
    Conv(ConvBlock),
}

enum BottomBlock {
    ConvResidual(ConvResidual),
    Conv(ConvBlock),
}

struct Up {
    deconv: DeconvBlock,
    additive: bool,
}

struct DecodeLevel {
    up: Up,
    conv: ConvResidual,
}

enum HeadLayers {
    Extract {
        levels: Vec<usize>,
        convs: Vec<Conv>,
        activation: Activation,
    },
    Affine {
        weight: Tensor,
        /// Offset of the bias from the identity.
        bias: Tensor,
        /// The identity `[I; 0]`, flattened.
        identity: Tensor,
    },
}

/// The built network.
pub(crate) struct EncoderDecoder {
    name: &'static str,
    plan: Plan,
    sizes: Vec<Vec<usize>>,
    encode: Vec<ConvResidual>,
    down: Vec<Down>,
    bottom: BottomBlock,
    /// Indexed by level `d`; `None` below the lowest extracted level.
    decode: Vec<Option<DecodeLevel>>,
    head: HeadLayers,
}

impl EncoderDecoder {
    /// Takes every weight from `params`:
    /// `encode.{d}.{conv_block,residual}…`, `down.{d}…` (strided conv only), `bottom…`,
    /// `decode.{d}.{up,conv}…`, `output.{i}.{weight,bias}` or `affine.{weight,bias}`.
    pub fn build(name: &'static str, plan: Plan, params: &VarBuilder<'_>) -> candle::Result<Self> {
        let ndim = plan.ndim;
        let sizes = plan.level_sizes();
        let (enc, dec) = (&plan.encode_channels, &plan.decode_channels);
        let mut encode = Vec::new();
        let mut down = Vec::new();
        let mut cin = plan.in_channels;
        let levels = enc.iter().zip(&plan.encode_kernels).take(plan.depth);
        for (d, (&channels, &kernel)) in levels.enumerate() {
            let p = params.pp(format!("encode.{d}"));
            encode.push(ConvResidual::new(&p, ndim, cin, channels, kernel)?);
            down.push(if plan.pooling {
                Down::Pool
            } else {
                Down::Conv(ConvBlock::new(
                    &params.pp(format!("down.{d}")),
                    ndim,
                    channels,
                    channels,
                    plan.strides,
                    plan.strides,
                )?)
            });
            cin = channels;
        }
        let bp = params.pp("bottom");
        let (bc, bk) = (enc[plan.depth], plan.encode_kernels[plan.depth]);
        let bottom = match plan.bottom {
            Bottom::ConvResidual => {
                BottomBlock::ConvResidual(ConvResidual::new(&bp, ndim, cin, bc, bk)?)
            }
            Bottom::Conv => BottomBlock::Conv(ConvBlock::new(&bp, ndim, cin, bc, bk, 1)?),
        };
        let min_level = plan.min_level();
        let mut decode: Vec<Option<DecodeLevel>> = (0..plan.depth).map(|_| None).collect();
        for d in (min_level..plan.depth).rev() {
            let p = params.pp(format!("decode.{d}"));
            let kernel = plan.decode_kernels[d];
            let below = plan.channels_out_of(d + 1);
            let deconv = DeconvBlock::new(&p.pp("up"), ndim, below, dec[d], kernel, plan.strides)?;
            let skipped = if plan.concat_skip {
                dec[d] + enc[d]
            } else {
                dec[d]
            };
            decode[d] = Some(DecodeLevel {
                up: Up {
                    deconv,
                    additive: plan.upsampling == Upsampling::Additive,
                },
                conv: ConvResidual::new(&p.pp("conv"), ndim, skipped, dec[d], kernel)?,
            });
        }
        let head = match &plan.head {
            Head::Extract {
                levels,
                out_channels,
                init,
                activation,
            } => {
                let convs = levels
                    .iter()
                    .enumerate()
                    .map(|(i, &level)| {
                        Conv::new(
                            &params.pp(format!("output.{i}")),
                            ndim,
                            plan.channels_out_of(level),
                            *out_channels,
                            3,
                            1,
                            true,
                            *init,
                        )
                    })
                    .collect::<candle::Result<_>>()?;
                HeadLayers::Extract {
                    levels: levels.clone(),
                    convs,
                    activation: *activation,
                }
            }
            Head::Affine => {
                let features = bc * sizes[plan.depth].iter().product::<usize>();
                let units = (ndim + 1) * ndim;
                let p = params.pp("affine");
                let weight = p.get_with_hints(
                    (units, features),
                    "weight",
                    KernelInit::GlorotUniform.init(features, units),
                )?;
                // DeepReg initialises the bias to the identity [I; 0]; a `VarBuilder` can only
                // initialise to constants, so the bias is stored as an offset from the identity
                // (zeros) and the identity is added in `forward`: the same function and the
                // same initial output.
                let bias = p.get_with_hints(units, "bias", Init::Const(0.0))?;
                let identity =
                    ops::identity_theta(1, ndim, bias.dtype(), bias.device())?.flatten_all()?;
                HeadLayers::Affine {
                    weight,
                    bias,
                    identity,
                }
            }
        };
        Ok(Self {
            name,
            plan,
            sizes,
            encode,
            down,
            bottom,
            decode,
            head,
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

    /// Runs the network: `(N, in_channels, *image_size)` to the head's output.
    fn run(&self, input: &Tensor) -> candle::Result<BackboneOutput> {
        self.check_input(input)?;
        let plan = &self.plan;
        let stride = vec![plan.strides; plan.ndim];
        let mut skips = Vec::with_capacity(plan.depth);
        let mut x = input.clone();
        for (block, down) in self.encode.iter().zip(&self.down) {
            let skip = block.forward(&x)?;
            x = match down {
                Down::Pool => {
                    let padding = ops::same_padding(&skip.dims()[2..], &stride, &stride);
                    ops::max_pool(&skip, &stride, &stride, &padding)?
                }
                Down::Conv(conv) => conv.forward(&skip)?,
            };
            skips.push(skip);
        }
        x = match &self.bottom {
            BottomBlock::ConvResidual(b) => b.forward(&x)?,
            BottomBlock::Conv(b) => b.forward(&x)?,
        };
        // outs[level] for the computed levels (min_level..=depth).
        let mut outs: Vec<Option<Tensor>> = vec![None; plan.depth + 1];
        outs[plan.depth] = Some(x.clone());
        for d in (0..plan.depth).rev() {
            let Some(level) = &self.decode[d] else { break };
            let mut up = level.up.deconv.forward(&x, &self.sizes[d])?;
            if level.up.additive {
                up = (up + resize_to(&sum_channel_halves(&x)?, &self.sizes[d])?)?;
            }
            let joined = if plan.concat_skip {
                Tensor::cat(&[&up, &skips[d]], 1)?
            } else {
                (up + &skips[d])?
            };
            x = level.conv.forward(&joined)?;
            outs[d] = Some(x.clone());
        }
        match &self.head {
            HeadLayers::Extract {
                levels,
                convs,
                activation,
            } => {
                let mut sum: Option<Tensor> = None;
                for (&level, conv) in levels.iter().zip(convs) {
                    let Some(feature) = &outs[level] else {
                        candle::bail!("{}: level {level} was not computed", self.name)
                    };
                    let y = resize_to(
                        &activation.apply(&conv.forward(feature)?)?,
                        &plan.image_size,
                    )?;
                    sum = Some(match sum {
                        None => y,
                        Some(s) => (s + y)?,
                    });
                }
                let Some(sum) = sum else {
                    candle::bail!("{}: no extract levels", self.name)
                };
                let out = if levels.len() > 1 {
                    (sum / levels.len() as f64)?
                } else {
                    sum
                };
                let out = match &plan.control_points {
                    Some(spacing) => control_point_field(&out, spacing)?,
                    None => out,
                };
                Ok(BackboneOutput::Dense(out))
            }
            HeadLayers::Affine {
                weight,
                bias,
                identity,
            } => {
                let n = x.dim(0)?;
                let flat = x.reshape((n, ()))?;
                let theta = flat
                    .matmul(&weight.t()?)?
                    .broadcast_add(&(bias + identity)?)?;
                Ok(BackboneOutput::Affine(theta.reshape((
                    n,
                    plan.ndim + 1,
                    plan.ndim,
                ))?))
            }
        }
    }
}

impl Backbone for EncoderDecoder {
    fn forward(&self, input: &Tensor) -> candle::Result<BackboneOutput> {
        self.run(input)
    }
}
