//! Layers of the built-in backbones (DeepReg's `deepreg/model/layer.py`), for 2D and 3D.
//!
//! Every weight is taken from a [`VarBuilder`] by name, so a layer runs from trained variables
//! (a `VarMap`) or from tensors supplied from outside (a hypernetwork).
//!
//! The layers are public so that a third-party backbone can be built from the same blocks
//! (with the same weight names and initialisation) as the built-in ones.

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::Init;
use voxreg_framework::ops::{self, Align, ResizeMode};
use voxreg_framework::prelude::*;

/// Batch-norm epsilon (Keras' default).
const BN_EPSILON: f64 = 1.0e-3;

/// How a kernel is initialised (Keras' initializer names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelInit {
    /// All zeros (DeepReg's output layer for DDF / DVF methods).
    Zeros,
    /// Uniform in `±√(6 / (fan_in + fan_out))` (Keras' default).
    GlorotUniform,
    /// Normal with std `√(2 / (fan_in + fan_out))`.
    GlorotNormal,
    /// Uniform in `±√(6 / fan_in)`.
    HeUniform,
    /// Normal with std `√(2 / fan_in)`.
    HeNormal,
}

impl KernelInit {
    /// The names accepted in configs.
    pub const NAMES: &'static str = "zeros, glorot_uniform, glorot_normal, he_uniform, he_normal";

    /// Parses a Keras initializer name.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "zeros" | "zero" => Some(Self::Zeros),
            "glorot_uniform" => Some(Self::GlorotUniform),
            "glorot_normal" => Some(Self::GlorotNormal),
            "he_uniform" => Some(Self::HeUniform),
            "he_normal" => Some(Self::HeNormal),
            _ => None,
        }
    }

    /// The candle initializer for a kernel with these fans.
    pub fn init(self, fan_in: usize, fan_out: usize) -> Init {
        let (fi, fo) = (fan_in as f64, fan_out as f64);
        match self {
            Self::Zeros => Init::Const(0.0),
            Self::GlorotUniform => {
                let limit = (6.0 / (fi + fo)).sqrt();
                Init::Uniform {
                    lo: -limit,
                    up: limit,
                }
            }
            Self::GlorotNormal => Init::Randn {
                mean: 0.0,
                stdev: (2.0 / (fi + fo)).sqrt(),
            },
            Self::HeUniform => {
                let limit = (6.0 / fi).sqrt();
                Init::Uniform {
                    lo: -limit,
                    up: limit,
                }
            }
            Self::HeNormal => Init::Randn {
                mean: 0.0,
                stdev: (2.0 / fi).sqrt(),
            },
        }
    }
}

/// Activation of the output layer (Keras' names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// None / `linear`.
    Linear,
    /// `relu`.
    Relu,
    /// `sigmoid`.
    Sigmoid,
    /// `tanh`.
    Tanh,
}

impl Activation {
    /// The names accepted in configs.
    pub const NAMES: &'static str = "linear (or none), relu, sigmoid, tanh";

    /// Parses a Keras activation name; an empty name or `none` is linear.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "" | "none" | "null" | "linear" => Some(Self::Linear),
            "relu" => Some(Self::Relu),
            "sigmoid" => Some(Self::Sigmoid),
            "tanh" => Some(Self::Tanh),
            _ => None,
        }
    }

    /// Applies the activation.
    pub fn apply(self, x: &Tensor) -> candle::Result<Tensor> {
        match self {
            Self::Linear => Ok(x.clone()),
            Self::Relu => x.relu(),
            Self::Sigmoid => sigmoid(x),
            Self::Tanh => x.tanh(),
        }
    }
}

fn sigmoid(x: &Tensor) -> candle::Result<Tensor> {
    // 1 / (1 + exp(-x)), built from differentiable primitives.
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// A convolution (`same` padding) with an optional bias.
pub struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    kernel: Vec<usize>,
    stride: Vec<usize>,
}

