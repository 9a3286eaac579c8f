//! End-to-end tests: the `voxreg` binary, plugin loading (static and dynamic), and the
//! shipped configs. One test binary with a module per area.

mod cli;
mod compat;
mod configs;
mod deepreg_layout;
mod docs;
mod dynamic_plugins;
mod errors;
mod hostile;
mod predict_outputs;
mod register;
mod static_plugins;
mod training;
mod util;
mod vis;
