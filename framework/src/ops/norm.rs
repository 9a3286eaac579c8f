//! Batch normalisation with batch statistics, optionally fused with a ReLU, as one custom op
//! with a hand-written backward.
//!
//! Built from candle primitives, batch norm + ReLU is about a dozen graph nodes, each a full
//! pass over the tensor in the forward and two or three in the backward (candle's backward also
//! allocates a zero gradient and adds into it for every node). This op reads the input twice in
//! the forward (statistics, then the output) and three tensors twice in the backward (sums,
//! then the input gradient).
//!
//! # CPU kernel
//!
//! Every `(n, c)` plane is cut into fixed chunks of 2¹⁴ elements, independent of the thread
//! count. Reductions compute one partial sum per chunk (in parallel, in f64, with eight
//! independent accumulators) and add the partials of a channel in chunk order, so results are
//! bit-identical for any number of threads. Element-wise passes write disjoint chunks of the
//! output. Scratch memory is two f64 values per chunk.

use std::ops::Range;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::common::{check_float, contiguous, storage, with_float, with_simd, Real};

const OP: &str = "batch_norm";

/// Elements per task of the reductions and element-wise passes.
const CHUNK: usize = 1 << 14;

/// Independent accumulators per reduction (enough for two AVX2 registers of f64).
const LANES: usize = 8;

/// Batch normalisation with batch statistics, optionally followed by a ReLU, with backward for
/// all three inputs.
///
/// For each channel `c`, over the `M = N · ∏ spatial` values of `x[:, c, …]`:
///
/// ```text
/// μ = mean(x),  σ² = mean((x − μ)²)  (biased),  x̂ = (x − μ) / √(σ² + ε),
/// y = γ_c · x̂ + β_c,  out = max(y, 0) if relu else y.
/// ```
///
/// Backward, with `g` the output gradient and `gy = g · [out > 0]` (or `g` without ReLU):
///
/// ```text
/// ∂β_c = Σ gy,  ∂γ_c = Σ gy · x̂,  ∂x = γ_c / √(σ² + ε) · (gy − Σ gy / M − x̂ · Σ(gy · x̂) / M).
/// ```
///
/// Statistics and sums are accumulated in f64 and are bit-identical for any number of threads.
///
/// # Shapes
/// * `x`: `(N, C, *spatial)` with at least one spatial axis, f32 or f64, not empty.
/// * `gamma`, `beta`: `(C,)`, same dtype as `x`.
/// * `eps`: finite, `>= 0`.
/// * output: same shape as `x`.
pub fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    check_float(OP, "input", x)?;
    if x.rank() < 3 {
        bail!(
            "{OP}: input must be (N, C, *spatial) with at least one spatial axis, got shape {:?}",
            x.dims()
        );
    }
    if x.dims().contains(&0) {
        bail!("{OP}: empty input {:?}", x.dims());
    }
    let dims = x.dims();
    let channels = Channels {
        batch: dims[0],
        channels: dims[1],
        plane: dims[2..].iter().product(),
    };
    for (what, t) in [("gamma", gamma), ("beta", beta)] {
        if t.dtype() != x.dtype() {
            bail!(
                "{OP}: {what} must have the input's dtype {:?}, got {:?}",
                x.dtype(),
                t.dtype()
            );
        }
        if t.dims() != [channels.channels] {
            bail!(
                "{OP}: {what} must be ({},) for input {:?}, got shape {:?}",
                channels.channels,
                dims,
                t.dims()
            );
        }
    }
    if !(eps.is_finite() && eps >= 0.0) {
        bail!("{OP}: eps must be finite and >= 0, got {eps}");
    }
    let x = x.contiguous()?;
    let stats = match x.dtype() {
        DType::F32 => with_cpu::<f32, _>(&x, "input", |xs| Ok(channel_stats(xs, channels, eps)))?,
        _ => with_cpu::<f64, _>(&x, "input", |xs| Ok(channel_stats(xs, channels, eps)))?,
    };
    x.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        BatchNorm {
            channels,
            stats,
            relu,
        },
    )
}

