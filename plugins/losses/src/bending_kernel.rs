//! Bending energy as one fused candle op with a hand-written CPU kernel that computes the
//! loss and, in the same pass, its gradient.
//!
//! With DeepReg's differences (see [`crate::deform`]) the second derivatives at voxel `x` of
//! the twice-cropped grid are the stencils `r_aa(x) = (u[x + 2e_a] − 2u[x] + u[x − 2e_a]) / 4`
//! and `r_ab(x) = (u[x + e_a + e_b] − u[x + e_a − e_b] − u[x − e_a + e_b] + u[x − e_a − e_b]) /
//! 4`, and `L_n = c Σ_{i, x} [Σ_a r_aa² + 2 Σ_{a<b} r_ab²]` with `c = 1 / (ndim · voxels of the
//! cropped grid)`. Per image (one DDF component of one batch element) the kernel computes the
//! stencil planes `r` one plane at a time and adds their squares to the loss. When the DDF
//! tracks gradients, it keeps the last five planes of `r` (zero outside the cropped grid)
//! and forms the gradient plane by plane with the adjoint stencils:
//! `∂L/∂u(y) = (c / 2) [Σ_a (r_aa(y − 2e_a) − 2 r_aa(y) + r_aa(y + 2e_a)) + 2 Σ_{a<b}
//! (r_ab(y − e_a − e_b) − r_ab(y − e_a + e_b) − r_ab(y + e_a − e_b) + r_ab(y + e_a + e_b))]`.
//! The op keeps that unit gradient; the backward pass scales it by the incoming gradient of
//! each batch element. No full-size intermediate is made. Work is split into rayon tasks over
//! images and ranges of planes (each task recomputes the two `r` planes beyond each end).

use rayon::prelude::*;
use voxreg_framework::candle::backend::BackendStorage;
use voxreg_framework::candle::{
    self, bail, CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType,
};

use crate::cpu::{data, float_dispatch, split_range};
use crate::saved::SavedGradient;
use crate::simd::simd_kernel;

/// Bending energy per batch element of a DDF `(N, ndim, *spatial)` (see the module docs;
/// the same value as [`crate::deform::BendingEnergy`]'s definition). Every spatial size must
/// be at least 5 (the caller checks).
///
/// # Shapes
/// * `ddf`: `(N, 2, H, W)` or `(N, 3, D, H, W)`, f32 or f64.
/// * output: `(N,)`.
pub(crate) fn bending_energy(ddf: &Tensor) -> candle::Result<Tensor> {
    let op = FusedBending {
        wants_grad: ddf.track_op(),
        saved: SavedGradient::default(),
    };
    ddf.contiguous()?.apply_op1(op)
}

/// The image seen by the kernel: `depth` planes of `rows × width` voxels; a 2D field `(H, W)`
/// is `H` planes of one row (the row axis then has no stencils).
#[derive(Debug, Clone, Copy)]
struct Geometry {
    depth: usize,
    rows: usize,
    width: usize,
    /// Whether the row axis is a spatial axis (3D).
    has_rows: bool,
}

/// A stencil term: the offset `(dz, dy, dx)` and its coefficient.
type Term = ([isize; 3], f64);

