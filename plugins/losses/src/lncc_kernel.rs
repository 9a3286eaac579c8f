//! LNCC as one fused candle op with a hand-written CPU kernel that computes the loss and, in
//! the same pass, its gradient.
//!
//! Per image: the five moments `t, p, t², p², tp` of each plane are window-summed within the
//! plane, then across planes by a [`SliceStream`], and the local NCC of each plane is added
//! to the loss as soon as its window sums exist, so no full-size buffer is ever made. When an
//! input tracks gradients, the same pass also forms, plane by plane, the gradient of the NCC
//! with respect to the five sums, `G_k = ∂L/∂S_k` for the unit upstream gradient (`∂L_n/∂ncc
//! = −1 / (C · voxels)`); the window sums' adjoint (the flipped window) is applied to the
//! `G_k` within each plane and by a second stream across planes, and
//! `∂L/∂t = Wᵀ G₀ + 2t Wᵀ G₂ + p Wᵀ G₄`, `∂L/∂p = Wᵀ G₁ + 2p Wᵀ G₃ + t Wᵀ G₄`. These
//! full-size unit gradients are kept by the op; the backward pass only scales them by the
//! incoming gradient of each batch element (the loss is linear in it). Only the gradients of
//! inputs that track gradients are computed, so evaluating the loss without gradients costs
//! the forward part only. Work is split into rayon tasks over images and ranges of planes
//! (each task recomputes the few planes its window needs beyond its range); arithmetic is in
//! f64 whatever the input dtype.

use rayon::prelude::*;
use voxreg_framework::candle::backend::BackendStorage;
use voxreg_framework::candle::{
    self, bail, CpuStorage, CustomOp2, Layout, Shape, Tensor, WithDType,
};

use crate::cpu::{data, float_dispatch, parts_per_image, split_range};
use crate::saved::SavedGradient;
use crate::simd::simd_kernel;
use crate::window::{filter_plane, SliceStream, Window};

/// The constants of the local NCC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NccParams {
    /// The window volume `V = (Σ k)^ndim`.
    pub(crate) volume: f64,
    /// Added to the numerator.
    pub(crate) smooth_nr: f64,
    /// Added to the denominator.
    pub(crate) smooth_dr: f64,
}

/// `−mean_{c, x} ncc(x)` per batch element for `fixed` and `warped` `(N, C, *spatial)` (2 or
/// 3 spatial axes), with the separable window `kernel` on every spatial axis (zero padding):
/// for the window sums `S[·]`, `cross = S[tp] − S[t] S[p] / V`,
/// `var_t = max(S[t²] − S[t]² / V, 0)`, `var_p` likewise and
/// `ncc = (cross² + smooth_nr) / (var_t var_p + smooth_dr)`. The gradient of `max(x, 0)` is
/// passed where `x ≥ 0`, as TensorFlow's `maximum`.
///
/// # Shapes
/// * `fixed`, `warped`: `(N, C, H, W)` or `(N, C, D, H, W)`, f32 or f64, the same.
/// * output: `(N,)`.
pub(crate) fn lncc_loss(
    fixed: &Tensor,
    warped: &Tensor,
    kernel: &[f64],
    params: NccParams,
) -> candle::Result<Tensor> {
    let op = FusedLncc {
        kernel: kernel.to_vec(),
        params,
        wants_t: fixed.track_op(),
        wants_p: warped.track_op(),
        saved_t: SavedGradient::default(),
        saved_p: SavedGradient::default(),
    };
    fixed.contiguous()?.apply_op2(&warped.contiguous()?, op)
}

/// An image as the kernel walks it: `depth` planes (the streamed axis, split among tasks) of
/// `rows × width` voxels, and the window along each of the three axes. A 2D image `(H, W)`
/// is `H` planes of one row of `W`.
#[derive(Debug, Clone)]
struct Geometry {
    depth: usize,
    rows: usize,
    width: usize,
    across: Window,
    down: Window,
    along: Window,
}

impl Geometry {
    fn new(spatial: &[usize], kernel: &[f64]) -> candle::Result<Self> {
        let window = Window::new(kernel.to_vec());
        match *spatial {
            [h, w] => Ok(Self {
                depth: h,
                rows: 1,
                width: w,
                across: window.clone(),
                down: Window::identity(),
                along: window,
            }),
            [d, h, w] => Ok(Self {
                depth: d,
                rows: h,
                width: w,
                across: window.clone(),
                down: window.clone(),
                along: window,
            }),
            _ => bail!("lncc: expected 2 or 3 spatial axes, got {spatial:?}"),
        }
    }

