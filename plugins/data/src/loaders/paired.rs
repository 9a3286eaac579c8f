//! `paired`: each moving image has its fixed image of the same name.

use voxreg_framework::prelude::*;

use super::pairs::{Pairs, Side};
use super::sampling::{epoch_rng, shuffled};

/// Opens `moving_images` and `fixed_images` (and the label folders), checking that names
/// agree and that each pair's moving and fixed labels count the same.
pub(crate) fn open_sides(
    source: &SplitSource<'_>,
    shapes: &ImageShapes,
) -> Result<(Side, Side), ComponentError> {
    let moving = Side::open(
        source,
        "moving_images",
        "moving_labels",
        false,
        &shapes.moving,
    )?;
    let fixed = Side::open(source, "fixed_images", "fixed_labels", false, &shapes.fixed)?;
    moving.images.require_same_ids(&fixed.images, source.dirs)?;
    if moving.labels.is_some() != fixed.labels.is_some() {
        let (has, lacks) = if moving.labels.is_some() {
            ("moving_labels", "fixed_labels")
        } else {
            ("fixed_labels", "moving_labels")
        };
        return Err(ComponentError::Data {
            path: source.dirs.first().cloned().unwrap_or_default(),
            message: format!(
                "the data has {has} but no {lacks}: label both sides, or set `labeled: false`"
            ),
        });
    }
    for (index, (m, f)) in moving
        .label_counts
        .iter()
        .zip(&fixed.label_counts)
        .enumerate()
    {
        if m != f {
            return Err(ComponentError::Data {
                path: source.dirs.first().cloned().unwrap_or_default(),
                message: format!(
                    "pair `{}`: the moving label has {m} labels, the fixed label {f}",
                    moving.images.ids()[index]
                ),
            });
        }
    }
    Ok((moving, fixed))
}

/// Paired data: every pair once per epoch, in random order (training) or a fixed order.
pub(crate) struct PairedData {
    pub pairs: Pairs,
    pub split: Split,
    pub seed: Option<u64>,
}

impl DataLoader for PairedData {
    fn epoch(&self, epoch: u64, seed: u64) -> Vec<SampleRef> {
        let mut rng = epoch_rng(self.split, self.seed.unwrap_or(seed), epoch);
        let order = shuffled(self.pairs.moving.images.len(), &mut rng);
        let pairs = order.into_iter().map(|i| (i, i)).collect();
        self.pairs.expand(pairs, &mut rng)
    }

    fn load(&self, sample: &SampleRef) -> Result<Sample, ComponentError> {
        self.pairs.load(sample)
    }
}
