//! DeepReg's per-pair prediction outputs, written by each tensor's declared kind: for each
//! pair a folder with every image and field (the moving, fixed and predicted-fixed images,
//! the DDF, the DVF, and any other a method declares, e.g. `inv/ddf`) and the affine
//! parameters (`theta` as `affine.txt`), and per label a `label_<j>` folder with every
//! label; each array as NIfTI (`<name>.nii.gz`, in the fixed image's space) and/or PNG
//! slices (`<name>/depth<k>_<name>.png` for every slice of the last axis). A prefixed name
//! (`inv/ddf`, `stage.0/ddf`) goes into a subfolder named by its sanitised prefix.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use voxreg::candle::Tensor;
use voxreg::component::{ImageId, Kind, SampleRef, Volume};
use voxreg::engine::PairTensors;

use super::atomic::write_text;

use super::image_files::write_png;
use super::raster::{slice_raster, Layout, Window};

/// Which files to write for each array.
#[derive(Clone, Copy, Debug)]
pub struct Formats {
    /// `<name>.nii.gz`.
    pub nifti: bool,
    /// `<name>/depth<k>_<name>.png`.
    pub png: bool,
    /// `<name>_xy.npy` for every 2D displacement field, in atlalign's convention:
    /// `(h, w, 2)` float32 with the column displacement `Δx` first (what atlalign's
    /// `DisplacementField.from_file` reads).
    pub atlalign: bool,
}

/// How an array's PNG slices are scaled to 8 bits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scaling {
    /// Min-max over the whole array (images, fields).
    MinMax,
    /// `[0, 1]` as it is (labels, whose values already lie there).
    Unit,
}

/// Writes the outputs of each sample under one root folder.
pub struct PairWriter {
    root: PathBuf,
    formats: Formats,
    /// Pair folders written so far.
    pairs: HashSet<String>,
    /// Samples (pair folder, label) written so far.
    samples: HashSet<(String, Option<usize>)>,
    /// Each pair folder with its moving and fixed image ids, in the order written.
    index: Vec<(String, ImageId, ImageId)>,
}

