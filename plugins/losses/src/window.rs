//! Separable window sums for the fused LNCC kernel: a 1D [`Window`] applied along the lines
//! and rows of one image plane, and [`SliceStream`], which applies a window across planes
//! produced one at a time, so that a 3D window sum never needs a full-size buffer.
//!
//! Sums are computed in f64. A box window (all taps equal) uses running sums, O(1) per voxel
//! whatever its length; other windows add their taps one by one.

use crate::simd::simd_kernel;

/// A 1D window: output `y[i] = Σ_t w[t] x[i + t − c]` with `c = (K − 1) / 2` and zeros
/// outside the axis (TensorFlow's `"same"` correlation; for even `K` the extra tap is on the
/// high side).
#[derive(Debug, Clone)]
pub(crate) struct Window {
    weights: Vec<f64>,
    centre: usize,
    /// `Some(w)` when every tap equals `w`: then the window is a box and runs as running sums.
    uniform: Option<f64>,
}

impl Window {
    /// The window with taps `weights` (at least one) and the centre `(K − 1) / 2`.
    pub(crate) fn new(weights: Vec<f64>) -> Self {
        let centre = weights.len().saturating_sub(1) / 2;
        Self::with_centre(weights, centre)
    }

    fn with_centre(weights: Vec<f64>, centre: usize) -> Self {
        let uniform = weights
            .first()
            .copied()
            .filter(|first| weights.iter().all(|w| w == first));
        Self {
            weights,
            centre,
            uniform,
        }
    }

    /// The one-tap window `[1]`, which leaves its input unchanged.
    pub(crate) fn identity() -> Self {
        Self::new(vec![1.0])
    }

    /// The adjoint window (flipped taps, mirrored centre): `Σ_i g[i] (W x)[i] = Σ_j (Wᵀ g)[j]
    /// x[j]` under zero padding.
    pub(crate) fn adjoint(&self) -> Self {
        let mut weights = self.weights.clone();
        weights.reverse();
        let centre = weights.len() - 1 - self.centre;
        Self::with_centre(weights, centre)
    }

    /// The lowest tap offset, `−c`.
    fn lo(&self) -> isize {
        -(self.centre as isize)
    }

    /// The highest tap offset, `K − 1 − c` (≥ 0).
    fn hi(&self) -> isize {
        (self.weights.len() - 1 - self.centre) as isize
    }

    fn is_identity(&self) -> bool {
        self.weights == [1.0]
    }

    /// Filters one contiguous line: `y = W x`. A box of at least [`DOUBLING_BOX`] taps
    /// sums by doubling, other windows add their taps one by one as shifted vectorised
    /// additions. `buffers` are scratch lines.
    #[inline(always)]
    fn filter_line(&self, x: &[f64], y: &mut [f64], buffers: &mut [Vec<f64>; 2]) {
        match self.uniform {
            Some(w) if self.weights.len() >= DOUBLING_BOX => self.box_line(w, x, y, buffers),
            _ => self.add_taps(x, y, 1),
        }
    }

    /// A box along one line by doubling, O(log K) vectorised passes: with `z` the line
    /// padded by `c` zeros in front and `K − 1 − c` behind, `y[i] = w Σ_{m<K} z[i + m]`;
    /// the sums of runs of `2^b` values are built by doubling and those of `K`'s binary
    /// digits added up.
    #[inline(always)]
    fn box_line(&self, w: f64, x: &[f64], y: &mut [f64], buffers: &mut [Vec<f64>; 2]) {
        let (n, k) = (x.len(), self.weights.len());
        let [run, next] = buffers;
        let mut len = n + k - 1;
        for buffer in [&mut *run, &mut *next] {
            if buffer.len() != len {
                buffer.resize(len, 0.0);
            }
        }
        // Only the padding needs clearing: the rest of each buffer is written before use.
        run[..self.centre].fill(0.0);
        run[self.centre + n..].fill(0.0);
        run[self.centre..self.centre + n].copy_from_slice(x);
        let (mut first, mut offset, mut width) = (true, 0, 1);
        loop {
            if k & width != 0 {
                let part = &run[offset..offset + n];
                if first {
                    y.copy_from_slice(part);
                    first = false;
                } else {
                    add(part, y);
                }
                offset += width;
            }
            if 2 * width > k {
                break;
            }
            len -= width;
            let (doubled, source) = (&mut next[..len], &run[..len + width]);
            for i in 0..len {
                doubled[i] = source[i] + source[i + width];
            }
            std::mem::swap(run, next);
            width *= 2;
        }
        if w != 1.0 {
            y.iter_mut().for_each(|v| *v *= w);
        }
    }

