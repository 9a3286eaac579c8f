//! The built `dlir_bspline` network: DLIR's deformable stage (TorchIR's `DIRNet` with its
//! `BsplineTransformer`). The moving and the fixed image enter as two channels of one
//! ConvNet that pools down to the control grid, 1 × 1 convolutions predict the cubic
//! B-spline coefficients (the last one zero-initialised, so the stage starts at the
//! identity), and [`ops::bspline_ddf`] turns them into the dense displacement field.

use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::candle_nn::Init;
use voxreg_framework::ops;
use voxreg_framework::prelude::*;

use crate::dlir_net::{check_pair_input, ConvLayer};

/// The bound of the optional diffeomorphic limit, as a fraction of the spacing: cubic
/// B-spline coefficients within `±0.4·s` give an invertible field.
pub(crate) const DIFFEOMORPHIC_BOUND: f64 = 0.4;

/// A validated `dlir_bspline` description.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BsplinePlan {
    /// Spatial axes (2 or 3).
    pub ndim: usize,
    /// Kernel size of the feature convolutions (odd).
    pub kernel_size: usize,
    /// Output channels of each feature convolution.
    pub filters: Vec<usize>,
    /// Control-point spacing per axis (powers of 2).
    pub spacing: Vec<usize>,
    /// Number of 1 × 1 convolutions with ELU before the coefficient layer.
    pub num_dense_layers: usize,
    /// Whether the coefficients are bounded to `±0.4·spacing` by `tanh`.
    pub diffeomorphic_limits: bool,
}

impl BsplinePlan {
    /// The pooling kernel (and stride) after feature convolution `layer`: 2 along axis `a`
    /// while `layer < log2(spacing_a)`, else 1; `None` when no axis pools.
    pub fn pooling(&self, layer: usize) -> Option<Vec<usize>> {
        let kernel: Vec<usize> = self
            .spacing
            .iter()
            .map(|s| {
                if layer < s.trailing_zeros() as usize {
                    2
                } else {
                    1
                }
            })
            .collect();
        kernel.iter().any(|&k| k > 1).then_some(kernel)
    }
}

/// The built network.
pub(crate) struct DlirBsplineNet {
    name: &'static str,
    plan: BsplinePlan,
    convs: Vec<ConvLayer>,
    dense: Vec<ConvLayer>,
    coefficients: ConvLayer,
}

impl DlirBsplineNet {
    /// Takes every weight from `params`: `features.{i}`, `dense.{j}`, `coefficients` (each
    /// `.weight`, `.bias`). The coefficient layer starts at zero.
    pub fn build(
        name: &'static str,
        plan: BsplinePlan,
        params: &VarBuilder<'_>,
    ) -> candle::Result<Self> {
        let ndim = plan.ndim;
        let mut convs = Vec::with_capacity(plan.filters.len());
        let mut cin = 2;
        for (i, &cout) in plan.filters.iter().enumerate() {
            let p = params.pp(format!("features.{i}"));
            convs.push(ConvLayer::new(&p, ndim, cin, cout, plan.kernel_size)?);
            cin = cout;
        }
        let mut dense = Vec::with_capacity(plan.num_dense_layers);
        for j in 0..plan.num_dense_layers {
            dense.push(ConvLayer::new(
                &params.pp(format!("dense.{j}")),
                ndim,
                cin,
                cin,
                1,
            )?);
        }
        let coefficients = ConvLayer::with_init(
            &params.pp("coefficients"),
            ndim,
            (cin, ndim),
            1,
            Init::Const(0.0),
        )?;
        Ok(Self {
            name,
            plan,
            convs,
            dense,
            coefficients,
        })
    }

    /// The B-spline coefficients (bounded when the plan asks for it), one control point per
    /// cell of `spacing` voxels.
    ///
    /// # Shapes
    /// * `input`: `(N, 2, *s)`; output `(N, ndim, *⌈s / spacing⌉)`.
    pub fn coefficients(&self, input: &Tensor) -> candle::Result<Tensor> {
        check_pair_input(self.name, self.plan.ndim, input)?;
        let mut x = input.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(&x)?.elu(1.0)?;
            if let Some(kernel) = self.plan.pooling(i) {
                // `same` padding with the padded voxels not counted: ⌈n / 2⌉ outputs, so
                // after log2(s) poolings the grid is ⌈n / s⌉, one point per cell.
                let padding = ops::same_padding(&x.dims()[2..], &kernel, &kernel);
                x = ops::avg_pool(&x, &kernel, &kernel, &padding)?;
            }
        }
        for layer in &self.dense {
            x = layer.forward(&x)?.elu(1.0)?;
        }
        let coefficients = self.coefficients.forward(&x)?;
        if self.plan.diffeomorphic_limits {
            ops::bounded_coefficients(&coefficients, &self.plan.spacing, DIFFEOMORPHIC_BOUND)
        } else {
            Ok(coefficients)
        }
    }
}

impl Backbone for DlirBsplineNet {
    fn forward(&self, input: &Tensor) -> candle::Result<BackboneOutput> {
        let coefficients = self.coefficients(input)?;
        let ddf = ops::bspline_ddf(&coefficients, &input.dims()[2..], &self.plan.spacing)?;
        Ok(BackboneOutput::Dense(ddf))
    }
}
