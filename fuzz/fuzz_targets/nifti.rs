//! The NIfTI header and voxel reader: the first byte picks `.nii` (the rest as is) or
//! `.nii.gz` (the rest gzip-compressed).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    voxreg_fuzz::read_one_file(
        data,
        ["image.nii", "image.nii.gz"],
        |gzipped, body| {
            if gzipped {
                voxreg_fuzz::gzip(body)
            } else {
                body.to_vec()
            }
        },
        voxreg_data::read_nifti,
    );
});
