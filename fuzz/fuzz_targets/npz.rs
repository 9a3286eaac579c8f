//! The `.npy` reader and the `.npz` archive reader (array `vol`): the first byte picks which.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    voxreg_fuzz::start();
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let name = if mode % 2 == 0 {
        "array.npy"
    } else {
        "arrays.npz"
    };
    let path = voxreg_fuzz::scratch_file(name, body);
    if let Ok(volume) = voxreg_data::read_volume_file(&path, "vol") {
        let count: usize = volume.shape.iter().product();
        assert_eq!(count, volume.data.len(), "shape and element count disagree");
    }
});
