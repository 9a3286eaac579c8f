//! End-to-end tests: the `voxreg` binary, plugin loading (static and dynamic), and the
//! shipped configs. One test binary with a module per area.

mod atlalign;
mod cli;
mod compat;
mod composite;
mod configs;
mod deepreg_layout;
mod dlir;
mod docs;
mod dynamic_plugins;
mod errors;
mod external_plugins;
mod hostile;
mod hostile_files;
mod hypermorph;
mod predict_outputs;
mod register;
mod register_model;
mod shapes;
mod standalone;
mod static_plugins;
mod training;
mod util;
mod vis;
mod voxelmorph_training;
