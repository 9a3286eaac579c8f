//! Pooling with any kernel, stride and padding — windows that overlap, leave gaps or reach
//! into the padding, e.g. `3³` / stride 2 / padding 1 — the general path of [`super::Pool`].
//!
//! A window is a box, so its maximum or sum is reduced one axis at a time, each pass over whole
//! rows or planes so that it vectorises:
//! 1. along W: each input row is copied between sentinels standing for the padding (`-inf`
//!    for the maximum, zero for the sum), every window starting in the padded row is reduced by
//!    folding `K_W` shifted copies of the row, and every `S_W`-th window is kept;
//! 2. along H: the reduced rows of each window, elementwise;
//! 3. along D: the reduced planes of each window, elementwise. Each input plane is reduced
//!    over W and H once, into a ring of `K_D` planes that the output planes read.
//!
//! The rayon tasks are the channels.
//!
//! Max pooling keeps, with every partial maximum, its in-plane position, so each window's
//! maximum is known with its voxel: the first voxel in memory order holding the maximum, or the
//! first NaN (as the per-window definition of [`super::PoolKind::Max`]). Every pass meets its
//! candidates in memory order (W first, the fastest axis; D last) and keeps the earlier one on
//! ties, which picks exactly that voxel; a padding sentinel gives way to any voxel. The
//! backward redoes the forward and adds each window's gradient to its voxel, zeroing each
//! input plane just before the first window that reaches it.
//!
//! The average backward is the transpose of the same passes: the output gradients divided by
//! their window sizes are summed into each input plane (D), spread along W (each window's share
//! placed at its start in the padded row, then `K_W` shifted adds), then along H. Every input
//! voxel is written once (zero where no window holds it), so nothing is zero-filled first.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::ops::common::{with_simd, Real};

/// Largest in-plane position the max path tracks (positions are `u32`).
pub(super) const MAX_PLANE: usize = u32::MAX as usize;

/// One axis of the geometry.
#[derive(Debug, Clone)]
struct Axis {
    /// Input range `[a, b)` of the window of each output index (never empty).
    windows: Vec<(usize, usize)>,
    /// Output range `[a, b)` of the windows that hold each input index (empty for an input
    /// index no window holds).
    covers: Vec<(usize, usize)>,
}

impl Axis {
    /// The axis of `windows` over an input of size `n` (window bounds non-decreasing).
    fn new(windows: Vec<(usize, usize)>, n: usize) -> Self {
        let (mut first, mut end) = (0, 0);
        let covers = (0..n)
            .map(|i| {
                while first < windows.len() && windows[first].1 <= i {
                    first += 1;
                }
                while end < windows.len() && windows[end].0 <= i {
                    end += 1;
                }
                (first, end.max(first))
            })
            .collect();
        Axis { windows, covers }
    }

    /// Size of the window of output index `o`.
    #[inline(always)]
    fn size(&self, o: usize) -> usize {
        self.windows[o].1 - self.windows[o].0
    }
}

/// The geometry of a general pool: `[D, H, W]` axes of one channel.
#[derive(Debug, Clone)]
pub(super) struct Separable {
    /// Max pooling (else average).
    max: bool,
    /// Input size of one channel.
    inp: [usize; 3],
    /// Output size of one channel.
    out: [usize; 3],
    /// The windows of each axis, `[D, H, W]`.
    axes: [Axis; 3],
    /// Window size, stride and leading padding along W.
    kernel_w: usize,
    stride_w: usize,
    pad_w: usize,
}

impl Separable {
    /// The geometry of pooling one channel of size `inp` (`[D, H, W]`) into `out` with windows
    /// of `kernel` voxels every `stride` voxels, starting `pad` voxels before the input (every
    /// window holds at least one voxel); `max` selects max (else average) pooling.
    pub(super) fn new(
        max: bool,
        inp: [usize; 3],
        out: [usize; 3],
        kernel: [usize; 3],
        stride: [usize; 3],
        pad: [usize; 3],
    ) -> Self {
        let axes = [0, 1, 2].map(|a| {
            let windows = (0..out[a])
                .map(|o| {
                    let start = o * stride[a];
                    let end = (start + kernel[a]).saturating_sub(pad[a]).min(inp[a]);
                    (start.saturating_sub(pad[a]), end)
                })
                .collect();
            Axis::new(windows, inp[a])
        });
        Separable {
            max,
            inp,
            out,
            axes,
            kernel_w: kernel[2],
            stride_w: stride[2],
            pad_w: pad[2],
        }
    }

