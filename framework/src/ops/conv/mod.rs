//! N-d convolution (2D and 3D) and transposed convolution, with gradients w.r.t. the input and
//! the weights.
//!
//! # CPU kernels
//!
//! Every convolution runs as one "core" convolution: stride, input dilation and (possibly
//! negative) padding per axis, over 3-D volumes (2D inputs are volumes of depth 1). The input
//! gradient is the transposed convolution of the output gradient: a convolution with the
//! flipped, channel-swapped kernel over the output gradient dilated by the stride. The kernel
//! that runs depends on the dtype and the geometry:
//!
//! * f32, 3³ kernel, stride 1, no dilation, at least 8 channels each way and outputs wide
//!   enough to fill the vector lanes (see `winograd::pays_off`): Winograd `F(2³, 3³)` for the
//!   forward pass and the input gradient (`winograd.rs`) and, when the input channels are a
//!   multiple of the lanes, `F(3³, 2³)` for the weight gradient (`winograd_weight.rs`);
//! * other f32, stride 1, no dilation (forward convolutions of stride 1, their input gradients, and
//!   every weight gradient of a stride-1 convolution): the direct kernels of `direct.rs`, with
//!   AVX-512, AVX2 + FMA or portable micro-kernels chosen at run time (`lanes.rs`), each tile
//!   reading a zero-padded copy of the input window it needs (`slab.rs`) and writing its
//!   output rows in place; weight gradients with kernel widths 1, 3, 5 or 7 and whole
//!   registers of output channels put those channels across the lanes (`weight_lanes.rs`);
//! * f32, stride 1 with input dilation (transposed convolutions, input gradients of strided
//!   convolutions): one direct convolution per output phase (`phase.rs`), skipping the zero
//!   taps of the dilated input;
//! * everything else (strided forward convolutions and their weight gradients, and f64): the
//!   output is cut into tiles of whole output rows; each tile gathers its input patches into a
//!   bounded column buffer (`Cin * prod(kernel)` rows by the tile's positions, about 512 KiB;
//!   im2col per tile, never for the whole image) and multiplies it by the weight matrix with
//!   the `gemm` crate. The weight gradient multiplies the output gradient of a tile by its
//!   column buffer.
//!
//! Tiles are rayon tasks that each write only their own output rows. Weight-gradient partial
//! sums are added in a fixed order, so training gives the same weights on every run. No kernel
//! keeps an input-sized buffer besides its result.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::{check_float, contiguous, spatial_ndim, storage, with_float, Real};

mod direct;
mod lanes;
mod phase;
mod slab;
#[cfg(test)]
mod test_cases;
mod weight_lanes;
mod winograd;
mod winograd_weight;

use lanes::Isa;

/// Convolution of `x` with `w` (cross-correlation, as in PyTorch and TensorFlow), plus `bias`.
///
/// `y[n, co, o] = bias[co] + sum_{ci, k} w[co, ci, k] * x[n, ci, o * stride + k - pad_lo]`,
/// with zeros outside `x`. Output size per axis: `(I + lo + hi - K) / stride + 1` (floor).
///
/// # Shapes
/// * `x`: `(N, Cin, H, W)` or `(N, Cin, D, H, W)`, f32 or f64.
/// * `w`: `(Cout, Cin, KH, KW)` or `(Cout, Cin, KD, KH, KW)`, same dtype.
/// * `bias`: `(Cout,)`.
/// * `stride`: one value per spatial axis (>= 1); `padding`: `(lo, hi)` per spatial axis (see
///   [`same_padding`], [`valid_padding`]).
/// * output: `(N, Cout, *out)`.
pub fn conv(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: &[usize],
    padding: &[(usize, usize)],
) -> Result<Tensor> {
    const OP: &str = "conv";
    let spec = ConvSpec::new(OP, x, w, stride, padding)?;
    let xd = x.dims();
    if w.dims()[1] != xd[1] {
        bail!(
            "{OP}: weight expects {} input channels, input {:?} has {}",
            w.dims()[1],
            xd,
            xd[1]
        );
    }
    for a in 0..spec.ndim {
        let ext = xd[2 + a] + padding[a].0 + padding[a].1;
        if ext < w.dims()[2 + a] {
            bail!(
                "{OP}: padded input {ext} is smaller than the kernel {} on axis {a}",
                w.dims()[2 + a]
            );
        }
    }
    let y = x
        .contiguous()?
        .apply_op2(&w.contiguous()?, ConvFwd { spec })?;
    add_bias(OP, y, bias)
}

