//! Augmentations (`train.preprocess.data_augmentation`): DeepReg's random affine and random
//! DDF transforms (`deepreg/dataset/preprocess.py`), for 2D and 3D batches.
//!
//! Each image of a batch gets its own random transform, a dense displacement field in voxel
//! units; the image and its labels are warped by that field with linear interpolation and
//! zero padding (`ops::warp`). Moving and fixed images are transformed independently. All
//! randomness comes from the `seed` given to [`Augmentation::apply`].

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::ops::{affine_to_ddf, random_ddf, warp, Interp, Padding};
use voxreg_framework::prelude::*;

/// `affine`: a random affine transform per image (DeepReg's `RandomAffineTransform3D`).
///
/// The corners `c` of the cube `[−1, 1]^ndim` that DeepReg uses (`(−1, …, −1)` and the
/// `ndim` corners one step from it) move to `c ⊙ r`, each `r_i ~ U(1 − scale, 1)`
/// independently; the affine `theta` (`(ndim + 1) × ndim`) is fitted by least squares to
/// `[c, 1] · theta = c ⊙ r` and applied to voxel index coordinates: the voxel at `p` samples
/// the image at `[p, 1] · theta` (DeepReg's `warp_grid`). `scale = 0` is the identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AffineAugmentation {
    /// Strength in [0, 1].
    #[serde(default = "default_scale")]
    pub scale: f64,
}

fn default_scale() -> f64 {
    0.1
}

#[typetag::serialize(name = "affine")]
impl AugmentationConfig for AffineAugmentation {
    fn build(&self, shapes: &ImageShapes) -> Result<Box<dyn Augmentation>, ComponentError> {
        let component = "augmentation `affine`";
        let ndim = check_shapes(component, shapes)?;
        if !(0.0..=1.0).contains(&self.scale) {
            return Err(ComponentError::invalid(
                component,
                format!("scale must be within [0, 1], got {}", self.scale),
            ));
        }
        Ok(Box::new(RandomAffine {
            ndim,
            scale: self.scale,
        }))
    }
}

register_component!(
    augmentation,
    "affine",
    AffineAugmentation,
    "Random affine transform of each image and its labels"
);

/// `ddf`: a random smooth displacement field per image (DeepReg's `RandomDDFTransform3D`).
///
/// Per image and field component a strength `s ~ U(0, field_strength)`; a field
/// `s · N(0, 1)` of `low_res_size` voxels, resized linearly (half-pixel centres, as
/// TensorFlow's `resize`) to the image size; the image and its labels are warped by it.
/// `field_strength = 0` is the identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DdfAugmentation {
    /// Upper bound of the field's standard deviation, in voxels.
    #[serde(default = "default_field_strength")]
    pub field_strength: f64,
    /// Size of the low-resolution random field: one size per spatial axis, each between 1
    /// and the image size. The default `[1, 1, 1]` (a random translation) also serves 2D
    /// images.
    #[serde(default = "default_low_res_size")]
    pub low_res_size: Vec<usize>,
}

fn default_field_strength() -> f64 {
    1.0
}
fn default_low_res_size() -> Vec<usize> {
    vec![1, 1, 1]
}

#[typetag::serialize(name = "ddf")]
impl AugmentationConfig for DdfAugmentation {
    fn build(&self, shapes: &ImageShapes) -> Result<Box<dyn Augmentation>, ComponentError> {
        let component = "augmentation `ddf`";
        let ndim = check_shapes(component, shapes)?;
        if !(self.field_strength.is_finite() && self.field_strength >= 0.0) {
            return Err(ComponentError::invalid(
                component,
                format!(
                    "field_strength must be a finite number ≥ 0, got {}",
                    self.field_strength
                ),
            ));
        }
        let low_res = if self.low_res_size.len() == ndim {
            self.low_res_size.clone()
        } else if !self.low_res_size.is_empty() && self.low_res_size.iter().all(|&s| s == 1) {
            vec![1; ndim]
        } else {
            return Err(ComponentError::invalid(
                component,
                format!(
                    "low_res_size must hold one size per spatial axis ({ndim}), got {:?}",
                    self.low_res_size
                ),
            ));
        };
        for (name, shape) in [("moving", &shapes.moving), ("fixed", &shapes.fixed)] {
            if low_res.iter().zip(shape).any(|(&l, &s)| l == 0 || l > s) {
                return Err(ComponentError::invalid(
                    component,
                    format!(
                        "low_res_size {low_res:?} must be between 1 and the {name} image \
                         size {shape:?} on every axis"
                    ),
                ));
            }
        }
        Ok(Box::new(RandomDdf {
            ndim,
            field_strength: self.field_strength,
            low_res,
        }))
    }
}

