//! Seeded sampling: the same seed and epoch give the same samples; validation and test
//! splits always use the same draw.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use voxreg_framework::prelude::*;

/// The generator for one epoch of one split. Training draws from `(seed, epoch)`;
/// validation and test from a fixed seed, whatever the epoch.
pub(crate) fn epoch_rng(split: Split, seed: u64, epoch: u64) -> ChaCha8Rng {
    let mixed = match split {
        Split::Train => seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        Split::Valid | Split::Test => 0,
    };
    ChaCha8Rng::seed_from_u64(mixed)
}

/// `0..n` in random order.
pub(crate) fn shuffled(n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    order
}
