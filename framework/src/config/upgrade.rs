//! Upgrades configs written for older DeepReg releases (v0.1.0–v0.1.2) to the current layout,
//! as DeepReg's own `parse_v011` does, so old configs run unchanged.
//!
//! * dataset: top-level `dir: {train, valid, test}`, `format`, `labeled` → one mapping per
//!   split;
//! * `train.model: {method, backbone: <name>, <name>: {...}}` → `train.method` and
//!   `train.backbone: {name, ...}` (GlobalNet's `extract_levels` → `depth`);
//! * `loss.dissimilarity.{image,label}` → `loss.{image,label}`; nested per-name image loss
//!   keys flattened; label `single_scale`/`multi_scale` + `loss_type` → `name` (+ `scales`);
//!   `mean-squared` → `ssd`, `dice_generalized` → `dice`, `neg_weight` →
//!   `background_weight`; regularisation `energy_type` → `name` (+ `l1`);
//! * `optimizer: {name: adam, adam: {...}}` → `optimizer: {name: Adam, ...}`.

use super::value::{key, ConfigMapping, ConfigValue};

/// Rewrites an older DeepReg layout in place; a current layout is left unchanged. Returns a
/// note for each rewrite made.
pub(super) fn upgrade_deepreg_layout(config: &mut ConfigValue) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(root) = config.as_mapping_mut() else {
        return notes;
    };
    if let Some(dataset) = root
        .get_mut(key("dataset"))
        .and_then(|d| d.as_mapping_mut())
    {
        upgrade_dataset(dataset, &mut notes);
    }
    if let Some(train) = root.get_mut(key("train")).and_then(|t| t.as_mapping_mut()) {
        upgrade_model(train, &mut notes);
        if let Some(loss) = train.get_mut(key("loss")).and_then(|l| l.as_mapping_mut()) {
            upgrade_loss(loss, &mut notes);
        }
        if let Some(optimizer) = train
            .get_mut(key("optimizer"))
            .and_then(|o| o.as_mapping_mut())
        {
            upgrade_optimizer(optimizer, &mut notes);
        }
    }
    notes
}

fn upgrade_dataset(dataset: &mut ConfigMapping, notes: &mut Vec<String>) {
    if !dataset.contains_key(key("format")) {
        return;
    }
    let dirs = dataset.remove(key("dir"));
    let format = dataset.remove(key("format")).unwrap_or(ConfigValue::Null);
    let labeled = dataset.remove(key("labeled")).unwrap_or(ConfigValue::Null);
    if let Some(ConfigValue::Mapping(dirs)) = dirs {
        for split in ["train", "valid", "test"] {
            if let Some(dir) = dirs.get(key(split)) {
                let mut entry = ConfigMapping::new();
                entry.insert(key("dir"), dir.clone());
                entry.insert(key("format"), format.clone());
                entry.insert(key("labeled"), labeled.clone());
                dataset.insert(key(split), ConfigValue::Mapping(entry));
            }
        }
    }
    notes.push("dataset: moved `dir`, `format`, `labeled` into each split".to_owned());
}

fn upgrade_model(train: &mut ConfigMapping, notes: &mut Vec<String>) {
    let Some(ConfigValue::Mapping(mut model)) = train.remove(key("model")) else {
        return;
    };
    if let Some(ConfigValue::Mapping(inner)) = model.remove(key("model")) {
        model.extend(inner);
    }
    if let Some(method) = model.remove(key("method")) {
        train.insert(key("method"), method);
    }
    match model.remove(key("backbone")) {
        Some(ConfigValue::String(name)) => {
            let mut backbone = ConfigMapping::new();
            backbone.insert(key("name"), ConfigValue::String(name.clone()));
            if let Some(ConfigValue::Mapping(keys)) = model.remove(key(&name)) {
                backbone.extend(keys);
            }
            if name == "global" {
                if let Some(ConfigValue::Sequence(levels)) = backbone.remove(key("extract_levels"))
                {
                    if let Some(depth) = levels.iter().filter_map(ConfigValue::as_u64).max() {
                        backbone.insert(key("depth"), ConfigValue::from(depth));
                    }
                }
            }
            train.insert(key("backbone"), ConfigValue::Mapping(backbone));
        }
        Some(other) => {
            train.insert(key("backbone"), other);
        }
        None => {}
    }
    notes.push("train: moved `model.method` and `model.backbone` up".to_owned());
}

fn upgrade_loss(loss: &mut ConfigMapping, notes: &mut Vec<String>) {
    if let Some(ConfigValue::Mapping(dissimilarity)) = loss.remove(key("dissimilarity")) {
        loss.extend(dissimilarity);
        notes.push("loss: moved `dissimilarity.image/label` up".to_owned());
    }
    if let Some(ConfigValue::Mapping(image)) = loss.get_mut(key("image")) {
        let name = image
            .get(key("name"))
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        if let Some(name) = name {
            if let Some(ConfigValue::Mapping(keys)) = image.remove(key(&name)) {
                image.extend(keys);
                notes.push(format!("loss.image: flattened `{name}` keys"));
            }
        }
    }
    if let Some(ConfigValue::Mapping(label)) = loss.get_mut(key("label")) {
        upgrade_label_loss(label, notes);
    }
    if let Some(ConfigValue::Mapping(regularization)) = loss.get_mut(key("regularization")) {
        if let Some(ConfigValue::String(energy)) = regularization.remove(key("energy_type")) {
            let (name, l1) = match energy.as_str() {
                "gradient-l1" => ("gradient", Some(true)),
                "gradient-l2" => ("gradient", Some(false)),
                other => (other, None),
            };
            regularization.insert(key("name"), ConfigValue::String(name.to_owned()));
            if let Some(l1) = l1 {
                regularization.insert(key("l1"), ConfigValue::Bool(l1));
            }
            notes.push("loss.regularization: `energy_type` → `name`".to_owned());
        }
    }
}

