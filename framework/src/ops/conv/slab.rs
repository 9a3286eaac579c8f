//! The zero-padded window of a stride-1 convolution's input that one tile of the direct
//! kernels reads.
//!
//! A tile computes `rows` output rows `oy..` of output plane `oz`. Its *slab* holds, per input
//! channel, the `KD` padded input planes `oz..oz + KD` and in each the `rows + KH - 1` padded
//! rows `oy..`, each `wp = OW + KW - 1` wide: padded sample `p` of an axis holds input
//! `p - pad` (zero outside the input; a negative padding crops). Output position `(r, ox)` of
//! the tile then reads tap `(ci, kz, ky, kx)` at `r * wp + ox + ci * chan + kz * plane + ky *
//! wp + kx`: one offset per tap, the same for every position, and no bounds to check.

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
        }
    }

    /// Offset of tap `(ci, kz, ky, kx)` relative to its output position, in weight-matrix
    /// column order (`ci` slowest, `kx` fastest).
    pub(super) fn tap_offsets(&self, core: &Core) -> Vec<usize> {
        let [kd, kh, kw] = core.k;
        let mut offs = Vec::with_capacity(core.krows());
        for ci in 0..core.cin {
            for kz in 0..kd {
                for ky in 0..kh {
                    for kx in 0..kw {
                        offs.push(ci * self.chan + kz * self.plane + ky * self.wp + kx);
                    }
                }
            }
        }
        offs
    }

    /// Copies the window of batch item `xb` `(cin, inp)` that the tile of `rows` output rows
    /// from `(oz, oy)` reads (`rows` at most the slab's), with zeros outside the input.
    pub(super) fn fill(&mut self, core: &Core, xb: &[f32], oz: usize, oy: usize, rows: usize) {
        let [kd, kh, _] = core.k;
        let [id, ih, iw] = core.inp;
        let ivol = core.ivol();
        let wp = self.wp;
        // Columns `lo..hi` of a padded row hold input columns `lo - pad .. hi - pad`.
        let lo = (core.pad[2].max(0) as usize).min(wp);
        let hi = (core.pad[2] + iw as isize).clamp(lo as isize, wp as isize) as usize;
        let src0 = (lo as isize - core.pad[2]) as usize;
        for ci in 0..core.cin {
            let xc = &xb[ci * ivol..(ci + 1) * ivol];
            for kz in 0..kd {
                let iz = (oz + kz) as isize - core.pad[0];
                for ry in 0..rows + kh - 1 {
                    let iy = (oy + ry) as isize - core.pad[1];
                    let at = ci * self.chan + kz * self.plane + ry * wp;
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
}

#[cfg(test)]
mod tests {
    use super::super::ConvSpec;
    use super::*;

    #[test]
    fn pads_and_crops_every_axis() {
        // Input (1, 2, 2, 3, 4), kernel (3, 2, 3), padding lo (1, 0, 2) hi (1, 1, 0): output
        // (2, 3, 4), padded rows 6 wide. The tile: output plane 1, rows 1..3.
        let spec = ConvSpec {
            ndim: 3,
            stride: [1; 3],
            lo: [1, 0, 2],
            hi: [1, 1, 0],
        };
        let core = Core::forward(&spec, &[1, 2, 2, 3, 4], 1, [3, 2, 3]);
        assert_eq!(core.out, [2, 3, 4]);
        let x: Vec<f32> = (1..=48).map(|v| v as f32).collect();
        let mut slab = Slab::new(&core, 2, 5);
        assert_eq!((slab.wp, slab.plane, slab.chan), (6, 18, 54));
        assert_eq!(slab.data.len(), 2 * 54 + 5);
        slab.fill(&core, &x, 1, 1, 2);
        for c in 0..2 {
            for kz in 0..3 {
                for ry in 0..3 {
                    for px in 0..6 {
                        let (iz, iy, ix) = (kz as isize, 1 + ry as isize, px as isize - 2);
                        let inside =
                            (0..2).contains(&iz) && (0..3).contains(&iy) && (0..4).contains(&ix);
                        let want = if inside {
                            x[((c * 2 + iz as usize) * 3 + iy as usize) * 4 + ix as usize]
                        } else {
                            0.0
                        };
                        let got = slab.data[c * 54 + kz * 18 + ry * 6 + px];
                        assert_eq!(got, want, "{c} {kz} {ry} {px}");
                    }
                }
            }
        }
        assert!(slab.data[108..].iter().all(|&v| v == 0.0));
        let offs = slab.tap_offsets(&core);
        assert_eq!(offs.len(), 2 * 18);
        assert_eq!(offs[17], 2 * 18 + 6 + 2);
        assert_eq!(offs[18], 54);
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
        slab.fill(&core, &x, 0, 0, 1);
        assert_eq!(slab.data, vec![3.0, 4.0, 5.0, 6.0]);
    }
}
