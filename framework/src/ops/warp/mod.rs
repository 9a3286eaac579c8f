//! Warping (resampling) of an image by a dense displacement field, with gradients with respect
//! to the image and to the field.
//!
//! # CPU kernel
//!
//! The output is split into row ranges (a row is one line along the last spatial axis) and the
//! ranges are processed by rayon tasks. The forward pass and the gradient w.r.t. the field are
//! gathers: every task writes only its own rows. The gradient w.r.t. the image is a scatter: a
//! task adds into the source voxels its sample locations touch. To do that without races or
//! atomics, each task first measures the range of source rows its locations reach (a cheap pass
//! over the field), then scatters into a private zeroed buffer covering only that range, and a
//! second parallel pass sums the private buffers into the image gradient, split by source rows
//! (each source row is owned by one reduction task, and it adds the task buffers in a fixed
//! order, so results are deterministic). For fields of bounded displacement the private
//! buffers hold little more than one image in total; if they would exceed twice the image size
//! (wild fields or many threads), adjacent tasks are merged until they fit, so the scratch
//! memory stays below two image-sized buffers whatever the field.
//!
//! A single-channel linear warp whose field tracks gradients (and whose image does not) — the
//! warp of a training step — computes the field gradient's slopes in its forward pass and
//! keeps them for the backward pass (module `slope`), so the corners are gathered once.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::{
    check_float, contiguous, even_ranges, spatial3, spatial_ndim, split_rows, storage, task_count,
    with_float, with_simd, Real, RowTask,
};

mod slope;

use backward::WarpBackward;
use slope::KeptSlope;

/// Interpolation used to sample between voxel centres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    /// Bilinear (2D) / trilinear (3D).
    Linear,
    /// Nearest voxel (ties round to even, as `nearbyint`); zero gradient w.r.t. the field.
    Nearest,
}

/// Value of samples that fall outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Voxels outside the image are zero.
    Zeros,
    /// Locations are clamped to the image (the border voxels extend outwards).
    Border,
}

/// Warps `image` by the dense displacement field `ddf`.
///
/// For every output voxel `p` (an index of the field's spatial grid) the output is the image
/// sampled at `p + ddf[:, p]`, in voxel units: `out[n, c, p] = I[n, c](p + u[n, :, p])`, where
/// component `i` of the field displaces along spatial axis `i` (axis 0 is the first spatial
/// axis) and `I` is the interpolated image (`interp`) extended outside by `padding`. This is
/// PyTorch's `grid_sample(align_corners=True)` on the grid `identity + ddf` (MONAI's `Warp`),
/// in voxel units:
/// * zero padding extends the image by zeros before interpolating, so along an axis of `n`
///   voxels a linear sample falls off linearly to 0 over `(−1, 0)` and `(n − 1, n)` and is 0
///   at `≤ −1` and `≥ n`. DeepReg's resampler (`zero_boundary=True`) differs: it returns 0 for
///   any coordinate `≤ 0` or `> n − 1`, even exactly 0;
/// * the derivative of a linear sample w.r.t. its coordinate is discontinuous at integer
///   coordinates (a zero field, e.g. the first step of a zero-initialised head); there it is
///   the forward difference `I[k + 1] − I[k]` (with zero padding `−I[n − 1]` at the last
///   voxel), as `grid_sample`'s; DeepReg's resampler takes the backward one, `I[k] − I[k − 1]`;
/// * border padding clamps the coordinate to `[0, n − 1]`, the clamp's derivative taken as 1
///   on the closed interval (TensorFlow's `clip_by_value`) and 0 outside: at exactly `x = 0`
///   the gradient is the forward difference, where PyTorch gives 0; at `x = n − 1` both give 0.
///
/// Gradients flow to both the image and the field (nearest interpolation: zero w.r.t. the
/// field; border padding: zero w.r.t. a coordinate clamped outside the image).
///
/// # Shapes
/// * `image`: `(N, C, H, W)` or `(N, C, D, H, W)`, f32 or f64.
/// * `ddf`: `(N, 2, H', W')` or `(N, 3, D', H', W')`, same dtype. The output grid may differ from
///   the image grid.
/// * output: `(N, C, H', W')` or `(N, C, D', H', W')`.
pub fn warp(image: &Tensor, ddf: &Tensor, interp: Interp, padding: Padding) -> Result<Tensor> {
    const OP: &str = "warp";
    let ndim = spatial_ndim(OP, "image", image)?;
    check_float(OP, "image", image)?;
    if ddf.dtype() != image.dtype() {
        bail!(
            "{OP}: ddf dtype {:?} differs from image dtype {:?}",
            ddf.dtype(),
            image.dtype()
        );
    }
    let (id, dd) = (image.dims(), ddf.dims());
    if dd.len() != id.len() || dd[0] != id[0] || dd[1] != ndim {
        bail!(
            "{OP}: ddf must be (N, {ndim}, *spatial) with N = {} for an image of shape {id:?}, got {dd:?}",
            id[0]
        );
    }
    if id.iter().chain(dd.iter()).any(|&d| d == 0) {
        bail!("{OP}: empty tensors are not supported (image {id:?}, ddf {dd:?})");
    }
    if id[2..].iter().product::<usize>() >= 1 << 31 {
        bail!("{OP}: images of 2^31 voxels or more per channel are not supported, got {id:?}");
    }
    let image = image.contiguous()?;
    let ddf = ddf.contiguous()?;
    let keep_slope = interp == Interp::Linear && id[1] == 1 && ddf.track_op() && !image.track_op();
    image.apply_op2(
        &ddf,
        Warp {
            interp,
            padding,
            slope: keep_slope.then(KeptSlope::default),
        },
    )
}