register_component!(
    augmentation,
    "ddf",
    DdfAugmentation,
    "Random smooth displacement field applied to each image and its labels"
);

/// Checks that moving and fixed shapes have the same number (2 or 3) of positive sizes and
/// returns that number.
fn check_shapes(component: &str, shapes: &ImageShapes) -> Result<usize, ComponentError> {
    let ndim = shapes.moving.len();
    let valid = |shape: &[usize]| shape.len() == ndim && !shape.contains(&0);
    if !(2..=3).contains(&ndim) || !valid(&shapes.moving) || !valid(&shapes.fixed) {
        return Err(ComponentError::invalid(
            component,
            format!(
                "moving and fixed images need 2 or 3 positive spatial sizes each, got {:?} \
                 and {:?}",
                shapes.moving, shapes.fixed
            ),
        ));
    }
    Ok(ndim)
}

/// A built [`AffineAugmentation`].
struct RandomAffine {
    ndim: usize,
    scale: f64,
}

impl Augmentation for RandomAffine {
    fn apply(&self, batch: &Batch, seed: u64) -> Result<Batch, ComponentError> {
        transform_batch(
            "augmentation `affine`",
            self.ndim,
            batch,
            seed,
            |image, seed| {
                let n = image.dim(0)?;
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let thetas: Vec<f64> = (0..n)
                    .flat_map(|_| random_theta(&mut rng, self.ndim, self.scale))
                    .collect();
                let theta =
                    Tensor::from_vec(thetas, (n, self.ndim + 1, self.ndim), image.device())?
                        .to_dtype(image.dtype())?;
                affine_to_ddf(&theta, &image.dims()[2..])
            },
        )
    }
}

/// A built [`DdfAugmentation`].
struct RandomDdf {
    ndim: usize,
    field_strength: f64,
    low_res: Vec<usize>,
}

impl Augmentation for RandomDdf {
    fn apply(&self, batch: &Batch, seed: u64) -> Result<Batch, ComponentError> {
        transform_batch(
            "augmentation `ddf`",
            self.ndim,
            batch,
            seed,
            |image, seed| {
                let field = random_ddf(
                    image.dim(0)?,
                    &image.dims()[2..],
                    &self.low_res,
                    self.field_strength,
                    seed,
                    image.device(),
                )?;
                field.to_dtype(image.dtype())
            },
        )
    }
}

/// DeepReg's random affine parameters for one image: the corners of `[−1, 1]^ndim` (DeepReg's
/// C, G, D, A in 3D) scaled per coordinate by `U(1 − scale, 1)`, and the least-squares
/// `theta` with `[c, 1] · theta = c ⊙ r`, row-major `(ndim + 1) × ndim`.
fn random_theta(rng: &mut impl Rng, ndim: usize, scale: f64) -> Vec<f64> {
    let corners: Vec<Vec<f64>> = (0..=ndim)
        .map(|k| {
            let mut corner = vec![-1.0; ndim];
            if k > 0 {
                corner[ndim - k] = 1.0;
            }
            corner
        })
        .collect();
    let moved: Vec<Vec<f64>> = corners
        .iter()
        .map(|c| {
            c.iter()
                .map(|v| v * (1.0 - scale + scale * rng.random::<f64>()))
                .collect()
        })
        .collect();
    let a: Vec<Vec<f64>> = corners
        .iter()
        .map(|c| c.iter().copied().chain([1.0]).collect())
        .collect();
    least_squares(&a, &moved)
}