    fn plane(&self) -> usize {
        self.rows * self.width
    }

    fn voxels(&self) -> usize {
        self.depth * self.plane()
    }

    fn adjoint(&self) -> Self {
        Self {
            across: self.across.adjoint(),
            down: self.down.adjoint(),
            along: self.along.adjoint(),
            ..*self
        }
    }

    /// The in-plane window sums of the five moments of one plane of `t` and `p`, channel
    /// blocks of `out`. `moments` holds five planes, `scratch` one.
    fn plane_moments<T: WithDType>(
        &self,
        t: &[T],
        p: &[T],
        moments: &mut [f64],
        scratch: &mut [f64],
        out: &mut [f64],
    ) {
        let plane = self.plane();
        moments_of(t, p, moments);
        for (src, dst) in moments.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
            filter_plane(&self.down, &self.along, src, dst, scratch, self.width);
        }
    }
}

simd_kernel! {
    /// The five moment planes `t, p, t², p², tp` of one plane of `t` and `p`, in f64.
    fn moments_of<T: WithDType>(t: &[T], p: &[T], moments: &mut [f64]) => moments_inner
}

#[inline(always)]
fn moments_inner<T: WithDType>(t: &[T], p: &[T], moments: &mut [f64]) {
    let plane = t.len();
    let (mt, rest) = moments.split_at_mut(plane);
    let (mp, rest) = rest.split_at_mut(plane);
    let (mtt, rest) = rest.split_at_mut(plane);
    let (mpp, mtp) = rest.split_at_mut(plane);
    for i in 0..plane {
        let (x, y) = (t[i].to_f64(), p[i].to_f64());
        mt[i] = x;
        mp[i] = y;
        mtt[i] = x * x;
        mpp[i] = y * y;
        mtp[i] = x * y;
    }
}

simd_kernel! {
    /// `Σ_i ncc(i)` over one plane of window sums (five channel blocks).
    fn plane_ncc(sums: &[f64], params: NccParams) -> f64 => plane_ncc_inner
}

#[inline(always)]
#[allow(clippy::needless_range_loop)] // the lane index is the point: eight independent sums
fn plane_ncc_inner(sums: &[f64], params: NccParams) -> f64 {
    // Index loops only: iterator adapters are not always inlined into the AVX2 wrapper.
    const LANES: usize = 8;
    let plane = sums.len() / 5;
    let mut lanes = [0.0; LANES];
    let whole = plane - plane % LANES;
    let mut base = 0;
    let (st, rest) = sums.split_at(plane);
    let (sp, rest) = rest.split_at(plane);
    let (stt, rest) = rest.split_at(plane);
    let (spp, stp) = rest.split_at(plane);
    while base < whole {
        // Fixed-length chunks, so that the lanes carry no bounds checks and vectorise.
        let at = base..base + LANES;
        let (a, b, c) = (&st[at.clone()], &sp[at.clone()], &stt[at.clone()]);
        let (d, e) = (&spp[at.clone()], &stp[at]);
        for lane in 0..LANES {
            lanes[lane] += ncc([a[lane], b[lane], c[lane], d[lane], e[lane]], params);
        }
        base += LANES;
    }
    let mut total = 0.0;
    for i in whole..plane {
        total += ncc(sums_at(sums, plane, i), params);
    }
    for lane in lanes {
        total += lane;
    }
    total
}

simd_kernel! {
    /// The gradients `g ∂ncc/∂S_k` of one plane, channel blocks of `grads` (five, as `sums`).
    fn plane_ncc_grad(sums: &[f64], g: f64, params: NccParams, grads: &mut [f64]) =>
        plane_ncc_grad_inner
}

