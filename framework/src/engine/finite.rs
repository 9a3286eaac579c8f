//! Loaded tensors must be finite: a checkpoint holding a NaN or an infinity (a damaged file,
//! or one written after training diverged) is refused rather than producing plausible-looking
//! metrics from garbage.

use std::path::Path;

use candle_core::{DType, Tensor};

use super::EngineError;

/// The first element of `tensor` that is NaN or infinite, if any.
fn first_non_finite(tensor: &Tensor) -> Result<Option<f64>, candle_core::Error> {
    if !tensor.dtype().is_float() {
        return Ok(None);
    }
    let values = tensor
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    Ok(values.into_iter().find(|v| !v.is_finite()))
}

/// An error naming `file` and the first `what` (`weight`, `optimiser state`) among `tensors`
/// that holds a NaN or an infinity.
pub(super) fn refuse_non_finite<'t>(
    file: &Path,
    what: &str,
    tensors: impl IntoIterator<Item = (&'t str, &'t Tensor)>,
) -> Result<(), EngineError> {
    for (name, tensor) in tensors {
        let found = first_non_finite(tensor).map_err(|e| EngineError::Io {
            path: file.to_owned(),
            message: format!("cannot read {what} `{name}`: {e}"),
        })?;
        if let Some(value) = found {
            return Err(EngineError::Io {
                path: file.to_owned(),
                message: format!(
                    "{what} `{name}` holds {value}: the file is damaged or was written after training diverged; refusing to use it"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_nan_or_an_infinity_is_refused_by_name() {
        let good = Tensor::new(&[1f32, -2.0], &Device::Cpu).unwrap();
        let bad = Tensor::new(&[0f32, f32::INFINITY], &Device::Cpu).unwrap();
        let ints = Tensor::new(&[7u32], &Device::Cpu).unwrap();
        let file = Path::new("ckpt/weights.safetensors");
        assert!(refuse_non_finite(file, "weight", [("a", &good), ("i", &ints)]).is_ok());
        let error = refuse_non_finite(file, "weight", [("a", &good), ("b", &bad)])
            .unwrap_err()
            .to_string();
        assert!(error.contains("weight `b` holds inf"), "{error}");
        assert!(error.contains("ckpt/weights.safetensors"), "{error}");
        let nan = Tensor::new(&[f32::NAN], &Device::Cpu).unwrap();
        let error = refuse_non_finite(file, "optimiser state", [("m", &nan)])
            .unwrap_err()
            .to_string();
        assert!(error.contains("optimiser state `m` holds NaN"), "{error}");
    }
}
