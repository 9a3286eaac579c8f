//! Builds a [`Config`] from a merged YAML value, collecting every problem instead of stopping
//! at the first.

use std::path::PathBuf;

use serde::de::DeserializeOwned;

use super::decode::decode;
use super::hyper::HyperParameter;
use super::path::KeyPath;
use super::problem::Problem;
use super::schema::{
    Config, DatasetConfig, LossConfig, PreprocessConfig, SplitConfig, TrainConfig,
};
use super::terms::{LossTerm, Section, TermMask, Weight};
use super::value::{self, ConfigMapping, ConfigValue};
use crate::component::{Decl, MethodConfig, MethodContext};
use crate::registry::{ComponentKind, DecodeError, Registry};
use crate::suggest;

const TOP_KEYS: &[&str] = &["plugins", "dataset", "train"];
const SPLITS: &[&str] = &["train", "valid", "test"];
const SPLIT_KEYS: &[&str] = &["dir", "format", "labeled"];
const TRAIN_KEYS: &[&str] = &[
    "method",
    "backbone",
    "parameters",
    "hyperparameters",
    "loss",
    "optimizer",
    "preprocess",
    "epochs",
    "save_period",
    "update_freq",
];
const LOSS_KEYS: &[&str] = &["image", "label", "regularization", "field"];
const WEIGHT_KEYS: &[&str] = &["hyper", "complement", "scale"];
const PREPROCESS_KEYS: &[&str] = &[
    "batch_size",
    "shuffle_buffer_num_batch",
    "num_parallel_calls",
    "data_augmentation",
];

/// The most loader threads `num_parallel_calls` may ask for: more only exhausts the
/// system's threads (each has its own stack and batch in flight).
const MAX_LOADER_THREADS: i64 = 256;

/// Resolves the merged document. Every problem found is returned, with paths (locations
/// are attached by the caller, who knows the files).
pub(super) fn resolve(
    merged: ConfigValue,
    plugins: Vec<PathBuf>,
    registry: &Registry,
) -> Result<Config, Vec<Problem>> {
    let mut walker = Walker {
        registry,
        problems: Vec::new(),
        step: None,
        hyper_uses: Vec::new(),
    };
    let root_path = KeyPath::root();
    let mut root = walker.mapping(merged, &root_path).unwrap_or_default();
    root.remove(value::key("plugins"));
    walker.check_keys(&root, TOP_KEYS, &root_path);
    let dataset = walker
        .required(&mut root, "dataset", &root_path)
        .and_then(|v| walker.dataset(v, &KeyPath::keys(&["dataset"])));
    let train = walker
        .required(&mut root, "train", &root_path)
        .and_then(|v| walker.train(v, dataset.as_ref(), &KeyPath::keys(&["train"])));
    match (dataset, train) {
        (Some(dataset), Some(train)) => {
            walker.check_labels_for_method(&dataset, &train);
            if walker.problems.is_empty() {
                Ok(Config {
                    plugins,
                    dataset,
                    train,
                })
            } else {
                Err(walker.problems)
            }
        }
        _ => Err(walker.problems),
    }
}

struct Walker<'r> {
    registry: &'r Registry,
    problems: Vec<Problem>,
    /// The data loader's tensors and the method's outputs, once both are known.
    step: Option<(Vec<Decl>, Vec<Decl>)>,
    /// Where a loss weight names a hyperparameter, and the name.
    hyper_uses: Vec<(KeyPath, String)>,
}