/// Layout of a contiguous `(N, C, *spatial)` tensor: `batch · channels` planes of `plane`
/// values.
#[derive(Debug, Clone, Copy)]
struct Channels {
    batch: usize,
    channels: usize,
    plane: usize,
}

impl Channels {
    /// Values per channel (`M`).
    fn count(&self) -> usize {
        self.batch * self.plane
    }

    /// Chunks per plane.
    fn chunks_per_plane(&self) -> usize {
        self.plane.div_ceil(CHUNK)
    }

    /// Number of chunks of the whole tensor.
    fn chunks(&self) -> usize {
        self.batch * self.channels * self.chunks_per_plane()
    }

    /// Channel and flat index range of chunk `u` (chunks are numbered in memory order).
    fn chunk(&self, u: usize) -> (usize, Range<usize>) {
        let per = self.chunks_per_plane();
        let (plane, k) = (u / per, u % per);
        let start = plane * self.plane + k * CHUNK;
        let end = plane * self.plane + ((k + 1) * CHUNK).min(self.plane);
        (plane % self.channels, start..end)
    }

    /// Per-channel sums of `[a, b]` over all chunks: `partial(channel, range)` sums one chunk;
    /// chunks run in parallel and are added per channel in memory order.
    fn sums(
        &self,
        partial: impl Fn(usize, Range<usize>) -> [f64; 2] + Sync + Send,
    ) -> Vec<[f64; 2]> {
        let partials: Vec<(usize, [f64; 2])> = (0..self.chunks())
            .into_par_iter()
            .map(|u| {
                let (c, range) = self.chunk(u);
                (c, partial(c, range))
            })
            .collect();
        let mut sums = vec![[0.0; 2]; self.channels];
        for (c, [a, b]) in partials {
            sums[c][0] += a;
            sums[c][1] += b;
        }
        sums
    }

    /// Runs `f(channel, chunk range, output chunk)` on every chunk of `out` in parallel.
    fn for_each_chunk<T: Real>(
        &self,
        out: &mut [T],
        f: impl Fn(usize, Range<usize>, &mut [T]) + Sync + Send,
    ) {
        out.par_chunks_mut(self.plane)
            .enumerate()
            .for_each(|(p, plane)| {
                plane
                    .par_chunks_mut(CHUNK)
                    .enumerate()
                    .for_each(|(k, chunk)| {
                        let start = p * self.plane + k * CHUNK;
                        f(p % self.channels, start..start + chunk.len(), chunk);
                    })
            });
    }
}

/// Mean and `1 / √(σ² + ε)` of one channel.
#[derive(Debug, Clone, Copy)]
struct Stats {
    mean: f64,
    inv_std: f64,
}

/// Per-channel statistics of `x`. Values are shifted by the channel's first value before
/// squaring, so that `E[d²] − E[d]²` does not cancel catastrophically for large means.
fn channel_stats<T: Real>(x: &[T], ch: Channels, eps: f64) -> Vec<Stats> {
    let shifts: Vec<f64> = (0..ch.channels).map(|c| x[c * ch.plane].to_f64()).collect();
    let sums = ch.sums(|c, range| with_simd(|| shifted_moments(&x[range], shifts[c])));
    let m = ch.count() as f64;
    sums.iter()
        .zip(&shifts)
        .map(|(&[s1, s2], &shift)| {
            let d = s1 / m;
            let var = (s2 / m - d * d).max(0.0);
            Stats {
                mean: shift + d,
                inv_std: 1.0 / (var + eps).sqrt(),
            }
        })
        .collect()
}

/// `[Σ (x − shift), Σ (x − shift)²]` in f64.
#[inline(always)]
fn shifted_moments<T: Real>(x: &[T], shift: f64) -> [f64; 2] {
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut blocks = x.chunks_exact(LANES);
    for block in &mut blocks {
        for l in 0..LANES {
            let d = block[l].to_f64() - shift;
            s1[l] += d;
            s2[l] += d * d;
        }
    }
    let (mut a, mut b) = (s1.iter().sum::<f64>(), s2.iter().sum::<f64>());
    for &v in blocks.remainder() {
        let d = v.to_f64() - shift;
        a += d;
        b += d * d;
    }
    [a, b]
}

