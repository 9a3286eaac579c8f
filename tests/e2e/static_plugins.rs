//! A third-party plugin crate linked statically: selected by name in YAML like a built-in.

use std::fs;

use voxreg::candle::{DType, Device, Tensor};
use voxreg::candle_nn::{VarBuilder, VarMap};
use voxreg::component::{BackboneOutput, BackboneSpec};
use voxreg::config::ConfigSources;
use voxreg::registry::{Category, Registry, Source};

// Referencing the crate keeps the linker from dropping its registrations.
use custom_backbone as _;

use crate::util::repo_root;

#[test]
fn linked_plugin_components_are_registered_with_their_crate() {
    let registry = Registry::linked().unwrap();
    for (category, name) in [
        (Category::Backbone, "tiny_net"),
        (Category::ImageLoss, "charbonnier"),
    ] {
        let entry = registry.get(category, name).unwrap();
        assert_eq!(
            entry.source,
            Source::Linked {
                crate_name: "custom_backbone".to_owned()
            }
        );
    }
}

#[test]
fn yaml_selects_the_linked_plugin_by_name_and_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("tiny.yaml");
    fs::write(
        &overlay,
        "train:\n  backbone:\n    name: tiny_net\n    hidden_channels: 6\n  loss:\n    image:\n      name: charbonnier\n      epsilon: 0.01\n",
    )
    .unwrap();
    let base = repo_root().join("configs/quickstart.yaml");
    let registry = Registry::linked().unwrap();
    let config = ConfigSources::read(&[base, overlay])
        .unwrap()
        .resolve(&registry)
        .unwrap();
    let yaml = config.to_yaml().unwrap();
    assert!(
        yaml.contains("name: tiny_net\n    hidden_channels: 6"),
        "{yaml}"
    );

    let device = Device::Cpu;
    let varmap = VarMap::new();
    let spec = BackboneSpec {
        spatial_dims: 3,
        image_size: vec![4, 4, 4],
        in_channels: 2,
        out_channels: 3,
        head: Default::default(),
    };
    let net = config
        .train
        .backbone
        .as_ref()
        .expect("a backbone")
        .build(&spec, VarBuilder::from_varmap(&varmap, DType::F32, &device))
        .unwrap();
    let input = Tensor::ones((1, 2, 4, 4, 4), DType::F32, &device).unwrap();
    let BackboneOutput::Dense(ddf) = net.forward(&input).unwrap() else {
        panic!("tiny_net is a dense backbone");
    };
    assert_eq!(ddf.dims(), &[1, 3, 4, 4, 4]);
    assert_eq!(varmap.all_vars().len(), 4);

    let loss = config.train.loss.image[0].config.build(3).unwrap();
    let value = loss
        .loss(&input, Some(&input))
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!((value[0] - 0.01).abs() < 1e-6, "{value:?}");
}

#[test]
fn a_bad_plugin_config_is_an_error_not_a_panic() {
    let registry = Registry::linked().unwrap();
    let value = voxreg::config::ConfigDocument::parse("hidden_channels: 0\n", "x.yaml".as_ref())
        .unwrap()
        .value;
    let config = registry
        .decode::<dyn voxreg::component::BackboneConfig>("tiny_net", value)
        .unwrap();
    let spec = BackboneSpec {
        spatial_dims: 2,
        image_size: vec![4, 4],
        in_channels: 2,
        out_channels: 2,
        head: Default::default(),
    };
    let varmap = VarMap::new();
    let error = config
        .build(
            &spec,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .err()
        .expect("zero hidden channels is rejected");
    assert!(
        error
            .to_string()
            .contains("hidden_channels must be at least 1"),
        "{error}"
    );
}

/// The linked plugin's backbone and loss, picked by name, train through the engine and
/// write a run folder like the built-ins.
#[test]
fn the_linked_plugin_backbone_trains_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("plugin.yaml");
    fs::write(
        &overlay,
        "train:\n  backbone: {name: tiny_net, hidden_channels: 4}\n  loss:\n    image: {name: charbonnier, epsilon: 0.01, weight: 1.0}\n",
    )
    .unwrap();
    let files = [
        repo_root().join("configs/quickstart.yaml"),
        crate::util::tiny_training_config(dir.path()),
        overlay,
    ];
    let registry = Registry::linked().unwrap();
    let config = ConfigSources::read(&files)
        .unwrap()
        .resolve(&registry)
        .unwrap();
    let run = dir.path().join("run");
    let options = voxreg::engine::TrainOptions {
        run_dir: Some(run.clone()),
        ..Default::default()
    };
    let (model, summary) = voxreg::engine::train(&config, &options, &mut ()).unwrap();
    assert_eq!(summary.steps, 6);
    let log = &summary.epochs[0];
    let names: Vec<&str> = log.train.terms.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["image/charbonnier", "label/dice", "regularization/bending"]
    );
    assert!(log.train.loss.is_finite());
    assert_eq!(
        model.named_trainable().len(),
        4,
        "tiny_net's two 1×1 convolutions (weights and biases) are what trains"
    );
    assert!(run.join("save/weights.safetensors").is_file());
}
