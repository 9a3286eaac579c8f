//! Weight gradient by Winograd `F(3³, 2³)` for the convolutions [`winograd`](super::winograd)
//! covers (3³ kernel, stride 1, no dilation): 64 multiplications per output tile of 2³ and
//! channel pair instead of 216.
//!
//! # The transform
//!
//! In one dimension, the three weight-gradient taps `w_k = g0 d_k + g1 d_{k+1}` of a 2-sample
//! output-gradient tile `g` and its 4-sample input tile `d` are `w = Gᵀ [(A g) ⊙ (Bᵀ d)]`,
//! the transpose of the forward transform (`Bᵀ`, `G`, `A` as there):
//!
//! ```text
//! A g  = (g0, g0 + g1, g0 - g1, -g1)
//! Gᵀ m = (m0 + (m1 + m2) / 2, (m1 - m2) / 2, (m1 + m2) / 2 + m3)
//! ```
//!
//! In 3D each transform runs along every axis, and the products are summed over every tile
//! of every batch item: `Mw[e, co, ci] = Σ_t (A ⊗ A ⊗ A g)[e, co, t] (Bᵀ ⊗ Bᵀ ⊗ Bᵀ d)[e, ci,
//! t]`, then `dW[co, ci] = (Gᵀ ⊗ Gᵀ ⊗ Gᵀ) Mw[·, co, ci]`.
//!
//! # Layout
//!
//! Bands of output tiles as in the forward kernel, but the input channels run across the
//! vector lanes (the input rows are transposed to position-major order once per band row),
//! so the sums over tiles accumulate whole vectors `Mw[e, co, ci..ci + L]`: a register tile
//! of `CO` output channels by `CV` channel vectors, one broadcast of the transformed output
//! gradient per output channel and tile. The output gradient's transform runs with tiles
//! across the lanes, as the forward's. Bands are summed in fixed groups, groups in order, so
//! the result does not depend on the number of threads.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::lanes::{Avx2, Avx512};
use super::lanes::{Isa, Lanes, Portable};
use super::winograd::{
    prefetch, prefetch_next_rows, split_row, supports, transform_input_tile, LINE, POINTS,
};
use super::Core;

/// Whether [`weight`] is the faster kernel for this geometry on `isa`: input channels fill
/// whole vectors, at least 8 output channels, and the tiles along W fill at least two groups
/// of lanes (as the forward's rule).
pub(super) fn pays_off(core: &Core, isa: Isa) -> bool {
    let lanes = isa.lanes();
    supports(core)
        && core.cin.is_multiple_of(lanes)
        && core.cout >= 8
        && core.out[2].div_ceil(2) >= 2 * lanes
}

/// `Gᵀ m` of four values.
fn gradient_1d(m: [f32; 4]) -> [f32; 3] {
    let (sum, difference) = (0.5 * (m[1] + m[2]), 0.5 * (m[1] - m[2]));
    [m[0] + sum, difference, sum + m[3]]
}

/// Sizes shared by every band of one call.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Tiles along D, H, W.
    tiles: [usize; 3],
    /// Vector lanes.
    lanes: usize,
    /// Groups of `lanes` tiles along W.
    groups: usize,
    /// Padded input columns a band reads: `2 groups lanes + 2`.
    cols: usize,
    /// Vectors of input channels: `cin / lanes`.
    civ: usize,
}

impl Geometry {
    fn new(core: &Core, isa: Isa) -> Self {
        let lanes = isa.lanes();
        let tiles = core.out.map(|o| o.div_ceil(2));
        let groups = tiles[2].div_ceil(lanes);
        Self {
            tiles,
            lanes,
            groups,
            cols: 2 * groups * lanes + 2,
            civ: core.cin / lanes,
        }
    }

    /// Tiles along W rounded up to whole groups.
    fn width(&self) -> usize {
        self.groups * self.lanes
    }

    /// Distance between consecutive points `e` of the transformed input: one vector more
    /// than a point's data, so the 64 points of one tile do not share a few cache sets.
    fn v_stride(&self) -> usize {
        (self.tiles[2] * self.civ + 1) * self.lanes
    }

    /// Distance between consecutive points `e` of the transformed output gradient (padded
    /// as [`v_stride`](Self::v_stride)).
    fn ug_stride(&self, cout: usize) -> usize {
        cout * self.width() + self.lanes
    }
}

