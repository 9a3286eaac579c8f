//! Built-in data components with DeepReg's names and keys: data loaders (`paired`,
//! `unpaired`, `grouped`), file formats (`nifti`, `h5`, `npz`, `image`) and augmentations
//! (`affine`, `ddf`).

mod augmentations;
mod file_loaders;
mod loaders;
pub mod preprocess;
pub mod synthetic;
pub mod synthetic_atlalign;
pub mod synthetic_tiles;

pub use augmentations::{AffineAugmentation, DdfAugmentation};
pub use file_loaders::{
    read_image, read_nifti, read_npz, read_volume_file, write_h5, write_nifti, write_npy,
    write_npz, write_volume_file, FileKind, H5Format, NiftiFormat, NpzFormat, RasterFormat, LUMA,
};
pub use loaders::{
    write_atlalign, AtlalignLoader, AtlalignSamples, GroupedLoader, IntraGroupOption, PairedLoader,
    SampleIndexes, SampleLabel, TilesLoader, UnpairedLoader,
};
