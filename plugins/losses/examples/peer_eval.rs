//! voxreg's side of the peer comparison (`python tests/peer/run.py`, which writes the inputs and
//! runs this): `peer_eval DIR` reads `DIR/manifest.json` and, for every case and dtype listed
//! there, evaluates a loss (built from its DeepReg-style config through the registry, as a
//! training config would), an op or a metric on the case's `.npy` inputs, and writes
//! `DIR/<id>.<dtype>.value.npy` and, for each input listed in `wrt`, the gradient of
//! `Σ value · cotangent` as `DIR/<id>.<dtype>.grad.<input>.npy` (all f64).
//!
//! A case: `{"id", "kind": "image_loss" | "label_loss" | "regularization" | "field_loss" |
//! "op" | "metric",
//! "dims", "inputs": [[name, file]], "wrt": [name], "dtypes": ["f64" | "f32"], …}` with
//! `"config"` (the component's YAML mapping) for losses, `"op": "warp"` (`"interp"`,
//! `"padding"`) or `"dvf_to_ddf"` (`"steps"`) for ops, `"metric": "binary_dice" |
//! "image_ssd"` for metrics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use voxreg_framework::candle::{DType, Tensor, Var};
use voxreg_framework::config::{ConfigDocument, ConfigValue};
use voxreg_framework::metrics;
use voxreg_framework::ops::{dvf_to_ddf, warp, Interp, Padding};
use voxreg_framework::prelude::*;
// Linking the crate registers its losses.
use voxreg_losses as _;

type Error = Box<dyn std::error::Error>;

/// A case's inputs by name, and the variables among them (those listed in `wrt`).
type Inputs = (HashMap<String, Tensor>, HashMap<String, Var>);

fn main() -> Result<(), Error> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: peer_eval DIR (the folder tests/peer/run.py writes)")?;
    let manifest = ConfigDocument::read(&dir.join("manifest.json"))?;
    let registry = Registry::linked()?;
    let cases = manifest.value["cases"]
        .as_sequence()
        .ok_or("manifest.json: `cases` must be a list")?;
    for case in cases {
        let id = text(case, "id")?;
        for dtype in case["dtypes"]
            .as_sequence()
            .ok_or("`dtypes` must be a list")?
        {
            let dtype = match dtype.as_str() {
                Some("f64") => DType::F64,
                Some("f32") => DType::F32,
                other => return Err(format!("{id}: unknown dtype {other:?}").into()),
            };
            run_case(&registry, &dir, case, dtype).map_err(|e| format!("case {id}: {e}"))?;
        }
    }
    Ok(())
}

/// The string at `key` of a manifest entry.
fn text<'a>(entry: &'a ConfigValue, key: &str) -> Result<&'a str, Error> {
    entry[key]
        .as_str()
        .ok_or_else(|| format!("`{key}` must be a string").into())
}

/// Reads the case's inputs in `dtype`, the differentiable ones as variables.
fn load_inputs(
    dir: &Path,
    case: &ConfigValue,
    dtype: DType,
    wrt: &[&str],
) -> Result<Inputs, Error> {
    let (mut tensors, mut vars) = (HashMap::new(), HashMap::new());
    for pair in case["inputs"]
        .as_sequence()
        .ok_or("`inputs` must be a list")?
    {
        let name = pair[0].as_str().ok_or("an input name must be a string")?;
        let file = pair[1].as_str().ok_or("an input file must be a string")?;
        let tensor = Tensor::read_npy(dir.join(file))?.to_dtype(dtype)?;
        if wrt.contains(&name) {
            let var = Var::from_tensor(&tensor)?;
            tensors.insert(name.to_owned(), var.as_tensor().clone());
            vars.insert(name.to_owned(), var);
        } else {
            tensors.insert(name.to_owned(), tensor);
        }
    }
    Ok((tensors, vars))
}

