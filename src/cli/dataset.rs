//! `voxreg dataset from-template` and `voxreg dataset tiles`: build a DeepReg-layout dataset
//! from one template, or a tile dataset from one 2D image.

use anyhow::bail;
use voxreg::component::Volume;
use voxreg::data::synthetic::{build_paired_dataset, TemplateDataset};
use voxreg::data::synthetic_atlalign::{build_augmented_dataset, AugmentDataset};
use voxreg::data::synthetic_tiles::{build_tile_dataset, TileDataset};
use voxreg::data::{read_nifti, read_volume_file};

use super::run_folder::require_new_or_empty;
use super::stdout::say;
use super::{AugmentArgs, FromTemplateArgs, TilesArgs};

/// Reads the template and label maps, writes the dataset, and prints the split folders.
pub fn from_template(args: &FromTemplateArgs) -> anyhow::Result<()> {
    require_new_or_empty("--out", &args.out)?;
    check_size("--shape", &args.shape, 1 + args.label.len())?;
    check_size("--low-res-size", &args.low_res_size, 1)?;
    if let Some(size) = &args.crop_size {
        check_size("--crop-size", size, 1)?;
    }
    let crop = match (&args.crop_start, &args.crop_size) {
        (Some(start), Some(size)) => Some((start.clone(), size.clone())),
        (None, None) => None,
        _ => bail!("--crop-start and --crop-size go together"),
    };
    let [train, valid, test] = args.pairs[..] else {
        bail!("--pairs takes three counts: train,valid,test");
    };
    let plane = |volume: Volume, path: &std::path::Path| -> anyhow::Result<Volume> {
        match args.slice.as_deref() {
            None => Ok(volume),
            Some(&[axis, index]) => slice_plane(volume, axis, index).map_err(|problem| {
                anyhow::anyhow!("--slice {axis},{index}: {}: {problem}", path.display())
            }),
            Some(_) => bail!("--slice takes AXIS,INDEX"),
        }
    };
    let template = plane(read_nifti(&args.template)?, &args.template)?;
    let labels = args
        .label
        .iter()
        .map(|path| {
            let label = plane(read_nifti(path)?, path)?;
            let spatial = &label.shape[..template.shape.len().min(label.shape.len())];
            if spatial != template.shape.as_slice() {
                bail!(
                    "--label {}: its shape {:?} does not match the template's {:?} ({}); a label map must cover the template voxel for voxel",
                    path.display(),
                    label.shape,
                    template.shape,
                    args.template.display()
                );
            }
            Ok(label)
        })
        .collect::<anyhow::Result<_>>()?;
    let options = TemplateDataset {
        template,
        labels,
        crop,
        shape: args.shape.clone(),
        pairs: [train, valid, test],
        field_strength: args.field_strength,
        low_res_size: args.low_res_size.clone(),
        seed: args.seed,
        write_fields: !args.no_fields,
    };
    let summary = build_paired_dataset(&args.out, &options)?;
    say!("wrote {} pairs in DeepReg's paired layout:", summary.pairs)?;
    for (split, dir) in ["train", "valid", "test"].iter().zip(&summary.split_dirs) {
        say!("  {split}: {}", dir.display())?;
    }
    Ok(())
}

/// Reads the image (one plane of it with `--slice`), cuts and writes the tiles, and prints
/// the split folders with the nominal step between neighbours.
pub fn tiles(args: &TilesArgs) -> anyhow::Result<()> {
    require_new_or_empty("--out", &args.out)?;
    let pair = |flag: &str, values: &[usize]| -> anyhow::Result<[usize; 2]> {
        match values {
            &[rows, columns] => Ok([rows, columns]),
            _ => bail!("{flag} takes ROWS,COLUMNS, got {values:?}"),
        }
    };
    let [train, valid, test] = args.mosaics[..] else {
        bail!("--mosaics takes three counts: train,valid,test");
    };
    let mut image = read_volume_file(&args.image, "vol")?;
    if let Some(slice) = args.slice.as_deref() {
        let &[axis, index] = slice else {
            bail!("--slice takes AXIS,INDEX");
        };
        image = slice_plane(image, axis, index).map_err(|problem| {
            anyhow::anyhow!(
                "--slice {axis},{index}: {}: {problem}",
                args.image.display()
            )
        })?;
    }
    let options = TileDataset {
        image,
        tile: pair("--tile", &args.tile)?,
        grid: pair("--grid", &args.grid)?,
        overlap: args.overlap,
        jitter: args.jitter,
        mosaics: [train, valid, test],
        seed: args.seed,
    };
    let summary = build_tile_dataset(&args.out, &options)?;
    say!(
        "wrote {} tiles ({:?} per mosaic, step {:?} pixels) for the `tiles` data loader:",
        summary.tiles.iter().map(Vec::len).sum::<usize>(),
        options.grid,
        summary.step
    )?;
    for (split, dir) in ["train", "valid", "test"].iter().zip(&summary.split_dirs) {
        say!("  {split}: {} (origins in tiles.csv)", dir.display())?;
    }
    Ok(())
}

