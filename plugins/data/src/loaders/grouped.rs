//! `grouped`: images in groups; pairs within a group (intra) or across groups (inter).

use rand::seq::IndexedRandom;
use rand::Rng;
use voxreg_framework::prelude::*;

use super::config::IntraGroupOption;
use super::pairs::Pairs;
use super::sampling::{epoch_rng, shuffled};

/// Grouped data, with DeepReg's sampling:
///
/// * `sample_image_in_group: true` — one pair per group and epoch, groups in random order:
///   with probability `intra_group_prob` two distinct images of the group (ordered by
///   `intra_group_option`), else one image of the group and one of another random group;
/// * `sample_image_in_group: false` — every pair once per epoch, in random order: all
///   intra-group pairs (`intra_group_prob: 1`; Σ nᵢ(nᵢ−1)/2 for forward / backward,
///   Σ nᵢ(nᵢ−1) unconstrained) or all inter-group pairs (`intra_group_prob: 0`;
///   (Σnᵢ)² − Σnᵢ² pairs).
pub(crate) struct GroupedData {
    pub pairs: Pairs,
    /// Image indices of each group, in id order.
    pub groups: Vec<Vec<usize>>,
    pub intra_group_prob: f64,
    pub intra_group_option: IntraGroupOption,
    pub sample_image_in_group: bool,
    pub split: Split,
    pub seed: Option<u64>,
}

impl GroupedData {
    fn ordered(&self, a: usize, b: usize) -> (usize, usize) {
        match self.intra_group_option {
            IntraGroupOption::Forward => (a.min(b), a.max(b)),
            IntraGroupOption::Backward => (a.max(b), a.min(b)),
            IntraGroupOption::Unconstrained => (a, b),
        }
    }

    fn all_intra(&self) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        for group in &self.groups {
            for (i, &later) in group.iter().enumerate() {
                for &earlier in &group[..i] {
                    match self.intra_group_option {
                        IntraGroupOption::Forward => pairs.push((earlier, later)),
                        IntraGroupOption::Backward => pairs.push((later, earlier)),
                        IntraGroupOption::Unconstrained => {
                            pairs.push((earlier, later));
                            pairs.push((later, earlier));
                        }
                    }
                }
            }
        }
        pairs
    }

    fn all_inter(&self) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        for (g1, first) in self.groups.iter().enumerate() {
            for (g2, second) in self.groups.iter().enumerate() {
                if g1 != g2 {
                    pairs.extend(
                        first
                            .iter()
                            .flat_map(|&m| second.iter().map(move |&f| (m, f))),
                    );
                }
            }
        }
        pairs
    }
}

impl DataLoader for GroupedData {
    fn epoch(&self, epoch: u64, seed: u64) -> Vec<SampleRef> {
        let mut rng = epoch_rng(self.split, self.seed.unwrap_or(seed), epoch);
        let pairs = if self.sample_image_in_group {
            let mut pairs = Vec::with_capacity(self.groups.len());
            for g in shuffled(self.groups.len(), &mut rng) {
                let group = &self.groups[g];
                if rng.random::<f64>() <= self.intra_group_prob {
                    if group.len() < 2 {
                        continue;
                    }
                    let chosen: Vec<usize> = group.choose_multiple(&mut rng, 2).copied().collect();
                    pairs.push(self.ordered(chosen[0], chosen[1]));
                } else {
                    let others: Vec<usize> = (0..self.groups.len()).filter(|&o| o != g).collect();
                    let Some(&other) = others.choose(&mut rng) else {
                        continue;
                    };
                    let moving = group.choose(&mut rng).copied();
                    let fixed = self.groups[other].choose(&mut rng).copied();
                    if let (Some(moving), Some(fixed)) = (moving, fixed) {
                        pairs.push((moving, fixed));
                    }
                }
            }
            pairs
        } else {
            let all = if self.intra_group_prob >= 1.0 {
                self.all_intra()
            } else {
                self.all_inter()
            };
            shuffled(all.len(), &mut rng)
                .into_iter()
                .map(|i| all[i])
                .collect()
        };
        self.pairs.expand(pairs, &mut rng)
    }

    fn load(&self, sample: &SampleRef) -> Result<Sample, ComponentError> {
        self.pairs.load(sample)
    }
}