/// The warp op (forward: image, ddf → warped image).
#[derive(Debug)]
struct Warp {
    interp: Interp,
    padding: Padding,
    /// Where the forward pass keeps the field gradient's slopes for the backward pass (a
    /// single-channel linear warp whose field alone tracks gradients; see module `slope`).
    slope: Option<KeptSlope>,
}

/// Sizes of one warp call.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    /// Image spatial dims, padded to three (`[1, H, W]` in 2D).
    src: [usize; 3],
    /// Output (field) spatial dims, padded to three.
    dst: [usize; 3],
    d3: bool,
}

impl Geometry {
    fn new(image: &[usize], ddf: &[usize]) -> Self {
        Self {
            n: image[0],
            c: image[1],
            src: spatial3(image),
            dst: spatial3(ddf),
            d3: image.len() == 5,
        }
    }
    fn src_vol(&self) -> usize {
        self.src.iter().product()
    }
    fn dst_vol(&self) -> usize {
        self.dst.iter().product()
    }
    fn ndim(&self) -> usize {
        if self.d3 {
            3
        } else {
            2
        }
    }
    /// Rows of the output grid (all axes but the last).
    fn dst_rows(&self) -> usize {
        self.dst[0] * self.dst[1]
    }
    fn src_rows(&self) -> usize {
        self.src[0] * self.src[1]
    }
}

/// Interpolation taps along one axis: the two neighbouring indices (already multiplied by the
/// axis stride), their weights and the derivatives of the weights w.r.t. the coordinate.
#[derive(Debug, Clone, Copy)]
struct Tap<T> {
    i0: usize,
    i1: usize,
    w0: T,
    w1: T,
    d0: T,
    d1: T,
}

impl<T: Real> Tap<T> {
    /// The tap of a missing axis (the depth axis of a 2D image).
    fn unit() -> Self {
        Self {
            i0: 0,
            i1: 0,
            w0: T::one(),
            w1: T::zero(),
            d0: T::zero(),
            d1: T::zero(),
        }
    }
}

/// Output voxels processed together along a row: the taps of a run are computed first, axis by
/// axis, in loops without branches that the compiler vectorises, then the gathers run.
const RUN: usize = 64;

/// Taps along one axis for a run of output voxels (indices already multiplied by the stride).
struct AxisTaps<T> {
    i0: [u32; RUN],
    i1: [u32; RUN],
    w0: [T; RUN],
    w1: [T; RUN],
    d0: [T; RUN],
    d1: [T; RUN],
}

impl<T: Real> AxisTaps<T> {
    fn new() -> Self {
        Self {
            i0: [0; RUN],
            i1: [0; RUN],
            w0: [T::zero(); RUN],
            w1: [T::zero(); RUN],
            d0: [T::zero(); RUN],
            d1: [T::zero(); RUN],
        }
    }

