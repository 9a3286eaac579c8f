//! The PNG and TIFF readers: the first byte picks the extension, the rest is the file.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    voxreg_fuzz::start();
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let name = if mode % 2 == 0 {
        "image.png"
    } else {
        "image.tif"
    };
    let path = voxreg_fuzz::scratch_file(name, body);
    if let Ok(volume) = voxreg_data::read_image(&path, None) {
        let count: usize = volume.shape.iter().product();
        assert_eq!(count, volume.data.len(), "shape and pixel count disagree");
    }
});
