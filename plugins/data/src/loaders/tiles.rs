//! `tiles`: tiles of microscopy mosaics, each registered to a neighbour on its grid (the
//! DLIR notebook's data). The images sit in DeepReg's unpaired layout (`<dir>/images/`);
//! each file name carries the tile's grid row and column, e.g. `Tp26_Y000_X001_040.tif`.

use std::collections::HashMap;

use regex::Regex;
use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

use super::config::{
    check_shape, data_error, labeled, require_equal_label_counts, sample_label, SampleLabel,
};
use super::pairs::{Pairs, Side};
use super::sampling::{epoch_rng, shuffled};
use super::tile_origins::TileOrigins;
use rand::seq::IndexedRandom;

const NAME: &str = "data_loader `tiles`";

/// The notebook's pattern: `Y<row>_X<column>`.
fn default_pattern() -> String {
    r"Y(\d+)_X(\d+)".to_owned()
}

/// `tiles`: grid tiles paired with their grid neighbours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TilesLoader {
    /// Shape every tile is resized to (2 or 3 axes).
    pub image_shape: Vec<usize>,
    /// A regular expression found in each file name (without extension) whose first two
    /// capture groups are the tile's row and column (non-negative integers). The name with
    /// the match removed names the mosaic: tiles pair only within their mosaic.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// Diagonal tiles count as neighbours too (8 neighbours instead of 4).
    #[serde(default)]
    pub diagonal: bool,
    /// Resize keeping the aspect ratio: to the largest shape inside `image_shape`, the rest
    /// zero-padded after the data (a 512 × 1024 tile with `image_shape: [256, 256]` becomes
    /// 128 × 256 plus 128 rows of zeros). Off: stretch to `image_shape`.
    #[serde(default)]
    pub keep_aspect: bool,
    /// A CSV file in each data folder giving every tile's origin in the scanned image
    /// (columns `file`, `origin_row`, `origin_column`, as `voxreg dataset tiles` writes
    /// `tiles.csv`; 2D tiles only). The loader then provides each pair's true displacement
    /// field `true_ddf`, so evaluation reports the field error (`ddf_error`, voxels) and a
    /// `field` loss can use it.
    #[serde(default)]
    pub origins: Option<String>,
    /// Label sampling for training.
    #[serde(default)]
    pub sample_label: Option<SampleLabel>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<u64>,
}

#[typetag::serialize(name = "tiles")]
impl DataLoaderConfig for TilesLoader {
    fn image_shapes(&self) -> ImageShapes {
        ImageShapes {
            moving: self.image_shape.clone(),
            fixed: self.image_shape.clone(),
        }
    }

    fn provides(&self, labeled: bool) -> Vec<Decl> {
        let mut decls = pair_decls(labeled);
        if self.origins.is_some() {
            decls.push(Decl::new(names::TRUE_DDF, Kind::Field, Grid::Fixed));
        }
        decls
    }

    fn build(&self, source: &SplitSource<'_>) -> Result<Box<dyn DataLoader>, ComponentError> {
        check_shape(NAME, "image_shape", &self.image_shape)?;
        if self.origins.is_some() && self.image_shape.len() != 2 {
            return Err(ComponentError::invalid(
                NAME,
                format!(
                    "`origins` are 2D (origin_row, origin_column) but `image_shape` {:?} has 3 axes",
                    self.image_shape
                ),
            ));
        }
        let pattern = grid_pattern(&self.pattern)?;
        let mut moving = Side::open(source, "images", "labels", false, &self.image_shape)?;
        moving.keep_aspect = self.keep_aspect;
        require_equal_label_counts(source, &moving)?;
        let names: Vec<&str> = moving
            .images
            .ids()
            .iter()
            .map(|id| id.name.as_str())
            .collect();
        let grid = TileGrid::parse(&names, &pattern, &self.pattern)
            .map_err(|message| data_error(source, message))?;
        let neighbours = grid
            .neighbours(self.diagonal)
            .map_err(|message| data_error(source, message))?;
        let origins = self
            .origins
            .as_deref()
            .map(|file| TileOrigins::read(source.dirs, file, &moving.images))
            .transpose()?;
        let fixed = moving.with_shape(&self.image_shape);
        let has_labels = labeled(&moving, &fixed);
        Ok(Box::new(TileData {
            pairs: Pairs {
                moving,
                fixed,
                labeled: has_labels,
                sample_label: sample_label(self.sample_label, source.split),
            },
            neighbours,
            origins,
            split: source.split,
            seed: self.seed,
        }))
    }
}

register_component!(
    data_loader,
    "tiles",
    TilesLoader,
    "Grid tiles (names carrying Y<row>_X<column>) paired with grid neighbours"
);

/// Compiles `pattern`, which needs at least two capture groups.
fn grid_pattern(pattern: &str) -> Result<Regex, ComponentError> {
    let regex = Regex::new(pattern).map_err(|error| {
        ComponentError::invalid(
            NAME,
            format!("`pattern` is not a regular expression: {error}"),
        )
    })?;
    if regex.captures_len() < 3 {
        return Err(ComponentError::invalid(
            NAME,
            format!("`pattern` `{pattern}` needs two capture groups: the row and the column"),
        ));
    }
    Ok(regex)
}

/// Where each tile sits: its mosaic and its (row, column) there.
#[derive(Debug)]
pub(crate) struct TileGrid {
    /// Per tile (in id order): mosaic index and grid position.
    tiles: Vec<(usize, i64, i64)>,
    /// Per tile, its name (for messages).
    names: Vec<String>,
}