#[inline(always)]
fn plane_ncc_grad_inner(sums: &[f64], g: f64, params: NccParams, grads: &mut [f64]) {
    let plane = sums.len() / 5;
    let (g0, rest) = grads.split_at_mut(plane);
    let (g1, rest) = rest.split_at_mut(plane);
    let (g2, rest) = rest.split_at_mut(plane);
    let (g3, g4) = rest.split_at_mut(plane);
    let g4 = &mut g4[..plane];
    for i in 0..plane {
        let d = ncc_grad(sums_at(sums, plane, i), g, params);
        g0[i] = d[0];
        g1[i] = d[1];
        g2[i] = d[2];
        g3[i] = d[3];
        g4[i] = d[4];
    }
}

simd_kernel! {
    /// One plane of an input gradient: `out = a + 2 own · b + other · c`
    /// (`dL/dt = Wᵀ G₀ + 2t Wᵀ G₂ + p Wᵀ G₄` and likewise for `p`).
    fn plane_input_grad<T: WithDType>(
        own: &[T],
        other: &[T],
        sums: [&[f64]; 3],
        out: &mut [T],
    ) => plane_input_grad_inner
}

#[inline(always)]
fn plane_input_grad_inner<T: WithDType>(own: &[T], other: &[T], sums: [&[f64]; 3], out: &mut [T]) {
    let [a, b, c] = sums;
    for i in 0..out.len() {
        let (x, y) = (own[i].to_f64(), other[i].to_f64());
        out[i] = T::from_f64(a[i] + 2.0 * x * b[i] + y * c[i]);
    }
}

/// The five window sums at voxel `i` of a plane of `plane` voxels.
#[inline(always)]
fn sums_at(sums: &[f64], plane: usize, i: usize) -> [f64; 5] {
    [
        sums[i],
        sums[plane + i],
        sums[2 * plane + i],
        sums[3 * plane + i],
        sums[4 * plane + i],
    ]
}

/// The local NCC from the window sums `[S t, S p, S t², S p², S tp]`.
#[inline(always)]
fn ncc(s: [f64; 5], c: NccParams) -> f64 {
    let [st, sp, stt, spp, stp] = s;
    let (t_avg, p_avg) = (st / c.volume, sp / c.volume);
    let cross = stp - p_avg * st;
    let t_var = (stt - t_avg * st).max(0.0);
    let p_var = (spp - p_avg * sp).max(0.0);
    (cross * cross + c.smooth_nr) / (t_var * p_var + c.smooth_dr)
}

/// `g · ∂ncc/∂S_k` for the five window sums.
#[inline(always)]
fn ncc_grad(s: [f64; 5], g: f64, c: NccParams) -> [f64; 5] {
    let [st, sp, stt, spp, stp] = s;
    let (t_avg, p_avg) = (st / c.volume, sp / c.volume);
    let cross = stp - p_avg * st;
    let (t_raw, p_raw) = (stt - t_avg * st, spp - p_avg * sp);
    let (t_var, p_var) = (t_raw.max(0.0), p_raw.max(0.0));
    let denominator = t_var * p_var + c.smooth_dr;
    let ratio = (cross * cross + c.smooth_nr) / denominator;
    let d_cross = g * 2.0 * cross / denominator;
    let d_tvar = if t_raw >= 0.0 {
        -g * ratio * p_var / denominator
    } else {
        0.0
    };
    let d_pvar = if p_raw >= 0.0 {
        -g * ratio * t_var / denominator
    } else {
        0.0
    };
    [
        -d_cross * p_avg - 2.0 * d_tvar * t_avg,
        -d_cross * t_avg - 2.0 * d_pvar * p_avg,
        d_tvar,
        d_pvar,
        d_cross,
    ]
}

/// The planes each task covers: ranges of at least twice the window length, as many per
/// image as make the tasks divide evenly among the rayon threads (each range recomputes up
/// to two window lengths of planes beyond its ends).
fn plane_ranges(geo: &Geometry, images: usize, window: usize) -> Vec<(usize, usize)> {
    split_range(geo.depth, parts_per_image(images), 2 * window)
}

/// `Σ_x ncc(x)` over planes `z0..z1` of one image.
fn ncc_sum<T: WithDType>(
    t: &[T],
    p: &[T],
    geo: &Geometry,
    (z0, z1): (usize, usize),
    params: NccParams,
) -> f64 {
    let plane = geo.plane();
    let mut moments = vec![0.0; 5 * plane];
    let mut scratch = vec![0.0; plane];
    let mut stream = SliceStream::new(geo.across.clone(), geo.depth, 5 * plane);
    let mut total = 0.0;
    for z in z0..z1 {
        let sums = stream.advance(z, |j, out| {
            let at = j * plane..(j + 1) * plane;
            geo.plane_moments(&t[at.clone()], &p[at], &mut moments, &mut scratch, out);
        });
        total += plane_ncc(sums, params);
    }
    total
}

