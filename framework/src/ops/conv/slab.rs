//! The zero-padded window of a stride-1 convolution's input that one tile of the direct
//! kernels reads.
//!
//! A tile computes `rows` output rows `oy..` of output plane `oz`. Its *slab* holds, per input
//! channel, the `KD` padded input planes `oz..oz + KD` and in each the `rows + KH - 1` padded
//! rows `oy..`, each `wp = OW + KW - 1` wide: padded sample `p` of an axis holds input
//! `p - pad` (zero outside the input; a negative padding crops). Padded plane `pz` sits in
//! slot `pz mod KD`, so the next tile down the same rows (`oz + 1`) reuses `KD - 1` planes and
//! copies one. Output position `(r, ox)` of the tile then reads tap `(ci, kz, ky, kx)` at
//! `r * wp + ox + ci * chan + ((oz + kz) mod KD) * plane + ky * wp + kx`: one offset per tap
//! (for each phase `oz mod KD`), the same for every position, and no bounds to check.

use super::Core;

/// One tile's padded input window `(cin, KD, rows + KH - 1, wp)`, followed by zero slack.
pub(super) struct Slab {
    /// The values; the slack past `cin * chan` is zero and never written.
    pub(super) data: Vec<f32>,
    /// Padded row width `OW + KW - 1`.
    pub(super) wp: usize,
    /// Values per slab plane, `(rows + KH - 1) * wp`.
    pub(super) plane: usize,
    /// Values per input channel, `KD * plane`.
    pub(super) chan: usize,
    /// The tile `(batch, output plane, first row, rows)` whose window the slab holds.
    holds: Option<(usize, usize, usize, usize)>,
}

impl Slab {
    /// A zero slab for tiles of up to `rows` output rows, with `slack` zeros past the last
    /// channel so vector loads that run past a row's end stay inside the buffer.
    pub(super) fn new(core: &Core, rows: usize, slack: usize) -> Self {
        let [kd, kh, kw] = core.k;
        let wp = core.out[2] + kw - 1;
        let plane = (rows + kh - 1) * wp;
        let chan = kd * plane;
        Self {
            data: vec![0.0; core.cin * chan + slack],
            wp,
            plane,
            chan,
            holds: None,
        }
    }

    /// Offset of tap `(ci, kz, ky, kx)` relative to its output position for tiles of output
    /// planes `oz` with `oz mod KD == phase`, in weight-matrix column order (`ci` slowest,
    /// `kx` fastest).
    pub(super) fn tap_offsets(&self, core: &Core, phase: usize) -> Vec<usize> {
        let [kd, kh, kw] = core.k;
        let mut offs = Vec::with_capacity(core.krows());
        for ci in 0..core.cin {
            for kz in 0..kd {
                let slot = (phase + kz) % kd;
                for ky in 0..kh {
                    for kx in 0..kw {
                        offs.push(ci * self.chan + slot * self.plane + ky * self.wp + kx);
                    }
                }
            }
        }
        offs
    }

    /// Makes the slab hold the window of the tile of `rows` output rows from `(oz, oy)` of
    /// batch item `b` (`xb`, `(cin, inp)`; `rows` at most the slab's), with zeros outside the
    /// input: one plane per channel when the slab held the tile above it (`oz - 1`, same
    /// rows), every plane otherwise. Returns the tile's phase `oz mod KD`.
    pub(super) fn fill(
        &mut self,
        core: &Core,
        xb: &[f32],
        (b, oz, oy): (usize, usize, usize),
        rows: usize,
    ) -> usize {
        let kd = core.k[0];
        let reuse = oz > 0 && self.holds == Some((b, oz - 1, oy, rows));
        let first = if reuse { kd - 1 } else { 0 };
        for kz in first..kd {
            self.fill_plane(core, xb, oz + kz, oy, rows);
        }
        self.holds = Some((b, oz, oy, rows));
        oz % kd
    }

