//! Tiny datasets in DeepReg's on-disk layouts, generated at test time: paired, unpaired and
//! grouped data, as NIfTI files or HDF5 files, with label maps.
//!
//! Layouts (DeepReg's `docs/source/docs/dataset_loader.md`), per split folder `<root>/<split>`:
//!
//! | type | NIfTI | HDF5 |
//! | --- | --- | --- |
//! | paired | `{moving,fixed}_{images,labels}/<name>.nii.gz` | `{moving,fixed}_{images,labels}.h5`, key `<name>` |
//! | unpaired | `{images,labels}/<name>.nii.gz` | `{images,labels}.h5`, key `<name>` |
//! | grouped | `{images,labels}/<group>/<name>.nii.gz` | `{images,labels}.h5`, key `group-<group>-<name>` |
//!
//! Each image is a smooth bright ball on a dark background whose centre moves from image to
//! image; its labels are balls around the same centre (one channel per label, on a trailing
//! axis when there are several, as DeepReg stores them), so registration has something to do.

use std::fs;
use std::path::{Path, PathBuf};

use voxreg::component::Volume;
use voxreg::data::{write_h5, write_nifti};

use crate::util::repo_root;

/// DeepReg's data loader types (`dataset.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderType {
    /// Moving and fixed images paired by name.
    Paired,
    /// One pool of images, any two form a pair.
    Unpaired,
    /// Images in groups; pairs within (or across) groups.
    Grouped,
}

/// DeepReg's file formats (`dataset.<split>.format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One `.nii.gz` file per image.
    Nifti,
    /// One `.h5` file per kind, one dataset per image.
    H5,
}

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct TinyDataset {
    /// The loader type the layout is for.
    pub loader: LoaderType,
    /// The file format.
    pub format: Format,
    /// Labels per image: 0 writes no label files, 1 a 3D label, more a 4D one.
    pub labels: usize,
    /// Side of the moving (and unpaired / grouped) images, in voxels (cubes).
    pub size: usize,
    /// Side of paired fixed images (they may differ from the moving ones, as in DeepReg's
    /// test data; the loader resizes both).
    pub fixed_size: usize,
}

/// The split folders of a generated dataset, to point `dataset.<split>.dir` at.
pub struct SplitDirs {
    /// `<root>/train`.
    pub train: PathBuf,
    /// `<root>/valid`.
    pub valid: PathBuf,
    /// `<root>/test`.
    pub test: PathBuf,
}

/// Training pairs per split for paired data; images for unpaired data; groups for grouped
/// data (each of `GROUP_SIZE` images). Four training samples fill DeepReg's largest
/// documented batch (4).
const TRAIN_PAIRS: usize = 4;
const HELD_OUT_PAIRS: usize = 2;
const UNPAIRED_TRAIN_IMAGES: usize = 8;
const UNPAIRED_HELD_OUT_IMAGES: usize = 3;
const GROUP_SIZE: usize = 3;

impl TinyDataset {
    /// Writes train, valid and test splits under `root` and returns their folders.
    pub fn write(&self, root: &Path) -> SplitDirs {
        let dirs = SplitDirs {
            train: root.join("train"),
            valid: root.join("valid"),
            test: root.join("test"),
        };
        for (index, dir) in [&dirs.train, &dirs.valid, &dirs.test]
            .into_iter()
            .enumerate()
        {
            let train = index == 0;
            let seed = 100 * index;
            match self.loader {
                LoaderType::Paired => {
                    let count = if train { TRAIN_PAIRS } else { HELD_OUT_PAIRS };
                    self.write_paired(dir, count, seed);
                }
                LoaderType::Unpaired => {
                    let count = if train {
                        UNPAIRED_TRAIN_IMAGES
                    } else {
                        UNPAIRED_HELD_OUT_IMAGES
                    };
                    let names = (0..count).map(|i| (None, case_name(seed + i))).collect();
                    self.write_pool(dir, names, seed);
                }
                LoaderType::Grouped => {
                    let groups = if train { TRAIN_PAIRS } else { HELD_OUT_PAIRS };
                    let names = (0..groups)
                        .flat_map(|g| (0..GROUP_SIZE).map(move |i| (Some(g), i.to_string())))
                        .collect();
                    self.write_pool(dir, names, seed);
                }
            }
        }
        dirs
    }

    fn write_paired(&self, dir: &Path, count: usize, seed: usize) {
        for (side, size, offset) in [("moving", self.size, 0), ("fixed", self.fixed_size, 1)] {
            let (mut images, mut labels) = (Vec::new(), Vec::new());
            for pair in 0..count {
                let (image, label) = self.case(size, seed + 2 * pair + offset);
                images.push((case_name(seed + pair), image));
                labels.extend(label.map(|l| (case_name(seed + pair), l)));
            }
            self.write_kind(dir, &format!("{side}_images"), images);
            if !labels.is_empty() {
                self.write_kind(dir, &format!("{side}_labels"), labels);
            }
        }
    }