fn upgrade_label_loss(label: &mut ConfigMapping, notes: &mut Vec<String>) {
    let name = label
        .get(key("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned);
    if let Some(scale @ ("single_scale" | "multi_scale")) = name.as_deref() {
        let nested = label.remove(key(scale));
        let weight = label
            .remove(key("weight"))
            .unwrap_or(ConfigValue::from(1.0));
        let extra: Vec<(ConfigValue, ConfigValue)> = ["neg_weight", "background_weight"]
            .iter()
            .filter_map(|k| label.remove(key(k)).map(|v| (key(k), v)))
            .collect();
        label.clear();
        if let Some(ConfigValue::Mapping(mut nested)) = nested {
            if let Some(loss_type) = nested.remove(key("loss_type")) {
                label.insert(key("name"), loss_type);
            }
            if let Some(scales) = nested.remove(key("loss_scales")) {
                label.insert(key("scales"), scales);
            }
            label.extend(nested);
        }
        label.insert(key("weight"), weight);
        label.extend(extra);
        notes.push(format!("loss.label: `{scale}` → `name`"));
    }
    let renamed = match label.get(key("name")).and_then(|n| n.as_str()) {
        Some("mean-squared") => Some("ssd"),
        Some("dice_generalized") => Some("dice"),
        _ => None,
    };
    if let Some(new_name) = renamed {
        label.insert(key("name"), ConfigValue::String(new_name.to_owned()));
        notes.push(format!("loss.label: renamed to `{new_name}`"));
    }
    if let Some(neg_weight) = label.remove(key("neg_weight")) {
        label.insert(key("background_weight"), neg_weight);
        notes.push("loss.label: `neg_weight` → `background_weight`".to_owned());
    }
}

fn upgrade_optimizer(optimizer: &mut ConfigMapping, notes: &mut Vec<String>) {
    let Some(name) = optimizer
        .get(key("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
    else {
        return;
    };
    let Some(ConfigValue::Mapping(keys)) = optimizer.get(key(&name)).cloned() else {
        return;
    };
    let class = match name.as_str() {
        "adam" => "Adam",
        "sgd" => "SGD",
        "rms" => "RMSprop",
        other => other,
    };
    optimizer.clear();
    optimizer.insert(key("name"), ConfigValue::String(class.to_owned()));
    optimizer.extend(keys);
    notes.push(format!("optimizer: `{name}: {{...}}` → `name: {class}`"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> ConfigValue {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn upgrades_a_v011_config() {
        let mut old = yaml(
            r#"
dataset:
  dir: {train: a, test: b}
  format: nifti
  type: paired
  labeled: true
train:
  model:
    method: ddf
    backbone: global
    global: {num_channel_initial: 4, extract_levels: [0, 1, 2]}
  loss:
    dissimilarity:
      image: {name: lncc, weight: 0.1, lncc: {kernel_size: 5}}
      label:
        name: multi_scale
        weight: 1
        multi_scale: {loss_type: dice_generalized, loss_scales: [0, 1]}
        neg_weight: 0.2
    regularization: {weight: 0.5, energy_type: gradient-l1}
  optimizer: {name: adam, adam: {learning_rate: 0.01}, sgd: {momentum: 0.9}}
"#,
        );
        let notes = upgrade_deepreg_layout(&mut old);
        let new = yaml(
            r#"
dataset:
  type: paired
  train: {dir: a, format: nifti, labeled: true}
  test: {dir: b, format: nifti, labeled: true}
train:
  loss:
    image: {name: lncc, weight: 0.1, kernel_size: 5}
    label: {name: dice, scales: [0, 1], weight: 1, background_weight: 0.2}
    regularization: {weight: 0.5, name: gradient, l1: true}
  optimizer: {name: Adam, learning_rate: 0.01}
  method: ddf
  backbone: {name: global, num_channel_initial: 4, depth: 2}
"#,
        );
        assert_eq!(old, new);
        assert!(notes.len() >= 6, "{notes:?}");
    }

    #[test]
    fn leaves_current_layout_alone() {
        let current = yaml(
            "dataset: {train: {dir: a, format: h5, labeled: false}, type: unpaired}\ntrain: {method: ddf, loss: {image: {name: ssd}}, optimizer: {name: Adam}}\n",
        );
        let mut copy = current.clone();
        assert!(upgrade_deepreg_layout(&mut copy).is_empty());
        assert_eq!(copy, current);
    }
}
