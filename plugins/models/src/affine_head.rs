//! The two affine parametrisations of the `dlir_affine` backbone, turned into DeepReg's
//! `(N, ndim + 1, ndim)` affine parameters (see [`BackboneOutput::Affine`]).
//!
//! Coordinates are voxel indices in the tensor's axis order (`p = (p_0, p_1[, p_2])`, axis 0
//! the rows in 2D), the centre of the image is `c_a = (n_a − 1) / 2` per axis (the middle of the
//! first and last voxel centres), and both heads describe a map
//! `q = T · (p − c) + t + c` from a fixed-image voxel `p` to the moving-image point `q`. With
//! DeepReg's row-vector convention `q = [p, 1] · θ` that is `θ = [Tᵀ; (t + c − T c)ᵀ]`.
//!
//! TorchIR's `AffineTransformer` takes the centre as `shape / 2` in `(H, W)` order but applies
//! it to `(x, y)` coordinates, so on a non-square image its rotation and scale centre is
//! `(x = H / 2, y = W / 2)`, off the image centre. Here each axis uses its own size.

use voxreg_framework::candle::{self, Tensor};

/// Which affine parametrisation the head predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AffineKind {
    /// TorchIR's bounded parameters, see [`bounded_theta`].
    Bounded,
    /// A free matrix in normalised coordinates, see [`raw_theta`].
    Raw,
    /// A translation in voxels, see [`translation_theta`].
    Translation,
}

impl AffineKind {
    /// Number of raw outputs the head predicts for `ndim` spatial axes: bounded 7 (2D) / 15
    /// (3D), raw `ndim · (ndim + 1)`, translation `ndim`.
    pub fn outputs(self, ndim: usize) -> usize {
        match self {
            Self::Bounded => ndim + rotations(ndim) + ndim + ndim * (ndim - 1),
            Self::Raw => ndim * (ndim + 1),
            Self::Translation => ndim,
        }
    }

    /// The affine parameters for the head's raw outputs on an image of spatial `size`.
    ///
    /// # Shapes
    /// * `raw`: `(N, self.outputs(ndim))`; output `(N, ndim + 1, ndim)`.
    pub fn theta(self, raw: &Tensor, size: &[usize]) -> candle::Result<Tensor> {
        match self {
            Self::Bounded => bounded_theta(raw, size),
            Self::Raw => raw_theta(raw, size),
            Self::Translation => translation_theta(raw, size),
        }
    }
}

/// Rotation angles: 1 in 2D, 3 in 3D.
fn rotations(ndim: usize) -> usize {
    if ndim == 2 {
        1
    } else {
        3
    }
}

fn check(raw: &Tensor, size: &[usize], outputs: usize, what: &str) -> candle::Result<usize> {
    let ndim = size.len();
    if !(2..=3).contains(&ndim) || size.contains(&0) {
        candle::bail!("{what}: the image size must have 2 or 3 positive axes, got {size:?}");
    }
    if raw.rank() != 2 || raw.dims()[1] != outputs {
        candle::bail!(
            "{what}: expected (N, {outputs}) raw parameters for a {ndim}D image, got {:?}",
            raw.dims()
        );
    }
    Ok(ndim)
}

/// The centre `(n_a − 1) / 2` of each axis as a `(1, 1, ndim)` tensor.
fn centre(size: &[usize], like: &Tensor) -> candle::Result<Tensor> {
    let c: Vec<f64> = size.iter().map(|&n| (n as f64 - 1.0) / 2.0).collect();
    Tensor::new(c.as_slice(), like.device())?
        .to_dtype(like.dtype())?
        .reshape((1, 1, size.len()))
}

/// `θ = [Tᵀ; (t + c − T c)ᵀ]` for `q = T (p − c) + t + c`.
///
/// # Shapes
/// * `t_mat`: `(N, d, d)`; `t_vec`: `(N, d)`; output `(N, d + 1, d)`.
fn theta_about_centre(t_mat: &Tensor, t_vec: &Tensor, size: &[usize]) -> candle::Result<Tensor> {
    let c = centre(size, t_vec)?;
    // (T c)_i = Σ_j T_ij c_j.
    let tc = t_mat.broadcast_mul(&c)?.sum(2)?;
    let offset = (t_vec.broadcast_add(&c.squeeze(0)?)? - tc)?;
    Tensor::cat(&[&t_mat.transpose(1, 2)?, &offset.unsqueeze(1)?], 1)?.contiguous()
}

