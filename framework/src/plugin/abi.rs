//! The binary interface between the host and a dynamic plugin library.
//!
//! A plugin exports one C-ABI function, [`DECLARATION_SYMBOL`], returning a pointer to a
//! `#[repr(C)]` [`PluginDeclaration`]. The host reads `abi_version` first and nothing else if
//! it differs; then it compares the [`Fingerprint`] (voxreg version, rustc version, candle
//! version, framework features, and the identity of the framework build the plugin linked)
//! with its own. Only when everything matches does it call `register`.
//!
//! Plugins link the framework as a shared Rust library (crate type `dylib`), so host and
//! plugin share one copy of candle (whose global tensor-id counter keys the gradients) and
//! the Rust types passed to `register` are the same types. The fingerprint is what proves it.

use std::any::TypeId;
use std::hash::{Hash, Hasher};

/// Version of the layout of [`PluginDeclaration`] and of the `register` contract. Bumped on
/// any change to either.
pub const ABI_VERSION: u32 = 1;

/// The symbol a plugin library exports (see [`declare_plugin!`](crate::declare_plugin)).
pub const DECLARATION_SYMBOL: &str = "voxreg_plugin_declaration";

/// The framework version (`voxreg-framework`'s crate version).
pub const VOXREG_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The compiler that built the framework.
pub const RUSTC_VERSION: &str = env!("VOXREG_RUSTC_VERSION");

/// The candle version the framework is built on (pinned exactly in the workspace manifest;
/// a test checks the two agree).
pub const CANDLE_VERSION: &str = "0.11.1";

/// The framework's enabled cargo features, comma-separated.
pub const FEATURES: &str = "";

/// The longest string a declaration may hold; longer ones are refused unread, as the mark of a
/// damaged record.
pub const MAX_STRING_LEN: usize = 4096;

/// A string passed across the C ABI: pointer and length of UTF-8 bytes with static lifetime.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AbiStr {
    ptr: *const u8,
    len: usize,
}

// SAFETY: an `AbiStr` is only made from a `&'static str` (immutable, static data), so
// sending or sharing it between threads is as sound as for the `&'static str` itself.
unsafe impl Send for AbiStr {}
// SAFETY: as above.
unsafe impl Sync for AbiStr {}

impl AbiStr {
    /// Wraps a static string.
    pub const fn new(text: &'static str) -> Self {
        AbiStr {
            ptr: text.as_ptr(),
            len: text.len(),
        }
    }

    /// Wraps `len` bytes at `ptr`, which need not be UTF-8: how a host reads a record another
    /// build wrote (and how the fuzz target builds hostile declarations).
    ///
    /// # Safety
    /// Reading the result (with [`AbiStr::to_string_lossy`]) requires `ptr` to point to `len`
    /// readable bytes that outlive every read.
    pub const unsafe fn from_raw_parts(ptr: *const u8, len: usize) -> Self {
        AbiStr { ptr, len }
    }

    /// The length in bytes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the string is empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the string back, replacing invalid UTF-8.
    ///
    /// # Safety
    /// `ptr` and `len` must describe readable memory that lives as long as the result, as an
    /// `AbiStr` made by [`AbiStr::new`] in a loaded (never unloaded) library does.
    pub unsafe fn to_string_lossy(&self) -> String {
        if self.ptr.is_null() {
            return String::new();
        }
        // SAFETY: the caller guarantees ptr/len describe live, readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// What must agree between host and plugin.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Fingerprint {
    /// [`VOXREG_VERSION`] as the plugin saw it.
    pub voxreg_version: AbiStr,
    /// [`RUSTC_VERSION`] as the plugin saw it.
    pub rustc_version: AbiStr,
    /// [`CANDLE_VERSION`] as the plugin saw it.
    pub candle_version: AbiStr,
    /// [`FEATURES`] as the plugin saw it.
    pub features: AbiStr,
    /// [`framework_build_id`] computed in the plugin: it differs when the plugin linked a
    /// different build of the framework (other dependency versions or features), even if
    /// the version strings agree.
    pub build_id: u64,
}

impl Fingerprint {
    /// The fingerprint of the code this is compiled into. Called by
    /// [`declare_plugin!`](crate::declare_plugin) in the plugin, and by the host for itself.
    /// Always inlined, so a plugin records what *it* was compiled against rather than asking
    /// the host's copy of the framework.
    #[inline(always)]
    pub fn current() -> Self {
        Fingerprint {
            voxreg_version: AbiStr::new(VOXREG_VERSION),
            rustc_version: AbiStr::new(RUSTC_VERSION),
            candle_version: AbiStr::new(CANDLE_VERSION),
            features: AbiStr::new(FEATURES),
            build_id: framework_build_id(),
        }
    }
}

/// An identity of this framework build: a hash of the `TypeId` of a framework type. TypeIds
/// include the crate's build hash, which cargo derives from its version, features and every
/// dependency's, so two builds agree only if they are the same build.
#[inline(always)]
pub fn framework_build_id() -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    TypeId::of::<crate::registry::Registry>().hash(&mut hasher);
    TypeId::of::<candle_core::Tensor>().hash(&mut hasher);
    hasher.finish()
}