    fn input_volume(&self) -> usize {
        self.inp.iter().product()
    }

    fn output_volume(&self) -> usize {
        self.out.iter().product()
    }

    fn output_plane(&self) -> usize {
        self.out[1] * self.out[2]
    }

    /// Windows along W computed per input row before every `S`-th is kept: those starting
    /// at the first `(OW - 1)·S + 1` voxels of the padded row, rounded up to whole vectors so
    /// the folds run no scalar remainder (the extra ones are never kept).
    fn slide_len(&self) -> usize {
        ((self.out[2] - 1) * self.stride_w + 1).next_multiple_of(16)
    }

    /// Length of a padded input row: the leading padding, the row, and padding after it as
    /// far as the last computed window reaches.
    fn padded_len(&self) -> usize {
        (self.pad_w + self.inp[2]).max(self.slide_len() + self.kernel_w - 1)
    }

    /// Planes in the ring: the most input planes one window holds.
    fn ring_planes(&self) -> usize {
        (0..self.out[0])
            .map(|o| self.axes[0].size(o))
            .max()
            .unwrap_or(1)
    }
}

/// Whether candidate `c` replaces the running maximum `b` when candidates arrive in memory
/// order: a greater value, or the first NaN.
#[inline(always)]
fn replaces<T: Real>(c: T, b: T) -> bool {
    // Bitwise `|` and `&`: no branches, so the loops over rows vectorise.
    (c > b) | (c.is_nan() & !b.is_nan())
}

/// Position of the padding sentinels along W.
const PADDING: u32 = u32::MAX;

/// Folds candidates `(c, c_at)` into the running maxima `(m, m_at)` elementwise, where each
/// candidate comes after the one it meets in memory order. With `PADDED`, a running maximum
/// at [`PADDING`] is a sentinel that any candidate replaces.
#[inline(always)]
fn fold_max<T: Real, const PADDED: bool>(m: &mut [T], m_at: &mut [u32], c: &[T], c_at: &[u32]) {
    let n = m.len();
    let (m_at, c, c_at) = (&mut m_at[..n], &c[..n], &c_at[..n]);
    for i in 0..n {
        // Every operand loaded up front: conditional loads would become masked loads and
        // stores, which are slow (microcoded on AMD).
        let (cv, ca, mv, ma) = (c[i], c_at[i], m[i], m_at[i]);
        let take = replaces(cv, mv) | (PADDED & (ma == PADDING));
        m[i] = if take { cv } else { mv };
        m_at[i] = if take { ca } else { ma };
    }
}

/// Per-thread buffers of the max passes.
struct MaxScratch<T> {
    /// One input row between sentinels (`-inf`, never chosen over a voxel) standing for the
    /// padding along W, and the in-plane positions of its voxels.
    padded: Vec<T>,
    padded_at: Vec<u32>,
    /// The maxima of the windows along W starting at each voxel of the padded row (see
    /// [`Separable::slide_len`]).
    slide: Vec<T>,
    slide_at: Vec<u32>,
    /// One input plane reduced along W, `H·OW`.
    rows: Vec<T>,
    rows_at: Vec<u32>,
    /// The ring of input planes reduced along W and H, `OH·OW` each.
    ring: Vec<T>,
    ring_at: Vec<u32>,
    /// The maxima of one output plane, their in-plane positions and their planes.
    best: Vec<T>,
    best_at: Vec<u32>,
    best_z: Vec<u32>,
}

impl<T: Real> MaxScratch<T> {
    fn new(p: &Separable) -> Self {
        let h = p.inp[1];
        let [_, _, ow] = p.out;
        let op = p.output_plane();
        let (slide, padded) = (p.slide_len(), p.padded_len());
        let ring = p.ring_planes() * op;
        MaxScratch {
            padded: vec![T::from_f64(f64::NEG_INFINITY); padded],
            padded_at: vec![PADDING; padded],
            slide: vec![T::zero(); slide],
            slide_at: vec![0; slide],
            rows: vec![T::zero(); h * ow],
            rows_at: vec![0; h * ow],
            ring: vec![T::zero(); ring],
            ring_at: vec![0; ring],
            best: vec![T::zero(); op],
            best_at: vec![0; op],
            best_z: vec![0; op],
        }
    }
}

