//! The built networks of the `atlalign_global` and `atlalign_local` backbones: atlalign's
//! supervised global (affine, STN-like) network and its local U-Net (Krepl et al. 2021,
//! `atlalign.nn.supervised_global_model_factory` and `supervised_model_factory`), for 2D and
//! 3D and any image size.
//!
//! Every convolution and dense layer is initialised as Keras' defaults (the reference is a
//! Keras model): Glorot-uniform kernels, zero biases.

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::Init;
use voxreg_framework::ops::{self, Rectifier, ResizeMode};
use voxreg_framework::prelude::*;

use crate::dlir_net::check_pair_input;

/// LeakyReLU slope of the local network's blocks (atlalign's `LeakyReLU(0.2)`).
const NEGATIVE_SLOPE: f64 = 0.2;

/// Keras' Glorot-uniform initialiser, `U(±√(6 / (fan_in + fan_out)))`.
fn glorot(fan_in: usize, fan_out: usize) -> Init {
    let limit = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
    Init::Uniform {
        lo: -limit,
        up: limit,
    }
}

/// A convolution with bias and TensorFlow's `same` padding (for an even kernel the extra
/// padded voxel goes after the data, as Keras pads), stride 1.
struct Conv {
    weight: Tensor,
    bias: Tensor,
    kernel: Vec<usize>,
}

impl Conv {
    /// `weight` `(cout, cin, k, …)`, Glorot-uniform, and `bias` `(cout,)`, zeros.
    fn new(
        params: &VarBuilder<'_>,
        ndim: usize,
        (cin, cout): (usize, usize),
        kernel: usize,
    ) -> candle::Result<Self> {
        let volume = kernel.pow(ndim as u32);
        let mut shape = vec![cout, cin];
        shape.extend(std::iter::repeat_n(kernel, ndim));
        Ok(Self {
            weight: params.get_with_hints(shape, "weight", glorot(cin * volume, cout * volume))?,
            bias: params.get_with_hints(cout, "bias", Init::Const(0.0))?,
            kernel: vec![kernel; ndim],
        })
    }

    /// The convolution, its bias and the rectifier `f` (bias and rectifier fused).
    fn forward(&self, x: &Tensor, f: Rectifier) -> candle::Result<Tensor> {
        let stride = vec![1; self.kernel.len()];
        let padding = ops::same_padding(&x.dims()[2..], &self.kernel, &stride);
        let y = ops::conv(x, &self.weight, None, &stride, &padding)?;
        ops::bias_rectify(&y, Some(&self.bias), f)
    }
}