/// A `(N, d, d)` matrix from its entries, each `(N,)`, row by row.
fn matrix(rows: &[Vec<Tensor>]) -> candle::Result<Tensor> {
    let rows = rows
        .iter()
        .map(|row| Tensor::stack(row, 1))
        .collect::<candle::Result<Vec<_>>>()?;
    Tensor::stack(&rows, 1)
}

/// Column `i` of `raw` as an `(N,)` tensor.
fn col(raw: &Tensor, i: usize) -> candle::Result<Tensor> {
    raw.narrow(1, i, 1)?.squeeze(1)
}

/// The rotation about axis `axis` by `angle` (`(N,)`): it turns the plane of the two other
/// axes `(a, b)` (in increasing order) by `[[cos, −sin], [sin, cos]]`. In 2D the one rotation
/// turns the plane `(0, 1)`.
fn rotation(ndim: usize, axis: Option<usize>, angle: &Tensor) -> candle::Result<Tensor> {
    let (cos, sin) = (angle.cos()?, angle.sin()?);
    let one = angle.ones_like()?;
    let zero = angle.zeros_like()?;
    let plane: Vec<usize> = (0..ndim).filter(|&a| Some(a) != axis).collect();
    let (a, b) = (plane[0], plane[1]);
    let rows = (0..ndim)
        .map(|i| {
            (0..ndim)
                .map(|j| {
                    if (i, j) == (a, b) {
                        sin.neg()
                    } else if (i, j) == (b, a) {
                        Ok(sin.clone())
                    } else if i == j && (i == a || i == b) {
                        Ok(cos.clone())
                    } else if i == j {
                        Ok(one.clone())
                    } else {
                        Ok(zero.clone())
                    }
                })
                .collect::<candle::Result<Vec<_>>>()
        })
        .collect::<candle::Result<Vec<_>>>()?;
    matrix(&rows)
}

/// TorchIR's bounded parametrisation. The raw outputs are, in order: translation `t` (`ndim`
/// values, voxels, unbounded), rotation angles `r` (1 in 2D, 3 in 3D), scales `s` (`ndim`) and
/// shears `h` (`ndim · (ndim − 1)`, the off-diagonal entries row by row). With
/// `ρ = tanh(r) · π/2`, `σ = 2^tanh(s)` and `η = tan(tanh(h) · π/4)`:
///
/// `T = diag(σ) · Sh(η) · R(ρ)`, `Sh = I` with the off-diagonals `η`,
/// `R = R(ρ)` in 2D (the plane `(0, 1)`) and `R_0(ρ_0) · R_1(ρ_1) · R_2(ρ_2)` in 3D (`R_k`
/// turns the plane of the two axes other than `k`), and `q = T (p − c) + t + c` about the true
/// centre `c`. Rotations stay within ±90°, scales within (½, 2), shear angles within ±45°;
/// all-zero outputs are the identity.
///
/// # Shapes
/// * `raw`: `(N, 7)` in 2D, `(N, 15)` in 3D; output `(N, ndim + 1, ndim)`.
pub(crate) fn bounded_theta(raw: &Tensor, size: &[usize]) -> candle::Result<Tensor> {
    let ndim = size.len();
    let outputs = AffineKind::Bounded.outputs(ndim.clamp(2, 3));
    let ndim = check(raw, size, outputs, "bounded affine head")?;
    let nrot = rotations(ndim);
    let translation = raw.narrow(1, 0, ndim)?;
    let angles = (raw.narrow(1, ndim, nrot)?.tanh()? * std::f64::consts::FRAC_PI_2)?;
    let scales = (raw.narrow(1, ndim + nrot, ndim)?.tanh()? * std::f64::consts::LN_2)?.exp()?;
    let shear_angles =
        (raw.narrow(1, 2 * ndim + nrot, ndim * (ndim - 1))?.tanh()? * std::f64::consts::FRAC_PI_4)?;
    let shears = (shear_angles.sin()? / shear_angles.cos()?)?;
    let one = col(raw, 0)?.ones_like()?;
    let mut next = 0;
    let mut shear_rows = Vec::with_capacity(ndim);
    for i in 0..ndim {
        let mut row = Vec::with_capacity(ndim);
        for j in 0..ndim {
            if i == j {
                row.push(one.clone());
            } else {
                row.push(col(&shears, next)?);
                next += 1;
            }
        }
        shear_rows.push(row);
    }
    let shear = matrix(&shear_rows)?;
    let rotation = if ndim == 2 {
        rotation(2, None, &col(&angles, 0)?)?
    } else {
        let mut r = rotation(3, Some(0), &col(&angles, 0)?)?;
        for axis in 1..3 {
            r = r.matmul(&rotation(3, Some(axis), &col(&angles, axis)?)?)?;
        }
        r
    };
    // diag(σ) · M scales row i of M by σ_i.
    let t_mat = scales
        .unsqueeze(2)?
        .broadcast_mul(&shear.matmul(&rotation)?)?;
    theta_about_centre(&t_mat, &translation, size)
}

