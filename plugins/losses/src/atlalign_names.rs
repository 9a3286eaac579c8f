//! atlalign's loss names (the keys of `ALL_IMAGE_LOSSES` and `ALL_DVF_LOSSES` in
//! `atlalign/ml_utils/__init__.py`) that stand for a voxreg loss with fixed settings, so a
//! config can name them as atlalign users write them (also in mixer terms, `vdclip2&mse_po`):
//! image losses `ncc_5`, `ncc_9`, `ncc_12`, `ncc_20` (`vxm_ncc` with that window, PyTorch's
//! formula, ε = 10⁻⁵: atlalign's `NCC(win)`), field losses `vdclip2` and `vdclip3` (`vdclip`
//! with threshold 20 and power 2 or 3), and the regulariser `grad` (`vxm_grad` with the L1
//! penalty: atlalign's `Grad('l1')`). Each takes no keys.

use serde::{Deserialize, Serialize};
use voxreg_framework::prelude::*;

use crate::atlalign::VdClipConfig;
use crate::voxelmorph::{GradPenalty, VxmGradConfig, VxmNccConfig};

/// Defines a key-less image loss `name` that is `vxm_ncc` with window `win`.
macro_rules! atlalign_ncc {
    ($config:ident, $name:literal, $win:literal, $description:literal) => {
        #[doc = concat!("`", $name, "`: atlalign's `NCC(", stringify!($win), ")`, i.e. `vxm_ncc` with `win: ", stringify!($win), "` (no keys).")]
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $config {}

        #[typetag::serialize(name = $name)]
        impl ImageLossConfig for $config {
            fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
                VxmNccConfig {
                    win: vec![$win],
                    eps: 1e-5,
                    clamp: false,
                }
                .build(spatial_dims)
            }
        }

        register_component!(
            image_loss,
            $name,
            $config,
            $description
        );
    };
}

atlalign_ncc!(
    AtlalignNcc5Config,
    "ncc_5",
    5,
    "atlalign's NCC with window 5 (vxm_ncc, win 5)"
);
atlalign_ncc!(
    AtlalignNcc9Config,
    "ncc_9",
    9,
    "atlalign's NCC with window 9 (vxm_ncc, win 9)"
);
atlalign_ncc!(
    AtlalignNcc12Config,
    "ncc_12",
    12,
    "atlalign's NCC with window 12 (vxm_ncc, win 12)"
);
atlalign_ncc!(
    AtlalignNcc20Config,
    "ncc_20",
    20,
    "atlalign's NCC with window 20 (vxm_ncc, win 20)"
);

/// Defines a key-less field loss `name` that is `vdclip` with threshold 20 and `power`.
macro_rules! atlalign_vdclip {
    ($config:ident, $name:literal, $power:literal, $description:literal) => {
        #[doc = concat!("`", $name, "`: atlalign's `", $name, "`, i.e. `vdclip` with threshold 20 and power ", stringify!($power), " (no keys).")]
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $config {}

        #[typetag::serialize(name = $name)]
        impl FieldLossConfig for $config {
            fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
                VdClipConfig {
                    threshold: 20.0,
                    power: $power,
                }
                .build(spatial_dims)
            }
        }

        register_component!(
            field_loss,
            $name,
            $config,
            $description
        );
    };
}

atlalign_vdclip!(
    AtlalignVdClip2Config,
    "vdclip2",
    2.0,
    "atlalign's vdclip2: (vector_distance / 20)^2"
);
atlalign_vdclip!(
    AtlalignVdClip3Config,
    "vdclip3",
    3.0,
    "atlalign's vdclip3: (vector_distance / 20)^3"
);

/// `grad`: atlalign's `Grad('l1')`, i.e. `vxm_grad` with the L1 penalty (no keys).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtlalignGradConfig {}

#[typetag::serialize(name = "grad")]
impl RegularizationConfig for AtlalignGradConfig {
    fn build(&self, spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        VxmGradConfig {
            penalty: GradPenalty::L1,
            loss_mult: None,
        }
        .build(spatial_dims)
    }
}

register_component!(
    regularization,
    "grad",
    AtlalignGradConfig,
    "atlalign's Grad('l1'): mean |forward differences| (vxm_grad, l1)"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, pseudo_random};
    use voxreg_framework::candle;

    #[test]
    fn the_names_are_their_voxreg_losses() -> candle::Result<()> {
        let fixed = pseudo_random(&[2, 1, 24, 26], 0.0, 1.0, 41);
        let warped = pseudo_random(&[2, 1, 24, 26], 0.0, 1.0, 42);
        for (alias, win) in [
            (
                Box::new(AtlalignNcc5Config {}) as Box<dyn ImageLossConfig>,
                5,
            ),
            (Box::new(AtlalignNcc12Config {}), 12),
        ] {
            let direct = VxmNccConfig {
                win: vec![win],
                eps: 1e-5,
                clamp: false,
            }
            .build(2)
            .unwrap()
            .loss(&warped, Some(&fixed))?;
            let value = alias.build(2).unwrap().loss(&warped, Some(&fixed))?;
            assert_close(&value, &direct.to_vec1::<f64>()?, 0.0);
        }
        let u = pseudo_random(&[1, 2, 5, 6], -30.0, 30.0, 43);
        let v = pseudo_random(&[1, 2, 5, 6], -30.0, 30.0, 44);
        let direct = VdClipConfig {
            threshold: 20.0,
            power: 3.0,
        }
        .build(2)
        .unwrap()
        .loss(&u, Some(&v))?;
        let alias = AtlalignVdClip3Config {}
            .build(2)
            .unwrap()
            .loss(&u, Some(&v))?;
        assert_close(&alias, &direct.to_vec1::<f64>()?, 0.0);
        let grad = AtlalignGradConfig {}.build(2).unwrap().loss(&u, None)?;
        let l1 = VxmGradConfig {
            penalty: GradPenalty::L1,
            loss_mult: None,
        }
        .build(2)
        .unwrap()
        .loss(&u, None)?;
        assert_close(&grad, &l1.to_vec1::<f64>()?, 0.0);
        Ok(())
    }
}
