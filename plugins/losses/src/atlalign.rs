//! atlalign's field losses (`atlalign/ml_utils/losses.py`, version 0.6.2) as field losses:
//! a predicted DDF `u` against the true one `v`, both `(N, ndim, *spatial)` in voxels, with
//! the error `e = u − v`.
//!
//! atlalign averages over the batch inside each loss; here each returns one value per pair
//! and the training step takes the batch mean, which is the same for `vector_distance` and
//! `mse_po`. `vdclip` powers each pair's end-point error, where atlalign powers the batch's
//! mean: the two agree for a batch of one, and a pair's loss here does not depend on the
//! pairs it is batched with.

use serde::{Deserialize, Serialize};
use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::config::Component;
use voxreg_framework::prelude::*;

use crate::field::check_fields;
use crate::util::check_spatial_dims;

/// atlalign's ε inside the square root of `vector_distance`.
pub const VECTOR_DISTANCE_EPSILON: f64 = 1.0e-3;

/// The mean end-point error of each pair, `mean_x √(Σ_i e_i(x)² + ε)` with atlalign's
/// `ε` = 10⁻³ (which keeps the gradient finite where `e = 0`).
///
/// # Shapes
/// `u`, `v`: `(N, ndim, *spatial)` → `(N,)`.
fn end_point_error(u: &Tensor, v: &Tensor) -> candle::Result<Tensor> {
    ((u - v)?.sqr()?.sum_keepdim(1)? + VECTOR_DISTANCE_EPSILON)?
        .sqrt()?
        .flatten_from(1)?
        .mean(1)
}

/// `vector_distance`: atlalign's Euclidean end-point error,
/// `mean_x √(Σ_i (u_i(x) − v_i(x))² + ε)`, ε = 10⁻³, in voxels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorDistanceConfig {}

struct VectorDistance {
    spatial_dims: usize,
}

impl Loss for VectorDistance {
    fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle::Result<Tensor> {
        const NAME: &str = "field_loss `vector_distance`";
        let target = required_target(NAME, target)?;
        check_fields(NAME, self.spatial_dims, prediction, target)?;
        end_point_error(prediction, target)
    }
}

#[typetag::serialize(name = "vector_distance")]
impl FieldLossConfig for VectorDistanceConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        check_spatial_dims("field_loss `vector_distance`", spatial_dims)?;
        Ok(Box::new(VectorDistance { spatial_dims }))
    }
}

register_component!(
    field_loss,
    "vector_distance",
    VectorDistanceConfig,
    "atlalign's mean end-point error of two fields, √(|u − v|² + 0.001) averaged over voxels"
);

/// `vdclip`: atlalign's `VDClipper`, `(vector_distance / threshold)^power`. Despite its name
/// it does not clip: errors below `threshold` voxels weigh less than linearly, errors above
/// more. atlalign's `vdclip2` is `power: 2`, `vdclip3` is `power: 3`, both with threshold 20.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VdClipConfig {
    /// The error (voxels) at which the loss is 1; default 20.
    pub threshold: f64,
    /// The power; default 3 (`VDClipper`'s default).
    pub power: f64,
}

impl Default for VdClipConfig {
    fn default() -> Self {
        Self {
            threshold: 20.0,
            power: 3.0,
        }
    }
}

struct VdClip {
    spatial_dims: usize,
    threshold: f64,
    power: f64,
}

impl Loss for VdClip {
    fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle::Result<Tensor> {
        const NAME: &str = "field_loss `vdclip`";
        let target = required_target(NAME, target)?;
        check_fields(NAME, self.spatial_dims, prediction, target)?;
        (end_point_error(prediction, target)? / self.threshold)?.powf(self.power)
    }
}

#[typetag::serialize(name = "vdclip")]
impl FieldLossConfig for VdClipConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        const NAME: &str = "field_loss `vdclip`";
        check_spatial_dims(NAME, spatial_dims)?;
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(ComponentError::invalid(
                NAME,
                format!(
                    "threshold must be a positive number of voxels, got {}",
                    self.threshold
                ),
            ));
        }
        if !(self.power.is_finite() && self.power > 0.0) {
            return Err(ComponentError::invalid(
                NAME,
                format!("power must be a positive number, got {}", self.power),
            ));
        }
        Ok(Box::new(VdClip {
            spatial_dims,
            threshold: self.threshold,
            power: self.power,
        }))
    }
}

register_component!(
    field_loss,
    "vdclip",
    VdClipConfig,
    "atlalign's VDClipper: (vector_distance / threshold)^power (vdclip2 = power 2)"
);

/// `mse_po`: atlalign's per-offset squared error, `mean_x Σ_i (u_i(x) − v_i(x))²`: the
/// components summed, the voxels averaged (`ndim` times the field `ssd`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsePoConfig {}

struct MsePo {
    spatial_dims: usize,
}