    /// Taps at coordinates `pos + dpos * j + u[j]` on an axis of `n >= 1` voxels with stride
    /// `stride`. Out-of-range neighbours get weight zero and an in-range index, so every index
    /// is safe to read; derivatives are those of the weights w.r.t. the coordinate (zero where
    /// border padding clamps it).
    #[inline(always)]
    fn fill<const LIN: bool, const BORDER: bool>(
        &mut self,
        pos: T,
        dpos: T,
        u: &[T],
        n: usize,
        stride: usize,
    ) {
        let (zero, one) = (T::zero(), T::one());
        let last = T::from_usize(n - 1);
        let top = n as i32 - 1;
        let stride = stride as u32;
        for (j, &uj) in u.iter().take(RUN).enumerate() {
            let x = pos + dpos * T::from_i32(j as i32) + uj;
            let (i0, i1, w0, w1, d0, d1);
            if BORDER {
                let lo = if x < zero { zero } else { x };
                let xc = if lo > last { last } else { lo };
                if LIN {
                    let g = if x >= zero && x <= last { one } else { zero };
                    let i = xc.floor_i32().clamp(0, top);
                    let f = xc - T::from_i32(i);
                    (i0, i1, w0, w1, d0, d1) = (i, (i + 1).min(top), one - f, f, -g, g);
                } else {
                    let i = xc.round_even_i32().clamp(0, top);
                    (i0, i1, w0, w1, d0, d1) = (i, i, one, zero, zero, zero);
                }
            } else {
                // Only [-1, n] can reach a voxel; clamping keeps the integer maths safe.
                let (lo, hi) = (-(one + one), last + one + one);
                let xl = if x < lo { lo } else { x };
                let xc = if xl > hi { hi } else { xl };
                if LIN {
                    let i = xc.floor_i32();
                    let f = xc - T::from_i32(i);
                    let v0 = i >= 0 && i <= top;
                    let v1 = i >= -1 && i < top;
                    i0 = i.clamp(0, top);
                    i1 = (i + 1).clamp(0, top);
                    w0 = if v0 { one - f } else { zero };
                    w1 = if v1 { f } else { zero };
                    d0 = if v0 { -one } else { zero };
                    d1 = if v1 { one } else { zero };
                } else {
                    let i = xc.round_even_i32();
                    let v = i >= 0 && i <= top;
                    i0 = i.clamp(0, top);
                    i1 = i0;
                    (w0, w1, d0, d1) = (if v { one } else { zero }, zero, zero, zero);
                }
            }
            self.i0[j] = i0 as u32 * stride;
            self.i1[j] = i1 as u32 * stride;
            self.w0[j] = w0;
            self.w1[j] = w1;
            self.d0[j] = d0;
            self.d1[j] = d1;
        }
    }

    #[inline(always)]
    fn get(&self, j: usize) -> Tap<T> {
        Tap {
            i0: self.i0[j] as usize,
            i1: self.i1[j] as usize,
            w0: self.w0[j],
            w1: self.w1[j],
            d0: self.d0[j],
            d1: self.d1[j],
        }
    }
}

/// Taps of a run of output voxels along the three axes.
struct RunTaps<T> {
    z: AxisTaps<T>,
    y: AxisTaps<T>,
    x: AxisTaps<T>,
}

impl<T: Real> RunTaps<T> {
    fn new() -> Self {
        Self {
            z: AxisTaps::new(),
            y: AxisTaps::new(),
            x: AxisTaps::new(),
        }
    }

    #[inline(always)]
    fn get<const D3: bool>(&self, j: usize) -> (Tap<T>, Tap<T>, Tap<T>) {
        let tz = if D3 { self.z.get(j) } else { Tap::unit() };
        (tz, self.y.get(j), self.x.get(j))
    }
}

/// Computes the taps of the output voxels, reading the field of one batch item.
struct Sampler<'a, T> {
    geo: Geometry,
    /// Field of one batch item: `ndim` planes of `dst_vol` values.
    ddf: &'a [T],
}