impl Geometry {
    fn new(spatial: &[usize]) -> candle::Result<Self> {
        match *spatial {
            [h, w] => Ok(Self {
                depth: h,
                rows: 1,
                width: w,
                has_rows: false,
            }),
            [d, h, w] => Ok(Self {
                depth: d,
                rows: h,
                width: w,
                has_rows: true,
            }),
            _ => bail!("bending: expected 2 or 3 spatial axes, got {spatial:?}"),
        }
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

    /// The voxels of the twice-cropped grid.
    fn cropped_voxels(&self) -> usize {
        let rows = if self.has_rows { self.rows - 4 } else { 1 };
        (self.depth - 4) * rows * (self.width - 4)
    }

    /// The unit vectors of the spatial axes as `(dz, dy, dx)`.
    fn axes(&self) -> Vec<[isize; 3]> {
        if self.has_rows {
            vec![[1, 0, 0], [0, 1, 0], [0, 0, 1]]
        } else {
            vec![[1, 0, 0], [0, 0, 1]]
        }
    }

    /// The pairs `(a, b)`, `a ≤ b`, of second derivatives: the stencil of each (with `1/4`)
    /// and its weight in the energy (1 on the diagonal, 2 off it).
    fn pairs(&self) -> Vec<(Vec<Term>, f64)> {
        let axes = self.axes();
        let shift = |a: [isize; 3], sa: isize, b: [isize; 3], sb: isize| {
            [0, 1, 2].map(|k| sa * a[k] + sb * b[k])
        };
        let mut pairs = Vec::new();
        for (i, &a) in axes.iter().enumerate() {
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

    /// The padding of `r` planes on the row and line axes, so that every adjoint offset
    /// (at most 2 voxels) stays inside them.
    fn padding(&self) -> (usize, usize) {
        (if self.has_rows { 2 } else { 0 }, 2)
    }

    /// The size of one padded `r` plane of one pair.
    fn padded_plane(&self) -> usize {
        let (py, px) = self.padding();
        (self.rows + 2 * py) * (self.width + 2 * px)
    }

    /// The rows with `r` values (inside the cropped grid).
    fn valid_rows(&self) -> std::ops::Range<usize> {
        if self.has_rows {
            2..self.rows - 2
        } else {
            0..1
        }
    }

    /// The planes with `r` values.
    fn valid_planes(&self) -> std::ops::Range<usize> {
        2..self.depth - 2
    }
}

/// Writes the padded `r` planes of plane `z` (inside the cropped grid; the rest of `r` stays
/// as it was, zero) and returns `Σ weight · r²` over the plane.
fn stencil_plane<T: WithDType>(
    u: &[T],
    geo: &Geometry,
    pairs: &[(Vec<Term>, f64)],
    z: usize,
    r: &mut [T],
) -> f64 {
    let (py, px) = geo.padding();
    let padded_width = geo.width + 2 * px;
    let padded = geo.padded_plane();
    let stride = [geo.plane() as isize, geo.width as isize, 1];
    let len = geo.width - 4;
    // Each pair's taps as offsets from the voxel and coefficients.
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
        let centre = z * geo.plane() + y * geo.width + 2;
        for (p, ((offsets, coefficients), (_, weight))) in taps.iter().zip(pairs).enumerate() {
            let start = p * padded + (y + py) * padded_width + 2 + px;
            let out = &mut r[start..start + len];
            total += weight * stencil_row(u, centre, offsets, coefficients, out);
        }
    }
    total
}

simd_kernel! {
    /// `out[i] = Σ_k c_k u[centre + i + offset_k]` over one row; returns `Σ out²` (in f64).
    fn stencil_row<T: WithDType>(
        u: &[T],
        centre: usize,
        offsets: &[isize],
        coefficients: &[T],
        out: &mut [T],
    ) -> f64 => stencil_row_inner
}

#[inline(always)]
fn stencil_row_inner<T: WithDType>(
    u: &[T],
    centre: usize,
    offsets: &[isize],
    coefficients: &[T],
    out: &mut [T],
) -> f64 {
    let n = out.len();
    let row = |k: usize| {
        let start = (centre as isize + offsets[k]) as usize;
        &u[start..start + n]
    };
    match *coefficients {
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
    sum_of_squares(out)
}

/// `Σ v²` in eight independent lanes (so that it vectorises), added up in f64.
#[inline(always)]
fn sum_of_squares<T: WithDType>(values: &[T]) -> f64 {
    // Index loops only: iterator adapters are not always inlined into the AVX2 wrapper.
    const LANES: usize = 8;
    let mut lanes = [T::from_f64(0.0); LANES];
    let whole = values.len() - values.len() % LANES;
    let mut base = 0;
    while base < whole {
        for lane in 0..LANES {
            let v = values[base + lane];
            lanes[lane] += v * v;
        }
        base += LANES;
    }
    let mut total = 0.0;
    for v in &values[whole..] {
        total += v.to_f64() * v.to_f64();
    }
    for lane in lanes {
        total += lane.to_f64();
    }
    total
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

/// `Σ weight · r²` over the planes `z0..z1` of one image (no gradient).
fn energy<T: WithDType>(u: &[T], geo: &Geometry, (z0, z1): (usize, usize)) -> f64 {
    let pairs = geo.pairs();
    let mut r = vec![T::from_f64(0.0); pairs.len() * geo.padded_plane()];
    let valid = geo.valid_planes();
    (z0.max(valid.start)..z1.min(valid.end))
        .map(|z| stencil_plane(u, geo, &pairs, z, &mut r))
        .sum()
}

/// `Σ weight · r²` over the planes `z0..z1` of one image and the gradient planes `z0..z1`
/// of `scale · Σ weight · r²` (written into `grad`, which holds those planes).
fn energy_and_gradient<T: WithDType>(
    u: &[T],
    geo: &Geometry,
    (z0, z1): (usize, usize),
    scale: f64,
    grad: &mut [T],
) -> f64 {
    const SLOTS: usize = 5;
    let pairs = geo.pairs();
    let padded = geo.padded_plane();
    let (py, px) = geo.padding();
    let padded_width = geo.width + 2 * px;
    let per_plane = pairs.len() * padded;
    let mut ring = vec![T::from_f64(0.0); SLOTS * per_plane];
    let mut held = [usize::MAX; SLOTS];
    let valid = geo.valid_planes();
    // The adjoint terms of every pair: its stencil (symmetric under negation) with the
    // pair's weight, and `scale / 2 · 2` folded into one factor below.
    let adjoint: Vec<Vec<Term>> = pairs
        .iter()
        .map(|(terms, weight)| terms.iter().map(|(d, c)| (*d, c * weight)).collect())
        .collect();
    let factor = T::from_f64(2.0 * scale);
    let mut total = 0.0;
    let mut next = z0.saturating_sub(2).max(valid.start);
    for z in z0..z1 {
        // Make the r planes z − 2 ..= z + 2 (those inside the cropped grid).
        while next < valid.end && next <= z + 2 {
            let slot = next % SLOTS;
            let planes = &mut ring[slot * per_plane..(slot + 1) * per_plane];
            let sum = stencil_plane(u, geo, &pairs, next, planes);
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
                let slot = source as usize % SLOTS;
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

/// `ddf` → the bending energy `(N,)` (see [`bending_energy`]); with `wants_grad` the forward
/// pass also computes `∂L_n/∂u` and keeps it for `bwd`.
struct FusedBending {
    wants_grad: bool,
    saved: SavedGradient,
}

impl CustomOp1 for FusedBending {
    fn name(&self) -> &'static str {
        "bending-energy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        if !(4..=5).contains(&dims.len()) {
            bail!("bending-energy: expected (N, ndim, *spatial), got {dims:?}");
        }
        let (n, components) = (dims[0], dims[1]);
        let geo = Geometry::new(&dims[2..])?;
        if dims[2..].iter().any(|size| *size < 5) {
            bail!("bending-energy: every spatial size must be at least 5, got {dims:?}");
        }
        let images = n * components;
        let (voxels, plane) = (geo.voxels(), geo.plane());
        let parts = rayon::current_num_threads().div_ceil(images);
        let ranges = split_range(geo.depth, parts, 8);
        let scale = 1.0 / (geo.ndim() * geo.cropped_voxels()) as f64;
        float_dispatch!("bending-energy", s.dtype(), T => {
            let u = data::<T>(s, l, "bending-energy")?;
            let mut tasks: Vec<(usize, (usize, usize), &mut [T])> = Vec::new();
            let mut grad = vec![T::from_f64(0.0); if self.wants_grad { u.len() } else { 0 }];
            let mut rest = &mut grad[..];
            for image in 0..images {
                for &(z0, z1) in &ranges {
                    let out: &mut [T] = if rest.is_empty() {
                        &mut []
                    } else {
                        let (head, tail) = std::mem::take(&mut rest).split_at_mut((z1 - z0) * plane);
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
                        energy(ui, &geo, range)
                    } else {
                        energy_and_gradient(ui, &geo, range, scale, out)
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
                let again = FusedBending {
                    wants_grad: true,
                    saved: SavedGradient::default(),
                };
                ddf.apply_op1_no_bwd(&again)?;
                again.saved.take_scaled(grad)
            }
        }
    }
}
