//! Winograd convolution `F(2³, 3³)` for f32 convolutions with a 3³ kernel, stride 1 and no
//! dilation (the forward pass of such convolutions and their input gradient): 64
//! multiplications per 2³ output tile and channel pair instead of 216.
//!
//! # The transform
//!
//! In one dimension, two outputs `y_i = g0 d_i + g1 d_{i+1} + g2 d_{i+2}` of a 4-sample input
//! tile `d` are `y = Aᵀ [(G g) ⊙ (Bᵀ d)]`, with
//!
//! ```text
//! Bᵀ d = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
//! G g  = (g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2)
//! Aᵀ m = (m0 + m1 + m2, m1 - m2 - m3)
//! ```
//!
//! In 3D each transform is applied along every axis, and the products are summed over the
//! input channels: `M[e, co] = Σ_ci U[e, ci, co] V[e, ci]` for each of the 64 points `e` of the
//! transformed tile, `U = G ⊗ G ⊗ G` of the kernel, `V = Bᵀ ⊗ Bᵀ ⊗ Bᵀ` of the input tile; then
//! `y = Aᵀ ⊗ Aᵀ ⊗ Aᵀ M`.
//!
//! # Layout
//!
//! The output is cut into *bands*: the 2 × 2 output rows `(2 tz + dz, 2 ty + dy)` of one batch
//! item, every tile along W. A band's tiles run across the vector lanes, `L` tiles per
//! vector (a *group*). Its input, 4 padded planes by 4 padded rows per channel, is first
//! copied split by parity (even and odd padded columns), so the 4 samples of every lane's
//! tile are 4 plain vector loads: even, odd, even one further, odd one further. Then, per
//! band: the input transform of every group and channel, one register-blocked product per
//! transform point (`CO` output channels by `G` groups, as the direct forward kernel), and the
//! output transform, whose even and odd output columns are interleaved into the output rows.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::lanes::{Avx2, Avx512};
use super::lanes::{Isa, Lanes, Portable};
use super::{Core, SharedOut};

/// Points of a transformed tile: 4 per axis.
pub(super) const POINTS: usize = 64;
/// Rayon tasks of one call, each a run of consecutive bands (enough to balance the threads).
const TASKS: usize = 32;

/// Values per cache line (64 bytes of f32).
pub(super) const LINE: usize = 16;

/// Asks the cache hierarchy to bring the line holding `x[i]` into L2 (a hint: it never
/// faults, and does nothing where the target has no prefetch instruction or `i` is past the
/// end).
#[inline(always)]
pub(super) fn prefetch(x: &[f32], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(value) = x.get(i) {
        // SAFETY: a prefetch only hints the cache, and `value` is a valid reference besides.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                (value as *const f32).cast::<i8>(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, i);
}

/// Whether [`forward`] computes this geometry: a 3³ kernel, stride 1, no dilation.
pub(super) fn supports(core: &Core) -> bool {
    core.k == [3; 3] && core.stride == [1; 3] && core.dil == [1; 3]
}

/// Whether [`forward`] is the faster kernel for this geometry on `isa` (measured against the
/// direct kernels; see `docs/src/benchmarks.md`): the transforms cost per channel, so both
/// channel counts must be at least 8, and the tiles along W fill at least two groups of
/// vector lanes (narrower outputs leave lanes idle).
pub(super) fn pays_off(core: &Core, isa: Isa) -> bool {
    supports(core) && core.cin >= 8 && core.cout >= 8 && core.out[2].div_ceil(2) >= 2 * isa.lanes()
}

/// Output channels per register tile of `isa`'s product kernel. It must match the `CO` of the
/// calls in [`run_band`].
fn register_channels(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 8,
        Isa::Avx2 | Isa::Portable => 4,
    }
}

/// `G g` of three kernel taps along one axis.
fn kernel_transform(g: [f32; 3]) -> [f32; 4] {
    [
        g[0],
        0.5 * (g[0] + g[1] + g[2]),
        0.5 * (g[0] - g[1] + g[2]),
        g[2],
    ]
}

