//! Test helpers: reproducible inputs, value comparison and a finite-difference gradient check.

use voxreg_framework::candle::{self, Device, Tensor, Var};

/// A reproducible f64 tensor with values in `[lo, hi)` (a 64-bit LCG; no global RNG state).
pub(crate) fn pseudo_random(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let count: usize = shape.iter().product();
    let values: Vec<f64> = (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            lo + (hi - lo) * unit
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Asserts that `actual` (any float dtype) equals `expected` within `tol` per element.
pub(crate) fn assert_close(actual: &Tensor, expected: &[f64], tol: f64) {
    let actual = actual
        .to_dtype(candle::DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() <= tol, "{actual:?} vs {expected:?}");
    }
}

/// `Σ_n (n + 1) · out[n]`: weighting each batch element differently makes the gradient check
/// see a loss that mixes batch elements.
fn weighted_total(out: &Tensor) -> candle::Result<Tensor> {
    let n = out.dim(0)?;
    let weights = Tensor::arange(1.0f64, (n + 1) as f64, out.device())?;
    (out * weights)?.sum_all()
}

/// Compares the autograd gradient of `Σ_n (n + 1) · f(x)[n]` with respect to the f64 tensor
/// `x` against central finite differences, `(F(x + h eᵢ) − F(x − h eᵢ)) / 2h` for every
/// element `i`, within `tol · max(1, |fd|)`.
pub(crate) fn check_gradient(f: impl Fn(&Tensor) -> candle::Result<Tensor>, x: &Tensor, tol: f64) {
    let var = Var::from_tensor(x).unwrap();
    let total = weighted_total(&f(var.as_tensor()).unwrap()).unwrap();
    let grads = total.backward().unwrap();
    let autograd = grads
        .get(var.as_tensor())
        .expect("the gradient reaches the input")
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let values = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let at = |values: Vec<f64>| -> f64 {
        let input = Tensor::from_vec(values, x.shape(), x.device()).unwrap();
        weighted_total(&f(&input).unwrap())
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let h = 1e-6;
    for (i, analytic) in autograd.iter().enumerate() {
        let mut plus = values.clone();
        plus[i] += h;
        let mut minus = values.clone();
        minus[i] -= h;
        let numeric = (at(plus) - at(minus)) / (2.0 * h);
        assert!(
            (analytic - numeric).abs() <= tol * numeric.abs().max(1.0),
            "element {i}: autograd {analytic} vs finite difference {numeric}"
        );
    }
}

/// Asserts that no gradient flows from `f(x)` to `x` (a thresholded, non-differentiable loss).
pub(crate) fn assert_no_gradient(f: impl Fn(&Tensor) -> candle::Result<Tensor>, x: &Tensor) {
    let var = Var::from_tensor(x).unwrap();
    let total = weighted_total(&f(var.as_tensor()).unwrap()).unwrap();
    let grads = total.backward().unwrap();
    if let Some(grad) = grads.get(var.as_tensor()) {
        let largest = grad
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(largest, 0.0);
    }
}

/// A built image or label loss called as the crate's own losses are: `(fixed, warped)`.
pub(crate) struct Pair(pub(crate) Box<dyn voxreg_framework::component::Loss>);

impl Pair {
    /// `loss(prediction = warped, target = fixed)`.
    pub(crate) fn loss(
        &self,
        fixed: &voxreg_framework::candle::Tensor,
        warped: &voxreg_framework::candle::Tensor,
    ) -> voxreg_framework::candle::Result<voxreg_framework::candle::Tensor> {
        self.0.loss(warped, Some(fixed))
    }
}

/// A built regulariser called with its one field.
pub(crate) struct Penal(pub(crate) Box<dyn voxreg_framework::component::Loss>);

impl Penal {
    /// `loss(field)`.
    pub(crate) fn loss(
        &self,
        ddf: &voxreg_framework::candle::Tensor,
    ) -> voxreg_framework::candle::Result<voxreg_framework::candle::Tensor> {
        self.0.loss(ddf, None)
    }
}
