//! One loss workload of `benches/losses.rs` per process, for peak-RSS and per-phase timing:
//! `loss_probe <lncc|bending> [iterations]` prints the forward and backward wall time of each
//! iteration. Peak RSS: run it under `/usr/bin/time -v`.

use std::time::Instant;

use voxreg_framework::candle::{Device, Tensor, Var};
use voxreg_framework::prelude::*;
use voxreg_losses::{BendingConfig, LnccConfig, LnccKernel};

type Error = Box<dyn std::error::Error>;

/// One forward + backward iteration, returning the forward and backward wall time in seconds.
type Iteration = Box<dyn Fn() -> Result<(f64, f64), Error>>;

fn main() -> Result<(), Error> {
    // The `voxreg` binary's allocation policy (`VOXREG_SYSTEM_MALLOC=1`: glibc's default).
    voxreg_framework::allocator::apply();
    let args: Vec<String> = std::env::args().collect();
    let workload = args.get(1).map(String::as_str).unwrap_or("lncc");
    let iterations: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let device = Device::Cpu;
    let size = 128;
    let run: Iteration = match workload {
        "lncc" => {
            let lncc = LnccConfig {
                kernel_size: 9,
                kernel_type: LnccKernel::Rectangular,
                smooth_nr: 1e-5,
                smooth_dr: 1e-5,
            }
            .build(3)?;
            let fixed = Tensor::rand(0f32, 1.0, (1, 1, size, size, size), &device)?;
            let warped = Var::rand(0f32, 1.0, (1, 1, size, size, size), &device)?;
            Box::new(move || {
                let start = Instant::now();
                let loss = lncc.loss(warped.as_tensor(), Some(&fixed))?.sum_all()?;
                let forward = start.elapsed().as_secs_f64();
                loss.backward()?;
                Ok((forward, start.elapsed().as_secs_f64() - forward))
            })
        }
        "bending" => {
            let bending = BendingConfig {}.build(3)?;
            let ddf = Var::randn(0f32, 1.0, (1, 3, size, size, size), &device)?;
            Box::new(move || {
                let start = Instant::now();
                let loss = bending.loss(ddf.as_tensor(), None)?.sum_all()?;
                let forward = start.elapsed().as_secs_f64();
                loss.backward()?;
                Ok((forward, start.elapsed().as_secs_f64() - forward))
            })
        }
        other => return Err(format!("unknown workload {other}: lncc or bending").into()),
    };
    for _ in 0..iterations {
        let (forward, backward) = run()?;
        println!(
            "{workload}: forward {:.1} ms, backward {:.1} ms",
            forward * 1e3,
            backward * 1e3
        );
    }
    Ok(())
}
