//! The PNG and TIFF readers: the first byte picks the extension, the rest is the file.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    voxreg_fuzz::read_one_file(
        data,
        ["image.png", "image.tif"],
        |_, body| body.to_vec(),
        |path| voxreg_data::read_image(path, None),
    );
});
