//! Direct f32 convolution for stride 1 and no input dilation (the forward pass of stride-1
//! convolutions, their input gradient, and their weight gradient), without column buffers.
//!
//! # Layout
//!
//! The output is cut into tiles of `rows` output rows of one output plane. Each tile first
//! copies the input it reads into a zero-padded [`Slab`] (about L2-sized), in which output
//! position `p = (r, ox)` reads tap `j = (ci, kz, ky, kx)` at `base(p) + off(j)`, with
//! `base(p) = r * wp + ox`: one offset per tap, the same for every position, and no bounds to
//! check. The tile's positions run row by row in vectors of `L` lanes (the last vector of a
//! row masked when `L` does not divide the row width), and the kernels write the output (or
//! read the output gradient) in place:
//!
//! * forward: a register tile of `CO` output channels by `NV` position vectors; for each tap
//!   it loads `NV` slab vectors and broadcasts `CO` weights
//!   (`y[co, p] += w[co, j] * slab[base(p) + off(j)]`);
//! * weight gradient: a register tile of `CO` output channels by `KB` taps, each a vector of
//!   partial sums over positions (`dW[co, j] += sum_p g[co, p] * slab[base(p) + off(j)]`),
//!   added to per-lane sums once per tile. Tiles are short enough that the gradient rows and
//!   slab rows one register tile streams stay in L1 while the next register tile reuses them.
//!
//! Weight-gradient tiles are summed in a fixed order (tiles in fixed groups, groups in order),
//! so the result does not depend on the number of threads or on how they are scheduled.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::lanes::{Avx2, Avx512};
use super::lanes::{Isa, Lanes, Portable};
use super::slab::Slab;
use super::weight_lanes;
use super::{Core, SharedOut};

/// Slab values of a forward tile, about 128 KiB in f32: the slab stays in L2 while the tile's
/// register tiles sweep over it.
const FORWARD_BUDGET: usize = 1 << 15;
/// Output positions per weight-gradient tile: `CO` gradient rows and the input rows of `KB`
/// taps over this many positions fit in L1.
const WEIGHT_POSITIONS: usize = 1 << 10;
/// Tiles are made small enough that there are at least this many (when the output allows).
const MIN_TILES: usize = 16;
/// Rayon tasks of the forward pass, each a run of consecutive tiles (enough to balance the
/// threads; consecutive tiles share slab planes).
const FORWARD_TASKS: usize = 32;
/// Largest per-lane accumulator (values) the weight gradient keeps per group; larger weights
/// are reduced to scalars after every tile instead.
const PER_LANE_BUDGET: usize = 1 << 18;
/// Number of groups the weight gradient's tiles are summed in (fixed, so the result does not
/// depend on the thread count).
pub(super) const WEIGHT_GROUPS: usize = 16;

/// Whether the direct kernels compute this geometry (stride 1, no input dilation).
pub(super) fn supports(core: &Core) -> bool {
    core.stride == [1; 3] && core.dil == [1; 3]
}

/// Register blocking of one instruction set.
#[derive(Debug, Clone, Copy)]
struct Blocking {
    /// f32 lanes per register.
    lanes: usize,
    /// Forward: output channels per register tile.
    co: usize,
    /// Weight gradient: output channels per register tile.
    wco: usize,
    /// Weight gradient: taps per register tile.
    wkb: usize,
}

/// The blocking of `isa`. It must match the const parameters of the `*_avx512`, `*_avx2` and
/// portable calls below (the kernels assert the sizes it implies). Each register tile fits the
/// register file without spills: AVX-512 8 × 3 forward and 4 × 6 weight accumulators of 32
/// registers, AVX2 4 × 2 and 2 × 6 of 16.
fn blocking(isa: Isa) -> Blocking {
    match isa {
        Isa::Avx512 => Blocking {
            lanes: 16,
            co: 8,
            wco: 4,
            wkb: 6,
        },
        Isa::Avx2 => Blocking {
            lanes: 8,
            co: 4,
            wco: 2,
            wkb: 6,
        },
        Isa::Portable => Blocking {
            lanes: 8,
            co: 4,
            wco: 2,
            wkb: 4,
        },
    }
}

