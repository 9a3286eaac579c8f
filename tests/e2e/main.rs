//! End-to-end tests: the `voxreg` binary, plugin loading (static and dynamic), and the
//! shipped configs. One test binary with a module per area.

mod cli;
mod configs;
mod docs;
mod dynamic_plugins;
mod predict_outputs;
mod static_plugins;
mod training;
mod util;
mod vis;