/// `U[e, ci, co]` (laid out `(POINTS, cin, cop)`, channels past `cout` zero) of the weight
/// matrix `wmat` `(cout, cin * 27)`, columns `(ci, kz, ky, kx)`.
#[allow(clippy::needless_range_loop)] // `(b, c)` index two arrays the same way.
fn transform_weights(wmat: &[f32], cout: usize, cin: usize, cop: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; POINTS * cin * cop];
    for co in 0..cout {
        for ci in 0..cin {
            let g = &wmat[(co * cin + ci) * 27..][..27];
            // Along x, then y, then z: `t[kz][ky][c]`, `s[kz][b][c]`, then `U[a][b][c]`.
            let t: [[[f32; 4]; 3]; 3] = std::array::from_fn(|kz| {
                std::array::from_fn(|ky| {
                    let at = (kz * 3 + ky) * 3;
                    kernel_transform([g[at], g[at + 1], g[at + 2]])
                })
            });
            let s: [[[f32; 4]; 4]; 3] = std::array::from_fn(|kz| {
                let by_b: [[f32; 4]; 4] = std::array::from_fn(|c| {
                    kernel_transform([t[kz][0][c], t[kz][1][c], t[kz][2][c]])
                });
                std::array::from_fn(|b| std::array::from_fn(|c| by_b[c][b]))
            });
            for b in 0..4 {
                for c in 0..4 {
                    let along_z = kernel_transform([s[0][b][c], s[1][b][c], s[2][b][c]]);
                    for (a, value) in along_z.into_iter().enumerate() {
                        let e = (a * 4 + b) * 4 + c;
                        u[(e * cin + ci) * cop + co] = value;
                    }
                }
            }
        }
    }
    u
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
    /// Length of each parity half of a padded input row: `(groups + 1) * lanes`, at least the
    /// `groups * lanes + 1` the tiles read, in whole vectors.
    half: usize,
    /// Output channels rounded up to the register tile.
    cop: usize,
}

impl Geometry {
    fn new(core: &Core, isa: Isa) -> Self {
        let (lanes, co) = (isa.lanes(), register_channels(isa));
        let tiles = core.out.map(|o| o.div_ceil(2));
        let groups = tiles[2].div_ceil(lanes);
        Self {
            tiles,
            lanes,
            groups,
            half: (groups + 1) * lanes,
            cop: core.cout.next_multiple_of(co),
        }
    }

    /// Distance between consecutive points `e` in the transformed input (`channels = cin`)
    /// or the products (`channels = cout`): one vector more than the points' data, so the
    /// 64 points of one channel and group do not share a few cache sets.
    fn point_stride(&self, channels: usize) -> usize {
        (channels * self.groups + 1) * self.lanes
    }
}

/// One task's working buffers.
struct Scratch {
    /// The padded input rows of a band split by parity, `(cin, 4, 4, 2, half)` (see
    /// [`fill_rows`]).
    rows: Vec<f32>,
    /// The band `(b, tz, ty)` whose rows `rows` holds.
    holds: Option<(usize, usize, usize)>,
    /// Transformed input `V`, `(POINTS, cin, groups, lanes)` with points `point_stride(cin)`
    /// apart.
    v: Vec<f32>,
    /// Products `M`, `(POINTS, cout, groups, lanes)` with points `point_stride(cout)` apart.
    m: Vec<f32>,
    /// One group's partial transforms, `(4, 4, 4, lanes)`.
    partial: Vec<f32>,
    /// One output channel's band, `(2, 2, 2, groups * lanes)`: rows `(dz, dy)`, then even and
    /// odd output columns.
    out: Vec<f32>,
}

impl Scratch {
    fn new(core: &Core, geo: &Geometry) -> Self {
        Self {
            rows: vec![0.0; core.cin * 16 * 2 * geo.half],
            holds: None,
            v: vec![0.0; POINTS * geo.point_stride(core.cin)],
            m: vec![0.0; POINTS * geo.point_stride(core.cout)],
            partial: vec![0.0; POINTS * geo.lanes],
            out: vec![0.0; 8 * geo.groups * geo.lanes],
        }
    }
}

/// Everything a band reads.
struct Operands<'a> {
    core: &'a Core,
    geo: Geometry,
    /// The input `(n, cin, inp)`.
    x: &'a [f32],
    /// Transformed weights (see [`transform_weights`]).
    u: &'a [f32],
    /// The output `(n, cout, out)`, `len` values, of which each band writes its own rows.
    y: SharedOut<f32>,
    len: usize,
}

