//! A batch of image pairs as the model sees it.

use candle_core::Tensor;

/// A batch of moving/fixed pairs, already resized and normalised.
///
/// # Shapes
/// * `moving_image`: `(N, 1, *moving_spatial)`, `fixed_image`: `(N, 1, *fixed_spatial)`,
///   intensities in `[0, 1]`;
/// * `moving_label` / `fixed_label`: `(N, L, *spatial)` with values in `[0, 1]`, one channel
///   per label, present only for labelled data.
#[derive(Clone, Debug)]
pub struct PairBatch {
    /// Moving images.
    pub moving_image: Tensor,
    /// Fixed images.
    pub fixed_image: Tensor,
    /// Moving labels, if the data is labelled.
    pub moving_label: Option<Tensor>,
    /// Fixed labels, if the data is labelled.
    pub fixed_label: Option<Tensor>,
}