/// `[Σ gy, Σ gy · (x − mean)]` in f64, with `gy = g · [out > 0]` if `relu`, else `g`.
#[inline(always)]
fn grad_moments<T: Real>(x: &[T], g: &[T], out: &[T], mean: T, relu: bool) -> [f64; 2] {
    let zero = T::default();
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut acc = |l: usize, x: T, g: T, o: T| {
        let gy = if relu && o <= zero { zero } else { g };
        s1[l] += gy.to_f64();
        s2[l] += (gy * (x - mean)).to_f64();
    };
    let n = x.len() / LANES * LANES;
    let (xb, gb, ob) = (&x[..n], &g[..n], &out[..n]);
    for ((xs, gs), os) in xb
        .chunks_exact(LANES)
        .zip(gb.chunks_exact(LANES))
        .zip(ob.chunks_exact(LANES))
    {
        for l in 0..LANES {
            acc(l, xs[l], gs[l], os[l]);
        }
    }
    for i in n..x.len() {
        acc(0, x[i], g[i], out[i]);
    }
    [s1.iter().sum(), s2.iter().sum()]
}

/// The op, holding the statistics computed from `x` before it runs.
struct BatchNorm {
    channels: Channels,
    stats: Vec<Stats>,
    relu: bool,
}

impl BatchNorm {
    /// `out = relu?((x − μ) · γ / σ + β)`.
    fn forward<T: Real>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        let coef: Vec<(T, T, T)> = self
            .stats
            .iter()
            .zip(gamma.iter().zip(beta))
            .map(|(s, (&g, &b))| (T::from_f64(s.mean), T::from_f64(g.to_f64() * s.inv_std), b))
            .collect();
        let mut out = vec![T::default(); x.len()];
        let relu = self.relu;
        self.channels.for_each_chunk(&mut out, |c, range, o| {
            let (mean, scale, shift) = coef[c];
            with_simd(|| affine(&x[range], o, mean, scale, shift, relu))
        });
        out
    }

    /// Gradients `(∂x, ∂γ, ∂β)` from the input, the output and the output gradient.
    fn backward<T: Real>(
        &self,
        x: &[T],
        out: &[T],
        g: &[T],
        gamma: &[f64],
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let ch = self.channels;
        let relu = self.relu;
        let means: Vec<T> = self.stats.iter().map(|s| T::from_f64(s.mean)).collect();
        let sums = ch.sums(|c, r| {
            with_simd(|| grad_moments(&x[r.clone()], &g[r.clone()], &out[r], means[c], relu))
        });
        let m = ch.count() as f64;
        let mut dgamma = Vec::with_capacity(ch.channels);
        let mut dbeta = Vec::with_capacity(ch.channels);
        // ∂x = a · gy + b · (x − μ) + d.
        let mut coef = Vec::with_capacity(ch.channels);
        for ((&[sum_gy, sum_gyc], s), &gm) in sums.iter().zip(&self.stats).zip(gamma) {
            let sum_gyxhat = sum_gyc * s.inv_std;
            dbeta.push(T::from_f64(sum_gy));
            dgamma.push(T::from_f64(sum_gyxhat));
            let a = gm * s.inv_std;
            coef.push((
                T::from_f64(a),
                T::from_f64(-a * s.inv_std * sum_gyxhat / m),
                T::from_f64(-a * sum_gy / m),
            ));
        }
        let mut dx = vec![T::default(); x.len()];
        ch.for_each_chunk(&mut dx, |c, r, o| {
            let (a, b, d) = coef[c];
            let mean = means[c];
            with_simd(|| {
                input_grad(
                    &x[r.clone()],
                    &g[r.clone()],
                    &out[r],
                    o,
                    [mean, a, b, d],
                    relu,
                )
            })
        });
        (dx, dgamma, dbeta)
    }
}

