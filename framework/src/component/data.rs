//! Data: file loaders read volumes; data loaders sample moving/fixed pairs from them.

use std::fmt::{self, Debug};
use std::path::PathBuf;

use super::{pair_decls, ComponentError, Decl};

/// A volume as stored on disk, before resizing or normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    /// Intensities in C order over `shape`, as f32 (scaling from the header applied).
    pub data: Vec<f32>,
    /// The array shape: the spatial axes, then one trailing axis of labels for 4D labels.
    pub shape: Vec<usize>,
    /// Voxel-to-world (mm) affine from the file's header; identity when the format has none.
    pub affine: [[f64; 4]; 4],
}

/// Identifies one image in a dataset: its group (grouped data) and its name (file name
/// without extension, or H5 key).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageId {
    /// The group, for grouped data.
    pub group: Option<String>,
    /// The name within the group or folder.
    pub name: String,
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(group) => write!(f, "{group}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The YAML config of a file format (`dataset.<split>.format`), selected by name (`nifti`,
/// `h5`, …).
#[typetag::serialize(tag = "name")]
pub trait FileLoaderConfig: Debug + Send + Sync {
    /// Opens the files of one kind (`moving_images`, `images`, `labels`, …) under `dir`.
    /// `grouped` asks for the grouped layout (one folder or key prefix per group).
    fn open(
        &self,
        dir: &std::path::Path,
        kind: &str,
        grouped: bool,
    ) -> Result<Box<dyn FileLoader>, ComponentError>;

    /// Whether `dir` holds any data of `kind` in this format (used to treat a dataset without
    /// label files as unlabelled). Defaults to whether opening it succeeds.
    fn has(&self, dir: &std::path::Path, kind: &str) -> bool {
        self.open(dir, kind, false).is_ok()
    }
}

/// An opened set of volumes.
pub trait FileLoader: Send + Sync {
    /// The ids of the volumes, in a fixed (sorted) order; indices refer to this order.
    fn ids(&self) -> &[ImageId];

    /// Reads volume `index`. Errors name the file (and key) that failed.
    fn load(&self, index: usize) -> Result<Volume, ComponentError>;

    /// The array shape of volume `index`, without reading its voxels where the format
    /// allows (loaders use it to count labels up front). Defaults to loading the volume.
    fn shape(&self, index: usize) -> Result<Vec<usize>, ComponentError> {
        Ok(self.load(index)?.shape)
    }
}

/// Moving and fixed image shapes after preprocessing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageShapes {
    /// Spatial shape of moving images.
    pub moving: Vec<usize>,
    /// Spatial shape of fixed images.
    pub fixed: Vec<usize>,
}

/// Which part of the dataset is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training data: sampled randomly each epoch.
    Train,
    /// Validation data: fixed sampling.
    Valid,
    /// Test data: fixed sampling.
    Test,
}

impl Split {
    /// The split's key in the `dataset` section.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

/// Where one split's data lives and how to read it.
#[derive(Debug)]
pub struct SplitSource<'a> {
    /// Which split.
    pub split: Split,
    /// The data directories (several are concatenated).
    pub dirs: &'a [PathBuf],
    /// The file format.
    pub format: &'a dyn FileLoaderConfig,
    /// Whether to load labels.
    pub labeled: bool,
}

/// One sample of an epoch: which images (and label index) make the pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleRef {
    /// Index of the moving image in its file loader.
    pub moving: usize,
    /// Index of the fixed image in its file loader.
    pub fixed: usize,
    /// Index of the label pair, for labelled data.
    pub label: Option<usize>,
}

/// A loaded pair: images resized to the configured shapes and normalised to `[0, 1]`.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Which pair this is.
    pub reference: SampleRef,
    /// Ids of the moving and fixed images (for output names and metrics rows).
    pub ids: (ImageId, ImageId),
    /// Moving image, C order over the moving shape.
    pub moving_image: Vec<f32>,
    /// Fixed image, C order over the fixed shape.
    pub fixed_image: Vec<f32>,
    /// Moving label (one channel), if labelled.
    pub moving_label: Option<Vec<f32>>,
    /// Fixed label (one channel), if labelled.
    pub fixed_label: Option<Vec<f32>>,
    /// The fixed image's voxel-to-world affine, so outputs are written in its space.
    pub fixed_affine: [[f64; 4]; 4],
    /// Further tensors the loader provides (a ground-truth field, …), each declared as in
    /// [`DataLoaderConfig::provides`] with its shape without the batch axis and its values
    /// in C order.
    pub extra: Vec<(Decl, Vec<usize>, Vec<f32>)>,
}

/// The YAML config of a data loader (`dataset.type` plus the dataset's other top-level
/// keys, e.g. `moving_image_shape`).
#[typetag::serialize(tag = "name")]
pub trait DataLoaderConfig: Debug + Send + Sync {
    /// The moving and fixed shapes images are resized to.
    fn image_shapes(&self) -> ImageShapes;

    /// The tensors each batch holds: by default DeepReg's moving and fixed images and, for
    /// `labeled` data, their labels. A loader that provides more (e.g. `true_ddf`) declares
    /// it here and fills [`Sample::extra`].
    fn provides(&self, labeled: bool) -> Vec<Decl> {
        pair_decls(labeled)
    }

    /// Opens one split of the dataset.
    fn build(&self, source: &SplitSource<'_>) -> Result<Box<dyn DataLoader>, ComponentError>;
}

/// A built data loader for one split.
pub trait DataLoader: Send + Sync {
    /// The samples of epoch `epoch`, in order. Training splits draw them from `seed` and
    /// `epoch` (same inputs, same samples); validation and test splits ignore both.
    fn epoch(&self, epoch: u64, seed: u64) -> Vec<SampleRef>;

    /// Loads and preprocesses one sample.
    fn load(&self, sample: &SampleRef) -> Result<Sample, ComponentError>;
}