/// One task of the loss-and-gradient pass: planes `z0..z1` of one image, and the output
/// planes of the unit gradients `∂L_n/∂t` and `∂L_n/∂p` (empty when not wanted).
struct GradTask<'a, T> {
    image: usize,
    planes: (usize, usize),
    dt: &'a mut [T],
    dp: &'a mut [T],
}

/// `Σ_x ncc(x)` over planes `z0..z1` of one image, and the gradients of the loss with respect
/// to `t` and/or `p` there for `g = ∂L/∂ncc` at every voxel (see the module docs).
fn ncc_sum_and_gradient<T: WithDType>(
    t: &[T],
    p: &[T],
    geo: &Geometry,
    g: f64,
    params: NccParams,
    task: GradTask<'_, T>,
) -> f64 {
    let plane = geo.plane();
    let (wants_t, wants_p) = (!task.dt.is_empty(), !task.dp.is_empty());
    // The sums' gradients needed: G₀, G₂, G₄ for t; G₁, G₃, G₄ for p.
    let channels: Vec<usize> = (0..5)
        .filter(|k| (wants_t && k % 2 == 0) || (wants_p && (k % 2 == 1 || *k == 4)))
        .collect();
    let slot = |k: usize| channels.iter().position(|c| *c == k).unwrap_or(0);
    let adjoint = geo.adjoint();
    let mut moments = vec![0.0; 5 * plane];
    let mut scratch = vec![0.0; plane];
    let mut grads = vec![0.0; 5 * plane];
    let mut sums_stream = SliceStream::new(geo.across.clone(), geo.depth, 5 * plane);
    let mut grad_stream =
        SliceStream::new(adjoint.across.clone(), geo.depth, channels.len() * plane);
    let (z0, z1) = task.planes;
    let mut total = 0.0;
    for z in z0..z1 {
        let back = grad_stream.advance(z, |j, out| {
            let sums = sums_stream.advance(j, |k, out| {
                let at = k * plane..(k + 1) * plane;
                geo.plane_moments(&t[at.clone()], &p[at], &mut moments, &mut scratch, out);
            });
            // Planes outside the task's range are its neighbours' to count.
            if (z0..z1).contains(&j) {
                total += plane_ncc(sums, params);
            }
            plane_ncc_grad(sums, g, params, &mut grads);
            for (&k, dst) in channels.iter().zip(out.chunks_exact_mut(plane)) {
                let src = &grads[k * plane..(k + 1) * plane];
                filter_plane(
                    &adjoint.down,
                    &adjoint.along,
                    src,
                    dst,
                    &mut scratch,
                    geo.width,
                );
            }
        });
        let at = |k: usize| &back[slot(k) * plane..(slot(k) + 1) * plane];
        let offset = z * plane;
        let local = (z - z0) * plane..(z - z0 + 1) * plane;
        let (tz, pz) = (&t[offset..offset + plane], &p[offset..offset + plane]);
        if wants_t {
            plane_input_grad(tz, pz, [at(0), at(2), at(4)], &mut task.dt[local.clone()]);
        }
        if wants_p {
            plane_input_grad(pz, tz, [at(1), at(3), at(4)], &mut task.dp[local]);
        }
    }
    total
}

/// The first `len` values of `rest` (nothing when `rest` is empty), leaving the others there.
fn take_front<'a, T>(rest: &mut &'a mut [T], len: usize) -> &'a mut [T] {
    if rest.is_empty() {
        return &mut [];
    }
    let (head, tail) = std::mem::take(rest).split_at_mut(len);
    *rest = tail;
    head
}

/// Checks two inputs of one shape `(N, C, *spatial)` and returns `(N, C, spatial)`.
fn image_dims<'a>(
    l1: &'a Layout,
    l2: &Layout,
    op: &str,
) -> candle::Result<(usize, usize, &'a [usize])> {
    let dims = l1.dims();
    if dims != l2.dims() || !(4..=5).contains(&dims.len()) {
        bail!(
            "{op}: shapes {dims:?} and {:?} must match and have 2 or 3 spatial axes",
            l2.dims()
        );
    }
    Ok((dims[0], dims[1], &dims[2..]))
}