/// Reduces input plane `plane` (`H·W`) over the windows along W, then H, into `out` / `out_at`
/// (`OH·OW` maxima and their in-plane positions).
#[inline(always)]
fn max_plane<T: Real>(
    p: &Separable,
    plane: &[T],
    s: &mut MaxScratch<T>,
    out: &mut [T],
    out_at: &mut [u32],
) {
    let [_, h, w] = p.inp;
    let ow = p.out[2];
    let (lo, stride, k) = (p.pad_w, p.stride_w, p.kernel_w);
    let n = s.slide.len();
    for y in 0..h {
        s.padded[lo..lo + w].copy_from_slice(&plane[y * w..][..w]);
        let start = (y * w) as u32;
        for (x, at) in s.padded_at[lo..lo + w].iter_mut().enumerate() {
            *at = start + x as u32;
        }
        let (m, m_at) = (&mut s.slide[..], &mut s.slide_at[..]);
        m.copy_from_slice(&s.padded[..n]);
        m_at.copy_from_slice(&s.padded_at[..n]);
        for t in 1..k {
            fold_max::<T, true>(m, m_at, &s.padded[t..], &s.padded_at[t..]);
        }
        let (r, r_at) = (&mut s.rows[y * ow..][..ow], &mut s.rows_at[y * ow..][..ow]);
        for ox in 0..ow {
            r[ox] = m[ox * stride];
            r_at[ox] = m_at[ox * stride];
        }
    }
    for (oy, &(ya, yb)) in p.axes[1].windows.iter().enumerate() {
        let (o, o_at) = (&mut out[oy * ow..][..ow], &mut out_at[oy * ow..][..ow]);
        o.copy_from_slice(&s.rows[ya * ow..][..ow]);
        o_at.copy_from_slice(&s.rows_at[ya * ow..][..ow]);
        for y in ya + 1..yb {
            fold_max::<T, false>(o, o_at, &s.rows[y * ow..], &s.rows_at[y * ow..]);
        }
    }
}

/// Max-pools one channel `xc`: for each output plane `oz`, calls `emit(oz, maxima, in-plane
/// positions, planes)` with the plane's maxima and where in `xc` each one lies.
#[inline(always)]
fn max_channel<T: Real>(
    p: &Separable,
    xc: &[T],
    s: &mut MaxScratch<T>,
    mut emit: impl FnMut(usize, &[T], &[u32], &[u32]),
) {
    let plane = p.inp[1] * p.inp[2];
    let op = p.output_plane();
    let slots = p.ring_planes();
    let mut ring = std::mem::take(&mut s.ring);
    let mut ring_at = std::mem::take(&mut s.ring_at);
    let mut ready = 0;
    for (oz, &(za, zb)) in p.axes[0].windows.iter().enumerate() {
        for z in za.max(ready)..zb {
            let slot = z % slots * op;
            max_plane(
                p,
                &xc[z * plane..][..plane],
                s,
                &mut ring[slot..][..op],
                &mut ring_at[slot..][..op],
            );
        }
        ready = ready.max(zb);
        let (best, best_at, best_z) =
            (&mut s.best[..op], &mut s.best_at[..op], &mut s.best_z[..op]);
        let first = za % slots * op;
        best.copy_from_slice(&ring[first..][..op]);
        best_at.copy_from_slice(&ring_at[first..][..op]);
        best_z.fill(za as u32);
        for z in za + 1..zb {
            let slot = z % slots * op;
            let (src, src_at) = (&ring[slot..][..op], &ring_at[slot..][..op]);
            for i in 0..op {
                let (cv, ca, bv, ba, bz) = (src[i], src_at[i], best[i], best_at[i], best_z[i]);
                let take = replaces(cv, bv);
                best[i] = if take { cv } else { bv };
                best_at[i] = if take { ca } else { ba };
                best_z[i] = if take { z as u32 } else { bz };
            }
        }
        emit(oz, best, best_at, best_z);
    }
    s.ring = ring;
    s.ring_at = ring_at;
}

