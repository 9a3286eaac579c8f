//! Registry errors.

use std::fmt;

use super::{Category, Source};
use crate::config::Problem;
use crate::suggest;

/// A name that is not registered in its category.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownComponent {
    /// The category searched.
    pub category: Category,
    /// The name asked for.
    pub name: String,
    /// The names the category holds.
    pub known: Vec<String>,
    /// The closest registered name, if one is close.
    pub suggestion: Option<String>,
}

impl fmt::Display for UnknownComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} `{}`; registered: {}",
            self.category,
            self.name,
            suggest::quoted_list(self.known.iter().map(String::as_str))
        )?;
        if let Some(suggestion) = &self.suggestion {
            write!(f, " (did you mean `{suggestion}`?)")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownComponent {}

/// A registry that cannot be assembled.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two components claim one name in one category.
    #[error("{category} `{name}` is registered twice: by {first} and by {second}")]
    Duplicate {
        /// The category.
        category: Category,
        /// The contested name.
        name: String,
        /// Who registered it first.
        first: Source,
        /// Who tried to register it again.
        second: Source,
    },
}

/// A component config that cannot be built from its YAML.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The name is not registered.
    #[error(transparent)]
    Unknown(UnknownComponent),
    /// The mapping has unknown keys, wrong types or missing keys (paths relative to it).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    /// The registration's decoder produced a config of another kind (a broken plugin).
    #[error("{category} `{name}` from {origin} does not produce a {category} config")]
    WrongKind {
        /// The category asked for.
        category: Category,
        /// The name.
        name: String,
        /// Who registered it.
        origin: Source,
    },
    /// The config serialises under a different name than it is registered under (the
    /// `typetag` name and the registered name disagree).
    #[error("{category} `{registered}` from {origin} serialises as `{serialized}`: its #[typetag::serialize(name = ...)] must equal the registered name")]
    NameMismatch {
        /// The category.
        category: Category,
        /// The registered name.
        registered: String,
        /// The name its serialisation carries.
        serialized: String,
        /// Who registered it.
        origin: Source,
    },
}
