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

/// Backward of [`Warp`]: (image, ddf, grad of output) → the requested gradients, flattened and
/// concatenated (image gradient first).
#[derive(Debug, Clone, Copy)]
struct WarpBackward {
    interp: Interp,
    padding: Padding,
    want_img: bool,
    want_ddf: bool,
}

/// One scatter task of the image gradient: output rows `[r0, r1)` of batch item `batch`, whose
/// sample taps touch source rows `[lo, hi]`.
#[derive(Debug, Clone, Copy)]
struct ScatterTask {
    batch: usize,
    r0: usize,
    r1: usize,
    lo: usize,
    hi: usize,
}

impl WarpBackward {
    fn run<T: Real>(&self, img: &[T], ddf: &[T], gout: &[T], geo: Geometry) -> Vec<T> {
        dispatch!(self, geo, run_k, T, (img, ddf, gout, geo))
    }

    fn run_k<T: Real, const LIN: bool, const D3: bool, const BORDER: bool>(
        &self,
        img: &[T],
        ddf: &[T],
        gout: &[T],
        geo: Geometry,
    ) -> Vec<T> {
        let img_len = if self.want_img { img.len() } else { 0 };
        let ddf_len = if self.want_ddf { ddf.len() } else { 0 };
        let mut out = vec![T::zero(); img_len + ddf_len];
        let (gimg, gddf) = out.split_at_mut(img_len);
        if self.want_img {
            self.image_grad::<T, LIN, D3, BORDER>(img, ddf, gout, geo, gimg, gddf);
        } else {
            self.ddf_grad::<T, LIN, D3, BORDER>(img, ddf, gout, geo, gddf);
        }
        out
    }

    /// Gradient w.r.t. the field only: a pure gather, split by output rows.
    fn ddf_grad<T: Real, const LIN: bool, const D3: bool, const BORDER: bool>(
        &self,
        img: &[T],
        ddf: &[T],
        gout: &[T],
        geo: Geometry,
        gddf: &mut [T],
    ) {
        let (svol, dvol, dw) = (geo.src_vol(), geo.dst_vol(), geo.dst[2]);
        let ranges = even_ranges(geo.dst_rows(), task_count(geo.dst_rows()));
        let tasks = split_rows(gddf, geo.n, geo.ndim(), geo.dst_rows(), dw, &ranges);
        tasks.into_par_iter().for_each(|mut task| {
            let b = task.batch;
            let sampler = Sampler {
                geo,
                ddf: &ddf[b * geo.ndim() * dvol..(b + 1) * geo.ndim() * dvol],
            };
            let img = &img[b * geo.c * svol..(b + 1) * geo.c * svol];
            let gout = &gout[b * geo.c * dvol..(b + 1) * geo.c * dvol];
            let start = task.r0 * dw;
            let parts = &mut task.parts;
            with_simd(|| {
                for_each_voxel::<T, LIN, D3, BORDER>(&sampler, task.r0, task.r1, |o, tz, ty, tx| {
                    let mut acc = [T::zero(); 3];
                    for c in 0..geo.c {
                        let g = gout[c * dvol + o];
                        let im = &img[c * svol..(c + 1) * svol];
                        let (_, d) = sample::<T, LIN, D3>(im, tz, ty, tx);
                        acc[0] += g * d[0];
                        acc[1] += g * d[1];
                        acc[2] += g * d[2];
                    }
                    let first = if D3 { 0 } else { 1 };
                    for (part, a) in parts.iter_mut().zip(&acc[first..]) {
                        part[o - start] = *a;
                    }
                })
            });
        });
    }