/// Per-thread buffers of the average passes.
struct SumScratch<T> {
    /// One input row between zeros standing for the padding along W (forward), or the
    /// gradient of one padded row (backward; a scratch serves one direction only).
    padded: Vec<T>,
    /// The sums of the windows along W starting at each voxel of the padded row (forward, see
    /// [`Separable::slide_len`]), or the gradients of the windows at their starts (backward).
    slide: Vec<T>,
    /// One input plane summed along W, `H·OW` (forward), or one plane of gathered gradients
    /// spread along W, `OH·W` (backward).
    rows: Vec<T>,
    /// The ring of input planes summed along W and H (forward), or the gradient of one input
    /// plane gathered over D, `OH·OW` (backward).
    ring: Vec<T>,
    /// One output plane's sums (forward).
    plane: Vec<T>,
    /// One channel's output gradient over the window sizes (backward).
    share: Vec<T>,
    /// The window sizes over H and W of one output plane, `size_H(oy) · size_W(ox)`.
    sizes_yx: Vec<T>,
}

impl<T: Real> SumScratch<T> {
    fn new(p: &Separable) -> Self {
        let [_, h, w] = p.inp;
        let [_, oh, ow] = p.out;
        let op = p.output_plane();
        let sizes_yx = (0..oh)
            .flat_map(|oy| (0..ow).map(move |ox| (oy, ox)))
            .map(|(oy, ox)| T::from_usize(p.axes[1].size(oy) * p.axes[2].size(ox)))
            .collect();
        SumScratch {
            padded: vec![T::zero(); p.padded_len()],
            slide: vec![T::zero(); p.slide_len()],
            rows: vec![T::zero(); (h * ow).max(oh * w)],
            ring: vec![T::zero(); p.ring_planes() * op],
            plane: vec![T::zero(); op],
            share: vec![T::zero(); p.output_volume()],
            sizes_yx,
        }
    }
}

/// Sums input plane `plane` (`H·W`) over the windows along W, then H, into `out` (`OH·OW`).
#[inline(always)]
fn sum_plane<T: Real>(p: &Separable, plane: &[T], s: &mut SumScratch<T>, out: &mut [T]) {
    let [_, h, w] = p.inp;
    let ow = p.out[2];
    let (lo, stride, k) = (p.pad_w, p.stride_w, p.kernel_w);
    let n = s.slide.len();
    for y in 0..h {
        s.padded[lo..lo + w].copy_from_slice(&plane[y * w..][..w]);
        let m = &mut s.slide[..];
        m.copy_from_slice(&s.padded[..n]);
        for t in 1..k {
            add_into(m, &s.padded[t..][..n]);
        }
        for (r, ox) in s.rows[y * ow..][..ow].iter_mut().zip(0..) {
            *r = m[ox * stride];
        }
    }
    for (oy, &(ya, yb)) in p.axes[1].windows.iter().enumerate() {
        let o = &mut out[oy * ow..][..ow];
        o.copy_from_slice(&s.rows[ya * ow..][..ow]);
        for y in ya + 1..yb {
            add_into(o, &s.rows[y * ow..][..ow]);
        }
    }
}

/// Average-pools one channel `xc` into `yc`.
#[inline(always)]
fn mean_channel<T: Real>(
    p: &Separable,
    xc: &[T],
    yc: &mut [MaybeUninit<T>],
    s: &mut SumScratch<T>,
) {
    let plane = p.inp[1] * p.inp[2];
    let op = p.output_plane();
    let slots = p.ring_planes();
    let mut ring = std::mem::take(&mut s.ring);
    let mut ready = 0;
    for (oz, &(za, zb)) in p.axes[0].windows.iter().enumerate() {
        for z in za.max(ready)..zb {
            let slot = z % slots * op;
            sum_plane(p, &xc[z * plane..][..plane], s, &mut ring[slot..][..op]);
        }
        ready = ready.max(zb);
        let sums = &mut s.plane[..op];
        sums.copy_from_slice(&ring[za % slots * op..][..op]);
        for z in za + 1..zb {
            add_into(sums, &ring[z % slots * op..][..op]);
        }
        let cz = T::from_usize(p.axes[0].size(oz));
        for ((y, &v), &cyx) in yc[oz * op..][..op].iter_mut().zip(&*sums).zip(&s.sizes_yx) {
            y.write(v / (cz * cyx));
        }
    }
    s.ring = ring;
}

