//! Weight gradient of a stride-1 convolution with the output channels across the vector
//! lanes, for output channel counts that fill whole registers.
//!
//! `dW[co, (ci, kz, ky, kx)] = sum_p g[co, p] * slab[base(p) + row(ci, kz, ky) + kx]` (see
//! [`Slab`] for the tile's padded input and its offsets). Per tile, the output gradient of a
//! block of `L` channels is transposed to position-major order (`gt[p, lane]`), so one
//! aligned vector load gives every channel's gradient at position `p`. A register tile holds
//! `R` tap rows `(ci, kz, ky)` by the `KW` taps of each row, one vector of `L` channels each:
//! for every position it loads that gradient vector and multiplies it by `R * KW` input
//! values broadcast from the slab (`R` row pointers, the `KW` taps at fixed displacements).
//! No input vector is loaded unaligned, and the sums need no reduction across lanes.
//!
//! Tiles are summed in fixed groups, groups in order, so the result does not depend on the
//! number of threads.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::lanes::{Avx2, Avx512};
use super::lanes::{Isa, Lanes};
use super::slab::Slab;
use super::Core;

/// Register tile `(R, KW)` of `isa` for kernel width `kw`: `R * KW` accumulators, which with
/// the gradient vector and a broadcast fit the register file (32 AVX-512, 16 AVX2 registers).
/// `None` where this module has no kernel.
fn register_tile(isa: Isa, kw: usize) -> Option<(usize, usize)> {
    match (isa, kw) {
        (Isa::Avx512, 1) => Some((24, 1)),
        (Isa::Avx512, 3) => Some((8, 3)),
        (Isa::Avx512, 5) => Some((4, 5)),
        (Isa::Avx512, 7) => Some((3, 7)),
        (Isa::Avx2, 1) => Some((12, 1)),
        (Isa::Avx2, 3) => Some((4, 3)),
        (Isa::Avx2, 5) => Some((2, 5)),
        (Isa::Avx2, 7) => Some((1, 7)),
        _ => None,
    }
}

/// Whether [`weight`] computes this geometry on `isa`: stride 1, no dilation, a kernel width
/// with a register tile, and output channels a multiple of the lane count.
pub(super) fn supports(core: &Core, isa: Isa) -> bool {
    core.stride == [1; 3]
        && core.dil == [1; 3]
        && register_tile(isa, core.k[2]).is_some()
        && core.cout.is_multiple_of(isa.lanes())
}

