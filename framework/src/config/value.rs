//! The YAML value tree and everything that touches the YAML library: parsing files (with the
//! position of every key), merging documents, and serialising back. Keep every use of
//! `serde_yaml` in this module so the crate (archived upstream) can be swapped for a
//! maintained fork without touching any component.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::path::{KeyPath, Segment};
use super::problem::Location;
use super::ConfigError;

/// A parsed YAML value.
pub type ConfigValue = serde_yaml::Value;

/// A YAML mapping.
pub type ConfigMapping = serde_yaml::Mapping;

/// The largest config file read: DeepReg's configs are a few KiB, and a parsed YAML value
/// takes many times its text's size in memory.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// One configuration file: its value and where each key was written.
#[derive(Clone, Debug)]
pub struct ConfigDocument {
    /// The file the document was read from (or a label for in-memory text).
    pub origin: PathBuf,
    /// The parsed document.
    pub value: ConfigValue,
    positions: HashMap<KeyPath, (usize, usize)>,
}

impl ConfigDocument {
    /// Reads and parses one YAML file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let refuse = |message: String| ConfigError::Read {
            path: path.to_owned(),
            source: std::io::Error::other(message),
        };
        if let Some(problem) = crate::files::regular_file_problem(path) {
            return Err(refuse(problem));
        }
        let size = std::fs::metadata(path)
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?
            .len();
        if size > MAX_CONFIG_BYTES {
            return Err(refuse(format!(
                "{size} bytes, more than a config file may hold ({MAX_CONFIG_BYTES} bytes)"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses YAML text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::Syntax {
                path: origin.to_owned(),
                line: 1,
                column: 1,
                message: format!(
                    "{} bytes, more than a config file may hold ({MAX_CONFIG_BYTES} bytes)",
                    text.len()
                ),
            });
        }
        let mut value: ConfigValue =
            serde_yaml::from_str(text).map_err(|error| syntax_error(origin, &error))?;
        // Merge keys (`<<: *defaults`), which PyYAML, and so DeepReg, applies.
        value
            .apply_merge()
            .map_err(|error| syntax_error(origin, &error))?;
        let value = match value {
            ConfigValue::Null => ConfigValue::Mapping(ConfigMapping::new()),
            ConfigValue::Mapping(_) => value,
            other => {
                return Err(ConfigError::NotAMapping {
                    path: origin.to_owned(),
                    found: kind_name(&other).to_owned(),
                })
            }
        };
        Ok(ConfigDocument {
            origin: origin.to_owned(),
            value,
            positions: key_positions(text),
        })
    }

    /// Where `path` was written in this document, if it was.
    pub fn location_of(&self, path: &KeyPath) -> Option<Location> {
        self.positions.get(path).map(|&(line, column)| Location {
            file: self.origin.clone(),
            line,
            column,
        })
    }
}

fn syntax_error(origin: &Path, error: &serde_yaml::Error) -> ConfigError {
    let (line, column) = error
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let message = error.to_string();
    let mut message = match message.find(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message,
    };
    if message.contains("repetition limit exceeded") {
        message.push_str(": its aliases (`*name`) expand to too many values");
    } else if message.contains("recursion limit exceeded") {
        message.push_str(": lists or mappings are nested too deeply");
    }
    ConfigError::Syntax {
        path: origin.to_owned(),
        line,
        column,
        message,
    }
}

/// A short name for the kind of a YAML value ("a mapping", "a string", …).
pub fn kind_name(value: &ConfigValue) -> &'static str {
    match value {
        ConfigValue::Null => "null",
        ConfigValue::Bool(_) => "a boolean",
        ConfigValue::Number(_) => "a number",
        ConfigValue::String(_) => "a string",
        ConfigValue::Sequence(_) => "a list",
        ConfigValue::Mapping(_) => "a mapping",
        ConfigValue::Tagged(_) => "a tagged value",
    }
}

