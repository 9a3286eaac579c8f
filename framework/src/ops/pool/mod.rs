//! Max and average pooling (2D and 3D, general kernel, stride and padding) with backward.
//!
//! # CPU kernel
//!
//! Channels `(n, c)` are independent and are the rayon tasks, so the backward scatter (into the
//! window of each output voxel, windows may overlap when the stride is smaller than the kernel)
//! stays inside one task and needs no synchronisation. The max backward recomputes the arg-max
//! of each window from the input instead of storing indices.
//!
//! Max pooling whose windows tile the input (kernel = stride, no leading padding, every window
//! inside the input, e.g. the usual `2³` / stride 2) takes a row-wise, vectorised path split
//! into slabs of input planes (module `tiled`).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::{check_float, contiguous, spatial3, spatial_ndim, storage, Real};

mod tiled;

/// Pooling reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Maximum over the window (padding never wins; ties go to the first voxel in memory
    /// order, which receives the whole gradient).
    Max,
    /// Mean over the voxels of the window that lie inside the input (padding is not counted,
    /// as TensorFlow's `"same"` average pooling).
    Avg,
}

/// Max pooling; see [`pool`].
pub fn max_pool(
    x: &Tensor,
    kernel: &[usize],
    stride: &[usize],
    padding: &[(usize, usize)],
) -> Result<Tensor> {
    pool(x, PoolKind::Max, kernel, stride, padding)
}

/// Average pooling; see [`pool`].
pub fn avg_pool(
    x: &Tensor,
    kernel: &[usize],
    stride: &[usize],
    padding: &[(usize, usize)],
) -> Result<Tensor> {
    pool(x, PoolKind::Avg, kernel, stride, padding)
}

/// Pools each channel of `x` over windows of size `kernel` taken every `stride` voxels, after
/// padding by `(lo, hi)` per axis: `y[n, c, o] = reduce_{k, inside} x[n, c, o * stride + k -
/// lo]`. Output size per axis: `(I + lo + hi - K) / stride + 1` (floor). Every window must
/// hold at least one input voxel (`lo, hi < K`).
///
/// # Shapes
/// * `x`: `(N, C, H, W)` or `(N, C, D, H, W)`, f32 or f64.
/// * `kernel`, `stride`: one value per spatial axis (>= 1); `padding`: `(lo, hi)` per axis.
/// * output: `(N, C, *out)`.
pub fn pool(
    x: &Tensor,
    kind: PoolKind,
    kernel: &[usize],
    stride: &[usize],
    padding: &[(usize, usize)],
) -> Result<Tensor> {
    const OP: &str = "pool";
    let ndim = spatial_ndim(OP, "input", x)?;
    check_float(OP, "input", x)?;
    if kernel.len() != ndim || stride.len() != ndim || padding.len() != ndim {
        bail!(
            "{OP}: kernel, stride and padding need {ndim} values each, got {kernel:?}, {stride:?}, {padding:?}"
        );
    }
    if kernel.contains(&0) || stride.contains(&0) {
        bail!("{OP}: kernel and stride must be >= 1, got {kernel:?}, {stride:?}");
    }
    if x.dims().contains(&0) {
        bail!("{OP}: empty input {:?}", x.dims());
    }
    let mut spec = Pool {
        kind,
        k: [1; 3],
        s: [1; 3],
        lo: [0; 3],
        out: [1; 3],
    };
    let inp = spatial3(x.dims());
    let off = 3 - ndim;
    for a in 0..ndim {
        let (lo, hi) = padding[a];
        if lo >= kernel[a] || hi >= kernel[a] {
            bail!("{OP}: padding {padding:?} must be smaller than the kernel {kernel:?}");
        }
        let ext = inp[off + a] + lo + hi;
        if ext < kernel[a] {
            bail!(
                "{OP}: kernel {kernel:?} larger than the padded input {:?}",
                x.dims()
            );
        }
        spec.k[off + a] = kernel[a];
        spec.s[off + a] = stride[a];
        spec.lo[off + a] = lo;
        spec.out[off + a] = (ext - kernel[a]) / stride[a] + 1;
    }
    x.contiguous()?.apply_op1(spec)
}

#[derive(Debug, Clone, Copy)]
struct Pool {
    kind: PoolKind,
    k: [usize; 3],
    s: [usize; 3],
    lo: [usize; 3],
    out: [usize; 3],
}

impl Pool {
    /// Input index range `[a, b)` of window `o` along axis `axis` of size `n`.
    #[inline(always)]
    fn window(&self, axis: usize, o: usize, n: usize) -> (usize, usize) {
        let start = (o * self.s[axis]) as isize - self.lo[axis] as isize;
        let a = start.max(0) as usize;
        let b = ((start + self.k[axis] as isize).max(0) as usize).min(n);
        (a, b)
    }

