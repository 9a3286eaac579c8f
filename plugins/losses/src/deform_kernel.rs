//! The deformation regularisers as fused candle ops with a hand-written CPU kernel that
//! computes the loss and, in the same pass, its gradient.
//!
//! Both regularisers are `L_n = c Σ_{i, x} Σ_p w_p f(r_p(x))` over the components `i` of the
//! DDF and the voxels `x` of a grid cropped by `k` voxels on every side, with `c = 1 / (ndim ·
//! voxels of the cropped grid)`, linear stencils `r_p` and a penalty `f` (see
//! [`crate::deform`] for DeepReg's differences):
//! * bending energy (`k = 2`, `f(r) = r²`): `r_aa(x) = (u[x + 2e_a] − 2u[x] + u[x − 2e_a]) / 4`
//!   with weight 1 and `r_ab(x) = (u[x + e_a + e_b] − u[x + e_a − e_b] − u[x − e_a + e_b] +
//!   u[x − e_a − e_b]) / 4` (`a < b`) with weight 2;
//! * gradient norm (`k = 1`, `f(r) = r²` or `|r|`): `r_a(x) = (u[x + e_a] − u[x − e_a]) / 2`
//!   with weight 1.
//!
//! Per image (one DDF component of one batch element) the kernel computes the stencil planes
//! one plane at a time and adds their penalties to the loss. When the DDF tracks gradients,
//! it keeps the last `2k + 1` planes of `f'(r_p)` (zero outside the cropped grid) and forms
//! the gradient plane by plane with the adjoint stencils, `∂L/∂u(y) = c Σ_p w_p Σ_d c_{p,d}
//! f'(r_p)(y − d)` for the taps `(d, c_{p,d})` of `r_p` (`f'(r) = 2r`, or `sign(r)` with
//! `sign(0) = 1` as candle's `abs`). The op keeps that unit gradient; the backward pass
//! scales it by the incoming gradient of each batch element. No full-size intermediate is
//! made. Work is split into rayon tasks over images and ranges of planes (each task
//! recomputes the `k` stencil planes beyond each end).

use rayon::prelude::*;
use voxreg_framework::candle::backend::BackendStorage;
use voxreg_framework::candle::{
    self, bail, CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType,
};

use crate::cpu::{data, float_dispatch, parts_per_image, split_range};
use crate::saved::SavedGradient;
use crate::simd::simd_kernel;

/// Which regulariser a [`FusedRegulariser`] computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stencils {
    /// Bending energy.
    Bending,
    /// Gradient norm, `|r|` when `l1`, else `r²`.
    Gradient {
        /// Absolute values instead of squares.
        l1: bool,
    },
}

/// The regulariser `stencils` per batch element of a DDF `(N, ndim, *spatial)` (see the
/// module docs; the same values as [`crate::deform`]'s definitions). Every spatial size must
/// be at least `2k + 1` (5 for bending, 3 for the gradient norm; the caller checks).
///
/// # Shapes
/// * `ddf`: `(N, 2, H, W)` or `(N, 3, D, H, W)`, f32 or f64.
/// * output: `(N,)`.
pub(crate) fn regularise(ddf: &Tensor, stencils: Stencils) -> candle::Result<Tensor> {
    let op = FusedRegulariser {
        stencils,
        wants_grad: ddf.track_op(),
        saved: SavedGradient::default(),
    };
    ddf.contiguous()?.apply_op1(op)
}

impl Stencils {
    /// The crop `k` on every side.
    fn crop(self) -> usize {
        match self {
            Self::Bending => 2,
            Self::Gradient { .. } => 1,
        }
    }

    /// Whether the penalty is `|r|` (else `r²`).
    fn absolute(self) -> bool {
        self == Self::Gradient { l1: true }
    }

