//! Cubic B-spline fields: the dense displacement field of a grid of control-point
//! coefficients (DLIR's deformable stages).
//!
//! # Definition
//!
//! Along one axis of `n` voxels, `m` control points with spacing `s` sit at the centres of
//! the `m` cells of `s` voxels, `p_j = (j + ½)·s − ½` (where a network that pools a field
//! by `s` puts its outputs), and the field at voxel `x` is
//!
//! ```text
//! u(x) = Σ_j c_j · β₃((x − p_j) / s)
//! β₃(t) = 2/3 − t² + |t|³/2    for |t| < 1
//!         (2 − |t|)³ / 6        for 1 ≤ |t| < 2
//!         0                     otherwise
//! ```
//!
//! In 2D and 3D the basis is the tensor product over the axes, applied to each displacement
//! component alike: `u(x) = Σ_j c_j Π_a β₃((x_a − p_{j,a}) / s_a)`. Control points beyond the
//! grid count as zero (as TorchIR's transposed convolution pads with zeros), so the field
//! fades closer than `1.5·s − ½` voxels to a border. Where every supporting point exists
//! the basis sums to 1 and reproduces linear fields: constant coefficients give a
//! translation, `c_j = p_j` gives `u(x) = x`.
//!
//! The field is linear in the coefficients: it is computed as one matrix product per axis
//! (the `(n_a, m_a)` basis matrix), so its gradient is candle's own.
//!
//! Differences from TorchIR's `BsplineTransformer`, which samples the basis at
//! `t = linspace(1 − 1/s, 0, s)` in a transposed convolution with padding `int(3K/8)`: its
//! knots sit at an offset that depends on `s`; here they sit at the cells' centres for
//! every `s` (so where `s` divides `n`, flipping the coefficients flips the field).

use candle_core::{bail, DType, Device, Result, Tensor};

/// `β₃(t)`, the centred cubic B-spline (support `(−2, 2)`, `β₃(0) = 2/3`, `β₃(±1) = 1/6`).
pub fn cubic_bspline(t: f64) -> f64 {
    let t = t.abs();
    if t < 1.0 {
        2.0 / 3.0 - t * t + t * t * t / 2.0
    } else if t < 2.0 {
        (2.0 - t).powi(3) / 6.0
    } else {
        0.0
    }
}

/// The basis matrix of one axis, `(n, m)`: entry `[x, j] = β₃((x − p_j) / s)` with
/// `p_j = (j + ½)·s − ½`.
pub fn bspline_basis(
    n: usize,
    m: usize,
    spacing: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if spacing == 0 {
        bail!("bspline: the control-point spacing must be at least 1");
    }
    let s = spacing as f64;
    let values: Vec<f64> = (0..n)
        .flat_map(|x| {
            (0..m).map(move |j| {
                let centre = (j as f64 + 0.5) * s - 0.5;
                cubic_bspline((x as f64 - centre) / s)
            })
        })
        .collect();
    Tensor::from_vec(values, (n, m), device)?.to_dtype(dtype)
}

/// The control grid a network pooling by `spacing` gives on `shape`: `⌈n_a / s_a⌉` points
/// per axis, one per cell of `s_a` voxels.
pub fn bspline_grid_shape(shape: &[usize], spacing: &[usize]) -> Result<Vec<usize>> {
    if shape.len() != spacing.len() {
        bail!(
            "bspline: {} spacings for a {}D image",
            spacing.len(),
            shape.len()
        );
    }
    if spacing.contains(&0) {
        bail!("bspline: spacings must be at least 1, got {spacing:?}");
    }
    Ok(shape
        .iter()
        .zip(spacing)
        .map(|(n, s)| n.div_ceil(*s))
        .collect())
}

/// The dense displacement field of cubic B-spline `coefficients` on a grid of `shape` with
/// control points every `spacing` voxels (see the module docs for the formula).
///
/// # Shapes
/// * `coefficients`: `(N, C, *grid)`, float, `grid` of `ndim` = 2 or 3 axes (each ≥ 1).
/// * `shape`: `ndim` voxel counts; `spacing`: `ndim` spacings ≥ 1.
/// * output: `(N, C, *shape)`.
pub fn bspline_ddf(coefficients: &Tensor, shape: &[usize], spacing: &[usize]) -> Result<Tensor> {
    let ndim = shape.len();
    if !(2..=3).contains(&ndim) {
        bail!("bspline: a 2D or 3D image shape, got {shape:?}");
    }
    if coefficients.rank() != ndim + 2 {
        bail!(
            "bspline: coefficients (N, C, *grid) of rank {} for a {ndim}D image, got {:?}",
            ndim + 2,
            coefficients.dims()
        );
    }
    if spacing.len() != ndim || spacing.contains(&0) {
        bail!("bspline: {ndim} spacings of at least 1, got {spacing:?}");
    }
    if shape.contains(&0) {
        bail!("bspline: an empty image shape {shape:?}");
    }
    let grid = &coefficients.dims()[2..];
    if grid.contains(&0) {
        bail!("bspline: an empty control grid {grid:?}");
    }
    let (dtype, device) = (coefficients.dtype(), coefficients.device());
    // Contract the last axis with its basis, then rotate it to the front of the spatial
    // axes; after `ndim` rounds every axis is back in place.
    let mut field = coefficients.clone();
    for step in 0..ndim {
        let axis = ndim - 1 - step;
        let basis = bspline_basis(shape[axis], grid[axis], spacing[axis], dtype, device)?;
        let mut dims = field.dims().to_vec();
        let points = dims.pop().unwrap_or(1);
        let rows: usize = dims.iter().product();
        dims.push(shape[axis]);
        field = field
            .contiguous()?
            .reshape((rows, points))?
            .matmul(&basis.t()?)?
            .reshape(dims)?;
        let rank = field.rank();
        let mut order: Vec<usize> = (0..2).collect();
        order.push(rank - 1);
        order.extend(2..rank - 1);
        field = field.permute(order)?;
    }
    field.contiguous()
}

/// Coefficients bounded to `(−bound·s_a, bound·s_a)` per component by `tanh`:
/// `c'_a = tanh(c_a) · bound · s_a`. With `bound = 0.4` a cubic B-spline field is
/// invertible (DLIR's / TorchIR's diffeomorphic limit); component `a` displaces along axis
/// `a`, so it is bounded by that axis's spacing.
///
/// # Shapes
/// * `coefficients`: `(N, ndim, *grid)`; output: the same.
pub fn bounded_coefficients(
    coefficients: &Tensor,
    spacing: &[usize],
    bound: f64,
) -> Result<Tensor> {
    let ndim = spacing.len();
    if coefficients.rank() != ndim + 2 || coefficients.dim(1)? != ndim {
        bail!(
            "bspline: bounded coefficients are (N, {ndim}, *grid), got {:?}",
            coefficients.dims()
        );
    }
    let scales: Vec<f64> = spacing.iter().map(|s| bound * *s as f64).collect();
    let mut view = vec![1, ndim];
    view.extend(std::iter::repeat_n(1, ndim));
    let scales =
        Tensor::from_vec(scales, view, coefficients.device())?.to_dtype(coefficients.dtype())?;
    coefficients.tanh()?.broadcast_mul(&scales)
}

#[cfg(test)]
mod tests;