    /// The windows of every output position along each axis.
    fn windows(&self, inp: [usize; 3]) -> [Vec<(usize, usize)>; 3] {
        [0, 1, 2].map(|a| {
            (0..self.out[a])
                .map(|o| self.window(a, o, inp[a]))
                .collect()
        })
    }

    /// Visits every output voxel `o` of one channel with its window (input ranges per axis).
    #[inline(always)]
    fn for_each_window(
        wins: &[Vec<(usize, usize)>; 3],
        mut f: impl FnMut(usize, [(usize, usize); 3]),
    ) {
        let mut o = 0;
        for &wz in &wins[0] {
            for &wy in &wins[1] {
                for &wx in &wins[2] {
                    f(o, [wz, wy, wx]);
                    o += 1;
                }
            }
        }
    }

    /// Index of the maximum of a window (first one in memory order), and the value.
    #[inline(always)]
    fn argmax<T: Real>(xc: &[T], inp: [usize; 3], w: [(usize, usize); 3]) -> (usize, T) {
        // Windows are never empty (padding < kernel).
        let first = (w[0].0 * inp[1] + w[1].0) * inp[2] + w[2].0;
        let mut best = (first, xc[first]);
        for z in w[0].0..w[0].1 {
            for y in w[1].0..w[1].1 {
                let row = (z * inp[1] + y) * inp[2];
                for (i, &v) in xc[row + w[2].0..row + w[2].1].iter().enumerate() {
                    // Greater, or the first NaN (NaN wins, as in PyTorch).
                    if v > best.1 || (v.is_nan() && !best.1.is_nan()) {
                        best = (row + w[2].0 + i, v);
                    }
                }
            }
        }
        best
    }

    /// Whether every window is a full block of the input and the blocks do not overlap
    /// (kernel = stride, no leading padding, the last window inside the input).
    fn tiles_input(&self, inp: [usize; 3]) -> bool {
        (0..3)
            .all(|a| self.k[a] == self.s[a] && self.lo[a] == 0 && self.out[a] * self.s[a] <= inp[a])
    }

    /// The geometry of the tiling fast path (valid when [`Self::tiles_input`]).
    fn tiling(&self, inp: [usize; 3]) -> tiled::Tiling {
        tiled::Tiling {
            k: self.k,
            inp,
            out: self.out,
            mean: self.kind == PoolKind::Avg,
        }
    }

    fn count(w: [(usize, usize); 3]) -> usize {
        (w[0].1 - w[0].0) * (w[1].1 - w[1].0) * (w[2].1 - w[2].0)
    }

    fn forward<T: Real>(&self, x: &[T], inp: [usize; 3]) -> Vec<T> {
        if !self.tiles_input(inp) {
            return self.generic_forward(x, inp);
        }
        tiled::forward(&self.tiling(inp), x)
    }

    /// Forward for any window geometry.
    fn generic_forward<T: Real>(&self, x: &[T], inp: [usize; 3]) -> Vec<T> {
        let ivol: usize = inp.iter().product();
        let ovol: usize = self.out.iter().product();
        let mut y = vec![T::zero(); x.len() / ivol * ovol];
        let wins = self.windows(inp);
        y.par_chunks_mut(ovol)
            .zip(x.par_chunks(ivol))
            .for_each(|(yc, xc)| {
                Self::for_each_window(&wins, |o, w| {
                    yc[o] = match self.kind {
                        PoolKind::Max => Self::argmax(xc, inp, w).1,
                        PoolKind::Avg => {
                            let mut acc = T::zero();
                            for z in w[0].0..w[0].1 {
                                for y in w[1].0..w[1].1 {
                                    let row = (z * inp[1] + y) * inp[2];
                                    for &v in &xc[row + w[2].0..row + w[2].1] {
                                        acc += v;
                                    }
                                }
                            }
                            acc / T::from_usize(Self::count(w))
                        }
                    };
                });
            });
        y
    }

    fn backward<T: Real>(&self, x: &[T], g: &[T], inp: [usize; 3]) -> Vec<T> {
        if !self.tiles_input(inp) {
            return self.generic_backward(x, g, inp);
        }
        tiled::backward(&self.tiling(inp), x, g)
    }