/// Transposed convolution (the adjoint of [`conv`] with the same `stride` and `padding`), as
/// used for learned up-sampling.
///
/// `y[n, co, i] = bias[co] + sum_{ci, k, o: o * stride + k - lo = i} w[ci, co, k] * x[n, ci, o]`.
/// Output size per axis: `(I - 1) * stride + K - lo - hi + output_padding`, with
/// `output_padding < stride`. [`up_padding`] gives the padding for an exact `stride`-times
/// up-sampling.
///
/// # Shapes
/// * `x`: `(N, Cin, *spatial)`, f32 or f64.
/// * `w`: `(Cin, Cout, *kernel)` (PyTorch's layout for transposed convolution).
/// * `bias`: `(Cout,)`.
/// * output: `(N, Cout, *out)`.
pub fn conv_transpose(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: &[usize],
    padding: &[(usize, usize)],
    output_padding: &[usize],
) -> Result<Tensor> {
    const OP: &str = "conv_transpose";
    let spec = ConvSpec::new(OP, x, w, stride, padding)?;
    let xd = x.dims();
    if w.dims()[0] != xd[1] {
        bail!(
            "{OP}: weight (Cin, Cout, *k) expects {} input channels, input {:?} has {}",
            w.dims()[0],
            xd,
            xd[1]
        );
    }
    if output_padding.len() != spec.ndim {
        bail!("{OP}: output_padding needs {} values", spec.ndim);
    }
    let mut out = vec![xd[0], w.dims()[1]];
    for a in 0..spec.ndim {
        let (lo, hi) = padding[a];
        let k = w.dims()[2 + a];
        let s = stride[a];
        if output_padding[a] >= s {
            bail!("{OP}: output_padding {output_padding:?} must be smaller than stride {stride:?}");
        }
        let full = (xd[2 + a] - 1) * s + k + output_padding[a];
        if full <= lo + hi {
            bail!("{OP}: padding {padding:?} leaves an empty output on axis {a}");
        }
        out.push(full - lo - hi);
    }
    let y = x
        .contiguous()?
        .apply_op2(&w.contiguous()?, ConvData { spec, in_dims: out })?;
    add_bias(OP, y, bias)
}

/// `(lo, hi)` padding that keeps the size for stride 1 and gives `ceil(I / stride)` outputs
/// otherwise (TensorFlow's `"same"`); for even kernels the extra voxel goes to `hi`.
pub fn same_padding(input: &[usize], kernel: &[usize], stride: &[usize]) -> Vec<(usize, usize)> {
    input
        .iter()
        .zip(kernel)
        .zip(stride)
        .map(|((&i, &k), &s)| {
            let s = s.max(1);
            let out = i.div_ceil(s);
            let total = ((out.max(1) - 1) * s + k).saturating_sub(i);
            (total / 2, total - total / 2)
        })
        .collect()
}

/// No padding (TensorFlow's `"valid"`), for `ndim` spatial axes.
pub fn valid_padding(ndim: usize) -> Vec<(usize, usize)> {
    vec![(0, 0); ndim]
}

/// `(padding, output_padding)` for a transposed convolution with kernel `k` and stride `s` that
/// multiplies the size by exactly `s` (as DeepReg's `Deconv3d` with `padding="same"`).
pub fn up_padding(kernel: &[usize], stride: &[usize]) -> (Vec<(usize, usize)>, Vec<usize>) {
    // out = (I - 1) s + k - lo - hi + op = I s  <=>  lo + hi - op = k - s.
    let mut pad = Vec::new();
    let mut op = Vec::new();
    for (&k, &s) in kernel.iter().zip(stride) {
        let total = k as isize - s as isize;
        if total >= 0 {
            let lo = total as usize / 2;
            pad.push((lo, total as usize - lo));
            op.push(0);
        } else {
            // Kernel smaller than the stride: no padding, output_padding fills the rest
            // (needs s - k < s, always true).
            pad.push((0, 0));
            op.push((-total) as usize);
        }
    }
    (pad, op)
}