impl<T: Real> Sampler<'_, T> {
    /// Taps of the run of `len <= RUN` output voxels `(z, y, x0 .. x0 + len)`, whose flat
    /// output index starts at `o`.
    #[inline(always)]
    fn fill<const LIN: bool, const D3: bool, const BORDER: bool>(
        &self,
        (z, y, x0): (usize, usize, usize),
        o: usize,
        len: usize,
        taps: &mut RunTaps<T>,
    ) {
        let [sd, sh, sw] = self.geo.src;
        let vol = self.geo.dst_vol();
        let (zero, one) = (T::zero(), T::one());
        let off = if D3 {
            let u = &self.ddf[o..o + len];
            taps.z
                .fill::<LIN, BORDER>(T::from_usize(z), zero, u, sd, sh * sw);
            vol
        } else {
            0
        };
        let u = &self.ddf[off + o..off + o + len];
        taps.y
            .fill::<LIN, BORDER>(T::from_usize(y), zero, u, sh, sw);
        let u = &self.ddf[off + vol + o..off + vol + o + len];
        taps.x.fill::<LIN, BORDER>(T::from_usize(x0), one, u, sw, 1);
    }
}

/// Calls `f(o, tz, ty, tx)` for every output voxel `o` of rows `[r0, r1)` with its taps.
#[inline(always)]
fn for_each_voxel<T: Real, const LIN: bool, const D3: bool, const BORDER: bool>(
    sampler: &Sampler<'_, T>,
    r0: usize,
    r1: usize,
    mut f: impl FnMut(usize, &Tap<T>, &Tap<T>, &Tap<T>),
) {
    let geo = sampler.geo;
    let dw = geo.dst[2];
    let mut taps = RunTaps::new();
    for r in r0..r1 {
        let (z, y) = (r / geo.dst[1], r % geo.dst[1]);
        let mut x0 = 0;
        while x0 < dw {
            let len = RUN.min(dw - x0);
            let o0 = r * dw + x0;
            sampler.fill::<LIN, D3, BORDER>((z, y, x0), o0, len, &mut taps);
            for j in 0..len {
                let (tz, ty, tx) = taps.get::<D3>(j);
                f(o0 + j, &tz, &ty, &tx);
            }
            x0 += len;
        }
    }
}

/// Interpolated value at the taps of one channel volume `im` (whose length must be the image's
/// spatial volume), and its derivatives w.r.t. the three coordinates.
#[inline(always)]
fn sample<T: Real, const LIN: bool, const D3: bool>(
    im: &[T],
    tz: &Tap<T>,
    ty: &Tap<T>,
    tx: &Tap<T>,
) -> (T, [T; 3]) {
    let load = |i: usize| -> T {
        debug_assert!(i < im.len());
        // SAFETY: every tap index is clamped to its axis (`Tap::at`) and multiplied by the
        // axis stride, so the sum of the three is an index into the `im` volume.
        unsafe { *im.get_unchecked(i) }
    };
    if !LIN {
        let v = load(tz.i0 + ty.i0 + tx.i0);
        return (v * tz.w0 * ty.w0 * tx.w0, [T::zero(); 3]);
    }
    let row = |base: usize| -> (T, T) {
        let v0 = load(base + tx.i0);
        let v1 = load(base + tx.i1);
        (tx.w0 * v0 + tx.w1 * v1, tx.d0 * v0 + tx.d1 * v1)
    };
    let plane = |zb: usize| -> (T, T, T) {
        let (a0, g0) = row(zb + ty.i0);
        let (a1, g1) = row(zb + ty.i1);
        (
            ty.w0 * a0 + ty.w1 * a1,
            ty.d0 * a0 + ty.d1 * a1,
            ty.w0 * g0 + ty.w1 * g1,
        )
    };
    let (b0, gy0, gx0) = plane(tz.i0);
    if !D3 {
        return (b0, [T::zero(), gy0, gx0]);
    }
    let (b1, gy1, gx1) = plane(tz.i1);
    (
        tz.w0 * b0 + tz.w1 * b1,
        [
            tz.d0 * b0 + tz.d1 * b1,
            tz.w0 * gy0 + tz.w1 * gy1,
            tz.w0 * gx0 + tz.w1 * gx1,
        ],
    )
}