    /// Backward for any window geometry.
    fn generic_backward<T: Real>(&self, x: &[T], g: &[T], inp: [usize; 3]) -> Vec<T> {
        let ivol: usize = inp.iter().product();
        let ovol: usize = self.out.iter().product();
        let mut gx = vec![T::zero(); x.len()];
        let wins = self.windows(inp);
        gx.par_chunks_mut(ivol)
            .zip(x.par_chunks(ivol).zip(g.par_chunks(ovol)))
            .for_each(|(gc, (xc, goc))| {
                Self::for_each_window(&wins, |o, w| match self.kind {
                    PoolKind::Max => {
                        let (i, _) = Self::argmax(xc, inp, w);
                        gc[i] += goc[o];
                    }
                    PoolKind::Avg => {
                        let share = goc[o] / T::from_usize(Self::count(w));
                        for z in w[0].0..w[0].1 {
                            for y in w[1].0..w[1].1 {
                                let row = (z * inp[1] + y) * inp[2];
                                for v in &mut gc[row + w[2].0..row + w[2].1] {
                                    *v += share;
                                }
                            }
                        }
                    }
                });
            });
        gx
    }
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        let inp = spatial3(dims);
        let mut shape = dims[..2].to_vec();
        shape.extend_from_slice(&self.out[5 - dims.len()..]);
        match s {
            CpuStorage::F32(_) => {
                let x = contiguous::<f32>(s, l, "pool", "input")?;
                Ok(storage(self.forward(x, inp), shape))
            }
            CpuStorage::F64(_) => {
                let x = contiguous::<f64>(s, l, "pool", "input")?;
                Ok(storage(self.forward(x, inp), shape))
            }
            other => bail!("pool: unsupported dtype {:?}", other.dtype()),
        }
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let g = g.contiguous()?;
        Ok(Some(x.apply_op2_no_bwd(&g, &PoolBackward(*self))?))
    }
}

/// Backward of [`Pool`]: `(x, grad of output) -> grad of x`.
struct PoolBackward(Pool);