/// Reads the reference volume, writes the augmented sections, and prints the split folders
/// with the inverse error.
pub fn augment(args: &AugmentArgs) -> anyhow::Result<()> {
    require_new_or_empty("--out", &args.out)?;
    let pair = |flag: &str, values: &[usize]| -> anyhow::Result<[usize; 2]> {
        match values {
            &[rows, columns] if rows > 0 && columns > 0 => Ok([rows, columns]),
            _ => bail!("{flag} takes ROWS,COLUMNS (positive), got {values:?}"),
        }
    };
    let shape = pair("--shape", &args.shape)?;
    let [train, valid, test] = args.sections[..] else {
        bail!("--sections takes three counts: train,valid,test");
    };
    // Every sample's image and two fields are held until its split is written.
    let samples = (train + valid + test).saturating_mul(args.samples_per_section);
    check_size("--shape", &[samples.max(1), shape[0], shape[1]], 2)?;
    for (flag, value) in [
        ("--field-strength", args.field_strength),
        ("--rotation", args.rotation),
        ("--scale", args.scale),
        ("--translation", args.translation),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            bail!("{flag} must be a number >= 0, got {value}");
        }
    }
    if args.scale >= 1.0 {
        bail!(
            "--scale must be below 1 (a relative change), got {}",
            args.scale
        );
    }
    let options = AugmentDataset {
        reference: read_volume_file(&args.reference, "vol")?,
        labels: args
            .label
            .iter()
            .map(|path| read_volume_file(path, "vol"))
            .collect::<Result<_, _>>()?,
        axis: args.axis,
        shape,
        sections: [train, valid, test],
        samples_per_section: args.samples_per_section,
        field_strength: args.field_strength,
        low_res_size: pair("--low-res-size", &args.low_res_size)?,
        rotation: args.rotation,
        scale: args.scale,
        translation: args.translation,
        seed: args.seed,
        max_folded_pixels: args.max_folded_pixels,
        max_trials: args.max_trials,
    };
    let summary = build_augmented_dataset(&args.out, &options)?;
    say!(
        "wrote {} samples ({} per section; {} undeformed after {} folding draws) for the `atlalign` data loader:",
        summary.samples.iter().sum::<usize>(),
        args.samples_per_section,
        summary.undeformed,
        args.max_trials
    )?;
    for (split, (dir, n)) in ["train", "valid", "test"]
        .iter()
        .zip(summary.split_dirs.iter().zip(summary.samples))
    {
        say!(
            "  {split}: {} ({n} samples)",
            dir.join("dataset.h5").display()
        )?;
    }
    say!("  reference: {}", summary.reference.display())?;
    if let Some(labels) = &summary.reference_labels {
        say!("  reference labels: {}", labels.display())?;
    }
    let [p50, p95, p99, max] = summary.inverse_error;
    say!(
        "inverse error |d(p) + v(p + d(p))|: median {p50:.4}, 95th percentile {p95:.4}, 99th {p99:.4}, max {max:.4} pixels"
    )?;
    Ok(())
}

/// Refuses a size flag with a zero, or whose volumes would not fit in memory: building a
/// pair holds about sixteen f32 arrays of the shape (moving and fixed image, `volumes` label
/// maps each, the fields and their resampling buffers).
fn check_size(flag: &str, shape: &[usize], volumes: usize) -> anyhow::Result<()> {
    if shape.is_empty() || shape.contains(&0) {
        bail!("{flag} {shape:?}: every size must be at least 1");
    }
    let bytes = voxreg::memory::element_count(shape)
        .and_then(|n| n.checked_mul(4 * (12 + 2 * volumes as u64)));
    voxreg::memory::check_fits(bytes, &format!("{flag} {shape:?}")).map_err(anyhow::Error::msg)
}

/// The plane `index` across spatial `axis` of a 3D volume, as a 2D volume whose affine keeps
/// the plane's world position (the removed axis's column stays as the third column, the
/// origin moves by `index` along it).
fn slice_plane(volume: Volume, axis: usize, index: usize) -> Result<Volume, String> {
    let shape = &volume.shape;
    if shape.len() != 3 {
        return Err(format!("needs a 3D volume, got shape {shape:?}"));
    }
    if axis > 2 || index >= shape[axis] {
        return Err(format!(
            "axis must be 0, 1 or 2 and the index below that axis's size; the shape is {shape:?}"
        ));
    }
    let kept: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
    let strides = [shape[1] * shape[2], shape[2], 1];
    let mut data = Vec::with_capacity(shape[kept[0]] * shape[kept[1]]);
    for i in 0..shape[kept[0]] {
        for j in 0..shape[kept[1]] {
            data.push(
                volume.data[index * strides[axis] + i * strides[kept[0]] + j * strides[kept[1]]],
            );
        }
    }
    let mut affine = volume.affine;
    for (row, original) in affine.iter_mut().zip(volume.affine.iter()).take(3) {
        row[0] = original[kept[0]];
        row[1] = original[kept[1]];
        row[2] = original[axis];
        row[3] = original[3] + original[axis] * index as f64;
    }
    Ok(Volume {
        data,
        shape: vec![shape[kept[0]], shape[kept[1]]],
        affine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plane_keeps_its_values_and_world_position() {
        let volume = Volume {
            data: (0..24).map(|v| v as f32).collect(),
            shape: vec![2, 3, 4],
            affine: [
                [2.0, 0.0, 0.0, -10.0],
                [0.0, 3.0, 0.0, -20.0],
                [0.0, 0.0, 4.0, -30.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        };
        let plane = slice_plane(volume.clone(), 1, 2).unwrap();
        assert_eq!(plane.shape, vec![2, 4]);
        assert_eq!(
            plane.data,
            vec![8.0, 9.0, 10.0, 11.0, 20.0, 21.0, 22.0, 23.0]
        );
        assert_eq!(plane.affine[1][3], -20.0 + 3.0 * 2.0);
        assert_eq!(plane.affine[2][1], 4.0);
        assert!(slice_plane(volume, 1, 3).is_err());
    }
}