impl Conv {
    /// Takes `weight` `(cout, cin, k, …)` (and `bias` `(cout,)` if `bias`) from `params`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        params: &VarBuilder<'_>,
        ndim: usize,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        bias: bool,
        init: KernelInit,
    ) -> candle::Result<Self> {
        let volume = kernel.pow(ndim as u32);
        let mut shape = vec![cout, cin];
        shape.extend(std::iter::repeat_n(kernel, ndim));
        let weight =
            params.get_with_hints(shape, "weight", init.init(cin * volume, cout * volume))?;
        let bias = if bias {
            Some(params.get_with_hints(cout, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            kernel: vec![kernel; ndim],
            stride: vec![stride; ndim],
        })
    }

    /// `(N, cin, *s) -> (N, cout, *ceil(s / stride))`.
    pub fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let padding = ops::same_padding(&x.dims()[2..], &self.kernel, &self.stride);
        ops::conv(x, &self.weight, self.bias.as_ref(), &self.stride, &padding)
    }
}

/// A transposed convolution without bias (Keras' `Conv3DTranspose`, `padding="same"`).
pub struct Deconv {
    weight: Tensor,
    kernel: Vec<usize>,
    stride: Vec<usize>,
}

impl Deconv {
    /// Takes `weight` `(cin, cout, k, …)` from `params` (Glorot-uniform initialised).
    pub fn new(
        params: &VarBuilder<'_>,
        ndim: usize,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
    ) -> candle::Result<Self> {
        let volume = kernel.pow(ndim as u32);
        let mut shape = vec![cin, cout];
        shape.extend(std::iter::repeat_n(kernel, ndim));
        let init = KernelInit::GlorotUniform.init(cout * volume, cin * volume);
        Ok(Self {
            weight: params.get_with_hints(shape, "weight", init)?,
            kernel: vec![kernel; ndim],
            stride: vec![stride; ndim],
        })
    }

    /// Up-samples `(N, cin, *s)` to `(N, cout, *out)`: the adjoint of a `same`-padded strided
    /// convolution from `out` to `s` (so `s` must be `ceil(out / stride)`).
    pub fn forward(&self, x: &Tensor, out: &[usize]) -> candle::Result<Tensor> {
        let padding = ops::same_padding(out, &self.kernel, &self.stride);
        let input = &x.dims()[2..];
        let mut output_padding = Vec::with_capacity(out.len());
        for a in 0..out.len() {
            let natural = ((input[a] - 1) * self.stride[a] + self.kernel[a])
                .checked_sub(padding[a].0 + padding[a].1);
            match natural {
                Some(n) if n <= out[a] && out[a] - n < self.stride[a] => {
                    output_padding.push(out[a] - n)
                }
                _ => candle::bail!(
                    "deconv: cannot up-sample {input:?} to {out:?} with kernel {:?}, stride {:?}",
                    self.kernel,
                    self.stride
                ),
            }
        }
        ops::conv_transpose(
            x,
            &self.weight,
            None,
            &self.stride,
            &padding,
            &output_padding,
        )
    }
}

/// Batch normalisation with batch statistics (mean and variance over the batch and spatial
/// axes), learned scale `gamma` and offset `beta`.
pub struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
}

impl BatchNorm {
    /// Takes `gamma` (ones) and `beta` (zeros), `(channels,)`, from `params`.
    pub fn new(params: &VarBuilder<'_>, channels: usize) -> candle::Result<Self> {
        Ok(Self {
            gamma: params.get_with_hints(channels, "gamma", Init::Const(1.0))?,
            beta: params.get_with_hints(channels, "beta", Init::Const(0.0))?,
        })
    }

    /// Normalises each channel of `(N, C, *s)` (one fused op, [`ops::batch_norm`]).
    pub fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        ops::batch_norm(x, &self.gamma, &self.beta, BN_EPSILON, false)
    }

    /// `relu(forward(x))` as one fused op ([`ops::batch_norm`]).
    pub fn forward_relu(&self, x: &Tensor) -> candle::Result<Tensor> {
        ops::batch_norm(x, &self.gamma, &self.beta, BN_EPSILON, true)
    }
}

/// DeepReg's `Conv3dBlock`: convolution (no bias) → batch norm → ReLU.
pub struct ConvBlock {
    conv: Conv,
    norm: BatchNorm,
}