/// `o = relu?((x − mean) · scale + shift)`.
#[inline(always)]
fn affine<T: Real>(x: &[T], o: &mut [T], mean: T, scale: T, shift: T, relu: bool) {
    let zero = T::default();
    if relu {
        for (o, &v) in o.iter_mut().zip(x) {
            let y = (v - mean) * scale + shift;
            *o = if y > zero { y } else { zero };
        }
    } else {
        for (o, &v) in o.iter_mut().zip(x) {
            *o = (v - mean) * scale + shift;
        }
    }
}

/// `o = a · gy + b · (x − mean) + d` with `gy = g · [out > 0]` if `relu`, else `g`.
#[inline(always)]
fn input_grad<T: Real>(
    x: &[T],
    g: &[T],
    out: &[T],
    o: &mut [T],
    [mean, a, b, d]: [T; 4],
    relu: bool,
) {
    let zero = T::default();
    for (((o, &x), &g), &r) in o.iter_mut().zip(x).zip(g).zip(out) {
        let gy = if relu && r <= zero { zero } else { g };
        *o = a * gy + b * (x - mean) + d;
    }
}

/// Runs `f` on the contiguous CPU data of `t`.
fn with_cpu<T: Real, R>(t: &Tensor, what: &str, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    let (guard, layout) = t.storage_and_layout();
    match &*guard {
        Storage::Cpu(cpu) => f(contiguous::<T>(cpu, layout, OP, what)?),
        _ => bail!("{OP}: {what} must be on the CPU"),
    }
}