/// Keeps ASCII letters, digits, `-` and `_`, replaces anything else with `_`, and keeps at
/// most 64 characters, so an id is a safe folder-name part.
pub fn sanitise(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// A tensor name split into its sanitised prefix folder (`inv/ddf` → `inv`, `stage.0/ddf`
/// → `stage_0`) and its sanitised array name.
fn split_name(name: &str) -> (Option<String>, String) {
    match name.rsplit_once('/') {
        Some((prefix, array)) => (
            Some(
                prefix
                    .split('/')
                    .map(sanitise)
                    .collect::<Vec<_>>()
                    .join("/"),
            ),
            sanitise(array),
        ),
        None => (None, sanitise(name)),
    }
}

/// DeepReg's pair indices: the pair's index (`3`), or the moving and fixed image indices
/// when they differ (`1_4`).
pub fn pair_indices(reference: &SampleRef) -> String {
    if reference.moving == reference.fixed {
        reference.moving.to_string()
    } else {
        format!("{}_{}", reference.moving, reference.fixed)
    }
}

/// A pair's folder name as DeepReg's predict names it: `pair_<indices>` (see
/// [`pair_indices`]), e.g. `pair_3`, `pair_1_4`. The image ids are listed beside the
/// folders in `pairs.csv` (see [`PairWriter::write_index`]).
pub fn pair_folder_name(reference: &SampleRef) -> String {
    format!("pair_{}", pair_indices(reference))
}

/// `(C, *spatial)` as a volume in DeepReg's layout: `(*spatial)` for one channel,
/// `(*spatial, C)` otherwise (a DDF is `(d1, d2, d3, 3)`).
fn channel_last_volume(tensor: &Tensor, affine: [[f64; 4]; 4]) -> anyhow::Result<Volume> {
    let dims = tensor.dims().to_vec();
    let Some((&channels, spatial)) = dims.split_first() else {
        bail!("an output has no axes");
    };
    let mut order: Vec<usize> = (1..dims.len()).collect();
    order.push(0);
    let data = tensor
        .permute(order)?
        .flatten_all()?
        .to_vec1::<f32>()
        .context("reading an output")?;
    let mut shape = spatial.to_vec();
    if channels != 1 {
        shape.push(channels);
    }
    Ok(Volume {
        data,
        shape,
        affine,
    })
}

impl PairWriter {
    /// A writer into `root` (which must exist).
    pub fn new(root: &Path, formats: Formats) -> Self {
        PairWriter {
            root: root.to_owned(),
            formats,
            pairs: HashSet::new(),
            samples: HashSet::new(),
            index: Vec::new(),
        }
    }

    /// Writes `path` (CSV, atomically): one row per pair folder written, with columns
    /// `pair_folder`, `moving` and `fixed` (the image ids), sorted by folder name, so
    /// DeepReg's index-named folders can be traced back to their files.
    pub fn write_index(&self, path: &Path) -> anyhow::Result<()> {
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(["pair_folder", "moving", "fixed"])?;
        let mut rows: Vec<&(String, ImageId, ImageId)> = self.index.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        for (folder, moving, fixed) in rows {
            csv.write_record([folder.clone(), moving.to_string(), fixed.to_string()])?;
        }
        let bytes = csv
            .into_inner()
            .map_err(|e| anyhow::anyhow!("{}", e.error()))?;
        write_text(path, &String::from_utf8(bytes)?)
    }

    /// Writes one sample's outputs and returns its pair folder. The pair's own arrays are
    /// written with its first label; a sample seen before is an error (DeepReg's "Sample
    /// is repeated").
    pub fn write(&mut self, tensors: &PairTensors) -> anyhow::Result<PathBuf> {
        let name = pair_folder_name(&tensors.reference);
        let pair_dir = self.root.join(&name);
        let label = tensors.reference.label;
        if !self.samples.insert((name.clone(), label)) {
            bail!("sample {name} (label {label:?}) appears twice in the split: is the dataset repeated?");
        }
        let affine = tensors.fixed_affine;
        let first = self.pairs.insert(name.clone());
        if first {
            self.index
                .push((name, tensors.ids.0.clone(), tensors.ids.1.clone()));
        }
        for (decl, tensor) in tensors.tensors.iter() {
            let (prefix, array) = split_name(&decl.name);
            let folder = |dir: PathBuf| match &prefix {
                Some(prefix) => dir.join(prefix),
                None => dir,
            };
            match decl.kind {
                Kind::Image | Kind::Field | Kind::Velocity if first => {
                    let dir = folder(pair_dir.clone());
                    self.write_array(&dir, &array, tensor, affine, Scaling::MinMax)?;
                    if decl.kind == Kind::Field && self.formats.atlalign && tensor.rank() == 3 {
                        write_atlalign_field(&dir.join(format!("{array}_xy.npy")), tensor)?;
                    }
                }
                Kind::Label => {
                    if let Some(label) = label {
                        let dir = folder(pair_dir.join(format!("label_{label}")));
                        self.write_array(&dir, &array, tensor, affine, Scaling::Unit)?;
                    }
                }
                Kind::Affine if first => {
                    let file = if array == "theta" {
                        "affine.txt".to_owned()
                    } else {
                        format!("{array}.txt")
                    };
                    write_theta(&folder(pair_dir.clone()).join(file), tensor)?;
                }
                _ => {}
            }
        }
        Ok(pair_dir)
    }

    fn write_array(
        &self,
        dir: &Path,
        name: &str,
        tensor: &Tensor,
        affine: [[f64; 4]; 4],
        scaling: Scaling,
    ) -> anyhow::Result<()> {
        if !(self.formats.nifti || self.formats.png) {
            return Ok(());
        }
        let volume = channel_last_volume(tensor, affine)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if self.formats.nifti {
            voxreg::data::write_nifti(&dir.join(format!("{name}.nii.gz")), &volume)?;
        }
        if self.formats.png {
            write_slices(&dir.join(name), name, &volume, tensor.dims()[0], scaling)?;
        }
        Ok(())
    }
}

/// A 2D DDF `(2, h, w)` (row component first) as atlalign stores fields: `(h, w, 2)` with the
/// column displacement first, float32 `.npy`.
fn write_atlalign_field(path: &Path, ddf: &Tensor) -> anyhow::Result<()> {
    let dims = ddf.dims();
    if dims.len() != 3 || dims[0] != 2 {
        bail!("a 2D displacement field is (2, h, w), got {dims:?}");
    }
    let (h, w) = (dims[1], dims[2]);
    let xy = Tensor::cat(&[&ddf.narrow(0, 1, 1)?, &ddf.narrow(0, 0, 1)?], 0)?;
    let data = xy
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()
        .context("reading a field")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    voxreg::data::write_npy(
        path,
        &Volume {
            data,
            shape: vec![h, w, 2],
            affine: [[0.0; 4]; 4],
        },
    )?;
    Ok(())
}

/// Every slice of the last spatial axis of `volume` (`channels` values per voxel, last) as
/// `<dir>/depth<k>_<name>.png`: grey for one channel, RGB for a 3D field, and RGB with an
/// empty blue channel for a 2D field; a 2D array is one slice.
fn write_slices(
    dir: &Path,
    name: &str,
    volume: &Volume,
    channels: usize,
    scaling: Scaling,
) -> anyhow::Result<()> {
    let spatial = &volume.shape[..volume.shape.len() - usize::from(channels != 1)];
    let spatial = match *spatial {
        [d0, d1] => [d0, d1, 1],
        [d0, d1, d2] => [d0, d1, d2],
        _ => bail!(
            "{name} has shape {:?}: PNG slices need 2 or 3 spatial axes",
            volume.shape
        ),
    };
    let data = match channels {
        1 | 3 => volume.data.clone(),
        2 => volume
            .data
            .chunks(2)
            .flat_map(|v| [v[0], v[1], 0.0])
            .collect(),
        other => bail!("{name} has {other} channels: PNG slices show 1, 2 or 3"),
    };
    let layout = Layout {
        spatial,
        channels: if channels == 1 { 1 } else { 3 },
    };
    let window = match scaling {
        Scaling::MinMax => Window::min_max(&volume.data),
        Scaling::Unit => Window { lo: 0.0, hi: 1.0 },
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for depth in 0..layout.depth() {
        let raster = slice_raster(&data, layout, depth, window)?;
        write_png(&dir.join(format!("depth{depth}_{name}.png")), &raster, &[])?;
    }
    Ok(())
}

/// The affine parameters `(ndim + 1, ndim)` as DeepReg's `affine.txt`: one row per line,
/// values separated by commas.
fn write_theta(path: &Path, theta: &Tensor) -> anyhow::Result<()> {
    let rows = theta
        .to_vec2::<f32>()
        .context("reading the affine parameters")?;
    let text: String = rows
        .iter()
        .map(|row| {
            let values: Vec<String> = row.iter().map(|v| format!("{v:e}")).collect();
            values.join(",") + "\n"
        })
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_text(path, &text)
}

#[cfg(test)]
mod tests {
    use voxreg::candle::Device;
    use voxreg::component::{Grid, Tensors};

    use super::*;

    fn id(group: Option<&str>, name: &str) -> ImageId {
        ImageId {
            group: group.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    #[test]
    fn folder_names_are_deepregs_indices() {
        let paired = SampleRef {
            moving: 3,
            fixed: 3,
            label: Some(1),
        };
        assert_eq!(pair_folder_name(&paired), "pair_3");
        let unpaired = SampleRef {
            moving: 1,
            fixed: 4,
            label: None,
        };
        assert_eq!(pair_folder_name(&unpaired), "pair_1_4");
        assert_eq!(
            split_name("stage.0/ddf"),
            (Some("stage_0".to_owned()), "ddf".to_owned())
        );
        assert_eq!(sanitise(&"é".repeat(100)).len(), 64);
    }

    #[test]
    fn channels_move_last_as_deepreg_saves_fields() {
        // (2 channels, 1, 3): channel c at voxel j holds 10·c + j.
        let tensor =
            Tensor::from_vec(vec![0f32, 1., 2., 10., 11., 12.], (2, 1, 3), &Device::Cpu).unwrap();
        let affine = [
            [2.0, 0.0, 0.0, 0.0],
            [0.0; 4],
            [0.0; 4],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let volume = channel_last_volume(&tensor, affine).unwrap();
        assert_eq!(volume.shape, vec![1, 3, 2]);
        assert_eq!(volume.data, vec![0., 10., 1., 11., 2., 12.]);
        assert_eq!(volume.affine, affine);
        let single = Tensor::zeros((1, 2, 2, 2), voxreg::candle::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            channel_last_volume(&single, affine).unwrap().shape,
            vec![2, 2, 2]
        );
    }

    fn sample(label: usize) -> PairTensors {
        let zeros = |c: usize| {
            Tensor::zeros((c, 2, 2, 2), voxreg::candle::DType::F32, &Device::Cpu).unwrap()
        };
        let mut tensors = Tensors::new();
        tensors.put("moving_image", Kind::Image, Grid::Fixed, zeros(1));
        tensors.put("fixed_image", Kind::Image, Grid::Fixed, zeros(1));
        tensors.put("moving_label", Kind::Label, Grid::Fixed, zeros(1));
        tensors.put("fixed_label", Kind::Label, Grid::Fixed, zeros(1));
        tensors.put("ddf", Kind::Field, Grid::Fixed, zeros(3));
        let theta = Tensor::zeros((4, 3), voxreg::candle::DType::F32, &Device::Cpu).unwrap();
        tensors.put("theta", Kind::Affine, Grid::None, theta);
        tensors.put("pred_fixed_image", Kind::Image, Grid::Fixed, zeros(1));
        tensors.put("pred_fixed_label", Kind::Label, Grid::Fixed, zeros(1));
        tensors.put("inv/ddf", Kind::Field, Grid::Moving, zeros(3));
        tensors.put("lambda", Kind::Scalar, Grid::None, zeros(1));
        PairTensors {
            reference: SampleRef {
                moving: 0,
                fixed: 0,
                label: Some(label),
            },
            ids: (id(None, "a"), id(None, "a")),
            fixed_affine: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            tensors,
        }
    }

    #[test]
    fn each_label_gets_its_folder_and_a_repeated_sample_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = PairWriter::new(
            dir.path(),
            Formats {
                nifti: true,
                png: false,
                atlalign: false,
            },
        );
        let pair = writer.write(&sample(0)).unwrap();
        assert_eq!(pair, dir.path().join("pair_0"));
        assert_eq!(writer.write(&sample(1)).unwrap(), pair);
        let mut names: Vec<String> = std::fs::read_dir(&pair)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "affine.txt",
                "ddf.nii.gz",
                "fixed_image.nii.gz",
                "inv",
                "label_0",
                "label_1",
                "moving_image.nii.gz",
                "pred_fixed_image.nii.gz"
            ]
        );
        assert!(pair.join("label_1/pred_fixed_label.nii.gz").is_file());
        assert!(
            pair.join("inv/ddf.nii.gz").is_file(),
            "a declared field gets its file"
        );
        let theta = std::fs::read_to_string(pair.join("affine.txt")).unwrap();
        assert_eq!(theta, "0e0,0e0,0e0\n".repeat(4));
        let error = writer.write(&sample(1)).unwrap_err().to_string();
        assert!(error.contains("appears twice"), "{error}");
    }
}
