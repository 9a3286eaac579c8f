//! Data loaders (`dataset.type`): which moving/fixed pairs an epoch holds, and loading them.

mod atlalign;
mod atlalign_file;
mod config;
mod grouped;
mod images;
mod paired;
mod pairs;
mod sampling;
mod tile_origins;
mod tiles;
mod unpaired;

pub use atlalign::{AtlalignLoader, SampleIndexes};
pub use atlalign_file::{write_atlalign, AtlalignSamples};
pub use config::{GroupedLoader, IntraGroupOption, PairedLoader, SampleLabel, UnpairedLoader};
pub use tiles::TilesLoader;

#[cfg(test)]
mod tests;
