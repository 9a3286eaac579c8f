//! `custom_backbone` packaged as a dynamic plugin library:
//! `cargo build -p custom_backbone --example custom_backbone_plugin` writes
//! `target/debug/examples/libcustom_backbone_plugin.so`, which
//! `voxreg --plugin <that path> …` loads at run time.

pub use custom_backbone::*;

voxreg_framework::declare_plugin!();