/// A dense layer `y = x Wᵀ + b`, Glorot-uniform `W`, zero `b`.
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn new(params: &VarBuilder<'_>, cin: usize, cout: usize, init: Init) -> candle::Result<Self> {
        Ok(Self {
            weight: params.get_with_hints((cout, cin), "weight", init)?,
            bias: params.get_with_hints(cout, "bias", Init::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

/// Max pooling by 2 with TensorFlow's `valid` padding (an odd last voxel is dropped).
fn pool2(x: &Tensor, ndim: usize) -> candle::Result<Tensor> {
    let two = vec![2; ndim];
    ops::max_pool(x, &two, &two, &ops::valid_padding(ndim))
}

/// A validated `atlalign_global` description.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GlobalPlan {
    /// Spatial axes (2 or 3).
    pub ndim: usize,
    /// The input's spatial size; every axis at least `2^filters.len()`.
    pub image_size: Vec<usize>,
    /// Filters of each block (two convolutions, then max pooling).
    pub filters: Vec<usize>,
    /// Units of each linear dense layer after the flattening.
    pub dense_layers: Vec<usize>,
}

impl GlobalPlan {
    /// The size after the blocks: each max pooling halves every axis, rounding down.
    pub fn pooled_size(&self) -> Vec<usize> {
        let levels = self.filters.len() as u32;
        self.image_size.iter().map(|s| s >> levels).collect()
    }

    /// The number of features the flattening gives.
    pub fn flat_features(&self) -> usize {
        let channels = self.filters.last().copied().unwrap_or(2);
        channels * self.pooled_size().iter().product::<usize>()
    }
}

/// The built `atlalign_global` network.
pub(crate) struct GlobalNet {
    name: &'static str,
    plan: GlobalPlan,
    blocks: Vec<[Conv; 2]>,
    dense: Vec<Dense>,
    head: Dense,
    /// The head's identity, added to its output (its bias is stored as an offset from it).
    identity: Tensor,
    /// The axes in reverse order (atlalign's `x, y[, z]` order from voxreg's axis order).
    reversed: Tensor,
}

impl GlobalNet {
    /// Takes every weight from `params`: `blocks.{i}.{0,1}.{weight,bias}`,
    /// `dense.{j}.{weight,bias}` and `head.{weight,bias}`. The head starts at zero weights
    /// and the identity transform, as atlalign's `get_initial_weights`.
    pub fn build(
        name: &'static str,
        plan: GlobalPlan,
        params: &VarBuilder<'_>,
    ) -> candle::Result<Self> {
        let ndim = plan.ndim;
        let mut blocks = Vec::with_capacity(plan.filters.len());
        let mut cin = 2;
        for (i, &f) in plan.filters.iter().enumerate() {
            let p = params.pp(format!("blocks.{i}"));
            blocks.push([
                Conv::new(&p.pp("0"), ndim, (cin, f), 3)?,
                Conv::new(&p.pp("1"), ndim, (f, f), 3)?,
            ]);
            cin = f;
        }
        let mut width = plan.flat_features();
        let mut dense = Vec::with_capacity(plan.dense_layers.len());
        for (j, &units) in plan.dense_layers.iter().enumerate() {
            let p = params.pp(format!("dense.{j}"));
            dense.push(Dense::new(&p, width, units, glorot(width, units))?);
            width = units;
        }
        let outputs = ndim * (ndim + 1);
        let head = Dense::new(&params.pp("head"), width, outputs, Init::Const(0.0))?;
        let (dtype, device) = (head.bias.dtype(), head.bias.device().clone());
        let eye = Tensor::eye(ndim, dtype, &device)?;
        let zero = Tensor::zeros((ndim, 1), dtype, &device)?;
        let identity = Tensor::cat(&[&eye, &zero], 1)?.flatten_all()?;
        let order: Vec<u32> = (0..ndim as u32).rev().collect();
        let reversed = Tensor::new(order.as_slice(), &device)?;
        Ok(Self {
            name,
            plan,
            blocks,
            dense,
            head,
            identity,
            reversed,
        })
    }

    /// The affine matrices `[A | b]` in atlalign's axis order (`x` = the last axis first):
    /// a pixel at `(x, y)` maps to `A (x, y)ᵀ + b`, in pixels, origin at the first pixel.
    ///
    /// # Shapes
    /// * `input`: `(N, 2, *image_size)`; output `(N, ndim, ndim + 1)`.
    pub fn matrices(&self, input: &Tensor) -> candle::Result<Tensor> {
        let ndim = self.plan.ndim;
        check_pair_input(self.name, ndim, input)?;
        if input.dims()[2..] != self.plan.image_size[..] {
            candle::bail!(
                "{}: the network was built for images of size {:?} (its dense layers take the \
                 flattened features), got {:?}",
                self.name,
                self.plan.image_size,
                &input.dims()[2..]
            );
        }
        let mut x = input.clone();
        for [first, second] in &self.blocks {
            x = first.forward(&x, Rectifier::Relu)?;
            x = second.forward(&x, Rectifier::Relu)?;
            x = pool2(&x, ndim)?;
        }
        let n = x.dim(0)?;
        let mut h = x.reshape((n, ()))?;
        for layer in &self.dense {
            h = layer.forward(&h)?;
        }
        let raw = self.head.forward(&h)?.broadcast_add(&self.identity)?;
        raw.reshape((n, ndim, ndim + 1))
    }

    /// DeepReg's affine parameters for atlalign's matrices: with `r(i) = ndim − 1 − i` (the
    /// axis `i` in atlalign's order), `θ[i][j] = A[r(j)][r(i)]` and `θ[ndim][j] = b[r(j)]`.
    ///
    /// # Shapes
    /// * `matrices`: `(N, ndim, ndim + 1)`; output `(N, ndim + 1, ndim)`.
    pub fn theta(&self, matrices: &Tensor) -> candle::Result<Tensor> {
        let ndim = self.plan.ndim;
        let linear = matrices
            .narrow(2, 0, ndim)?
            .contiguous()?
            .index_select(&self.reversed, 1)?
            .contiguous()?
            .index_select(&self.reversed, 2)?;
        let offset = matrices
            .narrow(2, ndim, 1)?
            .contiguous()?
            .index_select(&self.reversed, 1)?;
        Tensor::cat(&[&linear.transpose(1, 2)?, &offset.transpose(1, 2)?], 1)?.contiguous()
    }
}

impl Backbone for GlobalNet {
    fn forward(&self, input: &Tensor) -> candle::Result<BackboneOutput> {
        let matrices = self.matrices(input)?;
        Ok(BackboneOutput::Affine(self.theta(&matrices)?))
    }
}

/// A validated `atlalign_local` description.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LocalPlan {
    /// Spatial axes (2 or 3).
    pub ndim: usize,
    /// The input's spatial size.
    pub image_size: Vec<usize>,
    /// Filters of the blocks before the first down-sampling.
    pub start_filters: Vec<usize>,
    /// Filters of the down-sampling blocks (max pooling, then a convolution).
    pub downsample_filters: Vec<usize>,
    /// Filters of the blocks at the bottom.
    pub middle_filters: Vec<usize>,
    /// Filters of the up-sampling blocks (as many as down-sampling blocks).
    pub upsample_filters: Vec<usize>,
    /// Filters of the blocks after the last up-sampling.
    pub end_filters: Vec<usize>,
}

impl LocalPlan {
    /// The crop `(before, after)` per axis to the largest size the down-samplings divide:
    /// the remainder split evenly, the odd voxel after (atlalign crops 456 → 448 columns,
    /// 4 on each side).
    pub fn crop(&self) -> Vec<(usize, usize)> {
        let unit = 1usize << self.downsample_filters.len();
        self.image_size
            .iter()
            .map(|&s| {
                let extra = s % unit;
                (extra / 2, extra - extra / 2)
            })
            .collect()
    }
}

/// The built `atlalign_local` network.
pub(crate) struct LocalNet {
    name: &'static str,
    plan: LocalPlan,
    start: Vec<Conv>,
    down: Vec<Conv>,
    middle: Vec<Conv>,
    /// Each up-sampling block: the convolution after the up-sampling, and the one after the
    /// concatenation with the skip.
    up: Vec<[Conv; 2]>,
    end: Vec<Conv>,
    flow: Conv,
}

impl LocalNet {
    /// Takes every weight from `params`: `start.{i}`, `down.{i}`, `middle.{i}`,
    /// `up.{i}.{0,1}`, `end.{i}` and `flow` (each `.weight`, `.bias`).
    pub fn build(
        name: &'static str,
        plan: LocalPlan,
        params: &VarBuilder<'_>,
    ) -> candle::Result<Self> {
        let ndim = plan.ndim;
        let mut cin = 2;
        let chain = |prefix: &str, filters: &[usize], cin: &mut usize| {
            filters
                .iter()
                .enumerate()
                .map(|(i, &f)| {
                    let conv = Conv::new(&params.pp(format!("{prefix}.{i}")), ndim, (*cin, f), 3);
                    *cin = f;
                    conv
                })
                .collect::<candle::Result<Vec<_>>>()
        };
        let start = chain("start", &plan.start_filters, &mut cin)?;
        // The skips: the start's output, then every down-sampling block's but the last.
        let mut skip_channels = vec![cin];
        let down = chain("down", &plan.downsample_filters, &mut cin)?;
        let levels = plan.downsample_filters.len();
        skip_channels.extend(&plan.downsample_filters[..levels.saturating_sub(1)]);
        let middle = chain("middle", &plan.middle_filters, &mut cin)?;
        let mut up = Vec::with_capacity(levels);
        for (i, (&f, &skip)) in plan
            .upsample_filters
            .iter()
            .zip(skip_channels.iter().rev())
            .enumerate()
        {
            let p = params.pp(format!("up.{i}"));
            up.push([
                Conv::new(&p.pp("0"), ndim, (cin, f), 3)?,
                Conv::new(&p.pp("1"), ndim, (f + skip, f), 3)?,
            ]);
            cin = f;
        }
        let end = chain("end", &plan.end_filters, &mut cin)?;
        let flow = Conv::new(&params.pp("flow"), ndim, (cin, ndim), 2)?;
        Ok(Self {
            name,
            plan,
            start,
            down,
            middle,
            up,
            end,
            flow,
        })
    }

    /// `(N, 2, *image_size)` to the field `(N, ndim, *image_size)`: crop, U-Net, zero-pad back.
    fn run(&self, input: &Tensor) -> candle::Result<Tensor> {
        let ndim = self.plan.ndim;
        check_pair_input(self.name, ndim, input)?;
        if input.dims()[2..] != self.plan.image_size[..] {
            candle::bail!(
                "{}: the network was built for images of size {:?}, got {:?}",
                self.name,
                self.plan.image_size,
                &input.dims()[2..]
            );
        }
        let crop = self.plan.crop();
        let mut x = input.clone();
        for (axis, (&(before, after), &size)) in crop.iter().zip(&self.plan.image_size).enumerate()
        {
            x = x.narrow(axis + 2, before, size - before - after)?;
        }
        let leaky = Rectifier::Leaky(NEGATIVE_SLOPE);
        for conv in &self.start {
            x = conv.forward(&x, leaky)?;
        }
        let mut skips = vec![x.clone()];
        for conv in &self.down {
            x = conv.forward(&pool2(&x, ndim)?, leaky)?;
            skips.push(x.clone());
        }
        // The last down-sampling block's output is the bottom, not a skip.
        skips.pop();
        for conv in &self.middle {
            x = conv.forward(&x, leaky)?;
        }
        for ([after_up, after_cat], skip) in self.up.iter().zip(skips.iter().rev()) {
            x = after_up.forward(&ops::upsample2x(&x, ResizeMode::Nearest)?, leaky)?;
            x = after_cat.forward(&Tensor::cat(&[&x, skip], 1)?, leaky)?;
        }
        for conv in &self.end {
            x = conv.forward(&x, leaky)?;
        }
        let mut field = self.flow.forward(&x, Rectifier::Identity)?;
        for (axis, &(before, after)) in crop.iter().enumerate() {
            field = field.pad_with_zeros(axis + 2, before, after)?;
        }
        Ok(field)
    }
}

impl Backbone for LocalNet {
    fn forward(&self, input: &Tensor) -> candle::Result<BackboneOutput> {
        Ok(BackboneOutput::Dense(self.run(input)?))
    }
}
