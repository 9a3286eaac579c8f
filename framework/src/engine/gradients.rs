//! Back-propagation for a training step: the weights' gradients, detached from the graph.
//!
//! candle's `backward` detaches the gradient of every intermediate tensor, but not the
//! summed gradient of a variable: that one is whatever expression the last op's backward
//! built. When the op's other input is itself computed from variables (the hypernetwork's
//! heads, `w = h·K`, give `∂L/∂K = hᵀ·∂L/∂w` with `h` from the MLP), the gradient still
//! tracks its graph, and an optimiser that folds it into its running state
//! (`m ← β·m + (1 − β)·g`) chains every step's state onto the previous one: memory grows by
//! the state's size at every step. Detaching each weight's gradient once, here, keeps every
//! optimiser (plugins' too) free of that.

use candle_core::{Result, Tensor, Var};

/// The gradients of `total` with respect to every tensor it depends on, where each of
/// `weights`' gradients is detached (a plain value with no graph behind it).
pub(crate) fn backward_detached<'a>(
    total: &Tensor,
    weights: impl IntoIterator<Item = &'a Var>,
) -> Result<candle_core::backprop::GradStore> {
    let mut grads = total.backward()?;
    for weight in weights {
        if let Some(gradient) = grads.remove(weight.as_tensor()) {
            grads.insert(weight.as_tensor(), gradient.detach());
        }
    }
    Ok(grads)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::backward_detached;

    #[test]
    fn a_weights_gradient_through_a_computed_input_comes_back_detached() {
        let device = Device::Cpu;
        let mlp = Var::new(&[[0.5f32, -1.0]], &device).unwrap();
        let head = Var::new(&[[1.0f32, 2.0], [3.0, 4.0]], &device).unwrap();
        let h = mlp.as_tensor().relu().unwrap();
        let total = h.matmul(head.as_tensor()).unwrap().sum_all().unwrap();

        let plain = total.backward().unwrap();
        assert!(
            plain.get(head.as_tensor()).unwrap().track_op(),
            "candle's own backward leaves this gradient on the graph (why the helper exists)"
        );
        let grads = backward_detached(&total, [&mlp, &head]).unwrap();
        let gradient = grads.get(head.as_tensor()).unwrap();
        assert!(!gradient.track_op());
        // ∂/∂K Σ h·K = hᵀ·1 = [[0.5, 0.5], [0, 0]] (relu(−1) = 0).
        assert_eq!(
            gradient.to_vec2::<f32>().unwrap(),
            vec![vec![0.5, 0.5], vec![0.0, 0.0]]
        );
    }
}
