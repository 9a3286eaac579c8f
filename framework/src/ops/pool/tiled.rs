//! Max and average pooling whose windows tile the input — kernel = stride, no leading
//! padding, every window inside the input, e.g. the usual `2³` / stride 2 — the fast path of
//! [`super::Pool`].
//!
//! The rayon tasks are slabs: the `k[0]` input planes that one output plane covers, in one
//! channel, so that even a single channel spreads over every thread. Within a slab each row of
//! output windows scans its `k[0] · k[1]` input rows once, in memory order, with branch-free
//! loops that vectorise (window widths 1 and 2 are specialised).
//!
//! The max backward recomputes each window's maximum, then routes the window's gradient to
//! its first voxel in memory order that equals it (the first NaN when the maximum is NaN) —
//! the voxel [`super::PoolKind::Max`] defines. The mean backward gives every voxel of a
//! window the window's gradient divided by its size. Both write every value of the input
//! gradient exactly once (zeros included), so the gradient buffer is never zero-filled first.
//! The mean sums each window's voxels in memory order and divides by the window size, exactly
//! as the per-window definition the tests check it against.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::ops::common::{with_simd, Real};

/// Geometry of a tiling pool: window size (= stride), the input and output sizes of one
/// channel, `[D, H, W]`, and whether it averages (else it takes the maximum).
#[derive(Debug, Clone, Copy)]
pub(super) struct Tiling {
    /// Window size (= stride) per axis.
    pub k: [usize; 3],
    /// Input size of one channel per axis.
    pub inp: [usize; 3],
    /// Output size of one channel per axis (`inp / k`, floored).
    pub out: [usize; 3],
    /// Average pooling (else max pooling).
    pub mean: bool,
}

impl Tiling {
    fn input_volume(&self) -> usize {
        self.inp.iter().product()
    }

    fn output_volume(&self) -> usize {
        self.out.iter().product()
    }

    /// Length of one slab: the input planes under one output plane.
    fn slab(&self) -> usize {
        self.k[0] * self.inp[1] * self.inp[2]
    }

    /// Index in its slab of the first value of input row `(dz, dy)` under output row `oy`
    /// (the rows of a window row, `dz` outer, `dy` inner, are in memory order).
    #[inline(always)]
    fn row_start(&self, oy: usize, dz: usize, dy: usize) -> usize {
        let [_, h, w] = self.inp;
        (dz * h + oy * self.k[1] + dy) * w
    }

    /// Voxels per window.
    fn window_size(&self) -> usize {
        self.k.iter().product()
    }

    /// The maxima (NaN wins) or the means of the windows of output row `oy` of slab `xs`,
    /// into `m`; `K` is the window width when known at compile time, else 0.
    #[inline(always)]
    fn row_windows<T: Real, const K: usize>(&self, xs: &[T], oy: usize, m: &mut [T]) {
        if !self.mean {
            return self.row_maxima::<T, K>(xs, oy, m);
        }
        let kx = width::<K>(self.k[2]);
        let covered = m.len() * kx;
        for dz in 0..self.k[0] {
            for dy in 0..self.k[1] {
                let start = self.row_start(oy, dz, dy);
                sum_row(&xs[start..start + covered], kx, m, dz == 0 && dy == 0);
            }
        }
        let size = T::from_usize(self.window_size());
        for v in m.iter_mut() {
            *v /= size;
        }
    }

    /// The maxima of the windows of output row `oy` of slab `xs`, into `m` (NaN wins); `K`
    /// is the window width when known at compile time, else 0.
    #[inline(always)]
    fn row_maxima<T: Real, const K: usize>(&self, xs: &[T], oy: usize, m: &mut [T]) {
        let kx = width::<K>(self.k[2]);
        let covered = m.len() * kx;
        // Plain loops, no closures: everything here must inline into the caller's
        // AVX2-compiled kernel.
        for dz in 0..self.k[0] {
            for dy in 0..self.k[1] {
                let start = self.row_start(oy, dz, dy);
                fold_row(&xs[start..start + covered], kx, m, dz == 0 && dy == 0);
            }
        }
    }
}