    /// Unpaired and grouped data: `images` and `labels`, names with an optional group.
    fn write_pool(&self, dir: &Path, names: Vec<(Option<usize>, String)>, seed: usize) {
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for (index, (group, name)) in names.into_iter().enumerate() {
            let key = match (self.format, group) {
                (_, None) => name,
                (Format::Nifti, Some(group)) => format!("group{group}/{name}"),
                (Format::H5, Some(group)) => format!("group-{group}-{name}"),
            };
            let (image, label) = self.case(self.size, seed + index);
            images.push((key.clone(), image));
            labels.extend(label.map(|l| (key, l)));
        }
        self.write_kind(dir, "images", images);
        if !labels.is_empty() {
            self.write_kind(dir, "labels", labels);
        }
    }

    fn write_kind(&self, dir: &Path, kind: &str, entries: Vec<(String, Volume)>) {
        fs::create_dir_all(dir).unwrap();
        match self.format {
            Format::H5 => write_h5(&dir.join(format!("{kind}.h5")), &entries).unwrap(),
            Format::Nifti => {
                for (name, volume) in entries {
                    let path = dir.join(kind).join(format!("{name}.nii.gz"));
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    write_nifti(&path, &volume).unwrap();
                }
            }
        }
    }

    /// One image of side `size` and its labels; `seed` moves the ball.
    fn case(&self, size: usize, seed: usize) -> (Volume, Option<Volume>) {
        let centre = size as f64 / 2.0 + (seed % 3) as f64 - 1.0;
        let radius = size as f64 / 4.0 + (seed % 2) as f64;
        let distance = |x: usize, y: usize, z: usize| {
            let d = |v: usize| v as f64 - centre;
            (d(x).powi(2) + d(y).powi(2) + (d(z) * 1.2).powi(2)).sqrt()
        };
        let voxels = || {
            (0..size)
                .flat_map(move |x| (0..size).flat_map(move |y| (0..size).map(move |z| (x, y, z))))
        };
        let image = voxels()
            .map(|(x, y, z)| {
                let r = distance(x, y, z) / radius;
                (100.0 * (-r * r).exp() + (x + 2 * y + 3 * z) as f64 % 5.0) as f32
            })
            .collect();
        let shape = vec![size; 3];
        let image = volume(image, shape.clone());
        if self.labels == 0 {
            return (image, None);
        }
        let label = voxels()
            .flat_map(|(x, y, z)| {
                let r = distance(x, y, z);
                (0..self.labels)
                    .map(move |l| f32::from(u8::from(r <= radius * (1.0 + l as f64 * 0.5))))
            })
            .collect();
        let mut label_shape = shape;
        if self.labels > 1 {
            label_shape.push(self.labels);
        }
        (image, Some(volume(label, label_shape)))
    }
}

fn case_name(index: usize) -> String {
    format!("case{index:06}")
}

fn volume(data: Vec<f32>, shape: Vec<usize>) -> Volume {
    let mut affine = [[0.0; 4]; 4];
    for (axis, row) in affine.iter_mut().enumerate() {
        row[axis] = 1.0;
    }
    Volume {
        data,
        shape,
        affine,
    }
}

/// The text of `configs/deepreg/<name>` (DeepReg's configs), with the `dir` of each split
/// (train, valid, test, in file order) replaced by `dirs` and, for HDF5 data, each split's
/// `format` set to `h5`. Nothing else changes. Both of DeepReg's layouts are understood:
/// `dir` inside each split, and v0.1's one `dir:` mapping of split to folder.
pub fn deepreg_config(name: &str, dirs: &SplitDirs, format: Format) -> String {
    let text = fs::read_to_string(repo_root().join("configs/deepreg").join(name)).unwrap();
    let mut targets = [&dirs.train, &dirs.valid, &dirs.test].into_iter();
    let mut lines = Vec::new();
    let mut dir_block: Option<usize> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if dir_block.is_some_and(|outer| indent.len() <= outer) {
            dir_block = None;
        }
        if trimmed == "dir:" {
            dir_block = Some(indent.len());
            lines.push(line.to_owned());
        } else if trimmed.starts_with("dir:") || dir_block.is_some() {
            let (key, _) = trimmed.split_once(':').expect("a key");
            let dir = targets.next().expect("at most three split folders");
            lines.push(format!("{indent}{key}: \"{}\"", dir.display()));
        } else if trimmed.starts_with("format:") && format == Format::H5 {
            lines.push(format!("{indent}format: \"h5\""));
        } else {
            lines.push(line.to_owned());
        }
    }
    assert!(targets.next().is_none(), "{name} names every split folder");
    lines.join("\n") + "\n"
}