/// Weight gradient `gW[co, (ci, k)] = sum_o g[co, o] * x[ci, o + k - pad]` for `x` `(n, cin,
/// inp)` and `g` `(n, cout, out)` (as `Core::run_weight`), summed in a fixed order.
///
/// # Panics
/// Unless [`supports`] holds and the CPU supports `isa`.
pub(super) fn weight(core: &Core, isa: Isa, x: &[f32], g: &[f32]) -> Vec<f32> {
    super::direct::check_isa(isa);
    assert!(supports(core, isa), "weight_lanes: unsupported geometry");
    let (r, kw) = register_tile(isa, core.k[2]).expect("checked by `supports`");
    let lanes = isa.lanes();
    let [kd, kh, _] = core.k;
    let tap_rows = core.cin * kd * kh;
    let nrows = tap_rows.next_multiple_of(r);
    let blocks = core.cout / lanes;
    let rows = super::direct::weight_tile_rows(core);
    let tiles = super::direct::tiles(core, rows);
    let row_offs = row_offsets_by_phase(core, rows, nrows);
    let per_group = tiles.len().div_ceil(super::direct::WEIGHT_GROUPS).max(1);
    let (ivol, ovol) = (core.ivol(), core.ovol());
    let [_, oh, ow] = core.out;
    // Partial sums `(blocks, nrows * kw, lanes)`: lane `l` of tap `j` in block `cb` is
    // `dW[cb * lanes + l, j]`.
    let partials: Vec<Vec<f32>> = tiles
        .par_chunks(per_group)
        .map(|group| {
            let mut part = vec![0.0f32; blocks * nrows * kw * lanes];
            let mut slab = Slab::new(core, rows, 0);
            let mut gt = vec![0.0f32; rows * ow * lanes];
            for &(b, oz, oy) in group {
                let xb = &x[b * core.cin * ivol..(b + 1) * core.cin * ivol];
                let tile_rows = rows.min(oh - oy);
                let phase = slab.fill(core, xb, (b, oz, oy), tile_rows);
                let npos = tile_rows * ow;
                let tile = Tile {
                    rows: tile_rows,
                    ow,
                    wp: slab.wp,
                };
                for cb in 0..blocks {
                    let first = (b * core.cout + cb * lanes) * ovol + (oz * oh + oy) * ow;
                    transpose(isa, &g[first..], ovol, npos, &mut gt);
                    let out = &mut part[cb * nrows * kw * lanes..(cb + 1) * nrows * kw * lanes];
                    let gt = &gt[..npos * lanes];
                    run(isa, kw, &slab.data, &row_offs[phase], gt, tile, out);
                }
            }
            part
        })
        .collect();
    let krows = core.krows();
    let mut total = vec![0.0f32; core.cout * krows];
    for part in partials {
        for cb in 0..blocks {
            for j in 0..krows {
                let src = &part[(cb * nrows * kw + j) * lanes..][..lanes];
                for (l, v) in src.iter().enumerate() {
                    total[(cb * lanes + l) * krows + j] += v;
                }
            }
        }
    }
    total
}

/// The slab offset of each tap row `(ci, kz, ky)` (tap `kx` of the row is `kx` further) for
/// each phase `oz mod KD`, padded with offset 0 to `len` rows (their sums are dropped).
fn row_offsets_by_phase(core: &Core, rows: usize, len: usize) -> Vec<Vec<usize>> {
    let slab = Slab::new(core, rows, 0);
    let kw = core.k[2];
    (0..core.k[0])
        .map(|phase| {
            let mut offs: Vec<usize> = slab
                .tap_offsets(core, phase)
                .into_iter()
                .step_by(kw)
                .collect();
            offs.resize(len, 0);
            offs
        })
        .collect()
}