/// `(t, p)` → the LNCC loss `(N,)` (see [`lncc_loss`]). When `wants_t` or `wants_p`, the
/// forward pass also computes `∂L_n/∂t` or `∂L_n/∂p` and keeps them for `bwd`, which only
/// scales them by the incoming gradient.
struct FusedLncc {
    kernel: Vec<f64>,
    params: NccParams,
    wants_t: bool,
    wants_p: bool,
    saved_t: SavedGradient,
    saved_p: SavedGradient,
}

impl FusedLncc {
    /// The loss only, one rayon task per image and range of planes.
    fn loss<T: WithDType>(
        &self,
        t: &[T],
        p: &[T],
        geo: &Geometry,
        images: usize,
    ) -> Vec<(usize, f64)> {
        let voxels = geo.voxels();
        let ranges = plane_ranges(geo, images, self.kernel.len());
        (0..images)
            .flat_map(|image| ranges.iter().map(move |r| (image, *r)))
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(image, range)| {
                let at = image * voxels..(image + 1) * voxels;
                (
                    image,
                    ncc_sum(&t[at.clone()], &p[at], geo, range, self.params),
                )
            })
            .collect()
    }

    /// The loss and the unit gradients (`g = −1 / (C · voxels)` per voxel), written into
    /// `dt` and `dp` (each empty or the size of the inputs).
    fn loss_and_gradients<T: WithDType>(
        &self,
        t: &[T],
        p: &[T],
        geo: &Geometry,
        channels: usize,
        (dt, dp): (&mut [T], &mut [T]),
    ) -> Vec<(usize, f64)> {
        let (voxels, plane) = (geo.voxels(), geo.plane());
        let images = t.len() / voxels;
        let ranges = plane_ranges(geo, images, self.kernel.len());
        let (mut dt_rest, mut dp_rest) = (dt, dp);
        let mut tasks = Vec::new();
        for image in 0..images {
            for &(z0, z1) in &ranges {
                let len = (z1 - z0) * plane;
                tasks.push(GradTask {
                    image,
                    planes: (z0, z1),
                    dt: take_front(&mut dt_rest, len),
                    dp: take_front(&mut dp_rest, len),
                });
            }
        }
        let g = -1.0 / (channels * voxels) as f64;
        tasks
            .into_par_iter()
            .map(|task| {
                let image = task.image;
                let at = image * voxels..(image + 1) * voxels;
                let sum = ncc_sum_and_gradient(&t[at.clone()], &p[at], geo, g, self.params, task);
                (image, sum)
            })
            .collect()
    }
}