/// Adds `g` times the interpolation weights of the taps into `acc` (indices shifted by `-base`).
#[inline(always)]
fn scatter<T: Real, const LIN: bool, const D3: bool>(
    acc: &mut [T],
    base: usize,
    g: T,
    tz: &Tap<T>,
    ty: &Tap<T>,
    tx: &Tap<T>,
) {
    if !LIN {
        acc[tz.i0 + ty.i0 + tx.i0 - base] += g * tz.w0 * ty.w0 * tx.w0;
        return;
    }
    let zs: &[(usize, T)] = if D3 {
        &[(tz.i0, tz.w0), (tz.i1, tz.w1)]
    } else {
        &[(tz.i0, tz.w0)]
    };
    for &(iz, wz) in zs {
        let gz = g * wz;
        for (iy, wy) in [(ty.i0, ty.w0), (ty.i1, ty.w1)] {
            let gzy = gz * wy;
            let b = iz + iy - base;
            acc[b + tx.i0] += gzy * tx.w0;
            acc[b + tx.i1] += gzy * tx.w1;
        }
    }
}

/// Calls `$f::<T, LIN, D3, BORDER>` with the const parameters chosen from the op and geometry.
macro_rules! dispatch {
    ($op:expr, $geo:expr, $f:ident, $t:ty, ($($arg:expr),*)) => {
        match ($op.interp == Interp::Linear, $geo.d3, $op.padding == Padding::Border) {
            (true, true, true) => $op.$f::<$t, true, true, true>($($arg),*),
            (true, true, false) => $op.$f::<$t, true, true, false>($($arg),*),
            (true, false, true) => $op.$f::<$t, true, false, true>($($arg),*),
            (true, false, false) => $op.$f::<$t, true, false, false>($($arg),*),
            (false, true, true) => $op.$f::<$t, false, true, true>($($arg),*),
            (false, true, false) => $op.$f::<$t, false, true, false>($($arg),*),
            (false, false, true) => $op.$f::<$t, false, false, true>($($arg),*),
            (false, false, false) => $op.$f::<$t, false, false, false>($($arg),*),
        }
    };
}

impl Warp {
    fn forward<T: Real>(&self, img: &[T], ddf: &[T], geo: Geometry) -> Vec<T> {
        if let Some(kept) = &self.slope {
            let (out, slope) = match (geo.d3, self.padding == Padding::Border) {
                (true, true) => self.forward_with_slope::<T, true, true>(img, ddf, geo),
                (true, false) => self.forward_with_slope::<T, true, false>(img, ddf, geo),
                (false, true) => self.forward_with_slope::<T, false, true>(img, ddf, geo),
                (false, false) => self.forward_with_slope::<T, false, false>(img, ddf, geo),
            };
            kept.store(T::to_cpu_storage_owned(slope));
            return out;
        }
        dispatch!(self, geo, forward_k, T, (img, ddf, geo))
    }

    /// Linear forward of a single-channel image that also returns the slopes `∂out/∂u_i`
    /// (field-shaped).
    fn forward_with_slope<T: Real, const D3: bool, const BORDER: bool>(
        &self,
        img: &[T],
        ddf: &[T],
        geo: Geometry,
    ) -> (Vec<T>, Vec<T>) {
        let (dvol, dw, nd) = (geo.dst_vol(), geo.dst[2], geo.ndim());
        let mut out = vec![T::zero(); geo.n * dvol];
        let mut slope = vec![T::zero(); geo.n * nd * dvol];
        let ranges = even_ranges(geo.dst_rows(), task_count(geo.dst_rows()));
        let tasks = split_rows(&mut out, geo.n, 1, geo.dst_rows(), dw, &ranges);
        let slope_tasks = split_rows(&mut slope, geo.n, nd, geo.dst_rows(), dw, &ranges);
        tasks
            .into_par_iter()
            .zip(slope_tasks)
            .for_each(|(mut task, mut slope_task)| {
                let b = task.batch;
                let sampler = Sampler {
                    geo,
                    ddf: &ddf[b * nd * dvol..(b + 1) * nd * dvol],
                };
                let img = &img[b * geo.src_vol()..(b + 1) * geo.src_vol()];
                with_simd(|| {
                    fwd_rows_with_slope::<T, D3, BORDER>(&sampler, img, &mut task, &mut slope_task)
                });
            });
        (out, slope)
    }