impl TileGrid {
    /// Reads every name's mosaic and grid position; errors name the tiles that do not match
    /// and the first two tiles found at one position.
    pub(crate) fn parse(names: &[&str], regex: &Regex, pattern: &str) -> Result<Self, String> {
        let mut mosaics: HashMap<String, usize> = HashMap::new();
        let mut tiles = Vec::with_capacity(names.len());
        let mut unmatched = Vec::new();
        for name in names {
            let Some(found) = regex.captures(name) else {
                unmatched.push(*name);
                continue;
            };
            let number = |group: usize| found.get(group).and_then(|m| m.as_str().parse().ok());
            let (Some(row), Some(column)) = (number(1), number(2)) else {
                unmatched.push(*name);
                continue;
            };
            let whole = found.get(0).map_or(0..0, |m| m.range());
            let mosaic = format!("{}{}", &name[..whole.start], &name[whole.end..]);
            let next = mosaics.len();
            tiles.push((*mosaics.entry(mosaic).or_insert(next), row, column));
        }
        if !unmatched.is_empty() {
            let shown: Vec<&str> = unmatched.iter().take(5).copied().collect();
            return Err(format!(
                "{} image name(s) carry no grid position matching `pattern` `{pattern}` (its first two groups must be whole numbers): {shown:?}",
                unmatched.len()
            ));
        }
        let mut seen: HashMap<(usize, i64, i64), usize> = HashMap::new();
        for (index, tile) in tiles.iter().enumerate() {
            if let Some(first) = seen.insert(*tile, index) {
                return Err(format!(
                    "`{}` and `{}` sit at the same grid position (row {}, column {}) of one mosaic",
                    names[first], names[index], tile.1, tile.2
                ));
            }
        }
        Ok(TileGrid {
            tiles,
            names: names.iter().map(|name| (*name).to_owned()).collect(),
        })
    }

    /// Per tile, the indices of its grid neighbours (4-connected, or 8 with `diagonal`) in
    /// the same mosaic, in index order; errors if a tile has none.
    pub(crate) fn neighbours(&self, diagonal: bool) -> Result<Vec<Vec<usize>>, String> {
        let at: HashMap<(usize, i64, i64), usize> = self
            .tiles
            .iter()
            .enumerate()
            .map(|(index, tile)| (*tile, index))
            .collect();
        let steps: &[(i64, i64)] = if diagonal {
            &[
                (-1, -1),
                (-1, 0),
                (-1, 1),
                (0, -1),
                (0, 1),
                (1, -1),
                (1, 0),
                (1, 1),
            ]
        } else {
            &[(-1, 0), (0, -1), (0, 1), (1, 0)]
        };
        let mut all = Vec::with_capacity(self.tiles.len());
        for (index, &(mosaic, row, column)) in self.tiles.iter().enumerate() {
            let mut found: Vec<usize> = steps
                .iter()
                .filter_map(|(dr, dc)| at.get(&(mosaic, row + dr, column + dc)).copied())
                .collect();
            found.sort_unstable();
            if found.is_empty() {
                return Err(format!(
                    "tile `{}` (row {row}, column {column}) has no grid neighbour in its mosaic{}: every tile must have one",
                    self.names[index],
                    if diagonal { "" } else { " (diagonal: true also counts diagonal tiles)" }
                ));
            }
            all.push(found);
        }
        Ok(all)
    }
}

/// Tile pairs: in training each tile, in random order, is the moving image of one pair
/// whose fixed image is one of its neighbours drawn at random (one pair per tile and
/// epoch, as the notebook draws them); validation and test take every ordered neighbour
/// pair, in tile order.
pub(crate) struct TileData {
    pub pairs: Pairs,
    /// Per tile, its neighbours.
    pub neighbours: Vec<Vec<usize>>,
    /// Known origins: each sample then carries its `true_ddf`.
    pub origins: Option<TileOrigins>,
    pub split: Split,
    pub seed: Option<u64>,
}

impl DataLoader for TileData {
    fn epoch(&self, epoch: u64, seed: u64) -> Vec<SampleRef> {
        let mut rng = epoch_rng(self.split, self.seed.unwrap_or(seed), epoch);
        let pairs = match self.split {
            Split::Train => shuffled(self.neighbours.len(), &mut rng)
                .into_iter()
                .filter_map(|tile| {
                    let neighbour = self.neighbours[tile].choose(&mut rng)?;
                    Some((tile, *neighbour))
                })
                .collect(),
            Split::Valid | Split::Test => self
                .neighbours
                .iter()
                .enumerate()
                .flat_map(|(tile, around)| around.iter().map(move |&n| (tile, n)))
                .collect(),
        };
        self.pairs.expand(pairs, &mut rng)
    }

    fn load(&self, sample: &SampleRef) -> Result<Sample, ComponentError> {
        let mut loaded = self.pairs.load(sample)?;
        if let Some(origins) = &self.origins {
            let (moving, fixed) = (&self.pairs.moving, &self.pairs.fixed);
            let moving_shape = moving.images.shape(sample.moving)?;
            let fixed_shape = fixed.images.shape(sample.fixed)?;
            let field = origins.true_ddf(
                sample.moving,
                sample.fixed,
                &moving_shape,
                &moving.resized_shape(&moving_shape),
                &fixed_shape,
                &fixed.resized_shape(&fixed_shape),
                &fixed.shape,
            );
            let mut shape = vec![2];
            shape.extend_from_slice(&fixed.shape);
            loaded.extra.push((
                Decl::new(names::TRUE_DDF, Kind::Field, Grid::Fixed),
                shape,
                field,
            ));
        }
        Ok(loaded)
    }
}

#[cfg(test)]
#[path = "tiles_tests.rs"]
mod tests;
