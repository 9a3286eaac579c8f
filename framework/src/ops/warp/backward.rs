//! The backward pass of [`Warp`]: the gradients with respect to the image (a scatter into
//! per-task row ranges, then a fixed-order reduction) and to the field (a gather).

use super::*;

/// Backward of [`Warp`]: (image, ddf, grad of output) → the requested gradients, flattened and
/// concatenated (image gradient first).
#[derive(Debug, Clone, Copy)]
pub(super) struct WarpBackward {
    pub(super) interp: Interp,
    pub(super) padding: Padding,
    pub(super) want_img: bool,
    pub(super) want_ddf: bool,
}

/// One scatter task of the image gradient: output rows `[r0, r1)` of batch item `batch`, whose
/// sample taps touch source rows `[lo, hi]`.
#[derive(Debug, Clone, Copy)]
struct ScatterTask {
    batch: usize,
    r0: usize,
    r1: usize,
    lo: usize,
    hi: usize,
}

impl WarpBackward {
    pub(super) fn run<T: Real>(&self, img: &[T], ddf: &[T], gout: &[T], geo: Geometry) -> Vec<T> {
        dispatch!(self, geo, run_k, T, (img, ddf, gout, geo))
    }

    fn run_k<T: Real, const LIN: bool, const D3: bool, const BORDER: bool>(
        &self,
        img: &[T],
        ddf: &[T],
        gout: &[T],
        geo: Geometry,
    ) -> Vec<T> {
        let img_len = if self.want_img { img.len() } else { 0 };
        let ddf_len = if self.want_ddf { ddf.len() } else { 0 };
        let mut out = vec![T::zero(); img_len + ddf_len];
        let (gimg, gddf) = out.split_at_mut(img_len);
        if self.want_img {
            self.image_grad::<T, LIN, D3, BORDER>(img, ddf, gout, geo, gimg, gddf);
        } else {
            self.ddf_grad::<T, LIN, D3, BORDER>(img, ddf, gout, geo, gddf);
        }
        out
    }

    /// Gradient w.r.t. the field only: a pure gather, split by output rows.
    fn ddf_grad<T: Real, const LIN: bool, const D3: bool, const BORDER: bool>(
        &self,
        img: &[T],
        ddf: &[T],
        gout: &[T],
        geo: Geometry,
        gddf: &mut [T],
    ) {
        let (svol, dvol, dw) = (geo.src_vol(), geo.dst_vol(), geo.dst[2]);
        let ranges = even_ranges(geo.dst_rows(), task_count(geo.dst_rows()));
        let tasks = split_rows(gddf, geo.n, geo.ndim(), geo.dst_rows(), dw, &ranges);
        tasks.into_par_iter().for_each(|mut task| {
            let b = task.batch;
            let sampler = Sampler {
                geo,
                ddf: &ddf[b * geo.ndim() * dvol..(b + 1) * geo.ndim() * dvol],
            };
            let img = &img[b * geo.c * svol..(b + 1) * geo.c * svol];
            let gout = &gout[b * geo.c * dvol..(b + 1) * geo.c * dvol];
            let start = task.r0 * dw;
            let parts = &mut task.parts;
            with_simd(|| {
                for_each_voxel::<T, LIN, D3, BORDER>(&sampler, task.r0, task.r1, |o, tz, ty, tx| {
                    let mut acc = [T::zero(); 3];
                    for c in 0..geo.c {
                        let g = gout[c * dvol + o];
                        let im = &img[c * svol..(c + 1) * svol];
                        let (_, d) = sample::<T, LIN, D3>(im, tz, ty, tx);
                        acc[0] += g * d[0];
                        acc[1] += g * d[1];
                        acc[2] += g * d[2];
                    }
                    let first = if D3 { 0 } else { 1 };
                    for (part, a) in parts.iter_mut().zip(&acc[first..]) {
                        part[o - start] = *a;
                    }
                })
            });
        });
    }

    /// Source-row ranges touched by each task's taps, merged until the private buffers fit
    /// into twice the image size.
    fn plan_scatter<T: Real, const LIN: bool, const D3: bool, const BORDER: bool>(
        &self,
        ddf: &[T],
        geo: Geometry,
    ) -> Vec<ScatterTask> {
        let dvol = geo.dst_vol();
        let ranges = even_ranges(geo.dst_rows(), task_count(geo.dst_rows()));
        let jobs: Vec<(usize, usize, usize)> = (0..geo.n)
            .flat_map(|b| ranges.iter().map(move |&(r0, r1)| (b, r0, r1)))
            .collect();
        let mut tasks: Vec<ScatterTask> = jobs
            .into_par_iter()
            .map(|(b, r0, r1)| {
                let sampler = Sampler {
                    geo,
                    ddf: &ddf[b * geo.ndim() * dvol..(b + 1) * geo.ndim() * dvol],
                };
                let (mut lo, mut hi) = (usize::MAX, 0);
                with_simd(|| {
                    for_each_voxel::<T, LIN, D3, BORDER>(&sampler, r0, r1, |_, tz, ty, _| {
                        // Indices carry strides: rows are (z * sh + y), in units of sw.
                        lo = lo.min((tz.i0 + ty.i0) / geo.src[2]);
                        hi = hi.max((tz.i1 + ty.i1) / geo.src[2]);
                    })
                });
                ScatterTask {
                    batch: b,
                    r0,
                    r1,
                    lo,
                    hi,
                }
            })
            .collect();
        let budget = 2 * geo.n * geo.src_rows();
        let used = |ts: &[ScatterTask]| ts.iter().map(|t| t.hi + 1 - t.lo).sum::<usize>();
        while used(&tasks) > budget && tasks.len() > geo.n {
            // Merge neighbours pairwise: (0, 1), (2, 3), ... within each batch item.
            let mut merged: Vec<ScatterTask> = Vec::with_capacity(tasks.len() / 2 + 1);
            let mut open = false;
            for t in tasks {
                match merged.last_mut() {
                    Some(m) if open && m.batch == t.batch && m.r1 == t.r0 => {
                        m.r1 = t.r1;
                        m.lo = m.lo.min(t.lo);
                        m.hi = m.hi.max(t.hi);
                        open = false;
                    }
                    _ => {
                        merged.push(t);
                        open = true;
                    }
                }
            }
            tasks = merged;
        }
        tasks
    }