    fn forward_k<T: Real, const LIN: bool, const D3: bool, const BORDER: bool>(
        &self,
        img: &[T],
        ddf: &[T],
        geo: Geometry,
    ) -> Vec<T> {
        let (svol, dvol, dw) = (geo.src_vol(), geo.dst_vol(), geo.dst[2]);
        let mut out = vec![T::zero(); geo.n * geo.c * dvol];
        let ranges = even_ranges(geo.dst_rows(), task_count(geo.dst_rows()));
        let tasks = split_rows(&mut out, geo.n, geo.c, geo.dst_rows(), dw, &ranges);
        tasks.into_par_iter().for_each(|mut task| {
            let b = task.batch;
            let sampler = Sampler {
                geo,
                ddf: &ddf[b * geo.ndim() * dvol..(b + 1) * geo.ndim() * dvol],
            };
            let img = &img[b * geo.c * svol..(b + 1) * geo.c * svol];
            with_simd(|| fwd_rows::<T, LIN, D3, BORDER>(&sampler, img, &mut task));
        });
        out
    }
}

#[inline(always)]
fn fwd_rows<T: Real, const LIN: bool, const D3: bool, const BORDER: bool>(
    sampler: &Sampler<'_, T>,
    img: &[T],
    task: &mut RowTask<'_, T>,
) {
    let geo = sampler.geo;
    let (svol, dw) = (geo.src_vol(), geo.dst[2]);
    let start = task.r0 * dw;
    let parts = &mut task.parts;
    for_each_voxel::<T, LIN, D3, BORDER>(sampler, task.r0, task.r1, |o, tz, ty, tx| {
        for (c, part) in parts.iter_mut().enumerate() {
            let im = &img[c * svol..(c + 1) * svol];
            part[o - start] = sample::<T, LIN, D3>(im, tz, ty, tx).0;
        }
    });
}

/// Forward rows of a single-channel linear warp, writing the slopes `∂out/∂u_i` too.
#[inline(always)]
fn fwd_rows_with_slope<T: Real, const D3: bool, const BORDER: bool>(
    sampler: &Sampler<'_, T>,
    img: &[T],
    task: &mut RowTask<'_, T>,
    slope: &mut RowTask<'_, T>,
) {
    let start = task.r0 * sampler.geo.dst[2];
    let out = &mut task.parts[0];
    let first = if D3 { 0 } else { 1 };
    for_each_voxel::<T, true, D3, BORDER>(sampler, task.r0, task.r1, |o, tz, ty, tx| {
        let (v, d) = sample::<T, true, D3>(img, tz, ty, tx);
        out[o - start] = v;
        for (part, di) in slope.parts.iter_mut().zip(&d[first..]) {
            part[o - start] = *di;
        }
    });
}

impl CustomOp2 for Warp {
    fn name(&self) -> &'static str {
        "warp"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let geo = Geometry::new(l1.dims(), l2.dims());
        let mut shape = l2.dims().to_vec();
        shape[1] = geo.c;
        with_float!("warp", s1, |F| {
            let img = contiguous::<F>(s1, l1, "warp", "image")?;
            let ddf = contiguous::<F>(s2, l2, "warp", "ddf")?;
            Ok(storage(self.forward(img, ddf, geo), shape))
        })
    }

    fn bwd(
        &self,
        image: &Tensor,
        ddf: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let want_img = image.track_op();
        let want_ddf = ddf.track_op() && self.interp == Interp::Linear;
        if want_ddf && !want_img {
            if let Some(kept) = &self.slope {
                let ndim = ddf.dims()[1];
                if let Some(gddf) = kept.take_scaled(grad, ndim)? {
                    return Ok((None, Some(gddf)));
                }
            }
        }
        let zero_ddf = ddf.track_op() && self.interp == Interp::Nearest;
        let zero_ddf = if zero_ddf {
            Some(ddf.zeros_like()?)
        } else {
            None
        };
        if !want_img && !want_ddf {
            return Ok((None, zero_ddf));
        }
        let grad = grad.contiguous()?;
        let op = WarpBackward {
            interp: self.interp,
            padding: self.padding,
            want_img,
            want_ddf,
        };
        let flat = image.apply_op3_no_bwd(ddf, &grad, &op)?;
        let mut offset = 0;
        let gimg = if want_img {
            offset = image.elem_count();
            Some(flat.narrow(0, 0, offset)?.reshape(image.shape())?)
        } else {
            None
        };
        let gddf = if want_ddf {
            Some(
                flat.narrow(0, offset, ddf.elem_count())?
                    .reshape(ddf.shape())?,
            )
        } else {
            zero_ddf
        };
        Ok((gimg, gddf))
    }
}

// After `dispatch!`, which it uses (macros are scoped by text order).
mod backward;

#[cfg(test)]
mod tests;
