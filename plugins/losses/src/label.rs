//! Label losses (DeepReg's `deepreg/loss/label.py`). DeepReg sees one label per sample,
//! `(N, *spatial)`; here labels are `(N, L, *spatial)`: each is scored per label channel,
//! over its voxels, and the scores are averaged over the `L` channels.

use voxreg_framework::candle::{self, Tensor};

use crate::kinds::LabelLoss;

use crate::util::{binarise, check_pair};

/// Which overlap score [`Overlap`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OverlapKind {
    /// Dice score.
    Dice,
    /// Jaccard index.
    Jaccard,
}

/// Dice or Jaccard score per label channel, negated, averaged over the channels.
///
/// With `P = Σ t·p`, `S = Σ (t + p)` and `V` voxels per channel, weights
/// `w_bg = background_weight`, `w_fg = 1 − w_bg`:
/// * Dice, `w_bg = 0`: `(2P + s_nr) / (S + s_dr)`; generalised
///   (`w_fg Σ t p + w_bg Σ (1−t)(1−p)` over `w_fg Σ (t+p)/2 + w_bg Σ (2−t−p)/2`):
///   `(2(P − w_bg S + w_bg V) + s_nr) / ((1 − 2w_bg) S + 2 w_bg V + s_dr)`;
/// * Jaccard, `w_bg = 0`: `(P + s_nr) / (S − P + s_dr)`; generalised:
///   `(P − w_bg S + w_bg V + s_nr) / ((1 − w_bg) S − P + w_bg V + s_dr)`.
///
/// With `binary`, `t` and `p` are first thresholded (`≥ 0.5` → 1, else 0), which has no
/// gradient.
pub(crate) struct Overlap {
    pub(crate) kind: OverlapKind,
    pub(crate) spatial_dims: usize,
    pub(crate) binary: bool,
    pub(crate) background_weight: f64,
    pub(crate) smooth_nr: f64,
    pub(crate) smooth_dr: f64,
}

impl Overlap {
    fn component(&self) -> &'static str {
        match self.kind {
            OverlapKind::Dice => "label_loss `dice`",
            OverlapKind::Jaccard => "label_loss `jaccard`",
        }
    }
}

/// `(N, L, *spatial)` → `(N, L, V)`, thresholded if `binary`.
fn per_channel(x: &Tensor, binary: bool) -> candle::Result<Tensor> {
    let x = if binary { binarise(x)? } else { x.clone() };
    x.flatten_from(2)
}

impl LabelLoss for Overlap {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair(self.component(), self.spatial_dims, fixed, warped)?;
        let t = per_channel(fixed, self.binary)?;
        let p = per_channel(warped, self.binary)?;
        let voxels = t.dim(2)? as f64;
        let product = (&t * &p)?.sum(2)?;
        let sum = (t + p)?.sum(2)?;
        let w = self.background_weight;
        let (numerator, denominator) = match (self.kind, w > 0.0) {
            (OverlapKind::Dice, false) => ((product * 2.0)?, sum),
            (OverlapKind::Dice, true) => (
                ((product - (&sum * w)?)? + w * voxels)?.affine(2.0, 0.0)?,
                sum.affine(1.0 - 2.0 * w, 2.0 * w * voxels)?,
            ),
            (OverlapKind::Jaccard, false) => {
                let union = (&sum - &product)?;
                (product, union)
            }
            (OverlapKind::Jaccard, true) => (
                ((&product - (&sum * w)?)? + w * voxels)?,
                (sum.affine(1.0 - w, w * voxels)? - product)?,
            ),
        };
        let score = ((numerator + self.smooth_nr)? / (denominator + self.smooth_dr)?)?;
        score.mean(1)?.neg()
    }
}

/// Binary cross-entropy per label channel, averaged over the channels (not negated: it is a
/// loss already):
/// `(1 − w_bg) · (−mean(t ln(p + s))) + w_bg · (−mean((1 − t) ln((1 − p) + s)))`,
/// means over the channel's voxels, `s = smooth`, `w_bg = background_weight` (with
/// `w_bg = 0` only the foreground term). With `binary`, `t` and `p` are first thresholded at
/// 0.5, which has no gradient.
///
/// The background term is evaluated in DeepReg's order, `(1 − p) + s`, which is exact in f32
/// for predictions near 1 (value and gradient within 1e-6 of an f64 evaluation).
pub(crate) struct CrossEntropy {
    pub(crate) spatial_dims: usize,
    pub(crate) binary: bool,
    pub(crate) background_weight: f64,
    pub(crate) smooth: f64,
}

