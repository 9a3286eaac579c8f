//! One kind of volume (`moving_images`, `labels`, …) across every directory of a split.

use std::path::PathBuf;

use voxreg_framework::prelude::*;

/// The volumes of one kind from several directories, in directory order, each directory's
/// in its loader's (sorted) order.
pub(crate) struct ImageSet {
    kind: String,
    loaders: Vec<Box<dyn FileLoader>>,
    /// Per global index: (loader, local index).
    index: Vec<(usize, usize)>,
    ids: Vec<ImageId>,
}

impl ImageSet {
    /// Opens `kind` in every directory.
    pub(crate) fn open(
        format: &dyn FileLoaderConfig,
        dirs: &[PathBuf],
        kind: &str,
        grouped: bool,
    ) -> Result<Self, ComponentError> {
        let mut set = ImageSet {
            kind: kind.to_owned(),
            loaders: Vec::new(),
            index: Vec::new(),
            ids: Vec::new(),
        };
        for dir in dirs {
            let loader = format.open(dir, kind, grouped)?;
            for (local, id) in loader.ids().iter().enumerate() {
                set.index.push((set.loaders.len(), local));
                set.ids.push(id.clone());
            }
            set.loaders.push(loader);
        }
        Ok(set)
    }

    /// What this set holds (`moving_images`, …).
    pub(crate) fn kind(&self) -> &str {
        &self.kind
    }

    /// Ids in global order.
    pub(crate) fn ids(&self) -> &[ImageId] {
        &self.ids
    }

    /// Number of volumes.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Reads volume `index`.
    pub(crate) fn load(&self, index: usize) -> Result<Volume, ComponentError> {
        let (loader, local) = self.locate(index)?;
        self.loaders[loader].load(local)
    }

    /// The array shape of volume `index`.
    pub(crate) fn shape(&self, index: usize) -> Result<Vec<usize>, ComponentError> {
        let (loader, local) = self.locate(index)?;
        self.loaders[loader].shape(local)
    }

    /// The position, in the split's directory list, of the directory volume `index` is in.
    pub(crate) fn directory(&self, index: usize) -> Result<usize, ComponentError> {
        Ok(self.locate(index)?.0)
    }

    fn locate(&self, index: usize) -> Result<(usize, usize), ComponentError> {
        self.index.get(index).copied().ok_or_else(|| {
            ComponentError::invalid(
                format!("{} set", self.kind),
                format!("no volume {index} (there are {})", self.len()),
            )
        })
    }

    /// Errors unless `other` holds exactly the same ids (names must agree between images and
    /// labels, and between moving and fixed images of paired data).
    pub(crate) fn require_same_ids(
        &self,
        other: &ImageSet,
        dirs: &[PathBuf],
    ) -> Result<(), ComponentError> {
        if self.ids == other.ids {
            return Ok(());
        }
        let only = |a: &ImageSet, b: &ImageSet| -> Vec<String> {
            a.ids
                .iter()
                .filter(|id| !b.ids.contains(id))
                .take(5)
                .map(ToString::to_string)
                .collect()
        };
        let message = format!(
            "{} and {} must hold the same names; only in {}: {:?}; only in {}: {:?}",
            self.kind,
            other.kind,
            self.kind,
            only(self, other),
            other.kind,
            only(other, self)
        );
        Err(ComponentError::Data {
            path: dirs.first().cloned().unwrap_or_default(),
            message,
        })
    }
}