/// Merges `overlay` into `base` as DeepReg does: mappings merge key by key, recursively; any
/// other value (lists included) replaces what was there. One refinement: a component mapping
/// whose `name` changes is replaced whole, since the keys of the old component mean nothing
/// to the new one (DeepReg would pass them on and fail, or silently ignore them).
pub fn merge(base: &mut ConfigValue, overlay: ConfigValue) {
    match (base, overlay) {
        (ConfigValue::Mapping(base), ConfigValue::Mapping(overlay))
            if selects_another_component(base, &overlay) =>
        {
            *base = overlay;
        }
        (ConfigValue::Mapping(base), ConfigValue::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) if existing.is_mapping() && value.is_mapping() => {
                        merge(existing, value)
                    }
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn selects_another_component(base: &ConfigMapping, overlay: &ConfigMapping) -> bool {
    match (base.get(key("name")), overlay.get(key("name"))) {
        (Some(old), Some(new)) => old != new,
        _ => false,
    }
}

/// Serialises any value (a component config, a section) into a YAML value.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<ConfigValue, String> {
    serde_yaml::to_value(value).map_err(|e| e.to_string())
}

/// Renders a YAML value as a document.
pub fn to_yaml_string(value: &ConfigValue) -> Result<String, String> {
    serde_yaml::to_string(value).map_err(|e| e.to_string())
}

/// A mapping key from a string.
pub fn key(text: &str) -> ConfigValue {
    ConfigValue::String(text.to_owned())
}

/// Records the line and column of every mapping key and sequence item in `text`.
fn key_positions(text: &str) -> HashMap<KeyPath, (usize, usize)> {
    let mut recorder = PositionRecorder::default();
    let mut parser = Parser::new_from_str(text);
    // The text already parsed once with serde_yaml; if this second parser disagrees, the
    // document simply has fewer known positions.
    let _ = parser.load(&mut recorder, false);
    recorder.positions
}

#[derive(Default)]
struct PositionRecorder {
    positions: HashMap<KeyPath, (usize, usize)>,
    stack: Vec<Frame>,
}

enum Frame {
    Mapping {
        path: KeyPath,
        pending_key: Option<String>,
    },
    Sequence {
        path: KeyPath,
        next: usize,
    },
}

impl PositionRecorder {
    /// The path of the value that starts now (in the innermost collection), consuming the
    /// slot it fills; `None` when the event is a mapping key rather than a value.
    fn next_value_path(&mut self, mark: Marker) -> Option<KeyPath> {
        match self.stack.last_mut() {
            None => Some(KeyPath::root()),
            Some(Frame::Sequence { path, next }) => {
                let item = path.index(*next);
                *next += 1;
                self.positions
                    .insert(item.clone(), (mark.line(), mark.col() + 1));
                Some(item)
            }
            Some(Frame::Mapping { path, pending_key }) => {
                pending_key.take().map(|key| path.key(key))
            }
        }
    }
}

impl MarkedEventReceiver for PositionRecorder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) => {
                let is_key = self.next_value_path(mark).is_none();
                if let (true, Some(Frame::Mapping { path, pending_key })) =
                    (is_key, self.stack.last_mut())
                {
                    self.positions
                        .insert(path.key(text.clone()), (mark.line(), mark.col() + 1));
                    *pending_key = Some(text);
                }
            }
            Event::MappingStart(..) => {
                let path = self.next_value_path(mark).unwrap_or_else(|| {
                    let mut complex_key = KeyPath::root();
                    complex_key.push(Segment::Key("?".to_owned()));
                    complex_key
                });
                self.stack.push(Frame::Mapping {
                    path,
                    pending_key: None,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.next_value_path(mark).unwrap_or_default();
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                self.next_value_path(mark);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> ConfigDocument {
        ConfigDocument::parse(text, Path::new("test.yaml")).unwrap()
    }

    #[test]
    fn records_key_positions() {
        let document = doc(
            "train:\n  loss:\n    image:\n      - name: lncc\n        weight: 1\n  epochs: 3\n",
        );
        let at = |keys: &[&str]| document.location_of(&KeyPath::keys(keys)).map(|l| l.line);
        assert_eq!(at(&["train"]), Some(1));
        assert_eq!(at(&["train", "epochs"]), Some(6));
        let weight = KeyPath::keys(&["train", "loss", "image"])
            .index(0)
            .key("weight");
        assert_eq!(document.location_of(&weight).map(|l| l.line), Some(5));
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let error = ConfigDocument::parse("a: [1, 2\nb: 3\n", Path::new("bad.yaml")).unwrap_err();
        match error {
            ConfigError::Syntax { line, .. } => assert!(line >= 1),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_named() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let items = vec![format!("*a{}", level - 1); 10].join(", ");
            bomb.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        let error = ConfigDocument::parse(&bomb, Path::new("bomb.yaml"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("bomb.yaml: YAML syntax error"), "{error}");
        assert!(error.contains("expand to too many values"), "{error}");
        let deep = "[".repeat(10_000);
        let error = ConfigDocument::parse(&deep, Path::new("deep.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("deep.yaml:1:") && error.contains("nested too deeply"),
            "{error}"
        );
    }

    #[test]
    fn rejects_non_mapping_documents() {
        let error = ConfigDocument::parse("- 1\n- 2\n", Path::new("list.yaml")).unwrap_err();
        assert!(error.to_string().contains("list.yaml"), "{error}");
    }

    #[test]
    fn merges_deeply_and_replaces_lists() {
        let mut base = doc("a: {b: 1, c: [1, 2]}\nd: 1\n").value;
        let overlay = doc("a: {c: [3], e: 2}\nd: {x: 1}\n").value;
        merge(&mut base, overlay);
        assert_eq!(base, doc("a: {b: 1, c: [3], e: 2}\nd: {x: 1}\n").value);
    }

    #[test]
    fn a_component_with_another_name_replaces_the_old_one() {
        let mut base = doc("backbone: {name: local, depth: 3, extract_levels: [0, 1]}\n").value;
        merge(&mut base, doc("backbone: {name: unet, depth: 4}\n").value);
        assert_eq!(base, doc("backbone: {name: unet, depth: 4}\n").value);
        let mut same = doc("backbone: {name: local, depth: 3, extract_levels: [0, 1]}\n").value;
        merge(&mut same, doc("backbone: {name: local, depth: 4}\n").value);
        assert_eq!(
            same,
            doc("backbone: {name: local, depth: 4, extract_levels: [0, 1]}\n").value
        );
    }
}
