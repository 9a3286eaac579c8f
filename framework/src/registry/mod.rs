//! The component registry: the one place a name in a config is looked up.
//!
//! Components register themselves statically with [`register_component!`](crate::register_component)
//! (collected by `inventory` from every crate linked into the binary) or are added by dynamic
//! plugins at run time ([`Registry::load_plugin`](crate::plugin)). Either way they land in a
//! [`Registry`]: a map `(category, name) → decoder` that builds a typed, boxed config from a
//! YAML value.

mod category;
mod error;
mod keys;
mod kind;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

pub use category::{slot, Category};
pub use error::{DecodeError, RegistryError, UnknownComponent};
pub use keys::KeyInfo;
pub use kind::ComponentKind;

use crate::config::{self, ConfigValue, KeyPath, Problem};
use crate::suggest;

/// A type-erased, boxed component config (`Box<Box<dyn XConfig>>` as `Any`).
pub type ErasedConfig = Box<dyn Any + Send + Sync>;

/// Decodes a component's YAML mapping (without `name`) into its erased config.
pub type DecodeFn = fn(ConfigValue) -> Result<ErasedConfig, Vec<Problem>>;

/// One registered component: its category, name, a one-line description, the module that
/// registered it, and its decoder. Built by [`register_component!`](crate::register_component).
#[derive(Clone, Copy)]
pub struct ComponentRegistration {
    /// The category the name lives in.
    pub category: Category,
    /// The name configs select it by.
    pub name: &'static str,
    /// One line for `voxreg plugins list`.
    pub description: &'static str,
    /// `module_path!()` where it was registered; its first segment is the crate.
    pub module_path: &'static str,
    /// Decodes the config mapping.
    pub decode: DecodeFn,
    /// The keys the config type declares (for help output), if it is a plain struct.
    pub keys: fn() -> Option<&'static [&'static str]>,
}

impl ComponentRegistration {
    /// The crate that registered the component.
    pub fn crate_name(&self) -> &'static str {
        self.module_path
            .split("::")
            .next()
            .unwrap_or(self.module_path)
    }
}

impl fmt::Debug for ComponentRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentRegistration")
            .field("category", &self.category)
            .field("name", &self.name)
            .field("module_path", &self.module_path)
            .finish_non_exhaustive()
    }
}

inventory::collect!(ComponentRegistration);

/// Where a registered component comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Linked into this program; the crate that registered it.
    Linked {
        /// Crate name.
        crate_name: String,
    },
    /// Added by a dynamic plugin library.
    Plugin {
        /// The library's path as given.
        library: PathBuf,
        /// The crate that registered it, inside the library.
        crate_name: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Linked { crate_name } => write!(f, "{crate_name} (linked)"),
            Source::Plugin {
                library,
                crate_name,
            } => {
                write!(f, "{crate_name} (plugin {})", library.display())
            }
        }
    }
}

/// A component in a [`Registry`].
#[derive(Clone, Debug)]
pub struct RegisteredComponent {
    /// What was registered.
    pub registration: ComponentRegistration,
    /// Where it came from.
    pub source: Source,
}

/// The registry: every component a config can name, by category.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    entries: BTreeMap<(Category, String), RegisteredComponent>,
}