impl Walker<'_> {
    /// A method that needs labels (the conditional one) with a split marked unlabelled is
    /// refused up front, as DeepReg's `config_sanity_check` does, instead of failing at the
    /// first batch.
    fn check_labels_for_method(&mut self, dataset: &DatasetConfig, train: &TrainConfig) {
        if !train.method.requires_labels() {
            return;
        }
        let method = <dyn MethodConfig as ComponentKind>::serialized_name(&*train.method)
            .unwrap_or_else(|| "this".to_owned());
        let splits = [
            ("train", &dataset.train),
            ("valid", &dataset.valid),
            ("test", &dataset.test),
        ];
        for (name, split) in splits {
            if split.as_ref().is_some_and(|s| !s.labeled) {
                self.problem(
                    KeyPath::keys(&["dataset", name, "labeled"]),
                    format!(
                        "the `{method}` method needs labelled data (it predicts the fixed label \
                         from the moving one), but this split is `labeled: false`"
                    ),
                );
            }
        }
    }

    /// The tensors a step holds before the method runs (the data loader's) and the method's
    /// outputs, for checking explicit loss inputs.
    fn declare_step(
        &mut self,
        dataset: &DatasetConfig,
        method: &dyn MethodConfig,
        backbone: Option<&dyn crate::component::BackboneConfig>,
    ) {
        let labeled = [&dataset.train, &dataset.valid, &dataset.test]
            .into_iter()
            .flatten()
            .next()
            .is_some_and(|split| split.labeled);
        let provided = dataset.loader.provides(labeled);
        let shapes = dataset.loader.image_shapes();
        let context = MethodContext {
            shapes: &shapes,
            inputs: &provided,
            backbone,
        };
        let outputs = method.outputs(&context);
        self.step = Some((provided, outputs));
    }

    /// Explicit `inputs` of a loss term: as many as the section takes, each a tensor the
    /// data loader provides or the method outputs.
    fn check_inputs(&mut self, section: Section, inputs: &[String], path: &KeyPath) {
        if inputs.len() != section.arity() {
            self.problem(
                path.clone(),
                format!(
                    "a `{}` loss takes {} input{} (by default {}), got {}",
                    section.key(),
                    section.arity(),
                    if section.arity() == 1 { "" } else { "s" },
                    section.default_inputs().join(", "),
                    inputs.len()
                ),
            );
        }
        let Some((provided, outputs)) = self.step.take() else {
            return;
        };
        for (i, name) in inputs.iter().enumerate() {
            let known = |decls: &[Decl]| decls.iter().any(|d| &d.name == name);
            if known(&provided) || known(&outputs) {
                continue;
            }
            let list = |decls: &[Decl]| suggest::quoted_list(decls.iter().map(|d| d.name.as_str()));
            let mut message = format!(
                "no tensor `{name}` in this step: the data loader provides {} and the method outputs {}",
                list(&provided),
                list(&outputs)
            );
            let all = provided.iter().chain(&outputs).map(|d| d.name.as_str());
            if let Some(close) = suggest::closest(name, all) {
                message.push_str(&format!(" (did you mean `{close}`?)"));
            }
            self.problem(path.index(i), message);
        }
        self.step = Some((provided, outputs));
    }

    fn problem(&mut self, path: KeyPath, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn mapping(&mut self, value: ConfigValue, path: &KeyPath) -> Option<ConfigMapping> {
        match value {
            ConfigValue::Mapping(mapping) => Some(mapping),
            other => {
                self.problem(
                    path.clone(),
                    format!("expected a mapping, found {}", value::kind_name(&other)),
                );
                None
            }
        }
    }

    fn check_keys(&mut self, mapping: &ConfigMapping, allowed: &[&str], path: &KeyPath) {
        for key in mapping.keys() {
            let Some(key) = key.as_str() else {
                self.problem(path.clone(), "mapping keys must be strings");
                continue;
            };
            if !allowed.contains(&key) {
                let mut message = format!(
                    "unknown key `{key}`; expected one of {}",
                    suggest::quoted_list(allowed.iter().copied())
                );
                if let Some(close) = suggest::closest(key, allowed.iter().copied()) {
                    message.push_str(&format!(" (did you mean `{close}`?)"));
                }
                self.problem(path.key(key), message);
            }
        }
    }

    fn required(
        &mut self,
        mapping: &mut ConfigMapping,
        key: &str,
        path: &KeyPath,
    ) -> Option<ConfigValue> {
        let value = mapping.remove(value::key(key));
        if value.is_none() {
            self.problem(path.key(key), "missing required key");
        }
        value
    }

    fn typed<T: DeserializeOwned>(&mut self, value: ConfigValue, path: &KeyPath) -> Option<T> {
        match decode(value) {
            Ok(decoded) => Some(decoded),
            Err(problems) => {
                self.problems
                    .extend(problems.into_iter().map(|p| p.under(path)));
                None
            }
        }
    }

    fn positive(&mut self, value: ConfigValue, path: &KeyPath) -> Option<usize> {
        let number: usize = self.typed(value, path)?;
        if number == 0 {
            self.problem(path.clone(), "must be at least 1");
            return None;
        }
        Some(number)
    }

    /// A component given as a bare name (`method: ddf`) or a mapping with `name`.
    fn component<K: ComponentKind + ?Sized>(
        &mut self,
        value: ConfigValue,
        path: &KeyPath,
    ) -> Option<Box<K>> {
        let (name, rest, name_path) = match value {
            ConfigValue::String(name) => (name, ConfigMapping::new(), path.clone()),
            ConfigValue::Mapping(mut mapping) => match mapping.remove(value::key("name")) {
                Some(ConfigValue::String(name)) => (name, mapping, path.key("name")),
                Some(other) => {
                    self.problem(
                        path.key("name"),
                        format!(
                            "expected a component name, found {}",
                            value::kind_name(&other)
                        ),
                    );
                    return None;
                }
                None => {
                    self.problem(
                        path.key("name"),
                        format!(
                            "missing required key: the {} to use, one of {}",
                            K::CATEGORY,
                            suggest::quoted_list(self.registry.names(K::CATEGORY))
                        ),
                    );
                    return None;
                }
            },
            other => {
                self.problem(
                    path.clone(),
                    format!(
                        "expected a {} name or a mapping with `name`, found {}",
                        K::CATEGORY,
                        value::kind_name(&other)
                    ),
                );
                return None;
            }
        };
        self.named_component::<K>(&name, rest, path, &name_path)
    }

    fn named_component<K: ComponentKind + ?Sized>(
        &mut self,
        name: &str,
        rest: ConfigMapping,
        path: &KeyPath,
        name_path: &KeyPath,
    ) -> Option<Box<K>> {
        match self.registry.decode::<K>(name, ConfigValue::Mapping(rest)) {
            Ok(config) => Some(config),
            Err(DecodeError::Unknown(unknown)) => {
                self.problem(name_path.clone(), unknown.to_string());
                None
            }
            Err(DecodeError::Invalid(problems)) => {
                let component = format!("{} `{name}`", K::CATEGORY);
                self.problems.extend(problems.into_iter().map(|mut p| {
                    p.message = format!("{} ({component})", p.message);
                    p.under(path)
                }));
                None
            }
            Err(other) => {
                self.problem(path.clone(), other.to_string());
                None
            }
        }
    }

    fn dataset(&mut self, value: ConfigValue, path: &KeyPath) -> Option<DatasetConfig> {
        let mut mapping = self.mapping(value, path)?;
        let mut splits = Vec::new();
        for split in SPLITS {
            let config = mapping
                .remove(value::key(split))
                .and_then(|v| self.split(v, &path.key(*split)));
            splits.push(config);
        }
        let loader = match mapping.remove(value::key("type")) {
            Some(ConfigValue::String(name)) => {
                self.named_component(&name, mapping, path, &path.key("type"))
            }
            Some(other) => {
                self.problem(
                    path.key("type"),
                    format!(
                        "expected a data loader name, found {}",
                        value::kind_name(&other)
                    ),
                );
                None
            }
            None => {
                self.problem(
                    path.key("type"),
                    format!(
                        "missing required key: the data loader, one of {}",
                        suggest::quoted_list(
                            self.registry.names(crate::registry::Category::DataLoader)
                        )
                    ),
                );
                None
            }
        }?;
        let mut splits = splits.into_iter();
        Some(DatasetConfig {
            train: splits.next().flatten(),
            valid: splits.next().flatten(),
            test: splits.next().flatten(),
            loader,
        })
    }

    fn split(&mut self, value: ConfigValue, path: &KeyPath) -> Option<SplitConfig> {
        if value.is_null() {
            return None;
        }
        let mut mapping = self.mapping(value, path)?;
        self.check_keys(&mapping, SPLIT_KEYS, path);
        let dir = match mapping.remove(value::key("dir")) {
            None | Some(ConfigValue::Null) => return None,
            Some(ConfigValue::String(dir)) if dir.is_empty() => return None,
            Some(ConfigValue::String(dir)) => vec![PathBuf::from(dir)],
            Some(other) => {
                let dirs: Vec<String> = self.typed(other, &path.key("dir"))?;
                dirs.into_iter().map(PathBuf::from).collect()
            }
        };
        let format = self
            .required(&mut mapping, "format", path)
            .and_then(|v| self.component(v, &path.key("format")));
        let labeled = self
            .required(&mut mapping, "labeled", path)
            .and_then(|v| self.typed::<bool>(v, &path.key("labeled")));
        Some(SplitConfig {
            dir,
            format: format?,
            labeled: labeled?,
        })
    }

    fn train(
        &mut self,
        value: ConfigValue,
        dataset: Option<&DatasetConfig>,
        path: &KeyPath,
    ) -> Option<TrainConfig> {
        let mut mapping = self.mapping(value, path)?;
        self.check_keys(&mapping, TRAIN_KEYS, path);
        let method = self
            .required(&mut mapping, "method", path)
            .and_then(|v| self.component::<dyn MethodConfig>(v, &path.key("method")));
        let backbone = match mapping.remove(value::key("backbone")) {
            None => Some(None),
            Some(v) => self
                .component::<dyn crate::component::BackboneConfig>(v, &path.key("backbone"))
                .map(|b| Some(std::sync::Arc::from(b))),
        };
        if let (Some(method), Some(None)) = (&method, &backbone) {
            if method.needs_backbone() {
                self.problem(path.key("backbone"), "missing required key");
            }
        }
        if let (Some(dataset), Some(method), Some(backbone)) = (dataset, &method, &backbone) {
            self.declare_step(dataset, &**method, backbone.as_deref());
        }
        let parameters: Option<Option<Box<dyn crate::component::ParamSourceConfig>>> =
            match mapping.remove(value::key("parameters")) {
                None => Some(None),
                Some(v) => self.component(v, &path.key("parameters")).map(Some),
            };
        let hyperparameters = match mapping.remove(value::key("hyperparameters")) {
            None | Some(ConfigValue::Null) => Some(Vec::new()),
            Some(v) => self.hyperparameters(v, &path.key("hyperparameters")),
        };
        let loss = self
            .required(&mut mapping, "loss", path)
            .and_then(|v| self.loss(v, &path.key("loss")));
        let optimizer = self
            .required(&mut mapping, "optimizer", path)
            .and_then(|v| self.component(v, &path.key("optimizer")));
        let preprocess = self
            .required(&mut mapping, "preprocess", path)
            .and_then(|v| self.preprocess(v, &path.key("preprocess")));
        let epochs = self
            .required(&mut mapping, "epochs", path)
            .and_then(|v| self.positive(v, &path.key("epochs")));
        let save_period = self
            .required(&mut mapping, "save_period", path)
            .and_then(|v| self.positive(v, &path.key("save_period")));
        let update_freq = mapping.remove(value::key("update_freq"));
        if let Some(declared) = &hyperparameters {
            let source = parameters.as_ref().and_then(|p| p.as_deref());
            self.check_hyper_uses(declared, source, path);
        }
        Some(TrainConfig {
            method: std::sync::Arc::from(method?),
            backbone: backbone?,
            parameters: parameters?,
            hyperparameters: hyperparameters?,
            loss: loss?,
            optimizer: optimizer?,
            preprocess: preprocess?,
            epochs: epochs?,
            save_period: save_period?,
            update_freq,
        })
    }

    /// `train.hyperparameters`: a mapping from each name to its [`HyperParameter`] entry
    /// (`{}` or `null` for the defaults).
    fn hyperparameters(
        &mut self,
        value: ConfigValue,
        path: &KeyPath,
    ) -> Option<Vec<(String, HyperParameter)>> {
        let mapping = self.mapping(value, path)?;
        let before = self.problems.len();
        let mut declared = Vec::new();
        for (key, entry) in mapping {
            let Some(name) = key.as_str().map(str::to_owned) else {
                self.problem(path.clone(), "hyperparameter names must be strings");
                continue;
            };
            let entry_path = path.key(name.as_str());
            let entry = match entry {
                ConfigValue::Null => Some(HyperParameter::default()),
                other => self.typed::<HyperParameter>(other, &entry_path),
            };
            if let Some(entry) = entry {
                if let Some(problem) = entry.problem() {
                    self.problem(entry_path, problem);
                }
                declared.push((name, entry));
            }
        }
        (self.problems.len() == before).then_some(declared)
    }

    /// Every hyperparameter a loss weight or the parameter source reads must be declared
    /// under `train.hyperparameters`.
    fn check_hyper_uses(
        &mut self,
        declared: &[(String, HyperParameter)],
        source: Option<&dyn crate::component::ParamSourceConfig>,
        path: &KeyPath,
    ) {
        let mut uses = std::mem::take(&mut self.hyper_uses);
        if let Some(source) = source {
            for name in source.hyperparameters() {
                uses.push((path.key("parameters"), name));
            }
        }
        for (at, name) in uses {
            if declared.iter().any(|(d, _)| *d == name) {
                continue;
            }
            let mut message = format!(
                "uses the hyperparameter `{name}`, which `train.hyperparameters` does not declare"
            );
            if declared.is_empty() {
                message.push_str(&format!(
                    " (add `hyperparameters: {{{name}: {{range: [0, 1]}}}}` under `train`)"
                ));
            } else {
                message.push_str(&format!(
                    " (it declares {})",
                    suggest::quoted_list(declared.iter().map(|(d, _)| d.as_str()))
                ));
            }
            self.problem(at, message);
        }
    }

    fn loss(&mut self, value: ConfigValue, path: &KeyPath) -> Option<LossConfig> {
        let mut mapping = self.mapping(value, path)?;
        self.check_keys(&mapping, LOSS_KEYS, path);
        let before = self.problems.len();
        let mut loss = LossConfig::default();
        if let Some(v) = mapping.remove(value::key("image")) {
            loss.image = self.terms(v, &path.key("image"));
        }
        if let Some(v) = mapping.remove(value::key("label")) {
            loss.label = self.terms(v, &path.key("label"));
        }
        if let Some(v) = mapping.remove(value::key("regularization")) {
            loss.regularization = self.terms(v, &path.key("regularization"));
        }
        if let Some(v) = mapping.remove(value::key("field")) {
            loss.field = self.terms(v, &path.key("field"));
        }
        (self.problems.len() == before).then_some(loss)
    }

    fn terms<K: ComponentKind + ?Sized>(
        &mut self,
        value: ConfigValue,
        path: &KeyPath,
    ) -> Vec<LossTerm<K>> {
        let items: Vec<(ConfigValue, KeyPath)> = match value {
            ConfigValue::Null => Vec::new(),
            ConfigValue::Sequence(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| (item, path.index(i)))
                .collect(),
            single => vec![(single, path.clone())],
        };
        let mut terms = Vec::with_capacity(items.len());
        for (item, item_path) in items {
            match mixer_parts(&item) {
                Some(parts) => terms.extend(self.mixer_terms(item, &parts, &item_path)),
                None => terms.extend(self.term(item, &item_path)),
            }
        }
        terms
    }

    /// atlalign's mixer shorthand: a term named `a&b` (any number of `&`) is one term per
    /// name, each with the term's `inputs` and `mask` and `1 / n` of its weight (atlalign's
    /// `Mixer`, equal weights). The names take their defaults: a mixer has no component keys.
    fn mixer_terms<K: ComponentKind + ?Sized>(
        &mut self,
        value: ConfigValue,
        parts: &[String],
        path: &KeyPath,
    ) -> Vec<LossTerm<K>> {
        const TERM_KEYS: &[&str] = &["name", "weight", "inputs", "mask"];
        let Some(mapping) = self.mapping(value, path) else {
            return Vec::new();
        };
        let extra: Vec<&str> = mapping
            .keys()
            .filter_map(|k| k.as_str())
            .filter(|k| !TERM_KEYS.contains(k))
            .collect();
        if !extra.is_empty() {
            self.problem(
                path.clone(),
                format!(
                    "a mixer name `{}` takes no component keys (found {}): write the terms as a list to give them keys",
                    parts.join("&"),
                    suggest::quoted_list(extra.iter().copied())
                ),
            );
            return Vec::new();
        }
        if parts.iter().any(String::is_empty) {
            self.problem(
                path.key("name"),
                format!("mixer name `{}` has an empty part", parts.join("&")),
            );
            return Vec::new();
        }
        let share = 1.0 / parts.len() as f64;
        parts
            .iter()
            .filter_map(|part| {
                let mut single = mapping.clone();
                single.insert(value::key("name"), ConfigValue::String(part.clone()));
                let mut term = self.term::<K>(ConfigValue::Mapping(single), path)?;
                term.weight = match term.weight {
                    Weight::Constant(w) => Weight::Constant(w * share),
                    Weight::Hyper {
                        hyper,
                        complement,
                        scale,
                    } => Weight::Hyper {
                        hyper,
                        complement,
                        scale: scale * share,
                    },
                };
                Some(term)
            })
            .collect()
    }

    fn term<K: ComponentKind + ?Sized>(
        &mut self,
        value: ConfigValue,
        path: &KeyPath,
    ) -> Option<LossTerm<K>> {
        let mut mapping = self.mapping(value, path)?;
        let weight = match mapping.remove(value::key("weight")) {
            None => Some(Weight::Constant(1.0)),
            Some(v) => self.weight(v, &path.key("weight")),
        };
        let inputs = match mapping.remove(value::key("inputs")) {
            None => Some(None),
            Some(v) => self.typed::<Vec<String>>(v, &path.key("inputs")).map(Some),
        };
        if let Some(Some(inputs)) = &inputs {
            if let Some(section) = Section::ALL
                .into_iter()
                .find(|s| s.category() == K::CATEGORY)
            {
                self.check_inputs(section, inputs, &path.key("inputs"));
            }
        }
        let mask = match mapping.remove(value::key("mask")) {
            None | Some(ConfigValue::Null) => Some(None),
            Some(v) => self.term_mask(v, K::CATEGORY, &path.key("mask")),
        };
        let config = self.component(ConfigValue::Mapping(mapping), path);
        Some(LossTerm {
            weight: weight?,
            inputs: inputs?,
            mask: mask?,
            config: config?,
        })
    }

    /// A term's `mask`: `field_of_view`, on image terms only.
    fn term_mask(
        &mut self,
        value: ConfigValue,
        category: crate::registry::Category,
        path: &KeyPath,
    ) -> Option<Option<TermMask>> {
        let name = self.typed::<String>(value, path)?;
        if category != Section::Image.category() {
            self.problem(
                path.clone(),
                "only image terms (train.loss.image) take a mask".to_owned(),
            );
            return None;
        }
        match name.as_str() {
            "field_of_view" => Some(Some(TermMask::FieldOfView)),
            other => {
                self.problem(
                    path.clone(),
                    format!("unknown mask `{other}`: the one mask is `field_of_view`"),
                );
                None
            }
        }
    }

    /// A term's weight: a number ≥ 0, or `{hyper: <name>, complement: <bool>, scale: <number>}`.
    fn weight(&mut self, value: ConfigValue, path: &KeyPath) -> Option<Weight> {
        let check = |walker: &mut Self, w: f64, at: KeyPath| {
            if !w.is_finite() || w < 0.0 {
                walker.problem(at, format!("must be a finite number ≥ 0, got {w}"));
                return None;
            }
            Some(w)
        };
        match value {
            ConfigValue::Mapping(mut mapping) => {
                self.check_keys(&mapping, WEIGHT_KEYS, path);
                let hyper = self
                    .required(&mut mapping, "hyper", path)
                    .and_then(|v| self.typed::<String>(v, &path.key("hyper")));
                if let Some(name) = &hyper {
                    self.hyper_uses.push((path.key("hyper"), name.clone()));
                }
                let complement = match mapping.remove(value::key("complement")) {
                    None => Some(false),
                    Some(v) => self.typed::<bool>(v, &path.key("complement")),
                };
                let scale = match mapping.remove(value::key("scale")) {
                    None => Some(1.0),
                    Some(v) => self
                        .typed::<f64>(v, &path.key("scale"))
                        .and_then(|s| check(self, s, path.key("scale"))),
                };
                Some(Weight::Hyper {
                    hyper: hyper?,
                    complement: complement?,
                    scale: scale?,
                })
            }
            other => {
                let w = self.typed::<f64>(other, path)?;
                check(self, w, path.clone()).map(Weight::Constant)
            }
        }
    }

    fn preprocess(&mut self, value: ConfigValue, path: &KeyPath) -> Option<PreprocessConfig> {
        let mut mapping = self.mapping(value, path)?;
        self.check_keys(&mapping, PREPROCESS_KEYS, path);
        let batch_size = self
            .required(&mut mapping, "batch_size", path)
            .and_then(|v| self.positive(v, &path.key("batch_size")));
        let shuffle = self
            .required(&mut mapping, "shuffle_buffer_num_batch", path)
            .and_then(|v| self.typed::<usize>(v, &path.key("shuffle_buffer_num_batch")));
        let parallel = match mapping.remove(value::key("num_parallel_calls")) {
            None => Some(-1),
            Some(v) => {
                let calls = self.typed::<i64>(v, &path.key("num_parallel_calls"));
                if matches!(calls, Some(c) if c == 0 || !(-1..=MAX_LOADER_THREADS).contains(&c)) {
                    self.problem(
                        path.key("num_parallel_calls"),
                        format!("must be a number of loader threads from 1 to {MAX_LOADER_THREADS}, or -1 for one per core"),
                    );
                }
                calls
            }
        };
        let augmentation_path = path.key("data_augmentation");
        let augmentations = match mapping.remove(value::key("data_augmentation")) {
            None => vec![ConfigValue::String("affine".to_owned())],
            Some(ConfigValue::Null) => Vec::new(),
            Some(ConfigValue::Sequence(items)) => items,
            Some(single) => vec![single],
        };
        let single = augmentations.len() == 1;
        let before = self.problems.len();
        let data_augmentation: Vec<_> = augmentations
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let item_path = if single {
                    augmentation_path.clone()
                } else {
                    augmentation_path.index(i)
                };
                self.component(item, &item_path)
            })
            .collect();
        let augmentations_ok = self.problems.len() == before;
        Some(PreprocessConfig {
            batch_size: batch_size?,
            shuffle_buffer_num_batch: shuffle?,
            num_parallel_calls: parallel?,
            data_augmentation: augmentations_ok.then_some(data_augmentation)?,
        })
    }
}

/// The names of a mixer term (`name: a&b`), or `None` for a plain term.
fn mixer_parts(value: &ConfigValue) -> Option<Vec<String>> {
    let name = value.as_mapping()?.get(value::key("name"))?.as_str()?;
    name.contains('&')
        .then(|| name.split('&').map(|part| part.trim().to_owned()).collect())
}
