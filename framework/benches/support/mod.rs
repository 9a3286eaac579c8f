//! Shared by the op benchmarks: seeded inputs and PyTorch-style `out.backward(gout)`.

use candle_core::{Device, Tensor};

/// A tensor of `shape` with values uniform in `[lo, hi)`, from a seeded xorshift generator.
pub fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)) as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

/// `out.backward(gout)` as in PyTorch: a scalar node whose gradient w.r.t. `out` is `gout`
/// (candle's `backward` starts from a scalar; multiplying by `gout` and summing would add two
/// full passes and a broadcast that the peer does not do).
pub struct SeedGrad(Tensor);

impl candle_core::CustomOp1 for SeedGrad {
    fn name(&self) -> &'static str {
        "seed-grad"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        Ok((candle_core::CpuStorage::F32(vec![0.0]), ().into()))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.0.clone()))
    }
}

/// Back-propagates `gout` from `out`, as PyTorch's `out.backward(gout)`.
pub fn backward_with(out: &Tensor, gout: &Tensor) {
    out.apply_op1(SeedGrad(gout.clone()))
        .and_then(|s| s.backward())
        .expect("backward");
}
