//! Configuration: DeepReg's YAML format, read from one or more files (merged deeply, later
//! files winning), with components resolved by name through the [`Registry`].
//!
//! Reading happens in two steps so plugins load before any component is looked up:
//! [`ConfigSources::read`] parses the files and collects their `plugins:` lists; after the
//! caller has loaded those plugins, [`ConfigSources::resolve`] merges the documents and builds
//! the typed [`Config`], reporting every problem found, each with its key path and the file
//! and line it was written at.

mod decode;
mod hyper;
mod nested;
mod path;
mod problem;
mod resolve;
mod schema;
mod sources;
mod terms;
mod upgrade;
mod value;

use std::path::PathBuf;

pub use decode::{declared_fields, decode};
pub use hyper::{fixed_hyper, sample_hyper, HyperParameter};
pub(crate) use nested::RegistryScope;
pub use nested::{decode_component, Component};
pub use path::{KeyPath, Segment};
pub use problem::{Location, Problem, Problems};
pub use schema::{Config, DatasetConfig, LossConfig, PreprocessConfig, SplitConfig, TrainConfig};
pub use sources::ConfigSources;
pub use terms::{LossTerm, Section, TermMask, Weight};
pub use value::{
    key, kind_name, merge, to_value, to_yaml_string, ConfigDocument, ConfigMapping, ConfigValue,
};

#[allow(unused_imports)]
pub(crate) use crate::registry::Registry;

/// Why a configuration could not be read or resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid YAML.
    #[error("{}: YAML syntax error: {message}", file_position(path, *line, *column))]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line; 0 when the parser gave no position.
        line: usize,
        /// 1-based column; 0 when the parser gave no position.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A file's top level is not a mapping.
    #[error("{}: a config file must be a YAML mapping (with `dataset:` and `train:`), found {found}", path.display())]
    NotAMapping {
        /// The file.
        path: PathBuf,
        /// What the top level is.
        found: String,
    },
    /// The merged configuration has problems; all of them are listed.
    #[error("{0}")]
    Invalid(Problems),
    /// The resolved configuration could not be written as YAML.
    #[error("cannot serialise the resolved configuration: {0}")]
    Serialize(String),
}

/// `path:line:column`, or the path alone when the position is unknown (line 0).
fn file_position(path: &std::path::Path, line: usize, column: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}:{column}", path.display())
    }
}
