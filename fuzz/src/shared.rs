//! What the fuzz targets share with the seed writer (`seeds.rs`, built in the main workspace
//! as the `fuzz_seeds` example): the checkpoint target's model and its input layout.

/// The separator between the parts of a multi-file input (the checkpoint target's progress
/// text, weights and optimiser state).
pub const PART_SEPARATOR: &[u8] = b"\n--8<-- voxreg-fuzz --8<--\n";

/// A small configuration (a two-level LocalNet on 8³ images, Adam) for the checkpoint target
/// and its seeds (`seeds.rs` writes a checkpoint of it).
pub const SMALL_CONFIG: &str = include_str!("../small.yaml");

/// The model and optimiser of [`SMALL_CONFIG`].
pub fn small_training() -> (voxreg::engine::Model, Box<dyn voxreg::prelude::Optimizer>) {
    let registry = voxreg::registry::Registry::linked().expect("the built-in components register");
    let document =
        voxreg::config::ConfigDocument::parse(SMALL_CONFIG, std::path::Path::new("small.yaml"))
            .expect("the small configuration parses");
    let config = voxreg::config::ConfigSources::from_documents(vec![document])
        .and_then(|sources| sources.resolve(&registry))
        .expect("the small configuration resolves");
    let model = voxreg::engine::Model::build_seeded(&config, &voxreg::prelude::Device::Cpu, 1)
        .expect("the small model builds");
    let optimizer = config
        .train
        .optimizer
        .build(model.trainable())
        .expect("Adam builds");
    (model, optimizer)
}