/// `y = W x` for `wmat` `(cout, cin * 27)` and `x` `(n, cin, inp)` (as `Core::run_forward`),
/// for a geometry [`supports`] accepts.
pub(super) fn forward(core: &Core, isa: Isa, x: &[f32], wmat: &[f32]) -> Vec<f32> {
    assert!(supports(core), "winograd: unsupported geometry");
    super::direct::check_isa(isa);
    let geo = Geometry::new(core, isa);
    let u = transform_weights(wmat, core.cout, core.cin, geo.cop);
    let len = core.n * core.cout * core.ovol();
    assert!(x.len() >= core.n * core.cin * core.ivol());
    // Not zero-filled: the bands cover every output row of every channel (see below).
    let mut y = Box::<[f32]>::new_uninit_slice(len);
    let ops = Operands {
        core,
        geo,
        x,
        u: &u,
        y: SharedOut(y.as_mut_ptr().cast::<f32>()),
        len,
    };
    let [td, th, _] = geo.tiles;
    let bands: Vec<(usize, usize, usize)> = (0..core.n)
        .flat_map(|b| (0..td).flat_map(move |tz| (0..th).map(move |ty| (b, tz, ty))))
        .collect();
    let per_task = bands.len().div_ceil(TASKS).max(1);
    bands.par_chunks(per_task).for_each_init(
        || Scratch::new(core, &geo),
        |scratch, task| {
            for &band in task {
                // SAFETY: the band writes output rows `(2 tz + dz, 2 ty + dy)` of batch item
                // `b`, rows no other band writes, and nothing reads `y` until all tasks are
                // done; the CPU supports `isa` (checked above).
                unsafe { run_band(isa, &ops, scratch, band) };
            }
        },
    );
    // SAFETY: the bands `(b, tz, ty)` cover every batch item and every pair of output planes
    // and rows, and each band writes all `ow` values of its rows for every channel
    // (`interleave`), so every value of `y` is initialised.
    unsafe { y.assume_init() }.into_vec()
}