fn add_bias(op: &str, y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let Some(b) = bias else { return Ok(y) };
    let c = y.dims()[1];
    if b.dims() != [c] {
        bail!("{op}: bias must be ({c},), got {:?}", b.dims());
    }
    let mut shape = vec![1; y.rank()];
    shape[1] = c;
    y.broadcast_add(&b.reshape(shape)?)
}

/// Stride and padding of a convolution, padded to three axes (2D: the depth axis has size 1,
/// stride 1 and no padding).
#[derive(Debug, Clone, Copy)]
struct ConvSpec {
    ndim: usize,
    stride: [usize; 3],
    lo: [usize; 3],
    hi: [usize; 3],
}

impl ConvSpec {
    fn new(
        op: &str,
        x: &Tensor,
        w: &Tensor,
        stride: &[usize],
        padding: &[(usize, usize)],
    ) -> Result<Self> {
        let ndim = spatial_ndim(op, "input", x)?;
        check_float(op, "input", x)?;
        if w.dtype() != x.dtype() {
            bail!(
                "{op}: weight dtype {:?} differs from input dtype {:?}",
                w.dtype(),
                x.dtype()
            );
        }
        if w.rank() != x.rank() {
            bail!(
                "{op}: weight must have rank {} for input {:?}, got {:?}",
                x.rank(),
                x.dims(),
                w.dims()
            );
        }
        if stride.len() != ndim || padding.len() != ndim {
            bail!("{op}: stride and padding need {ndim} values each, got {stride:?}, {padding:?}");
        }
        if stride.contains(&0) {
            bail!("{op}: stride must be >= 1, got {stride:?}");
        }
        if x.dims().iter().chain(w.dims()).any(|&d| d == 0) {
            bail!(
                "{op}: empty tensors are not supported (input {:?}, weight {:?})",
                x.dims(),
                w.dims()
            );
        }
        let mut spec = Self {
            ndim,
            stride: [1; 3],
            lo: [0; 3],
            hi: [0; 3],
        };
        let off = 3 - ndim;
        for a in 0..ndim {
            spec.stride[off + a] = stride[a];
            spec.lo[off + a] = padding[a].0;
            spec.hi[off + a] = padding[a].1;
        }
        Ok(spec)
    }
}

fn dims3(dims: &[usize]) -> [usize; 3] {
    let sp = &dims[2..];
    if sp.len() == 2 {
        [1, sp[0], sp[1]]
    } else {
        [sp[0], sp[1], sp[2]]
    }
}

/// Geometry of one run of the core kernel: a convolution with input dilation `dil`, stride
/// `stride` and (possibly negative) leading padding `pad`.
#[derive(Debug, Clone, Copy)]
struct Core {
    n: usize,
    cin: usize,
    cout: usize,
    inp: [usize; 3],
    k: [usize; 3],
    out: [usize; 3],
    stride: [usize; 3],
    dil: [usize; 3],
    pad: [isize; 3],
}

