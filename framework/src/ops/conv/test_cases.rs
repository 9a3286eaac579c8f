//! Test helpers shared by the direct kernels' tests: stride-1 convolution cases and random
//! operands.

use super::{ConvSpec, Core};
use crate::ops::common::testing::Rng;

/// A stride-1 forward convolution: `(n, cin, cout, inp, k, lo, hi)`.
pub(super) type Case = (
    usize,
    usize,
    usize,
    [usize; 3],
    [usize; 3],
    [usize; 3],
    [usize; 3],
);

/// The geometry of `case`.
pub(super) fn core(case: &Case) -> Core {
    let &(n, cin, cout, inp, k, lo, hi) = case;
    let spec = ConvSpec {
        ndim: 3,
        stride: [1; 3],
        lo,
        hi,
    };
    Core::forward(&spec, &[n, cin, inp[0], inp[1], inp[2]], cout, k)
}

/// `len` values uniform in `[-1, 1)`.
pub(super) fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect()
}

/// `len` values uniform in `[-1, 1)` from a generator seeded with `seed`.
pub(super) fn seeded(len: usize, seed: u64) -> Vec<f32> {
    random(&mut Rng::new(seed), len)
}

/// The largest absolute difference between `a` and `b` (same lengths).
pub(super) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}
