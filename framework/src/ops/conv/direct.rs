//! Direct f32 convolution for stride 1 and no input dilation (the forward pass of stride-1
//! convolutions, their input gradient, and their weight gradient), without column buffers.
//!
//! # Layout
//!
//! The output is cut into tiles of `rows` output rows of one output plane. For each tile the
//! input it reads is copied once into a zero-padded *slab* `(Cin, KD, rows + KH - 1, Wp)` with
//! `Wp = Wo + KW - 1`. In the slab, output position `q = r * Wp + ox` (rows laid end to end at
//! the padded width; the `KW - 1` columns past `Wo` are computed and dropped) reads input
//! `(ci, kz, ky, kx)` at `q + ci * KD * P + kz * P + ky * Wp + kx` (`P` the slab plane size):
//! one offset per `(ci, k)`, the same for every position. The micro-kernels therefore run over
//! a flat range of positions with no bounds checks:
//!
//! * forward: a register tile of `CO` output channels by `NV` vectors of positions; for each
//!   `(ci, k)` it loads `NV` vectors of the slab and broadcasts `CO` weights
//!   (`y[co, q] += w[co, ci, k] * slab[q + off(ci, k)]`);
//! * weight gradient: a register tile of `CO` output channels by `KB` columns `(ci, k)`, each
//!   a vector of partial sums over positions
//!   (`dW[co, ci, k] += sum_q g[co, q] * slab[q + off(ci, k)]`, with `g` zero at the dropped
//!   columns), reduced to scalars once per tile.
//!
//! Weight-gradient tiles are summed in a fixed order (tiles in fixed groups, groups in order),
//! so the result does not depend on the number of threads or on how they are scheduled.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::lanes::{Avx2, Avx512};
use super::lanes::{Isa, Lanes, Portable};
use super::{Core, SharedOut};

/// Number of values per slab, about 128 KiB in f32: a slab and the output tile stay in L2.
const SLAB_BUDGET: usize = 1 << 15;
/// Slab budget of the weight gradient, about 512 KiB: its register tiles are reduced once per
/// tile, so taller tiles (longer sums per reduction) pay off more than cache residency.
const WEIGHT_SLAB_BUDGET: usize = 1 << 17;
/// Tiles are made small enough that there are at least this many (when the output allows).
const MIN_TILES: usize = 16;
/// Largest per-lane accumulator (values) the weight gradient keeps per group; larger weights
/// are reduced to scalars after every tile instead.
const PER_LANE_BUDGET: usize = 1 << 18;
/// Number of groups the weight gradient's tiles are summed in (fixed, so the result does not
/// depend on the thread count).
const WEIGHT_GROUPS: usize = 16;

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
    /// Forward: position vectors per register tile.
    nv: usize,
    /// Weight gradient: output channels per register tile.
    wco: usize,
    /// Weight gradient: `(ci, k)` columns per register tile.
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
            nv: 3,
            wco: 4,
            wkb: 6,
        },
        Isa::Avx2 => Blocking {
            lanes: 8,
            co: 4,
            nv: 2,
            wco: 2,
            wkb: 6,
        },
        Isa::Portable => Blocking {
            lanes: 8,
            co: 4,
            nv: 2,
            wco: 2,
            wkb: 4,
        },
    }
}

/// Tile geometry of one run (see the module documentation).
#[derive(Debug, Clone)]
struct Tiling {
    /// Output rows per tile (the last tile of a plane may have fewer).
    rows: usize,
    /// Padded row width `Wo + KW - 1`.
    wp: usize,
    /// Values per slab plane, `(rows + KH - 1) * wp`.
    plane: usize,
    /// Values per input channel in the slab, `KD * plane`.
    chan: usize,
    /// Positions computed per tile: `rows * wp` rounded up to the kernel's block.
    qr: usize,
    /// Slab length, with zero slack so the last block never reads past it.
    slab_len: usize,
    /// Slab offset of each `(ci, kz, ky, kx)`, in weight-matrix column order.
    offs: Vec<usize>,
}