/// The window width: `K` when it is known at compile time (`K > 0`), else `kx`.
#[inline(always)]
fn width<const K: usize>(kx: usize) -> usize {
    if K > 0 {
        K
    } else {
        kx
    }
}

/// `max(a, b)` where a NaN in either wins.
#[inline(always)]
fn nan_max<T: Real>(a: T, b: T) -> T {
    if (b > a) | b.is_nan() {
        b
    } else {
        a
    }
}

/// Folds one input row into the running window maxima `m` (`row` holds `m.len()` windows of
/// `kx` values); `first` starts the maxima from this row. Plain index loops: with `kx` a
/// compile-time constant they unroll over the window and vectorise over windows.
#[inline(always)]
fn fold_row<T: Real>(row: &[T], kx: usize, m: &mut [T], first: bool) {
    let n = m.len();
    let row = &row[..n * kx];
    if first {
        for (i, o) in m.iter_mut().enumerate() {
            let mut v = row[i * kx];
            for j in 1..kx {
                v = nan_max(v, row[i * kx + j]);
            }
            *o = v;
        }
    } else {
        for (i, o) in m.iter_mut().enumerate() {
            let mut v = *o;
            for j in 0..kx {
                v = nan_max(v, row[i * kx + j]);
            }
            *o = v;
        }
    }
}

/// Adds one input row into the running window sums `m` (`row` holds `m.len()` windows of `kx`
/// values, summed left to right); `first` starts the sums from this row.
#[inline(always)]
fn sum_row<T: Real>(row: &[T], kx: usize, m: &mut [T], first: bool) {
    let n = m.len();
    let row = &row[..n * kx];
    for (i, o) in m.iter_mut().enumerate() {
        let mut v = if first { T::zero() } else { *o };
        for j in 0..kx {
            v += row[i * kx + j];
        }
        *o = v;
    }
}

/// Writes each window's share `share[i]` to its `kx` voxels of one input row.
#[inline(always)]
fn spread_row<T: Real>(share: &[T], kx: usize, g: &mut [MaybeUninit<T>]) {
    let n = share.len();
    let g = &mut g[..n * kx];
    for i in 0..n {
        for j in 0..kx {
            g[i * kx + j].write(share[i]);
        }
    }
}

/// Routes the remaining gradient `rem` of each window of one input row (`kx` values per
/// window) to the first voxel equal to the window's maximum `m`, writing the row's gradient
/// `g` (zero elsewhere).
#[inline(always)]
fn route_row<T: Real>(row: &[T], kx: usize, m: &[T], rem: &mut [T], g: &mut [MaybeUninit<T>]) {
    let n = m.len();
    let (row, g, rem) = (&row[..n * kx], &mut g[..n * kx], &mut rem[..n]);
    for i in 0..n {
        let (mv, mut r) = (m[i], rem[i]);
        let m_nan = mv.is_nan();
        for j in 0..kx {
            let v = row[i * kx + j];
            // Bitwise `|` and `&`: no branches, so the loop over windows vectorises.
            let hit = (v == mv) | (v.is_nan() & m_nan);
            g[i * kx + j].write(if hit { r } else { T::zero() });
            r = if hit { T::zero() } else { r };
        }
        rem[i] = r;
    }
}

/// Runs `f::<K>` with the window width as a compile-time constant where it is 1 or 2 (else
/// `K = 0`: read at run time), compiled for AVX2 + FMA where the CPU has them.
macro_rules! by_width {
    ($kx:expr, $f:ident ( $($arg:expr),* )) => {
        match $kx {
            1 => with_simd(|| $f::<T, 1>($($arg),*)),
            2 => with_simd(|| $f::<T, 2>($($arg),*)),
            _ => with_simd(|| $f::<T, 0>($($arg),*)),
        }
    };
}

