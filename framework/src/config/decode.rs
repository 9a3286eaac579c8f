//! Decoding a YAML value into a typed config struct, reporting every unknown key and the first
//! type error with their key paths.

use serde::de::{self, DeserializeOwned, Visitor};

use super::path::{KeyPath, Segment};
use super::problem::Problem;
use super::value::ConfigValue;
use crate::suggest;

/// Decodes `value` into `T`. Keys `T` does not declare are reported as problems (with the
/// keys it does declare and the closest match), and so is the first value of the wrong type
/// or a missing required key. Paths are relative to `value`.
pub fn decode<T: DeserializeOwned>(value: ConfigValue) -> Result<T, Vec<Problem>> {
    let mut unknown: Vec<KeyPath> = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
    let ignored = serde_ignored::Deserializer::new(value, &mut record);
    let result: Result<T, _> = serde_path_to_error::deserialize(ignored);
    let mut problems: Vec<Problem> = unknown.iter().map(unknown_key_problem::<T>).collect();
    match result {
        Ok(decoded) if problems.is_empty() => Ok(decoded),
        Ok(_) => Err(problems),
        Err(error) => {
            let path = error_path(error.path());
            let message = error.inner().to_string();
            if message.starts_with(super::nested::NESTED_PROBLEMS) {
                let nested = super::nested::take_stashed();
                problems.extend(nested.into_iter().map(|p| p.under(&path)));
            } else {
                problems.push(Problem::new(path, clean_message(&message)));
            }
            Err(problems)
        }
    }
}

/// The keys a struct type declares, found by asking its `Deserialize` impl; `None` for types
/// that are not plain structs.
pub fn declared_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    let _ = T::deserialize(FieldProbe {
        fields: &mut fields,
    });
    fields
}

fn unknown_key_problem<T: DeserializeOwned>(path: &KeyPath) -> Problem {
    let key = match path.segments().last() {
        Some(Segment::Key(key)) => key.clone(),
        Some(Segment::Index(index)) => index.to_string(),
        None => String::new(),
    };
    let mut message = format!("unknown key `{key}`");
    if path.segments().len() == 1 {
        if let Some(fields) = declared_fields::<T>() {
            message.push_str(&format!(
                "; expected one of {}",
                suggest::quoted_list(fields.iter().copied())
            ));
            if let Some(close) = suggest::closest(&key, fields.iter().copied()) {
                message.push_str(&format!(" (did you mean `{close}`?)"));
            }
        }
    }
    Problem::new(path.clone(), message)
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> KeyPath {
    use serde_ignored::Path as P;
    match path {
        P::Root => KeyPath::root(),
        P::Seq { parent, index } => ignored_path(parent).index(*index),
        P::Map { parent, key } => ignored_path(parent).key(key.clone()),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

fn error_path(path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment as S;
    let mut out = KeyPath::root();
    for segment in path.iter() {
        match segment {
            S::Seq { index } => out.push(Segment::Index(*index)),
            S::Map { key } => out.push(Segment::Key(key.clone())),
            S::Enum { variant } => out.push(Segment::Key(variant.clone())),
            S::Unknown => {}
        }
    }
    out
}

/// serde_yaml appends "at line L column C" positions of its own value tree, which are
/// meaningless after merging; the caller attaches file locations instead.
fn clean_message(message: &str) -> String {
    match message.find(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// A deserializer that records the field list a struct's `Deserialize` impl asks for.
struct FieldProbe<'a> {
    fields: &'a mut Option<&'static [&'static str]>,
}

#[derive(Debug)]
struct ProbeDone;

impl std::fmt::Display for ProbeDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for ProbeDone {}

impl de::Error for ProbeDone {
    fn custom<M: std::fmt::Display>(_msg: M) -> Self {
        ProbeDone
    }
}

impl<'de> de::Deserializer<'de> for FieldProbe<'_> {
    type Error = ProbeDone;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ProbeDone> {
        Err(ProbeDone)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, ProbeDone> {
        *self.fields = Some(fields);
        Err(ProbeDone)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        size: usize,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        kernel_size: usize,
        #[serde(default)]
        inner: Option<Inner>,
    }

    fn value(text: &str) -> ConfigValue {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn decodes_valid_values() {
        let decoded: Outer = decode(value("kernel_size: 3\ninner: {size: 2}")).unwrap();
        assert_eq!(decoded.kernel_size, 3);
        assert_eq!(decoded.inner, Some(Inner { size: 2 }));
    }

    #[test]
    fn reports_every_unknown_key_with_suggestions() {
        let problems = decode::<Outer>(value(
            "kernel_sise: 3\nkernel_size: 1\ninner: {size: 2, extra: 1}",
        ))
        .unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 2, "{text:?}");
        assert!(
            text[0].contains("`kernel_sise`: unknown key `kernel_sise`"),
            "{text:?}"
        );
        assert!(text[0].contains("did you mean `kernel_size`"), "{text:?}");
        assert!(
            text[1].contains("`inner.extra`: unknown key `extra`"),
            "{text:?}"
        );
    }

    #[test]
    fn reports_type_errors_with_their_path() {
        let problems = decode::<Outer>(value("kernel_size: 3\ninner: {size: big}")).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path.to_string(), "inner.size");
        assert!(
            problems[0].message.contains("invalid type"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn reports_missing_keys() {
        let problems = decode::<Outer>(value("{}")).unwrap_err();
        assert!(problems[0].message.contains("missing field `kernel_size`"));
    }

    #[test]
    fn probes_declared_fields() {
        assert_eq!(
            declared_fields::<Outer>(),
            Some(&["kernel_size", "inner"][..])
        );
        assert_eq!(declared_fields::<usize>(), None);
    }
}
