//! Methods made of methods: `cascade` (stages run in order, each on the moving image warped
//! by the transforms before it) and `inverse` (the inner method on the pair and on the
//! swapped pair, with the same weights).

use serde::{Deserialize, Serialize};
use voxreg_framework::candle::{self, Tensor};
use voxreg_framework::ops::{self, Interp, Padding};
use voxreg_framework::prelude::*;

use crate::forward::warp_moving;

/// The weight prefix and the output prefix of cascade stage `index`: weights
/// `stage.<i>.…`, outputs `stage.<i>/…`.
pub fn stage_prefix(index: usize) -> (String, String) {
    (format!("stage.{index}"), format!("stage.{index}/"))
}

/// `cascade`: the stages run in order. Stage `i` (weights under `stage.<i>`) sees the
/// moving image and labels warped by the composition `T_{i−1}` of the earlier stages'
/// DDFs, and predicts a DDF `d_i` on the fixed grid; the composition is
/// `T_i(p) = d_i(p) + T_{i−1}(p + d_i(p))` (linear sampling, border padding), so warping
/// the moving image once by `T_i` equals warping it by the stages in turn. Outputs: the
/// final `ddf` = `T_last`, the moving image and labels warped by it, and every stage's
/// outputs under `stage.<i>/`.
///
/// ```yaml
/// method:
///   name: cascade
///   stages:
///     - {name: ddf, backbone: {name: global, num_channel_initial: 4, depth: 2}}
///     - {name: ddf, backbone: {name: local, num_channel_initial: 4, extract_levels: [0, 1]}}
/// ```
#[derive(Debug, Serialize, Deserialize)]
pub struct CascadeMethod {
    /// The stages, each a method that outputs a `ddf`.
    pub stages: Vec<Component<dyn MethodConfig>>,
}

/// A built cascade.
struct Cascade {
    stages: Vec<Box<dyn Method>>,
}

/// The batch a later stage sees: moving image and labels warped by `ddf`.
fn warped_batch(batch: &Batch, ddf: &Tensor) -> candle::Result<Batch> {
    let mut moved = batch.clone();
    let image = ops::warp(batch.moving_image()?, ddf, Interp::Linear, Padding::Zeros)?;
    moved
        .tensors
        .put(names::MOVING_IMAGE, Kind::Image, Grid::Fixed, image);
    if let Some(label) = batch.moving_label() {
        let label = ops::warp(label, ddf, Interp::Linear, Padding::Zeros)?;
        moved
            .tensors
            .put(names::MOVING_LABEL, Kind::Label, Grid::Fixed, label);
    }
    Ok(moved)
}

impl Method for Cascade {
    fn forward(&self, batch: &Batch) -> candle::Result<Tensors> {
        let mut total: Option<Tensor> = None;
        let mut stages = Tensors::new();
        for (index, stage) in self.stages.iter().enumerate() {
            let input = match &total {
                None => batch.clone(),
                Some(ddf) => warped_batch(batch, ddf)?,
            };
            let output = stage.forward(&input)?;
            let ddf = output.get(names::DDF).ok_or_else(|| {
                candle::Error::Msg(format!("cascade stage {index} output no `ddf`"))
            })?;
            total = Some(match total {
                None => ddf.clone(),
                Some(before) => ops::compose_ddf(&before, ddf, Padding::Border)?,
            });
            stages.extend_prefixed(&stage_prefix(index).1, &output);
        }
        let Some(ddf) = total else {
            candle::bail!("a cascade needs at least one stage");
        };
        let mut out = Tensors::new();
        out.put(names::DDF, Kind::Field, Grid::Fixed, ddf.clone());
        warp_moving(batch, &ddf, &mut out)?;
        out.extend(stages);
        Ok(out)
    }
}

#[typetag::serialize(name = "cascade")]
impl MethodConfig for CascadeMethod {
    fn build(
        &self,
        context: &MethodContext<'_>,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Method>, ComponentError> {
        if self.stages.is_empty() {
            return Err(ComponentError::invalid(
                "method `cascade`",
                "`stages` is empty: give at least one stage method (e.g. `ddf`)",
            ));
        }
        let mut stages = Vec::with_capacity(self.stages.len());
        for (index, stage) in self.stages.iter().enumerate() {
            if !stage.outputs(context).iter().any(|d| d.name == names::DDF) {
                return Err(ComponentError::invalid(
                    "method `cascade`",
                    format!("stage {index} outputs no `ddf`; every stage must predict a DDF"),
                ));
            }
            stages.push(stage.build(context, params.pp(stage_prefix(index).0))?);
        }
        Ok(Box::new(Cascade { stages }))
    }