/// Forward: `y[n, c, o]` = the maximum or the mean over the window of `o`, for every channel
/// of `x`.
pub(super) fn forward<T: Real>(t: &Tiling, x: &[T]) -> Vec<T> {
    let (ivol, ovol) = (t.input_volume(), t.output_volume());
    let oplane = t.out[1] * t.out[2];
    let mut y = Box::<[T]>::new_uninit_slice(x.len() / ivol * ovol);
    y.par_chunks_mut(ovol)
        .zip(x.par_chunks(ivol))
        .for_each(|(yc, xc)| {
            yc.par_chunks_mut(oplane)
                .zip(xc.par_chunks(t.slab()))
                .for_each(|(yp, xs)| by_width!(t.k[2], forward_slab(t, xs, yp)));
        });
    // SAFETY: the output planes of every channel are the chunks above, each written whole
    // by `forward_slab`.
    unsafe { y.assume_init() }.into_vec()
}

#[inline(always)]
fn forward_slab<T: Real, const K: usize>(t: &Tiling, xs: &[T], yp: &mut [MaybeUninit<T>]) {
    let ow = t.out[2];
    let mut m = vec![T::zero(); ow];
    for (oy, out) in yp.chunks_exact_mut(ow).enumerate() {
        t.row_windows::<T, K>(xs, oy, &mut m);
        for (o, &v) in out.iter_mut().zip(&m) {
            o.write(v);
        }
    }
}

/// Backward: the gradient of `x` given the output gradient `g` (one value per window).
pub(super) fn backward<T: Real>(t: &Tiling, x: &[T], g: &[T]) -> Vec<T> {
    let (ivol, ovol) = (t.input_volume(), t.output_volume());
    let oplane = t.out[1] * t.out[2];
    let slab = t.slab();
    let mut gx = Box::<[T]>::new_uninit_slice(x.len());
    gx.par_chunks_mut(ivol)
        .zip(x.par_chunks(ivol).zip(g.par_chunks(ovol)))
        .for_each(|(gc, (xc, goc))| {
            let (slabs, tail) = gc.split_at_mut(t.out[0] * slab);
            write_zeros(tail);
            slabs
                .par_chunks_mut(slab)
                .zip(xc.par_chunks(slab).zip(goc.par_chunks(oplane)))
                .for_each(|(gs, (xs, gp))| by_width!(t.k[2], backward_slab(t, xs, gp, gs)));
        });
    // SAFETY: every channel is split into its slabs (each written whole by `backward_slab`)
    // and the planes after them (zeroed).
    unsafe { gx.assume_init() }.into_vec()
}

#[inline(always)]
fn backward_slab<T: Real, const K: usize>(
    t: &Tiling,
    xs: &[T],
    gp: &[T],
    gs: &mut [MaybeUninit<T>],
) {
    let [_, oh, ow] = t.out;
    let [kz, ky, _] = t.k;
    let kx = width::<K>(t.k[2]);
    let [_, h, w] = t.inp;
    let covered = ow * kx;
    let mut m = vec![T::zero(); ow];
    let mut rem = vec![T::zero(); ow];
    let size = T::from_usize(t.window_size());
    for oy in 0..oh {
        rem.copy_from_slice(&gp[oy * ow..(oy + 1) * ow]);
        if t.mean {
            for v in rem.iter_mut() {
                *v /= size;
            }
        } else {
            t.row_maxima::<T, K>(xs, oy, &mut m);
        }
        for dz in 0..kz {
            for dy in 0..ky {
                let start = t.row_start(oy, dz, dy);
                let (row, rest) = gs[start..start + w].split_at_mut(covered);
                if t.mean {
                    spread_row(&rem, kx, row);
                } else {
                    route_row(&xs[start..start + covered], kx, &m, &mut rem, row);
                }
                write_zeros(rest);
            }
        }
    }
    // Rows below the last row of windows, in every plane of the slab.
    for dz in 0..kz {
        write_zeros(&mut gs[(dz * h + oh * ky) * w..(dz + 1) * h * w]);
    }
}

#[inline(always)]
fn write_zeros<T: Real>(out: &mut [MaybeUninit<T>]) {
    for v in out {
        v.write(T::zero());
    }
}