/// Output rows per tile: at most `cap` (at least 1), few enough that there are `MIN_TILES`
/// tiles when the output has that many rows, and shared out evenly over each plane.
fn tile_rows(core: &Core, cap: usize) -> usize {
    let oh = core.out[1];
    let by_tasks = (oh * core.n * core.out[0]).div_ceil(MIN_TILES);
    let cap = cap.min(by_tasks).clamp(1, oh);
    oh.div_ceil(oh.div_ceil(cap))
}

/// Output rows per weight-gradient tile.
pub(super) fn weight_tile_rows(core: &Core) -> usize {
    tile_rows(core, WEIGHT_POSITIONS / core.out[2].max(1))
}

/// Tiles `(batch, output plane, first output row)` of `rows` rows, in a fixed order: down
/// the planes for each band of rows, so consecutive tiles share all but one slab plane.
pub(super) fn tiles(core: &Core, rows: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for b in 0..core.n {
        for oy in (0..core.out[1]).step_by(rows) {
            for oz in 0..core.out[0] {
                out.push((b, oz, oy));
            }
        }
    }
    out
}

/// The tap offsets of slabs of `rows` rows for each phase `oz mod KD`.
fn offsets_by_phase(core: &Core, rows: usize, len: usize) -> Vec<Vec<usize>> {
    let template = Slab::new(core, rows, 0);
    (0..core.k[0])
        .map(|phase| {
            let mut offs = template.tap_offsets(core, phase);
            offs.resize(len, 0);
            offs
        })
        .collect()
}

/// One tile: `rows` output rows of one output plane, for every channel.
#[derive(Debug, Clone, Copy)]
struct RowTile {
    /// Output rows in the tile.
    rows: usize,
    /// Output row width.
    ow: usize,
    /// Slab row width.
    wp: usize,
    /// Index of channel 0's first position in the output (forward) or the output gradient
    /// (weight gradient).
    o0: usize,
    /// Channel stride of the output or output gradient.
    ostride: usize,
}

impl RowTile {
    fn new(core: &Core, slab: &Slab, rows: usize, (b, oz, oy): (usize, usize, usize)) -> Self {
        let [_, oh, ow] = core.out;
        Self {
            rows: rows.min(oh - oy),
            ow,
            wp: slab.wp,
            o0: b * core.cout * core.ovol() + (oz * oh + oy) * ow,
            ostride: core.ovol(),
        }
    }

    /// Vectors of `lanes` per row, and the lanes used in a row's last vector.
    fn row_vectors(&self, lanes: usize) -> (usize, usize) {
        let nvr = self.ow.div_ceil(lanes);
        (nvr, self.ow - (nvr - 1) * lanes)
    }

    /// One past the largest slab index a kernel reads at tap offset `max_off`.
    fn x_end(&self, lanes: usize, max_off: usize) -> usize {
        let (nvr, _) = self.row_vectors(lanes);
        (self.rows - 1) * self.wp + nvr * lanes + max_off
    }

    /// One past the largest output (or gradient) index of the tile for `cout` channels.
    fn o_end(&self, cout: usize) -> usize {
        self.o0 + (cout - 1) * self.ostride + self.rows * self.ow
    }
}

/// Panics unless this CPU supports `isa` (the kernels below rely on it).
pub(super) fn check_isa(isa: Isa) {
    assert!(
        Isa::supported().contains(&isa),
        "direct convolution: {isa:?} is not supported by this CPU"
    );
}