/// The raw matrix head (the notebook's spatial-transformer head): the outputs are the
/// `ndim × (ndim + 1)` matrix `[A | b]` row by row, acting on normalised coordinates
/// `u_a = (p_a − c_a) / h_a` with `h_a = (n_a − 1) / 2` (1 for a one-voxel axis), so that `−1`
/// and `1` are the first and last voxel centres: `u' = A u + b`. In voxels that is
/// `q = H A H⁻¹ (p − c) + H b + c` with `H = diag(h)`. The head is unbounded; `[I | 0]` is the
/// identity.
///
/// # Shapes
/// * `raw`: `(N, ndim · (ndim + 1))`; output `(N, ndim + 1, ndim)`.
pub(crate) fn raw_theta(raw: &Tensor, size: &[usize]) -> candle::Result<Tensor> {
    let ndim = size.len();
    let outputs = AffineKind::Raw.outputs(ndim.clamp(2, 3));
    let ndim = check(raw, size, outputs, "raw affine head")?;
    let n = raw.dim(0)?;
    let ab = raw.reshape((n, ndim, ndim + 1))?;
    let a = ab.narrow(2, 0, ndim)?;
    let b = ab.narrow(2, ndim, 1)?.squeeze(2)?;
    let h: Vec<f64> = size
        .iter()
        .map(|&s| if s > 1 { (s as f64 - 1.0) / 2.0 } else { 1.0 })
        .collect();
    let h = Tensor::new(h.as_slice(), raw.device())?.to_dtype(raw.dtype())?;
    let rows = h.reshape((1, ndim, 1))?;
    let cols = h.reshape((1, 1, ndim))?.recip()?;
    let t_mat = a.broadcast_mul(&rows)?.broadcast_mul(&cols)?;
    let t_vec = b.broadcast_mul(&h.unsqueeze(0)?)?;
    theta_about_centre(&t_mat, &t_vec, size)
}

/// A pure translation: the outputs are `t` (`ndim` values, voxels) and `q = p + t`, i.e.
/// `θ = [I; tᵀ]`; zero outputs are the identity.
///
/// # Shapes
/// * `raw`: `(N, ndim)`; output `(N, ndim + 1, ndim)`.
pub(crate) fn translation_theta(raw: &Tensor, size: &[usize]) -> candle::Result<Tensor> {
    let ndim = size.len();
    let ndim = check(raw, size, ndim.clamp(2, 3), "translation head")?;
    let n = raw.dim(0)?;
    let eye = Tensor::eye(ndim, raw.dtype(), raw.device())?
        .unsqueeze(0)?
        .broadcast_as((n, ndim, ndim))?
        .contiguous()?;
    theta_about_centre(&eye, raw, size)
}

#[cfg(test)]
mod tests;
