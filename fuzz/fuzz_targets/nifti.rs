//! The NIfTI header and voxel reader: the first byte picks `.nii` (the rest as is) or
//! `.nii.gz` (the rest gzip-compressed).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    voxreg_fuzz::start();
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let path = if mode % 2 == 0 {
        voxreg_fuzz::scratch_file("image.nii", body)
    } else {
        voxreg_fuzz::scratch_file("image.nii.gz", &voxreg_fuzz::gzip(body))
    };
    if let Ok(volume) = voxreg_data::read_nifti(&path) {
        let count: usize = volume.shape.iter().product();
        assert_eq!(count, volume.data.len(), "shape and voxel count disagree");
    }
});