/// One group's working buffers.
struct Scratch {
    /// Padded input rows, channels across the lanes: `(civ, 4 planes, 4 row slots, cols,
    /// lanes)`; padded row `py` sits in slot `py mod 4`.
    rows: Vec<f32>,
    /// The band `(b, tz, ty)` whose rows `rows` holds.
    holds: Option<(usize, usize, usize)>,
    /// Transformed input, `(POINTS, tiles along W, civ, lanes)`, points `v_stride` apart.
    v: Vec<f32>,
    /// Transformed output gradient, `(POINTS, cout, width)`, points `ug_stride` apart.
    ug: Vec<f32>,
    /// One output channel's 2 × 2 gradient rows split by parity, `(4, 2, width)`.
    split: Vec<f32>,
    /// One transform's partial results, `(POINTS, lanes)`.
    partial: Vec<f32>,
    /// The group's sums `Mw`, `(POINTS, cout, civ, lanes)`.
    sums: Vec<f32>,
}

impl Scratch {
    fn new(core: &Core, geo: &Geometry) -> Self {
        let n = geo.lanes;
        Self {
            rows: vec![0.0; geo.civ * 16 * geo.cols * n],
            holds: None,
            v: vec![0.0; POINTS * geo.v_stride()],
            ug: vec![0.0; POINTS * geo.ug_stride(core.cout)],
            split: vec![0.0; 8 * geo.width()],
            partial: vec![0.0; POINTS * n],
            sums: vec![0.0; POINTS * core.cout * core.cin],
        }
    }
}

/// Everything a band reads.
struct Operands<'a> {
    core: &'a Core,
    geo: Geometry,
    isa: Isa,
    /// The input `(n, cin, inp)`.
    x: &'a [f32],
    /// The output gradient `(n, cout, out)`.
    g: &'a [f32],
}

/// Weight gradient `gW[co, (ci, k)] = sum_o g[co, o] * x[ci, o + k - pad]` for `x` `(n, cin,
/// inp)` and `g` `(n, cout, out)` (as `Core::run_weight`), for a geometry [`pays_off`]
/// accepts on `isa`, summed in a fixed order.
pub(super) fn weight(core: &Core, isa: Isa, x: &[f32], g: &[f32]) -> Vec<f32> {
    assert!(pays_off(core, isa), "winograd weight: unsupported geometry");
    super::direct::check_isa(isa);
    assert!(x.len() >= core.n * core.cin * core.ivol());
    assert!(g.len() >= core.n * core.cout * core.ovol());
    let geo = Geometry::new(core, isa);
    let ops = Operands {
        core,
        geo,
        isa,
        x,
        g,
    };
    let [td, th, _] = geo.tiles;
    let bands: Vec<(usize, usize, usize)> = (0..core.n)
        .flat_map(|b| (0..td).flat_map(move |tz| (0..th).map(move |ty| (b, tz, ty))))
        .collect();
    let per_group = bands.len().div_ceil(super::direct::WEIGHT_GROUPS).max(1);
    let groups: Vec<Vec<f32>> = bands
        .par_chunks(per_group)
        .map(|group| {
            let mut scratch = Scratch::new(core, &geo);
            for &band in group {
                // SAFETY: the CPU supports `isa` (checked above).
                unsafe { run_band(&ops, &mut scratch, band) };
            }
            scratch.sums
        })
        .collect();
    let mut sums = vec![0.0f32; POINTS * core.cout * core.cin];
    for group in groups {
        for (sum, value) in sums.iter_mut().zip(group) {
            *sum += value;
        }
    }
    transform_back(core, &sums)
}