fn run_case(
    registry: &Registry,
    dir: &Path,
    case: &ConfigValue,
    dtype: DType,
) -> Result<(), Error> {
    let id = text(case, "id")?;
    let dims = case["dims"].as_u64().ok_or("`dims` must be 2 or 3")? as usize;
    let wrt: Vec<&str> = case["wrt"]
        .as_sequence()
        .ok_or("`wrt` must be a list")?
        .iter()
        .filter_map(ConfigValue::as_str)
        .collect();
    let (tensors, vars) = load_inputs(dir, case, dtype, &wrt)?;
    let input = |name: &str| -> Result<&Tensor, Error> {
        tensors
            .get(name)
            .ok_or_else(|| format!("missing input `{name}`").into())
    };
    let value = match text(case, "kind")? {
        "image_loss" => {
            let (name, config) = component_config(case)?;
            let loss = registry.decode::<dyn ImageLossConfig>(&name, config)?;
            loss.build(dims)?
                .loss(input("moving")?, Some(input("fixed")?))?
        }
        "label_loss" => {
            let (name, config) = component_config(case)?;
            let loss = registry.decode::<dyn LabelLossConfig>(&name, config)?;
            loss.build(dims)?
                .loss(input("moving")?, Some(input("fixed")?))?
        }
        "regularization" => {
            let (name, config) = component_config(case)?;
            let loss = registry.decode::<dyn RegularizationConfig>(&name, config)?;
            loss.build(dims)?.loss(input("ddf")?, None)?
        }
        "field_loss" => {
            let (name, config) = component_config(case)?;
            let loss = registry.decode::<dyn FieldLossConfig>(&name, config)?;
            loss.build(dims)?
                .loss(input("pred")?, Some(input("true")?))?
        }
        "op" => match text(case, "op")? {
            "warp" => {
                let interp = match text(case, "interp")? {
                    "linear" => Interp::Linear,
                    "nearest" => Interp::Nearest,
                    other => return Err(format!("unknown interp {other}").into()),
                };
                let padding = match text(case, "padding")? {
                    "zeros" => Padding::Zeros,
                    "border" => Padding::Border,
                    other => return Err(format!("unknown padding {other}").into()),
                };
                warp(input("image")?, input("ddf")?, interp, padding)?
            }
            "dvf_to_ddf" => {
                let steps = case["steps"].as_u64().ok_or("`steps` must be a count")?;
                dvf_to_ddf(input("dvf")?, steps as usize)?
            }
            other => return Err(format!("unknown op {other}").into()),
        },
        "metric" => {
            let values = |name: &str| -> Result<Vec<f32>, Error> {
                Ok(input(name)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?)
            };
            let (fixed, moving) = (values("fixed")?, values("moving")?);
            let value = match text(case, "metric")? {
                "binary_dice" => metrics::binary_dice(&fixed, &moving),
                "image_ssd" => metrics::image_ssd(&fixed, &moving),
                other => return Err(format!("unknown metric {other}").into()),
            };
            Tensor::new(&[value], &Device::Cpu)?
        }
        other => return Err(format!("unknown kind {other}").into()),
    };
    let suffix = if dtype == DType::F64 { "f64" } else { "f32" };
    value
        .to_dtype(DType::F64)?
        .write_npy(dir.join(format!("{id}.{suffix}.value.npy")))?;
    if vars.is_empty() {
        return Ok(());
    }
    let cotangent = input("cotangent")?;
    let grads = (value * cotangent)?.sum_all()?.backward()?;
    for (name, var) in &vars {
        let grad = match grads.get(var.as_tensor()) {
            Some(grad) => grad.clone(),
            None => var.as_tensor().zeros_like()?,
        };
        grad.to_dtype(DType::F64)?
            .write_npy(dir.join(format!("{id}.{suffix}.grad.{name}.npy")))?;
    }
    Ok(())
}

/// A loss case's `config` mapping, split into the component name and the rest (its keys).
fn component_config(case: &ConfigValue) -> Result<(String, ConfigValue), Error> {
    let mut config = case["config"]
        .as_mapping()
        .ok_or("`config` must be a mapping")?
        .clone();
    let name = config
        .remove("name")
        .and_then(|name| name.as_str().map(str::to_owned))
        .ok_or("`config` needs a `name`")?;
    Ok((name, ConfigValue::Mapping(config)))
}