/// The gradient of one channel of average pooling: `gc` (the input's) from `goc` (the
/// output's).
#[inline(always)]
fn mean_channel_backward<T: Real>(
    p: &Separable,
    goc: &[T],
    gc: &mut [MaybeUninit<T>],
    s: &mut SumScratch<T>,
) {
    let [_, h, w] = p.inp;
    let (op, ow, oh) = (p.output_plane(), p.out[2], p.out[1]);
    // Each output's share: its gradient over its window size.
    let share = &mut s.share[..goc.len()];
    for (oz, (sp, gp)) in share
        .chunks_exact_mut(op)
        .zip(goc.chunks_exact(op))
        .enumerate()
    {
        let cz = T::from_usize(p.axes[0].size(oz));
        for ((v, &g), &cyx) in sp.iter_mut().zip(gp).zip(&s.sizes_yx) {
            *v = g / (cz * cyx);
        }
    }
    let gathered = &mut s.ring[..op];
    let spread = &mut s.rows[..oh * w];
    let (lo, stride, k) = (p.pad_w, p.stride_w, p.kernel_w);
    let (padded, starts) = (&mut s.padded[..], &mut s.slide[..]);
    let n = starts.len();
    // Only the window starts are ever written, so the rest stays zero.
    starts.fill(T::zero());
    for (z, gz) in gc.chunks_exact_mut(h * w).enumerate() {
        let (oa, ob) = p.axes[0].covers[z];
        if oa == ob {
            write_zeros(gz);
            continue;
        }
        gathered.copy_from_slice(&share[oa * op..][..op]);
        for oz in oa + 1..ob {
            add_into(gathered, &share[oz * op..][..op]);
        }
        // Along W, the transpose of the forward's sliding sums: each window's gradient at its
        // start in the padded row, then added to every voxel of the window.
        for (g_row, s_row) in gathered.chunks_exact(ow).zip(spread.chunks_exact_mut(w)) {
            for (ox, &g) in g_row.iter().enumerate() {
                starts[ox * stride] = g;
            }
            padded.fill(T::zero());
            for t in 0..k {
                add_into(&mut padded[t..][..n], starts);
            }
            s_row.copy_from_slice(&padded[lo..lo + w]);
        }
        for (y, out) in gz.chunks_exact_mut(w).enumerate() {
            let (ya, yb) = p.axes[1].covers[y];
            if ya == yb {
                write_zeros(out);
                continue;
            }
            for (o, &v) in out.iter_mut().zip(&spread[ya * w..][..w]) {
                o.write(v);
            }
            // SAFETY: just written.
            let out = unsafe { assume_init_mut(out) };
            for oy in ya + 1..yb {
                add_into(out, &spread[oy * w..][..w]);
            }
        }
    }
}

/// Forward: `y[n, c, o]` = the maximum or the mean over the window of `o`, for every channel
/// of `x`.
pub(super) fn forward<T: Real>(p: &Separable, x: &[T]) -> Vec<T> {
    let (ivol, ovol) = (p.input_volume(), p.output_volume());
    let op = p.output_plane();
    let mut y = Box::<[T]>::new_uninit_slice(x.len() / ivol * ovol);
    let chunks = y.par_chunks_mut(ovol).zip(x.par_chunks(ivol));
    if p.max {
        chunks.for_each_init(
            || MaxScratch::new(p),
            |s, (yc, xc)| {
                with_simd(
                    #[inline(always)]
                    || {
                        max_channel(p, xc, s, |oz, m, _, _| {
                            for (y, &v) in yc[oz * op..][..op].iter_mut().zip(m) {
                                y.write(v);
                            }
                        });
                    },
                );
            },
        );
    } else {
        chunks.for_each_init(
            || SumScratch::new(p),
            |s, (yc, xc)| {
                with_simd(
                    #[inline(always)]
                    || mean_channel(p, xc, yc, s),
                )
            },
        );
    }
    // SAFETY: every output plane of every channel is written: by `emit` (max) or by
    // `mean_channel`.
    unsafe { y.assume_init() }.into_vec()
}

