//! Key paths into a YAML document (`train.loss.image[1].kernel_size`), used to point at the
//! place a problem comes from.

use std::fmt;

/// One step of a [`KeyPath`]: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A key of a mapping.
    Key(String),
    /// An index into a sequence.
    Index(usize),
}

/// A path from the document root to a value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The document root.
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// A path made of mapping keys only (`KeyPath::keys(&["train", "epochs"])`).
    pub fn keys(keys: &[&str]) -> Self {
        KeyPath(keys.iter().map(|k| Segment::Key((*k).to_owned())).collect())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.into()));
        KeyPath(segments)
    }

    /// This path extended by a sequence index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        KeyPath(segments)
    }

    /// This path followed by `tail`.
    pub fn join(&self, tail: &KeyPath) -> Self {
        let mut segments = self.0.clone();
        segments.extend(tail.0.iter().cloned());
        KeyPath(segments)
    }

    /// The path without its last segment, or `None` at the root.
    pub fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            None
        } else {
            Some(KeyPath(self.0[..self.0.len() - 1].to_vec()))
        }
    }

    /// Whether this is the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The segments from the root.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Appends a segment in place.
    pub fn push(&mut self, segment: Segment) {
        self.0.push(segment);
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_keys_and_indices() {
        let path = KeyPath::keys(&["train", "loss", "image"])
            .index(1)
            .key("kernel_size");
        assert_eq!(path.to_string(), "train.loss.image[1].kernel_size");
        assert_eq!(KeyPath::root().to_string(), "(top level)");
        assert_eq!(path.parent().unwrap().to_string(), "train.loss.image[1]");
    }
}