    /// Source-row ranges touched by each task's taps, merged until the private buffers fit
    /// into twice the image size.
    fn plan_scatter<T: Real, const LIN: bool, const D3: bool, const BORDER: bool>(
        &self,
        ddf: &[T],
        geo: Geometry,
    ) -> Vec<ScatterTask> {
        let dvol = geo.dst_vol();
        let ranges = even_ranges(geo.dst_rows(), task_count(geo.dst_rows()));
        let jobs: Vec<(usize, usize, usize)> = (0..geo.n)
            .flat_map(|b| ranges.iter().map(move |&(r0, r1)| (b, r0, r1)))
            .collect();
        let mut tasks: Vec<ScatterTask> = jobs
            .into_par_iter()
            .map(|(b, r0, r1)| {
                let sampler = Sampler {
                    geo,
                    ddf: &ddf[b * geo.ndim() * dvol..(b + 1) * geo.ndim() * dvol],
                };
                let (mut lo, mut hi) = (usize::MAX, 0);
                with_simd(|| {
                    for_each_voxel::<T, LIN, D3, BORDER>(&sampler, r0, r1, |_, tz, ty, _| {
                        // Indices carry strides: rows are (z * sh + y), in units of sw.
                        lo = lo.min((tz.i0 + ty.i0) / geo.src[2]);
                        hi = hi.max((tz.i1 + ty.i1) / geo.src[2]);
                    })
                });
                ScatterTask {
                    batch: b,
                    r0,
                    r1,
                    lo,
                    hi,
                }
            })
            .collect();
        let budget = 2 * geo.n * geo.src_rows();
        let used = |ts: &[ScatterTask]| ts.iter().map(|t| t.hi + 1 - t.lo).sum::<usize>();
        while used(&tasks) > budget && tasks.len() > geo.n {
            // Merge neighbours pairwise: (0, 1), (2, 3), ... within each batch item.
            let mut merged: Vec<ScatterTask> = Vec::with_capacity(tasks.len() / 2 + 1);
            let mut open = false;
            for t in tasks {
                match merged.last_mut() {
                    Some(m) if open && m.batch == t.batch && m.r1 == t.r0 => {
                        m.r1 = t.r1;
                        m.lo = m.lo.min(t.lo);
                        m.hi = m.hi.max(t.hi);
                        open = false;
                    }
                    _ => {
                        merged.push(t);
                        open = true;
                    }
                }
            }
            tasks = merged;
        }
        tasks
    }

    /// Gradients w.r.t. the image (scatter into private buffers, then reduce) and, when
    /// requested, w.r.t. the field (computed in the same pass).
    fn image_grad<T: Real, const LIN: bool, const D3: bool, const BORDER: bool>(
        &self,
        img: &[T],
        ddf: &[T],
        gout: &[T],
        geo: Geometry,
        gimg: &mut [T],
        gddf: &mut [T],
    ) {
        let (svol, dvol, dw, sw) = (geo.src_vol(), geo.dst_vol(), geo.dst[2], geo.src[2]);
        let plan = self.plan_scatter::<T, LIN, D3, BORDER>(ddf, geo);
        // Batches are planned independently; split the field gradient per planned task.
        let mut ddf_parts: Vec<Option<Vec<&mut [T]>>> = if self.want_ddf {
            let mut parts = Vec::with_capacity(plan.len());
            let mut rest: &mut [T] = gddf;
            for b in 0..geo.n {
                let (batch, tail) = rest.split_at_mut(geo.ndim() * dvol);
                rest = tail;
                let mine: Vec<(usize, usize)> = plan
                    .iter()
                    .filter(|t| t.batch == b)
                    .map(|t| (t.r0, t.r1))
                    .collect();
                for task in split_rows(batch, 1, geo.ndim(), geo.dst_rows(), dw, &mine) {
                    parts.push(Some(task.parts));
                }
            }
            parts
        } else {
            plan.iter().map(|_| None).collect()
        };
        let locals: Vec<Vec<T>> = plan
            .par_iter()
            .zip(ddf_parts.par_iter_mut())
            .map(|(task, parts)| {
                let b = task.batch;
                let sampler = Sampler {
                    geo,
                    ddf: &ddf[b * geo.ndim() * dvol..(b + 1) * geo.ndim() * dvol],
                };
                let img = &img[b * geo.c * svol..(b + 1) * geo.c * svol];
                let gout = &gout[b * geo.c * dvol..(b + 1) * geo.c * dvol];
                let rows = task.hi + 1 - task.lo;
                let span = rows * sw;
                let base = task.lo * sw;
                let mut local = vec![T::zero(); geo.c * span];
                let start = task.r0 * dw;
                with_simd(|| {
                    for_each_voxel::<T, LIN, D3, BORDER>(
                        &sampler,
                        task.r0,
                        task.r1,
                        |o, tz, ty, tx| {
                            let mut acc = [T::zero(); 3];
                            for c in 0..geo.c {
                                let g = gout[c * dvol + o];
                                let acc_c = &mut local[c * span..(c + 1) * span];
                                scatter::<T, LIN, D3>(acc_c, base, g, tz, ty, tx);
                                if parts.is_some() {
                                    let im = &img[c * svol..(c + 1) * svol];
                                    let (_, d) = sample::<T, LIN, D3>(im, tz, ty, tx);
                                    acc[0] += g * d[0];
                                    acc[1] += g * d[1];
                                    acc[2] += g * d[2];
                                }
                            }
                            if let Some(parts) = parts.as_mut() {
                                let first = if D3 { 0 } else { 1 };
                                for (part, a) in parts.iter_mut().zip(&acc[first..]) {
                                    part[o - start] = *a;
                                }
                            }
                        },
                    )
                });
                local
            })
            .collect();
        // Reduce: each reduction task owns a range of source rows of one batch item.
        let src_rows = geo.src_rows();
        let red = even_ranges(src_rows, task_count(src_rows));
        let outs = split_rows(gimg, geo.n, geo.c, src_rows, sw, &red);
        outs.into_par_iter().for_each(|mut out| {
            for (task, local) in plan.iter().zip(&locals) {
                if task.batch != out.batch || task.hi < out.r0 || task.lo >= out.r1 {
                    continue;
                }
                let span = (task.hi + 1 - task.lo) * sw;
                let a = task.lo.max(out.r0);
                let z = (task.hi + 1).min(out.r1);
                for (c, part) in out.parts.iter_mut().enumerate() {
                    let src = &local[c * span + (a - task.lo) * sw..c * span + (z - task.lo) * sw];
                    let dst = &mut part[(a - out.r0) * sw..(z - out.r0) * sw];
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d += *s;
                    }
                }
            }
        });
    }
}