impl CustomOp2 for PoolBackward {
    fn name(&self) -> &'static str {
        "pool-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "pool-backward";
        let inp = spatial3(l1.dims());
        let shape = l1.shape().clone();
        match s1 {
            CpuStorage::F32(_) => {
                let x = contiguous::<f32>(s1, l1, OP, "input")?;
                let g = contiguous::<f32>(s2, l2, OP, "grad")?;
                Ok(storage(self.0.backward(x, g, inp), shape))
            }
            CpuStorage::F64(_) => {
                let x = contiguous::<f64>(s1, l1, OP, "input")?;
                let g = contiguous::<f64>(s2, l2, OP, "grad")?;
                Ok(storage(self.0.backward(x, g, inp), shape))
            }
            other => bail!("{OP}: unsupported dtype {:?}", other.dtype()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::common::testing::{check_grads, max_abs_diff, values, Rng};
    use candle_core::{DType, Device};

    #[test]
    fn hand_computed_2d() {
        // 4x4 = 0..16, kernel 2 stride 2.
        let x = Tensor::arange(0.0f64, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let m = max_pool(&x, &[2, 2], &[2, 2], &[(0, 0), (0, 0)]).unwrap();
        assert_eq!(values(&m), vec![5.0, 7.0, 13.0, 15.0]);
        let a = avg_pool(&x, &[2, 2], &[2, 2], &[(0, 0), (0, 0)]).unwrap();
        assert_eq!(values(&a), vec![2.5, 4.5, 10.5, 12.5]);
        // Kernel 3, stride 2, padding 1: the corner window holds x[0..2, 0..2] only.
        let a = avg_pool(&x, &[3, 3], &[2, 2], &[(1, 1), (1, 1)]).unwrap();
        assert_eq!(a.dims(), &[1, 1, 2, 2]);
        assert_eq!(values(&a)[0], (0.0 + 1.0 + 4.0 + 5.0) / 4.0);
        let m = max_pool(&(x.neg().unwrap()), &[3, 3], &[2, 2], &[(1, 1), (1, 1)]).unwrap();
        assert_eq!(values(&m), vec![0.0, -1.0, -4.0, -5.0]);
    }

    #[test]
    fn matches_candle_2d_pools() {
        let mut rng = Rng::new(20);
        let x = rng.tensor(&[2, 3, 8, 10], -1.0, 1.0, DType::F32);
        let ours = max_pool(&x, &[2, 2], &[2, 2], &[(0, 0), (0, 0)]).unwrap();
        assert_eq!(max_abs_diff(&ours, &x.max_pool2d(2).unwrap()), 0.0);
        let ours = avg_pool(&x, &[2, 2], &[2, 2], &[(0, 0), (0, 0)]).unwrap();
        assert!(max_abs_diff(&ours, &x.avg_pool2d(2).unwrap()) < 1e-6);
    }

    #[test]
    fn pools_3d_odd_sizes() {
        let mut rng = Rng::new(21);
        let x = rng.tensor(&[1, 2, 5, 4, 3], -1.0, 1.0, DType::F64);
        let m = max_pool(&x, &[2, 2, 2], &[2, 2, 2], &[(0, 0); 3]).unwrap();
        assert_eq!(m.dims(), &[1, 2, 2, 2, 1]);
        let v = values(&x);
        let want = v[0]
            .max(v[1])
            .max(v[3])
            .max(v[4])
            .max(v[12])
            .max(v[13])
            .max(v[15])
            .max(v[16]);
        assert_eq!(values(&m)[0], want);
        // Global pooling: kernel = size.
        let a = avg_pool(&x, &[5, 4, 3], &[1, 1, 1], &[(0, 0); 3]).unwrap();
        let mean = x.mean_keepdim(4).unwrap().mean_keepdim(3).unwrap();
        let mean = mean.mean_keepdim(2).unwrap();
        assert!(max_abs_diff(&a, &mean) < 1e-12);
    }

    #[test]
    fn gradients() {
        let mut rng = Rng::new(22);
        let x = rng.tensor(&[1, 2, 5, 6, 4], -1.0, 1.0, DType::F64);
        for kind in [PoolKind::Max, PoolKind::Avg] {
            let f = |t: &[Tensor]| {
                pool(
                    &t[0],
                    kind,
                    &[3, 2, 2],
                    &[2, 1, 2],
                    &[(1, 1), (0, 1), (1, 0)],
                )
            };
            check_grads(&f, std::slice::from_ref(&x), 1e-6, 1e-7, &[]);
        }
        let x = rng.tensor(&[2, 1, 7, 5], -1.0, 1.0, DType::F64);
        for kind in [PoolKind::Max, PoolKind::Avg] {
            let f = |t: &[Tensor]| pool(&t[0], kind, &[2, 2], &[2, 2], &[(0, 0), (0, 0)]);
            check_grads(&f, std::slice::from_ref(&x), 1e-6, 1e-7, &[]);
        }
    }

    #[test]
    fn tiled_path_matches_the_generic_one() {
        // Values on a coarse grid so windows have ties (the first in memory order must win),
        // a NaN, sizes that leave trailing voxels outside every window, 2D and 3D.
        let mut rng = Rng::new(23);
        let cases: [([usize; 3], [usize; 3]); 5] = [
            ([5, 6, 7], [2, 2, 2]),
            ([3, 7, 6], [1, 2, 2]),
            ([1, 9, 8], [1, 3, 2]),
            ([7, 4, 9], [3, 1, 4]),
            ([4, 4, 4], [1, 1, 1]),
        ];
        for ((inp, k), kind) in cases
            .into_iter()
            .flat_map(|c| [(c, PoolKind::Max), (c, PoolKind::Avg)])
        {
            let pool = Pool {
                kind,
                k,
                s: k,
                lo: [0; 3],
                out: [0, 1, 2].map(|a| inp[a] / k[a]),
            };
            assert!(pool.tiles_input(inp));
            let channels = 3;
            let len = channels * inp.iter().product::<usize>();
            let mut x: Vec<f32> = (0..len)
                .map(|_| (rng.uniform() * 4.0).floor() as f32)
                .collect();
            x[len / 2] = f32::NAN;
            let g: Vec<f32> = (0..channels * pool.out.iter().product::<usize>())
                .map(|_| rng.uniform() as f32)
                .collect();
            let (fast, slow) = (pool.forward(&x, inp), pool.generic_forward(&x, inp));
            assert_eq!(fast.len(), slow.len());
            for (a, b) in fast.iter().zip(&slow) {
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "{kind:?} {inp:?} {k:?}"
                );
            }
            assert_eq!(
                pool.backward(&x, &g, inp),
                pool.generic_backward(&x, &g, inp),
                "{kind:?} {inp:?} {k:?}"
            );
        }
        // Overlapping windows and padding keep the generic path.
        let overlapping = Pool {
            kind: PoolKind::Max,
            k: [1, 3, 3],
            s: [1, 2, 2],
            lo: [0, 1, 1],
            out: [1, 3, 3],
        };
        assert!(!overlapping.tiles_input([1, 6, 6]));
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Tensor::zeros((1, 1, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let p = [(0, 0); 3];
        assert!(max_pool(&x, &[2, 2, 2], &[2, 2, 2], &p).is_ok());
        assert!(max_pool(&x, &[2, 2], &[2, 2], &p[..2]).is_err());
        assert!(max_pool(&x, &[2, 0, 2], &[2, 2, 2], &p).is_err());
        assert!(max_pool(&x, &[5, 2, 2], &[2, 2, 2], &p).is_err());
        assert!(max_pool(&x, &[2, 2, 2], &[2, 2, 2], &[(2, 0), (0, 0), (0, 0)]).is_err());
        let ints = Tensor::zeros((1, 1, 4, 4), DType::U8, &Device::Cpu).unwrap();
        assert!(avg_pool(&ints, &[2, 2], &[2, 2], &p[..2]).is_err());
    }
}
