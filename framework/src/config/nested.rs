//! Components inside components: a config field of type [`Component<dyn K>`] holds another
//! registered component (a stage of a cascade, a method's own backbone), written in YAML as
//! a bare name or a mapping with `name`, and decoded through the same [`Registry`] as a
//! top-level one — so plugins nest too, and unknown names or keys inside are reported with
//! their full key path like any other.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::path::KeyPath;
use super::problem::Problem;
use super::value::{self, ConfigMapping, ConfigValue};
use crate::registry::{ComponentKind, DecodeError, Registry};
use crate::suggest;

/// A nested component config of kind `K` (`dyn BackboneConfig`, `dyn MethodConfig`, …).
///
/// It serialises as the component itself (its mapping with `name`), so a resolved config
/// round-trips.
pub struct Component<K: ?Sized>(pub Box<K>);

impl<K: ?Sized> Deref for Component<K> {
    type Target = K;

    fn deref(&self) -> &K {
        &self.0
    }
}

impl<K: ?Sized + fmt::Debug> fmt::Debug for Component<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<K: ComponentKind + ?Sized> Serialize for Component<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// The message of the serde error that stands for the problems stashed by a nested decode;
/// [`decode`](super::decode) replaces it by those problems under the error's path.
pub(crate) const NESTED_PROBLEMS: &str = "\u{0}voxreg nested component problems";

thread_local! {
    /// The registries nested components are decoded through, innermost last.
    static REGISTRIES: RefCell<Vec<Registry>> = const { RefCell::new(Vec::new()) };
    /// The problems of the nested component whose decode failed last.
    static STASHED: RefCell<Vec<Problem>> = const { RefCell::new(Vec::new()) };
}

/// Makes `registry` the one nested components are decoded through until the guard drops.
pub(crate) struct RegistryScope(());

impl RegistryScope {
    pub(crate) fn enter(registry: &Registry) -> Self {
        REGISTRIES.with(|r| r.borrow_mut().push(registry.clone()));
        RegistryScope(())
    }
}

impl Drop for RegistryScope {
    fn drop(&mut self) {
        REGISTRIES.with(|r| {
            r.borrow_mut().pop();
        });
    }
}

/// The problems a failed nested decode left, taken.
pub(crate) fn take_stashed() -> Vec<Problem> {
    STASHED.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

impl<'de, K: ComponentKind + ?Sized> Deserialize<'de> for Component<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = ConfigValue::deserialize(deserializer)?;
        let registry = REGISTRIES.with(|r| r.borrow().last().cloned());
        let Some(registry) = registry else {
            return Err(D::Error::custom(format!(
                "a nested {} can only be decoded through a registry",
                K::CATEGORY
            )));
        };
        match decode_component::<K>(&registry, value) {
            Ok(config) => Ok(Component(config)),
            Err(problems) => {
                STASHED.with(|s| *s.borrow_mut() = problems);
                Err(D::Error::custom(NESTED_PROBLEMS))
            }
        }
    }
}

/// Decodes a component of kind `K` given as a bare name or a mapping with `name`; problems
/// have paths relative to `value`.
pub fn decode_component<K: ComponentKind + ?Sized>(
    registry: &Registry,
    value: ConfigValue,
) -> Result<Box<K>, Vec<Problem>> {
    let root = KeyPath::root();
    let (name, rest, name_path) = match value {
        ConfigValue::String(name) => (name, ConfigMapping::new(), root.clone()),
        ConfigValue::Mapping(mut mapping) => match mapping.remove(value::key("name")) {
            Some(ConfigValue::String(name)) => (name, mapping, root.key("name")),
            Some(other) => {
                return Err(vec![Problem::new(
                    root.key("name"),
                    format!(
                        "expected a component name, found {}",
                        value::kind_name(&other)
                    ),
                )])
            }
            None => {
                return Err(vec![Problem::new(
                    root.key("name"),
                    format!(
                        "missing required key: the {} to use, one of {}",
                        K::CATEGORY,
                        suggest::quoted_list(registry.names(K::CATEGORY))
                    ),
                )])
            }
        },
        other => {
            return Err(vec![Problem::new(
                root,
                format!(
                    "expected a {} name or a mapping with `name`, found {}",
                    K::CATEGORY,
                    value::kind_name(&other)
                ),
            )])
        }
    };
    match registry.decode::<K>(&name, ConfigValue::Mapping(rest)) {
        Ok(config) => Ok(config),
        Err(DecodeError::Unknown(unknown)) => {
            Err(vec![Problem::new(name_path, unknown.to_string())])
        }
        Err(DecodeError::Invalid(problems)) => {
            let component = format!("{} `{name}`", K::CATEGORY);
            Err(problems
                .into_iter()
                .map(|mut p| {
                    p.message = format!("{} ({component})", p.message);
                    p
                })
                .collect())
        }
        Err(other) => Err(vec![Problem::new(KeyPath::root(), other.to_string())]),
    }
}
