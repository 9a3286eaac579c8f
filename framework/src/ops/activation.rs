//! A per-channel bias followed by a (leaky) rectifier, fused into one op with its backward.
//!
//! Built from candle primitives, `leaky_relu(x + b)` is a broadcast add, a scale and a
//! maximum: three full-size outputs in the forward pass and, in the backward pass, masks,
//! products and one zero-filled gradient buffer per node. Here the forward pass is one
//! streaming pass and the backward pass one pass that also sums the bias gradient.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::{check_float, contiguous, storage, with_float, Real};

/// The rectifier applied after the bias.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rectifier {
    /// None: `f(v) = v`.
    Identity,
    /// `f(v) = max(v, 0)`.
    Relu,
    /// `f(v) = v` for `v > 0`, `α v` otherwise (`0 ≤ α ≤ 1`).
    Leaky(f64),
}

impl Rectifier {
    /// The slope for `v ≤ 0` (the slope for `v > 0` is 1; at `v = 0` the derivative is taken
    /// as this one).
    fn slope(self) -> f64 {
        match self {
            Self::Identity => 1.0,
            Self::Relu => 0.0,
            Self::Leaky(a) => a,
        }
    }
}

/// `y[n, c, p] = f(x[n, c, p] + bias[c])` for a rectifier `f` ([`Rectifier`]); without a bias,
/// `f(x)`.
///
/// Gradients: with `d = f'(x + b)` (1 where `x + b > 0`, else the negative slope),
/// `∂L/∂x = d · ∂L/∂y` and `∂L/∂b[c] = Σ_{n, p} d · ∂L/∂y`.
///
/// # Shapes
/// * `x`: `(N, C, *spatial)` with any number of spatial axes (at least one), f32 or f64.
/// * `bias`: `(C,)`, same dtype.
/// * output: the shape of `x`.
pub fn bias_rectify(x: &Tensor, bias: Option<&Tensor>, f: Rectifier) -> Result<Tensor> {
    const OP: &str = "bias-rectify";
    check_float(OP, "input", x)?;
    if x.rank() < 3 {
        bail!("{OP}: input must be (N, C, *spatial), got {:?}", x.dims());
    }
    if let Rectifier::Leaky(a) = f {
        if !(0.0..=1.0).contains(&a) {
            bail!("{OP}: the negative slope must be in [0, 1], got {a}");
        }
    }
    let op = BiasRectify { f };
    let x = x.contiguous()?;
    match bias {
        None => x.apply_op1(op),
        Some(b) => {
            let c = x.dims()[1];
            if b.dims() != [c] {
                bail!("{OP}: bias must be ({c},), got {:?}", b.dims());
            }
            if b.dtype() != x.dtype() {
                bail!(
                    "{OP}: bias dtype {:?} differs from input dtype {:?}",
                    b.dtype(),
                    x.dtype()
                );
            }
            x.apply_op2(&b.contiguous()?, op)
        }
    }
}

/// Values per rayon task.
const CHUNK: usize = 1 << 14;

/// The forward op: `(x[, bias]) -> f(x + bias)`.
#[derive(Debug, Clone, Copy)]
struct BiasRectify {
    f: Rectifier,
}

/// `(N · C, vol)`: the number of channel planes and their length, for `x` `(N, C, *spatial)`.
fn planes(dims: &[usize]) -> (usize, usize) {
    (dims[0] * dims[1], dims[2..].iter().product())
}

impl BiasRectify {
    /// `f(x + b[c])` over channel planes of `vol` values; `bias` is empty for no bias.
    fn forward<T: Real>(&self, x: &[T], bias: &[T], vol: usize) -> Vec<T> {
        let alpha = T::from_f64(self.f.slope());
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(vol.max(1))
            .zip(x.par_chunks(vol.max(1)))
            .enumerate()
            .for_each(|(plane, (yp, xp))| {
                let b = if bias.is_empty() {
                    T::zero()
                } else {
                    bias[plane % bias.len()]
                };
                yp.par_chunks_mut(CHUNK)
                    .zip(xp.par_chunks(CHUNK))
                    .for_each(|(yc, xc)| {
                        let xc = &xc[..yc.len()];
                        for j in 0..yc.len() {
                            let v = xc[j] + b;
                            yc[j] = if v > T::zero() { v } else { alpha * v };
                        }
                    });
            });
        y
    }