    /// Gradients w.r.t. the image (scatter into private buffers, then reduce) and, when
    /// requested, w.r.t. the field (computed in the same pass).
    fn image_grad<T: Real, const LIN: bool, const D3: bool, const BORDER: bool>(
        &self,
        img: &[T],
        ddf: &[T],
        gout: &[T],
        geo: Geometry,
        gimg: &mut [T],
        gddf: &mut [T],
    ) {
        let (svol, dvol, dw, sw) = (geo.src_vol(), geo.dst_vol(), geo.dst[2], geo.src[2]);
        let plan = self.plan_scatter::<T, LIN, D3, BORDER>(ddf, geo);
        // Batches are planned independently; split the field gradient per planned task.
        let mut ddf_parts: Vec<Option<Vec<&mut [T]>>> = if self.want_ddf {
            let mut parts = Vec::with_capacity(plan.len());
            let mut rest: &mut [T] = gddf;
            for b in 0..geo.n {
                let (batch, tail) = rest.split_at_mut(geo.ndim() * dvol);
                rest = tail;
                let mine: Vec<(usize, usize)> = plan
                    .iter()
                    .filter(|t| t.batch == b)
                    .map(|t| (t.r0, t.r1))
                    .collect();
                for task in split_rows(batch, 1, geo.ndim(), geo.dst_rows(), dw, &mine) {
                    parts.push(Some(task.parts));
                }
            }
            parts
        } else {
            plan.iter().map(|_| None).collect()
        };
        let locals: Vec<Vec<T>> = plan
            .par_iter()
            .zip(ddf_parts.par_iter_mut())
            .map(|(task, parts)| {
                let b = task.batch;
                let sampler = Sampler {
                    geo,
                    ddf: &ddf[b * geo.ndim() * dvol..(b + 1) * geo.ndim() * dvol],
                };
                let img = &img[b * geo.c * svol..(b + 1) * geo.c * svol];
                let gout = &gout[b * geo.c * dvol..(b + 1) * geo.c * dvol];
                let rows = task.hi + 1 - task.lo;
                let span = rows * sw;
                let base = task.lo * sw;
                let mut local = vec![T::zero(); geo.c * span];
                let start = task.r0 * dw;
                with_simd(|| {
                    for_each_voxel::<T, LIN, D3, BORDER>(
                        &sampler,
                        task.r0,
                        task.r1,
                        |o, tz, ty, tx| {
                            let mut acc = [T::zero(); 3];
                            for c in 0..geo.c {
                                let g = gout[c * dvol + o];
                                let acc_c = &mut local[c * span..(c + 1) * span];
                                scatter::<T, LIN, D3>(acc_c, base, g, tz, ty, tx);
                                if parts.is_some() {
                                    let im = &img[c * svol..(c + 1) * svol];
                                    let (_, d) = sample::<T, LIN, D3>(im, tz, ty, tx);
                                    acc[0] += g * d[0];
                                    acc[1] += g * d[1];
                                    acc[2] += g * d[2];
                                }
                            }
                            if let Some(parts) = parts.as_mut() {
                                let first = if D3 { 0 } else { 1 };
                                for (part, a) in parts.iter_mut().zip(&acc[first..]) {
                                    part[o - start] = *a;
                                }
                            }
                        },
                    )
                });
                local
            })
            .collect();
        // Reduce: each reduction task owns a range of source rows of one batch item.
        let src_rows = geo.src_rows();
        let red = even_ranges(src_rows, task_count(src_rows));
        let outs = split_rows(gimg, geo.n, geo.c, src_rows, sw, &red);
        outs.into_par_iter().for_each(|mut out| {
            for (task, local) in plan.iter().zip(&locals) {
                if task.batch != out.batch || task.hi < out.r0 || task.lo >= out.r1 {
                    continue;
                }
                let span = (task.hi + 1 - task.lo) * sw;
                let a = task.lo.max(out.r0);
                let z = (task.hi + 1).min(out.r1);
                for (c, part) in out.parts.iter_mut().enumerate() {
                    let src = &local[c * span + (a - task.lo) * sw..c * span + (z - task.lo) * sw];
                    let dst = &mut part[(a - out.r0) * sw..(z - out.r0) * sw];
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d += *s;
                    }
                }
            }
        });
    }
}

impl CustomOp3 for WarpBackward {
    fn name(&self) -> &'static str {
        "warp-backward"
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
        const OP: &str = "warp-backward";
        let geo = Geometry::new(l1.dims(), l2.dims());
        let mut len = 0;
        if self.want_img {
            len += l1.shape().elem_count();
        }
        if self.want_ddf {
            len += l2.shape().elem_count();
        }
        with_float!(OP, s1, |F| {
            let img = contiguous::<F>(s1, l1, OP, "image")?;
            let ddf = contiguous::<F>(s2, l2, OP, "ddf")?;
            let g = contiguous::<F>(s3, l3, OP, "grad")?;
            Ok(storage(self.run(img, ddf, g, geo), len))
        })
    }
}