impl ConvBlock {
    /// Weights `conv.weight`, `norm.gamma`, `norm.beta` under `params`.
    pub fn new(
        params: &VarBuilder<'_>,
        ndim: usize,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
    ) -> candle::Result<Self> {
        Ok(Self {
            conv: Conv::new(
                &params.pp("conv"),
                ndim,
                cin,
                cout,
                kernel,
                stride,
                false,
                KernelInit::GlorotUniform,
            )?,
            norm: BatchNorm::new(&params.pp("norm"), cout)?,
        })
    }

    /// `(N, cin, *s) -> (N, cout, *ceil(s / stride))`.
    pub fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.norm.forward_relu(&self.conv.forward(x)?)
    }
}

/// DeepReg's `ResidualConv3dBlock`: two (convolution → batch norm) layers with the input added
/// before the last ReLU; channels and size unchanged.
pub struct ResidualBlock {
    layers: Vec<(Conv, BatchNorm)>,
}

impl ResidualBlock {
    /// Weights `{0,1}.conv.weight`, `{0,1}.norm.{gamma,beta}` under `params`.
    pub fn new(
        params: &VarBuilder<'_>,
        ndim: usize,
        channels: usize,
        kernel: usize,
    ) -> candle::Result<Self> {
        let layers = (0..2)
            .map(|i| {
                let p = params.pp(i.to_string());
                Ok((
                    Conv::new(
                        &p.pp("conv"),
                        ndim,
                        channels,
                        channels,
                        kernel,
                        1,
                        false,
                        KernelInit::GlorotUniform,
                    )?,
                    BatchNorm::new(&p.pp("norm"), channels)?,
                ))
            })
            .collect::<candle::Result<_>>()?;
        Ok(Self { layers })
    }

    /// `(N, c, *s) -> (N, c, *s)`.
    pub fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let mut out = x.clone();
        let last = self.layers.len() - 1;
        for (i, (conv, norm)) in self.layers.iter().enumerate() {
            out = if i == last {
                (norm.forward(&conv.forward(&out)?)? + x)?.relu()?
            } else {
                norm.forward_relu(&conv.forward(&out)?)?
            };
        }
        Ok(out)
    }
}

/// DeepReg's `Deconv3dBlock`: transposed convolution (no bias) → batch norm → ReLU.
pub struct DeconvBlock {
    deconv: Deconv,
    norm: BatchNorm,
}

impl DeconvBlock {
    /// Weights `deconv.weight`, `norm.{gamma,beta}` under `params`.
    pub fn new(
        params: &VarBuilder<'_>,
        ndim: usize,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
    ) -> candle::Result<Self> {
        Ok(Self {
            deconv: Deconv::new(&params.pp("deconv"), ndim, cin, cout, kernel, stride)?,
            norm: BatchNorm::new(&params.pp("norm"), cout)?,
        })
    }

    /// `(N, cin, *s) -> (N, cout, *out)`.
    pub fn forward(&self, x: &Tensor, out: &[usize]) -> candle::Result<Tensor> {
        self.norm.forward_relu(&self.deconv.forward(x, out)?)
    }
}

/// Linear resize with half-pixel centres (DeepReg's `Resize3d`), skipped when the size already
/// matches.
pub fn resize_to(x: &Tensor, size: &[usize]) -> candle::Result<Tensor> {
    if &x.dims()[2..] == size {
        Ok(x.clone())
    } else {
        ops::resize(x, size, ResizeMode::Linear, Align::HalfPixel)
    }
}

/// Sums the two halves of the channels: `(N, 2c, *s) -> (N, c, *s)`.
pub fn sum_channel_halves(x: &Tensor) -> candle::Result<Tensor> {
    let half = x.dim(1)? / 2;
    x.narrow(1, 0, half)? + x.narrow(1, half, half)?
}

