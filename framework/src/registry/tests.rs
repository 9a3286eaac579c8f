//! Registry behaviour, with components defined here and registered by hand.

use serde::{Deserialize, Serialize};

use super::*;
use crate::component::{ComponentError, ImageLossConfig, LabelLossConfig, Loss};
use crate::config::ConfigDocument;

#[derive(Debug, Serialize, Deserialize)]
struct Mse {
    #[serde(default)]
    scale: f64,
}

#[typetag::serialize(name = "mse")]
impl ImageLossConfig for Mse {
    fn build(&self, _spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        Err(ComponentError::invalid(
            "image_loss `mse`",
            "test component",
        ))
    }
}

#[typetag::serialize(name = "mse")]
impl LabelLossConfig for Mse {
    fn build(&self, _spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        Err(ComponentError::invalid(
            "label_loss `mse`",
            "test component",
        ))
    }
}

/// Serialises under another name than it is registered with.
#[derive(Debug, Serialize, Deserialize)]
struct Misnamed {}

#[typetag::serialize(name = "not_what_was_registered")]
impl ImageLossConfig for Misnamed {
    fn build(&self, _spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        Err(ComponentError::invalid("image_loss", "test component"))
    }
}

fn source(crate_name: &str) -> Source {
    Source::Linked {
        crate_name: crate_name.to_owned(),
    }
}

fn value(text: &str) -> ConfigValue {
    ConfigDocument::parse(text, std::path::Path::new("test.yaml"))
        .unwrap()
        .value
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .insert(
            crate::component_registration!(image_loss, "mse", Mse, "test"),
            source("a"),
        )
        .unwrap();
    registry
}

#[test]
fn decodes_a_registered_component_with_defaults() {
    let config = registry()
        .decode::<dyn ImageLossConfig>("mse", value("{}"))
        .unwrap();
    assert_eq!(format!("{config:?}"), "Mse { scale: 0.0 }");
    let yaml = registry()
        .defaults_yaml(Category::ImageLoss, "mse")
        .unwrap();
    assert_eq!(yaml, "name: mse\nscale: 0.0\n");
}

#[test]
fn a_duplicate_name_names_both_sources() {
    let mut registry = registry();
    let error = registry
        .insert(
            crate::component_registration!(image_loss, "mse", Mse, "again"),
            source("b"),
        )
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "image_loss `mse` is registered twice: by a (linked) and by b (linked)"
    );
}

#[test]
fn the_same_name_may_live_in_two_categories() {
    let mut registry = registry();
    registry
        .insert(
            crate::component_registration!(label_loss, "mse", Mse, "label"),
            source("b"),
        )
        .unwrap();
    assert_eq!(
        registry.names(Category::LabelLoss).collect::<Vec<_>>(),
        ["mse"]
    );
    assert!(registry
        .decode::<dyn LabelLossConfig>("mse", value("{}"))
        .is_ok());
}

#[test]
fn insert_all_adds_nothing_on_a_clash() {
    let mut registry = registry();
    let clash = [
        (
            crate::component_registration!(image_loss, "fresh", Mse, "new"),
            source("c"),
        ),
        (
            crate::component_registration!(image_loss, "mse", Mse, "taken"),
            source("c"),
        ),
    ];
    assert!(registry.insert_all(clash).is_err());
    assert_eq!(registry.len(), 1);
}

#[test]
fn unknown_names_list_the_category_and_suggest() {
    let error = registry().get(Category::ImageLoss, "mes").unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown image_loss `mes`; registered: `mse` (did you mean `mse`?)"
    );
    let error = registry().get(Category::Backbone, "unet").unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown backbone `unet`; registered: (none)"
    );
}

#[test]
fn optimizer_names_ignore_case() {
    let mut registry = Registry::new();
    let mut registration = crate::component_registration!(image_loss, "adam", Mse, "test");
    registration.category = Category::Optimizer;
    registry.insert(registration, source("a")).unwrap();
    assert!(registry.get(Category::Optimizer, "Adam").is_ok());
    assert!(registry.get(Category::Optimizer, "ADAM").is_ok());
}

#[test]
fn invalid_keys_are_reported_relative_to_the_component() {
    let error = registry()
        .decode::<dyn ImageLossConfig>("mse", value("extra: 1\nscale: big\n"))
        .unwrap_err();
    let DecodeError::Invalid(problems) = error else {
        panic!("expected problems, got {error}");
    };
    let paths: Vec<String> = problems.iter().map(|p| p.path.to_string()).collect();
    assert_eq!(paths, ["extra", "scale"]);
}

#[test]
fn a_config_of_the_wrong_kind_is_an_error() {
    let mut registry = Registry::new();
    // Registered as a label loss, but the decoder produces an image loss config.
    let mut registration = crate::component_registration!(image_loss, "mse", Mse, "test");
    registration.category = Category::LabelLoss;
    registry.insert(registration, source("broken")).unwrap();
    let error = registry
        .decode::<dyn LabelLossConfig>("mse", value("{}"))
        .unwrap_err();
    assert!(matches!(error, DecodeError::WrongKind { .. }), "{error}");
}

#[test]
fn a_typetag_name_that_disagrees_is_an_error() {
    let mut registry = Registry::new();
    registry
        .insert(
            crate::component_registration!(image_loss, "misnamed", Misnamed, "test"),
            source("broken"),
        )
        .unwrap();
    let error = registry
        .decode::<dyn ImageLossConfig>("misnamed", value("{}"))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("serialises as `not_what_was_registered`"),
        "{error}"
    );
}

#[test]
fn registrations_know_their_crate_and_keys() {
    let registration = crate::component_registration!(image_loss, "mse", Mse, "test");
    assert_eq!(registration.crate_name(), "voxreg_framework");
    assert_eq!((registration.keys)(), Some(&["scale"][..]));
}

/// Required and optional keys of several kinds, for the key summary.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keyed {
    channels: usize,
    levels: Vec<usize>,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    limit: Option<f64>,
}

#[typetag::serialize(name = "keyed")]
impl ImageLossConfig for Keyed {
    fn build(&self, _spatial_dims: usize) -> Result<Box<dyn Loss>, ComponentError> {
        Err(ComponentError::invalid(
            "image_loss `keyed`",
            "test component",
        ))
    }
}

#[test]
fn key_info_finds_required_keys_their_kinds_and_defaults() {
    let mut registry = Registry::new();
    registry
        .insert(
            crate::component_registration!(image_loss, "keyed", Keyed, "test"),
            source("a"),
        )
        .unwrap();
    let keys = registry.key_info(Category::ImageLoss, "keyed").unwrap();
    let summary: Vec<(&str, &str, Option<String>)> = keys
        .iter()
        .map(|k| {
            let default = k
                .default
                .as_ref()
                .map(|v| config::to_yaml_string(v).unwrap());
            (k.key.as_str(), k.kind, default)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("channels", "an integer", None),
            ("levels", "a list", None),
            ("mode", "a string", Some("''\n".to_owned())),
            ("limit", "optional: a number", Some("null\n".to_owned())),
        ]
    );
}