    /// Copies padded plane `pz`, rows `oy .. oy + rows + KH - 1`, of every channel into its
    /// slot `pz mod KD`.
    fn fill_plane(&mut self, core: &Core, xb: &[f32], pz: usize, oy: usize, rows: usize) {
        let [kd, kh, _] = core.k;
        let [id, ih, iw] = core.inp;
        let ivol = core.ivol();
        let wp = self.wp;
        // Columns `lo..hi` of a padded row hold input columns `lo - pad .. hi - pad`.
        let lo = (core.pad[2].max(0) as usize).min(wp);
        let hi = (core.pad[2] + iw as isize).clamp(lo as isize, wp as isize) as usize;
        let src0 = (lo as isize - core.pad[2]) as usize;
        let iz = pz as isize - core.pad[0];
        let slot = (pz % kd) * self.plane;
        for ci in 0..core.cin {
            let xc = &xb[ci * ivol..(ci + 1) * ivol];
            for ry in 0..rows + kh - 1 {
                let iy = (oy + ry) as isize - core.pad[1];
                let at = ci * self.chan + slot + ry * wp;
                let row = &mut self.data[at..at + wp];
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

#[cfg(test)]
mod tests {
    use super::super::ConvSpec;
    use super::*;

    /// Input (1, 2, 3, 3, 4), kernel (3, 2, 3), padding lo (1, 0, 2) hi (1, 1, 0): output
    /// (3, 3, 4), padded rows 6 wide.
    fn core() -> Core {
        let spec = ConvSpec {
            ndim: 3,
            stride: [1; 3],
            lo: [1, 0, 2],
            hi: [1, 1, 0],
        };
        Core::forward(&spec, &[1, 2, 3, 3, 4], 1, [3, 2, 3])
    }

    /// Input value at padded position `(pz, py, px)` of channel `c`, zero outside.
    fn padded(core: &Core, x: &[f32], c: usize, p: [usize; 3]) -> f32 {
        let mut i = [0usize; 3];
        for a in 0..3 {
            let v = p[a] as isize - core.pad[a];
            if v < 0 || v >= core.inp[a] as isize {
                return 0.0;
            }
            i[a] = v as usize;
        }
        x[((c * core.inp[0] + i[0]) * core.inp[1] + i[1]) * core.inp[2] + i[2]]
    }

    /// Every tap of every position of the tile reads the padded input it should.
    fn check_tile(
        core: &Core,
        x: &[f32],
        slab: &Slab,
        phase: usize,
        (oz, oy): (usize, usize),
        rows: usize,
    ) {
        let offs = slab.tap_offsets(core, phase);
        let [kd, kh, kw] = core.k;
        for r in 0..rows {
            for ox in 0..core.out[2] {
                let mut j = 0;
                for c in 0..core.cin {
                    for kz in 0..kd {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let got = slab.data[r * slab.wp + ox + offs[j]];
                                let want = padded(core, x, c, [oz + kz, oy + r + ky, ox + kx]);
                                assert_eq!(got, want, "tile {oz} {oy}: {r} {ox} tap {j}");
                                j += 1;
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pads_and_crops_every_axis_and_reuses_planes_down_a_column() {
        let core = core();
        assert_eq!(core.out, [3, 3, 4]);
        let x: Vec<f32> = (1..=72).map(|v| v as f32).collect();
        let mut slab = Slab::new(&core, 2, 5);
        assert_eq!((slab.wp, slab.plane, slab.chan), (6, 18, 54));
        assert_eq!(slab.data.len(), 2 * 54 + 5);
        // Down one column of tiles (planes reused), then a jump to other rows (all copied).
        for (oz, oy, rows) in [(0, 1, 2), (1, 1, 2), (2, 1, 2), (1, 0, 1), (2, 0, 1)] {
            let phase = slab.fill(&core, &x, (0, oz, oy), rows);
            assert_eq!(phase, oz % 3);
            check_tile(&core, &x, &slab, phase, (oz, oy), rows);
        }
        assert!(slab.data[108..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn negative_padding_crops() {
        // The input gradient of a convolution with padding larger than the kernel pads by
        // `k - 1 - lo < 0`: the window starts inside the input.
        let core = Core {
            n: 1,
            cin: 1,
            cout: 1,
            inp: [1, 1, 6],
            k: [1, 1, 2],
            out: [1, 1, 3],
            stride: [1; 3],
            dil: [1; 3],
            pad: [0, 0, -2],
        };
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut slab = Slab::new(&core, 1, 0);
        slab.fill(&core, &x, (0, 0, 0), 1);
        assert_eq!(slab.data, vec![3.0, 4.0, 5.0, 6.0]);
    }
}