/// Backward: the gradient of `x` given the output gradient `g` (one value per window).
pub(super) fn backward<T: Real>(p: &Separable, x: &[T], g: &[T]) -> Vec<T> {
    let (ivol, ovol) = (p.input_volume(), p.output_volume());
    let (plane, op) = (p.inp[1] * p.inp[2], p.output_plane());
    let mut gx = Box::<[T]>::new_uninit_slice(x.len());
    let chunks = gx
        .par_chunks_mut(ivol)
        .zip(x.par_chunks(ivol).zip(g.par_chunks(ovol)));
    if p.max {
        chunks.for_each_init(
            || MaxScratch::new(p),
            |s, (gc, (xc, goc))| {
                // Input planes are zeroed just before the first window that reaches them, so
                // the zeros are still in cache when the gradients land on them.
                let mut zeroed = 0;
                with_simd(
                    #[inline(always)]
                    || {
                        max_channel(p, xc, s, |oz, _, at, z| {
                            let end = p.axes[0].windows[oz].1;
                            if end > zeroed {
                                write_zeros(&mut gc[zeroed * plane..end * plane]);
                                zeroed = end;
                            }
                            // SAFETY: planes `..zeroed` are written (zeros, then gradients added).
                            let gc = unsafe { assume_init_mut(&mut gc[..zeroed * plane]) };
                            let go = &goc[oz * op..][..op];
                            for i in 0..op {
                                gc[z[i] as usize * plane + at[i] as usize] += go[i];
                            }
                        });
                    },
                );
                write_zeros(&mut gc[zeroed * plane..]);
            },
        );
    } else {
        chunks.for_each_init(
            || SumScratch::new(p),
            |s, (gc, (_, goc))| {
                with_simd(
                    #[inline(always)]
                    || mean_channel_backward(p, goc, gc, s),
                )
            },
        );
    }
    // SAFETY: every input plane of every channel is written: zeroed then added to (max), or
    // by `mean_channel_backward`.
    unsafe { gx.assume_init() }.into_vec()
}

/// `dst += src`, elementwise (equal lengths).
#[inline(always)]
fn add_into<T: Real>(dst: &mut [T], src: &[T]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d += v;
    }
}

/// Writes zeros to `out`.
#[inline(always)]
fn write_zeros<T: Real>(out: &mut [MaybeUninit<T>]) {
    for v in out {
        v.write(T::zero());
    }
}

/// The values of a slice whose every element is written.
///
/// # Safety
/// Every element of `s` must be initialised.
#[inline(always)]
unsafe fn assume_init_mut<T>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`, and the caller guarantees every element
    // is initialised.
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_invert_windows() {
        // Kernel 3, stride 2, padding 1 over 6: windows [0,2) [1,4) [3,6).
        let axis = Axis::new(vec![(0, 2), (1, 4), (3, 6)], 6);
        assert_eq!(
            axis.covers,
            vec![(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 3)]
        );
        // Kernel 1, stride 3 over 7: windows [0,1) [3,4) [6,7); the gaps are held by none.
        let axis = Axis::new(vec![(0, 1), (3, 4), (6, 7)], 7);
        assert_eq!(
            axis.covers,
            vec![(0, 1), (1, 1), (1, 1), (1, 2), (2, 2), (2, 2), (2, 3)]
        );
    }

    #[test]
    fn ties_go_to_the_earlier_position() {
        assert!(replaces(2.0f32, 1.0));
        assert!(!replaces(1.0f32, 1.0));
        assert!(replaces(f32::NAN, 1.0));
        assert!(!replaces(f32::NAN, f32::NAN));
        assert!(!replaces(5.0f32, f32::NAN));
        // A padding sentinel gives way to any voxel, even one at -inf, and never replaces one.
        let pad = f32::NEG_INFINITY;
        let (mut m, mut at) = (vec![pad, 1.0, f32::NAN, 2.0], vec![PADDING, 4, 5, 6]);
        let c = [f32::NEG_INFINITY, 1.0, 2.0, pad];
        fold_max::<f32, true>(&mut m, &mut at, &c, &[0, 1, 2, PADDING]);
        assert_eq!((m[0], m[1], m[3]), (f32::NEG_INFINITY, 1.0, 2.0));
        assert!(m[2].is_nan());
        assert_eq!(at, vec![0, 4, 5, 6]);
    }
}