/// `gt[p * lanes + l] = g[l * stride + p]` for `p < npos`, `l < lanes`: one gather per
/// position where the instruction set has one and the offsets fit its 32-bit indices.
pub(super) fn transpose(isa: Isa, g: &[f32], stride: usize, npos: usize, gt: &mut [f32]) {
    let lanes = isa.lanes();
    assert!(npos > 0 && g.len() >= (lanes - 1) * stride + npos && gt.len() >= npos * lanes);
    #[cfg(target_arch = "x86_64")]
    if i32::try_from((lanes - 1) * stride).is_ok() {
        match isa {
            // SAFETY: the CPU supports `isa` (checked by `weight`); the assert above keeps the
            // gathers and stores inside `g` and `gt`.
            Isa::Avx512 => return unsafe { gather_avx512(g, stride, npos, gt) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { gather_avx2(g, stride, npos, gt) },
            Isa::Portable => {}
        }
    }
    for l in 0..lanes {
        let src = &g[l * stride..l * stride + npos];
        for (p, &v) in src.iter().enumerate() {
            gt[p * lanes + l] = v;
        }
    }
}

/// [`transpose`] with AVX-512: 16 positions at a time through an in-register 16 × 16
/// transpose (unpacks, then in-lane shuffles, then 128-bit lane shuffles), the last
/// `npos mod 16` positions with gathers.
///
/// # Safety
/// AVX-512F; `g` holds `15 * stride + npos` values, which fits `i32`; `gt` `16 * npos`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)] // Index loops over the 16 registers unroll.
unsafe fn gather_avx512(g: &[f32], stride: usize, npos: usize, gt: &mut [f32]) {
    use std::arch::x86_64::*;
    let full = npos - npos % 16;
    // SAFETY: by the function's contract every load `l * stride + p .. + 16` (`p + 16 <=
    // full`) and gathered index `l * stride + p` is inside `g`, and every store `p * 16 .. p
    // * 16 + 16` inside `gt`.
    unsafe {
        let src = g.as_ptr();
        let dst = gt.as_mut_ptr();
        for p0 in (0..full).step_by(16) {
            let mut r = [_mm512_setzero_ps(); 16];
            for l in 0..16 {
                r[l] = _mm512_loadu_ps(src.add(l * stride + p0));
            }
            // a[4i + 2h + u]: rows 4i + 2h, 4i + 2h + 1 interleaved (low / high halves of
            // each 128-bit lane for u = 0 / 1).
            let mut a = [_mm512_setzero_ps(); 16];
            for i in 0..8 {
                let (lo, hi) = (r[2 * i], r[2 * i + 1]);
                let at = 4 * (i / 2) + 2 * (i % 2);
                a[at] = _mm512_unpacklo_ps(lo, hi);
                a[at + 1] = _mm512_unpackhi_ps(lo, hi);
            }
            // b[4i + m], 128-bit lane k: rows 4i .. 4i + 4 at position 4k + m.
            let mut b = [_mm512_setzero_ps(); 16];
            for i in 0..4 {
                let (lo0, hi0, lo1, hi1) = (a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]);
                b[4 * i] = _mm512_shuffle_ps::<0x44>(lo0, lo1);
                b[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(lo0, lo1);
                b[4 * i + 2] = _mm512_shuffle_ps::<0x44>(hi0, hi1);
                b[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(hi0, hi1);
            }
            // Position 4k + m: lane k of b[m], b[4 + m], b[8 + m], b[12 + m].
            for m in 0..4 {
                let c = _mm512_shuffle_f32x4::<0x88>(b[m], b[4 + m]);
                let d = _mm512_shuffle_f32x4::<0xDD>(b[m], b[4 + m]);
                let e = _mm512_shuffle_f32x4::<0x88>(b[8 + m], b[12 + m]);
                let f = _mm512_shuffle_f32x4::<0xDD>(b[8 + m], b[12 + m]);
                let out = dst.add(p0 * 16);
                _mm512_storeu_ps(out.add(m * 16), _mm512_shuffle_f32x4::<0x88>(c, e));
                _mm512_storeu_ps(out.add((4 + m) * 16), _mm512_shuffle_f32x4::<0x88>(d, f));
                _mm512_storeu_ps(out.add((8 + m) * 16), _mm512_shuffle_f32x4::<0xDD>(c, e));
                _mm512_storeu_ps(out.add((12 + m) * 16), _mm512_shuffle_f32x4::<0xDD>(d, f));
            }
        }
        let idx = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(stride as i32),
        );
        for p in full..npos {
            let v = _mm512_i32gather_ps::<4>(idx, src.add(p).cast());
            _mm512_storeu_ps(dst.add(p * 16), v);
        }
    }
}

/// [`transpose`] with AVX2 gathers.
///
/// # Safety
/// AVX2; `g` holds `7 * stride + npos` values, which fits `i32`; `gt` `8 * npos`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather_avx2(g: &[f32], stride: usize, npos: usize, gt: &mut [f32]) {
    use std::arch::x86_64::*;
    let s = stride as i32;
    // SAFETY: as in `gather_avx512`.
    unsafe {
        let idx = _mm256_setr_epi32(0, s, 2 * s, 3 * s, 4 * s, 5 * s, 6 * s, 7 * s);
        for p in 0..npos {
            let v = _mm256_i32gather_ps::<4>(g.as_ptr().add(p), idx);
            _mm256_storeu_ps(gt.as_mut_ptr().add(p * 8), v);
        }
    }
}