/// Runs one band with `isa`'s kernels.
///
/// # Safety
/// The CPU supports `isa`; no other thread accesses the band's output rows meanwhile.
unsafe fn run_band(isa: Isa, ops: &Operands<'_>, s: &mut Scratch, band: (usize, usize, usize)) {
    match isa {
        // SAFETY: forwarded from the caller.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { band_avx512(ops, s, band) },
        // SAFETY: forwarded from the caller.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { band_avx2(ops, s, band) },
        // SAFETY: forwarded from the caller (the portable lanes need no CPU feature).
        _ => unsafe { band_with::<Portable, 4, 2>(ops, s, band) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn band_avx512(ops: &Operands<'_>, s: &mut Scratch, band: (usize, usize, usize)) {
    // SAFETY: forwarded from the caller (AVX-512F available).
    unsafe { band_with::<Avx512, 8, 2>(ops, s, band) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn band_avx2(ops: &Operands<'_>, s: &mut Scratch, band: (usize, usize, usize)) {
    // SAFETY: forwarded from the caller (AVX2 and FMA available).
    unsafe { band_with::<Avx2, 4, 2>(ops, s, band) }
}

/// One band: copy its input, transform, multiply, transform back, write its output rows.
///
/// # Safety
/// The CPU supports `L`; `(L::N, CO, G)` is the blocking of the geometry's instruction set;
/// no other thread accesses the band's output rows meanwhile.
#[inline(always)]
unsafe fn band_with<L: Lanes, const CO: usize, const G: usize>(
    ops: &Operands<'_>,
    s: &mut Scratch,
    (b, tz, ty): (usize, usize, usize),
) {
    let (core, geo) = (ops.core, ops.geo);
    assert!(L::N == geo.lanes && geo.cop.is_multiple_of(CO));
    assert!(ops.u.len() >= POINTS * core.cin * geo.cop);
    // SAFETY: the CPU supports `L` (caller).
    unsafe { fill_rows::<L>(core, &geo, ops.x, (b, tz, ty), s) };
    for g in 0..geo.groups {
        for ci in 0..core.cin {
            // SAFETY: the CPU supports `L` (caller); the buffers have the sizes `Scratch::new`
            // gives them for this geometry.
            unsafe { input_transform::<L>(core, &geo, s, (ci, g), ty) };
        }
    }
    for e in 0..POINTS {
        // SAFETY: as above, and `u` holds `POINTS * cin * cop` values (asserted).
        unsafe { multiply::<L, CO, G>(core, &geo, ops.u, s, e) };
        prefetch_next_rows(core, ops.x, (b, tz, ty + 1), (e, POINTS));
    }
    for co in 0..core.cout {
        for g in 0..geo.groups {
            // SAFETY: as above.
            unsafe { output_transform::<L>(core, &geo, s, co, g) };
        }
        // SAFETY: forwarded from the caller: the band's rows are this call's alone.
        unsafe { interleave::<L>(ops, &s.out, (b, tz, ty), co) };
    }
}

/// Requests (see [`prefetch`]) part `part` of `parts` of the input the band `next` (the
/// one below the current band) reads that the current one does not: padded rows `2 ty + 2` and
/// `2 ty + 3` of its 4 planes, every channel. A band requests its successor's rows a part at a
/// time while it multiplies, so the successor finds them in cache.
#[inline(always)]
pub(super) fn prefetch_next_rows(
    core: &Core,
    x: &[f32],
    (b, tz, ty): (usize, usize, usize),
    (part, parts): (usize, usize),
) {
    let [id, ih, iw] = core.inp;
    if 2 * ty >= core.out[1] {
        return;
    }
    let rows = core.cin * 8;
    for k in part * rows / parts..(part + 1) * rows / parts {
        let (ci, a, r) = (k / 8, k / 2 % 4, 2 + k % 2);
        let iz = (2 * tz + a) as isize - core.pad[0];
        let iy = (2 * ty + r) as isize - core.pad[1];
        if !(0..id as isize).contains(&iz) || !(0..ih as isize).contains(&iy) {
            continue;
        }
        let start = (b * core.cin + ci) * core.ivol() + (iz as usize * ih + iy as usize) * iw;
        let mut line = start;
        while line < start + iw {
            prefetch(x, line);
            line += LINE;
        }
    }
}

/// Makes `s.rows` hold the band's 4 padded planes by 4 padded rows of every channel, split
/// by parity: half-row `p` (0 even, 1 odd) of `(ci, a, py mod 4)` holds padded columns
/// `2 j + p` of padded plane `2 tz + a`, row `py` (zero outside the input), for `py` in `2 ty
/// .. 2 ty + 4`. When the rows hold the band above (`ty - 1`), its last two rows are this
/// band's first two, and only two rows per plane are copied.
///
/// # Safety
/// The CPU supports `L`.
#[inline(always)]
unsafe fn fill_rows<L: Lanes>(
    core: &Core,
    geo: &Geometry,
    x: &[f32],
    (b, tz, ty): (usize, usize, usize),
    s: &mut Scratch,
) {
    let [id, ih, iw] = core.inp;
    let half = geo.half;
    let pad = core.pad;
    let reuse = ty > 0 && s.holds == Some((b, tz, ty - 1));
    let first_row = if reuse { 2 } else { 0 };
    for ci in 0..core.cin {
        let xc = &x[(b * core.cin + ci) * core.ivol()..][..core.ivol()];
        for a in 0..4 {
            let iz = (2 * tz + a) as isize - pad[0];
            for r in first_row..4 {
                let py = 2 * ty + r;
                let iy = py as isize - pad[1];
                let at = ((ci * 4 + a) * 4 + py % 4) * 2 * half;
                let (even, odd) = s.rows[at..at + 2 * half].split_at_mut(half);
                if !(0..id as isize).contains(&iz) || !(0..ih as isize).contains(&iy) {
                    even.fill(0.0);
                    odd.fill(0.0);
                    continue;
                }
                let src = &xc[(iz as usize * ih + iy as usize) * iw..][..iw];
                // SAFETY: the CPU supports `L` (caller); `split_row` reads only `src`.
                unsafe { split_row::<L>(src, pad[2], even, odd) };
            }
        }
    }
    s.holds = Some((b, tz, ty));
}

/// `even[j] = row[2 j - pad]`, `odd[j] = row[2 j + 1 - pad]` (zero outside `row`) for every
/// `j < even.len()`, a multiple of `L::N`: two vector loads (masked at the row's ends) and
/// one de-interleave per `L::N` pairs.
///
/// # Safety
/// The CPU supports `L`.
#[inline(always)]
pub(super) unsafe fn split_row<L: Lanes>(
    row: &[f32],
    pad: isize,
    even: &mut [f32],
    odd: &mut [f32],
) {
    let n = L::N;
    assert!(even.len() == odd.len() && even.len().is_multiple_of(n));
    // SAFETY: `load_clipped` reads only inside `row`; the stores stay inside `even` and `odd`
    // (`j + n <= len`); the CPU supports `L` (caller).
    unsafe {
        for j in (0..even.len()).step_by(n) {
            let start = 2 * j as isize - pad;
            let (e, o) = L::deinterleave(
                load_clipped::<L>(row, start),
                load_clipped::<L>(row, start + n as isize),
            );
            L::store(even.as_mut_ptr().add(j), e);
            L::store(odd.as_mut_ptr().add(j), o);
        }
    }
}

/// `Bᵀ d` of four vectors.
#[inline(always)]
pub(super) unsafe fn input_1d<L: Lanes>(d: [L::V; 4]) -> [L::V; 4] {
    // SAFETY: the caller guarantees the instruction set.
    unsafe {
        [
            L::sub(d[0], d[2]),
            L::add(d[1], d[2]),
            L::sub(d[2], d[1]),
            L::sub(d[1], d[3]),
        ]
    }
}

/// `Aᵀ m` of four vectors.
#[inline(always)]
unsafe fn output_1d<L: Lanes>(m: [L::V; 4]) -> [L::V; 2] {
    // SAFETY: the caller guarantees the instruction set.
    unsafe {
        [
            L::add(L::add(m[0], m[1]), m[2]),
            L::sub(L::sub(m[1], m[2]), m[3]),
        ]
    }
}

/// `row[start + i]` in lane `i`, zero where `start + i` is outside `row`: a full load inside,
/// a masked one across an end.
///
/// # Safety
/// The CPU supports `L`.
#[inline(always)]
unsafe fn load_clipped<L: Lanes>(row: &[f32], start: isize) -> L::V {
    let n = L::N as isize;
    let lo = (-start).clamp(0, n) as usize;
    let hi = (row.len() as isize - start).clamp(0, n) as usize;
    let p = row.as_ptr().wrapping_offset(start);
    // SAFETY: lanes `lo..hi` are exactly those with `0 <= start + i < len`; the full load
    // happens only when that is every lane; the CPU supports `L` (caller).
    unsafe {
        if lo == 0 && hi == L::N {
            L::load(p)
        } else if lo >= hi {
            L::zero()
        } else {
            L::load_range(p, lo, hi)
        }
    }
}

/// `V[e, ci, g] = (Bᵀ ⊗ Bᵀ ⊗ Bᵀ) d` for the tiles of group `g` of band row `ty` (whose padded
/// row `2 ty + r` sits in slot `(2 ty + r) mod 4`): along x and y per padded plane into
/// `partial`, then along z into `v`.
///
/// # Safety
/// The CPU supports `L`; the scratch buffers have their sizes for `geo` and `ci < cin`,
/// `g < groups`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over register arrays unroll.
unsafe fn input_transform<L: Lanes>(
    core: &Core,
    geo: &Geometry,
    s: &mut Scratch,
    (ci, g): (usize, usize),
    ty: usize,
) {
    let (n, half) = (L::N, geo.half);
    assert!(ci < core.cin && g < geo.groups);
    // Reads end at row `(ci, 3, 3)`'s odd half, index `g * n + n < half`.
    assert!(s.rows.len() >= (ci * 16 + 16) * 2 * half);
    let stride = geo.point_stride(core.cin);
    assert!(s.partial.len() >= POINTS * n && s.v.len() >= POINTS * stride);
    // SAFETY: the asserts above bound every index below; the CPU supports `L` (caller).
    unsafe {
        let rows = s.rows.as_ptr().add(ci * 16 * 2 * half + g * n);
        let out = s.v.as_mut_ptr().add((ci * geo.groups + g) * n);
        transform_input_tile::<L>(
            #[inline(always)]
            |a: usize, r: usize| {
                let even = rows.add((a * 4 + (2 * ty + r) % 4) * 2 * half);
                let odd = even.add(half);
                [
                    L::load(even),
                    L::load(odd),
                    L::load(even.add(1)),
                    L::load(odd.add(1)),
                ]
            },
            s.partial.as_mut_ptr(),
            out,
            stride,
        );
    }
}

/// `(Bᵀ ⊗ Bᵀ ⊗ Bᵀ) d` of one vector of tiles (or of channels, for the weight gradient):
/// `samples(a, r)` gives the 4 sample vectors of row `r` of plane `a` of the tile. Along x and
/// y per plane into `partial` (64 vectors), then along z: point `e` goes to `out + e * stride`.
///
/// # Safety
/// The CPU supports `L`; `samples` is safe to call for `a, r < 4`; `partial` is valid for 64
/// vectors and `out + e * stride` for one vector, `e < POINTS`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over register arrays unroll.
pub(super) unsafe fn transform_input_tile<L: Lanes>(
    samples: impl Fn(usize, usize) -> [L::V; 4],
    partial: *mut f32,
    out: *mut f32,
    stride: usize,
) {
    let n = L::N;
    // SAFETY: forwarded from the caller.
    unsafe {
        for a in 0..4 {
            let mut by_x = [[L::zero(); 4]; 4];
            for r in 0..4 {
                by_x[r] = input_1d::<L>(samples(a, r));
            }
            for c in 0..4 {
                let by_y = input_1d::<L>([by_x[0][c], by_x[1][c], by_x[2][c], by_x[3][c]]);
                for r in 0..4 {
                    L::store(partial.add(((a * 4 + r) * 4 + c) * n), by_y[r]);
                }
            }
        }
        for rc in 0..16 {
            let p = partial.add(rc * n);
            let by_z = input_1d::<L>([
                L::load(p),
                L::load(p.add(16 * n)),
                L::load(p.add(32 * n)),
                L::load(p.add(48 * n)),
            ]);
            for a in 0..4 {
                L::store(out.add((a * 16 + rc) * stride), by_z[a]);
            }
        }
    }
}

/// `M[e, co, g] = Σ_ci U[e, ci, co] V[e, ci, g]` for one point `e`, in register tiles of
/// `CO` channels by `G` groups (then single groups).
///
/// # Safety
/// The CPU supports `L`; the scratch buffers have their sizes for `geo`; `u` holds `POINTS *
/// cin * cop` values; `e < POINTS`.
#[inline(always)]
unsafe fn multiply<L: Lanes, const CO: usize, const G: usize>(
    core: &Core,
    geo: &Geometry,
    u: &[f32],
    s: &mut Scratch,
    e: usize,
) {
    let mut g0 = 0;
    while g0 + G <= geo.groups {
        // SAFETY: forwarded; `g0 + G <= groups`.
        unsafe { multiply_tile::<L, CO, G>(core, geo, u, s, e, g0) };
        g0 += G;
    }
    while g0 < geo.groups {
        // SAFETY: forwarded; `g0 < groups`.
        unsafe { multiply_tile::<L, CO, 1>(core, geo, u, s, e, g0) };
        g0 += 1;
    }
}

/// One register tile of [`multiply`]: every channel block, groups `g0 .. g0 + NG`.
///
/// # Safety
/// As [`multiply`], with `g0 + NG <= groups`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over `CO`/`NG` unroll into registers.
unsafe fn multiply_tile<L: Lanes, const CO: usize, const NG: usize>(
    core: &Core,
    geo: &Geometry,
    u: &[f32],
    s: &mut Scratch,
    e: usize,
    g0: usize,
) {
    let (n, cin, cout, groups) = (L::N, core.cin, core.cout, geo.groups);
    assert!(e < POINTS && g0 + NG <= groups);
    assert!(u.len() >= POINTS * cin * geo.cop);
    let (vstride, mstride) = (geo.point_stride(cin), geo.point_stride(cout));
    assert!(s.v.len() >= POINTS * vstride && s.m.len() >= POINTS * mstride);
    // SAFETY: the asserts above bound every index below: `V[e, ci, g]`, `U[e, ci, co]` for
    // `co < cop`, and `M[e, co, g]` stored only for `co < cout`.
    unsafe {
        let v = s.v.as_ptr().add(e * vstride + g0 * n);
        let ue = u.as_ptr().add(e * cin * geo.cop);
        let m = s.m.as_mut_ptr().add(e * mstride + g0 * n);
        for cb in 0..geo.cop / CO {
            let mut acc = [[L::zero(); NG]; CO];
            for ci in 0..cin {
                let vi = v.add(ci * groups * n);
                let mut xv = [L::zero(); NG];
                for j in 0..NG {
                    xv[j] = L::load(vi.add(j * n));
                }
                let w = ue.add(ci * geo.cop + cb * CO);
                for c in 0..CO {
                    let wv = L::splat(w.add(c));
                    for j in 0..NG {
                        acc[c][j] = L::fma(wv, xv[j], acc[c][j]);
                    }
                }
            }
            for c in 0..CO {
                let co = cb * CO + c;
                if co >= cout {
                    break;
                }
                for j in 0..NG {
                    L::store(m.add((co * groups + j) * n), acc[c][j]);
                }
            }
        }
    }
}

/// `(Aᵀ ⊗ Aᵀ ⊗ Aᵀ) M[·, co, g]` into `out`: rows `(dz, dy)`, even and odd columns, lanes of
/// group `g`.
///
/// # Safety
/// The CPU supports `L`; the scratch buffers have their sizes for `geo`; `co < cout`,
/// `g < groups`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over register arrays unroll.
unsafe fn output_transform<L: Lanes>(
    core: &Core,
    geo: &Geometry,
    s: &mut Scratch,
    co: usize,
    g: usize,
) {
    let (n, groups, cout) = (L::N, geo.groups, core.cout);
    assert!(co < cout && g < groups);
    let stride = geo.point_stride(cout);
    assert!(s.m.len() >= POINTS * stride && s.partial.len() >= POINTS * n);
    assert!(s.out.len() >= 8 * groups * n);
    // SAFETY: the asserts above bound every index below; the CPU supports `L` (caller).
    unsafe {
        let m = s.m.as_ptr().add((co * groups + g) * n);
        let partial = s.partial.as_mut_ptr();
        for a in 0..4 {
            let mut r = [[L::zero(); 2]; 4];
            for b in 0..4 {
                let p = m.add((a * 4 + b) * 4 * stride);
                r[b] = output_1d::<L>([
                    L::load(p),
                    L::load(p.add(stride)),
                    L::load(p.add(2 * stride)),
                    L::load(p.add(3 * stride)),
                ]);
            }
            for dx in 0..2 {
                let by_y = output_1d::<L>([r[0][dx], r[1][dx], r[2][dx], r[3][dx]]);
                for dy in 0..2 {
                    L::store(partial.add(((a * 2 + dy) * 2 + dx) * n), by_y[dy]);
                }
            }
        }
        let out = s.out.as_mut_ptr().add(g * n);
        for yx in 0..4 {
            let p = partial.add(yx * n);
            let by_z = output_1d::<L>([
                L::load(p),
                L::load(p.add(4 * n)),
                L::load(p.add(8 * n)),
                L::load(p.add(12 * n)),
            ]);
            for dz in 0..2 {
                // Row `(dz, dy)`, parity `dx`, for `yx = dy * 2 + dx`.
                L::store(out.add((dz * 4 + yx) * groups * n), by_z[dz]);
            }
        }
    }
}

/// Writes output channel `co` of the band from `out` (rows `(dz, dy)`, even and odd
/// columns): output columns `2 j` and `2 j + 1` of each row inside the output.
///
/// # Safety
/// The CPU supports `L`; no other thread accesses the band's output rows meanwhile; `ops.y`
/// points to `ops.len` values.
#[inline(always)]
unsafe fn interleave<L: Lanes>(
    ops: &Operands<'_>,
    out: &[f32],
    (b, tz, ty): (usize, usize, usize),
    co: usize,
) {
    let core = ops.core;
    let [od, oh, ow] = core.out;
    let width = ops.geo.groups * ops.geo.lanes;
    for dz in 0..2 {
        let oz = 2 * tz + dz;
        for dy in 0..2 {
            let oy = 2 * ty + dy;
            if oz >= od || oy >= oh {
                continue;
            }
            let at = (((b * core.cout + co) * od + oz) * oh + oy) * ow;
            assert!(at + ow <= ops.len);
            // SAFETY: `at + ow <= len` (asserted); the row belongs to this band, which no
            // other thread accesses meanwhile (caller).
            let row = unsafe { std::slice::from_raw_parts_mut(ops.y.at(at), ow) };
            let even = &out[((dz * 2 + dy) * 2) * width..][..width];
            let odd = &out[((dz * 2 + dy) * 2 + 1) * width..][..width];
            let (n, pairs) = (L::N, ow / 2);
            let whole = pairs / n * n;
            for j in (0..whole).step_by(n) {
                // SAFETY: `j + n <= pairs <= width`, so the loads stay in `even` and `odd`
                // and the stores in `row` (`2 (j + n) <= ow`); the CPU supports `L` (caller).
                unsafe {
                    let (lo, hi) =
                        L::interleave(L::load(even.as_ptr().add(j)), L::load(odd.as_ptr().add(j)));
                    L::store(row.as_mut_ptr().add(2 * j), lo);
                    L::store(row.as_mut_ptr().add(2 * j + n), hi);
                }
            }
            for j in whole..pairs {
                row[2 * j] = even[j];
                row[2 * j + 1] = odd[j];
            }
            if ow % 2 == 1 {
                row[ow - 1] = even[pairs];
            }
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
    fn takes_only_wide_outputs_with_enough_channels() {
        let same = ConvSpec {
            ndim: 3,
            stride: [1; 3],
            lo: [1; 3],
            hi: [1; 3],
        };
        let core =
            |dims: [usize; 5], cout: usize, k: [usize; 3]| Core::forward(&same, &dims, cout, k);
        let wide = core([1, 16, 8, 8, 64], 16, [3; 3]);
        assert!(pays_off(&wide, Isa::Avx512) && pays_off(&wide, Isa::Avx2));
        // 32 wide: one group of 16 tiles fills AVX2's lanes twice, AVX-512's once.
        let narrow = core([1, 16, 8, 8, 32], 16, [3; 3]);
        assert!(!pays_off(&narrow, Isa::Avx512) && pays_off(&narrow, Isa::Avx2));
        assert!(!pays_off(&core([1, 2, 8, 8, 64], 16, [3; 3]), Isa::Avx512));
        assert!(!pays_off(&core([1, 16, 8, 8, 64], 3, [3; 3]), Isa::Avx512));
        assert!(!pays_off(
            &core([1, 16, 8, 8, 64], 16, [1, 3, 3]),
            Isa::Avx512
        ));
    }

    #[test]
    fn one_dimensional_transforms_give_two_correlation_outputs() {
        let (d, g) = ([0.5f32, -1.0, 2.0, 3.0], [0.25f32, -2.0, 1.5]);
        let v = [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]];
        let u = kernel_transform(g);
        let m: Vec<f32> = u.iter().zip(v).map(|(u, v)| u * v).collect();
        let y = [m[0] + m[1] + m[2], m[1] - m[2] - m[3]];
        let want = [
            g[0] * d[0] + g[1] * d[1] + g[2] * d[2],
            g[0] * d[1] + g[1] * d[2] + g[2] * d[3],
        ];
        assert_eq!(y, want);
    }

    /// Every instruction set against the direct kernels, on sizes with odd and even output
    /// extents, padding 0, 1 and 2 (and asymmetric), channel counts off the register tile,
    /// and two batch items.
    #[test]
    fn matches_the_direct_kernels() {
        // The last case has enough bands that tasks run several in a row (rows reused).
        let cases: [Case; 6] = [
            (1, 1, 1, [4, 4, 4], [3; 3], [0; 3], [0; 3]),
            (2, 3, 5, [5, 6, 7], [3; 3], [1; 3], [1; 3]),
            (1, 16, 16, [6, 5, 37], [3; 3], [1; 3], [1; 3]),
            (1, 4, 9, [3, 4, 5], [3; 3], [2, 1, 0], [0, 1, 2]),
            (1, 2, 3, [7, 3, 20], [3; 3], [1, 0, 2], [2, 1, 1]),
            (1, 2, 8, [9, 40, 9], [3; 3], [1; 3], [1; 3]),
        ];
        for case in cases {
            let core = core(&case);
            let x = values(core.n * core.cin * core.ivol(), 7);
            let w = values(core.cout * core.cin * 27, 11);
            let want = super::super::direct::forward(&core, Isa::Portable, &x, &w);
            for isa in Isa::supported() {
                let got = forward(&core, isa, &x, &w);
                assert_eq!(got.len(), want.len());
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()) * (core.cin as f32).sqrt() * 4.0,
                        "{isa:?} {case:?}: at {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
