//! What a component's keys are: for `voxreg plugins show`, each key with its kind, and its
//! default or that it is required, worked out by decoding the component rather than from a
//! hand-kept list (so plugins get it for free).

use super::{category, Category, DecodeError, Registry};
use crate::config::{ConfigValue, Problem, Segment};

/// One key of a component's mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyInfo {
    /// The key.
    pub key: String,
    /// What it holds: `an integer`, `a number`, `a boolean`, `a string`, `a list`,
    /// `a mapping`, `a value` when no probe told; for a key that defaults to none,
    /// `optional: …` with what it accepts.
    pub kind: &'static str,
    /// The default, or `None` for a required key.
    pub default: Option<ConfigValue>,
}

/// Probe values tried for a required key, each with the kind it shows, in order: the first
/// one the component accepts gives the key's kind.
fn probes() -> [(ConfigValue, &'static str); 6] {
    [
        (ConfigValue::from(1u64), "an integer"),
        (ConfigValue::from(0.5f64), "a number"),
        (ConfigValue::Bool(true), "a boolean"),
        (ConfigValue::from("x"), "a string"),
        (
            ConfigValue::Sequence(vec![ConfigValue::from(1u64)]),
            "a list",
        ),
        (ConfigValue::Mapping(Default::default()), "a mapping"),
    ]
}

/// The kind of a default value.
fn kind_of(value: &ConfigValue) -> &'static str {
    match value {
        ConfigValue::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        other => crate::config::kind_name(other),
    }
}

/// The kind of a key that defaults to none, from the probe kinds it accepts.
fn optional_kind(accepted: &[&'static str]) -> &'static str {
    let has = |kind: &str| accepted.contains(&kind);
    match (
        has("an integer"),
        has("a number"),
        has("a list"),
        has("a string"),
    ) {
        (_, true, false, false) => "optional: a number",
        (true, false, false, false) => "optional: an integer",
        (true, _, true, false) => "optional: an integer or a list",
        (false, false, true, false) => "optional: a list",
        (false, false, false, true) => "optional: a string",
        _ if has("a mapping") && accepted.len() == 1 => "optional: a mapping",
        _ if has("a boolean") && accepted.len() == 1 => "optional: a boolean",
        _ => "optional",
    }
}

/// The key a "missing field `key`" problem names.
fn missing_key(problems: &[Problem]) -> Option<String> {
    problems.iter().find_map(|problem| {
        let rest = problem.message.split("missing field `").nth(1)?;
        Some(rest.split('`').next()?.to_owned())
    })
}

/// Whether a problem is about `key` (a wrong type or value there, or it missing).
fn about(problem: &Problem, key: &str) -> bool {
    matches!(problem.path.segments().first(), Some(Segment::Key(k)) if k == key)
        || problem.message.contains(&format!("field `{key}`"))
}

impl Registry {
    /// Every key of component `name` in `category`, in the order the component declares
    /// them: required keys (found by decoding an empty mapping and filling each key it asks
    /// for with the first probe value it accepts) and keys with defaults (from decoding with
    /// only the required keys).
    pub fn key_info(&self, category: Category, name: &str) -> Result<Vec<KeyInfo>, DecodeError> {
        let mut given = serde_yaml::Mapping::new();
        let mut required: Vec<(String, &'static str)> = Vec::new();
        let decoded = loop {
            let attempt = category::decode_to_value(
                self,
                category,
                name,
                ConfigValue::Mapping(given.clone()),
            );
            let problems = match attempt {
                Ok(value) => break value,
                Err(DecodeError::Invalid(problems)) => problems,
                Err(other) => return Err(other),
            };
            let Some(key) = missing_key(&problems) else {
                return Err(DecodeError::Invalid(problems));
            };
            if required.iter().any(|(k, _)| *k == key) {
                return Err(DecodeError::Invalid(problems));
            }
            let mut kind = "a value";
            for (probe, probe_kind) in probes() {
                given.insert(ConfigValue::from(key.as_str()), probe);
                let accepted = match category::decode_to_value(
                    self,
                    category,
                    name,
                    ConfigValue::Mapping(given.clone()),
                ) {
                    Ok(_) => true,
                    Err(DecodeError::Invalid(problems)) => !problems.iter().any(|p| about(p, &key)),
                    Err(other) => return Err(other),
                };
                if accepted {
                    kind = probe_kind;
                    break;
                }
            }
            required.push((key, kind));
        };
        let order = (self
            .get(category, name)
            .map_err(DecodeError::Unknown)?
            .registration
            .keys)()
        .unwrap_or_default();
        let defaults = decoded.as_mapping().cloned().unwrap_or_default();
        // The kinds of probe value a key that defaults to none accepts.
        let accepted = |key: &str| -> Vec<&'static str> {
            probes()
                .into_iter()
                .filter(|(probe, _)| {
                    let mut with = given.clone();
                    with.insert(ConfigValue::from(key), probe.clone());
                    category::decode_to_value(self, category, name, ConfigValue::Mapping(with))
                        .is_ok()
                })
                .map(|(_, kind)| kind)
                .collect()
        };
        let mut keys: Vec<KeyInfo> = Vec::new();
        let mut add = |key: &str| {
            if key == "name" || keys.iter().any(|k| k.key == key) {
                return;
            }
            if let Some((_, kind)) = required.iter().find(|(k, _)| k == key) {
                keys.push(KeyInfo {
                    key: key.to_owned(),
                    kind,
                    default: None,
                });
            } else if let Some(value) = defaults.get(key) {
                let kind = match value {
                    ConfigValue::Null => optional_kind(&accepted(key)),
                    other => kind_of(other),
                };
                keys.push(KeyInfo {
                    key: key.to_owned(),
                    kind,
                    default: Some(value.clone()),
                });
            }
        };
        order.iter().for_each(|key| add(key));
        required.iter().for_each(|(key, _)| add(key));
        for key in defaults.keys().filter_map(|k| k.as_str()) {
            add(key);
        }
        Ok(keys)
    }
}
