//! The YAML config pipeline as `voxreg config check` and `train` run it: parse, read the
//! `plugins:` list, merge, upgrade older DeepReg layouts, resolve every component, and the
//! shared validation (shapes, memory, each component built once). A configuration that
//! resolves must print as YAML that resolves to the same configuration.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use voxreg::config::{ConfigDocument, ConfigSources};
use voxreg::registry::Registry;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::linked().expect("the built-in components register"))
}

/// The resolved configuration of `text`, as YAML, when it resolves and passes validation.
fn resolved(text: &str) -> Option<String> {
    let document = ConfigDocument::parse(text, Path::new("fuzz.yaml")).ok()?;
    let sources = ConfigSources::from_documents(vec![document]).ok()?;
    let config = sources.resolve(registry()).ok()?;
    voxreg::engine::check(&config).ok()?;
    config.to_yaml().ok()
}

fuzz_target!(|data: &[u8]| {
    voxreg_fuzz::start();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(yaml) = resolved(text) {
        let again = resolved(&yaml).expect("the printed configuration resolves again");
        assert_eq!(
            yaml, again,
            "printing and resolving again changed the configuration"
        );
    }
});
