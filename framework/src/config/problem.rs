//! What can be wrong with a configuration, with enough context to find and fix it.

use std::fmt;
use std::path::PathBuf;

use super::path::KeyPath;

/// Where in which file a key was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The YAML file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem found in a configuration: the key it concerns and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key path the problem concerns.
    pub path: KeyPath,
    /// What is wrong and, where known, what would be right.
    pub message: String,
    /// Where the key was written, when it was written in a file.
    pub location: Option<Location>,
}

impl Problem {
    /// A problem at `path` with no location yet.
    pub fn new(path: KeyPath, message: impl Into<String>) -> Self {
        Problem {
            path,
            message: message.into(),
            location: None,
        }
    }

    /// The same problem under a path prefix (for problems found inside a component).
    pub fn under(mut self, prefix: &KeyPath) -> Self {
        self.path = prefix.join(&self.path);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        write!(f, "`{}`: {}", self.path, self.message)
    }
}

/// Every problem found in one configuration, reported together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(
            f,
            "{count} problem{} in the configuration:",
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}