    /// The stencils `r_p` (taps with their coefficients) and their weights `w_p`, for the unit
    /// vectors `axes` of the spatial axes as `(dz, dy, dx)`.
    fn pairs(self, axes: &[[isize; 3]]) -> Vec<(Vec<Term>, f64)> {
        let shift = |a: [isize; 3], sa: isize, b: [isize; 3], sb: isize| {
            [0, 1, 2].map(|k| sa * a[k] + sb * b[k])
        };
        let mut pairs = Vec::new();
        for (i, &a) in axes.iter().enumerate() {
            if let Self::Gradient { .. } = self {
                pairs.push((vec![(a, 0.5), (shift(a, -1, a, 0), -0.5)], 1.0));
                continue;
            }
            for &b in &axes[i..] {
                if a == b {
                    let terms = vec![
                        (shift(a, 2, b, 0), 0.25),
                        (shift(a, 0, b, 0), -0.5),
                        (shift(a, -2, b, 0), 0.25),
                    ];
                    pairs.push((terms, 1.0));
                } else {
                    let terms = vec![
                        (shift(a, 1, b, 1), 0.25),
                        (shift(a, 1, b, -1), -0.25),
                        (shift(a, -1, b, 1), -0.25),
                        (shift(a, -1, b, -1), 0.25),
                    ];
                    pairs.push((terms, 2.0));
                }
            }
        }
        pairs
    }
}

/// The image seen by the kernel: `depth` planes of `rows × width` voxels; a 2D field `(H, W)`
/// is `H` planes of one row (the row axis then has no stencils). `crop` is the `k` of the
/// regulariser.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    depth: usize,
    rows: usize,
    width: usize,
    /// Whether the row axis is a spatial axis (3D).
    has_rows: bool,
    crop: usize,
}

/// A stencil term: the offset `(dz, dy, dx)` and its coefficient.
type Term = ([isize; 3], f64);

impl Geometry {
    fn new(spatial: &[usize], crop: usize) -> candle::Result<Self> {
        let (depth, rows, width, has_rows) = match *spatial {
            [h, w] => (h, 1, w, false),
            [d, h, w] => (d, h, w, true),
            _ => bail!("regulariser: expected 2 or 3 spatial axes, got {spatial:?}"),
        };
        if spatial.iter().any(|size| *size < 2 * crop + 1) {
            bail!(
                "regulariser: every spatial size must be at least {}, got {spatial:?}",
                2 * crop + 1
            );
        }
        Ok(Self {
            depth,
            rows,
            width,
            has_rows,
            crop,
        })
    }

    fn ndim(&self) -> usize {
        if self.has_rows {
            3
        } else {
            2
        }
    }

    fn plane(&self) -> usize {
        self.rows * self.width
    }

    fn voxels(&self) -> usize {
        self.depth * self.plane()
    }

    /// The voxels of the cropped grid.
    fn cropped_voxels(&self) -> usize {
        let k = 2 * self.crop;
        let rows = if self.has_rows { self.rows - k } else { 1 };
        (self.depth - k) * rows * (self.width - k)
    }

    /// The unit vectors of the spatial axes as `(dz, dy, dx)`.
    fn axes(&self) -> Vec<[isize; 3]> {
        if self.has_rows {
            vec![[1, 0, 0], [0, 1, 0], [0, 0, 1]]
        } else {
            vec![[1, 0, 0], [0, 0, 1]]
        }
    }

    /// The padding of stencil planes on the row and line axes, so that every adjoint offset
    /// (at most `crop` voxels) stays inside them.
    fn padding(&self) -> (usize, usize) {
        (if self.has_rows { self.crop } else { 0 }, self.crop)
    }

    fn padded_width(&self) -> usize {
        self.width + 2 * self.padding().1
    }

    /// The size of one padded stencil plane of one stencil.
    fn padded_plane(&self) -> usize {
        (self.rows + 2 * self.padding().0) * self.padded_width()
    }

    /// The rows with stencil values (inside the cropped grid).
    fn valid_rows(&self) -> std::ops::Range<usize> {
        if self.has_rows {
            self.crop..self.rows - self.crop
        } else {
            0..1
        }
    }

    /// The planes with stencil values.
    fn valid_planes(&self) -> std::ops::Range<usize> {
        self.crop..self.depth - self.crop
    }
}

