//! Splitting a batch into groups of samples with equal hyperparameters, and putting the
//! groups' outputs back in the batch's order: how a model whose weights depend on each
//! sample's hyperparameters (a hypernetwork) runs a batch that mixes values.

use candle_core::Tensor;

use super::{tensor_error, EngineError};
use crate::component::{Batch, Tensors};

/// The sample indices of each group of equal hyperparameters, groups in the order of their
/// first sample, indices ascending. A batch without hyperparameters is one group.
pub(super) fn groups(batch: &Batch) -> Result<Vec<Vec<usize>>, EngineError> {
    let n = batch.batch_size().map_err(tensor_error("a batch"))?;
    let columns = batch
        .hyper
        .iter()
        .map(|(name, values)| {
            values
                .to_dtype(candle_core::DType::F32)
                .and_then(|v| v.to_vec1::<f32>())
                .map_err(tensor_error(format!("the hyperparameter `{name}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(((name, _), column)) = batch.hyper.iter().zip(&columns).find(|(_, c)| c.len() != n)
    {
        return Err(EngineError::Config(format!(
            "the hyperparameter `{name}` has {} values for a batch of {n}",
            column.len()
        )));
    }
    let key = |i: usize| -> Vec<u32> { columns.iter().map(|c| c[i].to_bits()).collect() };
    let mut groups: Vec<(Vec<u32>, Vec<usize>)> = Vec::new();
    for i in 0..n {
        let k = key(i);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    Ok(groups.into_iter().map(|(_, members)| members).collect())
}

fn index_tensor(indices: &[usize], like: &Tensor) -> candle_core::Result<Tensor> {
    let indices: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
    Tensor::from_vec(indices.clone(), indices.len(), like.device())
}

/// The samples `indices` of `batch`: every tensor and hyperparameter taken along axis 0.
pub(super) fn select(batch: &Batch, indices: &[usize]) -> Result<Batch, EngineError> {
    let take = |t: &Tensor| index_tensor(indices, t).and_then(|i| t.index_select(&i, 0));
    let tensors = batch
        .tensors
        .map(|_, t| take(t))
        .map_err(tensor_error("taking a group of samples out of a batch"))?;
    let hyper = batch
        .hyper
        .iter()
        .map(|(name, t)| Ok((name.clone(), take(t)?)))
        .collect::<candle_core::Result<_>>()
        .map_err(tensor_error("taking a group of samples out of a batch"))?;
    Ok(Batch { tensors, hyper })
}

/// One output per name: the groups' outputs concatenated along axis 0 and reordered so that
/// row `i` is sample `i` of the batch.
///
/// # Shapes
/// Each group's tensor `(n_g, …)`; the result `(Σ n_g, …)`.
pub(super) fn reassemble(
    outputs: &[Tensors],
    groups: &[Vec<usize>],
) -> Result<Tensors, EngineError> {
    let context = tensor_error("putting the groups' outputs back in the batch's order");
    let Some(first) = outputs.first() else {
        return Ok(Tensors::new());
    };
    let order: Vec<usize> = groups.iter().flatten().copied().collect();
    let mut inverse = vec![0usize; order.len()];
    for (position, &sample) in order.iter().enumerate() {
        inverse[sample] = position;
    }
    first
        .map(|decl, tensor| {
            let parts = outputs
                .iter()
                .map(|o| o.require(&decl.name).cloned())
                .collect::<candle_core::Result<Vec<_>>>()?;
            let joined = Tensor::cat(&parts, 0)?;
            joined.index_select(&index_tensor(&inverse, tensor)?, 0)
        })
        .map_err(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::{Grid, Kind};
    use candle_core::Device;

    #[test]
    fn samples_with_equal_values_share_a_group_and_outputs_return_in_order() {
        let image = Tensor::arange(0f32, 4.0, &Device::Cpu)
            .unwrap()
            .reshape((4, 1, 1, 1))
            .unwrap();
        let mut batch = Batch::pair(image.clone(), image, None, None);
        let lambda = Tensor::new(&[0.5f32, 0.1, 0.5, 0.9], &Device::Cpu).unwrap();
        batch.hyper.push(("lambda".to_owned(), lambda));
        let groups = groups(&batch).unwrap();
        assert_eq!(groups, vec![vec![0, 2], vec![1], vec![3]]);
        let outputs: Vec<Tensors> = groups
            .iter()
            .map(|g| {
                let part = select(&batch, g).unwrap();
                let mut out = Tensors::new();
                let doubled = (part.moving_image().unwrap() * 2.0).unwrap();
                out.put("ddf", Kind::Field, Grid::Fixed, doubled);
                out
            })
            .collect();
        let joined = reassemble(&outputs, &groups).unwrap();
        let values = joined.get("ddf").unwrap().flatten_all().unwrap();
        assert_eq!(values.to_vec1::<f32>().unwrap(), [0.0, 2.0, 4.0, 6.0]);
        let plain = Batch::pair(
            Tensor::zeros((3, 1, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap(),
            Tensor::zeros((3, 1, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap(),
            None,
            None,
        );
        assert_eq!(super::groups(&plain).unwrap(), vec![vec![0, 1, 2]]);
    }
}
