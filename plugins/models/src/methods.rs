//! DeepReg's registration methods (`ddf`, `dvf`, `conditional`): what the backbone predicts
//! and how it becomes a transform. Each may name its own `backbone`; without one it uses
//! `train.backbone`.

use serde::{Deserialize, Serialize};
use voxreg_framework::candle;
use voxreg_framework::prelude::*;

use crate::forward::{
    conditional_forward, ddf_forward, dvf_forward, integration_size, Integration,
};

/// The backbone of a dense-input method: the moving and fixed images in, `out_channels`
/// out, with `head` as the output layer.
fn build_backbone(
    method: &str,
    own: Option<&Component<dyn BackboneConfig>>,
    context: &MethodContext<'_>,
    in_channels: usize,
    out_channels: usize,
    head: Head,
    params: VarBuilder<'_>,
) -> Result<(Box<dyn Backbone>, bool), ComponentError> {
    let config = context.backbone_for(method, own.map(|c| &**c))?;
    let spec = BackboneSpec {
        spatial_dims: context.spatial_dims(),
        image_size: context.shapes.fixed.clone(),
        in_channels,
        out_channels,
        head,
    };
    Ok((config.build(&spec, params)?, config.is_affine()))
}

/// Whether a method uses an affine backbone (its own or the context's).
fn affine_backbone(
    own: Option<&Component<dyn BackboneConfig>>,
    context: &MethodContext<'_>,
) -> bool {
    own.map(|c| &**c)
        .or(context.backbone)
        .is_some_and(|b| b.is_affine())
}

/// The warped moving image and labels a method outputs.
fn warped_decls(context: &MethodContext<'_>) -> Vec<Decl> {
    let mut decls = vec![Decl::new(names::PRED_FIXED_IMAGE, Kind::Image, Grid::Fixed)];
    if context.has_input(names::MOVING_LABEL) {
        decls.push(Decl::new(names::PRED_FIXED_LABEL, Kind::Label, Grid::Fixed));
    }
    decls
}

/// With `bidir`, `pred_moving_image` on the moving grid; `bidir` needs moving and fixed
/// images of one shape (the inverse field lives on the fixed grid).
fn bidir_decls(bidir: bool) -> Vec<Decl> {
    if bidir {
        vec![Decl::new(
            names::PRED_MOVING_IMAGE,
            Kind::Image,
            Grid::Moving,
        )]
    } else {
        Vec::new()
    }
}

fn check_bidir(
    method: &str,
    bidir: bool,
    context: &MethodContext<'_>,
) -> Result<(), ComponentError> {
    if bidir && context.shapes.moving != context.shapes.fixed {
        return Err(ComponentError::invalid(
            format!("method `{method}`"),
            format!(
                "`bidir` needs moving and fixed images of one shape (the fixed image is warped onto the moving grid), got {:?} and {:?}",
                context.shapes.moving, context.shapes.fixed
            ),
        ));
    }
    Ok(())
}

/// `ddf`: the backbone predicts a dense displacement field directly (or, with the `global`
/// backbone, an affine transform turned into a DDF).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DdfMethod {
    /// The network (default: `train.backbone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<Component<dyn BackboneConfig>>,
    /// VoxelMorph's `bidir`: also output `pred_moving_image`, the fixed image warped by the
    /// negated DDF, for a loss term on `[pred_moving_image, moving_image]`.
    #[serde(default)]
    pub bidir: bool,
}

/// A built `ddf` method.
pub(crate) struct Ddf {
    pub(crate) backbone: Box<dyn Backbone>,
    pub(crate) bidir: bool,
}

impl Method for Ddf {
    fn forward(&self, batch: &Batch) -> candle::Result<Tensors> {
        ddf_forward(&*self.backbone, self.bidir, batch)
    }
}

#[typetag::serialize(name = "ddf")]
impl MethodConfig for DdfMethod {
    fn build(
        &self,
        context: &MethodContext<'_>,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Method>, ComponentError> {
        check_bidir("ddf", self.bidir, context)?;
        let ndim = context.spatial_dims();
        let (backbone, _) = build_backbone(
            "ddf",
            self.backbone.as_ref(),
            context,
            2,
            ndim,
            Head::Field,
            params,
        )?;
        Ok(Box::new(Ddf {
            backbone,
            bidir: self.bidir,
        }))
    }

    fn needs_backbone(&self) -> bool {
        self.backbone.is_none()
    }

    fn outputs(&self, context: &MethodContext<'_>) -> Vec<Decl> {
        let mut decls = vec![Decl::new(names::DDF, Kind::Field, Grid::Fixed)];
        if affine_backbone(self.backbone.as_ref(), context) {
            decls.push(Decl::new(names::THETA, Kind::Affine, Grid::None));
        }
        decls.extend(warped_decls(context));
        decls.extend(bidir_decls(self.bidir));
        decls
    }
}

register_component!(
    method,
    "ddf",
    DdfMethod,
    "Predict a dense displacement field (DDF) from the moving and fixed images"
);

