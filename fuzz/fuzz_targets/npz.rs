//! The `.npy` reader and the `.npz` archive reader (array `vol`): the first byte picks which.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    voxreg_fuzz::read_one_file(
        data,
        ["array.npy", "arrays.npz"],
        |_, body| body.to_vec(),
        |path| voxreg_data::read_volume_file(path, "vol"),
    );
});
