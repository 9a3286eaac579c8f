//! Known tile origins (the `tiles` loader's `origins` key): where each 2D tile's first pixel
//! lay in the scanned image, read from a CSV file in each data folder, and the true
//! displacement field of a tile pair that follows from them.

use std::collections::HashMap;
use std::path::Path;

use voxreg_framework::prelude::*;

use super::images::ImageSet;

/// Per tile (in id order), its origin `[row, column]` in pixels of the source image.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TileOrigins(Vec<[f64; 2]>);

impl TileOrigins {
    /// Reads `<dir>/<file>` for every directory of the split. Each CSV has a header row with
    /// at least the columns `file` (the tile's file name, with or without its extension),
    /// `origin_row` and `origin_column`; every tile of `images` must have a row.
    pub(crate) fn read(
        dirs: &[std::path::PathBuf],
        file: &str,
        images: &ImageSet,
    ) -> Result<Self, ComponentError> {
        let tables = dirs
            .iter()
            .map(|dir| read_table(&dir.join(file)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut origins = Vec::with_capacity(images.len());
        for (index, id) in images.ids().iter().enumerate() {
            let dir = images.directory(index)?;
            let name = id.to_string();
            let origin = tables[dir].get(&name).ok_or_else(|| ComponentError::Data {
                path: dirs[dir].join(file),
                message: format!(
                    "no row for the tile `{name}` (its `file` column names each tile)"
                ),
            })?;
            origins.push(*origin);
        }
        Ok(TileOrigins(origins))
    }

    /// The true displacement field of the pair (moving tile `moving`, fixed tile `fixed`) on
    /// the fixed image's grid `fixed_grid`, channel-first `(2, *fixed_grid)` in C order, for
    /// tiles of original shapes `moving_shape`, `fixed_shape` resized (half-pixel centres)
    /// to `moving_resized`, `fixed_resized`. Fixed voxel `p′` is original pixel
    /// `p = (p′ + ½) / s_f − ½` (`s = resized / original` per axis), source pixel
    /// `o_f + p`, moving pixel `q = o_f + p − o_m`, resized moving voxel
    /// `q′ = (q + ½) · s_m − ½`; the field is `q′ − p′` (a constant `(o_f − o_m) · s` when
    /// both tiles have one shape).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn true_ddf(
        &self,
        moving: usize,
        fixed: usize,
        moving_shape: &[usize],
        moving_resized: &[usize],
        fixed_shape: &[usize],
        fixed_resized: &[usize],
        fixed_grid: &[usize],
    ) -> Vec<f32> {
        let voxels: usize = fixed_grid.iter().product();
        let mut field = vec![0.0f32; 2 * voxels];
        for axis in 0..2 {
            let s_m = moving_resized[axis] as f64 / moving_shape[axis] as f64;
            let s_f = fixed_resized[axis] as f64 / fixed_shape[axis] as f64;
            let offset = self.0[fixed][axis] - self.0[moving][axis];
            let inner: usize = fixed_grid[axis + 1..].iter().product();
            for (flat, value) in field[axis * voxels..(axis + 1) * voxels]
                .iter_mut()
                .enumerate()
            {
                let p_resized = ((flat / inner) % fixed_grid[axis]) as f64;
                let p = (p_resized + 0.5) / s_f - 0.5;
                let q_resized = (offset + p + 0.5) * s_m - 0.5;
                *value = (q_resized - p_resized) as f32;
            }
        }
        field
    }
}

/// One CSV: tile name (without extension) → origin.
fn read_table(path: &Path) -> Result<HashMap<String, [f64; 2]>, ComponentError> {
    let error = |message: String| ComponentError::Data {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| error(format!("cannot read the tile origins: {e}")))?;
    let headers = reader
        .headers()
        .map_err(|e| error(format!("cannot read the header row: {e}")))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                error(format!(
                    "no `{name}` column: the header needs file, origin_row and origin_column"
                ))
            })
    };
    let (file, row, col) = (
        column("file")?,
        column("origin_row")?,
        column("origin_column")?,
    );
    let mut table = HashMap::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| error(format!("line {}: {e}", line + 2)))?;
        let number = |index: usize, name: &str| -> Result<f64, ComponentError> {
            let text = record.get(index).unwrap_or("").trim();
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    error(format!(
                        "line {}: `{name}` `{text}` is not a number",
                        line + 2
                    ))
                })
        };
        let origin = [number(row, "origin_row")?, number(col, "origin_column")?];
        let name = record.get(file).unwrap_or("").trim();
        let stem = [".png", ".tif", ".tiff", ".PNG", ".TIF", ".TIFF"]
            .iter()
            .find_map(|extension| name.strip_suffix(extension))
            .unwrap_or(name);
        if table.insert(stem.to_owned(), origin).is_some() {
            return Err(error(format!(
                "line {}: a second row for `{stem}`",
                line + 2
            )));
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_tiles_give_the_scaled_origin_difference_everywhere() {
        let origins = TileOrigins(vec![[10.0, 20.0], [10.0, 36.0]]);
        // 32 × 32 tiles resized to 16 × 16: the 16-pixel step becomes 8 voxels.
        let field = origins.true_ddf(0, 1, &[32, 32], &[16, 16], &[32, 32], &[16, 16], &[16, 16]);
        assert_eq!(field.len(), 2 * 256);
        assert!(field[..256].iter().all(|v| v.abs() < 1e-6));
        assert!(field[256..].iter().all(|v| (v - 8.0).abs() < 1e-5));
        // The other way round: −8.
        let back = origins.true_ddf(1, 0, &[32, 32], &[16, 16], &[32, 32], &[16, 16], &[16, 16]);
        assert!(back[256..].iter().all(|v| (v + 8.0).abs() < 1e-5));
    }

    #[test]
    fn tiles_of_different_sizes_follow_the_resampling_exactly() {
        // Moving 4 columns wide resized to 8 (s_m = 2), fixed 8 wide kept (s_f = 1); the
        // fixed tile starts 1 pixel right of the moving one. Fixed voxel p′ = 3 is pixel 3,
        // source 4 → moving pixel 4 → resized (4.5) · 2 − ½ = 8.5; field 5.5.
        let origins = TileOrigins(vec![[0.0, 0.0], [0.0, 1.0]]);
        let field = origins.true_ddf(0, 1, &[1, 4], &[1, 8], &[1, 8], &[1, 8], &[1, 8]);
        assert!((field[8 + 3] - 5.5).abs() < 1e-6, "{:?}", &field[8..]);
        assert!(
            (field[8] - 2.5).abs() < 1e-6,
            "p′ = 0 → (0 + 1 + ½)·2 − ½ = 2.5"
        );
    }

    #[test]
    fn the_table_reads_names_with_or_without_extension_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiles.csv");
        std::fs::write(
            &path,
            "file,mosaic,origin_row,origin_column\na_Y0_X0.png,0,3,4\na_Y0_X1,0,3,20\n",
        )
        .unwrap();
        let table = read_table(&path).unwrap();
        assert_eq!(table["a_Y0_X0"], [3.0, 4.0]);
        assert_eq!(table["a_Y0_X1"], [3.0, 20.0]);

        std::fs::write(&path, "file,origin_row,origin_column\na,3,x\n").unwrap();
        let error = read_table(&path).unwrap_err().to_string();
        assert!(error.contains("line 2") && error.contains("`x`"), "{error}");
        std::fs::write(&path, "file,row\na,3\n").unwrap();
        let error = read_table(&path).unwrap_err().to_string();
        assert!(error.contains("`origin_row`"), "{error}");
        std::fs::write(&path, "file,origin_row,origin_column\na,1,2\na.png,1,2\n").unwrap();
        let error = read_table(&path).unwrap_err().to_string();
        assert!(error.contains("second row for `a`"), "{error}");
        let missing = read_table(&dir.path().join("none.csv"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("none.csv"), "{missing}");
    }
}