impl Tiling {
    fn new(core: &Core, block: usize, budget: usize) -> Self {
        let [kd, kh, kw] = core.k;
        let wp = core.out[2] + kw - 1;
        let per_row = core.cin * kd * wp;
        let planes = core.n * core.out[0];
        let by_budget = (budget / per_row.max(1)).max(1);
        let by_tasks = (core.out[1] * planes).div_ceil(MIN_TILES);
        let cap = by_budget.min(by_tasks).clamp(1, core.out[1]);
        // Equal tiles: as few as the cap allows, then rows shared out evenly.
        let rows = core.out[1].div_ceil(core.out[1].div_ceil(cap));
        let plane = (rows + kh - 1) * wp;
        let chan = kd * plane;
        let qr = (rows * wp).next_multiple_of(block);
        let slab_len = core.cin * chan + (qr - rows * wp) + kw - 1;
        let mut offs = Vec::with_capacity(core.krows());
        for ci in 0..core.cin {
            for kz in 0..kd {
                for ky in 0..kh {
                    for kx in 0..kw {
                        offs.push(ci * chan + kz * plane + ky * wp + kx);
                    }
                }
            }
        }
        Self {
            rows,
            wp,
            plane,
            chan,
            qr,
            slab_len,
            offs,
        }
    }

    /// Tiles `(batch, output plane, first output row)`, in a fixed order.
    fn tiles(&self, core: &Core) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        for b in 0..core.n {
            for oz in 0..core.out[0] {
                for oy in (0..core.out[1]).step_by(self.rows) {
                    out.push((b, oz, oy));
                }
            }
        }
        out
    }

    /// Output rows of the tile starting at row `oy`.
    fn rows_at(&self, core: &Core, oy: usize) -> usize {
        self.rows.min(core.out[1] - oy)
    }

    /// Copies the input `xb` `(cin, inp)` that the tile `(oz, oy)` reads into `slab`, with zeros
    /// outside the input. The slack past `cin * chan` is left as it is (zero).
    fn fill_slab(&self, core: &Core, xb: &[f32], oz: usize, oy: usize, slab: &mut [f32]) {
        let [kd, kh, _] = core.k;
        let [id, ih, iw] = core.inp;
        let ivol = core.ivol();
        let lo = (core.pad[2].max(0) as usize).min(self.wp);
        let hi = (core.pad[2] + iw as isize).clamp(lo as isize, self.wp as isize) as usize;
        let src0 = (lo as isize - core.pad[2]) as usize;
        for ci in 0..core.cin {
            let xc = &xb[ci * ivol..(ci + 1) * ivol];
            for kz in 0..kd {
                let iz = (oz + kz) as isize - core.pad[0];
                for ry in 0..self.rows + kh - 1 {
                    let iy = (oy + ry) as isize - core.pad[1];
                    let at = ci * self.chan + kz * self.plane + ry * self.wp;
                    let row = &mut slab[at..at + self.wp];
                    if iz < 0 || iz >= id as isize || iy < 0 || iy >= ih as isize {
                        row.fill(0.0);
                        continue;
                    }
                    let src = (iz as usize * ih + iy as usize) * iw + src0;
                    row[..lo].fill(0.0);
                    row[lo..hi].copy_from_slice(&xc[src..src + (hi - lo)]);
                    row[hi..].fill(0.0);
                }
            }
        }
    }
}

/// Panics unless this CPU supports `isa` (the kernels below rely on it).
fn check_isa(isa: Isa) {
    assert!(
        Isa::supported().contains(&isa),
        "direct convolution: {isa:?} is not supported by this CPU"
    );
}

