//! `unpaired`: pairs drawn from one pool of images.

use voxreg_framework::prelude::*;

use super::pairs::Pairs;
use super::sampling::{epoch_rng, shuffled};

/// Unpaired data: each epoch shuffles the images and pairs them up, giving ⌊N/2⌋ pairs
/// drawn without replacement (DeepReg's rule).
pub(crate) struct UnpairedData {
    pub pairs: Pairs,
    pub split: Split,
    pub seed: Option<u64>,
}

impl DataLoader for UnpairedData {
    fn epoch(&self, epoch: u64, seed: u64) -> Vec<SampleRef> {
        let mut rng = epoch_rng(self.split, self.seed.unwrap_or(seed), epoch);
        let order = shuffled(self.pairs.moving.images.len(), &mut rng);
        let pairs = order
            .chunks_exact(2)
            .map(|pair| (pair[0], pair[1]))
            .collect();
        self.pairs.expand(pairs, &mut rng)
    }

    fn load(&self, sample: &SampleRef) -> Result<Sample, ComponentError> {
        self.pairs.load(sample)
    }
}