    fn run(
        &self,
        s: &CpuStorage,
        l: &Layout,
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "bias-rectify";
        let (_, vol) = planes(l.dims());
        with_float!(OP, s, |F| {
            let x = contiguous::<F>(s, l, OP, "input")?;
            let b = match bias {
                Some((bs, bl)) => contiguous::<F>(bs, bl, OP, "bias")?,
                None => &[],
            };
            Ok(storage(self.forward(x, b, vol), l.shape().clone()))
        })
    }

    /// The backward op for an output `res` of shape `dims`.
    fn backward(&self, res: &Tensor, grad: &Tensor, with_bias: bool) -> Result<Tensor> {
        res.apply_op2_no_bwd(
            &grad.contiguous()?,
            &RectifyBackward {
                f: self.f,
                with_bias,
            },
        )
    }
}

impl CustomOp1 for BiasRectify {
    fn name(&self) -> &'static str {
        "bias-rectify"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(s, l, None)
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.backward(res, grad, false)?.reshape(x.shape())?))
    }
}

impl CustomOp2 for BiasRectify {
    fn name(&self) -> &'static str {
        "bias-rectify"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run(s1, l1, Some((s2, l2)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let flat = self.backward(res, grad, true)?;
        let len = x.elem_count();
        let gx = flat.narrow(0, 0, len)?.reshape(x.shape())?;
        let gb = flat.narrow(0, len, bias.elem_count())?;
        Ok((Some(gx), Some(gb)))
    }
}

/// Backward of [`BiasRectify`]: `(output, grad of output) -> grad of x` (flattened), followed
/// by the bias gradient `(C,)` when `with_bias`. The derivative is read from the output:
/// `f(v) > 0` exactly where `v > 0`.
struct RectifyBackward {
    f: Rectifier,
    with_bias: bool,
}

impl RectifyBackward {
    fn run<T: Real>(&self, y: &[T], g: &[T], dims: &[usize]) -> Vec<T> {
        let (_, vol) = planes(dims);
        let channels = dims[1];
        let alpha = T::from_f64(self.f.slope());
        let extra = if self.with_bias { channels } else { 0 };
        let mut out = vec![T::zero(); y.len() + extra];
        let (gx, gb) = out.split_at_mut(y.len());
        // Per plane, the sums of its chunks (f64, in chunk order: independent of threads).
        let sums: Vec<Vec<f64>> = gx
            .par_chunks_mut(vol.max(1))
            .zip(y.par_chunks(vol.max(1)).zip(g.par_chunks(vol.max(1))))
            .map(|(gp, (yp, gop))| {
                gp.par_chunks_mut(CHUNK)
                    .zip(yp.par_chunks(CHUNK).zip(gop.par_chunks(CHUNK)))
                    .map(|(gc, (yc, goc))| {
                        let (yc, goc) = (&yc[..gc.len()], &goc[..gc.len()]);
                        let mut sum = T::zero();
                        for j in 0..gc.len() {
                            let d = if yc[j] > T::zero() {
                                goc[j]
                            } else {
                                alpha * goc[j]
                            };
                            gc[j] = d;
                            sum += d;
                        }
                        sum.to_f64()
                    })
                    .collect()
            })
            .collect();
        if self.with_bias {
            let mut totals = vec![0.0f64; channels];
            for (plane, parts) in sums.iter().enumerate() {
                totals[plane % channels] += parts.iter().sum::<f64>();
            }
            for (b, t) in gb.iter_mut().zip(totals) {
                *b = T::from_f64(t);
            }
        }
        out
    }
}

impl CustomOp2 for RectifyBackward {
    fn name(&self) -> &'static str {
        "bias-rectify-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "bias-rectify-backward";
        let dims = l1.dims();
        let len = l1.shape().elem_count() + if self.with_bias { dims[1] } else { 0 };
        with_float!(OP, s1, |F| {
            let y = contiguous::<F>(s1, l1, OP, "output")?;
            let g = contiguous::<F>(s2, l2, OP, "grad")?;
            Ok(storage(self.run(y, g, dims), len))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::common::testing::{check_grads, max_abs_diff, values, Rng};
    use candle_core::{DType, Device, Var};

    const RECTIFIERS: [Rectifier; 3] =
        [Rectifier::Identity, Rectifier::Relu, Rectifier::Leaky(0.2)];

    #[test]
    fn hand_computed() -> Result<()> {
        let x = Tensor::new(&[[[-1.0f64, 0.5], [2.0, -3.0]]], &Device::Cpu)?;
        let b = Tensor::new(&[0.5f64, -1.0], &Device::Cpu)?;
        let y = |f| bias_rectify(&x, Some(&b), f).map(|t| values(&t));
        assert_eq!(y(Rectifier::Identity)?, [-0.5, 1.0, 1.0, -4.0]);
        assert_eq!(y(Rectifier::Relu)?, [0.0, 1.0, 1.0, 0.0]);
        assert_eq!(y(Rectifier::Leaky(0.25))?, [-0.125, 1.0, 1.0, -1.0]);
        let no_bias = bias_rectify(&x, None, Rectifier::Relu)?;
        assert_eq!(values(&no_bias), [0.0, 0.5, 2.0, 0.0]);
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(40);
        for shape in [&[2, 3, 4, 5][..], &[1, 2, 3, 4, 5]] {
            let x = rng.tensor(shape, -1.0, 1.0, DType::F64);
            let b = rng.tensor(&[shape[1]], -0.5, 0.5, DType::F64);
            for f in RECTIFIERS {
                let with_bias = move |t: &[Tensor]| bias_rectify(&t[0], Some(&t[1]), f);
                check_grads(&with_bias, &[x.clone(), b.clone()], 1e-6, 1e-6, &[]);
                let plain = move |t: &[Tensor]| bias_rectify(&t[0], None, f);
                check_grads(&plain, std::slice::from_ref(&x), 1e-6, 1e-6, &[]);
            }
        }
    }

    #[test]
    fn matches_candle_primitives() -> Result<()> {
        let mut rng = Rng::new(41);
        let x = Var::from_tensor(&rng.tensor(&[2, 3, 5, 6, 7], -1.0, 1.0, DType::F32))?;
        let b = Var::from_tensor(&rng.tensor(&[3], -0.5, 0.5, DType::F32))?;
        let w = rng.tensor(&[2, 3, 5, 6, 7], -1.0, 1.0, DType::F32);
        let pre = x
            .as_tensor()
            .broadcast_add(&b.as_tensor().reshape((1, 3, 1, 1, 1))?)?;
        let reference = pre.maximum(&(&pre * 0.2)?)?;
        let ours = bias_rectify(x.as_tensor(), Some(b.as_tensor()), Rectifier::Leaky(0.2))?;
        assert!(max_abs_diff(&ours, &reference) < 1e-7);
        let g_ref = (reference * &w)?.sum_all()?.backward()?;
        let g_ours = (ours * &w)?.sum_all()?.backward()?;
        for v in [&x, &b] {
            let (a, r) = (g_ours.get(v.as_tensor()), g_ref.get(v.as_tensor()));
            let diff = max_abs_diff(a.expect("ours"), r.expect("reference"));
            assert!(diff < 1e-4, "{diff}");
        }
        Ok(())
    }

    #[test]
    fn bias_gradient_does_not_depend_on_the_thread_count() -> Result<()> {
        let mut rng = Rng::new(42);
        let x = Var::from_tensor(&rng.tensor(&[1, 2, 40, 40, 40], -1.0, 1.0, DType::F32))?;
        let b = Var::from_tensor(&rng.tensor(&[2], -0.5, 0.5, DType::F32))?;
        let run = |threads: usize| -> Vec<f64> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| {
                let y = bias_rectify(x.as_tensor(), Some(b.as_tensor()), Rectifier::Relu)?;
                let grads = y.sum_all()?.backward()?;
                Ok::<_, candle_core::Error>(values(grads.get(b.as_tensor()).expect("bias grad")))
            })
            .expect("backward")
        };
        assert_eq!(run(1), run(3));
        Ok(())
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Tensor::zeros((1, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let f = Rectifier::Relu;
        assert!(bias_rectify(&x, None, f).is_ok());
        let wrong_len = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        assert!(bias_rectify(&x, Some(&wrong_len), f).is_err());
        let wrong_dtype = Tensor::zeros(2, DType::F64, &Device::Cpu).unwrap();
        assert!(bias_rectify(&x, Some(&wrong_dtype), f).is_err());
        let flat = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(bias_rectify(&flat, None, f).is_err());
        assert!(bias_rectify(&x, None, Rectifier::Leaky(1.5)).is_err());
        let ints = Tensor::zeros((1, 2, 3), DType::U8, &Device::Cpu).unwrap();
        assert!(bias_rectify(&ints, None, f).is_err());
    }
}
