//! The LNCC loss composed of smaller custom ops, kept as the reference the fused kernel
//! ([`crate::lncc_kernel`]) is tested against: the five moments `[t, p, t², p², tp]` stacked
//! on the channel axis, their window sums from one `separable_filter` pass, and the local NCC
//! map from the sums, each with its own hand-written backward pass.

use voxreg_framework::candle::backend::BackendStorage;
use voxreg_framework::candle::{
    self, bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor,
    WithDType,
};
use voxreg_framework::ops::separable_filter;

use crate::lncc_kernel::NccParams;

/// `−mean_{c, x} ncc(x)` per batch element, as [`crate::lncc_kernel::lncc_loss`], composed of
/// [`Moments`], `separable_filter` and [`NccMap`].
pub(crate) fn composed_lncc(
    fixed: &Tensor,
    warped: &Tensor,
    kernel: &[f64],
    params: NccParams,
) -> candle::Result<Tensor> {
    let moments = fixed
        .contiguous()?
        .apply_op2(&warped.contiguous()?, Moments)?;
    let sums = separable_filter(&moments, kernel)?;
    let ncc = sums.apply_op1(NccMap {
        volume: params.volume,
        smooth_nr: params.smooth_nr,
        smooth_dr: params.smooth_dr,
    })?;
    ncc.flatten_from(1)?.mean(1)?.neg()
}

/// The contiguous data of `s` under layout `l`.
fn data<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle::Result<&'a [T]> {
    let all = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => bail!("{op}: input is not contiguous"),
    }
}

/// Runs `$body` with `$t` bound to the Rust type of `$dtype` (f32 or f64).
macro_rules! float_dispatch {
    ($op:expr, $dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F64 => {
                type $t = f64;
                $body
            }
            other => bail!("{}: unsupported dtype {other:?}", $op),
        }
    };
}

/// `(t, p)`, each `(N, C, *spatial)`, → `(N, 5C, *spatial)`: per batch element the channel
/// blocks `t, p, t², p², tp`.
pub(crate) struct Moments;

impl CustomOp2 for Moments {
    fn name(&self) -> &'static str {
        "lncc-moments"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let dims = l1.dims();
        if dims != l2.dims() || dims.len() < 2 {
            bail!("lncc-moments: shapes {dims:?} and {:?} differ", l2.dims());
        }
        let n = dims[0];
        let m: usize = dims[1..].iter().product();
        let mut out_dims = dims.to_vec();
        out_dims[1] *= 5;
        float_dispatch!("lncc-moments", s1.dtype(), T => {
            let t = data::<T>(s1, l1, "lncc-moments")?;
            let p = data::<T>(s2, l2, "lncc-moments")?;
            let mut out = vec![0 as T; 5 * n * m];
            for b in 0..n {
                let (tb, pb) = (&t[b * m..(b + 1) * m], &p[b * m..(b + 1) * m]);
                let block = &mut out[5 * b * m..5 * (b + 1) * m];
                let (bt, rest) = block.split_at_mut(m);
                let (bp, rest) = rest.split_at_mut(m);
                let (btt, rest) = rest.split_at_mut(m);
                let (bpp, btp) = rest.split_at_mut(m);
                for i in 0..m {
                    let (x, y) = (tb[i], pb[i]);
                    bt[i] = x;
                    bp[i] = y;
                    btt[i] = x * x;
                    bpp[i] = y * y;
                    btp[i] = x * y;
                }
            }
            Ok((T::to_cpu_storage_owned(out), Shape::from(out_dims)))
        })
    }

    fn bwd(
        &self,
        t: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        let both = t.apply_op3(p, &grad.contiguous()?, MomentsGrad)?;
        let c = t.dim(1)?;
        Ok((Some(both.narrow(1, 0, c)?), Some(both.narrow(1, c, c)?)))
    }
}

/// Backward of [`Moments`]: `(t, p, g)` → `(N, 2C, *spatial)` holding
/// `dt = g₀ + 2t g₂ + p g₄` and `dp = g₁ + 2p g₃ + t g₄` (`g_k` the channel blocks of `g`).
struct MomentsGrad;

