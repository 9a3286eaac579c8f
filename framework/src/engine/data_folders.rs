//! Checking every data folder a command will read before it starts, so that a user whose
//! data is not there (a typo, or a DeepReg demo whose data was never downloaded) hears about
//! all of it at once, with a hint, and nothing is written.

use std::path::{Component, Path};

use super::EngineError;
use crate::component::Split;
use crate::config::Config;
use crate::files::folder_problem;

/// The DeepReg demo a path lies in (`…/demos/<name>/…`), if it does.
fn deepreg_demo(dir: &Path) -> Option<String> {
    let parts: Vec<_> = dir
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect();
    let at = parts.iter().position(|part| *part == "demos")?;
    parts.get(at + 1).map(|name| (*name).to_owned())
}

/// Refuses, in one error, every data folder of `splits` (those the configuration has) that
/// is missing or not a folder, each with its key; when one lies in a DeepReg demo, says
/// how DeepReg's demos fetch their data.
pub fn check_data_folders(config: &Config, splits: &[Split]) -> Result<(), EngineError> {
    let mut problems = Vec::new();
    let mut demo = None;
    for &split in splits {
        let section = config.dataset.split(split);
        for dir in section.iter().flat_map(|section| &section.dir) {
            if let Some(what) = folder_problem(dir) {
                problems.push(format!(
                    "{}: the data folder of `dataset.{}.dir` {what}",
                    dir.display(),
                    split.as_str()
                ));
                demo = demo.or_else(|| deepreg_demo(dir));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut message = if problems.len() == 1 {
        problems.remove(0)
    } else {
        format!(
            "{} data folders are missing:\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        )
    };
    if let Some(name) = demo {
        message.push_str(&format!(
            "\n  hint: DeepReg's demos download their data first: run `python demos/{name}/demo_data.py` in DeepReg's repository (it writes demos/{name}/dataset), then run voxreg from that repository's root or point `dir` at the dataset"
        ));
    }
    Err(EngineError::Config(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deepreg_demo_is_recognised_by_its_path() {
        assert_eq!(
            deepreg_demo(Path::new("demos/grouped_mr_heart/dataset/train")).as_deref(),
            Some("grouped_mr_heart")
        );
        assert_eq!(deepreg_demo(Path::new("/data/train")), None);
    }
}