impl Loss for MsePo {
    fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle::Result<Tensor> {
        const NAME: &str = "field_loss `mse_po`";
        let target = required_target(NAME, target)?;
        check_fields(NAME, self.spatial_dims, prediction, target)?;
        (prediction - target)?
            .sqr()?
            .sum_keepdim(1)?
            .flatten_from(1)?
            .mean(1)
    }
}

#[typetag::serialize(name = "mse_po")]
impl FieldLossConfig for MsePoConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        check_spatial_dims("field_loss `mse_po`", spatial_dims)?;
        Ok(Box::new(MsePo { spatial_dims }))
    }
}

register_component!(
    field_loss,
    "mse_po",
    MsePoConfig,
    "atlalign's squared end-point error, Σ_i (u_i − v_i)² averaged over voxels"
);

fn ten() -> f64 {
    10.0
}

/// `dvf2img`: atlalign's `DVF2IMG` rule, an image loss applied to each component of the two
/// fields as if it were an image, scaled down by `scale`:
/// `Σ_i w_i · loss(u_i / scale, v_i / scale)` with `u` the prediction and `v` the truth.
/// atlalign's defaults: `scale` 10, weights 0.5 and 0.5 (here `1 / ndim` each); `weights`,
/// if given, follow voxreg's component order (rows first).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dvf2ImgConfig {
    /// The image loss (a bare name or a mapping with `name`), e.g. `pearson`, `ssim`.
    pub loss: Component<dyn ImageLossConfig>,
    /// The field components are divided by this before the image loss (> 0).
    #[serde(default = "ten")]
    pub scale: f64,
    /// One weight per component; default `1 / ndim` each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
}

struct Dvf2Img {
    spatial_dims: usize,
    image: Box<dyn Loss>,
    scale: f64,
    weights: Vec<f64>,
}

impl Loss for Dvf2Img {
    fn loss(&self, prediction: &Tensor, target: Option<&Tensor>) -> candle::Result<Tensor> {
        const NAME: &str = "field_loss `dvf2img`";
        let target = required_target(NAME, target)?;
        check_fields(NAME, self.spatial_dims, prediction, target)?;
        let mut total: Option<Tensor> = None;
        for (i, &weight) in self.weights.iter().enumerate() {
            let u = (prediction.narrow(1, i, 1)? / self.scale)?;
            let v = (target.narrow(1, i, 1)? / self.scale)?;
            let term = (self.image.loss(&u, Some(&v))? * weight)?;
            total = Some(match total {
                Some(sum) => (sum + term)?,
                None => term,
            });
        }
        total.ok_or_else(|| candle::Error::Msg(format!("{NAME}: no field component")))
    }
}

#[typetag::serialize(name = "dvf2img")]
impl FieldLossConfig for Dvf2ImgConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        const NAME: &str = "field_loss `dvf2img`";
        check_spatial_dims(NAME, spatial_dims)?;
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(ComponentError::invalid(
                NAME,
                format!("scale must be a positive number, got {}", self.scale),
            ));
        }
        let weights = match &self.weights {
            None => vec![1.0 / spatial_dims as f64; spatial_dims],
            Some(w) if w.len() == spatial_dims && w.iter().all(|v| v.is_finite() && *v >= 0.0) => {
                w.clone()
            }
            Some(w) => {
                return Err(ComponentError::invalid(
                    NAME,
                    format!(
                        "weights must hold {spatial_dims} numbers ≥ 0 (one per field component), got {w:?}"
                    ),
                ))
            }
        };
        Ok(Box::new(Dvf2Img {
            spatial_dims,
            image: self.loss.build(spatial_dims)?,
            scale: self.scale,
            weights,
        }))
    }
}

