//! `voxreg plugins list|show|new` (`build` is in `plugin_build`).

use std::path::PathBuf;

use anyhow::anyhow;
use voxreg::framework::registry::Category;

use super::stdout::say;
use super::{host, plugin_new};

/// Prints every registered component (optionally one category) as a table.
pub fn list(plugins: &[PathBuf], category: Option<&str>) -> anyhow::Result<()> {
    let registry = host::registry(plugins)?;
    let only = category.map(parse_category).transpose()?;
    let rows: Vec<[String; 4]> = registry
        .iter()
        .filter(|c| only.is_none_or(|only| c.registration.category == only))
        .map(|c| {
            [
                c.registration.category.to_string(),
                c.registration.name.to_owned(),
                c.source.to_string(),
                c.registration.description.to_owned(),
            ]
        })
        .collect();
    let header = ["CATEGORY", "NAME", "SOURCE", "DESCRIPTION"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        say!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )?;
    }
    Ok(())
}

/// Prints one component's config with defaults, or what it requires.
pub fn show(plugins: &[PathBuf], category: &str, name: &str) -> anyhow::Result<()> {
    let registry = host::registry(plugins)?;
    let category = parse_category(category)?;
    let entry = registry.get(category, name)?;
    say!(
        "# {} `{}` from {}",
        category,
        entry.registration.name,
        entry.source
    )?;
    say!("# {}", entry.registration.description)?;
    match registry.key_info(category, name) {
        Ok(keys) => {
            say!("# every key, with its default; required keys have none and must be given")?;
            let lines: Vec<(String, String)> =
                std::iter::once((format!("name: {}", entry.registration.name), String::new()))
                    .chain(keys.iter().map(|info| match &info.default {
                        Some(value) => (
                            format!("{}: {}", info.key, flow(value)),
                            info.kind.to_owned(),
                        ),
                        None => (format!("{}:", info.key), format!("required: {}", info.kind)),
                    }))
                    .collect();
            let width = lines
                .iter()
                .map(|(line, _)| line.chars().count())
                .max()
                .unwrap_or(0);
            for (line, comment) in lines {
                if comment.is_empty() {
                    say!("{line}")?;
                } else {
                    say!("{line:<width$}  # {comment}")?;
                }
            }
        }
        Err(error) => {
            say!("# its keys could not be worked out: {error}")?;
            if let Some(keys) = (entry.registration.keys)() {
                say!("# keys: {}", keys.join(", "))?;
            }
        }
    }
    Ok(())
}

/// `value` as one line of YAML flow style (`[1, 2]`, `{a: 1}`).
fn flow(value: &voxreg::config::ConfigValue) -> String {
    use voxreg::config::ConfigValue;
    match value {
        ConfigValue::Sequence(items) => {
            format!(
                "[{}]",
                items.iter().map(flow).collect::<Vec<_>>().join(", ")
            )
        }
        ConfigValue::Mapping(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", flow(k), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ConfigValue::Tagged(tagged) => format!("{} {}", tagged.tag, flow(&tagged.value)),
        scalar => voxreg::config::to_yaml_string(scalar)
            .map(|text| text.trim_end().to_owned())
            .unwrap_or_default(),
    }
}

fn parse_category(text: &str) -> anyhow::Result<Category> {
    Category::parse(text).ok_or_else(|| {
        anyhow!(
            "unknown category `{text}`; one of: {}",
            Category::ALL.map(|c| c.as_str()).join(", ")
        )
    })
}

/// Creates a plugin crate and says what to do next.
pub fn new(dir: &std::path::Path, name: Option<&str>) -> anyhow::Result<()> {
    for file in plugin_new::new(dir, name)? {
        say!("created {}", file.display())?;
    }
    say!(
        "build it with `voxreg plugins build {}`, then load the library it prints with --plugin",
        dir.display()
    )?;
    Ok(())
}