/// Status a plugin's register function returns.
pub type RegisterStatus = u32;
/// Registration succeeded.
pub const REGISTER_OK: RegisterStatus = 0;
/// Registration failed; the registrar holds the message.
pub const REGISTER_FAILED: RegisterStatus = 1;

/// The record a plugin exports.
#[repr(C)]
pub struct PluginDeclaration {
    /// Must equal the host's [`ABI_VERSION`]; read before any other field.
    pub abi_version: u32,
    /// Must equal the host's fingerprint.
    pub fingerprint: Fingerprint,
    /// The plugin crate's name.
    pub name: AbiStr,
    /// The plugin crate's version.
    pub version: AbiStr,
    /// Adds the plugin's components to the registrar; catches its own panics.
    pub register: unsafe extern "C" fn(*mut super::PluginRegistrar) -> RegisterStatus,
}

/// Exports the plugin declaration of a dynamic plugin library. Put it once in the crate root
/// of a crate built with `crate-type = ["dylib"]`.
///
/// With no argument the plugin registers every component its code submitted with
/// [`register_component!`](crate::register_component). A closure argument replaces that: it
/// receives the [`PluginRegistrar`](crate::plugin::PluginRegistrar) and may add components
/// by hand (and call `add_submitted()` for the submitted ones).
///
/// ```text
/// voxreg_framework::declare_plugin!();
/// ```
///
/// (The `voxreg` crate's documentation runs this as a doctest; a `dylib` crate cannot.)
#[macro_export]
macro_rules! declare_plugin {
    () => {
        $crate::declare_plugin!(|registrar: &mut $crate::plugin::PluginRegistrar| {
            registrar.add_submitted();
        });
    };
    ($register:expr) => {
        #[doc(hidden)]
        unsafe extern "C" fn __voxreg_plugin_register(
            registrar: *mut $crate::plugin::PluginRegistrar,
        ) -> $crate::plugin::abi::RegisterStatus {
            // SAFETY: the host passes a valid, exclusive registrar for the duration of the call.
            let registrar = unsafe { &mut *registrar };
            registrar.run($register)
        }

        #[doc(hidden)]
        static __VOXREG_PLUGIN_DECLARATION: ::std::sync::OnceLock<
            $crate::plugin::abi::PluginDeclaration,
        > = ::std::sync::OnceLock::new();

        /// The voxreg plugin declaration (see `voxreg_framework::declare_plugin!`).
        #[no_mangle]
        pub extern "C" fn voxreg_plugin_declaration(
        ) -> *const $crate::plugin::abi::PluginDeclaration {
            __VOXREG_PLUGIN_DECLARATION.get_or_init(|| $crate::plugin::abi::PluginDeclaration {
                abi_version: $crate::plugin::abi::ABI_VERSION,
                fingerprint: $crate::plugin::abi::Fingerprint::current(),
                name: $crate::plugin::abi::AbiStr::new(env!("CARGO_PKG_NAME")),
                version: $crate::plugin::abi::AbiStr::new(env!("CARGO_PKG_VERSION")),
                register: __voxreg_plugin_register,
            })
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pinned candle version recorded in the fingerprint is the one the lockfile holds.
    #[test]
    fn candle_version_matches_the_lockfile() {
        let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
        let lock = std::fs::read_to_string(&lock).expect("the workspace Cargo.lock");
        let entry = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"candle-core\""))
            .expect("candle-core is locked");
        assert!(
            entry.contains(&format!("version = \"{CANDLE_VERSION}\"")),
            "CANDLE_VERSION {CANDLE_VERSION} differs from the lockfile: {entry}"
        );
    }

    #[test]
    fn the_current_fingerprint_describes_this_build() {
        let fingerprint = Fingerprint::current();
        // SAFETY: made from static strings just above.
        let (voxreg, rustc) = unsafe {
            (
                fingerprint.voxreg_version.to_string_lossy(),
                fingerprint.rustc_version.to_string_lossy(),
            )
        };
        assert_eq!(voxreg, env!("CARGO_PKG_VERSION"));
        assert!(rustc.starts_with("rustc "), "{rustc}");
        assert_eq!(fingerprint.build_id, framework_build_id());
    }
}