impl CustomOp3 for MomentsGrad {
    fn name(&self) -> &'static str {
        "lncc-moments-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let dims = l1.dims();
        let n = dims[0];
        let m: usize = dims[1..].iter().product();
        if l3.dims().iter().product::<usize>() != 5 * n * m {
            bail!("lncc-moments-grad: gradient shape {:?}", l3.dims());
        }
        let mut out_dims = dims.to_vec();
        out_dims[1] *= 2;
        float_dispatch!("lncc-moments-grad", s1.dtype(), T => {
            let t = data::<T>(s1, l1, "lncc-moments-grad")?;
            let p = data::<T>(s2, l2, "lncc-moments-grad")?;
            let g = data::<T>(s3, l3, "lncc-moments-grad")?;
            let mut out = vec![0 as T; 2 * n * m];
            for b in 0..n {
                let gb = &g[5 * b * m..5 * (b + 1) * m];
                let (dt, dp) = out[2 * b * m..2 * (b + 1) * m].split_at_mut(m);
                for i in 0..m {
                    let (x, y) = (t[b * m + i], p[b * m + i]);
                    let (g0, g1, g2, g3, g4) =
                        (gb[i], gb[m + i], gb[2 * m + i], gb[3 * m + i], gb[4 * m + i]);
                    dt[i] = g0 + 2.0 * x * g2 + y * g4;
                    dp[i] = g1 + 2.0 * y * g3 + x * g4;
                }
            }
            Ok((T::to_cpu_storage_owned(out), Shape::from(out_dims)))
        })
    }
}

/// Window sums `(N, 5C, *spatial)` (blocks `S[t], S[p], S[t²], S[p²], S[tp]`) → the local
/// NCC `(N, C, *spatial)`: `cross = S[tp] − (S[p]/V) S[t]`, `var_t = max(S[t²] − (S[t]/V)
/// S[t], 0)`, `var_p` likewise, `(cross² + smooth_nr) / (var_t var_p + smooth_dr)`. The
/// backward passes the gradient of `max(x, 0)` where `x ≥ 0`, as TensorFlow's `maximum`.
pub(crate) struct NccMap {
    /// The window volume `V`.
    pub(crate) volume: f64,
    /// Added to the numerator.
    pub(crate) smooth_nr: f64,
    /// Added to the denominator.
    pub(crate) smooth_dr: f64,
}

impl CustomOp1 for NccMap {
    fn name(&self) -> &'static str {
        "lncc-map"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        if dims.len() < 2 || !dims[1].is_multiple_of(5) {
            bail!("lncc-map: expected (N, 5C, ...), got {dims:?}");
        }
        let n = dims[0];
        let m = dims[1..].iter().product::<usize>() / 5;
        let mut out_dims = dims.to_vec();
        out_dims[1] /= 5;
        float_dispatch!("lncc-map", s.dtype(), T => {
            let sums = data::<T>(s, l, "lncc-map")?;
            let (volume, nr, dr) =
                (self.volume as T, self.smooth_nr as T, self.smooth_dr as T);
            let mut out = vec![0 as T; n * m];
            for b in 0..n {
                let sb = &sums[5 * b * m..5 * (b + 1) * m];
                for (i, o) in out[b * m..(b + 1) * m].iter_mut().enumerate() {
                    let (st, sp, stt, spp, stp) =
                        (sb[i], sb[m + i], sb[2 * m + i], sb[3 * m + i], sb[4 * m + i]);
                    let (t_avg, p_avg) = (st / volume, sp / volume);
                    let cross = stp - p_avg * st;
                    let t_var = (stt - t_avg * st).max(0.0);
                    let p_var = (spp - p_avg * sp).max(0.0);
                    *o = (cross * cross + nr) / (t_var * p_var + dr);
                }
            }
            Ok((T::to_cpu_storage_owned(out), Shape::from(out_dims)))
        })
    }

    fn bwd(&self, sums: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        let op = NccMapGrad {
            volume: self.volume,
            smooth_nr: self.smooth_nr,
            smooth_dr: self.smooth_dr,
        };
        Ok(Some(sums.apply_op2(&grad.contiguous()?, op)?))
    }
}

/// Backward of [`NccMap`]: `(sums, g)` → the gradient with respect to the five window sums.
struct NccMapGrad {
    volume: f64,
    smooth_nr: f64,
    smooth_dr: f64,
}