/// Solves `min ‖a x − b‖` for `x` (`a`: rows × k of full column rank, `b`: rows × m) by the
/// normal equations `aᵀa x = aᵀb` with Gauss–Jordan elimination and partial pivoting; `x` is
/// returned row-major, k × m.
fn least_squares(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<f64> {
    let k = a[0].len();
    let m = b[0].len();
    // Augmented [aᵀa | aᵀb], k × (k + m).
    let mut system: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            (0..k + m)
                .map(|j| {
                    a.iter()
                        .zip(b)
                        .map(|(ar, br)| ar[i] * if j < k { ar[j] } else { br[j - k] })
                        .sum()
                })
                .collect()
        })
        .collect();
    for col in 0..k {
        let pivot = (col..k)
            .max_by(|&x, &y| system[x][col].abs().total_cmp(&system[y][col].abs()))
            .unwrap_or(col);
        system.swap(col, pivot);
        let p = system[col][col];
        for v in &mut system[col] {
            *v /= p;
        }
        let pivot_row = system[col].clone();
        for (row, values) in system.iter_mut().enumerate() {
            let factor = values[col];
            if row != col && factor != 0.0 {
                for (v, p) in values.iter_mut().zip(&pivot_row) {
                    *v -= factor * p;
                }
            }
        }
    }
    system.iter().flat_map(|row| row[k..].to_vec()).collect()
}

/// Applies one random field per image to a batch: `make_ddf(image, seed)` gives the
/// `(N, ndim, *spatial)` field for a batch of images; moving and fixed get fields from
/// different seeds derived from `seed`; labels are warped by their image's field.
fn transform_batch(
    component: &str,
    ndim: usize,
    batch: &Batch,
    seed: u64,
    make_ddf: impl Fn(&Tensor, u64) -> candle::Result<Tensor>,
) -> Result<Batch, ComponentError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (moving_seed, fixed_seed) = (rng.next_u64(), rng.next_u64());
    let side = |what: &str, image: &Tensor, label: Option<&Tensor>, seed: u64| {
        let context = format!("{component}: {what}");
        check_batch(ndim, image, label).map_err(|e| ComponentError::tensor(&context, e))?;
        let result = || -> candle::Result<(Tensor, Option<Tensor>)> {
            let ddf = make_ddf(image, seed)?;
            let image = warp(image, &ddf, Interp::Linear, Padding::Zeros)?;
            let label = label
                .map(|l| warp(l, &ddf, Interp::Linear, Padding::Zeros))
                .transpose()?;
            Ok((image, label))
        };
        result().map_err(|e| ComponentError::tensor(&context, e))
    };
    if let Some(other) = batch.tensors.decls().find(|d| {
        d.kind.is_spatial()
            && ![
                names::MOVING_IMAGE,
                names::FIXED_IMAGE,
                names::MOVING_LABEL,
                names::FIXED_LABEL,
            ]
            .contains(&d.name.as_str())
    }) {
        return Err(ComponentError::invalid(
            component,
            format!(
                "cannot transform the batch's {other} consistently with the images; set `data_augmentation: null`"
            ),
        ));
    }
    let image = |name: &str| {
        batch
            .tensors
            .require(name)
            .map_err(|e| ComponentError::tensor(format!("{component}: {name}"), e))
    };
    let (moving_image, moving_label) = side(
        "moving",
        image(names::MOVING_IMAGE)?,
        batch.moving_label(),
        moving_seed,
    )?;
    let (fixed_image, fixed_label) = side(
        "fixed",
        image(names::FIXED_IMAGE)?,
        batch.fixed_label(),
        fixed_seed,
    )?;
    let mut out = Batch::pair(moving_image, fixed_image, moving_label, fixed_label);
    out.hyper = batch.hyper.clone();
    Ok(out)
}

