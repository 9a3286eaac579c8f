//! Opening plugin libraries, checking them, and running their registration.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use libloading::Library;

use super::abi::{self, Fingerprint, PluginDeclaration, ABI_VERSION, DECLARATION_SYMBOL};
use super::{PluginError, PluginRegistrar};
use crate::registry::{self, Category, ComponentRegistration, Registry, Source};

/// What a loaded plugin is and what it added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    /// The library path as given.
    pub path: PathBuf,
    /// The plugin crate's name.
    pub name: String,
    /// The plugin crate's version.
    pub version: String,
    /// The components it registered.
    pub components: Vec<(Category, String)>,
}

struct LoadedPlugin {
    name: String,
    version: String,
    components: Vec<ComponentRegistration>,
}

#[derive(Default)]
struct Loader {
    /// Successfully loaded plugins by canonical path.
    plugins: HashMap<PathBuf, LoadedPlugin>,
    /// Every library opened, kept so none is ever unloaded.
    libraries: Vec<Library>,
    /// Addresses of the inventory submissions already attributed (linked ones, and each
    /// opened library's), so the next library's are told apart.
    seen_submissions: HashSet<usize>,
}

fn loader() -> MutexGuard<'static, Loader> {
    static LOADER: OnceLock<Mutex<Loader>> = OnceLock::new();
    LOADER
        .get_or_init(|| {
            let seen = registry::linked_registrations()
                .iter()
                .map(|r| *r as *const ComponentRegistration as usize)
                .collect();
            Mutex::new(Loader {
                seen_submissions: seen,
                ..Loader::default()
            })
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// Loads a plugin library and adds its components (see the [module docs](crate::plugin)).
    pub fn load_plugin(&mut self, path: &Path) -> Result<PluginInfo, PluginError> {
        let mut loader = loader();
        let canonical = path.canonicalize().map_err(|_| PluginError::NotFound {
            path: path.to_owned(),
        })?;
        if !loader.plugins.contains_key(&canonical) {
            let plugin = open_and_register(&mut loader, path)?;
            loader.plugins.insert(canonical.clone(), plugin);
        }
        let plugin = &loader.plugins[&canonical];
        let components = plugin.components.iter().map(|registration| {
            (
                *registration,
                Source::Plugin {
                    library: path.to_owned(),
                    crate_name: registration.crate_name().to_owned(),
                },
            )
        });
        self.insert_all(components)
            .map_err(|source| PluginError::Conflict {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        Ok(PluginInfo {
            path: path.to_owned(),
            name: plugin.name.clone(),
            version: plugin.version.clone(),
            components: plugin
                .components
                .iter()
                .map(|r| (r.category, r.name.to_owned()))
                .collect(),
        })
    }
}

fn open_and_register(loader: &mut Loader, path: &Path) -> Result<LoadedPlugin, PluginError> {
    // SAFETY: opening a library runs its static constructors. For a voxreg plugin these only
    // link registrations into the framework's inventory list; arbitrary libraries are the
    // user's explicit choice (`--plugin`), as with any program that loads plugins.
    let library = unsafe { open_library(path) }.map_err(|error| PluginError::NotALibrary {
        path: path.to_owned(),
        message: open_error_message(&error),
    })?;
    let submitted: Vec<ComponentRegistration> = inventory::iter::<ComponentRegistration>()
        .filter(|r| {
            loader
                .seen_submissions
                .insert(*r as *const ComponentRegistration as usize)
        })
        .copied()
        .collect();
    type DeclarationFn = unsafe extern "C" fn() -> *const PluginDeclaration;
    // SAFETY: the symbol, if present, is the function `declare_plugin!` defines with this
    // exact signature; a foreign symbol of that name is the library author's contract breach.
    let declaration_fn: Option<DeclarationFn> =
        unsafe { library.get::<DeclarationFn>(DECLARATION_SYMBOL.as_bytes()) }
            .ok()
            .map(|symbol| *symbol);
    loader.libraries.push(library);
    let declaration_fn = declaration_fn.ok_or_else(|| PluginError::NotAPlugin {
        path: path.to_owned(),
        symbol: DECLARATION_SYMBOL,
    })?;
    // SAFETY: calling the declaration function only returns a pointer to a static record.
    let declaration = unsafe { declaration_fn() };
    // SAFETY: the pointer comes from the library's declaration function, which returns its
    // static record (checked for null and for the ABI version before any other field is read).
    unsafe { verify_declaration(path, declaration) }?;
    // SAFETY: verified: same ABI version, so the record has this layout and lives in the
    // (never unloaded) library.
    let declaration = unsafe { &*declaration };
    let mut registrar = PluginRegistrar::new(submitted);
    // SAFETY: fingerprints match, so `register` takes this very `PluginRegistrar` type; it
    // catches its own panics (see `PluginRegistrar::run`).
    unsafe { (declaration.register)(&mut registrar) };
    let components = registrar
        .finish()
        .map_err(|message| PluginError::RegisterFailed {
            path: path.to_owned(),
            message,
        })?;
    // SAFETY: verified above: the strings are static data of the (never unloaded) library,
    // their lengths within `abi::MAX_STRING_LEN`.
    let (name, version) = unsafe {
        (
            declaration.name.to_string_lossy(),
            declaration.version.to_string_lossy(),
        )
    };
    Ok(LoadedPlugin {
        name,
        version,
        components,
    })
}

/// Checks the declaration a library exported, before anything of it is used: not null, this
/// host's ABI version (read first: every ABI version starts the record with it), strings of
/// sane length, and a fingerprint equal to the host's. Errors name `path` and each field that
/// differs.
///
/// # Safety
/// `declaration` is null or points to a readable record that starts with a `u32`; when that
/// equals [`ABI_VERSION`], the record is a [`PluginDeclaration`] whose strings each point to
/// `len` readable bytes, or have a length over [`abi::MAX_STRING_LEN`] (refused unread).
pub unsafe fn verify_declaration(
    path: &Path,
    declaration: *const PluginDeclaration,
) -> Result<(), PluginError> {
    if declaration.is_null() {
        return Err(PluginError::NotAPlugin {
            path: path.to_owned(),
            symbol: DECLARATION_SYMBOL,
        });
    }
    // SAFETY: non-null, and the caller guarantees the record starts with a `u32`.
    let abi_version = unsafe { std::ptr::addr_of!((*declaration).abi_version).read() };
    if abi_version != ABI_VERSION {
        return Err(PluginError::Incompatible {
            path: path.to_owned(),
            mismatches: vec![format!(
                "plugin ABI version: plugin {abi_version}, host {ABI_VERSION}"
            )],
        });
    }
    // SAFETY: same ABI version, so (by the caller's guarantee) the record has this layout.
    let declaration = unsafe { &*declaration };
    let fingerprint = &declaration.fingerprint;
    let strings = [
        ("voxreg version", fingerprint.voxreg_version),
        ("rustc version", fingerprint.rustc_version),
        ("candle version", fingerprint.candle_version),
        ("features", fingerprint.features),
        ("crate name", declaration.name),
        ("crate version", declaration.version),
    ];
    if let Some((field, text)) = strings
        .iter()
        .find(|(_, text)| text.len() > abi::MAX_STRING_LEN)
    {
        return Err(PluginError::Incompatible {
            path: path.to_owned(),
            mismatches: vec![format!(
                "{field}: a string of {} bytes (more than {}): the declaration is damaged",
                text.len(),
                abi::MAX_STRING_LEN
            )],
        });
    }
    // SAFETY: the strings are within the length cap and, by the caller's guarantee, readable.
    let mismatches = unsafe { compare(fingerprint, &Fingerprint::current()) };
    if !mismatches.is_empty() {
        return Err(PluginError::Incompatible {
            path: path.to_owned(),
            mismatches,
        });
    }
    Ok(())
}

/// Opens `path` with every symbol resolved now rather than on first call, so a library
/// that needs framework symbols this process lacks (it was compiled against another build
/// of the framework) fails here, before its constructors run, instead of aborting the
/// process at its first call into the missing code.
///
/// # Safety
/// As [`Library::new`]: opening runs the library's initialisers.
unsafe fn open_library(path: &Path) -> Result<Library, libloading::Error> {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library as UnixLibrary, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: forwarded to the caller.
        unsafe { UnixLibrary::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(Library::from)
    }
    #[cfg(not(unix))]
    {
        // SAFETY: forwarded to the caller.
        unsafe { Library::new(path) }
    }
}

/// The loader's message with its causes, and a hint when the library was linked against
/// another build of the framework (its symbols then do not resolve in this process).
fn open_error_message(error: &libloading::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if message.contains("undefined symbol") && message.contains("voxreg_framework") {
        message.push_str(&format!(
            ". The plugin was built against a different build of voxreg-framework than this voxreg's ({}): rebuild it with this voxreg, `voxreg plugins build <plugin crate folder>`",
            super::framework_library()
                .map_or_else(|| "unknown location".to_owned(), |path| path.display().to_string())
        ));
    }
    message
}

/// The fields that differ, each as "field: plugin X, host Y".
///
/// # Safety
/// Every string of both fingerprints points to `len` readable bytes.
unsafe fn compare(plugin: &Fingerprint, host: &Fingerprint) -> Vec<String> {
    let mut mismatches = Vec::new();
    let fields: [(&str, abi::AbiStr, abi::AbiStr); 4] = [
        ("voxreg", plugin.voxreg_version, host.voxreg_version),
        ("rustc", plugin.rustc_version, host.rustc_version),
        ("candle", plugin.candle_version, host.candle_version),
        ("features", plugin.features, host.features),
    ];
    for (field, theirs, ours) in fields {
        // SAFETY: the caller guarantees both strings are readable.
        let (theirs, ours) = unsafe { (theirs.to_string_lossy(), ours.to_string_lossy()) };
        if theirs != ours {
            mismatches.push(format!("{field}: plugin `{theirs}`, host `{ours}`"));
        }
    }
    if mismatches.is_empty() && plugin.build_id != host.build_id {
        mismatches.push(format!(
            "framework build: plugin {:016x}, host {:016x} (same versions, but a different build of the framework: build the plugin with this voxreg, `voxreg plugins build <plugin crate folder>`)",
            plugin.build_id, host.build_id
        ));
    }
    mismatches
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn no_register(_: *mut PluginRegistrar) -> abi::RegisterStatus {
        abi::REGISTER_OK
    }

    fn declaration() -> PluginDeclaration {
        PluginDeclaration {
            abi_version: ABI_VERSION,
            fingerprint: Fingerprint::current(),
            name: abi::AbiStr::new("p"),
            version: abi::AbiStr::new("1"),
            register: no_register,
        }
    }

    fn verified(declaration: &PluginDeclaration) -> Result<(), String> {
        // SAFETY: a live record whose strings are static or over the cap (never read).
        unsafe { verify_declaration(Path::new("lib.so"), declaration) }.map_err(|e| e.to_string())
    }

    #[test]
    fn this_builds_declaration_is_accepted() {
        assert_eq!(verified(&declaration()), Ok(()));
        // SAFETY: null is allowed.
        let null = unsafe { verify_declaration(Path::new("lib.so"), std::ptr::null()) };
        assert!(null.unwrap_err().to_string().contains("lib.so"));
    }

    #[test]
    fn a_damaged_declaration_is_refused_by_field() {
        let mut other_abi = declaration();
        other_abi.abi_version = ABI_VERSION + 7;
        assert!(verified(&other_abi)
            .unwrap_err()
            .contains("plugin ABI version"));
        let mut huge = declaration();
        // SAFETY: the length is over the cap, so the pointer is never read.
        huge.version = unsafe { abi::AbiStr::from_raw_parts(std::ptr::null(), usize::MAX) };
        let error = verified(&huge).unwrap_err();
        assert!(
            error.contains("crate version") && error.contains("damaged"),
            "{error}"
        );
        let mut other_rustc = declaration();
        other_rustc.fingerprint.rustc_version = abi::AbiStr::new("rustc 0.1 \u{fffd}");
        let error = verified(&other_rustc).unwrap_err();
        assert!(error.contains("rustc: plugin `rustc 0.1"), "{error}");
    }
}
