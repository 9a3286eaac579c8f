//! Loading a checkpoint folder into a small model and its Adam state: the input is the
//! progress file, the weights and the optimiser state, cut by `voxreg_fuzz::PART_SEPARATOR`.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use voxreg::engine::checkpoint;
use voxreg::engine::Model;
use voxreg::prelude::Optimizer;

thread_local! {
    static TRAINING: RefCell<(Model, Box<dyn Optimizer>)> = RefCell::new(voxreg_fuzz::small_training());
}

fuzz_target!(|data: &[u8]| {
    voxreg_fuzz::start();
    let parts = voxreg_fuzz::parts(data);
    let dir = voxreg_fuzz::scratch_dir().join("ckpt-1");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("a scratch checkpoint folder");
    for (name, bytes) in [
        "progress.txt",
        "weights.safetensors",
        "optimizer.safetensors",
    ]
    .iter()
    .zip(&parts)
    {
        std::fs::write(dir.join(name), bytes).expect("writing a fuzz input file");
    }
    TRAINING.with(|training| {
        let (model, optimizer) = &mut *training.borrow_mut();
        if let Ok(progress) = checkpoint::load(&dir, model, optimizer.as_mut()) {
            assert!(
                progress.epoch_step <= progress.steps,
                "an impossible progress was accepted"
            );
        }
    });
});
