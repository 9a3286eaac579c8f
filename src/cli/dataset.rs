//! `voxreg dataset from-template`: build a DeepReg-layout dataset from one template.

use anyhow::bail;
use voxreg::data::read_nifti;
use voxreg::data::synthetic::{build_paired_dataset, TemplateDataset};

use super::stdout::say;
use super::FromTemplateArgs;

/// Reads the template and label maps, writes the dataset, and prints the split folders.
pub fn from_template(args: &FromTemplateArgs) -> anyhow::Result<()> {
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!(
            "--out {}: the folder exists and is not empty; choose a new folder",
            args.out.display()
        );
    }
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
    let options = TemplateDataset {
        template: read_nifti(&args.template)?,
        labels: args
            .label
            .iter()
            .map(|path| read_nifti(path))
            .collect::<Result<_, _>>()?,
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