register_component!(
    field_loss,
    "dvf2img",
    Dvf2ImgConfig,
    "atlalign's DVF2IMG: an image loss on each field component (÷ 10), weighted 1/ndim each"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, pseudo_random};
    use voxreg_framework::candle::Device;

    /// A 2D field `(1, 2, 2, 2)` from its row and column components.
    fn field(rows: [f64; 4], cols: [f64; 4]) -> Tensor {
        let values: Vec<f64> = rows.iter().chain(&cols).copied().collect();
        Tensor::from_vec(values, (1, 2, 2, 2), &Device::Cpu).unwrap()
    }

    fn zero() -> Tensor {
        field([0.0; 4], [0.0; 4])
    }

    /// Errors of lengths 5 (3-4-5), 0, 1 and 2 voxels.
    fn errors() -> Tensor {
        field([3.0, 0.0, 1.0, 0.0], [4.0, 0.0, 0.0, -2.0])
    }

    #[test]
    fn vector_distance_is_the_mean_end_point_error_with_atlaligns_epsilon() -> candle::Result<()> {
        let loss = VectorDistanceConfig {}.build(2).unwrap();
        let value = loss.loss(&errors(), Some(&zero()))?;
        let eps = VECTOR_DISTANCE_EPSILON;
        let expected =
            ((25.0 + eps).sqrt() + eps.sqrt() + (1.0 + eps).sqrt() + (4.0 + eps).sqrt()) / 4.0;
        assert_close(&value, &[expected], 1e-12);
        Ok(())
    }

    #[test]
    fn vdclip_powers_the_error_relative_to_the_threshold() -> candle::Result<()> {
        let eps = VECTOR_DISTANCE_EPSILON;
        let epe =
            ((25.0 + eps).sqrt() + eps.sqrt() + (1.0 + eps).sqrt() + (4.0 + eps).sqrt()) / 4.0;
        for (threshold, power) in [(20.0, 3.0), (20.0, 2.0), (2.0, 0.5)] {
            let loss = VdClipConfig { threshold, power }.build(2).unwrap();
            let value = loss.loss(&errors(), Some(&zero()))?;
            assert_close(&value, &[(epe / threshold).powf(power)], 1e-12);
        }
        let bad = VdClipConfig {
            threshold: 0.0,
            power: 2.0,
        };
        assert!(bad.build(2).is_err());
        Ok(())
    }

    #[test]
    fn mse_po_sums_components_and_averages_voxels() -> candle::Result<()> {
        let loss = MsePoConfig {}.build(2).unwrap();
        let value = loss.loss(&errors(), Some(&zero()))?;
        assert_close(&value, &[(25.0 + 0.0 + 1.0 + 4.0) / 4.0], 1e-12);
        Ok(())
    }

    #[test]
    fn each_pair_gets_its_own_value_and_shapes_are_checked() -> candle::Result<()> {
        let u = Tensor::cat(&[errors(), zero()], 0)?;
        let v = Tensor::cat(&[zero(), zero()], 0)?;
        let loss = MsePoConfig {}.build(2).unwrap();
        assert_close(&loss.loss(&u, Some(&v))?, &[7.5, 0.0], 1e-12);
        assert!(loss.loss(&u, None).is_err());
        let three = Tensor::zeros((1, 3, 2, 2), DType::F64, &Device::Cpu)?;
        assert!(loss.loss(&three, Some(&three)).is_err());
        Ok(())
    }

    /// A field loss decoded from YAML through the registry, as a config names it.
    fn decoded(yaml: &str) -> Result<Box<dyn Loss>, String> {
        let registry = Registry::linked().map_err(|e| e.to_string())?;
        let document = voxreg_framework::config::ConfigDocument::parse(
            yaml,
            std::path::Path::new("test.yaml"),
        )
        .map_err(|e| e.to_string())?;
        let mut mapping = document.value.as_mapping().cloned().ok_or("a mapping")?;
        let name = mapping
            .remove("name")
            .and_then(|n| n.as_str().map(str::to_owned))
            .ok_or("a name")?;
        let config = registry
            .decode::<dyn FieldLossConfig>(
                &name,
                voxreg_framework::config::ConfigValue::Mapping(mapping),
            )
            .map_err(|e| e.to_string())?;
        config.build(2).map_err(|e| e.to_string())
    }

    #[test]
    fn dvf2img_applies_the_image_loss_to_each_scaled_component() -> candle::Result<()> {
        // DeepReg's ssd on the components ÷ 10: rows (3/10)², columns (4/10)², each × ½.
        let loss = decoded("{name: dvf2img, loss: ssd}").expect("decodes");
        let value = loss.loss(&field([3.0; 4], [4.0; 4]), Some(&zero()))?;
        assert_close(&value, &[0.5 * 0.09 + 0.5 * 0.16], 1e-12);
        let weighted = decoded("{name: dvf2img, loss: {name: ssd}, scale: 1, weights: [1, 0]}")
            .expect("decodes");
        let value = weighted.loss(&field([3.0; 4], [4.0; 4]), Some(&zero()))?;
        assert_close(&value, &[9.0], 1e-12);
        let unknown = decoded("{name: dvf2img, loss: ssdd}")
            .err()
            .expect("refused");
        assert!(unknown.contains("ssdd"), "{unknown}");
        let bad = decoded("{name: dvf2img, loss: ssd, weights: [1]}")
            .err()
            .expect("refused");
        assert!(bad.contains("weights must hold 2"), "{bad}");
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences_in_2d_and_3d() {
        for shape in [vec![2, 2, 4, 3], vec![1, 3, 3, 2, 3]] {
            let u = pseudo_random(&shape, -2.0, 2.0, 5);
            let v = pseudo_random(&shape, -2.0, 2.0, 6);
            let ndim = shape.len() - 2;
            let losses = [
                VectorDistanceConfig {}.build(ndim).unwrap(),
                VdClipConfig {
                    threshold: 3.0,
                    power: 2.0,
                }
                .build(ndim)
                .unwrap(),
                MsePoConfig {}.build(ndim).unwrap(),
            ];
            for loss in &losses {
                check_gradient(|x| loss.loss(x, Some(&v)), &u, 1e-5);
            }
        }
    }
}