/// Geometry of one tile: `rows` output rows of `ow` positions, slab rows `wp` apart.
#[derive(Debug, Clone, Copy)]
struct Tile {
    rows: usize,
    ow: usize,
    wp: usize,
}

/// Runs the kernel of `isa` for kernel width `kw` over one tile and block of channels:
/// `out (nrows * kw, lanes) += sum_p gt[p] * slab[base(p) + row_offs[i] + kx]`.
fn run(
    isa: Isa,
    kw: usize,
    slab: &[f32],
    row_offs: &[usize],
    gt: &[f32],
    tile: Tile,
    out: &mut [f32],
) {
    let (r, _) = register_tile(isa, kw).expect("weight_lanes: unsupported kernel");
    let lanes = isa.lanes();
    let max_off = row_offs.iter().copied().max().unwrap_or(0);
    assert!(tile.rows > 0 && tile.ow > 0 && row_offs.len().is_multiple_of(r));
    assert!((tile.rows - 1) * tile.wp + tile.ow - 1 + max_off + kw <= slab.len());
    assert!(gt.len() == tile.rows * tile.ow * lanes && out.len() == row_offs.len() * kw * lanes);
    let args = Args {
        slab,
        row_offs,
        gt,
        tile,
        out,
    };
    match (isa, kw) {
        // SAFETY: `weight` checked that the CPU supports `isa`; the asserts above keep every
        // access inside the slices (see `tile_sums`).
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, _) => unsafe { run_avx512(args, kw) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, _) => unsafe { run_avx2(args, kw) },
        _ => unreachable!("weight_lanes: no kernel for {isa:?}"),
    }
}