impl CustomOp2 for FusedLncc {
    fn name(&self) -> &'static str {
        "lncc"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (n, c, spatial) = image_dims(l1, l2, "lncc")?;
        let geo = Geometry::new(spatial, &self.kernel)?;
        let voxels = geo.voxels();
        float_dispatch!("lncc", s1.dtype(), T => {
            let t = data::<T>(s1, l1, "lncc")?;
            let p = data::<T>(s2, l2, "lncc")?;
            let partial = if self.wants_t || self.wants_p {
                let size = |wanted: bool| if wanted { t.len() } else { 0 };
                let mut dt = vec![T::from_f64(0.0); size(self.wants_t)];
                let mut dp = vec![T::from_f64(0.0); size(self.wants_p)];
                let partial = self.loss_and_gradients(t, p, &geo, c, (&mut dt, &mut dp));
                if self.wants_t {
                    self.saved_t.store(T::to_cpu_storage_owned(dt), l1.dims())?;
                }
                if self.wants_p {
                    self.saved_p.store(T::to_cpu_storage_owned(dp), l1.dims())?;
                }
                partial
            } else {
                self.loss(t, p, &geo, n * c)
            };
            let mut loss = vec![0.0f64; n];
            for (image, sum) in partial {
                loss[image / c] += sum;
            }
            let scale = -1.0 / (c * voxels) as f64;
            let loss: Vec<T> = loss.iter().map(|v| T::from_f64(v * scale)).collect();
            Ok((T::to_cpu_storage_owned(loss), Shape::from(n)))
        })
    }

    fn bwd(
        &self,
        t: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        let dt = self.saved_t.take_scaled(grad)?;
        let dp = self.saved_p.take_scaled(grad)?;
        if (self.wants_t && dt.is_none()) || (self.wants_p && dp.is_none()) {
            // A second backward pass through this op: compute the gradients again.
            let again = FusedLncc {
                kernel: self.kernel.clone(),
                params: self.params,
                wants_t: self.wants_t,
                wants_p: self.wants_p,
                saved_t: SavedGradient::default(),
                saved_p: SavedGradient::default(),
            };
            t.apply_op2_no_bwd(p, &again)?;
            return Ok((
                again.saved_t.take_scaled(grad)?,
                again.saved_p.take_scaled(grad)?,
            ));
        }
        Ok((dt, dp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lncc::composed_lncc;
    use crate::testing::{check_gradient, pseudo_random};
    use voxreg_framework::candle::{DType, Var};
    use voxreg_framework::ops::{gaussian_kernel_sized, rectangular_kernel, triangular_kernel};

    fn params(kernel: &[f64], ndim: i32) -> NccParams {
        NccParams {
            volume: kernel.iter().sum::<f64>().powi(ndim),
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
        }
    }

    fn kernels() -> Vec<Vec<f64>> {
        vec![
            rectangular_kernel(3),
            rectangular_kernel(4),
            rectangular_kernel(9),
            triangular_kernel(5),
            gaussian_kernel_sized(3),
            gaussian_kernel_sized(6),
        ]
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        d.max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    fn largest(a: &Tensor) -> f64 {
        max_diff(a, &a.zeros_like().unwrap()).max(1e-12)
    }

    /// The loss and both input gradients of `f` under the weighted total `Σ_n (n + 1) L_n`.
    fn loss_and_grads(
        f: impl Fn(&Tensor, &Tensor) -> candle::Result<Tensor>,
        t: &Tensor,
        p: &Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        let (tv, pv) = (Var::from_tensor(t).unwrap(), Var::from_tensor(p).unwrap());
        let loss = f(tv.as_tensor(), pv.as_tensor()).unwrap();
        let n = loss.dim(0).unwrap();
        let weights = Tensor::arange(1.0, (n + 1) as f64, &candle::Device::Cpu)
            .unwrap()
            .to_dtype(loss.dtype())
            .unwrap();
        let grads = (&loss * weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gt = grads.get(tv.as_tensor()).unwrap().clone();
        let gp = grads.get(pv.as_tensor()).unwrap().clone();
        (loss, gt, gp)
    }

    #[test]
    fn the_fused_loss_and_gradients_match_the_composed_ops() {
        let shapes: [&[usize]; 4] = [
            &[2, 1, 7, 5],
            &[1, 2, 9, 11],
            &[2, 1, 5, 6, 7],
            &[1, 2, 11, 3, 8],
        ];
        for (seed, shape) in shapes.iter().enumerate() {
            let ndim = shape.len() as i32 - 2;
            let t = pseudo_random(shape, 0.0, 1.0, 2 * seed as u64);
            // The first third of `p` is constant: zero variance, the clamped branch.
            let p = pseudo_random(shape, -1.0, 2.0, 2 * seed as u64 + 1);
            let mut values = p.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let third = values.len() / 3;
            values[..third].fill(0.5);
            let p = Tensor::from_vec(values, *shape, &candle::Device::Cpu).unwrap();
            for kernel in kernels() {
                let c = params(&kernel, ndim);
                let (la, ta, pa) = loss_and_grads(|t, p| lncc_loss(t, p, &kernel, c), &t, &p);
                let (lb, tb, pb) = loss_and_grads(|t, p| composed_lncc(t, p, &kernel, c), &t, &p);
                let what = format!("{shape:?} {kernel:?}");
                assert!(max_diff(&la, &lb) < 1e-10 * largest(&lb), "loss {what}");
                assert!(max_diff(&ta, &tb) < 1e-7 * largest(&tb), "dt {what}");
                assert!(max_diff(&pa, &pb) < 1e-7 * largest(&pb), "dp {what}");
            }
        }
    }

    #[test]
    fn f32_inputs_and_a_gradient_for_one_input_only() -> candle::Result<()> {
        let kernel = triangular_kernel(3);
        let c = params(&kernel, 3);
        let t = pseudo_random(&[2, 1, 6, 5, 7], 0.0, 1.0, 30).to_dtype(DType::F32)?;
        let p = pseudo_random(&[2, 1, 6, 5, 7], 0.0, 1.0, 31).to_dtype(DType::F32)?;
        let pv = Var::from_tensor(&p)?;
        let fused = lncc_loss(&t, pv.as_tensor(), &kernel, c)?;
        let composed = composed_lncc(&t, pv.as_tensor(), &kernel, c)?;
        assert!(max_diff(&fused, &composed) < 1e-5);
        let ga = fused.sum_all()?.backward()?;
        let gb = composed.sum_all()?.backward()?;
        assert!(ga.get(&t).is_none());
        let (ga, gb) = (
            ga.get(pv.as_tensor()).unwrap(),
            gb.get(pv.as_tensor()).unwrap(),
        );
        assert_eq!(ga.dtype(), DType::F32);
        assert!(max_diff(ga, gb) < 1e-3 * largest(gb));
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences_for_each_input() {
        for (shape, kernel) in [
            (&[1, 1, 4, 5, 3][..], rectangular_kernel(3)),
            (&[2, 1, 5, 4][..], gaussian_kernel_sized(4)),
        ] {
            let c = params(&kernel, shape.len() as i32 - 2);
            let t = pseudo_random(shape, 0.0, 1.0, 50);
            let p = pseudo_random(shape, 0.0, 1.0, 51);
            check_gradient(|x| lncc_loss(&t, x, &kernel, c), &p, 1e-5);
            check_gradient(|x| lncc_loss(x, &p, &kernel, c), &t, 1e-5);
        }
    }

    #[test]
    fn ranges_of_planes_split_among_threads_give_the_same_result() {
        // Four threads: each image splits into ranges of planes that recompute their borders.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        for (shape, kernel) in [
            (&[1, 1, 27, 4, 5][..], rectangular_kernel(3)),
            (&[1, 1, 33, 6][..], gaussian_kernel_sized(4)),
        ] {
            let c = params(&kernel, shape.len() as i32 - 2);
            let t = pseudo_random(shape, 0.0, 1.0, 90);
            let p = pseudo_random(shape, 0.0, 1.0, 91);
            let (la, ta, pa) =
                pool.install(|| loss_and_grads(|t, p| lncc_loss(t, p, &kernel, c), &t, &p));
            let (lb, tb, pb) = loss_and_grads(|t, p| composed_lncc(t, p, &kernel, c), &t, &p);
            assert!(max_diff(&la, &lb) < 1e-10 * largest(&lb), "{shape:?}");
            assert!(max_diff(&ta, &tb) < 1e-7 * largest(&tb), "{shape:?}");
            assert!(max_diff(&pa, &pb) < 1e-7 * largest(&pb), "{shape:?}");
        }
    }

    #[test]
    fn a_second_backward_pass_gives_the_same_gradient() -> candle::Result<()> {
        let kernel = rectangular_kernel(3);
        let t = pseudo_random(&[2, 1, 5, 6], 0.0, 1.0, 70);
        let p = Var::from_tensor(&pseudo_random(&[2, 1, 5, 6], 0.0, 1.0, 71))?;
        let loss = (lncc_loss(&t, p.as_tensor(), &kernel, params(&kernel, 2))? * 3.0)?.sum_all()?;
        let first = loss.backward()?.get(p.as_tensor()).unwrap().clone();
        let second = loss.backward()?.get(p.as_tensor()).unwrap().clone();
        assert!(largest(&first) > 1e-6);
        assert!(max_diff(&first, &second) < 1e-15);
        Ok(())
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        let t = pseudo_random(&[1, 1, 4, 5], 0.0, 1.0, 1);
        let p = pseudo_random(&[1, 1, 5, 4], 0.0, 1.0, 2);
        let kernel = rectangular_kernel(3);
        assert!(lncc_loss(&t, &p, &kernel, params(&kernel, 2)).is_err());
        let flat = pseudo_random(&[1, 4], 0.0, 1.0, 3);
        assert!(lncc_loss(&flat, &flat, &kernel, params(&kernel, 2)).is_err());
    }
}