/// Writes the padded stencil planes of plane `z` (inside the cropped grid; the rest of `r`
/// stays as it was, zero), `f'(r_p)` instead of `r_p` for an absolute penalty when
/// `derivative`, and returns `Σ_p w_p f(r_p)` over the plane.
fn stencil_plane<T: WithDType>(
    u: &[T],
    geo: &Geometry,
    pairs: &[(Vec<Term>, f64)],
    (absolute, derivative): (bool, bool),
    z: usize,
    r: &mut [T],
) -> f64 {
    let (py, px) = geo.padding();
    let (padded_width, padded) = (geo.padded_width(), geo.padded_plane());
    let stride = [geo.plane() as isize, geo.width as isize, 1];
    let k = geo.crop;
    let len = geo.width - 2 * k;
    // Each stencil's taps as offsets from the voxel and coefficients.
    let taps: Vec<(Vec<isize>, Vec<T>)> = pairs
        .iter()
        .map(|(terms, _)| {
            terms
                .iter()
                .map(|(d, c)| (d[0] * stride[0] + d[1] * stride[1] + d[2], T::from_f64(*c)))
                .unzip()
        })
        .collect();
    let mut total = 0.0;
    for y in geo.valid_rows() {
        let centre = z * geo.plane() + y * geo.width + k;
        for (p, ((offsets, coefficients), (_, weight))) in taps.iter().zip(pairs).enumerate() {
            let start = p * padded + (y + py) * padded_width + k + px;
            let out = &mut r[start..start + len];
            let penalty = stencil_row(u, centre, offsets, coefficients, absolute, out);
            if absolute && derivative {
                signs(out);
            }
            total += weight * penalty;
        }
    }
    total
}

simd_kernel! {
    /// `out[i] = Σ_k c_k u[centre + i + offset_k]` over one row; returns `Σ f(out)` (in f64),
    /// `f` the square or, with `absolute`, the absolute value.
    fn stencil_row<T: WithDType>(
        u: &[T],
        centre: usize,
        offsets: &[isize],
        coefficients: &[T],
        absolute: bool,
        out: &mut [T],
    ) -> f64 => stencil_row_inner
}

#[inline(always)]
fn stencil_row_inner<T: WithDType>(
    u: &[T],
    centre: usize,
    offsets: &[isize],
    coefficients: &[T],
    absolute: bool,
    out: &mut [T],
) -> f64 {
    let n = out.len();
    let row = |k: usize| {
        let start = (centre as isize + offsets[k]) as usize;
        &u[start..start + n]
    };
    match *coefficients {
        [ca, cb] => {
            let (a, b) = (row(0), row(1));
            for i in 0..n {
                out[i] = ca * a[i] + cb * b[i];
            }
        }
        [ca, cb, cc] => {
            let (a, b, c) = (row(0), row(1), row(2));
            for i in 0..n {
                out[i] = ca * a[i] + cb * b[i] + cc * c[i];
            }
        }
        [ca, cb, cc, cd] => {
            let (a, b, c, d) = (row(0), row(1), row(2), row(3));
            for i in 0..n {
                out[i] = ca * a[i] + cb * b[i] + cc * c[i] + cd * d[i];
            }
        }
        _ => {
            out.fill(T::from_f64(0.0));
            for (k, &c) in coefficients.iter().enumerate() {
                let a = row(k);
                for i in 0..n {
                    out[i] += c * a[i];
                }
            }
        }
    }
    if absolute {
        sum_of(out, |v| {
            if v < T::from_f64(0.0) {
                T::from_f64(0.0) - v
            } else {
                v
            }
        })
    } else {
        sum_of(out, |v| v * v)
    }
}

/// `Σ f(v)` in eight independent lanes (so that it vectorises), added up in f64.
#[inline(always)]
fn sum_of<T: WithDType>(values: &[T], f: impl Fn(T) -> T) -> f64 {
    // Index loops only: iterator adapters are not always inlined into the AVX2 wrapper.
    const LANES: usize = 8;
    let mut lanes = [T::from_f64(0.0); LANES];
    let whole = values.len() - values.len() % LANES;
    let mut base = 0;
    while base < whole {
        let chunk = &values[base..base + LANES];
        for lane in 0..LANES {
            lanes[lane] += f(chunk[lane]);
        }
        base += LANES;
    }
    let mut total = 0.0;
    for v in &values[whole..] {
        total += f(*v).to_f64();
    }
    for lane in lanes {
        total += lane.to_f64();
    }
    total
}