impl CustomOp2 for NccMapGrad {
    fn name(&self) -> &'static str {
        "lncc-map-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let dims = l1.dims();
        let n = dims[0];
        let m = dims[1..].iter().product::<usize>() / 5;
        if l2.dims().iter().product::<usize>() != n * m {
            bail!("lncc-map-grad: gradient shape {:?}", l2.dims());
        }
        float_dispatch!("lncc-map-grad", s1.dtype(), T => {
            let sums = data::<T>(s1, l1, "lncc-map-grad")?;
            let g = data::<T>(s2, l2, "lncc-map-grad")?;
            let (volume, nr, dr) =
                (self.volume as T, self.smooth_nr as T, self.smooth_dr as T);
            let mut out = vec![0 as T; 5 * n * m];
            for b in 0..n {
                let sb = &sums[5 * b * m..5 * (b + 1) * m];
                let gb = &g[b * m..(b + 1) * m];
                let ob = &mut out[5 * b * m..5 * (b + 1) * m];
                for i in 0..m {
                    let (st, sp, stt, spp, stp) =
                        (sb[i], sb[m + i], sb[2 * m + i], sb[3 * m + i], sb[4 * m + i]);
                    let (t_avg, p_avg) = (st / volume, sp / volume);
                    let cross = stp - p_avg * st;
                    let (t_raw, p_raw) = (stt - t_avg * st, spp - p_avg * sp);
                    let t_var = t_raw.max(0.0);
                    let p_var = p_raw.max(0.0);
                    let denominator = t_var * p_var + dr;
                    let ratio = (cross * cross + nr) / denominator;
                    let d_cross = gb[i] * 2.0 * cross / denominator;
                    let d_tvar = if t_raw >= 0.0 {
                        -gb[i] * ratio * p_var / denominator
                    } else {
                        0.0
                    };
                    let d_pvar = if p_raw >= 0.0 {
                        -gb[i] * ratio * t_var / denominator
                    } else {
                        0.0
                    };
                    ob[i] = -d_cross * p_avg - 2.0 * d_tvar * t_avg;
                    ob[m + i] = -d_cross * t_avg - 2.0 * d_pvar * p_avg;
                    ob[2 * m + i] = d_tvar;
                    ob[3 * m + i] = d_pvar;
                    ob[4 * m + i] = d_cross;
                }
            }
            Ok((T::to_cpu_storage_owned(out), Shape::from(dims.to_vec())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pseudo_random;
    use voxreg_framework::ops::triangular_kernel;
    use voxreg_framework::prelude::Var;

    /// The same local NCC map written with tensor operations (autograd gradients).
    fn reference(t: &Tensor, p: &Tensor, k: &[f64], map: &NccMap) -> candle::Result<Tensor> {
        let s = |x: &Tensor| separable_filter(x, k);
        let (st, sp) = (s(t)?, s(p)?);
        let (stt, spp, stp) = (s(&t.sqr()?)?, s(&p.sqr()?)?, s(&(t * p)?)?);
        let (t_avg, p_avg) = ((&st / map.volume)?, (&sp / map.volume)?);
        let cross = (stp - (&p_avg * &st)?)?;
        let clamp = |x: Tensor| -> candle::Result<Tensor> { &x * x.ge(0.0)?.to_dtype(x.dtype())? };
        let t_var = clamp((stt - (t_avg * &st)?)?)?;
        let p_var = clamp((spp - (p_avg * &sp)?)?)?;
        (cross.sqr()? + map.smooth_nr)? / ((t_var * p_var)? + map.smooth_dr)?
    }

    fn fused(t: &Tensor, p: &Tensor, k: &[f64], map: NccMap) -> candle::Result<Tensor> {
        let moments = t.apply_op2(p, Moments)?;
        separable_filter(&moments, k)?.apply_op1(map)
    }

    #[test]
    fn fused_ops_match_tensor_operations_in_f32_with_two_channels() -> candle::Result<()> {
        let k = triangular_kernel(5);
        let volume = k.iter().sum::<f64>().powi(3);
        let map = || NccMap {
            volume,
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
        };
        let t = pseudo_random(&[2, 2, 3, 4, 5], 0.0, 1.0, 40).to_dtype(DType::F32)?;
        let p =
            Var::from_tensor(&pseudo_random(&[2, 2, 3, 4, 5], 0.0, 1.0, 41).to_dtype(DType::F32)?)?;
        let weights = pseudo_random(&[2, 2, 3, 4, 5], 0.5, 1.5, 42).to_dtype(DType::F32)?;
        let total = |m: Tensor| (m * &weights)?.sum_all();
        let (a, b) = (fused(&t, &p, &k, map())?, reference(&t, &p, &k, &map())?);
        let diff = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "{diff}");
        let ga = total(a)?.backward()?.get(&p).unwrap().clone();
        let gb = total(b)?.backward()?.get(&p).unwrap().clone();
        let scale = gb.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
        let diff = (ga - gb)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-3 * scale, "{diff} vs {scale}");
        Ok(())
    }
}