impl Core {
    fn ivol(&self) -> usize {
        self.inp.iter().product()
    }
    fn ovol(&self) -> usize {
        self.out.iter().product()
    }
    fn kvol(&self) -> usize {
        self.k.iter().product()
    }
    fn krows(&self) -> usize {
        self.cin * self.kvol()
    }
    fn rows(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// Forward convolution: `x` is `(n, cin, inp)`, `spec` its stride/padding, `k` the kernel.
    fn forward(spec: &ConvSpec, xd: &[usize], cout: usize, k: [usize; 3]) -> Self {
        let inp = dims3(xd);
        let mut out = [0; 3];
        for a in 0..3 {
            out[a] = (inp[a] + spec.lo[a] + spec.hi[a] - k[a]) / spec.stride[a] + 1;
        }
        Self {
            n: xd[0],
            cin: xd[1],
            cout,
            inp,
            k,
            out,
            stride: spec.stride,
            dil: [1; 3],
            pad: spec.lo.map(|p| p as isize),
        }
    }

    /// The transposed convolution of `spec`: from `g` `(n, cin, inp)` (the convolution's
    /// output) to `(n, cout, out)` (the convolution's input, dims `out`).
    fn data(spec: &ConvSpec, gd: &[usize], cout: usize, k: [usize; 3], out: [usize; 3]) -> Self {
        let mut pad = [0isize; 3];
        for a in 0..3 {
            pad[a] = k[a] as isize - 1 - spec.lo[a] as isize;
        }
        Self {
            n: gd[0],
            cin: gd[1],
            cout,
            inp: dims3(gd),
            k,
            out,
            stride: [1; 3],
            dil: spec.stride,
            pad,
        }
    }

    /// Rows per tile so that the column buffer stays near 2^17 values (512 KiB in f32, half an
    /// L2 cache).
    fn tile_rows(&self) -> usize {
        let per_row = self.krows() * self.out[2];
        ((1 << 17) / per_row.max(1)).clamp(1, self.rows())
    }

    /// Gathers the input patches of output rows `[r0, r1)` into `col` (`krows` rows of
    /// `(r1 - r0) * out[2]` values).
    fn im2col<T: Real>(&self, x: &[T], r0: usize, r1: usize, col: &mut [T]) {
        let [kd, kh, kw] = self.k;
        let [id, ih, iw] = self.inp;
        let wo = self.out[2];
        let p = (r1 - r0) * wo;
        let ivol = self.ivol();
        // Virtual (dilated) input extent along each axis.
        let ext = |a: usize| ((self.inp[a] - 1) * self.dil[a] + 1) as isize;
        let (ez, ey, ex) = (ext(0), ext(1), ext(2));
        let zero = T::zero();
        let on = |v: isize, e: isize, d: usize| {
            v >= 0 && v < e && (d == 1 || (v as usize).is_multiple_of(d))
        };
        let mut kk = 0;
        for ci in 0..self.cin {
            let xc = &x[ci * ivol..(ci + 1) * ivol];
            for kz in 0..kd {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let dst = &mut col[kk * p..(kk + 1) * p];
                        kk += 1;
                        let (mut oz, mut oy) = (r0 / self.out[1], r0 % self.out[1]);
                        for ri in 0..r1 - r0 {
                            let run = &mut dst[ri * wo..(ri + 1) * wo];
                            let vz = (oz * self.stride[0] + kz) as isize - self.pad[0];
                            let vy = (oy * self.stride[1] + ky) as isize - self.pad[1];
                            oy += 1;
                            if oy == self.out[1] {
                                oy = 0;
                                oz += 1;
                            }
                            if !on(vz, ez, self.dil[0]) || !on(vy, ey, self.dil[1]) {
                                run.fill(zero);
                                continue;
                            }
                            let iz = vz as usize / self.dil[0];
                            let iy = vy as usize / self.dil[1];
                            debug_assert!(iz < id && iy < ih);
                            let src = &xc[(iz * ih + iy) * iw..(iz * ih + iy + 1) * iw];
                            let sx = self.stride[2];
                            let dx = self.dil[2];
                            let shift = kx as isize - self.pad[2];
                            if sx == 1 && dx == 1 {
                                // Output ox reads input ox + shift: one contiguous copy.
                                let a = (-shift).clamp(0, wo as isize) as usize;
                                let b =
                                    (iw as isize - shift).clamp(a as isize, wo as isize) as usize;
                                run[..a].fill(zero);
                                let s0 = (a as isize + shift) as usize;
                                run[a..b].copy_from_slice(&src[s0..s0 + (b - a)]);
                                run[b..].fill(zero);
                            } else {
                                for (ox, v) in run.iter_mut().enumerate() {
                                    let vx = (ox * sx) as isize + shift;
                                    *v = if on(vx, ex, dx) {
                                        src[vx as usize / dx]
                                    } else {
                                        zero
                                    };
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `y = W x` over all tiles: `wmat` is `(cout, krows)`, `x` is `(n, cin, inp)`.
    fn run_forward<T: Real>(&self, x: &[T], wmat: &[T]) -> Vec<T> {
        let (ivol, ovol, wo) = (self.ivol(), self.ovol(), self.out[2]);
        let mut y = vec![T::zero(); self.n * self.cout * ovol];
        let krows = self.krows();
        assert!(wmat.len() >= self.cout * krows);
        let tr = self.tile_rows();
        let jobs = self.tiles(tr);
        let out = SharedOut(y.as_mut_ptr());
        jobs.into_par_iter().for_each_init(
            || vec![T::zero(); krows * tr * wo],
            |col, (b, r0, r1)| {
                let p = (r1 - r0) * wo;
                let xb = &x[b * self.cin * ivol..(b + 1) * self.cin * ivol];
                self.im2col(xb, r0, r1, &mut col[..krows * p]);
                let dst = out.at(b * self.cout * ovol + r0 * wo);
                // SAFETY: the tile writes y[b, co, r0 * wo .. r1 * wo] for every co (rows
                // `ovol` apart), inside `y`; tiles are disjoint, so no two tasks write the same
                // element, and nothing reads `y` until all tasks are done. `wmat` holds
                // `cout x krows` values (asserted) and `col` `krows x p`.
                unsafe {
                    gemm::gemm(
                        self.cout,
                        p,
                        krows,
                        dst,
                        1,
                        ovol as isize,
                        false,
                        wmat.as_ptr(),
                        1,
                        krows as isize,
                        col.as_ptr(),
                        1,
                        p as isize,
                        T::zero(),
                        T::one(),
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            },
        );
        y
    }

    /// Tiles `(batch, r0, r1)` of `tr` output rows.
    fn tiles(&self, tr: usize) -> Vec<(usize, usize, usize)> {
        let rows = self.rows();
        (0..self.n)
            .flat_map(|b| {
                (0..rows)
                    .step_by(tr)
                    .map(move |r| (b, r, (r + tr).min(rows)))
            })
            .collect()
    }

    /// Weight gradient `gW[co, (ci, k)] = sum_o g[co, o] * col[(ci, k), o]` for `x` `(n, cin,
    /// inp)` and `g` `(n, cout, out)`.
    fn run_weight<T: Real>(&self, x: &[T], g: &[T]) -> Vec<T> {
        let (ivol, ovol, wo) = (self.ivol(), self.ovol(), self.out[2]);
        let krows = self.krows();
        // Smaller tiles than the forward: gemm packs the column buffer transposed here (the
        // reduction runs over positions), which is cheaper while it stays in L1/L2.
        let tr = (self.tile_rows() / 4).max(1);
        let jobs = self.tiles(tr);
        // A fixed number of contiguous groups of tiles, one partial sum each, added in group
        // order: the result depends neither on the thread count nor on how rayon schedules the
        // tasks (training must give the same weights twice).
        let per_group = jobs.len().div_ceil(IM2COL_WEIGHT_GROUPS).max(1);
        let partials: Vec<Vec<T>> = jobs
            .par_chunks(per_group)
            .map(|group| {
                let mut acc = vec![T::zero(); self.cout * krows];
                let mut col = vec![T::zero(); krows * tr * wo];
                for &(b, r0, r1) in group {
                    let p = (r1 - r0) * wo;
                    let xb = &x[b * self.cin * ivol..(b + 1) * self.cin * ivol];
                    self.im2col(xb, r0, r1, &mut col[..krows * p]);
                    let gb = &g[b * self.cout * ovol..(b + 1) * self.cout * ovol];
                    // lhs: g[co, r0 * wo + j], rows `ovol` apart; rhs: col transposed.
                    gemm_acc(
                        &mut acc,
                        (self.cout, krows, p),
                        (gb, r0 * wo, ovol as isize, 1),
                        (&col[..krows * p], 1, p as isize),
                    );
                }
                acc
            })
            .collect();
        let mut total = vec![T::zero(); self.cout * krows];
        for partial in partials {
            for (sum, value) in total.iter_mut().zip(partial) {
                *sum += value;
            }
        }
        total
    }
}

/// Number of groups the im2col weight gradient's tiles are summed in.
const IM2COL_WEIGHT_GROUPS: usize = 8;

/// The kernels a dtype runs: the direct kernels for f32 where they apply (see [`direct`]),
/// im2col + gemm otherwise.
trait ConvKernels: Real {
    /// `y = W x` (see [`Core::run_forward`]).
    fn conv_forward(core: &Core, x: &[Self], wmat: &[Self]) -> Vec<Self>;
    /// The weight gradient (see [`Core::run_weight`]).
    fn conv_weight(core: &Core, x: &[Self], g: &[Self]) -> Vec<Self>;
}

impl ConvKernels for f32 {
    fn conv_forward(core: &Core, x: &[f32], wmat: &[f32]) -> Vec<f32> {
        if winograd::pays_off(core, Isa::detect()) {
            winograd::forward(core, Isa::detect(), x, wmat)
        } else if direct::supports(core) {
            direct::forward(core, Isa::detect(), x, wmat)
        } else if phase::supports(core) {
            phase::forward(core, Isa::detect(), x, wmat)
        } else {
            core.run_forward(x, wmat)
        }
    }
    fn conv_weight(core: &Core, x: &[f32], g: &[f32]) -> Vec<f32> {
        if winograd_weight::pays_off(core, Isa::detect()) {
            winograd_weight::weight(core, Isa::detect(), x, g)
        } else if direct::supports(core) {
            direct::weight(core, Isa::detect(), x, g)
        } else {
            core.run_weight(x, g)
        }
    }
}

impl ConvKernels for f64 {
    fn conv_forward(core: &Core, x: &[f64], wmat: &[f64]) -> Vec<f64> {
        core.run_forward(x, wmat)
    }
    fn conv_weight(core: &Core, x: &[f64], g: &[f64]) -> Vec<f64> {
        core.run_weight(x, g)
    }
}

/// A raw pointer to an output buffer that rayon tasks write disjoint parts of.
#[derive(Clone, Copy)]
struct SharedOut<T>(*mut T);

// SAFETY: the pointer is only used to write disjoint regions from different tasks (see the
// uses); `T` values are plain floats.
unsafe impl<T: Send> Send for SharedOut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// The pointer `offset` elements in (computed with wrapping arithmetic; only dereferenced
    /// by callers that keep inside the buffer).
    fn at(&self, offset: usize) -> *mut T {
        self.0.wrapping_add(offset)
    }
}

/// `dst (m x n, row-major, dense) = lhs (m x k) * rhs (k x n)`; each operand given with its row
/// and column strides (in elements).
fn gemm_into<T: Real>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    (lhs, lhs_rs, lhs_cs): (&[T], isize, isize),
    (rhs, rhs_rs, rhs_cs): (&[T], isize, isize),
    accumulate: bool,
) {
    assert!(dst.len() >= m * n);
    assert!(span(m, k, lhs_rs, lhs_cs) <= lhs.len());
    assert!(span(k, n, rhs_rs, rhs_cs) <= rhs.len());
    // SAFETY: the asserts above keep every element gemm touches inside the slices (all strides
    // are positive); dst is exclusively borrowed and does not overlap lhs or rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `acc (m x n) += lhs (m x k, starting at `offset`) * rhs (k x n)`.
fn gemm_acc<T: Real>(
    acc: &mut [T],
    mnk: (usize, usize, usize),
    (lhs, offset, lhs_rs, lhs_cs): (&[T], usize, isize, isize),
    rhs: (&[T], isize, isize),
) {
    gemm_into(acc, mnk, (&lhs[offset..], lhs_rs, lhs_cs), rhs, true)
}

/// Number of elements from the first to one past the last of a strided `rows x cols` matrix.
fn span(rows: usize, cols: usize, rs: isize, cs: isize) -> usize {
    if rows == 0 || cols == 0 {
        return 0;
    }
    ((rows - 1) as isize * rs + (cols - 1) as isize * cs) as usize + 1
}

/// `w (cout, cin, k)` as the matrix of the transposed convolution: `(cin, cout * k)` with the
/// kernel flipped.
fn flip_swap<T: Real>(w: &[T], cout: usize, cin: usize, kvol: usize) -> Vec<T> {
    let mut out = vec![T::zero(); w.len()];
    for co in 0..cout {
        for ci in 0..cin {
            for k in 0..kvol {
                out[(ci * cout + co) * kvol + (kvol - 1 - k)] = w[(co * cin + ci) * kvol + k];
            }
        }
    }
    out
}

fn kernel3(wd: &[usize]) -> [usize; 3] {
    dims3(wd)
}

/// `y = conv(x, w)`.
#[derive(Debug, Clone, Copy)]
struct ConvFwd {
    spec: ConvSpec,
}

impl CustomOp2 for ConvFwd {
    fn name(&self) -> &'static str {
        "conv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (xd, wd) = (l1.dims(), l2.dims());
        let core = Core::forward(&self.spec, xd, wd[0], kernel3(wd));
        let mut shape = vec![core.n, core.cout];
        shape.extend_from_slice(&core.out[3 - self.spec.ndim..]);
        with_float!("conv", s1, |F| {
            let x = contiguous::<F>(s1, l1, "conv", "input")?;
            let w = contiguous::<F>(s2, l2, "conv", "weight")?;
            Ok(storage(F::conv_forward(&core, x, w), shape))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let gx = if x.track_op() {
            Some(g.apply_op2(
                w,
                ConvData {
                    spec: self.spec,
                    in_dims: x.dims().to_vec(),
                },
            )?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(x.apply_op2_no_bwd(
                &g,
                &ConvWeight {
                    spec: self.spec,
                    w_dims: w.dims().to_vec(),
                },
            )?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// The transposed convolution `x = conv^T(g, w)` for a convolution whose input has dims
/// `in_dims` (the input gradient of [`ConvFwd`], and [`conv_transpose`]).
#[derive(Debug, Clone)]
struct ConvData {
    spec: ConvSpec,
    in_dims: Vec<usize>,
}

impl CustomOp2 for ConvData {
    fn name(&self) -> &'static str {
        "conv-transpose"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (gd, wd) = (l1.dims(), l2.dims());
        let k = kernel3(wd);
        let kvol: usize = k.iter().product();
        let core = Core::data(&self.spec, gd, wd[1], k, dims3(&self.in_dims));
        let shape = self.in_dims.clone();
        with_float!("conv-transpose", s1, |F| {
            let g = contiguous::<F>(s1, l1, "conv-transpose", "input")?;
            let w = contiguous::<F>(s2, l2, "conv-transpose", "weight")?;
            let wt = flip_swap(w, wd[0], wd[1], kvol);
            Ok(storage(F::conv_forward(&core, g, &wt), shape))
        })
    }

    fn bwd(
        &self,
        g: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        gg: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gg = gg.contiguous()?;
        let dg = if g.track_op() {
            Some(gg.apply_op2(w, ConvFwd { spec: self.spec })?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(gg.apply_op2_no_bwd(
                g,
                &ConvWeight {
                    spec: self.spec,
                    w_dims: w.dims().to_vec(),
                },
            )?)
        } else {
            None
        };
        Ok((dg, dw))
    }
}

/// Weight gradient of [`ConvFwd`]: `(x, g) -> gW` with dims `w_dims`.
#[derive(Debug, Clone)]
struct ConvWeight {
    spec: ConvSpec,
    w_dims: Vec<usize>,
}

impl CustomOp2 for ConvWeight {
    fn name(&self) -> &'static str {
        "conv-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let core = Core::forward(&self.spec, l1.dims(), self.w_dims[0], kernel3(&self.w_dims));
        if dims3(l2.dims()) != core.out || l2.dims()[1] != core.cout {
            bail!(
                "conv-weight-grad: gradient {:?} does not match the output of input {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let shape = self.w_dims.clone();
        with_float!("conv-weight-grad", s1, |F| {
            let x = contiguous::<F>(s1, l1, "conv-weight-grad", "input")?;
            let g = contiguous::<F>(s2, l2, "conv-weight-grad", "grad")?;
            Ok(storage(F::conv_weight(&core, x, g), shape))
        })
    }
}

#[cfg(test)]
mod tests;