/// `v ← sign(v)` with `sign(0) = 1` (the derivative candle's `abs` uses).
fn signs<T: WithDType>(values: &mut [T]) {
    let (one, zero) = (T::from_f64(1.0), T::from_f64(0.0));
    for v in values.iter_mut() {
        *v = if *v >= zero { one } else { zero - one };
    }
}

simd_kernel! {
    /// `out[i] = scale · Σ_k c_k ring[start_k + i]` over one row.
    fn gather_row<T: WithDType>(ring: &[T], taps: &[(usize, T)], scale: T, out: &mut [T]) =>
        gather_row_inner
}

#[inline(always)]
fn gather_row_inner<T: WithDType>(ring: &[T], taps: &[(usize, T)], scale: T, out: &mut [T]) {
    let n = out.len();
    out.fill(T::from_f64(0.0));
    for &(start, c) in taps {
        let row = &ring[start..start + n];
        for i in 0..n {
            out[i] += c * row[i];
        }
    }
    for v in out.iter_mut() {
        *v *= scale;
    }
}

/// `Σ_p w_p f(r_p)` over the planes `z0..z1` of one image (no gradient).
fn energy<T: WithDType>(
    u: &[T],
    geo: &Geometry,
    stencils: Stencils,
    (z0, z1): (usize, usize),
) -> f64 {
    let pairs = stencils.pairs(&geo.axes());
    let mut r = vec![T::from_f64(0.0); pairs.len() * geo.padded_plane()];
    let valid = geo.valid_planes();
    let penalty = (stencils.absolute(), false);
    (z0.max(valid.start)..z1.min(valid.end))
        .map(|z| stencil_plane(u, geo, &pairs, penalty, z, &mut r))
        .sum()
}

/// `Σ_p w_p f(r_p)` over the planes `z0..z1` of one image, and the gradient planes `z0..z1`
/// of `scale · Σ_p w_p f(r_p)` (written into `grad`, which holds those planes).
fn energy_and_gradient<T: WithDType>(
    u: &[T],
    geo: &Geometry,
    stencils: Stencils,
    (z0, z1): (usize, usize),
    scale: f64,
    grad: &mut [T],
) -> f64 {
    let k = geo.crop;
    let slots = 2 * k + 1;
    let pairs = stencils.pairs(&geo.axes());
    let (padded, padded_width) = (geo.padded_plane(), geo.padded_width());
    let (py, px) = geo.padding();
    let per_plane = pairs.len() * padded;
    let mut ring = vec![T::from_f64(0.0); slots * per_plane];
    let mut held = vec![usize::MAX; slots];
    let valid = geo.valid_planes();
    let absolute = stencils.absolute();
    // The adjoint taps `(−d, w_p c_{p,d})`; the ring holds `r` for a square penalty, whose
    // derivative's factor 2 goes into `factor`, and `sign(r)` for an absolute one.
    let adjoint: Vec<Vec<Term>> = pairs
        .iter()
        .map(|(terms, weight)| {
            terms
                .iter()
                .map(|(d, c)| (d.map(|v| -v), c * weight))
                .collect()
        })
        .collect();
    let factor = T::from_f64(if absolute { scale } else { 2.0 * scale });
    let mut total = 0.0;
    let mut next = z0.saturating_sub(k).max(valid.start);
    for z in z0..z1 {
        // Make the stencil planes z − k ..= z + k (those inside the cropped grid).
        while next < valid.end && next <= z + k {
            let slot = next % slots;
            let planes = &mut ring[slot * per_plane..(slot + 1) * per_plane];
            let sum = stencil_plane(u, geo, &pairs, (absolute, true), next, planes);
            if (z0..z1).contains(&next) {
                total += sum;
            }
            held[slot] = next;
            next += 1;
        }
        // The adjoint taps of plane z as ring positions of row 0 (row y adds y rows).
        let mut taps: Vec<(usize, T)> = Vec::with_capacity(21);
        for (p, terms) in adjoint.iter().enumerate() {
            for (d, c) in terms {
                let source = z as isize + d[0];
                if source < valid.start as isize || source >= valid.end as isize {
                    continue;
                }
                let slot = source as usize % slots;
                debug_assert_eq!(held[slot], source as usize);
                let row = (d[1] + py as isize) as usize;
                let start = slot * per_plane
                    + p * padded
                    + row * padded_width
                    + (px as isize + d[2]) as usize;
                taps.push((start, T::from_f64(*c)));
            }
        }
        for y in 0..geo.rows {
            let shifted: Vec<(usize, T)> = taps
                .iter()
                .map(|(start, c)| (start + y * padded_width, *c))
                .collect();
            let out_start = (z - z0) * geo.plane() + y * geo.width;
            gather_row(
                &ring,
                &shifted,
                factor,
                &mut grad[out_start..out_start + geo.width],
            );
        }
    }
    total
}

