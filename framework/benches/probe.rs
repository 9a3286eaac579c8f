//! Quick timing probe for noisy shared machines: prints wall and process CPU time per
//! iteration of a few op workloads (`cargo bench --bench probe -- warp|fwdcmp|inject`).
#![allow(missing_docs, dead_code, unused_imports)]
#[path = "../src/ops/mod.rs"]
mod ops;
use candle_core::{Device, Tensor, Var};
use ops::*;

fn cpu_ms() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    let ut: f64 = f[11].parse().unwrap();
    let st: f64 = f[12].parse().unwrap();
    (ut + st) * 10.0
}
fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
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
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}
fn time(name: &str, k: usize, mut f: impl FnMut()) {
    f();
    let (c0, t0) = (cpu_ms(), std::time::Instant::now());
    for _ in 0..k {
        f();
    }
    let (c1, t1) = (cpu_ms(), t0.elapsed().as_secs_f64() * 1e3);
    println!(
        "{name}: wall {:.1} ms, cpu {:.1} ms per iter",
        t1 / k as f64,
        (c1 - c0) / k as f64
    );
}
struct Inject(Tensor);
impl candle_core::CustomOp1 for Inject {
    fn name(&self) -> &'static str {
        "inject"
    }
    fn cpu_fwd(
        &self,
        _s: &candle_core::CpuStorage,
        _l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        Ok((
            candle_core::CpuStorage::F32(vec![0.0]),
            candle_core::Shape::from(()),
        ))
    }
    fn bwd(&self, _a: &Tensor, _r: &Tensor, _g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.0.clone()))
    }
}
fn backward_with(out: &Tensor, g: &Tensor) {
    out.apply_op1(Inject(g.clone()))
        .unwrap()
        .backward()
        .unwrap();
}
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let img = uniform(&[1, 1, 128, 128, 128], 0.0, 1.0, 1);
    let ddf = uniform(&[1, 3, 128, 128, 128], -2.0, 2.0, 2);
    let gout = uniform(&[1, 1, 128, 128, 128], -1.0, 1.0, 3);
    let dv = Var::from_tensor(&ddf).unwrap();
    let iv = Var::from_tensor(&img).unwrap();
    if which == "inject" {
        for _ in 0..20 {
            let o = warp(&img, dv.as_tensor(), Interp::Linear, Padding::Zeros).unwrap();
            backward_with(&o, &gout);
        }
        return;
    }
    if which == "fwdcmp" {
        let z = (ddf.clone() * 0.0).unwrap();
        let small = (ddf.clone() * 0.01).unwrap();
        for _ in 0..2 {
            time("fwd zero", 10, || {
                warp(&img, &z, Interp::Linear, Padding::Zeros).unwrap();
            });
            time("fwd small", 10, || {
                warp(&img, &small, Interp::Linear, Padding::Zeros).unwrap();
            });
            time("fwd rand2", 10, || {
                warp(&img, &ddf, Interp::Linear, Padding::Zeros).unwrap();
            });
            time("fwd nearest", 10, || {
                warp(&img, &ddf, Interp::Nearest, Padding::Zeros).unwrap();
            });
            time("fwd border", 10, || {
                warp(&img, &ddf, Interp::Linear, Padding::Border).unwrap();
            });
            time("copy", 10, || {
                let _ = (&img * 1.0).unwrap();
            });
        }
        return;
    }
    if which == "convbwd" {
        let x = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 4);
        let w = uniform(&[16, 16, 3, 3, 3], -0.05, 0.05, 5);
        let g = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 6);
        let xv = Var::from_tensor(&x).unwrap();
        let wv = Var::from_tensor(&w).unwrap();
        for _ in 0..5 {
            let y = conv(
                xv.as_tensor(),
                wv.as_tensor(),
                None,
                &[1, 1, 1],
                &[(1, 1); 3],
            )
            .unwrap();
            backward_with(&y, &g);
        }
        return;
    }
    if which.contains("conv") {
        let x = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 4);
        let w = uniform(&[16, 16, 3, 3, 3], -0.05, 0.05, 5);
        let g = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 6);
        let xv = Var::from_tensor(&x).unwrap();
        let wv = Var::from_tensor(&w).unwrap();
        let p = vec![(1, 1); 3];
        time("conv fwd", 5, || {
            conv(&x, &w, None, &[1, 1, 1], &p).unwrap();
        });
        time("conv fwd_bwd", 3, || {
            let y = conv(xv.as_tensor(), wv.as_tensor(), None, &[1, 1, 1], &p).unwrap();
            backward_with(&y, &g);
        });
        return;
    }
    if which.contains("warp") {
        time("warp fwd", 10, || {
            warp(&img, &ddf, Interp::Linear, Padding::Zeros).unwrap();
        });
        time("warp fwd_bwd", 5, || {
            let o = warp(&img, dv.as_tensor(), Interp::Linear, Padding::Zeros).unwrap();
            (o * &gout).unwrap().sum_all().unwrap().backward().unwrap();
        });
        time("warp fwd_bwd inject", 5, || {
            let o = warp(&img, dv.as_tensor(), Interp::Linear, Padding::Zeros).unwrap();
            backward_with(&o, &gout);
        });
        time("warp fwd_bwd both inject", 5, || {
            let o = warp(
                iv.as_tensor(),
                dv.as_tensor(),
                Interp::Linear,
                Padding::Zeros,
            )
            .unwrap();
            backward_with(&o, &gout);
        });
        time("warp fwd_bwd both", 5, || {
            let o = warp(
                iv.as_tensor(),
                dv.as_tensor(),
                Interp::Linear,
                Padding::Zeros,
            )
            .unwrap();
            (o * &gout).unwrap().sum_all().unwrap().backward().unwrap();
        });
        time("mul+sum+backward overhead (no warp)", 5, || {
            let o = (dv.as_tensor().narrow(1, 0, 1).unwrap() * 1.0).unwrap();
            (o * &gout).unwrap().sum_all().unwrap().backward().unwrap();
        });
    }
}
