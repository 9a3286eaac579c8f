//! The shipped configs: every one resolves, merges as DeepReg merges, and round-trips.

use std::fs;
use std::path::{Path, PathBuf};

use voxreg::config::{Config, ConfigDocument, ConfigSources};
use voxreg::registry::Registry;

use crate::util::repo_root;

fn resolve(files: &[PathBuf]) -> Config {
    let registry = Registry::linked().expect("built-ins register without clashes");
    ConfigSources::read(files)
        .and_then(|sources| sources.resolve(&registry))
        .unwrap_or_else(|error| panic!("{files:?}: {error}"))
}

fn configs(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo_root().join(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Full configs resolve alone; overlays (files without a `dataset` section) resolve on top
/// of DeepReg's reference config, as DeepReg's tests combine them.
#[test]
fn every_shipped_config_resolves() {
    let base = repo_root().join("configs/deepreg/unpaired_labeled_ddf.yaml");
    let mut checked = 0;
    for dir in ["configs", "configs/deepreg"] {
        for file in configs(dir) {
            let text = fs::read_to_string(&file).unwrap();
            let files = if text.contains("\ndataset:") || text.starts_with("dataset:") {
                vec![file]
            } else {
                vec![base.clone(), file]
            };
            resolve(&files);
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} configs found");
}

/// The resolved config, written out and read back, resolves to the same config.
#[test]
fn resolved_configs_round_trip() {
    for file in configs("configs/deepreg")
        .into_iter()
        .chain(configs("configs"))
    {
        let text = fs::read_to_string(&file).unwrap();
        if !text.contains("dataset:") {
            continue;
        }
        let first = resolve(std::slice::from_ref(&file)).to_yaml().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let written = dir.path().join("resolved.yaml");
        fs::write(&written, &first).unwrap();
        let second = resolve(&[written]).to_yaml().unwrap();
        assert_eq!(first, second, "{} does not round-trip", file.display());
    }
}

/// DeepReg v0.1.1's layout is upgraded to exactly the current one.
#[test]
fn deepreg_v011_layout_upgrades_to_the_current_one() {
    let dir = repo_root().join("configs/deepreg");
    let old = resolve(&[dir.join("grouped_mr_heart_v011.yaml")]);
    let new = resolve(&[dir.join("grouped_mr_heart.yaml")]);
    let (old, new) = (old.to_yaml().unwrap(), new.to_yaml().unwrap());
    // v0.1.1 had no data_augmentation key; DeepReg inserts `affine`, as the new file spells out.
    assert_eq!(old, new);
}

/// Later files win; mappings merge deeply; lists are replaced; a component whose name
/// changes is replaced whole.
#[test]
fn later_files_override_earlier_ones_deeply() {
    let dir = repo_root().join("configs/deepreg");
    let merged = resolve(&[
        dir.join("unpaired_labeled_ddf.yaml"),
        dir.join("affine.yaml"),
    ]);
    let yaml = merged.to_yaml().unwrap();
    // The overlay switches local → global: LocalNet's extract_levels do not carry over.
    assert!(
        yaml.contains(
            "name: global\n    num_channel_initial: 1\n    depth: 4\n    extract_levels: null"
        ),
        "{yaml}"
    );
    // Kept from the base file: the dataset and the augmentation.
    assert_eq!(
        merged.dataset.loader.image_shapes().moving,
        vec![16, 16, 16]
    );
    assert_eq!(merged.train.preprocess.data_augmentation.len(), 1);

    let tmp = tempfile::tempdir().unwrap();
    let overlay = tmp.path().join("lr.yaml");
    fs::write(
        &overlay,
        "train:\n  optimizer: {learning_rate: 0.5}\n  loss: {label: {scales: [1]}}\n",
    )
    .unwrap();
    let merged = resolve(&[dir.join("unpaired_labeled_ddf.yaml"), overlay]);
    assert_eq!(merged.train.optimizer.learning_rate(), 0.5);
    let yaml = merged.to_yaml().unwrap();
    // Same component: keys merge; the scales list is replaced, not appended to.
    assert!(yaml.contains("name: dice"), "{yaml}");
    assert!(yaml.contains("scales:\n      - 1.0\n"), "{yaml}");
}

/// Problems point at the file (of several) that wrote the key.
#[test]
fn problems_name_the_file_that_wrote_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("overlay.yaml");
    fs::write(
        &overlay,
        "train:\n  backbone:\n    name: local\n    num_channel_initial: -3\n",
    )
    .unwrap();
    let base = repo_root().join("configs/deepreg/unpaired_labeled_ddf.yaml");
    let registry = Registry::linked().unwrap();
    let error = ConfigSources::read(&[base.as_path(), overlay.as_path()])
        .unwrap()
        .resolve(&registry)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("{}:4:5", overlay.display())),
        "{error}"
    );
    assert!(
        error.contains("train.backbone.num_channel_initial"),
        "{error}"
    );
}

