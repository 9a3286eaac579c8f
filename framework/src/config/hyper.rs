//! `train.hyperparameters`: the named hyperparameters of a step (HyperMorph's `lambda`),
//! how training draws them per sample and the value used when they are not drawn
//! (validation, `evaluate`, `predict` without `--hyper`).

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::rng::{hash_name, mix, SplitMix};

/// One hyperparameter, drawn per sample in training as HyperMorph's training script does:
/// with probability `oversample_rate` an end point (`low` or `high`, each half the time),
/// otherwise uniformly from `[low, high)`.
///
/// ```yaml
/// hyperparameters:
///   lambda: {range: [0.0, 1.0], oversample_rate: 0.2, value: 0.5}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HyperParameter {
    /// `[low, high]`, finite, `low ≤ high` (default `[0, 1]`).
    #[serde(default = "unit_range")]
    pub range: [f64; 2],
    /// The fraction of draws placed exactly on an end point, in `[0, 1]` (default 0.2,
    /// VoxelMorph's `--oversample-rate`).
    #[serde(default = "default_oversample_rate")]
    pub oversample_rate: f64,
    /// The value when none is drawn (validation, evaluation, prediction without `--hyper`);
    /// default the middle of `range`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

fn unit_range() -> [f64; 2] {
    [0.0, 1.0]
}

fn default_oversample_rate() -> f64 {
    0.2
}

impl Default for HyperParameter {
    fn default() -> Self {
        Self {
            range: unit_range(),
            oversample_rate: default_oversample_rate(),
            value: None,
        }
    }
}

impl HyperParameter {
    /// What is wrong with the entry, if anything (for the resolver's message).
    pub fn problem(&self) -> Option<String> {
        let [low, high] = self.range;
        if !low.is_finite() || !high.is_finite() || low > high {
            return Some(format!(
                "`range` must be two finite numbers [low, high] with low ≤ high, got [{low}, {high}]"
            ));
        }
        if !(0.0..=1.0).contains(&self.oversample_rate) {
            return Some(format!(
                "`oversample_rate` must lie in [0, 1], got {}",
                self.oversample_rate
            ));
        }
        match self.value {
            Some(v) if !v.is_finite() => Some(format!("`value` must be finite, got {v}")),
            _ => None,
        }
    }

    /// The value used when none is drawn: `value`, or the middle of `range`.
    pub fn fixed_value(&self) -> f64 {
        self.value
            .unwrap_or_else(|| 0.5 * (self.range[0] + self.range[1]))
    }

    /// One draw from a generator: an end point with probability `oversample_rate`,
    /// otherwise `low + (high − low)·u`, `u ~ U[0, 1)`.
    fn draw(&self, rng: &mut SplitMix) -> f64 {
        let [low, high] = self.range;
        if rng.uniform() < self.oversample_rate {
            if rng.uniform() < 0.5 {
                low
            } else {
                high
            }
        } else {
            low + (high - low) * rng.uniform()
        }
    }
}

/// The hyperparameters of a training step: every declared one drawn for each of `n`
/// samples, from a generator seeded by `seed` (the run's seed, epoch and step) and the
/// hyperparameter's name, so a resumed run draws the same values.
///
/// # Shapes
/// Each tensor is `(n,)`, `f32`.
pub fn sample_hyper(
    declared: &[(String, HyperParameter)],
    n: usize,
    seed: u64,
    device: &Device,
) -> candle_core::Result<Vec<(String, Tensor)>> {
    declared
        .iter()
        .map(|(name, hyper)| {
            let mut rng = SplitMix::new(mix(&[seed, hash_name(name)]));
            let values: Vec<f32> = (0..n).map(|_| hyper.draw(&mut rng) as f32).collect();
            Ok((name.clone(), Tensor::from_vec(values, n, device)?))
        })
        .collect()
}

/// `(n,)` tensors holding `value` for every sample, one per `(name, value)`.
pub fn fixed_hyper(
    values: &[(String, f64)],
    n: usize,
    device: &Device,
) -> candle_core::Result<Vec<(String, Tensor)>> {
    values
        .iter()
        .map(|(name, value)| Ok((name.clone(), Tensor::full(*value as f32, n, device)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_oversample_the_end_points_at_the_given_rate() {
        let declared = vec![("lambda".to_owned(), HyperParameter::default())];
        let drawn = sample_hyper(&declared, 20_000, 7, &Device::Cpu).unwrap();
        let values = drawn[0].1.to_vec1::<f32>().unwrap();
        let ends = values.iter().filter(|v| **v == 0.0 || **v == 1.0).count();
        let rate = ends as f64 / values.len() as f64;
        assert!((rate - 0.2).abs() < 0.015, "end-point rate {rate}");
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
        let inner: Vec<f32> = values
            .iter()
            .copied()
            .filter(|v| *v != 0.0 && *v != 1.0)
            .collect();
        let mean = inner.iter().sum::<f32>() / inner.len() as f32;
        assert!(
            (mean - 0.5).abs() < 0.01,
            "mean of the uniform draws {mean}"
        );
        let again = sample_hyper(&declared, 20_000, 7, &Device::Cpu).unwrap();
        assert_eq!(again[0].1.to_vec1::<f32>().unwrap(), values);
        let other = sample_hyper(&declared, 20_000, 8, &Device::Cpu).unwrap();
        assert_ne!(other[0].1.to_vec1::<f32>().unwrap(), values);
    }

    #[test]
    fn ranges_rates_and_values_are_checked() {
        let narrow = HyperParameter {
            range: [0.2, 0.4],
            oversample_rate: 0.0,
            value: None,
        };
        assert_eq!(narrow.problem(), None);
        assert!((narrow.fixed_value() - 0.3).abs() < 1e-12);
        let drawn = sample_hyper(&[("g".to_owned(), narrow)], 100, 1, &Device::Cpu).unwrap();
        assert!(drawn[0]
            .1
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|v| (0.2..0.4).contains(v)));
        let reversed = HyperParameter {
            range: [1.0, 0.0],
            ..HyperParameter::default()
        };
        assert!(reversed.problem().unwrap().contains("low ≤ high"));
        let rate = HyperParameter {
            oversample_rate: 1.5,
            ..HyperParameter::default()
        };
        assert!(rate.problem().unwrap().contains("oversample_rate"));
        let fixed = fixed_hyper(&[("lambda".to_owned(), 0.25)], 3, &Device::Cpu).unwrap();
        assert_eq!(fixed[0].1.to_vec1::<f32>().unwrap(), [0.25; 3]);
    }
}