/// `y = W x` for `wmat` `(cout, cin * kvol)` and `x` `(n, cin, inp)` (as `Core::run_forward`).
pub(super) fn forward(core: &Core, isa: Isa, x: &[f32], wmat: &[f32]) -> Vec<f32> {
    check_isa(isa);
    let bl = blocking(isa);
    let packed = pack_forward_weights(wmat, core.cout, core.krows(), bl.co);
    let per_row = core.cin * core.k[0] * (core.out[2] + core.k[2] - 1);
    let rows = tile_rows(core, FORWARD_BUDGET / per_row.max(1));
    let offs = offsets_by_phase(core, rows, core.krows());
    let (ivol, len) = (core.ivol(), core.n * core.cout * core.ovol());
    // Not zero-filled: the tiles cover every output row of every channel (see below).
    let mut y = Box::<[f32]>::new_uninit_slice(len);
    let out = SharedOut(y.as_mut_ptr().cast::<f32>());
    let tiles = tiles(core, rows);
    let per_task = tiles.len().div_ceil(FORWARD_TASKS);
    tiles.par_chunks(per_task).for_each_init(
        || Slab::new(core, rows, bl.lanes),
        |slab, task| {
            for &at @ (b, _, _) in task {
                let tile = RowTile::new(core, slab, rows, at);
                let xb = &x[b * core.cin * ivol..(b + 1) * core.cin * ivol];
                let phase = slab.fill(core, xb, at, tile.rows);
                let offs = &offs[phase];
                // SAFETY: the tile writes y[b, co, oz, oy + r, ..] for every co < cout and r <
                // tile.rows: rows no other tile writes, and nothing reads `y` until all tasks
                // are done; `out` points to `len` values.
                unsafe {
                    forward_kernel(isa, &slab.data, &packed, offs, core.cout, tile, (out, len))
                };
            }
        },
    );
    // SAFETY: the tiles `(b, oz, oy)` cover every batch item, output plane and output row
    // (`tiles`), and each tile wrote all `ow` values of its rows for every `co < cout`
    // (`forward_tile`), so every value of `y` is initialised.
    unsafe { y.assume_init() }.into_vec()
}

/// `(cout, krows)` as `(cout / co, krows, co)`, padded with zero channels to a multiple of `co`.
fn pack_forward_weights(wmat: &[f32], cout: usize, krows: usize, co: usize) -> Vec<f32> {
    let cop = cout.next_multiple_of(co);
    let mut out = vec![0.0f32; cop * krows];
    for c in 0..cout {
        let (blk, lane) = (c / co, c % co);
        for j in 0..krows {
            out[(blk * krows + j) * co + lane] = wmat[c * krows + j];
        }
    }
    out
}

/// Runs the forward micro-kernel of `isa` over one tile, writing its rows of the output `y`
/// (a buffer of `y.1` values that other tiles write other rows of). Every index is checked;
/// the one thing left to the caller is exclusive access to the tile's rows.
///
/// # Safety
/// `y.0` points to `y.1` writable values, and no other thread reads or writes the tile's rows
/// of them during the call.
unsafe fn forward_kernel(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    offs: &[usize],
    cout: usize,
    tile: RowTile,
    y: (SharedOut<f32>, usize),
) {
    let bl = blocking(isa);
    let max_off = offs.iter().copied().max().unwrap_or(0);
    assert!(tile.rows > 0 && tile.ow > 0 && cout > 0);
    assert!(tile.x_end(bl.lanes, max_off) <= x.len() && tile.o_end(cout) <= y.1);
    assert!(w.len() >= cout.next_multiple_of(bl.co) * offs.len());
    let args = ForwardArgs {
        x,
        w,
        offs,
        cout,
        tile,
        y: y.0,
    };
    match isa {
        // SAFETY: the callers checked that the CPU supports `isa`; the asserts above keep every
        // access inside the buffers (see `forward_tile`), and the caller gives the tile's rows
        // to this call alone.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { forward_avx512(args) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { forward_avx2(args) },
        // SAFETY: as above (the portable lanes need no CPU feature).
        _ => unsafe { forward_tile::<Portable, 4, 2>(args) },
    }
}