/// `ddf` → the regulariser `(N,)` (see [`regularise`]); with `wants_grad` the forward pass
/// also computes `∂L_n/∂u` and keeps it for `bwd`.
struct FusedRegulariser {
    stencils: Stencils,
    wants_grad: bool,
    saved: SavedGradient,
}

impl CustomOp1 for FusedRegulariser {
    fn name(&self) -> &'static str {
        "deform-regulariser"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        if !(4..=5).contains(&dims.len()) {
            bail!("regulariser: expected (N, ndim, *spatial), got {dims:?}");
        }
        let (n, components) = (dims[0], dims[1]);
        let geo = Geometry::new(&dims[2..], self.stencils.crop())?;
        let images = n * components;
        let (voxels, plane) = (geo.voxels(), geo.plane());
        let ranges = split_range(geo.depth, parts_per_image(images), 8);
        let scale = 1.0 / (geo.ndim() * geo.cropped_voxels()) as f64;
        let stencils = self.stencils;
        float_dispatch!("regulariser", s.dtype(), T => {
            let u = data::<T>(s, l, "regulariser")?;
            let mut grad = vec![T::from_f64(0.0); if self.wants_grad { u.len() } else { 0 }];
            let mut rest = &mut grad[..];
            let mut tasks: Vec<(usize, (usize, usize), &mut [T])> = Vec::new();
            for image in 0..images {
                for &(z0, z1) in &ranges {
                    let out: &mut [T] = if rest.is_empty() {
                        &mut []
                    } else {
                        let (head, tail) =
                            std::mem::take(&mut rest).split_at_mut((z1 - z0) * plane);
                        rest = tail;
                        head
                    };
                    tasks.push((image, (z0, z1), out));
                }
            }
            let partial: Vec<(usize, f64)> = tasks
                .into_par_iter()
                .map(|(image, range, out)| {
                    let ui = &u[image * voxels..(image + 1) * voxels];
                    let sum = if out.is_empty() {
                        energy(ui, &geo, stencils, range)
                    } else {
                        energy_and_gradient(ui, &geo, stencils, range, scale, out)
                    };
                    (image / components, sum)
                })
                .collect();
            if self.wants_grad {
                self.saved.store(T::to_cpu_storage_owned(grad), dims)?;
            }
            let mut loss = vec![0.0f64; n];
            for (b, sum) in partial {
                loss[b] += sum;
            }
            let loss: Vec<T> = loss.iter().map(|v| T::from_f64(v * scale)).collect();
            Ok((T::to_cpu_storage_owned(loss), Shape::from(n)))
        })
    }

    fn bwd(&self, ddf: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        match self.saved.take_scaled(grad)? {
            Some(scaled) => Ok(Some(scaled)),
            None => {
                // A second backward pass through this op: compute the gradient again.
                let again = FusedRegulariser {
                    stencils: self.stencils,
                    wants_grad: true,
                    saved: SavedGradient::default(),
                };
                ddf.apply_op1_no_bwd(&again)?;
                again.saved.take_scaled(grad)
            }
        }
    }
}