    /// Filters along the slowest axis of `x`, whose elements are blocks of `block` contiguous
    /// values (rows of a plane, or single values of a line): block `i` of `y` is
    /// `Σ_t w[t] · block (i + t − c)` of `x`.
    #[inline(always)]
    fn filter_blocks(&self, x: &[f64], y: &mut [f64], block: usize) {
        let n = x.len() / block;
        let (lo, hi) = (self.lo(), self.hi());
        match self.uniform {
            Some(w) => {
                // Running sum of the unweighted taps: block i = block (i − 1) + x[i + hi] −
                // x[i − 1 + lo], scaled by w at the end.
                let at = |j: usize| &x[j * block..(j + 1) * block];
                y[..block].fill(0.0);
                for j in 0..=(hi as usize).min(n - 1) {
                    add(at(j), &mut y[..block]);
                }
                for i in 1..n {
                    let (done, rest) = y.split_at_mut(i * block);
                    let incoming = Some(i + hi as usize).filter(|j| *j < n).map(at);
                    let outgoing = usize::try_from(i as isize - 1 + lo).ok().map(at);
                    slide(
                        &done[(i - 1) * block..],
                        incoming,
                        outgoing,
                        1.0,
                        &mut rest[..block],
                    );
                }
                if w != 1.0 {
                    y.iter_mut().for_each(|v| *v *= w);
                }
            }
            None => self.add_taps(x, y, block),
        }
    }

    /// `y = Σ_t w[t] · (x shifted by t − c blocks)`, each tap one vectorised addition.
    #[inline(always)]
    fn add_taps(&self, x: &[f64], y: &mut [f64], block: usize) {
        let n = x.len() / block;
        let lo = self.lo();
        y.fill(0.0);
        for (t, &w) in self.weights.iter().enumerate() {
            let shift = t as isize + lo;
            let start = (-shift).clamp(0, n as isize) as usize;
            let end = (n as isize - shift).clamp(start as isize, n as isize) as usize;
            if end > start {
                let from = (start as isize + shift) as usize;
                let (src, dst) = (
                    &x[from * block..(from + end - start) * block],
                    &mut y[start * block..end * block],
                );
                match self.uniform {
                    Some(_) => add(src, dst),
                    None => axpy(w, src, dst),
                }
            }
        }
        if let Some(w) = self.uniform.filter(|w| *w != 1.0) {
            y.iter_mut().for_each(|v| *v *= w);
        }
    }
}

/// The shortest box that sums along lines by doubling rather than tap by tap.
const DOUBLING_BOX: usize = 5;