/// `dW[co, ci] = (Gᵀ ⊗ Gᵀ ⊗ Gᵀ) Mw[·, co, ci]` as the weight matrix `(cout, cin * 27)`,
/// columns `(ci, kz, ky, kx)`.
fn transform_back(core: &Core, sums: &[f32]) -> Vec<f32> {
    let (cin, cout) = (core.cin, core.cout);
    let mut out = vec![0.0f32; cout * cin * 27];
    for co in 0..cout {
        for ci in 0..cin {
            let m = |e: usize| sums[(e * cout + co) * cin + ci];
            // Along x (`c`), then y (`b`), then z (`a`).
            let mut by_x = [[[0.0f32; 3]; 4]; 4];
            for (a, plane) in by_x.iter_mut().enumerate() {
                for (b, row) in plane.iter_mut().enumerate() {
                    let e = (a * 4 + b) * 4;
                    *row = gradient_1d([m(e), m(e + 1), m(e + 2), m(e + 3)]);
                }
            }
            let mut by_y = [[[0.0f32; 3]; 3]; 4];
            for (plane, source) in by_y.iter_mut().zip(&by_x) {
                for kx in 0..3 {
                    let column = gradient_1d(std::array::from_fn(|b| source[b][kx]));
                    for (ky, value) in column.into_iter().enumerate() {
                        plane[ky][kx] = value;
                    }
                }
            }
            let taps = &mut out[(co * cin + ci) * 27..][..27];
            for ky in 0..3 {
                for kx in 0..3 {
                    let along_z = gradient_1d(std::array::from_fn(|a| by_y[a][ky][kx]));
                    for (kz, value) in along_z.into_iter().enumerate() {
                        taps[(kz * 3 + ky) * 3 + kx] = value;
                    }
                }
            }
        }
    }
    out
}

