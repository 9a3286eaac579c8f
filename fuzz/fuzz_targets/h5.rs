//! The `h5` file loader's key and shape handling: an HDF5 file with fuzzed dataset names,
//! shapes (some declared huge but chunked, so the file stays small), element types and
//! groups, opened as DeepReg's `images.h5` (grouped or not), every image's shape and voxels
//! read.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use voxreg::prelude::FileLoaderConfig;

#[derive(Arbitrary, Debug)]
enum Element {
    F32,
    F64,
    U8,
    I64,
}

#[derive(Arbitrary, Debug)]
struct Entry {
    key: String,
    dims: Vec<u8>,
    /// Multiplies every dimension by 100 000 (chunked, nothing written).
    huge: bool,
    element: Element,
    /// Puts the dataset inside a group of this name instead of at the root.
    group: Option<String>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    entries: Vec<Entry>,
    grouped: bool,
}

fn add(file: &hdf5::File, entry: &Entry) -> hdf5::Result<()> {
    let shape: Vec<usize> = entry
        .dims
        .iter()
        .take(5)
        .map(|&d| usize::from(d % 9) * if entry.huge { 100_000 } else { 1 })
        .collect();
    let parent = match &entry.group {
        Some(name) => file.create_group(name)?,
        None => file.group("/")?,
    };
    // A shape whose element count overflows cannot be written with the hdf5 crate (its chunk
    // arithmetic overflows); the reader's own checked arithmetic is fuzzed with the rest.
    let Some(count) = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
        return Ok(());
    };
    macro_rules! write {
        ($t:ty) => {{
            let builder = parent.new_dataset::<$t>().shape(shape.as_slice());
            if entry.huge || count > 4096 {
                builder
                    .chunk(shape.iter().map(|&d| d.clamp(1, 8)).collect::<Vec<_>>())
                    .create(entry.key.as_str())?;
            } else {
                let values: Vec<$t> = (0..count).map(|i| (i % 251) as $t).collect();
                builder.create(entry.key.as_str())?.write_raw(&values)?;
            }
        }};
    }
    match entry.element {
        Element::F32 => write!(f32),
        Element::F64 => write!(f64),
        Element::U8 => write!(u8),
        Element::I64 => write!(i64),
    }
    Ok(())
}

fuzz_target!(|input: Input| {
    voxreg_fuzz::start();
    let dir = voxreg_fuzz::scratch_dir();
    let path = dir.join("images.h5");
    let _ = std::fs::remove_file(&path);
    {
        let Ok(file) = hdf5::File::create(&path) else {
            return;
        };
        for entry in input.entries.iter().take(4) {
            let _ = add(&file, entry);
        }
    }
    let Ok(loader) = voxreg_data::H5Format::default().open(dir, "images", input.grouped) else {
        return;
    };
    for index in 0..loader.ids().len() {
        let shape = loader.shape(index);
        if let Ok(volume) = loader.load(index) {
            assert_eq!(
                shape.ok().as_ref(),
                Some(&volume.shape),
                "shape() and load() disagree"
            );
        }
    }
});
