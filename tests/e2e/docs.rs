//! The user guide stays true to the code: every built-in component has its section, every
//! flag in the command reference's tables exists, and the book's table of contents points
//! at pages that exist.

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

/// The subcommand a `## \`voxreg …\`` heading documents: its leading lower-case words.
fn heading_command(heading: &str) -> Option<Vec<String>> {
    let inner = heading.strip_prefix("## `voxreg ")?.split('`').next()?;
    let words: Vec<String> = inner
        .split_whitespace()
        .take_while(|w| {
            w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-')
        })
        .map(str::to_owned)
        .collect();
    (!words.is_empty()).then_some(words)
}

/// The long flags (`--name`) in the first cell of a Markdown table row.
fn row_flags(row: &str) -> Vec<String> {
    let Some(cell) = row.strip_prefix('|').and_then(|r| r.split('|').next()) else {
        return Vec::new();
    };
    cell.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|token| {
            token.starts_with("--") && token[2..].starts_with(|c: char| c.is_ascii_alphabetic())
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_flag_in_the_command_reference_exists() {
    let text = fs::read_to_string(repo_root().join("docs/src/cli.md")).unwrap();
    let mut command: Option<Vec<String>> = None;
    let mut help = String::new();
    let mut checked = 0;
    for line in text.lines() {
        if line.starts_with("## ") {
            command = heading_command(line);
            help = match &command {
                Some(words) => {
                    let mut args: Vec<&str> = words.iter().map(String::as_str).collect();
                    args.push("--help");
                    let output = crate::util::run(&args);
                    assert!(output.status.success(), "voxreg {args:?} fails");
                    crate::util::stdout(&output)
                }
                None => String::new(),
            };
            continue;
        }
        let Some(words) = &command else { continue };
        for flag in row_flags(line) {
            assert!(
                help.contains(&flag),
                "docs/src/cli.md documents `{flag}` for `voxreg {}`, which its --help does not list",
                words.join(" ")
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} flags found in the tables");
}
