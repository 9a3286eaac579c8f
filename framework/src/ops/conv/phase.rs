//! Transposed convolution (a stride-1 convolution of an input dilated by the stride) as one
//! direct convolution per output phase, which skips the zero taps of the dilated input.
//!
//! Along one axis with dilation `s`, kernel `K` and leading padding `pad`, output
//! `o = o' * s + p` (phase `p < s`) reads the dilated input at `o + k - pad`, which is a real
//! input sample only for taps `k = r + m * s` with `r = (pad - p) mod s`; it is then input
//! `o' + m + e` with `e = (p + r - pad) / s` (exact). So phase `p` is a stride-1 convolution of
//! the undilated input with the sub-kernel `w[r + m * s]` (`m < ceil((K - r) / s)`) and padding
//! `-e`, and its outputs land every `s`-th output. A phase with no tap (`r >= K`) is zero.

use rayon::prelude::*;

use super::direct;
use super::lanes::Isa;
use super::Core;

/// Whether [`forward`] computes this geometry (stride 1, some input dilation).
pub(super) fn supports(core: &Core) -> bool {
    core.stride == [1; 3] && core.dil != [1; 3]
}

/// `y = W x` for a stride-1 convolution over `x` `(n, cin, inp)` dilated by `core.dil`, with
/// `wmat` `(cout, cin * kvol)` (as `Core::run_forward`).
pub(super) fn forward(core: &Core, isa: Isa, x: &[f32], wmat: &[f32]) -> Vec<f32> {
    let ovol = core.ovol();
    let mut y = vec![0.0f32; core.n * core.cout * ovol];
    let s = core.dil;
    for pz in 0..s[0] {
        for py in 0..s[1] {
            for px in 0..s[2] {
                let Some((sub, first)) = phase(core, [pz, py, px]) else {
                    continue;
                };
                let w = sub_kernel(core, &sub, first, wmat);
                let part = direct::forward(&sub, isa, x, &w);
                scatter(core, &sub, [pz, py, px], &part, &mut y);
            }
        }
    }
    y
}

/// The stride-1 convolution computing phase `p`, and the first tap of its sub-kernel per axis;
/// `None` when the phase has no output or no tap.
fn phase(core: &Core, p: [usize; 3]) -> Option<(Core, [usize; 3])> {
    let mut sub = *core;
    let mut first = [0; 3];
    for a in 0..3 {
        let s = core.dil[a];
        if p[a] >= core.out[a] {
            return None;
        }
        let r = (core.pad[a] - p[a] as isize).rem_euclid(s as isize) as usize;
        if r >= core.k[a] {
            return None;
        }
        first[a] = r;
        sub.k[a] = (core.k[a] - r).div_ceil(s);
        sub.out[a] = (core.out[a] - p[a]).div_ceil(s);
        sub.pad[a] = -((p[a] + r) as isize - core.pad[a]) / s as isize;
        sub.dil[a] = 1;
    }
    Some((sub, first))
}

/// The taps `first + m * dil` of `wmat` `(cout, cin, k)` as the weight matrix of `sub`.
fn sub_kernel(core: &Core, sub: &Core, first: [usize; 3], wmat: &[f32]) -> Vec<f32> {
    let (kvol, svol) = (core.kvol(), sub.kvol());
    let [_, kh, kw] = core.k;
    let mut out = Vec::with_capacity(core.cout * core.cin * svol);
    for pair in 0..core.cout * core.cin {
        let src = &wmat[pair * kvol..(pair + 1) * kvol];
        for mz in 0..sub.k[0] {
            let kz = first[0] + mz * core.dil[0];
            for my in 0..sub.k[1] {
                let ky = first[1] + my * core.dil[1];
                for mx in 0..sub.k[2] {
                    let kx = first[2] + mx * core.dil[2];
                    out.push(src[(kz * kh + ky) * kw + kx]);
                }
            }
        }
    }
    out
}

/// Writes the phase output `part` `(n, cout, sub.out)` to every `dil`-th output of `y`,
/// starting at `p`.
fn scatter(core: &Core, sub: &Core, p: [usize; 3], part: &[f32], y: &mut [f32]) {
    let [_, oh, ow] = core.out;
    let [sd, sh, sw] = sub.out;
    let s = core.dil;
    let svol = sub.ovol();
    y.par_chunks_mut(core.ovol())
        .zip(part.par_chunks(svol))
        .for_each(|(dst, src)| {
            for z in 0..sd {
                for yy in 0..sh {
                    let row = &src[(z * sh + yy) * sw..][..sw];
                    let at = ((z * s[0] + p[0]) * oh + yy * s[1] + p[1]) * ow + p[2];
                    for (x, &v) in row.iter().enumerate() {
                        dst[at + x * s[2]] = v;
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::super::ConvSpec;
    use super::*;
    use crate::ops::common::testing::Rng;

    #[test]
    fn matches_im2col_for_strided_transposed_convolutions() {
        // (n, cin, cout, output of the transposed conv = input of the strided conv, k, stride,
        // lo, hi): kernels larger and smaller than the stride, odd sizes, asymmetric padding.
        type Case = (
            usize,
            usize,
            usize,
            [usize; 3],
            [usize; 3],
            [usize; 3],
            [usize; 3],
            [usize; 3],
        );
        let cases: [Case; 5] = [
            (
                1,
                3,
                5,
                [8, 9, 10],
                [3, 3, 3],
                [2, 2, 2],
                [1, 1, 1],
                [1, 1, 1],
            ),
            (
                2,
                4,
                3,
                [7, 6, 11],
                [2, 2, 2],
                [2, 2, 2],
                [0, 0, 0],
                [0, 0, 0],
            ),
            (
                1,
                2,
                17,
                [1, 13, 9],
                [1, 4, 3],
                [1, 3, 2],
                [0, 1, 2],
                [0, 2, 0],
            ),
            (
                1,
                5,
                2,
                [6, 5, 7],
                [1, 1, 1],
                [2, 2, 2],
                [0, 0, 0],
                [0, 0, 0],
            ),
            (
                1,
                3,
                4,
                [9, 8, 7],
                [3, 2, 3],
                [3, 2, 2],
                [1, 0, 1],
                [2, 1, 0],
            ),
        ];
        let mut rng = Rng::new(44);
        for case in cases {
            let (n, cin, cout, inp, k, stride, lo, hi) = case;
            let spec = ConvSpec {
                ndim: 3,
                stride,
                lo,
                hi,
            };
            let fwd = Core::forward(&spec, &[n, cin, inp[0], inp[1], inp[2]], cout, k);
            let gd = [n, cout, fwd.out[0], fwd.out[1], fwd.out[2]];
            let data = Core::data(&spec, &gd, cin, k, inp);
            assert!(supports(&data) && !direct::supports(&data));
            let g: Vec<f32> = (0..n * cout * data.ivol())
                .map(|_| rng.uniform() as f32 * 2.0 - 1.0)
                .collect();
            let w: Vec<f32> = (0..data.cout * data.krows())
                .map(|_| rng.uniform() as f32 * 2.0 - 1.0)
                .collect();
            let expected = data.run_forward(&g, &w);
            for isa in Isa::supported() {
                let got = forward(&data, isa, &g, &w);
                let err = got
                    .iter()
                    .zip(&expected)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(err < 1e-5, "{isa:?} {case:?}: {err}");
            }
        }
    }
}