/// `y = W x` for `wmat` `(cout, cin * kvol)` and `x` `(n, cin, inp)` (as `Core::run_forward`).
pub(super) fn forward(core: &Core, isa: Isa, x: &[f32], wmat: &[f32]) -> Vec<f32> {
    check_isa(isa);
    let bl = blocking(isa);
    let t = Tiling::new(core, bl.lanes * bl.nv, SLAB_BUDGET);
    let krows = core.krows();
    let cop = core.cout.next_multiple_of(bl.co);
    let packed = pack_forward_weights(wmat, core.cout, krows, bl.co);
    let (ivol, ovol) = (core.ivol(), core.ovol());
    let [_, oh, wo] = core.out;
    // Not zero-filled: the tiles cover every output row of every channel (see below).
    let mut y = Box::<[f32]>::new_uninit_slice(core.n * core.cout * ovol);
    let out = SharedOut(y.as_mut_ptr().cast::<f32>());
    t.tiles(core).into_par_iter().for_each_init(
        || (vec![0.0f32; t.slab_len], vec![0.0f32; cop * t.qr]),
        |(slab, acc), (b, oz, oy)| {
            let xb = &x[b * core.cin * ivol..(b + 1) * core.cin * ivol];
            t.fill_slab(core, xb, oz, oy, slab);
            forward_kernel(isa, slab, &packed, &t.offs, t.qr, acc);
            for co in 0..core.cout {
                let base = (b * core.cout + co) * ovol + (oz * oh + oy) * wo;
                for r in 0..t.rows_at(core, oy) {
                    let src = &acc[co * t.qr + r * t.wp..][..wo];
                    // SAFETY: the tile writes y[b, co, oz, oy + r, ..] (inside `y`: oy + r <
                    // out[1]), rows no other tile writes; nothing reads `y` until all tasks are
                    // done.
                    unsafe {
                        std::ptr::copy_nonoverlapping(src.as_ptr(), out.at(base + r * wo), wo)
                    };
                }
            }
        },
    );
    // SAFETY: the tiles `(b, oz, oy)` cover every batch item, output plane and output row
    // (`Tiling::tiles`), and each tile wrote all `wo` values of its rows for every `co <
    // cout`, so every value of `y` is initialised.
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

/// Runs the forward micro-kernel of `isa` over one tile: `acc (cop, qr)` from the slab and the
/// packed weights.
fn forward_kernel(isa: Isa, slab: &[f32], w: &[f32], offs: &[usize], qr: usize, acc: &mut [f32]) {
    let bl = blocking(isa);
    let krows = offs.len();
    let cop = acc.len() / qr;
    let max_off = offs.iter().copied().max().unwrap_or(0);
    assert!(qr.is_multiple_of(bl.lanes * bl.nv) && cop.is_multiple_of(bl.co));
    assert!(max_off + qr <= slab.len() && w.len() >= cop * krows);
    let args = ForwardArgs {
        slab,
        w,
        offs,
        qr,
        acc,
    };
    match isa {
        // SAFETY: the callers checked that the CPU supports `isa`; the asserts above keep every
        // access inside the slices (see `forward_tile`).
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
    slab: &'a [f32],
    /// Packed weights `(cop / CO, krows, CO)`.
    w: &'a [f32],
    offs: &'a [usize],
    qr: usize,
    /// Output `(cop, qr)`.
    acc: &'a mut [f32],
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

/// `acc[co, q] = sum_j w[co, j] * slab[q + offs[j]]` for all `co < cop`, `q < qr`, with `CO x
/// NV` registers of accumulators.
///
/// # Safety
/// The CPU supports `L`; `qr` is a multiple of `NV * L::N`, `acc` holds `cop * qr` values with
/// `cop` a multiple of `CO`, `w` holds `cop * offs.len()` values and `slab` at least
/// `max(offs) + qr`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over `CO`/`NV` unroll into registers.
unsafe fn forward_tile<L: Lanes, const CO: usize, const NV: usize>(a: ForwardArgs<'_>) {
    let krows = a.offs.len();
    let cop = a.acc.len() / a.qr;
    let slab = a.slab.as_ptr();
    let out = a.acc.as_mut_ptr();
    for cb in 0..cop / CO {
        // SAFETY: by the function's contract every pointer below stays inside its
        // slice: weights `(cb * krows + j) * CO + c < cop * krows`, slab reads
        // `offs[j] + q + NV * L::N - 1 < max(offs) + qr`, stores `(cb * CO + c) * qr + q + ..
        // < cop * qr`.
        unsafe {
            let wb = a.w.as_ptr().add(cb * krows * CO);
            let mut q = 0;
            while q < a.qr {
                let xb = slab.add(q);
                let mut acc = [[L::zero(); NV]; CO];
                for j in 0..krows {
                    let p = xb.add(*a.offs.get_unchecked(j));
                    let mut xv = [L::zero(); NV];
                    for v in 0..NV {
                        xv[v] = L::load(p.add(v * L::N));
                    }
                    let wj = wb.add(j * CO);
                    for c in 0..CO {
                        let wv = L::splat(wj.add(c));
                        for v in 0..NV {
                            acc[c][v] = L::fma(wv, xv[v], acc[c][v]);
                        }
                    }
                }
                let ob = out.add(cb * CO * a.qr + q);
                for c in 0..CO {
                    for v in 0..NV {
                        L::store(ob.add(c * a.qr + v * L::N), acc[c][v]);
                    }
                }
                q += NV * L::N;
            }
        }
    }
}

/// Weight gradient `gW[co, (ci, k)] = sum_o g[co, o] * x[ci, o + k - pad]` for `x` `(n, cin,
/// inp)` and `g` `(n, cout, out)` (as `Core::run_weight`), summed in a fixed order.
pub(super) fn weight(core: &Core, isa: Isa, x: &[f32], g: &[f32]) -> Vec<f32> {
    check_isa(isa);
    let bl = blocking(isa);
    let t = Tiling::new(core, bl.lanes, WEIGHT_SLAB_BUDGET);
    let krows = core.krows();
    let cop = core.cout.next_multiple_of(bl.wco);
    let ncols = krows.next_multiple_of(bl.wkb);
    let mut cols = t.offs.clone();
    cols.resize(ncols, 0);
    let (ivol, ovol) = (core.ivol(), core.ovol());
    let [_, oh, wo] = core.out;
    let tiles = t.tiles(core);
    let per_group = tiles.len().div_ceil(WEIGHT_GROUPS).max(1);
    let lanes = if cop * ncols * bl.lanes <= PER_LANE_BUDGET {
        bl.lanes
    } else {
        1
    };
    let partials: Vec<Vec<f32>> = tiles
        .par_chunks(per_group)
        .map(|group| {
            let mut slab = vec![0.0f32; t.slab_len];
            let mut gt = vec![0.0f32; cop * t.qr];
            // Per-lane partial sums (reduced to scalars once per group) while they fit the
            // budget, else scalar sums.
            let mut vacc = vec![0.0f32; cop * ncols * lanes];
            for &(b, oz, oy) in group {
                let xb = &x[b * core.cin * ivol..(b + 1) * core.cin * ivol];
                t.fill_slab(core, xb, oz, oy, &mut slab);
                let nrows = t.rows_at(core, oy);
                for co in 0..core.cout {
                    let dst = &mut gt[co * t.qr..(co + 1) * t.qr];
                    dst.fill(0.0);
                    let base = (b * core.cout + co) * ovol + (oz * oh + oy) * wo;
                    for r in 0..nrows {
                        dst[r * t.wp..r * t.wp + wo]
                            .copy_from_slice(&g[base + r * wo..base + (r + 1) * wo]);
                    }
                }
                weight_kernel(isa, &slab, &gt, &cols, t.qr, &mut vacc);
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
/// g (cop, qr) * slab columns`, kept per register lane when `acc` has room for them (the sum
/// over the lanes is the weight gradient), else as scalars (`lanes = 1`).
fn weight_kernel(isa: Isa, slab: &[f32], g: &[f32], cols: &[usize], qr: usize, acc: &mut [f32]) {
    let bl = blocking(isa);
    let cop = g.len() / qr;
    let max_off = cols.iter().copied().max().unwrap_or(0);
    assert!(qr.is_multiple_of(bl.lanes) && cop.is_multiple_of(bl.wco));
    let per_lane = acc.len() == cop * cols.len() * bl.lanes;
    assert!(cols.len().is_multiple_of(bl.wkb) && acc.len() >= cop * cols.len());
    assert!(max_off + qr <= slab.len());
    let args = WeightArgs {
        slab,
        g,
        cols,
        qr,
        acc,
        per_lane,
    };
    match isa {
        // SAFETY: the callers checked that the CPU supports `isa`; the asserts above keep every
        // access inside the slices (see `weight_tile`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { weight_avx512(args) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { weight_avx2(args) },
        // SAFETY: as above (the portable lanes need no CPU feature).
        _ => unsafe { weight_tile::<Portable, 2, 4>(args) },
    }
}

/// Operands of the weight-gradient micro-kernel.
struct WeightArgs<'a> {
    slab: &'a [f32],
    /// Output gradient of the tile `(cop, qr)`, zero at dropped positions.
    g: &'a [f32],
    /// Slab offset per column, padded to a multiple of `KB`.
    cols: &'a [usize],
    qr: usize,
    /// Accumulated `(cop, cols.len(), L::N)` if `per_lane`, else `(cop, cols.len())`.
    acc: &'a mut [f32],
    per_lane: bool,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_avx512(args: WeightArgs<'_>) {
    // SAFETY: forwarded from the caller (AVX-512F available, operands sized).
    unsafe { weight_tile::<Avx512, 4, 6>(args) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_avx2(args: WeightArgs<'_>) {
    // SAFETY: forwarded from the caller (AVX2 and FMA available, operands sized).
    unsafe { weight_tile::<Avx2, 2, 6>(args) }
}

/// `acc[co, j, l] += sum_{q = l mod N} g[co, q] * slab[q + cols[j]]` (per lane) or
/// `acc[co, j] += sum_q g[co, q] * slab[q + cols[j]]`, with `CO x KB` registers of partial sums
/// (vectors along `q`), added to `acc` once per tile.
///
/// # Safety
/// The CPU supports `L`; `qr` is a multiple of `L::N`, `g` holds `cop * qr` values with `cop` a
/// multiple of `CO`, `cols.len()` is a multiple of `KB`, `acc` holds `cop * cols.len() * L::N`
/// values if `per_lane`, else `cop * cols.len()`, and `slab` at least `max(cols) + qr`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over `CO`/`KB` unroll into registers.
unsafe fn weight_tile<L: Lanes, const CO: usize, const KB: usize>(a: WeightArgs<'_>) {
    let ncols = a.cols.len();
    let cop = a.g.len() / a.qr;
    for cb in 0..cop / CO {
        for jb in (0..ncols).step_by(KB) {
            // SAFETY: by the function's contract, gradient reads
            // `(cb * CO + c) * qr + q + L::N - 1 < cop * qr`, slab reads
            // `cols[jb + k] + q + L::N - 1 < max(cols) + qr`, and `acc` indices
            // `((cb * CO + c) * ncols + jb + k + 1) * L::N <= cop * ncols * L::N` per lane,
            // `(cb * CO + c) * ncols + jb + k < cop * ncols` otherwise.
            unsafe {
                let gp = a.g.as_ptr().add(cb * CO * a.qr);
                let mut xp = [a.slab.as_ptr(); KB];
                for k in 0..KB {
                    xp[k] = a.slab.as_ptr().add(*a.cols.get_unchecked(jb + k));
                }
                let mut acc = [[L::zero(); KB]; CO];
                let mut q = 0;
                while q < a.qr {
                    let mut gv = [L::zero(); CO];
                    for c in 0..CO {
                        gv[c] = L::load(gp.add(c * a.qr + q));
                    }
                    for k in 0..KB {
                        let xv = L::load(xp[k].add(q));
                        for c in 0..CO {
                            acc[c][k] = L::fma(gv[c], xv, acc[c][k]);
                        }
                    }
                    q += L::N;
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
    use super::super::ConvSpec;
    use super::*;
    use crate::ops::common::testing::Rng;

    fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    /// Forward convolutions (stride 1) with odd sizes, channel counts that are not multiples of
    /// any register tile, and padding from none to more than the kernel (which gives negative
    /// padding in the transposed convolution below): `(n, cin, cout, inp, k, lo, hi)`.
    type Case = (
        usize,
        usize,
        usize,
        [usize; 3],
        [usize; 3],
        [usize; 3],
        [usize; 3],
    );
    const CASES: [Case; 6] = [
        (1, 3, 5, [5, 6, 7], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        (2, 1, 3, [4, 7, 9], [2, 3, 1], [0, 1, 0], [1, 2, 0]),
        (1, 5, 9, [1, 11, 13], [1, 3, 3], [0, 0, 2], [0, 1, 3]),
        (1, 2, 2, [1, 37, 21], [1, 5, 4], [0, 2, 1], [0, 2, 2]),
        (2, 17, 11, [3, 4, 5], [3, 1, 2], [0, 0, 0], [0, 0, 0]),
        (1, 4, 16, [6, 5, 33], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
    ];

    fn core(case: &Case) -> Core {
        let &(n, cin, cout, inp, k, lo, hi) = case;
        let spec = ConvSpec {
            ndim: 3,
            stride: [1; 3],
            lo,
            hi,
        };
        Core::forward(&spec, &[n, cin, inp[0], inp[1], inp[2]], cout, k)
    }

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
        let t = Tiling::new(&core, 16, SLAB_BUDGET);
        let tiles = t.tiles(&core);
        assert!(tiles.len() > 1);
        let rows: usize = tiles.iter().map(|&(_, _, oy)| t.rows_at(&core, oy)).sum();
        assert_eq!(rows, core.out[0] * core.out[1]);
        assert!(t.rows_at(&core, tiles.last().unwrap().2) < t.rows);
        assert_eq!(t.qr % 16, 0);
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