    fn outputs(&self, context: &MethodContext<'_>) -> Vec<Decl> {
        let mut decls = vec![
            Decl::new(names::DDF, Kind::Field, Grid::Fixed),
            Decl::new(names::PRED_FIXED_IMAGE, Kind::Image, Grid::Fixed),
        ];
        if context.has_input(names::MOVING_LABEL) {
            decls.push(Decl::new(names::PRED_FIXED_LABEL, Kind::Label, Grid::Fixed));
        }
        for (index, stage) in self.stages.iter().enumerate() {
            let prefix = stage_prefix(index).1;
            decls.extend(stage.outputs(context).iter().map(|d| d.prefixed(&prefix)));
        }
        decls
    }

    fn needs_backbone(&self) -> bool {
        self.stages.iter().any(|s| s.needs_backbone())
    }

    fn requires(&self) -> Vec<String> {
        let mut required: Vec<String> = self.stages.iter().flat_map(|s| s.requires()).collect();
        required.sort();
        required.dedup();
        required
    }
}

register_component!(
    method,
    "cascade",
    CascadeMethod,
    "Stages in order, each on the moving image warped by the composition of the earlier ones"
);

/// `inverse`: runs `method` on the pair and on the swapped pair (fixed as moving, moving as
/// fixed) with the same weights. Outputs: the inner method's outputs, and those of the
/// swapped pass under `inv/` (`inv/ddf` maps the moving grid to the fixed image), e.g. for
/// an inverse-consistency loss on `[ddf, inv/ddf]`. Needs moving and fixed images of one
/// shape.
#[derive(Debug, Serialize, Deserialize)]
pub struct InverseMethod {
    /// The inner method.
    pub method: Component<dyn MethodConfig>,
}

/// A built `inverse` method.
struct Inverse {
    inner: Box<dyn Method>,
}

impl Method for Inverse {
    fn forward(&self, batch: &Batch) -> candle::Result<Tensors> {
        let mut out = self.inner.forward(batch)?;
        let swapped = self.inner.forward(&batch.swapped())?;
        let mut inverse = Tensors::new();
        for (decl, tensor) in swapped.iter() {
            let decl = Decl::new(decl.name.clone(), decl.kind, decl.grid.swapped());
            inverse.insert(decl, tensor.clone());
        }
        out.extend_prefixed(names::INVERSE_PREFIX, &inverse);
        Ok(out)
    }
}

#[typetag::serialize(name = "inverse")]
impl MethodConfig for InverseMethod {
    fn build(
        &self,
        context: &MethodContext<'_>,
        params: VarBuilder<'_>,
    ) -> Result<Box<dyn Method>, ComponentError> {
        if context.shapes.moving != context.shapes.fixed {
            return Err(ComponentError::invalid(
                "method `inverse`",
                format!(
                    "needs moving and fixed images of one shape (it also registers fixed to moving), got {:?} and {:?}",
                    context.shapes.moving, context.shapes.fixed
                ),
            ));
        }
        Ok(Box::new(Inverse {
            inner: self.method.build(context, params)?,
        }))
    }

    fn outputs(&self, context: &MethodContext<'_>) -> Vec<Decl> {
        let decls = self.method.outputs(context);
        let inverse: Vec<Decl> = decls
            .iter()
            .map(|d| {
                Decl::new(d.name.clone(), d.kind, d.grid.swapped()).prefixed(names::INVERSE_PREFIX)
            })
            .collect();
        decls.into_iter().chain(inverse).collect()
    }

    fn needs_backbone(&self) -> bool {
        self.method.needs_backbone()
    }

    fn requires(&self) -> Vec<String> {
        self.method.requires()
    }
}

register_component!(
    method,
    "inverse",
    InverseMethod,
    "The inner method on the pair and on the swapped pair (same weights), outputs under inv/"
);

#[cfg(test)]
mod tests {
    use voxreg_framework::candle_nn::VarMap;

    use super::*;

    /// A stage that outputs a constant DDF.
    #[derive(Debug, Serialize, Deserialize)]
    struct Shift {
        along: usize,
        by: f32,
    }

    struct BuiltShift(Tensor);

    impl Method for BuiltShift {
        fn forward(&self, batch: &Batch) -> candle::Result<Tensors> {
            let mut out = Tensors::new();
            out.put(names::DDF, Kind::Field, Grid::Fixed, self.0.clone());
            warp_moving(batch, &self.0, &mut out)?;
            Ok(out)
        }
    }