/// `y += x`.
#[inline(always)]
fn add(x: &[f64], y: &mut [f64]) {
    let n = y.len().min(x.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    for i in 0..n {
        y[i] += x[i];
    }
}

/// `out = previous + w (incoming − outgoing)`, a missing term counting as zero: one step of a
/// running window sum.
#[inline(always)]
fn slide(
    previous: &[f64],
    incoming: Option<&[f64]>,
    outgoing: Option<&[f64]>,
    w: f64,
    out: &mut [f64],
) {
    let n = out.len();
    let previous = &previous[..n];
    match (incoming, outgoing) {
        (Some(a), Some(b)) => {
            let (a, b) = (&a[..n], &b[..n]);
            for i in 0..n {
                out[i] = previous[i] + w * (a[i] - b[i]);
            }
        }
        (Some(a), None) => {
            let a = &a[..n];
            for i in 0..n {
                out[i] = previous[i] + w * a[i];
            }
        }
        (None, Some(b)) => {
            let b = &b[..n];
            for i in 0..n {
                out[i] = previous[i] - w * b[i];
            }
        }
        (None, None) => out.copy_from_slice(previous),
    }
}

/// `y += a x`.
#[inline(always)]
fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    let n = y.len().min(x.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    for i in 0..n {
        y[i] += a * x[i];
    }
}

simd_kernel! {
    /// Filters a plane of rows of `width` values: `along_rows` across rows (the slower axis),
    /// `along_lines` along each row. `scratch` is a plane-sized buffer.
    pub(crate) fn filter_plane(
        along_rows: &Window,
        along_lines: &Window,
        src: &[f64],
        dst: &mut [f64],
        scratch: &mut [f64],
        width: usize,
    ) => filter_plane_inner
}

simd_kernel! {
    /// `y += a x` over a whole plane.
    fn add_plane(a: f64, x: &[f64], y: &mut [f64]) => axpy
}

simd_kernel! {
    /// `sums += w (incoming − outgoing)` over a whole plane (see [`slide`]).
    fn slide_plane(incoming: Option<&[f64]>, outgoing: Option<&[f64]>, w: f64, sums: &mut [f64]) =>
        slide_in_place
}

#[inline(always)]
fn slide_in_place(incoming: Option<&[f64]>, outgoing: Option<&[f64]>, w: f64, sums: &mut [f64]) {
    match (incoming, outgoing) {
        (Some(a), Some(b)) => {
            let n = sums.len();
            let (a, b) = (&a[..n], &b[..n]);
            for i in 0..n {
                sums[i] += w * (a[i] - b[i]);
            }
        }
        (Some(a), None) => axpy(w, a, sums),
        (None, Some(b)) => axpy(-w, b, sums),
        (None, None) => {}
    }
}

#[inline(always)]
fn filter_plane_inner(
    along_rows: &Window,
    along_lines: &Window,
    src: &[f64],
    dst: &mut [f64],
    scratch: &mut [f64],
    width: usize,
) {
    if along_lines.is_identity() {
        scratch.copy_from_slice(src);
    } else {
        let mut buffers = [Vec::new(), Vec::new()];
        for (line, out) in src.chunks_exact(width).zip(scratch.chunks_exact_mut(width)) {
            along_lines.filter_line(line, out, &mut buffers);
        }
    }
    if along_rows.is_identity() {
        dst.copy_from_slice(scratch);
    } else {
        along_rows.filter_blocks(scratch, dst, width);
    }
}

/// Window sums across planes: `S(z) = Σ_t w[t] P(z + t − c)` over `depth` planes of `plane`
/// values, where the planes `P` come from a producer called once per plane, in increasing
/// order, only for the planes the requested sums need. Sums must be requested for increasing
/// `z`; consecutive requests with a box window cost two plane updates each. Keeps `K + 1`
/// planes.
pub(crate) struct SliceStream {
    window: Window,
    depth: usize,
    plane: usize,
    ring: Vec<f64>,
    slots: usize,
    /// The next plane the producer has to make.
    next: usize,
    sums: Vec<f64>,
    /// The slice `sums` holds.
    current: Option<usize>,
}

impl SliceStream {
    /// A stream over `depth` planes of `plane` values each.
    pub(crate) fn new(window: Window, depth: usize, plane: usize) -> Self {
        let slots = window.weights.len() + 1;
        Self {
            window,
            depth,
            plane,
            ring: vec![0.0; slots * plane],
            slots,
            next: 0,
            sums: vec![0.0; plane],
            current: None,
        }
    }

    /// `S(z)`; `produce(j, out)` writes plane `j` into `out`.
    pub(crate) fn advance(
        &mut self,
        z: usize,
        mut produce: impl FnMut(usize, &mut [f64]),
    ) -> &[f64] {
        let (lo, hi) = (self.window.lo(), self.window.hi());
        let plane = self.plane;
        self.next = self.next.max((z as isize + lo).max(0) as usize);
        let last = (z + hi as usize).min(self.depth - 1);
        while self.next <= last {
            let slot = self.next % self.slots;
            produce(self.next, &mut self.ring[slot * plane..(slot + 1) * plane]);
            self.next += 1;
        }
        let ring = &self.ring;
        let at = |j: usize| {
            let slot = j % self.slots;
            &ring[slot * plane..(slot + 1) * plane]
        };
        match (self.window.uniform, self.current) {
            (Some(w), Some(previous)) if previous + 1 == z => {
                let incoming = Some(z + hi as usize).filter(|j| *j < self.depth).map(at);
                let outgoing = usize::try_from(z as isize - 1 + lo).ok().map(at);
                slide_plane(incoming, outgoing, w, &mut self.sums);
            }
            _ => {
                self.sums.fill(0.0);
                for (t, &w) in self.window.weights.iter().enumerate() {
                    let j = z as isize + lo + t as isize;
                    if (0..self.depth as isize).contains(&j) {
                        add_plane(w, at(j as usize), &mut self.sums);
                    }
                }
            }
        }
        self.current = Some(z);
        &self.sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `y[i] = Σ_t w[t] x[i + t − c]` straight from the definition.
    fn by_definition(weights: &[f64], x: &[f64]) -> Vec<f64> {
        let c = (weights.len() as isize - 1) / 2;
        (0..x.len() as isize)
            .map(|i| {
                weights
                    .iter()
                    .enumerate()
                    .filter_map(|(t, w)| x.get((i + t as isize - c) as usize).map(|v| w * v))
                    .sum()
            })
            .collect()
    }

    const WINDOWS: [&[f64]; 9] = [
        &[1.0],
        &[2.0, 2.0],
        &[1.0, 1.0, 1.0, 1.0],
        &[1.0; 5],
        &[0.5; 6],
        &[1.0; 9],
        &[1.0; 12],
        &[1.0, 2.0, 3.0, 2.0, 1.0],
        &[0.5, -1.0, 0.25],
    ];

    #[test]
    fn lines_and_blocks_match_the_definition() {
        for (len, weights) in [7, 20]
            .into_iter()
            .flat_map(|len| WINDOWS.map(|w| (len, w)))
        {
            let x: Vec<f64> = (0..len).map(|i| ((i * 7 + 3) % 5) as f64 - 1.5).collect();
            let window = Window::new(weights.to_vec());
            let mut y = vec![0.0; x.len()];
            window.filter_line(&x, &mut y, &mut Default::default());
            let want = by_definition(weights, &x);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12, "{weights:?}: {y:?} vs {want:?}");
            }
            // Blocks of two interleaved copies (x and 2x) filter like two lines.
            let blocks: Vec<f64> = x.iter().flat_map(|v| [*v, 2.0 * v]).collect();
            let mut y = vec![0.0; blocks.len()];
            window.filter_blocks(&blocks, &mut y, 2);
            for (i, w) in want.iter().enumerate() {
                assert!((y[2 * i] - w).abs() < 1e-12 && (y[2 * i + 1] - 2.0 * w).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn the_adjoint_satisfies_the_inner_product_identity() {
        let x: Vec<f64> = (0..6).map(|i| (i as f64 * 0.7).sin()).collect();
        let g: Vec<f64> = (0..6).map(|i| (i as f64 * 1.3).cos()).collect();
        for weights in WINDOWS {
            let window = Window::new(weights.to_vec());
            let (mut wx, mut wtg) = (vec![0.0; 6], vec![0.0; 6]);
            window.filter_line(&x, &mut wx, &mut Default::default());
            window
                .adjoint()
                .filter_line(&g, &mut wtg, &mut Default::default());
            let left: f64 = g.iter().zip(&wx).map(|(a, b)| a * b).sum();
            let right: f64 = wtg.iter().zip(&x).map(|(a, b)| a * b).sum();
            assert!((left - right).abs() < 1e-12, "{weights:?}");
        }
    }

    #[test]
    fn the_slice_stream_matches_the_definition_from_any_start() {
        // Planes of one value: the stream filters the sequence of values.
        let x: Vec<f64> = (0..8).map(|i| ((i * 5 + 1) % 7) as f64).collect();
        for weights in WINDOWS {
            let want = by_definition(weights, &x);
            for start in [0, 3] {
                let mut stream = SliceStream::new(Window::new(weights.to_vec()), x.len(), 1);
                let mut produced = Vec::new();
                for (z, w) in want.iter().enumerate().skip(start) {
                    let got = stream.advance(z, |j, out| {
                        produced.push(j);
                        out[0] = x[j];
                    })[0];
                    assert!((got - w).abs() < 1e-12, "{weights:?} at {z}");
                }
                // Each plane is produced once.
                let mut unique = produced.clone();
                unique.dedup();
                assert_eq!(unique, produced);
            }
        }
    }
}