/// DeepReg's anti-aliasing Gaussian (`gaussian_filter_3d`), one axis: `ceil(3σ)` taps rounded
/// up to an odd count, centred, normalised to sum 1.
fn control_point_gaussian(sigma: f64) -> Vec<f64> {
    let base = (3.0 * sigma).ceil() as usize;
    let size = base + (base + 1) % 2;
    let mean = (size as f64 - 1.0) / 2.0;
    let raw: Vec<f64> = (0..size)
        .map(|i| (-(i as f64 - mean).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|v| v / sum).collect()
}

/// The cubic B-spline kernel of one axis for control points every `spacing` voxels (DeepReg's
/// `BSplines3DTransform`): `4 · spacing` taps, tap `f · spacing + j` = `B_f(1 − (j + ½) / spacing)`.
fn bspline_kernel_1d(spacing: usize) -> Vec<f64> {
    let basis = [
        |u: f64| (1.0 - u).powi(3) / 6.0,
        |u: f64| (3.0 * u.powi(3) - 6.0 * u * u + 4.0) / 6.0,
        |u: f64| (-3.0 * u.powi(3) + 3.0 * u * u + 3.0 * u + 1.0) / 6.0,
        |u: f64| u.powi(3) / 6.0,
    ];
    let c = spacing as f64;
    basis
        .iter()
        .flat_map(|b| (0..spacing).map(move |j| b(1.0 - (j as f64 + 0.5) / c)))
        .collect()
}

/// Interpolates a control-point grid `(N, C, *grid)` into a dense field of spatial `size` by
/// cubic B-splines (DeepReg's `BSplines3DTransform`): a transposed convolution with stride
/// `spacing` and the separable B-spline kernel, cropped from `3 · spacing`.
pub fn bspline_interpolate(
    grid: &Tensor,
    spacing: &[usize],
    size: &[usize],
) -> candle::Result<Tensor> {
    let dims = grid.dims().to_vec();
    let ndim = spacing.len();
    let (n, c) = (dims[0], dims[1]);
    // Separable kernel as an outer product of the per-axis kernels.
    let mut kernel = Tensor::ones(1, grid.dtype(), grid.device())?;
    for &s in spacing {
        let axis =
            Tensor::new(bspline_kernel_1d(s).as_slice(), grid.device())?.to_dtype(grid.dtype())?;
        let len = axis.dim(0)?;
        let prev = kernel.elem_count();
        kernel = kernel
            .reshape((prev, 1))?
            .broadcast_mul(&axis.reshape((1, len))?)?
            .flatten_all()?;
    }
    let mut kshape = vec![1, 1];
    kshape.extend(spacing.iter().map(|&s| 4 * s));
    let kernel = kernel.reshape(kshape)?;
    let mut flat_shape = vec![n * c, 1];
    flat_shape.extend(&dims[2..]);
    let up = ops::conv_transpose(
        &grid.reshape(flat_shape)?,
        &kernel,
        None,
        spacing,
        &vec![(0, 0); ndim],
        &vec![0; ndim],
    )?;
    let mut out = up;
    for (a, (&s, &len)) in spacing.iter().zip(size).enumerate() {
        out = out.narrow(2 + a, 3 * s, len)?;
    }
    let mut shape = vec![n, c];
    shape.extend(size);
    out.contiguous()?.reshape(shape)
}

/// DeepReg's control-point output (`ResizeCPTransform` then `BSplines3DTransform`): the dense
/// field is smoothed by a Gaussian with σ = 0.44 · spacing per axis, linearly resized to the
/// control grid `ceil(size / spacing) + 3`, and interpolated back to `size` by cubic
/// B-splines, so the field has the smoothness of a B-spline transform.
pub fn control_point_field(field: &Tensor, spacing: &[usize]) -> candle::Result<Tensor> {
    let size = field.dims()[2..].to_vec();
    let kernels: Vec<Vec<f64>> = spacing
        .iter()
        .map(|&s| control_point_gaussian(0.44 * s as f64))
        .collect();
    let smoothed = ops::separable_filter_axes(field, &kernels)?;
    let grid: Vec<usize> = size
        .iter()
        .zip(spacing)
        .map(|(&v, &s)| v.div_ceil(s) + 3)
        .collect();
    bspline_interpolate(&resize_to(&smoothed, &grid)?, spacing, &size)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn max_abs(t: &Tensor) -> candle::Result<f32> {
        t.abs()?.max_all()?.to_scalar::<f32>()
    }

    #[test]
    fn batch_norm_normalises_each_channel_over_batch_and_space() -> candle::Result<()> {
        let dev = Device::Cpu;
        let x = ((Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &dev)? * 3.0)? + 2.0)?;
        let tensors = HashMap::from([
            ("gamma".to_owned(), Tensor::new(&[1f32, 2.0, 0.5], &dev)?),
            ("beta".to_owned(), Tensor::new(&[0f32, 1.0, -1.0], &dev)?),
        ]);
        let norm = BatchNorm::new(&VarBuilder::from_tensors(tensors, DType::F32, &dev), 3)?;
        let y = norm.forward(&x)?;
        let per_channel = |t: &Tensor| -> candle::Result<Tensor> {
            t.transpose(0, 1)?.contiguous()?.reshape((3, ()))
        };
        let (xs, ys) = (per_channel(&x)?, per_channel(&y)?);
        let mean = ys.mean(1)?.to_vec1::<f32>()?;
        let var_x = xs.broadcast_sub(&xs.mean_keepdim(1)?)?.sqr()?.mean(1)?;
        let var_y = ys.broadcast_sub(&ys.mean_keepdim(1)?)?.sqr()?.mean(1)?;
        let (var_x, var_y) = (var_x.to_vec1::<f32>()?, var_y.to_vec1::<f32>()?);
        for (c, (gamma, beta)) in [(1f32, 0f32), (2.0, 1.0), (0.5, -1.0)].iter().enumerate() {
            assert!((mean[c] - beta).abs() < 1e-4, "mean {c}: {}", mean[c]);
            // Var(y) = γ² · Var(x) / (Var(x) + ε).
            let expected = gamma * gamma * var_x[c] / (var_x[c] + BN_EPSILON as f32);
            assert!((var_y[c] - expected).abs() < 1e-3, "var {c}: {}", var_y[c]);
        }
        Ok(())
    }

    #[test]
    fn fused_batch_norm_relu_is_relu_of_batch_norm() -> candle::Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 3, 4, 5), &dev)?;
        let tensors = HashMap::from([
            ("gamma".to_owned(), Tensor::new(&[1f32, -2.0, 0.5], &dev)?),
            ("beta".to_owned(), Tensor::new(&[0.2f32, 1.0, -1.0], &dev)?),
        ]);
        let norm = BatchNorm::new(&VarBuilder::from_tensors(tensors, DType::F32, &dev), 3)?;
        let fused = norm.forward_relu(&x)?;
        assert!(fused.min_all()?.to_scalar::<f32>()? >= 0.0);
        assert!(max_abs(&(fused - norm.forward(&x)?.relu()?)?)? < 1e-6);
        Ok(())
    }

    #[test]
    fn residual_block_adds_its_input_before_the_last_relu() -> candle::Result<()> {
        // With zero kernels both layers output batch norm of zeros = beta (0), so the block is
        // relu(0 + x) = relu(x).
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        for i in 0..2 {
            tensors.insert(
                format!("{i}.conv.weight"),
                Tensor::zeros((2, 2, 3, 3, 3), DType::F32, &dev)?,
            );
            tensors.insert(
                format!("{i}.norm.gamma"),
                Tensor::ones(2, DType::F32, &dev)?,
            );
            tensors.insert(
                format!("{i}.norm.beta"),
                Tensor::zeros(2, DType::F32, &dev)?,
            );
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let block = ResidualBlock::new(&vb, 3, 2, 3)?;
        let x = Tensor::randn(0f32, 1.0, (1, 2, 4, 4, 4), &dev)?;
        assert_eq!(max_abs(&(block.forward(&x)? - x.relu()?)?)?, 0.0);
        Ok(())
    }

    #[test]
    fn deconv_up_samples_to_the_exact_level_size() -> candle::Result<()> {
        let dev = Device::Cpu;
        let vb = VarBuilder::from_tensors(HashMap::new(), DType::F32, &dev);
        assert!(
            Deconv::new(&vb, 2, 4, 2, 3, 2).is_err(),
            "missing weight is an error"
        );
        for (kernel, input, output) in [(3, [3, 4, 5], [5, 8, 9]), (2, [2, 3, 1], [4, 5, 2])] {
            let mut tensors = HashMap::new();
            tensors.insert(
                "weight".to_owned(),
                Tensor::randn(0f32, 1.0, (4, 2, kernel, kernel, kernel), &dev)?,
            );
            let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
            let deconv = Deconv::new(&vb, 3, 4, 2, kernel, 2)?;
            let x = Tensor::randn(0f32, 1.0, [&[1, 4][..], &input].concat(), &dev)?;
            let y = deconv.forward(&x, &output)?;
            assert_eq!(y.dims(), &[&[1, 2][..], &output].concat()[..]);
            // An output size that the input cannot come from is an error.
            assert!(deconv.forward(&x, &[20, 20, 20]).is_err());
        }
        Ok(())
    }

    #[test]
    fn channel_halves_are_summed() -> candle::Result<()> {
        let x = Tensor::arange(0f32, 4.0, &Device::Cpu)?.reshape((1, 4, 1, 1))?;
        let y = sum_channel_halves(&x)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(y, vec![2.0, 4.0]);
        Ok(())
    }

    #[test]
    fn initializer_and_activation_names_follow_keras() {
        assert_eq!(KernelInit::parse("Zeros"), Some(KernelInit::Zeros));
        assert_eq!(
            KernelInit::parse("glorot_uniform"),
            Some(KernelInit::GlorotUniform)
        );
        assert_eq!(KernelInit::parse("orthogonal"), None);
        assert_eq!(Activation::parse(""), Some(Activation::Linear));
        assert_eq!(Activation::parse("sigmoid"), Some(Activation::Sigmoid));
        assert_eq!(Activation::parse("softsign"), None);
    }

    #[test]
    fn bspline_kernels_are_a_partition_of_unity() -> candle::Result<()> {
        for spacing in [1, 2, 3, 4] {
            let k = bspline_kernel_1d(spacing);
            assert_eq!(k.len(), 4 * spacing);
            for j in 0..spacing {
                let sum: f64 = (0..4).map(|f| k[f * spacing + j]).sum();
                assert!((sum - 1.0).abs() < 1e-12);
            }
        }
        // A constant control grid interpolates to the same constant, in 2D and 3D.
        let dev = Device::Cpu;
        for (size, spacing) in [(vec![9, 8], vec![3, 2]), (vec![8, 8, 8], vec![4, 4, 4])] {
            let grid: Vec<usize> = size
                .iter()
                .zip(&spacing)
                .map(|(&v, &s): (&usize, &usize)| v.div_ceil(s) + 3)
                .collect();
            let cp = (Tensor::ones([&[2, 3][..], &grid].concat(), DType::F32, &dev)? * 1.5)?;
            let field = bspline_interpolate(&cp, &spacing, &size)?;
            assert_eq!(field.dims(), &[&[2, 3][..], &size].concat()[..]);
            assert!(max_abs(&(field - 1.5)?)? < 1e-5);
        }
        Ok(())
    }

    #[test]
    fn control_point_gaussian_matches_deepreg_sizes() {
        // sigma = 0.44 * 4 = 1.76: ceil(5.28) = 6, made odd: 7 taps.
        let k = control_point_gaussian(1.76);
        assert_eq!(k.len(), 7);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(k[3] > k[2] && (k[2] - k[4]).abs() < 1e-15);
        // sigma = 0.44 * 5 = 2.2: ceil(6.6) = 7, already odd.
        assert_eq!(control_point_gaussian(2.2).len(), 7);
    }

    #[test]
    fn control_point_field_is_smooth_and_differentiable() -> candle::Result<()> {
        let dev = Device::Cpu;
        let field = Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, 3, 8, 8, 8), &dev)?)?;
        let smooth = control_point_field(field.as_tensor(), &[4, 4, 4])?;
        assert_eq!(smooth.dims(), &[1, 3, 8, 8, 8]);
        // Smoothing shrinks the voxel-to-voxel differences of white noise.
        let rough = |t: &Tensor| -> candle::Result<f32> {
            (t.narrow(2, 1, 7)? - t.narrow(2, 0, 7)?)?
                .abs()?
                .mean_all()?
                .to_scalar::<f32>()
        };
        assert!(rough(&smooth)? < 0.2 * rough(field.as_tensor())?);
        let grads = smooth.sqr()?.sum_all()?.backward()?;
        assert!(grads.get(field.as_tensor()).is_some());
        Ok(())
    }
}
