//! `voxreg warp`: warp a NIfTI image or label with a saved DDF.

use std::path::Path;

use anyhow::{bail, Context};
use voxreg::candle::{Device, Tensor};
use voxreg::component::Volume;
use voxreg::data::{read_nifti, write_nifti};
use voxreg::ops::{self, Interp, Padding};

use super::{WarpArgs, WarpPadding};

/// Warps `--image` by `--ddf` (DeepReg's layout `(d1, d2, d3, 3)`, voxel units) with linear
/// interpolation and `--padding` outside the image: zeros by default, as predict warps
/// `pred_fixed_image` (so with equal moving and fixed shapes re-warping predict's
/// `moving_image` by its `ddf` reproduces its `pred_fixed_image`), or border clamping. The output has the DDF's spatial shape (and the
/// image's channels, if it has a fourth axis) and the DDF's header space: the DDF lives on
/// the fixed image's grid, and so does the warped image.
pub fn warp(args: &WarpArgs) -> anyhow::Result<()> {
    let out = args.out.to_string_lossy();
    if !(out.ends_with(".nii") || out.ends_with(".nii.gz")) {
        bail!("--out {out}: must end in .nii or .nii.gz");
    }
    let image = read_nifti(&args.image)?;
    let ddf = read_nifti(&args.ddf)?;
    let padding = match args.padding {
        WarpPadding::Zeros => Padding::Zeros,
        WarpPadding::Border => Padding::Border,
    };
    let warped = warp_volume(&image, &ddf, padding)
        .with_context(|| format!("warping {} by {}", args.image.display(), args.ddf.display()))?;
    write_nifti(Path::new(&args.out), &warped)?;
    tracing::info!("wrote {}", args.out.display());
    Ok(())
}

/// The image (spatial, or spatial + channels) warped by the DDF (spatial + ndim), linearly,
/// with `padding` outside the image.
pub(super) fn warp_volume(
    image: &Volume,
    ddf: &Volume,
    padding: Padding,
) -> anyhow::Result<Volume> {
    let Some((&ndim, ddf_spatial)) = ddf.shape.split_last() else {
        bail!("the DDF has no axes");
    };
    if ddf_spatial.len() != ndim || !(2..=3).contains(&ndim) {
        bail!(
            "the DDF has shape {:?}: expected (*spatial, ndim) with ndim 2 or 3 equal to the number of spatial axes, as DeepReg saves it",
            ddf.shape
        );
    }
    let (image_spatial, channels) = match image.shape.len() {
        n if n == ndim => (image.shape.clone(), 1),
        n if n == ndim + 1 => (image.shape[..ndim].to_vec(), image.shape[ndim]),
        _ => bail!(
            "the image has shape {:?}: expected {ndim} spatial axes, optionally followed by one axis of channels",
            image.shape
        ),
    };
    let device = Device::Cpu;
    let channel_first =
        |data: &[f32], spatial: &[usize], channels: usize| -> voxreg::candle::Result<Tensor> {
            let mut dims = spatial.to_vec();
            dims.push(channels);
            let last = dims.len() - 1;
            let mut order = vec![last];
            order.extend(0..last);
            Tensor::from_vec(data.to_vec(), dims, &device)?
                .permute(order)?
                .contiguous()?
                .unsqueeze(0)
        };
    let image_tensor = channel_first(&image.data, &image_spatial, channels)?;
    let ddf_tensor = channel_first(&ddf.data, ddf_spatial, ndim)?;
    let warped = ops::warp(&image_tensor, &ddf_tensor, Interp::Linear, padding)?.squeeze(0)?;
    let mut order: Vec<usize> = (1..=ndim).collect();
    order.push(0);
    let data = warped.permute(order)?.flatten_all()?.to_vec1::<f32>()?;
    let mut shape = ddf_spatial.to_vec();
    if image.shape.len() == ndim + 1 {
        shape.push(channels);
    }
    Ok(Volume {
        data,
        shape,
        affine: ddf.affine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(shape: &[usize], data: Vec<f32>) -> Volume {
        let mut affine = [[0.0; 4]; 4];
        for (i, row) in affine.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        Volume {
            data,
            shape: shape.to_vec(),
            affine,
        }
    }

    #[test]
    fn a_zero_field_returns_the_image() {
        let image = volume(&[2, 3, 4], (0..24).map(|v| v as f32).collect());
        let ddf = volume(&[2, 3, 4, 3], vec![0.0; 72]);
        for padding in [Padding::Zeros, Padding::Border] {
            assert_eq!(warp_volume(&image, &ddf, padding).unwrap().data, image.data);
        }
    }

    #[test]
    fn a_unit_shift_along_the_last_axis_moves_values_and_channels_follow() {
        // Two channels on a 1×1×4 grid; the field samples one voxel further along axis 2.
        let image = volume(
            &[1, 1, 4, 2],
            vec![0.0, 10.0, 1.0, 11.0, 2.0, 12.0, 3.0, 13.0],
        );
        let mut field = vec![0.0; 12];
        for voxel in 0..4 {
            field[voxel * 3 + 2] = 1.0;
        }
        let ddf = volume(&[1, 1, 4, 3], field);
        let warped = warp_volume(&image, &ddf, Padding::Border).unwrap();
        assert_eq!(warped.shape, vec![1, 1, 4, 2]);
        assert_eq!(
            warped.data,
            vec![1.0, 11.0, 2.0, 12.0, 3.0, 13.0, 3.0, 13.0],
            "border padding repeats the last voxel"
        );
        let warped = warp_volume(&image, &ddf, Padding::Zeros).unwrap();
        assert_eq!(
            warped.data,
            vec![1.0, 11.0, 2.0, 12.0, 3.0, 13.0, 0.0, 0.0],
            "zero padding: nothing beyond the last voxel"
        );
    }

    #[test]
    fn mismatched_layouts_are_errors() {
        let image = volume(&[2, 2, 2], vec![0.0; 8]);
        assert!(warp_volume(&image, &volume(&[2, 2, 3], vec![0.0; 12]), Padding::Zeros).is_err());
        assert!(warp_volume(
            &volume(&[2, 2], vec![0.0; 4]),
            &volume(&[2, 2, 2, 3], vec![0.0; 24]),
            Padding::Zeros
        )
        .is_err());
    }
}