/// Runs one band with the kernels of `ops.isa`.
///
/// # Safety
/// The CPU supports `ops.isa`.
unsafe fn run_band(ops: &Operands<'_>, s: &mut Scratch, band: (usize, usize, usize)) {
    match ops.isa {
        // SAFETY: forwarded from the caller.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { band_avx512(ops, s, band) },
        // SAFETY: forwarded from the caller.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { band_avx2(ops, s, band) },
        // SAFETY: forwarded from the caller (the portable lanes need no CPU feature).
        _ => unsafe { band_with::<Portable, 8>(ops, s, band) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn band_avx512(ops: &Operands<'_>, s: &mut Scratch, band: (usize, usize, usize)) {
    // SAFETY: forwarded from the caller (AVX-512F available).
    unsafe { band_with::<Avx512, 16>(ops, s, band) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn band_avx2(ops: &Operands<'_>, s: &mut Scratch, band: (usize, usize, usize)) {
    // SAFETY: forwarded from the caller (AVX2 and FMA available).
    unsafe { band_with::<Avx2, 8>(ops, s, band) }
}

/// One band: stage and transform its input and output gradient, then add their products to
/// the group's sums.
///
/// # Safety
/// The CPU supports `L`, and `L::N` is the geometry's lane count.
#[inline(always)]
unsafe fn band_with<L: Lanes, const CO: usize>(
    ops: &Operands<'_>,
    s: &mut Scratch,
    band: (usize, usize, usize),
) {
    let (core, geo) = (ops.core, ops.geo);
    assert!(L::N == geo.lanes);
    fill_rows(ops, band, s);
    for t in 0..geo.tiles[2] {
        for cv in 0..geo.civ {
            // SAFETY: the CPU supports `L` (caller); the buffers have the sizes
            // `Scratch::new` gives them for this geometry.
            unsafe { input_transform::<L>(&geo, s, (t, cv), band.2) };
        }
    }
    for co in 0..core.cout {
        // SAFETY: as above.
        unsafe { gradient_transform::<L>(ops, s, band, co) };
    }
    let (b, tz, ty) = band;
    for e in 0..POINTS {
        // SAFETY: as above.
        unsafe { accumulate::<L, CO>(core, &geo, s, e) };
        prefetch_next_rows(core, ops.x, (b, tz, ty + 1), (e, POINTS));
        prefetch_next_gradient(core, ops.g, (b, tz, ty + 1), (e, POINTS));
    }
}

/// Requests (see [`prefetch`]) part `part` of `parts` of the output gradient the band
/// `next` reads: its 2 × 2 rows of every output channel.
#[inline(always)]
fn prefetch_next_gradient(
    core: &Core,
    g: &[f32],
    (b, tz, ty): (usize, usize, usize),
    (part, parts): (usize, usize),
) {
    let [od, oh, ow] = core.out;
    let rows = core.cout * 4;
    for k in part * rows / parts..(part + 1) * rows / parts {
        let (co, oz, oy) = (k / 4, 2 * tz + k / 2 % 2, 2 * ty + k % 2);
        if oz >= od || oy >= oh {
            continue;
        }
        let start = (((b * core.cout + co) * od + oz) * oh + oy) * ow;
        let mut line = start;
        while line < start + ow {
            prefetch(g, line);
            line += LINE;
        }
    }
}

/// Makes `s.rows` hold the band's 4 padded planes by 4 padded rows, every channel, channels
/// across the lanes (zero outside the input). When the rows hold the band above (`ty - 1`),
/// its last two rows are this band's first two, and only two rows per plane are staged.
fn fill_rows(ops: &Operands<'_>, (b, tz, ty): (usize, usize, usize), s: &mut Scratch) {
    let (core, geo) = (ops.core, ops.geo);
    let [id, ih, iw] = core.inp;
    let (n, cols, ivol) = (geo.lanes, geo.cols, core.ivol());
    let pad = core.pad;
    // Input columns `p0..p1` land in padded columns `p0 + pad ..` of the band's `cols`.
    let p0 = (-pad[2]).clamp(0, iw as isize) as usize;
    let p1 = (cols as isize - pad[2]).clamp(p0 as isize, iw as isize) as usize;
    let (c0, c1) = (
        (p0 as isize + pad[2]) as usize,
        (p1 as isize + pad[2]) as usize,
    );
    let reuse = ty > 0 && s.holds == Some((b, tz, ty - 1));
    for cv in 0..geo.civ {
        for a in 0..4 {
            let iz = (2 * tz + a) as isize - pad[0];
            for r in if reuse { 2..4 } else { 0..4 } {
                let py = 2 * ty + r;
                let iy = py as isize - pad[1];
                let row = &mut s.rows[((cv * 4 + a) * 4 + py % 4) * cols * n..][..cols * n];
                let inside = (0..id as isize).contains(&iz) && (0..ih as isize).contains(&iy);
                if !inside || p0 >= p1 {
                    row.fill(0.0);
                    continue;
                }
                row[..c0 * n].fill(0.0);
                row[c1 * n..].fill(0.0);
                let first = (b * core.cin + cv * n) * ivol + (iz as usize * ih + iy as usize) * iw;
                super::weight_lanes::transpose(
                    ops.isa,
                    &ops.x[first + p0..],
                    ivol,
                    p1 - p0,
                    &mut row[c0 * n..c1 * n],
                );
            }
        }
    }
    s.holds = Some((b, tz, ty));
}

/// `V[e, t, cv] = (Bᵀ ⊗ Bᵀ ⊗ Bᵀ) d` of tile `t` along W of band row `ty`, channel vector `cv`:
/// along x and y per padded plane into `partial`, then along z into `v`.
///
/// # Safety
/// The CPU supports `L`; the scratch buffers have their sizes for `geo`; `t < tiles[2]`,
/// `cv < civ`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over register arrays unroll.
unsafe fn input_transform<L: Lanes>(
    geo: &Geometry,
    s: &mut Scratch,
    (t, cv): (usize, usize),
    ty: usize,
) {
    let (n, cols) = (L::N, geo.cols);
    assert!(t < geo.tiles[2] && cv < geo.civ);
    assert!(s.rows.len() >= (cv * 16 + 16) * cols * n && 2 * t + 4 <= cols);
    let stride = geo.v_stride();
    assert!(s.partial.len() >= POINTS * n && s.v.len() >= POINTS * stride);
    // SAFETY: the asserts above bound every index below; the CPU supports `L` (caller).
    unsafe {
        let rows = s.rows.as_ptr().add((cv * 16 * cols + 2 * t) * n);
        let out = s.v.as_mut_ptr().add((t * geo.civ + cv) * n);
        transform_input_tile::<L>(
            #[inline(always)]
            |a: usize, r: usize| {
                let p = rows.add((a * 4 + (2 * ty + r) % 4) * cols * n);
                [
                    L::load(p),
                    L::load(p.add(n)),
                    L::load(p.add(2 * n)),
                    L::load(p.add(3 * n)),
                ]
            },
            s.partial.as_mut_ptr(),
            out,
            stride,
        );
    }
}

/// `A g` of two vectors.
#[inline(always)]
unsafe fn gradient_in_1d<L: Lanes>(g: [L::V; 2]) -> [L::V; 4] {
    // SAFETY: the caller guarantees the instruction set.
    unsafe {
        [
            g[0],
            L::add(g[0], g[1]),
            L::sub(g[0], g[1]),
            L::sub(L::zero(), g[1]),
        ]
    }
}

/// `Ug[e, co, t] = (A ⊗ A ⊗ A) g` of output channel `co` for every tile of the band, tiles
/// across the lanes: the band's 2 × 2 gradient rows split by parity (zero outside the
/// output), then along x and y into `partial`, then along z into `ug`.
///
/// # Safety
/// The CPU supports `L`; the scratch buffers have their sizes for the geometry; `co < cout`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over register arrays unroll.
unsafe fn gradient_transform<L: Lanes>(
    ops: &Operands<'_>,
    s: &mut Scratch,
    (b, tz, ty): (usize, usize, usize),
    co: usize,
) {
    let (core, geo) = (ops.core, ops.geo);
    let [od, oh, ow] = core.out;
    let (n, width) = (L::N, geo.width());
    assert!(co < core.cout && s.split.len() >= 8 * width && s.partial.len() >= POINTS * n);
    let stride = geo.ug_stride(core.cout);
    assert!(s.ug.len() >= POINTS * stride);
    for dz in 0..2 {
        for dy in 0..2 {
            let (oz, oy) = (2 * tz + dz, 2 * ty + dy);
            let (even, odd) = s.split[(dz * 2 + dy) * 2 * width..][..2 * width].split_at_mut(width);
            if oz >= od || oy >= oh {
                even.fill(0.0);
                odd.fill(0.0);
                continue;
            }
            let row = &ops.g[(((b * core.cout + co) * od + oz) * oh + oy) * ow..][..ow];
            // SAFETY: the CPU supports `L` (caller); `width` is a multiple of `L::N`.
            unsafe { split_row::<L>(row, 0, even, odd) };
        }
    }
    // SAFETY: the asserts above bound every index below; the CPU supports `L` (caller).
    unsafe {
        let split = s.split.as_ptr();
        let partial = s.partial.as_mut_ptr();
        let ug = s.ug.as_mut_ptr();
        for g in 0..geo.groups {
            for dz in 0..2 {
                let mut by_x = [[L::zero(); 4]; 2];
                for dy in 0..2 {
                    let even = split.add((dz * 2 + dy) * 2 * width + g * n);
                    by_x[dy] = gradient_in_1d::<L>([L::load(even), L::load(even.add(width))]);
                }
                for c in 0..4 {
                    let by_y = gradient_in_1d::<L>([by_x[0][c], by_x[1][c]]);
                    for r in 0..4 {
                        L::store(partial.add(((dz * 4 + r) * 4 + c) * n), by_y[r]);
                    }
                }
            }
            for rc in 0..16 {
                let p = partial.add(rc * n);
                let by_z = gradient_in_1d::<L>([L::load(p), L::load(p.add(16 * n))]);
                for a in 0..4 {
                    let e = a * 16 + rc;
                    L::store(ug.add(e * stride + co * width + g * n), by_z[a]);
                }
            }
        }
    }
}

/// `Mw[e, co, cv] += Σ_t Ug[e, co, t] V[e, t, cv]` for one point `e`, over the band's tiles:
/// register tiles of `CO` output channels, then of 8, then single ones, each by one channel
/// vector at a time.
///
/// # Safety
/// The CPU supports `L`; the scratch buffers have their sizes for `geo`; `e < POINTS`.
#[inline(always)]
unsafe fn accumulate<L: Lanes, const CO: usize>(
    core: &Core,
    geo: &Geometry,
    s: &mut Scratch,
    e: usize,
) {
    let mut co = 0;
    while co + CO <= core.cout {
        for cv in 0..geo.civ {
            // SAFETY: forwarded; `co + CO <= cout`, `cv < civ`.
            unsafe { accumulate_tile::<L, CO>(core, geo, s, e, (co, cv)) };
        }
        co += CO;
    }
    while co + 8 <= core.cout {
        for cv in 0..geo.civ {
            // SAFETY: forwarded; `co + 8 <= cout`, `cv < civ`.
            unsafe { accumulate_tile::<L, 8>(core, geo, s, e, (co, cv)) };
        }
        co += 8;
    }
    while co < core.cout {
        for cv in 0..geo.civ {
            // SAFETY: forwarded; `co < cout`, `cv < civ`.
            unsafe { accumulate_tile::<L, 1>(core, geo, s, e, (co, cv)) };
        }
        co += 1;
    }
}

/// One register tile of [`accumulate`]: output channels `co0 .. co0 + C`, channel vector `cv`.
///
/// # Safety
/// As [`accumulate`], with `co0 + C <= cout` and `cv < civ`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over `C` unroll into registers.
unsafe fn accumulate_tile<L: Lanes, const C: usize>(
    core: &Core,
    geo: &Geometry,
    s: &mut Scratch,
    e: usize,
    (co0, cv): (usize, usize),
) {
    let (n, cout, cin, tw, width) = (L::N, core.cout, core.cin, geo.tiles[2], geo.width());
    assert!(e < POINTS && co0 + C <= cout && cv < geo.civ);
    let (v_stride, ug_stride) = (geo.v_stride(), geo.ug_stride(cout));
    assert!(s.v.len() >= POINTS * v_stride && s.ug.len() >= POINTS * ug_stride);
    assert!(s.sums.len() >= POINTS * cout * cin);
    // SAFETY: the asserts above bound every index below: `V[e, t, cv]` for `t < tw`,
    // `Ug[e, co, t]` and `Mw[e, co, cv]` for `co < co0 + C <= cout`.
    unsafe {
        let v = s.v.as_ptr().add(e * v_stride + cv * n);
        let ug = s.ug.as_ptr().add(e * ug_stride + co0 * width);
        let sums = s.sums.as_mut_ptr().add((e * cout + co0) * cin + cv * n);
        let mut acc = [L::zero(); C];
        for c in 0..C {
            acc[c] = L::load(sums.add(c * cin));
        }
        for t in 0..tw {
            let vt = L::load(v.add(t * geo.civ * n));
            for c in 0..C {
                acc[c] = L::fma(L::splat(ug.add(c * width + t)), vt, acc[c]);
            }
        }
        for c in 0..C {
            L::store(sums.add(c * cin), acc[c]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lanes::Isa;
    use super::super::test_cases::{core, seeded as values, Case};
    use super::super::{ConvSpec, Core};
    use super::*;

    #[test]
    fn one_dimensional_transforms_give_three_gradient_taps() {
        let (d, g) = ([0.5f32, -1.0, 2.0, 3.0], [0.25f32, -2.0]);
        let v = [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]];
        let u = [g[0], g[0] + g[1], g[0] - g[1], -g[1]];
        let w = gradient_1d(std::array::from_fn(|e| u[e] * v[e]));
        let want: [f32; 3] = std::array::from_fn(|k| g[0] * d[k] + g[1] * d[k + 1]);
        assert_eq!(w, want);
    }

    /// Every instruction set that [`pays_off`] accepts against the direct kernels: odd and
    /// even output extents, padding 0, 1, 2 and asymmetric, output channels off the register
    /// tile, two batch items, enough bands that groups run several in a row.
    #[test]
    fn matches_the_direct_kernels() {
        let cases: [Case; 4] = [
            (2, 16, 8, [3, 5, 64], [3; 3], [1; 3], [1; 3]),
            (1, 32, 9, [4, 3, 67], [3; 3], [0; 3], [0; 3]),
            (1, 16, 16, [5, 9, 70], [3; 3], [2, 1, 0], [0, 1, 2]),
            (1, 16, 8, [2, 40, 64], [3; 3], [1; 3], [1; 3]),
        ];
        for case in cases {
            let core = core(&case);
            let x = values(core.n * core.cin * core.ivol(), 3);
            let g = values(core.n * core.cout * core.ovol(), 5);
            let want = super::super::direct::weight(&core, Isa::Portable, &x, &g);
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let mut checked = 0;
            for isa in Isa::supported() {
                if !pays_off(&core, isa) {
                    continue;
                }
                checked += 1;
                let got = weight(&core, isa, &x, &g);
                assert_eq!(got.len(), want.len());
                for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (got - want).abs() <= 2e-5 * scale,
                        "{isa:?} {case:?}: at {i}: {got} vs {want}"
                    );
                }
            }
            assert!(checked > 0, "{case:?}: no instruction set ran");
        }
    }

    #[test]
    fn does_not_depend_on_the_thread_count() {
        let spec = ConvSpec {
            ndim: 3,
            stride: [1; 3],
            lo: [1; 3],
            hi: [1; 3],
        };
        let core = Core::forward(&spec, &[1, 16, 4, 40, 64], 8, [3; 3]);
        let x = values(core.n * core.cin * core.ivol(), 7);
        let g = values(core.n * core.cout * core.ovol(), 9);
        for isa in Isa::supported() {
            let run = |threads: usize| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| weight(&core, isa, &x, &g))
            };
            let one = run(1);
            assert_eq!(one, run(3), "{isa:?}");
            assert_eq!(one, run(8), "{isa:?}");
        }
    }
}
