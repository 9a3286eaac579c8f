//! Plugin loading errors.

use std::path::PathBuf;

use crate::registry::RegistryError;

/// Why a plugin library could not be loaded. Every variant names the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The path does not exist.
    #[error("plugin {}: no such file", path.display())]
    NotFound {
        /// The library path.
        path: PathBuf,
    },
    /// The file could not be opened as a dynamic library.
    #[error("plugin {}: not a loadable dynamic library: {message}", path.display())]
    NotALibrary {
        /// The library path.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The library does not export the declaration symbol.
    #[error("plugin {}: not a voxreg plugin (it exports no `{symbol}`; add `voxreg_framework::declare_plugin!();` to the crate root)", path.display())]
    NotAPlugin {
        /// The library path.
        path: PathBuf,
        /// The symbol looked for.
        symbol: &'static str,
    },
    /// The plugin was built against another framework, compiler, candle or feature set.
    #[error("plugin {}: built for a different voxreg: {}. Rebuild the plugin with this voxreg: `voxreg plugins build <plugin crate folder>`", path.display(), mismatches.join("; "))]
    Incompatible {
        /// The library path.
        path: PathBuf,
        /// Each field that differs, "field: plugin X, host Y".
        mismatches: Vec<String>,
    },
    /// The plugin's register function failed or panicked.
    #[error("plugin {}: registration failed: {message}", path.display())]
    RegisterFailed {
        /// The library path.
        path: PathBuf,
        /// The error or panic message.
        message: String,
    },
    /// The plugin's components clash with registered ones.
    #[error("plugin {}: {source}", path.display())]
    Conflict {
        /// The library path.
        path: PathBuf,
        /// The clash.
        #[source]
        source: Box<RegistryError>,
    },
}