impl BatchNorm {
    /// The backward pass for element type `T`.
    fn grads<T: Real>(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        res: &Tensor,
        g: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let gamma_f64 = gamma.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let x = x.contiguous()?;
        let res = res.contiguous()?;
        let g = g.contiguous()?;
        let (dx, dgamma, dbeta) = with_cpu::<T, _>(&x, "input", |xs| {
            with_cpu::<T, _>(&res, "output", |rs| {
                with_cpu::<T, _>(&g, "output gradient", |gs| {
                    if gs.len() != xs.len() || rs.len() != xs.len() {
                        bail!(
                            "{OP}: gradient shape {:?} does not match {:?}",
                            g.dims(),
                            x.dims()
                        );
                    }
                    Ok(self.backward(xs, rs, gs, &gamma_f64))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Tensor::from_vec(dx, x.dims(), dev)?,
            Tensor::from_vec(dgamma, gamma.dims(), dev)?,
            Tensor::from_vec(dbeta, gamma.dims(), dev)?,
        ))
    }
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = l1.shape().clone();
        with_float!(OP, s1, |F| {
            let x = contiguous::<F>(s1, l1, OP, "input")?;
            let gamma = contiguous::<F>(s2, l2, OP, "gamma")?;
            let beta = contiguous::<F>(s3, l3, OP, "beta")?;
            Ok(storage(self.forward(x, gamma, beta), shape))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dgamma, dbeta) = match x.dtype() {
            DType::F32 => self.grads::<f32>(x, gamma, res, g)?,
            _ => self.grads::<f64>(x, gamma, res, g)?,
        };
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::common::testing::{check_grads, max_abs_diff, values, Rng};
    use candle_core::{Device, Var};

    /// The same batch norm built from candle primitives.
    fn reference(
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
        relu: bool,
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (n, c) = (dims[0], dims[1]);
        let flat = x.reshape((n, c, ()))?;
        let mean = flat.mean_keepdim(2)?.mean_keepdim(0)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(2)?.mean_keepdim(0)?;
        let scale = (var + eps)?
            .sqrt()?
            .recip()?
            .broadcast_mul(&gamma.reshape((1, c, 1))?)?;
        let y = centred
            .broadcast_mul(&scale)?
            .broadcast_add(&beta.reshape((1, c, 1))?)?
            .reshape(dims)?;
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    fn tensor(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).expect("tensor")
    }

    #[test]
    fn hand_computed_2d_and_3d() -> Result<()> {
        // 2D, (1, 2, 1, 3): channel 0 = [1, 2, 3]: μ = 2, σ² = 2/3, with ε = 1/3 x̂ = [-1, 0, 1];
        // channel 1 is constant, so x̂ = 0 and y = β.
        let x = tensor(&[1.0, 2.0, 3.0, 4.0, 4.0, 4.0], &[1, 2, 1, 3]);
        let gamma = tensor(&[2.0, 3.0], &[2]);
        let beta = tensor(&[0.5, -1.0], &[2]);
        let y = batch_norm(&x, &gamma, &beta, 1.0 / 3.0, false)?;
        let expected = [-1.5, 0.5, 2.5, -1.0, -1.0, -1.0];
        for (a, b) in values(&y).iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        let y = batch_norm(&x, &gamma, &beta, 1.0 / 3.0, true)?;
        let expected = [0.0, 0.5, 2.5, 0.0, 0.0, 0.0];
        for (a, b) in values(&y).iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        // 3D, (1, 1, 1, 1, 5) = [0, 1, 2, 3, 4]: μ = 2, σ² = 2, with ε = 2 x̂ = (x − 2) / 2;
        // γ = −1, β = 0.
        let x = tensor(&[0.0, 1.0, 2.0, 3.0, 4.0], &[1, 1, 1, 1, 5]).to_dtype(DType::F32)?;
        let gamma = tensor(&[-1.0], &[1]).to_dtype(DType::F32)?;
        let beta = tensor(&[0.0], &[1]).to_dtype(DType::F32)?;
        let y = batch_norm(&x, &gamma, &beta, 2.0, true)?;
        assert_eq!(values(&y), vec![1.0, 0.5, 0.0, 0.0, 0.0]);
        // Gradients of sum(y) without ReLU: ∂β = M = 5, ∂γ = Σ x̂ = 0 and ∂x = 0 (the mean
        // removes a constant gradient).
        let xv = Var::from_tensor(&x)?;
        let (gv, bv) = (Var::from_tensor(&gamma)?, Var::from_tensor(&beta)?);
        let y = batch_norm(xv.as_tensor(), gv.as_tensor(), bv.as_tensor(), 2.0, false)?;
        let grads = y.sum_all()?.backward()?;
        let grad = |v: &Var| values(grads.get(v.as_tensor()).expect("gradient"));
        assert_eq!(grad(&bv), vec![5.0]);
        assert!(grad(&gv)[0].abs() < 1e-6);
        assert!(grad(&xv).iter().all(|g| g.abs() < 1e-6));
        Ok(())
    }

    /// Output and the gradients of all three inputs of `sum(f(x) · w)`.
    fn run_with_grads(
        f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        w: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let vars = [x, gamma, beta].map(|t| Var::from_tensor(t).expect("var"));
        let y = f(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
        )?;
        let grads = (&y * w)?.sum_all()?.backward()?;
        let mut out = vec![y];
        for v in &vars {
            out.push(grads.get(v.as_tensor()).expect("gradient").clone());
        }
        Ok(out)
    }

    #[test]
    fn matches_the_candle_formula_forward_and_backward() -> Result<()> {
        let mut rng = Rng::new(1);
        // 2D and 3D, odd sizes, and a plane larger than one chunk.
        for shape in [
            vec![2, 3, 5, 7],
            vec![2, 2, 3, 4, 5],
            vec![1, 2, 41, 30, 20],
        ] {
            let c = shape[1];
            let x = rng.tensor(&shape, -1.0, 3.0, DType::F32);
            let gamma = rng.tensor(&[c], 0.5, 2.0, DType::F32);
            let beta = rng.tensor(&[c], -0.5, 0.5, DType::F32);
            let w = rng.tensor(&shape, -1.0, 1.0, DType::F32);
            for relu in [false, true] {
                let fused = run_with_grads(
                    &|x, g, b| batch_norm(x, g, b, 1e-3, relu),
                    &x,
                    &gamma,
                    &beta,
                    &w,
                )?;
                let expected = run_with_grads(
                    &|x, g, b| reference(x, g, b, 1e-3, relu),
                    &x,
                    &gamma,
                    &beta,
                    &w,
                )?;
                for (i, (a, b)) in fused.iter().zip(&expected).enumerate() {
                    let scale = 1.0 + values(b).iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    let err = max_abs_diff(a, b);
                    assert!(
                        err < 2e-4 * scale,
                        "{shape:?} relu {relu}, output {i}: error {err}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(2);
        for (shape, relu) in [
            (vec![2, 2, 3, 3], false),
            (vec![2, 2, 3, 3], true),
            (vec![1, 2, 3, 2, 3], true),
        ] {
            let c = shape[1];
            let x = rng.tensor(&shape, -1.0, 2.0, DType::F64);
            let gamma = rng.tensor(&[c], 0.5, 1.5, DType::F64);
            let beta = rng.tensor(&[c], 0.1, 0.4, DType::F64);
            check_grads(
                &|t| batch_norm(&t[0], &t[1], &t[2], 1e-3, relu),
                &[x, gamma, beta],
                1e-6,
                1e-5,
                &[],
            );
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() -> Result<()> {
        let mut rng = Rng::new(3);
        let shape = [2, 3, 33, 40, 30];
        let x = rng.tensor(&shape, -1.0, 3.0, DType::F32);
        let gamma = rng.tensor(&[3], 0.5, 2.0, DType::F32);
        let beta = rng.tensor(&[3], -0.5, 0.5, DType::F32);
        let w = rng.tensor(&shape, -1.0, 1.0, DType::F32);
        let run = |threads: usize| -> Result<Vec<Vec<f64>>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool");
            pool.install(|| {
                let out = run_with_grads(
                    &|x, g, b| batch_norm(x, g, b, 1e-3, true),
                    &x,
                    &gamma,
                    &beta,
                    &w,
                )?;
                Ok(out.iter().map(values).collect())
            })
        };
        let (one, three) = (run(1)?, run(3)?);
        for (a, b) in one.iter().zip(&three) {
            assert!(a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_and_dtypes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::ones((2, 3, 4, 4), DType::F32, &dev)?;
        let g3 = Tensor::ones(3, DType::F32, &dev)?;
        let g2 = Tensor::ones(2, DType::F32, &dev)?;
        assert!(
            batch_norm(&x, &g2, &g3, 1e-3, true).is_err(),
            "gamma length"
        );
        assert!(batch_norm(&x, &g3, &g2, 1e-3, true).is_err(), "beta length");
        let g33 = Tensor::ones((3, 1), DType::F32, &dev)?;
        assert!(batch_norm(&x, &g33, &g3, 1e-3, true).is_err(), "gamma rank");
        let x2 = Tensor::ones((2, 3), DType::F32, &dev)?;
        assert!(batch_norm(&x2, &g3, &g3, 1e-3, true).is_err(), "input rank");
        let g64 = Tensor::ones(3, DType::F64, &dev)?;
        assert!(
            batch_norm(&x, &g64, &g3, 1e-3, true).is_err(),
            "dtype mismatch"
        );
        let xi = Tensor::ones((2, 3, 4, 4), DType::U32, &dev)?;
        let gi = Tensor::ones(3, DType::U32, &dev)?;
        assert!(
            batch_norm(&xi, &gi, &gi, 1e-3, true).is_err(),
            "integer input"
        );
        let empty = Tensor::ones((0, 3, 4, 4), DType::F32, &dev)?;
        assert!(
            batch_norm(&empty, &g3, &g3, 1e-3, true).is_err(),
            "empty input"
        );
        assert!(
            batch_norm(&x, &g3, &g3, -1.0, true).is_err(),
            "negative eps"
        );
        // A 1D spatial input is fine.
        let x1 = Tensor::ones((2, 3, 5), DType::F32, &dev)?;
        assert_eq!(batch_norm(&x1, &g3, &g3, 1e-3, true)?.dims(), &[2, 3, 5]);
        Ok(())
    }
}