/// Operands of one kernel call.
struct Args<'a> {
    slab: &'a [f32],
    /// Slab offset per tap row, a multiple of `R` of them.
    row_offs: &'a [usize],
    /// Output gradient of the tile's block of channels, position-major `(rows * ow, L)`.
    gt: &'a [f32],
    tile: Tile,
    /// Sums `(row_offs.len() * KW, L)`.
    out: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512(args: Args<'_>, kw: usize) {
    // SAFETY: forwarded from the caller (AVX-512F available, operands sized).
    unsafe {
        match kw {
            1 => tile_sums::<Avx512, 24, 1>(args),
            3 => tile_sums::<Avx512, 8, 3>(args),
            5 => tile_sums::<Avx512, 4, 5>(args),
            _ => tile_sums::<Avx512, 3, 7>(args),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2(args: Args<'_>, kw: usize) {
    // SAFETY: forwarded from the caller (AVX2 and FMA available, operands sized).
    unsafe {
        match kw {
            1 => tile_sums::<Avx2, 12, 1>(args),
            3 => tile_sums::<Avx2, 4, 3>(args),
            5 => tile_sums::<Avx2, 2, 5>(args),
            _ => tile_sums::<Avx2, 1, 7>(args),
        }
    }
}

/// `out[(i * KW + kx) * L + l] += sum_p gt[p * L + l] * slab[r * wp + ox + row_offs[i] + kx]`
/// over the tile's positions `p = (r, ox)`, `R` tap rows at a time.
///
/// # Safety
/// The CPU supports `L`; `row_offs.len()` is a multiple of `R`; `gt` holds `rows * ow * L::N`
/// values, `out` `row_offs.len() * KW * L::N`, and `slab` at least `(rows - 1) * wp + ow - 1
/// + max(row_offs) + KW`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over `R`/`KW` unroll into registers.
unsafe fn tile_sums<L: Lanes, const R: usize, const KW: usize>(a: Args<'_>) {
    let t = a.tile;
    for rb in (0..a.row_offs.len()).step_by(R) {
        // SAFETY: by the function's contract: slab reads `r * wp + ox + row_offs[rb + i] + kx
        // < slab.len()`, gradient reads `(r * ow + ox + 1) * L::N <= gt.len()`, `out`
        // indices `((rb + i) * KW + kx + 1) * L::N <= out.len()`.
        unsafe {
            let mut rp = [a.slab.as_ptr(); R];
            for i in 0..R {
                rp[i] = a.slab.as_ptr().add(*a.row_offs.get_unchecked(rb + i));
            }
            let mut acc = [[L::zero(); KW]; R];
            let mut gp = a.gt.as_ptr();
            for r in 0..t.rows {
                for xi in r * t.wp..r * t.wp + t.ow {
                    let gv = L::load(gp);
                    for i in 0..R {
                        let p = rp[i].add(xi);
                        for kx in 0..KW {
                            acc[i][kx] = L::fma(gv, L::splat(p.add(kx)), acc[i][kx]);
                        }
                    }
                    gp = gp.add(L::N);
                }
            }
            for i in 0..R {
                for kx in 0..KW {
                    let o = a.out.as_mut_ptr().add(((rb + i) * KW + kx) * L::N);
                    L::store(o, L::add(L::load(o), acc[i][kx]));
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

    /// Every kernel width that has a register tile, padding from none to more than the kernel,
    /// and enough planes that tiles reuse planes.
    const CASES: [Case; 5] = [
        (1, 3, 16, [5, 6, 7], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        (2, 5, 32, [9, 4, 21], [2, 3, 1], [0, 1, 0], [1, 1, 0]),
        (1, 2, 16, [3, 9, 19], [1, 5, 5], [0, 2, 2], [0, 2, 2]),
        (1, 1, 48, [1, 11, 13], [1, 7, 7], [0, 3, 4], [0, 3, 2]),
        (1, 4, 16, [30, 5, 33], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
    ];

    #[test]
    fn matches_im2col_on_every_isa_with_a_kernel() {
        let mut rng = Rng::new(50);
        let mut ran = 0;
        for case in &CASES {
            let core = core(case);
            let x = random(&mut rng, core.n * core.cin * core.ivol());
            let g = random(&mut rng, core.n * core.cout * core.ovol());
            let expected = core.run_weight(&x, &g);
            let scale = (core.n * core.ovol()) as f32;
            for isa in Isa::supported() {
                if !supports(&core, isa) {
                    continue;
                }
                ran += 1;
                let err = max_diff(&weight(&core, isa, &x, &g), &expected);
                assert!(err < 1e-6 * scale, "{isa:?} {case:?}: {err}");
            }
        }
        let x86 = Isa::supported().contains(&Isa::Avx2);
        assert!(!x86 || ran >= CASES.len(), "only {ran} runs");
    }

    #[test]
    fn does_not_depend_on_the_thread_count() {
        let Some(isa) = Isa::supported().into_iter().find(|&i| i != Isa::Portable) else {
            return;
        };
        let spec = ConvSpec {
            ndim: 3,
            stride: [1; 3],
            lo: [1; 3],
            hi: [1; 3],
        };
        let core = Core::forward(&spec, &[1, 3, 12, 6, 17], 16, [3, 3, 3]);
        let mut rng = Rng::new(51);
        let x = random(&mut rng, core.n * core.cin * core.ivol());
        let g = random(&mut rng, core.n * core.cout * core.ovol());
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

    #[test]
    fn transposes_to_position_major() {
        for isa in Isa::supported() {
            let lanes = isa.lanes();
            let (stride, npos) = (41, 37);
            let g: Vec<f32> = (0..(lanes - 1) * stride + npos).map(|v| v as f32).collect();
            let mut gt = vec![0.0; npos * lanes];
            transpose(isa, &g, stride, npos, &mut gt);
            for p in 0..npos {
                for l in 0..lanes {
                    assert_eq!(
                        gt[p * lanes + l],
                        (l * stride + p) as f32,
                        "{isa:?} {p} {l}"
                    );
                }
            }
        }
    }
}