/// `dvf`: the backbone predicts a stationary velocity field, integrated into a
/// diffeomorphic DDF by scaling and squaring in `int_steps` steps.
#[derive(Debug, Serialize, Deserialize)]
pub struct DvfMethod {
    /// Scaling-and-squaring steps (DeepReg uses 7).
    #[serde(default = "default_int_steps")]
    pub int_steps: usize,
    /// Integrate at `1/int_downsize` of the resolution, then resize the DDF back
    /// (VoxelMorph's `int_downsize`, 2 in its scripts; 1, the default, is DeepReg's
    /// full-resolution integration). The `dvf` output stays at full resolution.
    #[serde(default = "default_int_downsize")]
    pub int_downsize: usize,
    /// VoxelMorph's `bidir`: also output `pred_moving_image`, the fixed image warped by the
    /// integral of the negated velocity (the inverse transform).
    #[serde(default)]
    pub bidir: bool,
    /// The network (default: `train.backbone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<Component<dyn BackboneConfig>>,
}

fn default_int_downsize() -> usize {
    1
}

fn default_int_steps() -> usize {
    7
}

/// A built `dvf` method.
struct Dvf {
    backbone: Box<dyn Backbone>,
    integration: Integration,
    bidir: bool,
}

impl Method for Dvf {
    fn forward(&self, batch: &Batch) -> candle::Result<Tensors> {
        dvf_forward(&*self.backbone, self.integration, self.bidir, batch)
    }
}

#[typetag::serialize(name = "dvf")]
impl MethodConfig for DvfMethod {
    fn build(
        &self,
        context: &MethodContext<'_>,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Method>, ComponentError> {
        check_bidir("dvf", self.bidir, context)?;
        let low = integration_size(&context.shapes.fixed, self.int_downsize);
        if self.int_downsize == 0 || low.iter().any(|s| *s < 2) {
            return Err(ComponentError::invalid(
                "method `dvf`",
                format!(
                    "`int_downsize: {}` must be at least 1 and leave at least 2 voxels per axis of the fixed shape {:?}",
                    self.int_downsize, context.shapes.fixed
                ),
            ));
        }
        let ndim = context.spatial_dims();
        let (backbone, affine) = build_backbone(
            "dvf",
            self.backbone.as_ref(),
            context,
            2,
            ndim,
            Head::Field,
            params,
        )?;
        if affine {
            return Err(ComponentError::invalid(
                "method `dvf`",
                "needs a dense backbone (unet, local), not an affine one (global)",
            ));
        }
        Ok(Box::new(Dvf {
            backbone,
            integration: Integration {
                steps: self.int_steps,
                downsize: self.int_downsize,
            },
            bidir: self.bidir,
        }))
    }

    fn needs_backbone(&self) -> bool {
        self.backbone.is_none()
    }

    fn outputs(&self, context: &MethodContext<'_>) -> Vec<Decl> {
        let mut decls = vec![
            Decl::new(names::DDF, Kind::Field, Grid::Fixed),
            Decl::new(names::DVF, Kind::Velocity, Grid::Fixed),
        ];
        decls.extend(warped_decls(context));
        decls.extend(bidir_decls(self.bidir));
        decls
    }
}

register_component!(
    method,
    "dvf",
    DvfMethod,
    "Predict a velocity field, integrated by scaling and squaring into a diffeomorphic DDF"
);

/// `conditional`: the backbone predicts the fixed label directly from the moving image,
/// the fixed image and the moving label (no transform). Needs labelled data.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ConditionalMethod {
    /// The network (default: `train.backbone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<Component<dyn BackboneConfig>>,
}

/// A built `conditional` method.
struct Conditional {
    backbone: Box<dyn Backbone>,
}

impl Method for Conditional {
    fn forward(&self, batch: &Batch) -> candle::Result<Tensors> {
        conditional_forward(&*self.backbone, batch)
    }
}

#[typetag::serialize(name = "conditional")]
impl MethodConfig for ConditionalMethod {
    fn build(
        &self,
        context: &MethodContext<'_>,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Method>, ComponentError> {
        let (backbone, _) = build_backbone(
            "conditional",
            self.backbone.as_ref(),
            context,
            3,
            1,
            Head::Probability,
            params,
        )?;
        Ok(Box::new(Conditional { backbone }))
    }

    fn needs_backbone(&self) -> bool {
        self.backbone.is_none()
    }

    fn outputs(&self, _context: &MethodContext<'_>) -> Vec<Decl> {
        vec![Decl::new(names::PRED_FIXED_LABEL, Kind::Label, Grid::Fixed)]
    }

    fn requires(&self) -> Vec<String> {
        vec![
            names::MOVING_LABEL.to_owned(),
            names::FIXED_LABEL.to_owned(),
        ]
    }
}

register_component!(
    method,
    "conditional",
    ConditionalMethod,
    "Predict the fixed label from moving image, fixed image and moving label"
);