impl CustomOp3 for WarpBackward {
    fn name(&self) -> &'static str {
        "warp-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "warp-backward";
        let geo = Geometry::new(l1.dims(), l2.dims());
        let mut len = 0;
        if self.want_img {
            len += l1.shape().elem_count();
        }
        if self.want_ddf {
            len += l2.shape().elem_count();
        }
        with_float!(OP, s1, |F| {
            let img = contiguous::<F>(s1, l1, OP, "image")?;
            let ddf = contiguous::<F>(s2, l2, OP, "ddf")?;
            let g = contiguous::<F>(s3, l3, OP, "grad")?;
            Ok(storage(self.run(img, ddf, g, geo), len))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::common::testing::{check_grads, max_abs_diff, values, Rng};
    use candle_core::{DType, Device, Var};

    fn t(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    /// Straightforward reference: linear interpolation with zero or border padding, 3D view.
    fn reference(image: &Tensor, ddf: &Tensor, padding: Padding) -> Vec<f64> {
        let (id, dd) = (image.dims().to_vec(), ddf.dims().to_vec());
        let (src, dst) = (spatial3(&id), spatial3(&dd));
        let d3 = id.len() == 5;
        let img = values(image);
        let u = values(ddf);
        let (n, c, nd) = (id[0], id[1], dd[1]);
        let dvol: usize = dst.iter().product();
        let svol: usize = src.iter().product();
        let mut out = Vec::new();
        let at = |b: usize, ch: usize, p: [isize; 3]| -> f64 {
            let mut q = [0usize; 3];
            for a in 0..3 {
                let m = src[a] as isize;
                let v = match padding {
                    Padding::Zeros if p[a] < 0 || p[a] >= m => return 0.0,
                    Padding::Zeros => p[a],
                    Padding::Border => p[a].clamp(0, m - 1),
                };
                q[a] = v as usize;
            }
            img[(b * c + ch) * svol + (q[0] * src[1] + q[1]) * src[2] + q[2]]
        };
        for b in 0..n {
            for ch in 0..c {
                for z in 0..dst[0] {
                    for y in 0..dst[1] {
                        for x in 0..dst[2] {
                            let o = (z * dst[1] + y) * dst[2] + x;
                            let mut loc = [z as f64, y as f64, x as f64];
                            for a in 0..nd {
                                let axis = if d3 { a } else { a + 1 };
                                loc[axis] += u[(b * nd + a) * dvol + o];
                            }
                            if padding == Padding::Border {
                                for a in 0..3 {
                                    loc[a] = loc[a].clamp(0.0, (src[a] - 1) as f64);
                                }
                            }
                            let f: Vec<f64> = loc.iter().map(|v| v.floor()).collect();
                            let mut acc = 0.0;
                            for corner in 0..8 {
                                let mut w = 1.0;
                                let mut p = [0isize; 3];
                                for a in 0..3 {
                                    let hi = (corner >> a) & 1 == 1;
                                    let fr = loc[a] - f[a];
                                    w *= if hi { fr } else { 1.0 - fr };
                                    p[a] = f[a] as isize + hi as isize;
                                }
                                if w != 0.0 {
                                    acc += w * at(b, ch, p);
                                }
                            }
                            out.push(acc);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn zero_field_is_identity() {
        let mut rng = Rng::new(1);
        for shape in [vec![2, 3, 5, 7], vec![1, 2, 5, 4, 7]] {
            let ndim = shape.len() - 2;
            let img = rng.tensor(&shape, -1.0, 1.0, DType::F32);
            let mut dshape = shape.clone();
            dshape[1] = ndim;
            let ddf = Tensor::zeros(dshape.as_slice(), DType::F32, &Device::Cpu).unwrap();
            for interp in [Interp::Linear, Interp::Nearest] {
                for padding in [Padding::Zeros, Padding::Border] {
                    let out = warp(&img, &ddf, interp, padding).unwrap();
                    assert_eq!(
                        max_abs_diff(&out, &img),
                        0.0,
                        "{shape:?} {interp:?} {padding:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn half_voxel_shift_2d_by_hand() {
        // Image 1x3: [1, 2, 4]; shift +0.5 along x (component 1 of a 2D field).
        let img = t(&[1.0, 2.0, 4.0], &[1, 1, 1, 3]);
        let ddf = t(&[0.0, 0.0, 0.0, 0.5, 0.5, 0.5], &[1, 2, 1, 3]);
        let z = warp(&img, &ddf, Interp::Linear, Padding::Zeros).unwrap();
        assert_eq!(values(&z), vec![1.5, 3.0, 2.0]);
        let b = warp(&img, &ddf, Interp::Linear, Padding::Border).unwrap();
        assert_eq!(values(&b), vec![1.5, 3.0, 4.0]);
        // Shift -1 along y (component 0) on a 2x2 image: row 0 reads row -1.
        let img = t(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
        let ddf = t(&[-1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0], &[1, 2, 2, 2]);
        let z = warp(&img, &ddf, Interp::Linear, Padding::Zeros).unwrap();
        assert_eq!(values(&z), vec![0.0, 0.0, 1.0, 2.0]);
        let b = warp(&img, &ddf, Interp::Nearest, Padding::Border).unwrap();
        assert_eq!(values(&b), vec![1.0, 2.0, 1.0, 2.0]);
    }

    #[test]
    fn axis_order_3d_by_hand() {
        // 2x2x2 image with value = 4z + 2y + x; displacing along component i moves along axis i.
        let img = t(&[0., 1., 2., 3., 4., 5., 6., 7.], &[1, 1, 2, 2, 2]);
        for (axis, step) in [(0usize, 4.0), (1, 2.0), (2, 1.0)] {
            let mut u = vec![0.0; 24];
            for v in &mut u[axis * 8..(axis + 1) * 8] {
                *v = 0.25;
            }
            let ddf = t(&u, &[1, 3, 2, 2, 2]);
            let out = warp(&img, &ddf, Interp::Linear, Padding::Border).unwrap();
            let got = values(&out);
            // Voxel 0 samples 0.25 steps along the axis.
            assert!((got[0] - 0.25 * step).abs() < 1e-12, "axis {axis}: {got:?}");
        }
    }

    #[test]
    fn nearest_rounds_ties_to_even() {
        let img = t(&[10.0, 20.0, 30.0, 40.0], &[1, 1, 1, 4]);
        let ddf = t(
            &[0.0; 4]
                .iter()
                .chain(&[0.5, 0.5, 0.49, 0.51])
                .copied()
                .collect::<Vec<_>>(),
            &[1, 2, 1, 4],
        );
        let out = warp(&img, &ddf, Interp::Nearest, Padding::Zeros).unwrap();
        // 0.5 -> 0, 1.5 -> 2, 2.49 -> 2, 3.51 -> 4 (outside: zero).
        assert_eq!(values(&out), vec![10.0, 30.0, 30.0, 0.0]);
    }

    #[test]
    fn matches_reference_on_random_fields() {
        let mut rng = Rng::new(2);
        let cases: [(&[usize], &[usize]); 4] = [
            (&[2, 3, 5, 6, 7], &[2, 3, 6, 5, 4]),
            (&[1, 1, 9, 8, 7], &[1, 3, 9, 8, 7]),
            (&[2, 2, 7, 9], &[2, 2, 8, 5]),
            (&[1, 1, 1, 5], &[1, 2, 3, 5]),
        ];
        for (ishape, dshape) in cases {
            for amp in [1.5, 6.0] {
                let img = rng.tensor(ishape, -1.0, 1.0, DType::F64);
                let ddf = rng.tensor(dshape, -amp, amp, DType::F64);
                for padding in [Padding::Zeros, Padding::Border] {
                    let out = warp(&img, &ddf, Interp::Linear, padding).unwrap();
                    let want = reference(&img, &ddf, padding);
                    let got = values(&out);
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    assert!(err < 1e-12, "{ishape:?} {padding:?} err {err}");
                }
            }
        }
    }

    #[test]
    fn f32_matches_f64() {
        let mut rng = Rng::new(3);
        let img = rng.tensor(&[1, 2, 6, 7, 8], 0.0, 1.0, DType::F64);
        let ddf = rng.tensor(&[1, 3, 6, 7, 8], -2.0, 2.0, DType::F64);
        let a = warp(&img, &ddf, Interp::Linear, Padding::Zeros).unwrap();
        let img32 = img.to_dtype(DType::F32).unwrap();
        let ddf32 = ddf.to_dtype(DType::F32).unwrap();
        let b = warp(&img32, &ddf32, Interp::Linear, Padding::Zeros).unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-5);
    }

    fn grad_case(ishape: &[usize], dshape: &[usize], amp: f64, interp: Interp, padding: Padding) {
        let mut rng = Rng::new(4 + ishape.len() as u64);
        let img = rng.tensor(ishape, -1.0, 1.0, DType::F64);
        let ddf = rng.tensor(dshape, -amp, amp, DType::F64);
        let f = move |ts: &[Tensor]| warp(&ts[0], &ts[1], interp, padding);
        check_grads(&f, &[img, ddf], 1e-6, 1e-6, &[]);
    }

    #[test]
    fn gradients_3d_linear() {
        grad_case(
            &[1, 2, 4, 5, 3],
            &[1, 3, 4, 5, 3],
            1.5,
            Interp::Linear,
            Padding::Zeros,
        );
        grad_case(
            &[2, 1, 3, 4, 5],
            &[2, 3, 3, 4, 5],
            1.5,
            Interp::Linear,
            Padding::Border,
        );
    }

    #[test]
    fn gradients_2d_linear() {
        grad_case(
            &[2, 2, 5, 7],
            &[2, 2, 5, 7],
            2.0,
            Interp::Linear,
            Padding::Zeros,
        );
        grad_case(
            &[1, 3, 6, 5],
            &[1, 2, 4, 3],
            2.0,
            Interp::Linear,
            Padding::Border,
        );
    }

    #[test]
    fn gradients_large_displacements_merge_scatter_tasks() {
        // Displacements larger than the image make every task touch every row, forcing the
        // scatter plan to merge tasks; the gradient must not change.
        grad_case(
            &[1, 1, 6, 5, 4],
            &[1, 3, 6, 5, 4],
            8.0,
            Interp::Linear,
            Padding::Zeros,
        );
        grad_case(
            &[1, 2, 9, 4],
            &[1, 2, 9, 4],
            12.0,
            Interp::Linear,
            Padding::Border,
        );
    }

    #[test]
    fn gradients_nearest() {
        grad_case(
            &[1, 2, 4, 3, 5],
            &[1, 3, 4, 3, 5],
            1.3,
            Interp::Nearest,
            Padding::Zeros,
        );
        grad_case(
            &[2, 1, 5, 4],
            &[2, 2, 5, 4],
            1.3,
            Interp::Nearest,
            Padding::Border,
        );
        // The field gradient exists and is zero.
        let mut rng = Rng::new(5);
        let img = rng.tensor(&[1, 1, 4, 4], 0.0, 1.0, DType::F64);
        let ddf = Var::from_tensor(&rng.tensor(&[1, 2, 4, 4], -1.0, 1.0, DType::F64)).unwrap();
        let out = warp(&img, &ddf, Interp::Nearest, Padding::Zeros).unwrap();
        let grads = out.sum_all().unwrap().backward().unwrap();
        let g = grads.get(ddf.as_tensor()).unwrap();
        assert!(values(g).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn field_only_gradients_from_kept_slopes() {
        // A single-channel image that does not track gradients: the forward keeps the slopes.
        let mut rng = Rng::new(8);
        for (ishape, dshape, padding) in [
            (&[2, 1, 4, 5, 3][..], &[2, 3, 4, 5, 3][..], Padding::Zeros),
            (&[1, 1, 3, 4, 5], &[1, 3, 4, 3, 5], Padding::Border),
            (&[2, 1, 5, 7], &[2, 2, 5, 7], Padding::Zeros),
            (&[1, 1, 6, 5], &[1, 2, 4, 3], Padding::Border),
        ] {
            let img = rng.tensor(ishape, -1.0, 1.0, DType::F64);
            let ddf = rng.tensor(dshape, -1.5, 1.5, DType::F64);
            let f = move |ts: &[Tensor]| warp(&ts[0].detach(), &ts[1], Interp::Linear, padding);
            check_grads(&f, &[img, ddf], 1e-6, 1e-6, &[0]);
        }
    }

    #[test]
    fn kept_slopes_equal_the_gathered_field_gradient_of_a_unit_output_gradient() {
        let mut rng = Rng::new(10);
        for (is, ds, padding) in [
            (&[2, 1, 4, 5, 6][..], &[2, 3, 5, 4, 6][..], Padding::Zeros),
            (&[1, 1, 7, 6], &[1, 2, 6, 7], Padding::Border),
        ] {
            let img = values(&rng.tensor(is, -1.0, 1.0, DType::F64));
            let ddf = values(&rng.tensor(ds, -2.0, 2.0, DType::F64));
            let geo = Geometry::new(is, ds);
            let op = Warp {
                interp: Interp::Linear,
                padding,
                slope: Some(KeptSlope::default()),
            };
            let out = op.forward(&img, &ddf, geo);
            let plain = Warp { slope: None, ..op };
            assert_eq!(out, plain.forward(&img, &ddf, geo));
            let ones = vec![1.0; out.len()];
            let gathered = WarpBackward {
                interp: Interp::Linear,
                padding,
                want_img: false,
                want_ddf: true,
            }
            .run(&img, &ddf, &ones, geo);
            let gout = Tensor::from_vec(ones, geo.n * geo.dst_vol(), &Device::Cpu).unwrap();
            let mut grad_dims = ds.to_vec();
            grad_dims[1] = 1;
            let kept = plain
                .slope
                .unwrap_or_default()
                .take_scaled(&gout.reshape(grad_dims.as_slice()).unwrap(), ds[1])
                .unwrap();
            assert!(kept.is_none(), "a plain warp keeps nothing");
            let kept = op
                .slope
                .as_ref()
                .unwrap()
                .take_scaled(&gout.reshape(grad_dims.as_slice()).unwrap(), ds[1])
                .unwrap()
                .expect("kept slopes");
            assert_eq!(values(&kept), gathered);
        }
    }

    #[test]
    fn a_second_backward_recomputes_the_kept_field_gradient() {
        let mut rng = Rng::new(9);
        let img = rng.tensor(&[1, 1, 5, 6, 7], 0.0, 1.0, DType::F32);
        let ddf = Var::from_tensor(&rng.tensor(&[1, 3, 5, 6, 7], -2.0, 2.0, DType::F32)).unwrap();
        let w = rng.tensor(&[1, 1, 5, 6, 7], -1.0, 1.0, DType::F32);
        let out = warp(&img, &ddf, Interp::Linear, Padding::Zeros).unwrap();
        let loss = (out * &w).unwrap().sum_all().unwrap();
        let kept = loss.backward().unwrap();
        let recomputed = loss.backward().unwrap();
        let (a, b) = (
            kept.get(ddf.as_tensor()).unwrap(),
            recomputed.get(ddf.as_tensor()).unwrap(),
        );
        assert!(max_abs_diff(a, b) < 1e-6, "{}", max_abs_diff(a, b));
    }

    #[test]
    fn image_only_and_field_only_gradients_agree_with_joint() {
        let mut rng = Rng::new(6);
        let img = Var::from_tensor(&rng.tensor(&[1, 2, 5, 6, 7], 0.0, 1.0, DType::F32)).unwrap();
        let ddf = Var::from_tensor(&rng.tensor(&[1, 3, 5, 6, 7], -2.0, 2.0, DType::F32)).unwrap();
        let w = rng.tensor(&[1, 2, 5, 6, 7], -1.0, 1.0, DType::F32);
        let loss = |a: &Tensor, b: &Tensor| {
            (warp(a, b, Interp::Linear, Padding::Zeros).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let joint = loss(img.as_tensor(), ddf.as_tensor()).backward().unwrap();
        let only_img = loss(img.as_tensor(), &ddf.as_tensor().detach())
            .backward()
            .unwrap();
        let only_ddf = loss(&img.as_tensor().detach(), ddf.as_tensor())
            .backward()
            .unwrap();
        let gi = joint.get(img.as_tensor()).unwrap();
        let gd = joint.get(ddf.as_tensor()).unwrap();
        assert_eq!(
            max_abs_diff(gi, only_img.get(img.as_tensor()).unwrap()),
            0.0
        );
        assert_eq!(
            max_abs_diff(gd, only_ddf.get(ddf.as_tensor()).unwrap()),
            0.0
        );
        assert!(only_img.get(ddf.as_tensor()).is_none());
    }

    #[test]
    fn non_contiguous_and_f32_gradients() {
        let mut rng = Rng::new(7);
        let img = rng.tensor(&[1, 2, 5, 6], -1.0, 1.0, DType::F32);
        let ddf = rng.tensor(&[1, 2, 6, 5], -1.5, 1.5, DType::F32);
        // A transposed (non-contiguous) field gives the same result as its contiguous copy.
        let ddf_t = ddf.transpose(2, 3).unwrap();
        assert!(!ddf_t.is_contiguous());
        let a = warp(&img, &ddf_t, Interp::Linear, Padding::Zeros).unwrap();
        let b = warp(
            &img,
            &ddf_t.contiguous().unwrap(),
            Interp::Linear,
            Padding::Zeros,
        )
        .unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
        // f32 gradients agree with the f64 ones to f32 precision.
        let grads = |dtype: DType| {
            let i = Var::from_tensor(&img.to_dtype(dtype).unwrap()).unwrap();
            let d = Var::from_tensor(&ddf_t.to_dtype(dtype).unwrap()).unwrap();
            let out = warp(
                i.as_tensor(),
                d.as_tensor(),
                Interp::Linear,
                Padding::Border,
            )
            .unwrap();
            let g = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            (
                g.get(i.as_tensor()).unwrap().clone(),
                g.get(d.as_tensor()).unwrap().clone(),
            )
        };
        let (i32g, d32g) = grads(DType::F32);
        let (i64g, d64g) = grads(DType::F64);
        assert!(max_abs_diff(&i32g, &i64g) < 1e-4);
        assert!(max_abs_diff(&d32g, &d64g) < 1e-4);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let img = Tensor::zeros((1, 1, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let good = Tensor::zeros((1, 3, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let two = Tensor::zeros((1, 2, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let batch = Tensor::zeros((2, 3, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let rank = Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let f64s = Tensor::zeros((1, 3, 4, 4, 4), DType::F64, &Device::Cpu).unwrap();
        let flat = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(warp(&img, &good, Interp::Linear, Padding::Zeros).is_ok());
        for bad in [&two, &batch, &rank, &f64s] {
            assert!(warp(&img, bad, Interp::Linear, Padding::Zeros).is_err());
        }
        assert!(warp(&flat, &good, Interp::Linear, Padding::Zeros).is_err());
        let ints = Tensor::zeros((1, 1, 4, 4, 4), DType::U32, &Device::Cpu).unwrap();
        assert!(warp(&ints, &good, Interp::Linear, Padding::Zeros).is_err());
    }
}
