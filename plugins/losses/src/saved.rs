//! A gradient that a fused loss computes in its forward pass and hands to its backward pass.

use std::sync::Mutex;

use voxreg_framework::candle::backend::BackendStorage;
use voxreg_framework::candle::{self, CpuStorage, DType, Device, Tensor};

/// The gradient of each batch element's loss with respect to one input, `∂L_n/∂x` (the
/// input's shape), kept by a fused op between its forward and its backward pass. The
/// backward pass takes it and scales batch element `n` by the incoming `∂total/∂L_n` in
/// place, so no new full-size buffer is made. A second backward pass through the same op
/// finds it gone and must recompute it.
#[derive(Default)]
pub(crate) struct SavedGradient(Mutex<Kept>);

/// The gradient's values and the shape of the input, until the backward pass takes them.
type Kept = Option<(CpuStorage, Vec<usize>)>;

impl SavedGradient {
    /// Keeps `values` (in the layout of an input of shape `dims`).
    pub(crate) fn store(&self, values: CpuStorage, dims: &[usize]) -> candle::Result<()> {
        *self.lock()? = Some((values, dims.to_vec()));
        Ok(())
    }

    /// The kept gradient scaled by `grad` (`(N,)`, one factor per batch element) as a
    /// tensor, or `None` when a previous backward pass took it.
    pub(crate) fn take_scaled(&self, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        let Some((values, dims)) = self.lock()?.take() else {
            return Ok(None);
        };
        let factors = grad.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let tensor = match values {
            CpuStorage::F32(mut v) => {
                scale_batches(&mut v, &factors, |x, f| *x *= f as f32);
                Tensor::from_vec(v, dims, &Device::Cpu)?
            }
            CpuStorage::F64(mut v) => {
                scale_batches(&mut v, &factors, |x, f| *x *= f);
                Tensor::from_vec(v, dims, &Device::Cpu)?
            }
            other => candle::bail!("saved gradient: unsupported dtype {:?}", other.dtype()),
        };
        Ok(Some(tensor))
    }

    fn lock(&self) -> candle::Result<std::sync::MutexGuard<'_, Kept>> {
        self.0
            .lock()
            .map_err(|_| candle::Error::Msg("saved gradient: lock poisoned".into()))
    }
}

/// Scales batch element `n` (the `n`-th of `factors.len()` equal blocks) by `factors[n]`,
/// skipping factors of exactly one.
fn scale_batches<T>(values: &mut [T], factors: &[f64], scale: impl Fn(&mut T, f64) + Sync)
where
    T: Send,
{
    use rayon::prelude::*;
    if factors.is_empty() {
        return;
    }
    let block = values.len() / factors.len();
    for (chunk, &factor) in values.chunks_mut(block.max(1)).zip(factors) {
        if factor != 1.0 {
            chunk
                .par_chunks_mut(1 << 16)
                .for_each(|part| part.iter_mut().for_each(|x| scale(x, factor)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gradient_is_scaled_per_batch_element_and_taken_once() -> candle::Result<()> {
        let saved = SavedGradient::default();
        saved.store(CpuStorage::F32(vec![1.0, 2.0, 3.0, 4.0]), &[2, 2])?;
        let grad = Tensor::new(&[1.0f32, -0.5], &Device::Cpu)?;
        let scaled = saved.take_scaled(&grad)?.expect("stored");
        assert_eq!(scaled.to_vec2::<f32>()?, [[1.0, 2.0], [-1.5, -2.0]]);
        assert!(saved.take_scaled(&grad)?.is_none());
        Ok(())
    }
}
