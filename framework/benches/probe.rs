//! One workload per process, for peak RSS and CPU time on noisy shared machines: runs the
//! workload named on the command line a few times and prints wall and process CPU time per
//! iteration. Peak RSS: `/usr/bin/time -f %M target/release/deps/probe-* conv_fwd_bwd`.
//! Build with `cargo bench -p voxreg-framework --bench probe --no-run`.

#![allow(missing_docs)]

mod support;

use candle_core::{Tensor, Var};
use support::{backward_with, uniform};
use voxreg_framework::ops::{
    avg_pool, conv, max_pool, rectangular_kernel, resize, separable_filter, warp, Align, Interp,
    Padding, ResizeMode,
};

/// Process CPU time (user + system) in milliseconds, from `/proc/self/stat`.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) * 10.0
}

/// Runs `f` once to warm up, then `iters` times (`VOXREG_PROBE_ITERS` overrides it); prints
/// the median and fastest iteration's wall time and the mean process CPU time per iteration.
fn time(name: &str, iters: usize, mut f: impl FnMut()) {
    let iters = std::env::var("VOXREG_PROBE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(iters)
        .max(1);
    f();
    let c0 = cpu_ms();
    let mut walls: Vec<f64> = (0..iters)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let cpu = (cpu_ms() - c0) / iters as f64;
    walls.sort_by(f64::total_cmp);
    let (median, fastest) = (walls[iters / 2], walls[0]);
    println!(
        "{name}: wall median {median:.1} ms (fastest {fastest:.1}), cpu {cpu:.1} ms per iteration"
    );
}

fn main() {
    // The `voxreg` binary's allocation policy (`VOXREG_SYSTEM_MALLOC=1`: glibc's default).
    voxreg_framework::allocator::apply();
    let which = std::env::args().nth(1).unwrap_or_default();
    let var = |t: &Tensor| Var::from_tensor(t).expect("var");
    match which.as_str() {
        "warp_fwd" | "warp_fwd_bwd" | "warp_fwd_bwd_both" => {
            let img = uniform(&[1, 1, 128, 128, 128], 0.0, 1.0, 1);
            let ddf = uniform(&[1, 3, 128, 128, 128], -2.0, 2.0, 2);
            let gout = uniform(&[1, 1, 128, 128, 128], -1.0, 1.0, 3);
            let (iv, dv) = (var(&img), var(&ddf));
            time(&which, 10, || {
                let (i, d) = match which.as_str() {
                    "warp_fwd" => (&img, &ddf),
                    "warp_fwd_bwd" => (&img, dv.as_tensor()),
                    _ => (iv.as_tensor(), dv.as_tensor()),
                };
                let out = warp(i, d, Interp::Linear, Padding::Zeros).expect("warp");
                if which != "warp_fwd" {
                    backward_with(&out, &gout);
                }
            });
        }
        "conv_fwd" | "conv_fwd_bwd" | "conv_fwd_bwd_x" | "conv_fwd_bwd_w" => {
            let x = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 4);
            let w = uniform(&[16, 16, 3, 3, 3], -0.08, 0.08, 5);
            let g = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 6);
            let (xv, wv) = (var(&x), var(&w));
            time(&which, 5, || {
                let pad = [(1, 1); 3];
                let (xi, wi) = match which.as_str() {
                    "conv_fwd" => (&x, &w),
                    "conv_fwd_bwd_x" => (xv.as_tensor(), &w),
                    "conv_fwd_bwd_w" => (&x, wv.as_tensor()),
                    _ => (xv.as_tensor(), wv.as_tensor()),
                };
                let y = conv(xi, wi, None, &[1, 1, 1], &pad).expect("conv");
                if which != "conv_fwd" {
                    backward_with(&y, &g);
                }
            });
        }
        "conv7_fwd" | "conv7_fwd_bwd" => {
            // LocalNet's largest layers: 16 -> 16 channels, 7³ kernel, at 64³.
            let x = var(&uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 4));
            let w = var(&uniform(&[16, 16, 7, 7, 7], -0.02, 0.02, 5));
            let g = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 6);
            time(&which, 3, || {
                let pad = [(3, 3); 3];
                if which == "conv7_fwd" {
                    conv(
                        &x.as_tensor().detach(),
                        &w.as_tensor().detach(),
                        None,
                        &[1, 1, 1],
                        &pad,
                    )
                    .expect("conv");
                } else {
                    let y =
                        conv(x.as_tensor(), w.as_tensor(), None, &[1, 1, 1], &pad).expect("conv");
                    backward_with(&y, &g);
                }
            });
        }
        "conv_transpose_s1" => {
            let g = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 6);
            let w = uniform(&[16, 16, 3, 3, 3], -0.08, 0.08, 5);
            time(&which, 5, || {
                voxreg_framework::ops::conv_transpose(
                    &g,
                    &w,
                    None,
                    &[1, 1, 1],
                    &[(1, 1); 3],
                    &[0, 0, 0],
                )
                .expect("conv_transpose");
            });
        }
        "conv_fwd_then_transpose" => {
            // The passes of `conv_fwd_bwd_x` called directly, without candle's backward; with
            // `VOXREG_PROBE_ACCUMULATE` set, plus the two gradient accumulations that candle's
            // backward adds (the output's and the input's gradient: zeros, then add).
            let x = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 4);
            let w = uniform(&[16, 16, 3, 3, 3], -0.08, 0.08, 5);
            let g = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 6);
            time(&which, 5, || {
                let pad = [(1, 1); 3];
                let _y = conv(&x, &w, None, &[1, 1, 1], &pad).expect("conv");
                let dx = voxreg_framework::ops::conv_transpose(&g, &w, None, &[1, 1, 1], &pad, &[0, 0, 0])
                    .expect("conv_transpose");
                if std::env::var_os("VOXREG_PROBE_ACCUMULATE").is_some() {
                    let a = g.zeros_like().and_then(|z| z.add(&g)).expect("accumulate");
                    let b = dx.zeros_like().and_then(|z| z.add(&dx)).expect("accumulate");
                    drop((a, b));
                }
            });
        }
        "grad_accumulate" => {
            // What candle's backward pays per gradient of a (1,16,64³) tensor: a zero tensor
            // plus the gradient (`GradStore::or_insert`, then `add`).
            let g = uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 6);
            time(&which, 10, || {
                g.zeros_like().and_then(|z| z.add(&g)).expect("accumulate");
            });
        }
        "maxpool_k3s2_fwd_bwd" | "avgpool_k3s2_fwd_bwd" => {
            // Overlapping windows with padding: the separable path.
            let x = var(&uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 7));
            let g = uniform(&[1, 16, 32, 32, 32], -1.0, 1.0, 8);
            let pool = if which == "maxpool_k3s2_fwd_bwd" {
                max_pool
            } else {
                avg_pool
            };
            time(&which, 5, || {
                let y = pool(x.as_tensor(), &[3, 3, 3], &[2, 2, 2], &[(1, 1); 3]).expect("pool");
                backward_with(&y, &g);
            });
        }
        "maxpool_fwd_bwd" | "avgpool_fwd_bwd" => {
            let x = var(&uniform(&[1, 16, 64, 64, 64], -1.0, 1.0, 7));
            let g = uniform(&[1, 16, 32, 32, 32], -1.0, 1.0, 8);
            let pool = if which == "maxpool_fwd_bwd" {
                max_pool
            } else {
                avg_pool
            };
            time(&which, 10, || {
                let y = pool(x.as_tensor(), &[2, 2, 2], &[2, 2, 2], &[(0, 0); 3]).expect("pool");
                backward_with(&y, &g);
            });
        }
        "resize_fwd_bwd" => {
            let x = var(&uniform(&[1, 32, 32, 32, 32], -1.0, 1.0, 9));
            let g = uniform(&[1, 32, 64, 64, 64], -1.0, 1.0, 10);
            time(&which, 10, || {
                let y = resize(
                    x.as_tensor(),
                    &[64, 64, 64],
                    ResizeMode::Linear,
                    Align::HalfPixel,
                )
                .expect("resize");
                backward_with(&y, &g);
            });
        }
        "box9_fwd_bwd" => {
            let x = var(&uniform(&[1, 1, 128, 128, 128], 0.0, 1.0, 11));
            let g = uniform(&[1, 1, 128, 128, 128], -1.0, 1.0, 12);
            let k = rectangular_kernel(9);
            time(&which, 10, || {
                let y = separable_filter(x.as_tensor(), &k).expect("filter");
                backward_with(&y, &g);
            });
        }
        other => eprintln!(
            "unknown workload {other:?}: warp_fwd, warp_fwd_bwd, warp_fwd_bwd_both, conv_fwd, \
             conv_fwd_bwd, conv_fwd_bwd_x, conv_fwd_bwd_w, conv7_fwd, conv7_fwd_bwd, \
             conv_transpose_s1, conv_fwd_then_transpose, grad_accumulate, maxpool_fwd_bwd, avgpool_fwd_bwd, maxpool_k3s2_fwd_bwd, avgpool_k3s2_fwd_bwd, resize_fwd_bwd, box9_fwd_bwd"
        ),
    }
}