/// Checks an image `(N, C, *spatial)` with `ndim` spatial axes and its label, which must
/// share the batch size and spatial shape.
fn check_batch(ndim: usize, image: &Tensor, label: Option<&Tensor>) -> candle::Result<()> {
    let dims = image.dims();
    if dims.len() != ndim + 2 || dims.contains(&0) {
        candle::bail!("images must be (N, C, *spatial) with {ndim} spatial axes, got {dims:?}");
    }
    if let Some(label) = label {
        let l = label.dims();
        if l.len() != dims.len() || l[0] != dims[0] || l[2..] != dims[2..] {
            candle::bail!("labels {l:?} do not match images {dims:?} in batch or spatial shape");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible `(n, c, *spatial)` f32 tensor in `[0, 1)`.
    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count).map(|_| rng.random::<f32>()).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        values(a)
            .iter()
            .zip(values(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn shapes(moving: &[usize], fixed: &[usize]) -> ImageShapes {
        ImageShapes {
            moving: moving.to_vec(),
            fixed: fixed.to_vec(),
        }
    }

    /// A labelled batch of two pairs, moving and fixed of different shapes, two labels.
    fn batch(moving: &[usize], fixed: &[usize]) -> Batch {
        let with = |c: usize, spatial: &[usize]| [&[2, c][..], spatial].concat();
        Batch::pair(
            random(&with(1, moving), 1),
            random(&with(1, fixed), 2),
            Some(random(&with(2, moving), 3)),
            Some(random(&with(2, fixed), 4)),
        )
    }

    const CASES: [(&[usize], &[usize]); 2] = [(&[7, 6], &[5, 8]), (&[5, 4, 6], &[6, 5, 4])];

    fn affine(scale: f64) -> AffineAugmentation {
        AffineAugmentation { scale }
    }

    fn ddf(field_strength: f64, low_res_size: &[usize]) -> DdfAugmentation {
        DdfAugmentation {
            field_strength,
            low_res_size: low_res_size.to_vec(),
        }
    }

    fn all_tensors(batch: &Batch) -> Vec<&Tensor> {
        batch.tensors.iter().map(|(_, t)| t).collect()
    }

    #[test]
    fn zero_strength_leaves_the_batch_unchanged_in_2d_and_3d() {
        for (moving, fixed) in CASES {
            let input = batch(moving, fixed);
            let configs: [Box<dyn AugmentationConfig>; 2] = [
                Box::new(affine(0.0)),
                Box::new(ddf(0.0, &[2, 2, 2][..moving.len()])),
            ];
            for config in configs {
                let augmentation = config.build(&shapes(moving, fixed)).unwrap();
                let output = augmentation.apply(&input, 7).unwrap();
                for (a, b) in all_tensors(&input).into_iter().zip(all_tensors(&output)) {
                    assert!(max_abs_diff(a, b) < 1e-5, "{config:?}");
                }
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_batch_and_other_seeds_differ() {
        for (moving, fixed) in CASES {
            let input = batch(moving, fixed);
            let configs: [Box<dyn AugmentationConfig>; 2] = [
                Box::new(affine(0.3)),
                Box::new(ddf(2.0, &[2, 2, 2][..moving.len()])),
            ];
            for config in configs {
                let augmentation = config.build(&shapes(moving, fixed)).unwrap();
                let first = augmentation.apply(&input, 11).unwrap();
                let again = augmentation.apply(&input, 11).unwrap();
                let other = augmentation.apply(&input, 12).unwrap();
                for ((a, b), c) in all_tensors(&first)
                    .into_iter()
                    .zip(all_tensors(&again))
                    .zip(all_tensors(&other))
                {
                    assert_eq!(values(a), values(b));
                    assert!(max_abs_diff(a, c) > 1e-3, "{config:?}");
                }
                // Output shapes are the input shapes.
                for (a, b) in all_tensors(&input).into_iter().zip(all_tensors(&first)) {
                    assert_eq!(a.dims(), b.dims());
                }
            }
        }
    }

    #[test]
    fn labels_move_with_their_image_and_moving_and_fixed_independently() {
        for (moving, _) in CASES {
            // Moving and fixed hold the same image; each label channel equals the image.
            let image = random(&[&[3, 1][..], moving].concat(), 5);
            let label = Tensor::cat(&[&image, &image], 1).unwrap();
            let input = Batch::pair(
                image.clone(),
                image.clone(),
                Some(label.clone()),
                Some(label),
            );
            let configs: [Box<dyn AugmentationConfig>; 2] = [
                Box::new(affine(0.2)),
                Box::new(ddf(1.5, &[2, 3, 2][..moving.len()])),
            ];
            for config in configs {
                let augmentation = config.build(&shapes(moving, moving)).unwrap();
                let output = augmentation.apply(&input, 3).unwrap();
                for (image, label) in [
                    (
                        output.moving_image().unwrap(),
                        output.moving_label().unwrap(),
                    ),
                    (output.fixed_image().unwrap(), output.fixed_label().unwrap()),
                ] {
                    for channel in 0..2 {
                        let channel = label.narrow(1, channel, 1).unwrap();
                        assert_eq!(values(image), values(&channel), "{config:?}");
                    }
                    assert!(max_abs_diff(image, input.moving_image().unwrap()) > 1e-3);
                }
                // Independent transforms: moving and fixed differ, and so do the images
                // of one batch.
                assert!(
                    max_abs_diff(
                        output.moving_image().unwrap(),
                        output.fixed_image().unwrap()
                    ) > 1e-3
                );
                let first = output.moving_image().unwrap().narrow(0, 0, 1).unwrap();
                let second = output.moving_image().unwrap().narrow(0, 1, 1).unwrap();
                assert!(max_abs_diff(&first, &second) > 1e-3);
            }
        }
    }

    #[test]
    fn unlabelled_batches_stay_unlabelled() {
        let mut input = batch(&[6, 6], &[6, 6]);
        input.tensors.remove(names::MOVING_LABEL);
        input.tensors.remove(names::FIXED_LABEL);
        let augmentation = affine(0.1).build(&shapes(&[6, 6], &[6, 6])).unwrap();
        let output = augmentation.apply(&input, 1).unwrap();
        assert!(output.moving_label().is_none() && output.fixed_label().is_none());
    }

    #[test]
    fn affine_parameters_map_the_corners_as_deepreg() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for ndim in [2, 3] {
            for scale in [0.0, 0.1, 1.0] {
                let theta = random_theta(&mut rng, ndim, scale);
                assert_eq!(theta.len(), (ndim + 1) * ndim);
                // Each corner c = (−1, …) or one coordinate +1 maps to c ⊙ r with r in
                // [1 − scale, 1]: the ratio of mapped to original coordinates.
                for k in 0..=ndim {
                    let mut corner = vec![-1.0; ndim];
                    if k > 0 {
                        corner[ndim - k] = 1.0;
                    }
                    for (a, c) in corner.iter().enumerate() {
                        let mapped: f64 = corner
                            .iter()
                            .chain([&1.0])
                            .enumerate()
                            .map(|(q, v)| v * theta[q * ndim + a])
                            .sum();
                        let ratio = mapped / c;
                        assert!(
                            ratio >= 1.0 - scale - 1e-12 && ratio <= 1.0 + 1e-12,
                            "{ratio} for scale {scale}"
                        );
                    }
                }
            }
        }
        // Scale 0: the identity [I; 0].
        let theta = random_theta(&mut rng, 3, 0.0);
        let identity = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        for (t, i) in theta.iter().zip(identity) {
            assert!((t - i).abs() < 1e-12, "{theta:?}");
        }
    }

    #[test]
    fn least_squares_fits_an_overdetermined_line() {
        // Points (0, 1), (1, 2), (2, 2): y = a x + b with a = 1/2, b = 7/6.
        let a = vec![vec![0.0, 1.0], vec![1.0, 1.0], vec![2.0, 1.0]];
        let b = vec![vec![1.0], vec![2.0], vec![2.0]];
        let x = least_squares(&a, &b);
        assert!(
            (x[0] - 0.5).abs() < 1e-12 && (x[1] - 7.0 / 6.0).abs() < 1e-12,
            "{x:?}"
        );
    }

    #[test]
    fn a_one_voxel_low_res_field_translates_the_image() {
        // low_res_size all 1: one random shift per image and axis. On a ramp image
        // v = i + 2j the warped interior differs from the input by the constant d_i + 2 d_j.
        let ramp: Vec<f32> = (0..10)
            .flat_map(|i| (0..10).map(move |j| (i + 2 * j) as f32 / 30.0))
            .collect();
        let image = Tensor::from_vec(ramp, (1, 1, 10, 10), &Device::Cpu).unwrap();
        let input = Batch::pair(image.clone(), image.clone(), None, None);
        let augmentation = ddf(0.5, &[1, 1, 1])
            .build(&shapes(&[10, 10], &[10, 10]))
            .unwrap();
        let output = augmentation.apply(&input, 4).unwrap();
        let interior = |t: &Tensor| {
            let t = t.narrow(2, 3, 4).unwrap().narrow(3, 3, 4).unwrap();
            values(&t)
        };
        let difference: Vec<f32> = interior(output.moving_image().unwrap())
            .iter()
            .zip(interior(&image))
            .map(|(o, i)| o - i)
            .collect();
        assert!(difference[0].abs() > 1e-4, "{difference:?}");
        assert!(difference.iter().all(|d| (d - difference[0]).abs() < 1e-5));
    }

    #[test]
    fn bad_configs_and_batches_are_errors() {
        let invalid = |result: Result<Box<dyn Augmentation>, ComponentError>| match result {
            Err(error @ ComponentError::InvalidConfig { .. }) => error.to_string(),
            Err(other) => panic!("expected an invalid-config error, got {other}"),
            Ok(_) => panic!("expected an invalid-config error"),
        };
        let s3 = shapes(&[4, 4, 4], &[4, 4, 4]);
        for scale in [-0.1, 1.5, f64::NAN] {
            assert!(invalid(affine(scale).build(&s3)).contains("scale"));
        }
        for strength in [-1.0, f64::INFINITY] {
            assert!(invalid(ddf(strength, &[1, 1, 1]).build(&s3)).contains("field_strength"));
        }
        assert!(invalid(ddf(1.0, &[2, 2]).build(&s3)).contains("low_res_size"));
        assert!(invalid(ddf(1.0, &[5, 1, 1]).build(&s3)).contains("low_res_size"));
        assert!(invalid(ddf(1.0, &[0, 1, 1]).build(&s3)).contains("low_res_size"));
        assert!(invalid(ddf(1.0, &[2, 2, 2]).build(&shapes(&[4, 4], &[4, 4]))).contains("low_res"));
        // The default [1, 1, 1] serves 2D images too.
        assert!(ddf(1.0, &[1, 1, 1])
            .build(&shapes(&[4, 4], &[4, 4]))
            .is_ok());
        assert!(invalid(affine(0.1).build(&shapes(&[4], &[4]))).contains("spatial"));
        assert!(invalid(affine(0.1).build(&shapes(&[4, 4], &[4, 4, 4]))).contains("spatial"));
        // A batch of the wrong rank, or labels that do not match their images.
        let augmentation = affine(0.1).build(&s3).unwrap();
        let flat = batch(&[4, 4], &[4, 4]);
        assert!(augmentation.apply(&flat, 0).is_err());
        let mut mismatched = batch(&[4, 4, 4], &[4, 4, 4]);
        mismatched.tensors.put(
            names::FIXED_LABEL,
            Kind::Label,
            Grid::Fixed,
            random(&[2, 1, 4, 4, 3], 0),
        );
        let message = augmentation
            .apply(&mismatched, 0)
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("fixed") && message.contains("labels"),
            "{message}"
        );
    }

    #[test]
    fn deepreg_yaml_reaches_the_augmentations_through_the_registry() {
        use voxreg_framework::config::ConfigDocument;
        let registry = Registry::linked().unwrap();
        for (name, yaml) in [("affine", "scale: 0.2\n"), ("ddf", "field_strength: 2\n")] {
            let value = ConfigDocument::parse(yaml, "aug.yaml".as_ref())
                .unwrap()
                .value;
            let config = registry
                .decode::<dyn AugmentationConfig>(name, value)
                .unwrap();
            let augmentation = config.build(&shapes(&[4, 5, 6], &[4, 5, 6])).unwrap();
            assert!(augmentation
                .apply(&batch(&[4, 5, 6], &[4, 5, 6]), 1)
                .is_ok());
        }
    }
}
