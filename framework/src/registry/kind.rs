//! Ties each config trait object type to its category (the impls come from the category
//! table in `category.rs`).

use serde::Serialize;

use super::Category;
use crate::config::{self, ConfigValue};

/// A config trait object type (`dyn BackboneConfig`, …) and the category it is registered
/// under.
pub trait ComponentKind: Serialize + 'static {
    /// The category of this kind.
    const CATEGORY: Category;

    /// The `name` a config serialises with (its `typetag` name).
    fn serialized_name(config: &Self) -> Option<String> {
        match config::to_value(config).ok()? {
            ConfigValue::Mapping(mapping) => mapping
                .get(config::key("name"))
                .and_then(|name| name.as_str())
                .map(str::to_owned),
            _ => None,
        }
    }
}
