//! The field gradient of a single-channel warp, computed in the forward pass.
//!
//! For a one-channel image the output's derivative with respect to field component `i` at
//! output voxel `p` is the slope of the interpolated image there, `s_i(p) = ∂_i I(p + u(p))`,
//! and the field gradient is `∂L/∂u_i(p) = s_i(p) · ∂L/∂out(p)`. The forward pass already
//! gathers the eight corner values that `s` needs, so when the field tracks gradients (and
//! the image does not) it computes `s` in the same pass and keeps it; the backward pass then
//! scales it in place by the incoming gradient, instead of gathering the corners a second
//! time. `s` has the field's shape and becomes the field gradient's buffer, so keeping it
//! costs no memory beyond that gradient. A second backward pass through the same op finds it
//! gone and recomputes the gradient with the gathering kernel.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::ops::common::{contiguous, storage, Real};

/// The slopes `s` (field-shaped) kept by a warp between its forward and backward pass.
#[derive(Debug, Default)]
pub(super) struct KeptSlope(Mutex<Option<CpuStorage>>);

impl KeptSlope {
    /// Keeps the slopes of one forward pass.
    pub(super) fn store(&self, slope: CpuStorage) {
        if let Ok(mut kept) = self.0.lock() {
            *kept = Some(slope);
        }
    }

    /// The field gradient `s · grad` (`grad` is the output gradient, `(N, 1, *spatial)`), or
    /// `None` when no slopes are kept (the forward did not keep them, or a backward pass
    /// took them).
    pub(super) fn take_scaled(&self, grad: &Tensor, ndim: usize) -> Result<Option<Tensor>> {
        let Some(slope) = self.0.lock().ok().and_then(|mut kept| kept.take()) else {
            return Ok(None);
        };
        let op = ScaleSlope {
            slope: Mutex::new(Some(slope)),
            ndim,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// `(grad of the output) -> s · grad`, computed in the buffer of `s`.
struct ScaleSlope {
    slope: Mutex<Option<CpuStorage>>,
    ndim: usize,
}

impl ScaleSlope {
    /// Multiplies every component plane (`vol` values) of every batch item by that item's
    /// output gradient.
    fn scale<T: Real>(mut s: Vec<T>, g: &[T], ndim: usize, vol: usize) -> Vec<T> {
        const CHUNK: usize = 1 << 14;
        s.par_chunks_mut(vol).enumerate().for_each(|(plane, sp)| {
            let gp = &g[plane / ndim * vol..(plane / ndim + 1) * vol];
            sp.par_chunks_mut(CHUNK)
                .zip(gp.par_chunks(CHUNK))
                .for_each(|(sc, gc)| {
                    let gc = &gc[..sc.len()];
                    for i in 0..sc.len() {
                        sc[i] *= gc[i];
                    }
                });
        });
        s
    }
}

impl CustomOp1 for ScaleSlope {
    fn name(&self) -> &'static str {
        "warp-scale-slope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "warp-scale-slope";
        let Some(slope) = self.slope.lock().ok().and_then(|mut kept| kept.take()) else {
            bail!("{OP}: the kept slopes were already used");
        };
        let mut shape = l.dims().to_vec();
        shape[1] = self.ndim;
        let vol = shape[2..].iter().product::<usize>().max(1);
        match (slope, s) {
            (CpuStorage::F32(v), CpuStorage::F32(_)) => {
                let g = contiguous::<f32>(s, l, OP, "grad")?;
                Ok(storage(Self::scale(v, g, self.ndim, vol), shape))
            }
            (CpuStorage::F64(v), CpuStorage::F64(_)) => {
                let g = contiguous::<f64>(s, l, OP, "grad")?;
                Ok(storage(Self::scale(v, g, self.ndim, vol), shape))
            }
            (v, _) => bail!(
                "{OP}: slopes of dtype {:?} for a gradient of dtype {:?}",
                v.dtype(),
                s.dtype()
            ),
        }
    }
}
