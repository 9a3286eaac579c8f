//! Reading config files and their `plugins:` lists, before anything is resolved.

use std::path::{Path, PathBuf};

use super::path::KeyPath;
use super::problem::{Problem, Problems};
use super::resolve;
use super::schema::Config;
use super::upgrade;
use super::value::{self, ConfigDocument, ConfigValue};
use super::ConfigError;
use crate::registry::Registry;

/// Parsed config files, in merge order, and the plugin libraries they ask for.
#[derive(Clone, Debug)]
pub struct ConfigSources {
    documents: Vec<ConfigDocument>,
    plugins: Vec<PathBuf>,
}

impl ConfigSources {
    /// Reads and parses each file (YAML syntax only; nothing is resolved yet). Relative
    /// `plugins:` paths are taken relative to the file that lists them.
    pub fn read<P: AsRef<Path>>(paths: &[P]) -> Result<Self, ConfigError> {
        let documents = paths
            .iter()
            .map(|path| ConfigDocument::read(path.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_documents(documents)
    }

    /// Builds the sources from already parsed documents.
    pub fn from_documents(documents: Vec<ConfigDocument>) -> Result<Self, ConfigError> {
        let mut plugins = Vec::new();
        let mut problems = Vec::new();
        for document in &documents {
            let base = document.origin.parent().unwrap_or(Path::new(""));
            let listed = document
                .value
                .as_mapping()
                .and_then(|m| m.get(value::key("plugins")));
            match listed {
                None | Some(ConfigValue::Null) => {}
                Some(ConfigValue::Sequence(items)) => {
                    for (index, item) in items.iter().enumerate() {
                        match item.as_str() {
                            Some(path) => {
                                let path = Path::new(path);
                                let resolved = if path.is_absolute() {
                                    path.to_owned()
                                } else {
                                    base.join(path)
                                };
                                if !plugins.contains(&resolved) {
                                    plugins.push(resolved);
                                }
                            }
                            None => problems.push(located(
                                document,
                                KeyPath::keys(&["plugins"]).index(index),
                                "a plugin entry must be a path to a dynamic library",
                            )),
                        }
                    }
                }
                Some(other) => problems.push(located(
                    document,
                    KeyPath::keys(&["plugins"]),
                    format!(
                        "expected a list of plugin library paths, found {}",
                        value::kind_name(other)
                    ),
                )),
            }
        }
        if problems.is_empty() {
            Ok(ConfigSources { documents, plugins })
        } else {
            Err(ConfigError::Invalid(Problems(problems)))
        }
    }

    /// The plugin libraries the files list, in order, without repeats. Load them into the
    /// registry before calling [`ConfigSources::resolve`].
    pub fn plugins(&self) -> &[PathBuf] {
        &self.plugins
    }

    /// The parsed documents.
    pub fn documents(&self) -> &[ConfigDocument] {
        &self.documents
    }

    /// Merges the documents (later ones winning, mappings merged deeply), upgrades older
    /// DeepReg layouts, and resolves every component through `registry`.
    pub fn resolve(&self, registry: &Registry) -> Result<Config, ConfigError> {
        let mut merged = ConfigValue::Mapping(Default::default());
        for document in &self.documents {
            value::merge(&mut merged, document.value.clone());
        }
        for note in upgrade::upgrade_deepreg_layout(&mut merged) {
            tracing::warn!("upgraded an older DeepReg config layout: {note}");
        }
        resolve::resolve(merged, self.plugins.clone(), registry).map_err(|problems| {
            let mut located: Vec<Problem> = problems
                .into_iter()
                .map(|mut problem| {
                    problem.location = self.location_of(&problem.path);
                    problem
                })
                .collect();
            located.sort_by_key(|p| {
                let file_order = p
                    .location
                    .as_ref()
                    .and_then(|l| self.documents.iter().position(|d| d.origin == l.file));
                (file_order, p.location.as_ref().map(|l| (l.line, l.column)))
            });
            ConfigError::Invalid(Problems(located))
        })
    }

    /// Problems found after resolving (by [`crate::engine::check`]) as a config error, each
    /// located at the file and line of its key; a problem at a component whose message
    /// quotes one of the component's keys is moved to that key.
    pub fn locate(&self, problems: Vec<Problem>) -> ConfigError {
        let located = problems
            .into_iter()
            .map(|mut problem| {
                if let Some(key) = self.quoted_key(&problem.path, &problem.message) {
                    problem.path = problem.path.key(key);
                }
                problem.location = self.location_of(&problem.path);
                problem
            })
            .collect();
        ConfigError::Invalid(Problems(located))
    }

    /// The first word of `message` that is a key written under `path` in some file.
    fn quoted_key(&self, path: &KeyPath, message: &str) -> Option<String> {
        message
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.len() > 1)
            .find(|word| {
                let candidate = path.key(*word);
                self.documents
                    .iter()
                    .any(|document| document.location_of(&candidate).is_some())
            })
            .map(str::to_owned)
    }

    /// Where the value at `path` was last written (the latest file wins, as in merging);
    /// falls back to the nearest written ancestor.
    pub fn location_of(&self, path: &KeyPath) -> Option<super::Location> {
        let mut current = Some(path.clone());
        while let Some(path) = current {
            if let Some(location) = self
                .documents
                .iter()
                .rev()
                .find_map(|document| document.location_of(&path))
            {
                return Some(location);
            }
            current = path.parent().filter(|p| !p.is_root());
        }
        None
    }
}

fn located(document: &ConfigDocument, path: KeyPath, message: impl Into<String>) -> Problem {
    let mut problem = Problem::new(path.clone(), message);
    problem.location = document.location_of(&path);
    problem
}
