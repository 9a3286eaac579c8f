//! `voxreg plugins list|show|new` (`build` is in `plugin_build`).

use std::path::PathBuf;

use anyhow::anyhow;
use voxreg::framework::registry::Category;

use super::stdout::{say, say_raw};
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
    match registry.defaults_yaml(category, name) {
        Ok(yaml) => say_raw!("{yaml}")?,
        Err(error) => {
            say!("# cannot be built from defaults alone: {error}")?;
            if let Some(keys) = (entry.registration.keys)() {
                say!("# keys: {}", keys.join(", "))?;
            }
        }
    }
    Ok(())
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
