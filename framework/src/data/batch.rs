//! Stacking loaded samples into the model's tensors.

use candle_core::{Device, Tensor};

use crate::component::{Batch, ImageId, ImageShapes, Sample, SampleRef};

/// What each batch element is, for outputs and metrics rows.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchInfo {
    /// Which pair and label each element is.
    pub references: Vec<SampleRef>,
    /// Ids of the moving and fixed images of each element.
    pub ids: Vec<(ImageId, ImageId)>,
    /// The fixed image's voxel-to-world affine of each element (on the resized grid).
    pub fixed_affines: Vec<[[f64; 4]; 4]>,
}

fn moving_image(sample: &Sample) -> &[f32] {
    &sample.moving_image
}

fn fixed_image(sample: &Sample) -> &[f32] {
    &sample.fixed_image
}

fn moving_label(sample: &Sample) -> &[f32] {
    sample.moving_label.as_deref().unwrap_or_default()
}

fn fixed_label(sample: &Sample) -> &[f32] {
    sample.fixed_label.as_deref().unwrap_or_default()
}

fn stack(
    samples: &[Sample],
    pick: fn(&Sample) -> &[f32],
    shape: &[usize],
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut dims = vec![samples.len(), 1];
    dims.extend_from_slice(shape);
    let data: Vec<f32> = samples
        .iter()
        .flat_map(|s| pick(s).iter().copied())
        .collect();
    Tensor::from_vec(data, dims, device)
}

/// Stacks samples into a [`Batch`]: images `(N, 1, *shape)`, labels `(N, 1, *shape)` when
/// every sample has them, and every further tensor the samples provide (each sample must
/// provide the same ones, of one shape). A sample whose data does not fit the shapes is an
/// error.
pub fn to_batch(
    samples: &[Sample],
    shapes: &ImageShapes,
    device: &Device,
) -> candle_core::Result<(Batch, BatchInfo)> {
    let labeled = !samples.is_empty()
        && samples
            .iter()
            .all(|s| s.moving_label.is_some() && s.fixed_label.is_some());
    let (moving_label, fixed_label) = if labeled {
        (
            Some(stack(samples, moving_label, &shapes.moving, device)?),
            Some(stack(samples, fixed_label, &shapes.fixed, device)?),
        )
    } else {
        (None, None)
    };
    let mut batch = Batch::pair(
        stack(samples, moving_image, &shapes.moving, device)?,
        stack(samples, fixed_image, &shapes.fixed, device)?,
        moving_label,
        fixed_label,
    );
    if let Some(first) = samples.first() {
        for (index, (decl, shape, _)) in first.extra.iter().enumerate() {
            let mut data = Vec::with_capacity(samples.len() * shape.iter().product::<usize>());
            for sample in samples {
                match sample.extra.get(index) {
                    Some((d, s, values)) if d == decl && s == shape => {
                        data.extend_from_slice(values)
                    }
                    _ => candle_core::bail!(
                        "the samples of a batch disagree on `{}`: each must provide it with shape {shape:?}",
                        decl.name
                    ),
                }
            }
            let mut dims = vec![samples.len()];
            dims.extend_from_slice(shape);
            batch
                .tensors
                .insert(decl.clone(), Tensor::from_vec(data, dims, device)?);
        }
    }
    let info = BatchInfo {
        references: samples.iter().map(|s| s.reference.clone()).collect(),
        ids: samples.iter().map(|s| s.ids.clone()).collect(),
        fixed_affines: samples.iter().map(|s| s.fixed_affine).collect(),
    };
    Ok((batch, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(value: f32, labeled: bool) -> Sample {
        let id = ImageId {
            group: None,
            name: "x".to_owned(),
        };
        Sample {
            reference: SampleRef {
                moving: 0,
                fixed: 0,
                label: labeled.then_some(0),
            },
            ids: (id.clone(), id),
            moving_image: vec![value; 8],
            fixed_image: vec![value; 4],
            moving_label: labeled.then(|| vec![1.0; 8]),
            fixed_label: labeled.then(|| vec![0.0; 4]),
            fixed_affine: [[1.0; 4]; 4],
            extra: Vec::new(),
        }
    }

    #[test]
    fn stacks_images_and_labels_channel_first() {
        let shapes = ImageShapes {
            moving: vec![2, 2, 2],
            fixed: vec![2, 2],
        };
        let (batch, info) = to_batch(
            &[sample(1.0, true), sample(2.0, true)],
            &shapes,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(batch.moving_image().unwrap().dims(), &[2, 1, 2, 2, 2]);
        assert_eq!(batch.fixed_image().unwrap().dims(), &[2, 1, 2, 2]);
        assert_eq!(batch.moving_label().unwrap().dims(), &[2, 1, 2, 2, 2]);
        assert_eq!(info.ids.len(), 2);
        let (batch, _) = to_batch(
            &[sample(1.0, true), sample(2.0, false)],
            &shapes,
            &Device::Cpu,
        )
        .unwrap();
        assert!(
            batch.moving_label().is_none(),
            "labels only when every sample has them"
        );
    }

    #[test]
    fn data_that_does_not_fit_the_shape_is_an_error() {
        let shapes = ImageShapes {
            moving: vec![3, 3],
            fixed: vec![2, 2],
        };
        assert!(to_batch(&[sample(1.0, false)], &shapes, &Device::Cpu).is_err());
    }
}
