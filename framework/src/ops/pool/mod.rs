//! Max and average pooling (2D and 3D, general kernel, stride and padding) with backward.
//!
//! # CPU kernels
//!
//! Two paths, both reducing one channel at a time:
//! * windows that tile the input (kernel = stride, no leading padding, every window inside the
//!   input, e.g. the usual `2³` / stride 2): row-wise and vectorised, split into slabs of input
//!   planes (module `tiled`);
//! * every other geometry (overlapping windows, gaps, padding): separable passes along W, H and
//!   D over whole rows and planes (module `separable`).
//!
//! Both give each window's maximum with the same voxel, the first in memory order (or the
//! first NaN), and both recompute it in the backward instead of storing indices.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::common::{check_float, contiguous, spatial3, spatial_ndim, storage, with_float, Real};

mod separable;
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
    let plane = inp[1] * inp[2];
    if kind == PoolKind::Max
        && !spec.tiles_input(inp)
        && (plane > separable::MAX_PLANE || inp[0] > separable::MAX_PLANE)
    {
        bail!(
            "{OP}: max pooling with overlapping or padded windows supports up to 2^32 - 1 voxels per plane and planes per channel, got {:?}",
            x.dims()
        );
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

    /// The geometry of the general path.
    fn separable(&self, inp: [usize; 3]) -> separable::Separable {
        separable::Separable::new(
            self.kind == PoolKind::Max,
            inp,
            self.out,
            self.k,
            self.s,
            self.lo,
        )
    }

    fn forward<T: Real>(&self, x: &[T], inp: [usize; 3]) -> Vec<T> {
        if self.tiles_input(inp) {
            tiled::forward(&self.tiling(inp), x)
        } else {
            separable::forward(&self.separable(inp), x)
        }
    }

    fn backward<T: Real>(&self, x: &[T], g: &[T], inp: [usize; 3]) -> Vec<T> {
        if self.tiles_input(inp) {
            tiled::backward(&self.tiling(inp), x, g)
        } else {
            separable::backward(&self.separable(inp), x, g)
        }
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
        with_float!("pool", s, |F| {
            let x = contiguous::<F>(s, l, "pool", "input")?;
            Ok(storage(self.forward(x, inp), shape))
        })
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
        with_float!(OP, s1, |F| {
            let x = contiguous::<F>(s1, l1, OP, "input")?;
            let g = contiguous::<F>(s2, l2, OP, "grad")?;
            Ok(storage(self.0.backward(x, g, inp), shape))
        })
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

    /// The per-window definition, the reference for both paths: `(values, input gradient)`.
    fn per_window<T: Real>(p: &Pool, x: &[T], g: &[T], inp: [usize; 3]) -> (Vec<T>, Vec<T>) {
        let ivol: usize = inp.iter().product();
        let ovol: usize = p.out.iter().product();
        let wins = [0, 1, 2].map(|a| {
            (0..p.out[a])
                .map(|o| {
                    let start = (o * p.s[a]) as isize - p.lo[a] as isize;
                    let end = (start + p.k[a] as isize).min(inp[a] as isize);
                    (start.max(0) as usize, end as usize)
                })
                .collect::<Vec<_>>()
        });
        let (mut y, mut gx) = (Vec::new(), vec![T::zero(); x.len()]);
        for (c, xc) in x.chunks(ivol).enumerate() {
            let mut o = c * ovol;
            for &wz in &wins[0] {
                for &wy in &wins[1] {
                    for &wx in &wins[2] {
                        let voxels: Vec<usize> = (wz.0..wz.1)
                            .flat_map(|z| (wy.0..wy.1).map(move |y| (z * inp[1] + y) * inp[2]))
                            .flat_map(|row| (wx.0..wx.1).map(move |x| row + x))
                            .collect();
                        match p.kind {
                            PoolKind::Max => {
                                let mut best = voxels[0];
                                for &i in &voxels {
                                    let (v, b) = (xc[i], xc[best]);
                                    if v > b || (v.is_nan() && !b.is_nan()) {
                                        best = i;
                                    }
                                }
                                y.push(xc[best]);
                                gx[c * ivol + best] += g[o];
                            }
                            PoolKind::Avg => {
                                let n = T::from_usize(voxels.len());
                                y.push(voxels.iter().map(|&i| xc[i]).sum::<T>() / n);
                                for &i in &voxels {
                                    gx[c * ivol + i] += g[o] / n;
                                }
                            }
                        }
                        o += 1;
                    }
                }
            }
        }
        (y, gx)
    }

    #[test]
    fn both_paths_match_the_per_window_definition() {
        // Values on a coarse grid so windows have ties (the first in memory order must win),
        // NaNs, -inf, sizes that leave trailing voxels outside every window, 2D and 3D; windows
        // that tile the input (the tiled path) and windows that overlap, leave gaps or reach
        // into the padding (the separable path).
        let mut rng = Rng::new(23);
        let no_pad = [(0, 0); 3];
        // Input, kernel, stride, padding, and whether the windows tile the input.
        type Case = (
            [usize; 3],
            [usize; 3],
            [usize; 3],
            [(usize, usize); 3],
            bool,
        );
        let cases: [Case; 12] = [
            ([5, 6, 7], [2, 2, 2], [2, 2, 2], no_pad, true),
            ([3, 7, 6], [1, 2, 2], [1, 2, 2], no_pad, true),
            ([1, 9, 8], [1, 3, 2], [1, 3, 2], no_pad, true),
            ([7, 4, 9], [3, 1, 4], [3, 1, 4], no_pad, true),
            ([4, 4, 4], [1, 1, 1], [1, 1, 1], no_pad, true),
            ([6, 7, 8], [3, 3, 3], [2, 2, 2], [(1, 1); 3], false),
            (
                [1, 9, 10],
                [1, 3, 3],
                [1, 2, 2],
                [(0, 0), (1, 1), (1, 1)],
                false,
            ),
            (
                [5, 5, 6],
                [2, 3, 2],
                [1, 1, 3],
                [(1, 0), (0, 2), (1, 1)],
                false,
            ),
            ([7, 6, 9], [1, 2, 1], [3, 3, 3], no_pad, false),
            ([4, 6, 5], [4, 6, 5], [1, 1, 1], no_pad, false),
            ([6, 5, 7], [2, 2, 2], [2, 2, 2], [(1, 1); 3], false),
            // "same" padding of odd sizes, as the networks' 2/2 pooling pads them.
            ([5, 7, 9], [2, 2, 2], [2, 2, 2], [(0, 1); 3], false),
        ];
        for ((inp, k, s, lo_hi, tiles), kind) in cases
            .into_iter()
            .flat_map(|c| [(c, PoolKind::Max), (c, PoolKind::Avg)])
        {
            let pool = Pool {
                kind,
                k,
                s,
                lo: lo_hi.map(|p| p.0),
                out: [0, 1, 2].map(|a| (inp[a] + lo_hi[a].0 + lo_hi[a].1 - k[a]) / s[a] + 1),
            };
            assert_eq!(pool.tiles_input(inp), tiles, "{inp:?} {k:?} {s:?}");
            let channels = 3;
            let len = channels * inp.iter().product::<usize>();
            let mut x: Vec<f32> = (0..len)
                .map(|_| (rng.uniform() * 4.0).floor() as f32)
                .collect();
            x[len / 2] = f32::NAN;
            x[len / 2 + 1] = f32::NAN;
            // A channel of -inf: every window a tie at the value the padding stands for.
            x[..len / channels].fill(f32::NEG_INFINITY);
            let g: Vec<f32> = (0..channels * pool.out.iter().product::<usize>())
                .map(|_| rng.uniform() as f32)
                .collect();
            let (want_y, want_gx) = per_window(&pool, &x, &g, inp);
            let (y, gx) = (pool.forward(&x, inp), pool.backward(&x, &g, inp));
            let what = format!("{kind:?} {inp:?} k {k:?} s {s:?} pad {lo_hi:?}");
            assert_eq!(y.len(), want_y.len(), "{what}");
            assert_eq!(gx.len(), want_gx.len(), "{what}");
            // The tiled mean sums in the definition's order; the separable one does not.
            let tol = if tiles || kind == PoolKind::Max {
                0.0
            } else {
                1e-6
            };
            for (a, b) in y.iter().zip(&want_y).chain(gx.iter().zip(&want_gx)) {
                assert!(
                    a == b || (a - b).abs() <= tol || (a.is_nan() && b.is_nan()),
                    "{what}: {a} vs {b}"
                );
            }
        }
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