/// The registrations linked into this process, read from `inventory` once. Later additions
/// to the inventory (by dynamic libraries, whose constructors run when they are opened) are
/// never mistaken for linked components.
pub(crate) fn linked_registrations() -> &'static [&'static ComponentRegistration] {
    static LINKED: OnceLock<Vec<&'static ComponentRegistration>> = OnceLock::new();
    LINKED.get_or_init(|| inventory::iter::<ComponentRegistration>().collect())
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// A registry holding every component linked into this program.
    ///
    /// Errors if two linked crates register the same name in one category.
    pub fn linked() -> Result<Self, RegistryError> {
        let mut registry = Registry::new();
        for registration in linked_registrations() {
            registry.insert(
                **registration,
                Source::Linked {
                    crate_name: registration.crate_name().to_owned(),
                },
            )?;
        }
        Ok(registry)
    }

    /// Adds one component. Errors, naming both sources, if the name is taken.
    pub fn insert(
        &mut self,
        registration: ComponentRegistration,
        source: Source,
    ) -> Result<(), RegistryError> {
        let key = (
            registration.category,
            registration.category.normalize(registration.name),
        );
        if let Some(existing) = self.entries.get(&key) {
            return Err(RegistryError::Duplicate {
                category: registration.category,
                name: registration.name.to_owned(),
                first: existing.source.clone(),
                second: source,
            });
        }
        self.entries.insert(
            key,
            RegisteredComponent {
                registration,
                source,
            },
        );
        Ok(())
    }

    /// Adds several components, all or none: on a duplicate nothing is added.
    pub fn insert_all(
        &mut self,
        components: impl IntoIterator<Item = (ComponentRegistration, Source)>,
    ) -> Result<(), RegistryError> {
        let mut staged = self.clone();
        for (registration, source) in components {
            staged.insert(registration, source)?;
        }
        *self = staged;
        Ok(())
    }

    /// Looks a component up. An unknown name gives an error listing what the category holds
    /// and the closest match.
    pub fn get(
        &self,
        category: Category,
        name: &str,
    ) -> Result<&RegisteredComponent, UnknownComponent> {
        self.entries
            .get(&(category, category.normalize(name)))
            .ok_or_else(|| {
                let known: Vec<&str> = self.names(category).collect();
                UnknownComponent {
                    category,
                    name: name.to_owned(),
                    suggestion: suggest::closest(name, known.iter().copied()).map(str::to_owned),
                    known: known.iter().map(|s| (*s).to_owned()).collect(),
                }
            })
    }

    /// The names registered in a category, sorted.
    pub fn names(&self, category: Category) -> impl Iterator<Item = &str> {
        self.entries
            .range((category, String::new())..)
            .take_while(move |((c, _), _)| *c == category)
            .map(|(_, entry)| entry.registration.name)
    }

    /// Every registered component, by category then name.
    pub fn iter(&self) -> impl Iterator<Item = &RegisteredComponent> {
        self.entries.values()
    }

    /// Number of registered components.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Builds a component config of kind `K` from its name and the rest of its mapping.
    ///
    /// Problems (unknown keys, wrong types, missing keys) have paths relative to the
    /// component's mapping. The decoded config must serialise back under the registered name
    /// (checked, so a `typetag` name that disagrees with the registration is caught).
    pub fn decode<K>(&self, name: &str, value: ConfigValue) -> Result<Box<K>, DecodeError>
    where
        K: ComponentKind + ?Sized,
    {
        let entry = self.get(K::CATEGORY, name).map_err(DecodeError::Unknown)?;
        let registration = entry.registration;
        let _scope = config::RegistryScope::enter(self);
        let erased = (registration.decode)(value).map_err(DecodeError::Invalid)?;
        let config = erased
            .downcast::<Box<K>>()
            .map_err(|_| DecodeError::WrongKind {
                category: K::CATEGORY,
                name: registration.name.to_owned(),
                origin: entry.source.clone(),
            })?;
        let config = *config;
        let tag = K::serialized_name(&config);
        if tag.as_deref() != Some(registration.name) {
            return Err(DecodeError::NameMismatch {
                category: K::CATEGORY,
                registered: registration.name.to_owned(),
                serialized: tag.unwrap_or_else(|| "(no name)".to_owned()),
                origin: entry.source.clone(),
            });
        }
        Ok(config)
    }

    /// The config of a component with every default filled in, as YAML (`name` first), or
    /// the problems that show which keys are required.
    pub fn defaults_yaml(&self, category: Category, name: &str) -> Result<String, DecodeError> {
        let empty = ConfigValue::Mapping(Default::default());
        let value = category::decode_to_value(self, category, name, empty)?;
        config::to_yaml_string(&value)
            .map_err(|message| DecodeError::Invalid(vec![Problem::new(KeyPath::root(), message)]))
    }
}

/// Registers a component config type under a name, from any crate linked into the program
/// (or built into a dynamic plugin).
///
/// ```text
/// voxreg_framework::register_component!(backbone, "tiny_net", TinyNet, "Two 1x1 conv layers");
/// ```
///
/// A complete example (a config type, its trait, the registration and a lookup) runs as a
/// doctest in the `voxreg` crate's documentation; a `dylib` crate cannot run doctests.
///
/// The first argument is the category: `backbone`, `method`, `image_loss`, `label_loss`,
/// `regularization`, `field_loss`, `parameter_source`, `optimizer`, `data_loader`,
/// `file_loader` or `augmentation`. The type
/// must implement `serde::Deserialize` and the category's config trait with
/// `#[typetag::serialize(name = "<the same name>")]`.
#[macro_export]
macro_rules! register_component {
    ($category:ident, $name:literal, $config:ty, $description:literal) => {
        $crate::inventory::submit! {
            $crate::component_registration!($category, $name, $config, $description)
        }
    };
}

/// Builds the [`ComponentRegistration`] value that [`register_component!`] submits; use it
/// directly to register a component by hand (for example from a plugin's register
/// function).
#[macro_export]
macro_rules! component_registration {
    ($category:ident, $name:literal, $config:ty, $description:literal) => {
        $crate::registry::ComponentRegistration {
            category: $crate::registry::slot::$category::CATEGORY,
            name: $name,
            description: $description,
            module_path: ::core::module_path!(),
            decode: |value| {
                let config: $config = $crate::config::decode(value)?;
                let boxed: ::std::boxed::Box<$crate::registry::slot::$category::Config> =
                    ::std::boxed::Box::new(config);
                ::std::result::Result::Ok(::std::boxed::Box::new(boxed))
            },
            keys: $crate::config::declared_fields::<$config>,
        }
    };
}
