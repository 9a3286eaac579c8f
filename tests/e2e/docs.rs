//! The user guide stays true to the code: every built-in component has its section, and the
//! book's table of contents points at pages that exist.

use std::fs;

use voxreg::registry::{Registry, Source};

use crate::util::repo_root;

#[test]
fn every_builtin_component_is_documented() {
    let docs = fs::read_to_string(repo_root().join("docs/src/components.md")).unwrap();
    let registry = Registry::linked().unwrap();
    let mut checked = 0;
    for component in registry.iter() {
        let Source::Linked { crate_name } = &component.source else {
            continue;
        };
        if !crate_name.starts_with("voxreg_") {
            continue;
        }
        let heading = format!(
            "### {} `{}`",
            component.registration.category, component.registration.name
        );
        assert!(
            docs.contains(&heading),
            "docs/src/components.md lacks `{heading}`"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} built-ins found");
}

#[test]
fn the_table_of_contents_points_at_existing_pages() {
    let src = repo_root().join("docs/src");
    let summary = fs::read_to_string(src.join("SUMMARY.md")).unwrap();
    let mut pages = 0;
    for link in summary.split("](").skip(1) {
        let page = &link[..link.find(')').unwrap()];
        assert!(
            src.join(page).exists(),
            "SUMMARY.md links to missing {page}"
        );
        pages += 1;
    }
    assert!(pages >= 6);
}