/// The same document parsed from text and from a file resolves the same way.
#[test]
fn in_memory_documents_resolve_like_files() {
    let path = repo_root().join("configs/quickstart.yaml");
    let text = fs::read_to_string(&path).unwrap();
    let document = ConfigDocument::parse(&text, Path::new("inline.yaml")).unwrap();
    let registry = Registry::linked().unwrap();
    let inline = ConfigSources::from_documents(vec![document])
        .unwrap()
        .resolve(&registry)
        .unwrap();
    assert_eq!(
        inline.to_yaml().unwrap(),
        resolve(&[path]).to_yaml().unwrap()
    );
}

/// The bundled demo data loads through the quick-start config, split by split.
#[test]
fn the_quickstart_config_loads_the_bundled_demo_data() {
    use voxreg::component::{Split, SplitSource};

    let config = resolve(&[repo_root().join("configs/quickstart.yaml")]);
    let splits = [
        (Split::Train, &config.dataset.train, 12),
        (Split::Valid, &config.dataset.valid, 4),
        (Split::Test, &config.dataset.test, 4),
    ];
    for (split, section, samples) in splits {
        let section = section.as_ref().expect("the quick start has every split");
        let dirs: Vec<_> = section.dir.iter().map(|d| repo_root().join(d)).collect();
        let loader = config
            .dataset
            .loader
            .build(&SplitSource {
                split,
                dirs: &dirs,
                format: &*section.format,
                labeled: section.labeled,
            })
            .unwrap();
        let epoch = loader.epoch(0, 0);
        assert_eq!(epoch.len(), samples, "{split:?}: pairs × labels");
        let sample = loader.load(&epoch[0]).unwrap();
        assert_eq!(sample.moving_image.len(), 32 * 32 * 32);
        assert!(sample.fixed_label.unwrap().iter().any(|v| *v > 0.5));
    }
}

/// Resolves the quick start with `overlay` (YAML) on top; the problems' text on failure.
fn resolve_with(overlay: &str) -> Result<Config, String> {
    let base = repo_root().join("configs/quickstart.yaml");
    let text = fs::read_to_string(&base).unwrap();
    let documents = vec![
        ConfigDocument::parse(&text, &base).unwrap(),
        ConfigDocument::parse(overlay, Path::new("overlay.yaml")).unwrap(),
    ];
    let registry = Registry::linked().unwrap();
    ConfigSources::from_documents(documents)
        .and_then(|sources| sources.resolve(&registry))
        .map_err(|e| e.to_string())
}

/// atlalign's mixer keys: `name: a&b` is one term per name with an equal share of the weight.
#[test]
fn a_mixer_name_is_one_term_per_name_with_an_equal_share_of_the_weight() {
    let config = resolve_with(
        "train:\n  loss:\n    image: {name: ssd&gncc, weight: 0.6}\n    regularization: {name: bending, weight: 0.5}\n",
    )
    .unwrap();
    let yaml = config.to_yaml().unwrap();
    let terms = &config.train.loss.image;
    assert_eq!(terms.len(), 2, "{yaml}");
    for term in terms {
        assert_eq!(term.weight, voxreg::config::Weight::Constant(0.3), "{yaml}");
    }
    assert!(
        yaml.contains("name: ssd") && yaml.contains("name: gncc"),
        "{yaml}"
    );

    let keyed =
        resolve_with("train:\n  loss:\n    image: {name: ssd&gncc, kernel: cauchy}\n").unwrap_err();
    assert!(
        keyed.contains("takes no component keys") && keyed.contains("kernel"),
        "{keyed}"
    );
    let unknown = resolve_with("train:\n  loss:\n    image: {name: ssd&gnc}\n").unwrap_err();
    assert!(unknown.contains("gnc"), "{unknown}");
}
