//! Pictures of a validation sample for the training logs (TensorBoard image summaries): the
//! moving, fixed and warped moving image of the split's first sample.

use candle_core::{DType, Tensor};

use super::{tensor_error, EngineError};
use crate::component::{names, Batch, Tensors};

/// A grey picture, rows first.
///
/// # Shapes
/// `values` holds `height × width` intensities, row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    /// Its name in the logs: `moving_image`, `fixed_image`, `pred_fixed_image`.
    pub tag: String,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// The intensities.
    pub values: Vec<f32>,
}

/// The picture of the first sample's first channel of `tensor` `(N, C, *spatial)`: the image
/// itself in 2D, the middle slice across the last axis in 3D.
fn picture(tag: &str, tensor: &Tensor) -> Result<Option<Picture>, EngineError> {
    let error = || tensor_error(format!("the picture of `{tag}`"));
    let dims = tensor.dims().to_vec();
    let image = tensor.get(0).and_then(|t| t.get(0)).map_err(error())?;
    let plane = match dims.len() {
        4 => image,
        5 => image
            .narrow(2, dims[4] / 2, 1)
            .and_then(|t| t.squeeze(2))
            .map_err(error())?,
        _ => return Ok(None),
    };
    let (height, width) = plane.dims2().map_err(error())?;
    let values = plane
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(error())?;
    Ok(Some(Picture {
        tag: tag.to_owned(),
        height,
        width,
        values,
    }))
}

/// The moving, fixed and warped moving image of the batch's first sample, those present.
pub(super) fn first_sample_pictures(
    batch: &Batch,
    output: &Tensors,
) -> Result<Vec<Picture>, EngineError> {
    let sources = [
        (names::MOVING_IMAGE, batch.tensors.get(names::MOVING_IMAGE)),
        (names::FIXED_IMAGE, batch.tensors.get(names::FIXED_IMAGE)),
        (names::PRED_FIXED_IMAGE, output.get(names::PRED_FIXED_IMAGE)),
    ];
    let mut pictures = Vec::new();
    for (tag, tensor) in sources {
        if let Some(tensor) = tensor {
            pictures.extend(picture(tag, tensor)?);
        }
    }
    Ok(pictures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_3d_image_gives_its_middle_slice_across_the_last_axis() {
        let tensor = Tensor::from_vec(
            (0..2 * 3 * 4 * 5).map(|v| v as f32).collect::<Vec<_>>(),
            (2, 1, 3, 4, 5),
            &Device::Cpu,
        )
        .unwrap();
        let slice = picture("fixed_image", &tensor).unwrap().unwrap();
        assert_eq!((slice.height, slice.width), (3, 4));
        // Sample 0, channel 0, element (i, j, 2) sits at (i * 4 + j) * 5 + 2.
        assert_eq!(slice.values[0], 2.0);
        assert_eq!(slice.values[5], ((4 + 1) * 5 + 2) as f32);
        let flat = Tensor::zeros((1, 1, 6, 7), DType::F32, &Device::Cpu).unwrap();
        let plane = picture("moving_image", &flat).unwrap().unwrap();
        assert_eq!((plane.height, plane.width, plane.values.len()), (6, 7, 42));
    }
}