    #[typetag::serialize(name = "test_shift")]
    impl MethodConfig for Shift {
        fn build(
            &self,
            context: &MethodContext<'_>,
            params: VarBuilder<'_>,
        ) -> Result<Box<dyn Method>, ComponentError> {
            // One weight, so the weight prefix shows.
            params
                .get(1, "w")
                .map_err(|e| ComponentError::tensor("test", e))?;
            let shape = &context.shapes.fixed;
            let mut values = vec![0f32; 2 * shape.iter().product::<usize>()];
            let n = shape.iter().product::<usize>();
            values[self.along * n..(self.along + 1) * n].fill(self.by);
            let ddf = Tensor::from_vec(values, (1, 2, shape[0], shape[1]), &Device::Cpu)
                .map_err(|e| ComponentError::tensor("test", e))?;
            Ok(Box::new(BuiltShift(ddf)))
        }

        fn outputs(&self, _context: &MethodContext<'_>) -> Vec<Decl> {
            vec![
                Decl::new(names::DDF, Kind::Field, Grid::Fixed),
                Decl::new(names::PRED_FIXED_IMAGE, Kind::Image, Grid::Fixed),
            ]
        }
    }

    fn shapes() -> ImageShapes {
        ImageShapes {
            moving: vec![6, 6],
            fixed: vec![6, 6],
        }
    }

    fn pair() -> Batch {
        let moving = Tensor::arange(0f32, 36.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 6, 6))
            .unwrap();
        let fixed = Tensor::zeros((1, 1, 6, 6), DType::F32, &Device::Cpu).unwrap();
        Batch::pair(moving, fixed, None, None)
    }

    fn build(method: &dyn MethodConfig, varmap: &VarMap) -> Box<dyn Method> {
        let shapes = shapes();
        let inputs = pair_decls(false);
        let context = MethodContext {
            shapes: &shapes,
            inputs: &inputs,
            backbone: None,
        };
        method
            .build(
                &context,
                VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu),
            )
            .unwrap()
    }

    #[test]
    fn a_cascade_composes_its_stages_and_keeps_their_outputs() {
        let cascade = CascadeMethod {
            stages: vec![
                Component(Box::new(Shift { along: 0, by: 1.0 })),
                Component(Box::new(Shift { along: 1, by: 2.0 })),
            ],
        };
        let varmap = VarMap::new();
        let out = build(&cascade, &varmap).forward(&pair()).unwrap();
        let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["stage.0.w", "stage.1.w"]);
        // Two constant shifts compose into their sum (inside the border).
        let ddf = out.get("ddf").unwrap().to_vec3::<f32>().ok();
        assert!(ddf.is_none(), "a 4D field");
        let ddf = out.get("ddf").unwrap().get(0).unwrap();
        let along0: Vec<f32> = ddf
            .get(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let along1: Vec<f32> = ddf
            .get(1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(along0.iter().all(|v| (v - 1.0).abs() < 1e-6), "{along0:?}");
        assert!(along1.iter().all(|v| (v - 2.0).abs() < 1e-6), "{along1:?}");
        // The warped image is the moving image shifted by (1, 2): voxel (i, j) holds
        // moving (i + 1, j + 2) = 6 (i + 1) + j + 2.
        let warped = out.get("pred_fixed_image").unwrap().flatten_all().unwrap();
        let warped: Vec<f32> = warped.to_vec1().unwrap();
        assert_eq!(warped[0], 8.0);
        let declared: Vec<&str> = out.decls().map(|d| d.name.as_str()).collect();
        assert_eq!(
            declared,
            [
                "ddf",
                "pred_fixed_image",
                "stage.0/ddf",
                "stage.0/pred_fixed_image",
                "stage.1/ddf",
                "stage.1/pred_fixed_image"
            ]
        );
        let shapes = shapes();
        let inputs = pair_decls(false);
        let context = MethodContext {
            shapes: &shapes,
            inputs: &inputs,
            backbone: None,
        };
        let outputs: Vec<String> = cascade
            .outputs(&context)
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(outputs, declared);
    }

    #[test]
    fn inverse_runs_the_inner_method_on_the_swapped_pair() {
        let inverse = InverseMethod {
            method: Component(Box::new(Shift { along: 0, by: 1.0 })),
        };
        let varmap = VarMap::new();
        let out = build(&inverse, &varmap).forward(&pair()).unwrap();
        assert_eq!(varmap.data().lock().unwrap().len(), 1, "one set of weights");
        let (decl, warped) = out.entry("inv/pred_fixed_image").unwrap();
        assert_eq!(decl.grid, Grid::Moving);
        // The swapped pair's moving image is the (zero) fixed image.
        assert_eq!(
            warped
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        assert!(out.get("inv/ddf").is_some() && out.get("ddf").is_some());
        let unequal = ImageShapes {
            moving: vec![6, 4],
            fixed: vec![6, 6],
        };
        let inputs = pair_decls(false);
        let context = MethodContext {
            shapes: &unequal,
            inputs: &inputs,
            backbone: None,
        };
        let error = inverse
            .build(
                &context,
                VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
            )
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("one shape"), "{error}");
    }
}