impl LabelLoss for CrossEntropy {
    fn loss(&self, fixed: &Tensor, warped: &Tensor) -> candle::Result<Tensor> {
        check_pair(
            "label_loss `cross-entropy`",
            self.spatial_dims,
            fixed,
            warped,
        )?;
        let t = per_channel(fixed, self.binary)?;
        let p = per_channel(warped, self.binary)?;
        let foreground = (&t * (&p + self.smooth)?.log()?)?.mean(2)?.neg()?;
        let w = self.background_weight;
        let per_label = if w > 0.0 {
            // `(1 − p) + s`, DeepReg's order: `1 − p` is exact for p ≥ ½ and `s` is added to
            // it, whereas `1 + s` first would round `s` to the precision of 1 (in f32,
            // `1 + 1e-5` is 1.0000100136: at p = 1 the log argument would be 1.00136e-5).
            let complement = p.affine(-1.0, 1.0)?;
            let background = (t.affine(-1.0, 1.0)? * (complement + self.smooth)?.log()?)?
                .mean(2)?
                .neg()?;
            ((foreground * (1.0 - w))? + (background * w)?)?
        } else {
            foreground
        };
        per_label.mean(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Pair;
    use crate::testing::{assert_close, assert_no_gradient, check_gradient, pseudo_random};
    use crate::util::EPS;
    use crate::{CrossEntropyConfig, DiceConfig, JaccardConfig, OverlapConfig, SsdConfig};
    use voxreg_framework::prelude::*;

    fn label(values: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn overlap(binary: bool, background_weight: f64) -> OverlapConfig {
        OverlapConfig {
            binary,
            background_weight,
            smooth_nr: EPS,
            smooth_dr: EPS,
            scales: None,
            kernel: Default::default(),
        }
    }

    fn cross_entropy(binary: bool, background_weight: f64) -> CrossEntropyConfig {
        CrossEntropyConfig {
            binary,
            background_weight,
            smooth: EPS,
            scales: None,
            kernel: Default::default(),
        }
    }

    /// t = (1, 1, 1, 0), p = (1, 0, 1, 0): Σtp = 2, Σ(t+p) = 5, four voxels, one background
    /// voxel in both.
    fn pair(shape: &[usize]) -> (Tensor, Tensor) {
        (
            label(&[1.0, 1.0, 1.0, 0.0], shape),
            label(&[1.0, 0.0, 1.0, 0.0], shape),
        )
    }

    #[test]
    fn dice_of_perfect_overlap_is_minus_one_in_2d_and_3d() -> candle::Result<()> {
        let t2 = pseudo_random(&[2, 3, 3, 4], 0.0, 1.0, 11);
        let t3 = pseudo_random(&[1, 2, 2, 3, 2], 0.0, 1.0, 12);
        for (dims, t) in [(2, &t2), (3, &t3)] {
            let t = binarise(t)?;
            let n = t.dim(0)?;
            for w in [0.0, 0.3] {
                let loss = DiceConfig(overlap(false, w)).build(dims).map(Pair).unwrap();
                assert_close(&loss.loss(&t, &t)?, &vec![-1.0; n], 1e-6);
                let loss = JaccardConfig(overlap(false, w))
                    .build(dims)
                    .map(Pair)
                    .unwrap();
                assert_close(&loss.loss(&t, &t)?, &vec![-1.0; n], 1e-6);
            }
        }
        Ok(())
    }

    #[test]
    fn dice_and_jaccard_match_hand_values() -> candle::Result<()> {
        let (t, p) = pair(&[1, 1, 2, 2]);
        let dice = |w: f64| DiceConfig(overlap(false, w)).build(2).map(Pair).unwrap();
        let jaccard = |w: f64| JaccardConfig(overlap(false, w)).build(2).map(Pair).unwrap();
        // Dice 2·2 / 5; Jaccard 2 / (5 − 2).
        assert_close(
            &dice(0.0).loss(&t, &p)?,
            &[-(4.0 + EPS) / (5.0 + EPS)],
            1e-12,
        );
        assert_close(
            &jaccard(0.0).loss(&t, &p)?,
            &[-(2.0 + EPS) / (3.0 + EPS)],
            1e-12,
        );
        // w_bg = 0.25: Dice 2(¾·2 + ¼·1) / (¾·5 + ¼·3) = 3.5 / 4.5;
        // Jaccard (¾·2 + ¼·1) / (¾·3 + ¼·2) = 1.75 / 2.75.
        assert_close(
            &dice(0.25).loss(&t, &p)?,
            &[-(3.5 + EPS) / (4.5 + EPS)],
            1e-12,
        );
        assert_close(
            &jaccard(0.25).loss(&t, &p)?,
            &[-(1.75 + EPS) / (2.75 + EPS)],
            1e-12,
        );
        // 3D, two label channels: the second overlaps perfectly; scores are averaged.
        let (t3, p3) = (
            label(&[1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0], &[1, 2, 1, 2, 2]),
            label(&[1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0], &[1, 2, 1, 2, 2]),
        );
        let dice3 = DiceConfig(overlap(false, 0.0)).build(3).map(Pair).unwrap();
        let expected = -((4.0 + EPS) / (5.0 + EPS) + (4.0 + EPS) / (4.0 + EPS)) / 2.0;
        assert_close(&dice3.loss(&t3, &p3)?, &[expected], 1e-12);
        // No overlap, empty labels: the smoothing makes 0/0 into 1.
        let empty = label(&[0.0; 4], &[1, 1, 2, 2]);
        assert_close(&dice(0.0).loss(&empty, &empty)?, &[-1.0], 1e-12);
        Ok(())
    }

    #[test]
    fn binary_thresholds_at_one_half_and_has_no_gradient() -> candle::Result<()> {
        let t = label(&[0.9, 0.5, 0.7, 0.2], &[1, 1, 2, 2]);
        let p = label(&[0.6, 0.4, 0.99, 0.49], &[1, 1, 2, 2]);
        // Thresholded: the `pair` above.
        let dice = DiceConfig(overlap(true, 0.0)).build(2).map(Pair).unwrap();
        assert_close(&dice.loss(&t, &p)?, &[-(4.0 + EPS) / (5.0 + EPS)], 1e-12);
        let jaccard = JaccardConfig(overlap(true, 0.0))
            .build(2)
            .map(Pair)
            .unwrap();
        assert_close(&jaccard.loss(&t, &p)?, &[-(2.0 + EPS) / (3.0 + EPS)], 1e-12);
        let ce = cross_entropy(true, 0.0).build(2).map(Pair).unwrap();
        // t·ln(p + s) over (1, 1, 1, 0)·ln((1, 0, 1, 0) + s): one voxel with ln(s).
        let expected = -(2.0 * (1.0 + EPS).ln() + EPS.ln()) / 4.0;
        assert_close(&ce.loss(&t, &p)?, &[expected], 1e-12);
        for loss in [&dice, &jaccard, &ce] {
            assert_no_gradient(|x| loss.loss(&t, x), &p);
        }
        Ok(())
    }

    #[test]
    fn cross_entropy_matches_hand_values() -> candle::Result<()> {
        let t = label(&[1.0, 0.0, 1.0, 0.0], &[1, 1, 2, 2]);
        let p = label(&[0.5, 0.25, 0.8, 0.0], &[1, 1, 2, 2]);
        let fg = -((0.5 + EPS).ln() + (0.8 + EPS).ln()) / 4.0;
        let bg = -((0.75 + EPS).ln() + (1.0 + EPS).ln()) / 4.0;
        let loss = cross_entropy(false, 0.0).build(2).map(Pair).unwrap();
        assert_close(&loss.loss(&t, &p)?, &[fg], 1e-12);
        let loss = cross_entropy(false, 0.3).build(2).map(Pair).unwrap();
        assert_close(&loss.loss(&t, &p)?, &[0.7 * fg + 0.3 * bg], 1e-12);
        // 3D, two channels, the second all background in both: fg 0, bg −ln(1 + s).
        let t3 = Tensor::cat(&[&t, &t.zeros_like()?], 1)?.reshape((1, 2, 2, 1, 2))?;
        let p3 = Tensor::cat(&[&p, &p.zeros_like()?], 1)?.reshape((1, 2, 2, 1, 2))?;
        let loss = cross_entropy(false, 0.3).build(3).map(Pair).unwrap();
        let second = 0.3 * -(1.0 + EPS).ln();
        assert_close(
            &loss.loss(&t3, &p3)?,
            &[(0.7 * fg + 0.3 * bg + second) / 2.0],
            1e-12,
        );
        Ok(())
    }

    /// DeepReg's cross-entropy in f64 for one label channel of f32 values: the value and its
    /// gradient with respect to `p`, `−(1 − w)·t / ((p + s)V) + w(1 − t) / (((1 − p) + s)V)`.
    fn deepreg_cross_entropy(t: &[f32], p: &[f32], w: f64, s: f64) -> (f64, Vec<f64>) {
        let v = t.len() as f64;
        let (mut fg, mut bg) = (0.0, 0.0);
        let mut gradient = Vec::with_capacity(t.len());
        for (&t, &p) in t.iter().zip(p) {
            let (t, p) = (f64::from(t), f64::from(p));
            fg -= t * (p + s).ln() / v;
            bg -= (1.0 - t) * ((1.0 - p) + s).ln() / v;
            gradient.push(-(1.0 - w) * t / ((p + s) * v) + w * (1.0 - t) / (((1.0 - p) + s) * v));
        }
        ((1.0 - w) * fg + w * bg, gradient)
    }

    #[test]
    fn cross_entropy_is_exact_in_f32_for_predictions_near_one() -> candle::Result<()> {
        // Predictions at and next to 1, where `1 + smooth` rounded to f32 (1.0000100136)
        // would shift the background log argument by 1.4e-3 relative.
        let t = [0.0f32, 0.0, 0.25, 0.0, 1.0, 0.0, 0.5, 0.0];
        let p = [
            1.0f32,
            1.0 - 1.0 / 4096.0,
            0.99999,
            0.9999,
            0.5,
            0.999_999,
            1.0,
            0.3,
        ];
        let w = 0.4;
        let (value, gradient) = deepreg_cross_entropy(&t, &p, w, EPS);
        let loss = cross_entropy(false, w).build(2).unwrap();
        let fixed = Tensor::from_vec(t.to_vec(), (1, 1, 2, 4), &Device::Cpu)?;
        let warped = Var::from_tensor(&Tensor::from_vec(p.to_vec(), (1, 1, 2, 4), &Device::Cpu)?)?;
        let out = loss.loss(warped.as_tensor(), Some(&fixed))?;
        let actual = f64::from(out.to_vec1::<f32>()?[0]);
        assert!(
            (actual - value).abs() <= 1e-6 * value.abs(),
            "value {actual} vs DeepReg's {value} in f64"
        );
        let grads = out.sum_all()?.backward()?;
        let actual = grads
            .get(warped.as_tensor())
            .expect("the gradient reaches the prediction")
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (i, (&a, &e)) in actual.iter().zip(&gradient).enumerate() {
            assert!(
                (f64::from(a) - e).abs() <= 1e-6 * e.abs(),
                "voxel {i}: gradient {a} vs DeepReg's {e} in f64"
            );
        }
        Ok(())
    }

    #[test]
    fn label_ssd_averages_over_labels() -> candle::Result<()> {
        let loss = LabelLossConfig::build(&SsdConfig::default(), 3)
            .map(Pair)
            .unwrap();
        let t = label(&[1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0], &[1, 2, 2, 2, 1]);
        let p = label(&[1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0], &[1, 2, 2, 2, 1]);
        // Per label: 0.25 / 4 and 1 / 4 → mean 0.15625.
        assert_close(&loss.loss(&t, &p)?, &[0.15625], 1e-12);
        Ok(())
    }

    #[test]
    fn label_losses_reject_mismatched_shapes() -> candle::Result<()> {
        let t = pseudo_random(&[1, 2, 3, 3], 0.0, 1.0, 13);
        let configs: [Box<dyn LabelLossConfig>; 4] = [
            Box::new(DiceConfig(overlap(false, 0.0))),
            Box::new(JaccardConfig(overlap(false, 0.5))),
            Box::new(cross_entropy(false, 0.5)),
            Box::new(SsdConfig::default()),
        ];
        for config in &configs {
            let loss = config.build(2).map(Pair).unwrap();
            assert!(loss.loss(&t, &t.narrow(1, 0, 1)?).is_err());
            assert!(loss.loss(&t, &t.to_dtype(DType::F32)?).is_err());
            let loss = config.build(3).map(Pair).unwrap();
            assert!(loss.loss(&t, &t).is_err());
        }
        Ok(())
    }

    #[test]
    fn label_loss_gradients_match_finite_differences() {
        let t2 = pseudo_random(&[2, 2, 2, 3], 0.05, 0.95, 14);
        let p2 = pseudo_random(&[2, 2, 2, 3], 0.05, 0.95, 15);
        let t3 = pseudo_random(&[1, 2, 2, 2, 2], 0.05, 0.95, 16);
        let p3 = pseudo_random(&[1, 2, 2, 2, 2], 0.05, 0.95, 17);
        let configs: [Box<dyn LabelLossConfig>; 7] = [
            Box::new(DiceConfig(overlap(false, 0.0))),
            Box::new(DiceConfig(overlap(false, 0.2))),
            Box::new(JaccardConfig(overlap(false, 0.0))),
            Box::new(JaccardConfig(overlap(false, 0.2))),
            Box::new(cross_entropy(false, 0.0)),
            Box::new(cross_entropy(false, 0.2)),
            Box::new(SsdConfig::default()),
        ];
        for config in &configs {
            for (dims, t, p) in [(2, &t2, &p2), (3, &t3, &p3)] {
                let loss = config.build(dims).map(Pair).unwrap();
                check_gradient(|x| loss.loss(t, x), p, 1e-6);
                check_gradient(|x| loss.loss(x, p), t, 1e-6);
            }
        }
    }
}