/// Operands of the forward micro-kernel.
struct ForwardArgs<'a> {
    /// Padded input.
    x: &'a [f32],
    /// Packed weights `(cop / CO, krows, CO)`.
    w: &'a [f32],
    /// Tap offsets.
    offs: &'a [usize],
    /// Output channels written (the packed weights may have more, all zero).
    cout: usize,
    tile: RowTile,
    /// The output.
    y: SharedOut<f32>,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_avx512(args: ForwardArgs<'_>) {
    // SAFETY: forwarded from the caller (AVX-512F available, operands sized).
    unsafe { forward_tile::<Avx512, 8, 3>(args) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2(args: ForwardArgs<'_>) {
    // SAFETY: forwarded from the caller (AVX2 and FMA available, operands sized).
    unsafe { forward_tile::<Avx2, 4, 2>(args) }
}

/// `y[co, p] = sum_j w[co, j] * x[base(p) + offs[j]]` for every channel `co < cout` and
/// position `p` of the tile, `NV` position vectors at a time (then one at a time for the
/// tile's last few).
///
/// # Safety
/// The CPU supports `L`; `w` holds `cop * offs.len()` values (`cop`: `cout` rounded up to
/// `CO`); `x` holds `tile.x_end(L::N, max(offs))` values; `y` points to a buffer of at least
/// `tile.o_end(cout)` values of which no other thread accesses the tile's rows meanwhile.
#[inline(always)]
unsafe fn forward_tile<L: Lanes, const CO: usize, const NV: usize>(a: ForwardArgs<'_>) {
    let (nvr, _) = a.tile.row_vectors(L::N);
    let total = a.tile.rows * nvr;
    for cb in 0..a.cout.div_ceil(CO) {
        let mut v0 = 0;
        while v0 + NV <= total {
            // SAFETY: forwarded from the caller; `v0 + NV <= total`.
            unsafe { forward_group::<L, CO, NV>(&a, cb, v0) };
            v0 += NV;
        }
        while v0 < total {
            // SAFETY: as above, `v0 < total`.
            unsafe { forward_group::<L, CO, 1>(&a, cb, v0) };
            v0 += 1;
        }
    }
}

/// The register tile of channels `cb * CO ..` and position vectors `v0 .. v0 + G` (vector
/// `t` is vector `t % nvr` of row `t / nvr`).
///
/// # Safety
/// As [`forward_tile`], with `v0 + G <= rows * nvr` and `cb * CO < cout`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over `CO`/`G` unroll into registers.
unsafe fn forward_group<L: Lanes, const CO: usize, const G: usize>(
    a: &ForwardArgs<'_>,
    cb: usize,
    v0: usize,
) {
    let t = a.tile;
    let (nvr, tail) = t.row_vectors(L::N);
    let krows = a.offs.len();
    let mut xo = [0usize; G];
    let mut yo = [0usize; G];
    let mut lanes = [L::N; G];
    for g in 0..G {
        let (r, v) = ((v0 + g) / nvr, (v0 + g) % nvr);
        xo[g] = r * t.wp + v * L::N;
        yo[g] = t.o0 + r * t.ow + v * L::N;
        if v == nvr - 1 {
            lanes[g] = tail;
        }
    }
    // SAFETY: by the function's contract: weights `(cb * krows + j) * CO + c < cop * krows`;
    // input reads `xo[g] + offs[j] + L::N - 1 < tile.x_end(..)`; stores only for `co < cout`
    // and only the `lanes[g]` values of row positions `< ow`, inside the tile's rows.
    unsafe {
        let x = a.x.as_ptr();
        let wb = a.w.as_ptr().add(cb * krows * CO);
        let mut acc = [[L::zero(); G]; CO];
        for j in 0..krows {
            let p = x.add(*a.offs.get_unchecked(j));
            let mut xv = [L::zero(); G];
            for g in 0..G {
                xv[g] = L::load(p.add(xo[g]));
            }
            let wj = wb.add(j * CO);
            for c in 0..CO {
                let wv = L::splat(wj.add(c));
                for g in 0..G {
                    acc[c][g] = L::fma(wv, xv[g], acc[c][g]);
                }
            }
        }
        for c in 0..CO {
            let co = cb * CO + c;
            if co >= a.cout {
                break;
            }
            let ob = a.y.at(co * t.ostride);
            for g in 0..G {
                if lanes[g] == L::N {
                    L::store(ob.add(yo[g]), acc[c][g]);
                } else {
                    L::store_first(ob.add(yo[g]), acc[c][g], lanes[g]);
                }
            }
        }
    }
}

/// Weight gradient `gW[co, (ci, k)] = sum_o g[co, o] * x[ci, o + k - pad]` for `x` `(n, cin,
/// inp)` and `g` `(n, cout, out)` (as `Core::run_weight`), summed in a fixed order.
pub(super) fn weight(core: &Core, isa: Isa, x: &[f32], g: &[f32]) -> Vec<f32> {
    if weight_lanes::supports(core, isa) {
        return weight_lanes::weight(core, isa, x, g);
    }
    check_isa(isa);
    let bl = blocking(isa);
    let krows = core.krows();
    let cop = core.cout.next_multiple_of(bl.wco);
    let ncols = krows.next_multiple_of(bl.wkb);
    let rows = weight_tile_rows(core);
    let cols = offsets_by_phase(core, rows, ncols);
    let ivol = core.ivol();
    let tiles = tiles(core, rows);
    let per_group = tiles.len().div_ceil(WEIGHT_GROUPS).max(1);
    let lanes = if cop * ncols * bl.lanes <= PER_LANE_BUDGET {
        bl.lanes
    } else {
        1
    };
    // Stands in for the gradient of the channels past `cout` in the last register tile.
    let zeros = vec![0.0f32; rows * core.out[2] + bl.lanes];
    let partials: Vec<Vec<f32>> = tiles
        .par_chunks(per_group)
        .map(|group| {
            // Per-lane partial sums (reduced to scalars once per group) while they fit the
            // budget, else scalar sums.
            let mut vacc = vec![0.0f32; cop * ncols * lanes];
            let mut slab = Slab::new(core, rows, bl.lanes);
            for &at @ (b, _, _) in group {
                let tile = RowTile::new(core, &slab, rows, at);
                let xb = &x[b * core.cin * ivol..(b + 1) * core.cin * ivol];
                let phase = slab.fill(core, xb, at, tile.rows);
                let cols = &cols[phase];
                weight_kernel(isa, &slab.data, g, &zeros, cols, core.cout, tile, &mut vacc);
            }
            vacc.chunks_exact(lanes)
                .map(|lanes| lanes.iter().sum::<f32>())
                .collect::<Vec<f32>>()
        })
        .collect();
    let mut total = vec![0.0f32; core.cout * krows];
    for partial in partials {
        for co in 0..core.cout {
            let src = &partial[co * ncols..co * ncols + krows];
            for (sum, v) in total[co * krows..(co + 1) * krows].iter_mut().zip(src) {
                *sum += v;
            }
        }
    }
    total
}

/// Runs the weight-gradient micro-kernel of `isa` over one tile: `acc (cop, ncols, lanes) +=
/// g (cout, tile) * input columns`, kept per register lane when `acc` has room for them (the
/// sum over the lanes is the weight gradient), else as scalars (`lanes = 1`). `zeros` stands
/// in for the gradient of channels `cout..cop`.
#[allow(clippy::too_many_arguments)] // The operands of one kernel call, checked together.
fn weight_kernel(
    isa: Isa,
    x: &[f32],
    g: &[f32],
    zeros: &[f32],
    cols: &[usize],
    cout: usize,
    tile: RowTile,
    acc: &mut [f32],
) {
    let bl = blocking(isa);
    let cop = cout.next_multiple_of(bl.wco);
    let max_off = cols.iter().copied().max().unwrap_or(0);
    assert!(tile.rows > 0 && tile.ow > 0 && cout > 0);
    assert!(tile.x_end(bl.lanes, max_off) <= x.len() && tile.o_end(cout) <= g.len());
    assert!(cop == cout || zeros.len() >= tile.rows * tile.ow + bl.lanes);
    let per_lane = acc.len() == cop * cols.len() * bl.lanes;
    assert!(cols.len().is_multiple_of(bl.wkb) && acc.len() >= cop * cols.len());
    let masked = !tile.ow.is_multiple_of(bl.lanes);
    let args = WeightArgs {
        x,
        g,
        zeros,
        cols,
        cout,
        tile,
        acc,
        per_lane,
    };
    match isa {
        // SAFETY: the callers checked that the CPU supports `isa`; the asserts above keep every
        // access inside the slices (see `weight_tile`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { weight_avx512(args, masked) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { weight_avx2(args, masked) },
        // SAFETY: as above (the portable lanes need no CPU feature).
        _ if masked => unsafe { weight_tile::<Portable, 2, 4, true>(args) },
        // SAFETY: as above.
        _ => unsafe { weight_tile::<Portable, 2, 4, false>(args) },
    }
}

/// Operands of the weight-gradient micro-kernel.
struct WeightArgs<'a> {
    /// Padded input.
    x: &'a [f32],
    /// Output gradient `(n, cout, out)`.
    g: &'a [f32],
    /// Zeros standing in for the gradient of channels past `cout`.
    zeros: &'a [f32],
    /// Tap offset per column, padded to a multiple of `KB`.
    cols: &'a [usize],
    cout: usize,
    tile: RowTile,
    /// Accumulated `(cop, cols.len(), L::N)` if `per_lane`, else `(cop, cols.len())`.
    acc: &'a mut [f32],
    per_lane: bool,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_avx512(args: WeightArgs<'_>, masked: bool) {
    // SAFETY: forwarded from the caller (AVX-512F available, operands sized, `masked` unless
    // the lanes divide the row).
    unsafe {
        if masked {
            weight_tile::<Avx512, 4, 6, true>(args)
        } else {
            weight_tile::<Avx512, 4, 6, false>(args)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_avx2(args: WeightArgs<'_>, masked: bool) {
    // SAFETY: forwarded from the caller (AVX2 and FMA available, operands sized, `masked`
    // unless the lanes divide the row).
    unsafe {
        if masked {
            weight_tile::<Avx2, 2, 6, true>(args)
        } else {
            weight_tile::<Avx2, 2, 6, false>(args)
        }
    }
}

/// `acc[co, j, l] += sum_{p = l mod N} g[co, p] * x[base(p) + cols[j]]` (per lane) or
/// `acc[co, j] += sum_p g[co, p] * x[base(p) + cols[j]]` over the tile's positions `p`, with
/// `CO x KB` registers of partial sums (vectors along the rows), added to `acc` once per tile.
/// With `MASKED` the lanes of a row's last vector past the row end load a zero gradient;
/// without it every vector is loaded whole, which is only right when `L::N` divides the row
/// width.
///
/// # Safety
/// `MASKED` unless `L::N` divides `tile.ow`; the CPU supports `L`; `x` holds `tile.x_end(L::N, max(cols))` values, `g` holds
/// `tile.o_end(cout)`, `zeros` at least `tile.rows * tile.ow + L::N` (unless `cout` is a
/// multiple of `CO`); `cols.len()` is a multiple of `KB`; `acc` holds `cop * cols.len() *
/// L::N` values if `per_lane`, else `cop * cols.len()` (`cop`: `cout` rounded up to `CO`).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over `CO`/`KB` unroll into registers.
unsafe fn weight_tile<L: Lanes, const CO: usize, const KB: usize, const MASKED: bool>(
    a: WeightArgs<'_>,
) {
    let t = a.tile;
    let (nvr, tail) = t.row_vectors(L::N);
    let ncols = a.cols.len();
    for cb in 0..a.cout.div_ceil(CO) {
        // SAFETY: by the function's contract: gradient reads `o0 + co * ostride + r * ow + v *
        // L::N + l` with `v * L::N + l < ow` (full vectors) or masked to the row (last
        // vector), below `tile.o_end(cout)`; zeros reads below `rows * ow + L::N`; input reads
        // `r * wp + v * L::N + cols[jb + k] + L::N - 1 < tile.x_end(..)`; `acc` indices
        // `((cb * CO + c) * ncols + jb + k + 1) * L::N <= cop * ncols * L::N` per lane,
        // `(cb * CO + c) * ncols + jb + k < cop * ncols` otherwise.
        unsafe {
            let mut gp = [a.zeros.as_ptr(); CO];
            for c in 0..CO {
                if cb * CO + c < a.cout {
                    gp[c] = a.g.as_ptr().add(t.o0 + (cb * CO + c) * t.ostride);
                }
            }
            for jb in (0..ncols).step_by(KB) {
                let mut xp = [a.x.as_ptr(); KB];
                for k in 0..KB {
                    xp[k] = a.x.as_ptr().add(*a.cols.get_unchecked(jb + k));
                }
                let mut acc = [[L::zero(); KB]; CO];
                // Down the rows one vector column at a time: the loop runs `rows` times
                // with the gradient and slab indices stepping by their row widths.
                for v in 0..nvr {
                    let masked = MASKED && v + 1 == nvr;
                    let (mut gi, mut xi) = (v * L::N, v * L::N);
                    for _ in 0..t.rows {
                        let mut gv = [L::zero(); CO];
                        for c in 0..CO {
                            gv[c] = if masked {
                                L::load_first(gp[c].add(gi), tail)
                            } else {
                                L::load(gp[c].add(gi))
                            };
                        }
                        for k in 0..KB {
                            let xv = L::load(xp[k].add(xi));
                            for c in 0..CO {
                                acc[c][k] = L::fma(gv[c], xv, acc[c][k]);
                            }
                        }
                        gi += t.ow;
                        xi += t.wp;
                    }
                }
                for c in 0..CO {
                    let row = (cb * CO + c) * ncols + jb;
                    for k in 0..KB {
                        if a.per_lane {
                            let p = a.acc.as_mut_ptr().add((row + k) * L::N);
                            L::store(p, L::add(L::load(p), acc[c][k]));
                        } else {
                            *a.acc.as_mut_ptr().add(row + k) += L::sum(acc[c][k]);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_cases::{core, max_diff, random, Case};
    use super::super::ConvSpec;
    use super::*;
    use crate::ops::common::testing::Rng;

    /// Forward convolutions (stride 1) with odd sizes, channel counts that are not multiples of
    /// any register tile, and padding from none to more than the kernel (which gives negative
    /// padding in the transposed convolution below).
    const CASES: [Case; 7] = [
        (1, 3, 5, [5, 6, 7], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        (2, 1, 3, [4, 7, 9], [2, 3, 1], [0, 1, 0], [1, 2, 0]),
        (1, 5, 9, [1, 11, 13], [1, 3, 3], [0, 0, 2], [0, 1, 3]),
        (1, 2, 2, [1, 37, 21], [1, 5, 4], [0, 2, 1], [0, 2, 2]),
        (2, 17, 11, [3, 4, 5], [3, 1, 2], [0, 0, 0], [0, 0, 0]),
        (1, 4, 16, [6, 5, 33], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        // Enough planes that tasks run several tiles down a band of rows (reused planes).
        (2, 3, 5, [40, 6, 7], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
    ];

    #[test]
    fn forward_matches_im2col_on_every_isa() {
        let mut rng = Rng::new(40);
        for case in &CASES {
            let core = core(case);
            assert!(supports(&core));
            let x = random(&mut rng, core.n * core.cin * core.ivol());
            let w = random(&mut rng, core.cout * core.krows());
            let expected = core.run_forward(&x, &w);
            for isa in Isa::supported() {
                let got = forward(&core, isa, &x, &w);
                let err = max_diff(&got, &expected);
                assert!(err < 1e-5, "{isa:?} {case:?}: {err}");
            }
        }
    }

    #[test]
    fn transposed_convolution_matches_im2col_on_every_isa() {
        // The input gradient of each case: a stride-1 convolution with padding `k - 1 - lo`
        // (negative where `lo >= k`).
        let mut rng = Rng::new(41);
        for case in &CASES {
            let fwd = core(case);
            let spec = ConvSpec {
                ndim: 3,
                stride: [1; 3],
                lo: case.5,
                hi: case.6,
            };
            let gd = [fwd.n, fwd.cout, fwd.out[0], fwd.out[1], fwd.out[2]];
            let data = Core::data(&spec, &gd, fwd.cin, fwd.k, fwd.inp);
            assert!(supports(&data));
            let g = random(&mut rng, data.n * data.cin * data.ivol());
            let w = random(&mut rng, data.cout * data.krows());
            let expected = data.run_forward(&g, &w);
            for isa in Isa::supported() {
                let got = forward(&data, isa, &g, &w);
                let err = max_diff(&got, &expected);
                assert!(err < 1e-5, "{isa:?} {case:?}: {err}");
            }
        }
    }

    #[test]
    fn weight_gradient_matches_im2col_on_every_isa() {
        let mut rng = Rng::new(42);
        for case in &CASES {
            let core = core(case);
            let x = random(&mut rng, core.n * core.cin * core.ivol());
            let g = random(&mut rng, core.n * core.cout * core.ovol());
            let expected = core.run_weight(&x, &g);
            let scale = (core.n * core.ovol()) as f32;
            for isa in Isa::supported() {
                let got = weight(&core, isa, &x, &g);
                let err = max_diff(&got, &expected);
                assert!(err < 1e-6 * scale, "{isa:?} {case:?}: {err}");
            }
        }
    }

    #[test]
    fn weight_gradient_with_scalar_partials_matches_im2col() {
        // Enough channels that the per-lane accumulator exceeds its budget on every ISA.
        let case: Case = (1, 40, 32, [3, 4, 5], [3, 3, 3], [1, 1, 1], [1, 1, 1]);
        let core = core(&case);
        assert!(32 * core.krows() * 8 > PER_LANE_BUDGET);
        let mut rng = Rng::new(45);
        let x = random(&mut rng, core.n * core.cin * core.ivol());
        let g = random(&mut rng, core.n * core.cout * core.ovol());
        let expected = core.run_weight(&x, &g);
        for isa in Isa::supported() {
            let err = max_diff(&weight(&core, isa, &x, &g), &expected);
            assert!(err < 1e-4, "{isa:?}: {err}");
        }
    }

    #[test]
    fn tiles_cover_the_output_with_a_short_last_tile() {
        let core = core(&CASES[3]);
        let rows = tile_rows(&core, 8);
        let all = tiles(&core, rows);
        assert!(all.len() > 1);
        let covered: usize = all
            .iter()
            .map(|&(_, _, oy)| rows.min(core.out[1] - oy))
            .sum();
        assert_eq!(covered, core.out[0] * core.out[1]);
        assert!(core.out[1] - all.last().unwrap().2 < rows);
    }

    #[test]
    fn weight_gradient_does_not_depend_on_the_thread_count() {
        let mut rng = Rng::new(43);
        let core = core(&CASES[5]);
        let x = random(&mut rng, core.n * core.cin * core.ivol());
        let g = random(&mut rng, core.n * core.cout * core.ovol());
        let isa = Isa::detect();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| weight(&core, isa, &x, &g))
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert_eq!(one, run(8));
    }
}
