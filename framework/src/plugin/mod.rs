//! Dynamic plugins: libraries loaded at run time that add components to a [`Registry`].
//!
//! Loading a plugin ([`Registry::load_plugin`]):
//! 1. the path must exist and open as a dynamic library (`libloading`), every symbol it
//!    needs resolved at once: a library linked against another build of the framework
//!    needs framework symbols this process does not have, and is refused here;
//! 2. it must export [`abi::DECLARATION_SYMBOL`];
//! 3. its ABI version and [`abi::Fingerprint`] must equal the host's — checked before any
//!    other plugin code is called;
//! 4. its `register` function runs with a [`PluginRegistrar`]; a panic in it becomes an
//!    error;
//! 5. its components are added to the registry, all or none (a name already taken is an
//!    error naming both sources).
//!
//! Libraries are never unloaded: their code and static data back the registered components
//! for the life of the process. Loading the same library twice reuses the first load.
//!
//! The operating system runs a library's static constructors when it opens it, before the
//! fingerprint check; for plugins built with [`declare_plugin!`](crate::declare_plugin)
//! those only link the plugin's component registrations into a list, and the host ignores
//! that list unless the library passes the check.

pub mod abi;
mod error;
mod host_library;
mod loader;
mod registrar;

pub use error::PluginError;
pub use host_library::framework_library;
pub use loader::{verify_declaration, PluginInfo};
pub use registrar::PluginRegistrar;

#[allow(unused_imports)]
use crate::registry::Registry;
