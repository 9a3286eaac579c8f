//! Evaluation metrics of a batch after registration, and the check that the network's outputs
//! are finite (so a NaN is reported where it first appears, before it reaches the losses).

use candle_core::Tensor;

use super::{tensor_error, EngineError};
use crate::component::{MethodOutput, PairBatch};
use crate::data::BatchInfo;
use crate::metrics;

/// One batch element's values of `tensor` (`(N, C, *spatial)`), all channels, flattened.
fn element(tensor: &Tensor, index: usize) -> Result<Vec<f32>, EngineError> {
    tensor
        .get(index)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(tensor_error("reading an output"))
}

/// Adds each element's metrics after registration to `add(name, value)`:
/// * `image_ssd`: mean squared difference of the fixed and the predicted fixed image;
/// * `label_dice`: binary Dice of the fixed and the predicted label (labelled data);
/// * `label_tre_mm`: distance of their centroids in millimetres (when neither is empty);
/// * `ddf_folding_fraction`: the fraction of voxels whose Jacobian determinant is ≤ 0.
pub(super) fn add_batch_metrics(
    batch: &PairBatch,
    info: &BatchInfo,
    output: &MethodOutput,
    fixed_shape: &[usize],
    mut add: impl FnMut(&str, f64),
) -> Result<(), EngineError> {
    for index in 0..info.ids.len() {
        let fixed = element(&batch.fixed_image, index)?;
        if let Some(predicted) = &output.pred_fixed_image {
            add(
                "image_ssd",
                metrics::image_ssd(&fixed, &element(predicted, index)?),
            );
        }
        if let (Some(label), Some(predicted)) = (&batch.fixed_label, &output.pred_fixed_label) {
            let (label, predicted) = (element(label, index)?, element(predicted, index)?);
            add("label_dice", metrics::binary_dice(&label, &predicted));
            let affine = &info.fixed_affines[index];
            if let Some((_, mm)) =
                metrics::centroid_distance(&label, &predicted, fixed_shape, affine)
            {
                add("label_tre_mm", mm);
            }
        }
        if let Some(ddf) = &output.ddf {
            if let Some(stats) = metrics::jacobian_stats(&element(ddf, index)?, fixed_shape) {
                add("ddf_folding_fraction", stats.folding_fraction);
            }
        }
    }
    Ok(())
}

/// The first output of the method (`ddf`, `dvf`, `theta`, `pred_fixed_image`,
/// `pred_fixed_label`) holding a NaN or an infinity, with that value.
pub(super) fn first_non_finite_output(
    output: &MethodOutput,
) -> Result<Option<(&'static str, f32)>, EngineError> {
    let outputs = [
        ("ddf", &output.ddf),
        ("dvf", &output.dvf),
        ("theta", &output.theta),
        ("pred_fixed_image", &output.pred_fixed_image),
        ("pred_fixed_label", &output.pred_fixed_label),
    ];
    for (name, tensor) in outputs {
        if let Some(tensor) = tensor {
            if let Some(value) = first_non_finite(tensor)? {
                return Ok(Some((name, value)));
            }
        }
    }
    Ok(None)
}

/// The first NaN or infinity in `tensor`, if any.
pub(super) fn first_non_finite(tensor: &Tensor) -> Result<Option<f32>, EngineError> {
    let values = tensor
        .flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(tensor_error("checking for NaN"))?;
    Ok(values.into_iter().find(|v| !v.is_finite()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::ImageId;
    use candle_core::Device;

    fn id(name: &str) -> ImageId {
        ImageId {
            group: None,
            name: name.to_owned(),
        }
    }

    #[test]
    fn the_first_non_finite_output_is_named() {
        let device = Device::Cpu;
        let finite = Tensor::zeros((1, 3, 2, 2, 2), candle_core::DType::F32, &device).unwrap();
        let bad = Tensor::new(&[[0.0f32, f32::NAN]], &device).unwrap();
        let mut output = MethodOutput {
            ddf: Some(finite),
            dvf: None,
            theta: None,
            pred_fixed_image: None,
            pred_fixed_label: None,
        };
        assert_eq!(first_non_finite_output(&output).unwrap(), None);
        output.pred_fixed_image = Some(bad);
        let (name, value) = first_non_finite_output(&output).unwrap().unwrap();
        assert_eq!(name, "pred_fixed_image");
        assert!(value.is_nan());
        let infinite = Tensor::new(&[1.0f32, f32::NEG_INFINITY], &device).unwrap();
        assert_eq!(
            first_non_finite(&infinite).unwrap(),
            Some(f32::NEG_INFINITY)
        );
    }

    #[test]
    fn metrics_of_a_perfect_prediction() {
        let device = Device::Cpu;
        let image = Tensor::arange(0f32, 8.0, &device)
            .unwrap()
            .reshape((1, 1, 2, 2, 2))
            .unwrap();
        let label = Tensor::new(&[1f32, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], &device)
            .unwrap()
            .reshape((1, 1, 2, 2, 2))
            .unwrap();
        let batch = PairBatch {
            moving_image: image.clone(),
            fixed_image: image.clone(),
            moving_label: Some(label.clone()),
            fixed_label: Some(label.clone()),
        };
        let output = MethodOutput {
            ddf: Some(Tensor::zeros((1, 3, 2, 2, 2), candle_core::DType::F32, &device).unwrap()),
            dvf: None,
            theta: None,
            pred_fixed_image: Some(image),
            pred_fixed_label: Some(label),
        };
        let identity = [
            [2.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let info = BatchInfo {
            references: vec![],
            ids: vec![(id("moving"), id("fixed"))],
            fixed_affines: vec![identity],
        };
        let mut seen = Vec::new();
        add_batch_metrics(&batch, &info, &output, &[2, 2, 2], |n, v| {
            seen.push((n.to_owned(), v))
        })
        .unwrap();
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "image_ssd",
                "label_dice",
                "label_tre_mm",
                "ddf_folding_fraction"
            ]
        );
        assert_eq!(seen[0].1, 0.0);
        assert!((seen[1].1 - 1.0).abs() < 1e-9);
        assert_eq!(seen[2].1, 0.0);
        assert_eq!(seen[3].1, 0.0);
    }
}
