//! Plugins loaded at run time: through `--plugin`, a YAML `plugins:` entry and
//! `VOXREG_PLUGINS`; the error paths; and proof that a dynamically loaded backbone trains
//! with exactly the gradients of the same backbone linked statically (one copy of candle).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use voxreg::candle::{DType, Device, Tensor, Var};
use voxreg::candle_nn::{Optimizer, VarBuilder, VarMap, SGD};
use voxreg::component::{Backbone, BackboneConfig, BackboneOutput, BackboneSpec};
use voxreg::config::ConfigDocument;
use voxreg::plugin::PluginError;
use voxreg::registry::{Category, Registry, Source};

use crate::util::{
    assert_clean_failure, custom_backbone_plugin, example_library, repo_root, run, stderr, stdout,
    voxreg,
};

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

#[test]
fn plugins_list_loads_a_library_given_with_plugin() {
    let plugin = custom_backbone_plugin();
    let output = run(&["plugins", "list", "--plugin", path_str(&plugin)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for name in ["tiny_net", "charbonnier"] {
        let row = text
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(row.contains("custom_backbone (plugin "), "{row}");
        assert!(row.contains("libcustom_backbone_plugin.so"), "{row}");
    }
    // The built-ins are still there.
    assert!(text.contains("unet"));
}

#[test]
fn plugins_show_describes_a_plugin_component() {
    let plugin = custom_backbone_plugin();
    let output = run(&[
        "plugins",
        "show",
        "backbone",
        "tiny_net",
        "--plugin",
        path_str(&plugin),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("name: tiny_net\nhidden_channels: 8  # an integer"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn the_plugin_environment_variable_loads_libraries() {
    let plugin = custom_backbone_plugin();
    let output = voxreg()
        .env("VOXREG_PLUGINS", &plugin)
        .args(["plugins", "list", "--category", "backbone"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("tiny_net"));
}

#[test]
fn a_yaml_plugins_entry_loads_the_library_before_components_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = custom_backbone_plugin();
    fs::copy(&plugin, dir.path().join("libcustom.so")).unwrap();
    let overlay = dir.path().join("with_plugin.yaml");
    fs::write(
        &overlay,
        "plugins: [libcustom.so]\ntrain:\n  backbone: {name: tiny_net, hidden_channels: 3}\n",
    )
    .unwrap();
    let base = repo_root().join("configs/quickstart.yaml");
    let output = run(&["config", "check", path_str(&base), path_str(&overlay)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("name: tiny_net\n    hidden_channels: 3"),
        "{text}"
    );
    assert!(
        text.contains("libcustom.so"),
        "the resolved config lists the plugin: {text}"
    );
}

#[test]
fn a_missing_plugin_file_is_a_clear_error() {
    let output = run(&["plugins", "list", "--plugin", "/nonexistent/libnothing.so"]);
    assert_clean_failure(
        &output,
        &["plugin /nonexistent/libnothing.so: no such file"],
    );
}

#[test]
fn a_file_that_is_not_a_library_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libfake.so");
    fs::write(&fake, "this is not an ELF file").unwrap();
    let output = run(&["plugins", "list", "--plugin", path_str(&fake)]);
    assert_clean_failure(&output, &["libfake.so: not a loadable dynamic library"]);
}

#[test]
fn a_library_that_is_not_a_plugin_is_a_clear_error() {
    let bin = Path::new(env!("CARGO_BIN_EXE_voxreg"))
        .parent()
        .unwrap()
        .to_owned();
    let framework = bin.join("deps/libvoxreg_framework.so");
    let output = run(&["plugins", "list", "--plugin", path_str(&framework)]);
    assert_clean_failure(
        &output,
        &[
            "not a voxreg plugin",
            "voxreg_plugin_declaration",
            "declare_plugin!",
        ],
    );
}

#[test]
fn a_plugin_with_another_abi_version_is_refused() {
    let plugin = example_library("fixture_wrong_abi");
    let output = run(&["plugins", "list", "--plugin", path_str(&plugin)]);
    assert_clean_failure(
        &output,
        &[
            "built for a different voxreg",
            "plugin ABI version: plugin 999, host 1",
        ],
    );
}

#[test]
fn a_plugin_for_another_voxreg_version_is_refused() {
    let plugin = example_library("fixture_wrong_version");
    let output = run(&["plugins", "list", "--plugin", path_str(&plugin)]);
    assert_clean_failure(
        &output,
        &[
            "built for a different voxreg",
            "voxreg: plugin `0.0.0-elsewhere`",
            "Rebuild the plugin",
        ],
    );
}

#[test]
fn a_panicking_register_function_is_an_error_not_a_crash() {
    let plugin = example_library("fixture_panicking");
    let output = run(&["plugins", "list", "--plugin", path_str(&plugin)]);
    assert_clean_failure(
        &output,
        &[
            "registration failed",
            "panicked: fixture plugin refuses to register",
        ],
    );
}

#[test]
fn a_duplicate_name_names_both_sources() {
    let first = custom_backbone_plugin();
    let second = example_library("fixture_duplicate");
    let output = run(&[
        "plugins",
        "list",
        "--plugin",
        path_str(&first),
        "--plugin",
        path_str(&second),
    ]);
    assert_clean_failure(
        &output,
        &[
            "backbone `tiny_net` is registered twice",
            "libcustom_backbone_plugin.so",
            "libfixture_duplicate.so",
        ],
    );
}

#[test]
fn loading_is_all_or_nothing_and_repeatable_in_process() {
    // This test binary links custom_backbone statically, so its names are taken.
    let mut registry = Registry::linked().unwrap();
    let before = registry.len();
    let error = registry.load_plugin(&custom_backbone_plugin()).unwrap_err();
    assert!(matches!(error, PluginError::Conflict { .. }), "{error}");
    assert_eq!(registry.len(), before, "nothing is added on a clash");
    // A fresh registry can load the same library again (the library stays loaded).
    for _ in 0..2 {
        let mut fresh = Registry::new();
        let info = fresh.load_plugin(&custom_backbone_plugin()).unwrap();
        assert_eq!(info.name, "custom_backbone");
        assert_eq!(fresh.len(), 2);
    }
}

fn tiny_net(registry: &Registry) -> Box<dyn BackboneConfig> {
    let value = ConfigDocument::parse("hidden_channels: 5\n", Path::new("inline.yaml"))
        .unwrap()
        .value;
    registry
        .decode::<dyn BackboneConfig>("tiny_net", value)
        .unwrap()
}

fn dense(net: &dyn Backbone, input: &Tensor) -> Tensor {
    match net.forward(input).unwrap() {
        BackboneOutput::Dense(out) => out,
        BackboneOutput::Affine(_) => panic!("tiny_net is dense"),
    }
}

fn vars_by_name(varmap: &VarMap) -> BTreeMap<String, Var> {
    varmap.data().lock().unwrap().clone().into_iter().collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The same backbone, once linked into this test binary and once loaded from the plugin
/// library, trained side by side from the same weights: every gradient of every step agrees,
/// also when both losses share one autograd graph (which fails if the library carried its
/// own copy of candle, whose tensor ids would collide with the host's).
#[test]
fn a_dynamically_loaded_backbone_trains_exactly_like_the_linked_one() {
    let linked = Registry::linked().unwrap();
    let mut dynamic = Registry::new();
    dynamic.load_plugin(&custom_backbone_plugin()).unwrap();
    assert!(matches!(
        dynamic.get(Category::Backbone, "tiny_net").unwrap().source,
        Source::Plugin { .. }
    ));

    let device = Device::Cpu;
    let spec = BackboneSpec {
        spatial_dims: 3,
        image_size: vec![3, 4, 5],
        in_channels: 2,
        out_channels: 3,
        head: Default::default(),
    };
    let (linked_vars, dynamic_vars) = (VarMap::new(), VarMap::new());
    let linked_net = tiny_net(&linked)
        .build(
            &spec,
            VarBuilder::from_varmap(&linked_vars, DType::F32, &device),
        )
        .unwrap();
    let dynamic_net = tiny_net(&dynamic)
        .build(
            &spec,
            VarBuilder::from_varmap(&dynamic_vars, DType::F32, &device),
        )
        .unwrap();
    let linked_by_name = vars_by_name(&linked_vars);
    let dynamic_by_name = vars_by_name(&dynamic_vars);
    assert_eq!(linked_by_name.len(), 4);
    for (name, var) in &linked_by_name {
        dynamic_by_name[name].set(var.as_tensor()).unwrap();
    }

    let input = Tensor::randn(0f32, 1.0, (2, 2, 3, 4, 5), &device).unwrap();
    let target = Tensor::randn(0f32, 1.0, (2, 3, 3, 4, 5), &device).unwrap();
    let loss = |net: &dyn Backbone| {
        dense(net, &input)
            .sub(&target)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
    };
    let mut linked_sgd = SGD::new(linked_vars.all_vars(), 0.5).unwrap();
    let mut dynamic_sgd = SGD::new(dynamic_vars.all_vars(), 0.5).unwrap();
    let mut losses = Vec::new();
    for _step in 0..4 {
        let (linked_loss, dynamic_loss) = (loss(&*linked_net), loss(&*dynamic_net));
        assert!(max_abs_diff(&linked_loss, &dynamic_loss) < 1e-6);
        losses.push(linked_loss.to_scalar::<f32>().unwrap());
        let joint = (&linked_loss + &dynamic_loss).unwrap().backward().unwrap();
        let linked_grads = linked_loss.backward().unwrap();
        let dynamic_grads = dynamic_loss.backward().unwrap();
        for (name, linked_var) in &linked_by_name {
            let dynamic_var = &dynamic_by_name[name];
            let from_linked = linked_grads.get(linked_var.as_tensor()).unwrap();
            let from_dynamic = dynamic_grads.get(dynamic_var.as_tensor()).unwrap();
            assert!(max_abs_diff(from_linked, from_dynamic) < 1e-6, "{name}");
            let joint_linked = joint.get(linked_var.as_tensor()).unwrap();
            let joint_dynamic = joint.get(dynamic_var.as_tensor()).unwrap();
            assert!(
                max_abs_diff(joint_linked, from_linked) < 1e-6,
                "{name} (joint graph)"
            );
            assert!(
                max_abs_diff(joint_dynamic, from_dynamic) < 1e-6,
                "{name} (joint graph)"
            );
        }
        linked_sgd.step(&linked_grads).unwrap();
        dynamic_sgd.step(&dynamic_grads).unwrap();
    }
    assert!(
        losses[3] < losses[0],
        "training reduces the loss: {losses:?}"
    );
    for (name, var) in &linked_by_name {
        assert!(
            max_abs_diff(var.as_tensor(), dynamic_by_name[name].as_tensor()) < 1e-6,
            "{name}"
        );
    }
}

/// `voxreg train --plugin lib….so` trains the plugin's backbone, picked by name in YAML, and
/// `voxreg predict` with the same plugin evaluates the run.
#[test]
fn the_binary_trains_and_predicts_with_a_dynamically_loaded_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("plugin.yaml");
    fs::write(
        &overlay,
        "train:\n  backbone: {name: tiny_net, hidden_channels: 4}\n",
    )
    .unwrap();
    let plugin = custom_backbone_plugin();
    let logs = dir.path().join("logs");
    let output = voxreg()
        .args(["--plugin", path_str(&plugin), "train", "-c"])
        .arg(repo_root().join("configs/quickstart.yaml"))
        .arg(crate::util::tiny_training_config(dir.path()))
        .arg(&overlay)
        .args(["--exp-name", "plugin", "--log-dir", path_str(&logs)])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("trained 1 epoch ("));
    let saved = fs::read_to_string(logs.join("plugin/config.yaml")).unwrap();
    assert!(saved.contains("name: tiny_net"), "{saved}");
    let checkpoint = logs.join("plugin/save/ckpt-1");
    let output = voxreg()
        .args(["--plugin", path_str(&plugin), "predict", "--ckpt-path"])
        .arg(&checkpoint)
        .args([
            "--split",
            "test",
            "--log-dir",
            path_str(&logs),
            "--exp-name",
            "predicted",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(logs.join("predicted/test/metrics.csv").is_file());
    // Without the plugin the saved configuration names an unknown backbone: a clear error.
    let output = voxreg()
        .args(["predict", "--ckpt-path"])
        .arg(&checkpoint)
        .args([
            "--split",
            "test",
            "--log-dir",
            path_str(&logs),
            "--exp-name",
            "no-plugin",
        ])
        .output()
        .unwrap();
    assert_clean_failure(&output, &["tiny_net"]);
}
