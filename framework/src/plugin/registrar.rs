//! What a plugin's register function receives.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

use super::abi::{RegisterStatus, REGISTER_FAILED, REGISTER_OK};
use crate::registry::ComponentRegistration;

/// Collects the components a plugin registers. Passed to the plugin's register function by
/// the host; see [`declare_plugin!`](crate::declare_plugin).
#[derive(Debug, Default)]
pub struct PluginRegistrar {
    submitted: Vec<ComponentRegistration>,
    added: Vec<ComponentRegistration>,
    error: Option<String>,
}

impl PluginRegistrar {
    pub(super) fn new(submitted: Vec<ComponentRegistration>) -> Self {
        PluginRegistrar {
            submitted,
            added: Vec::new(),
            error: None,
        }
    }

    /// Adds every component the library's code submitted with
    /// [`register_component!`](crate::register_component).
    pub fn add_submitted(&mut self) {
        let submitted = std::mem::take(&mut self.submitted);
        self.added.extend(submitted);
    }

    /// Adds one component by hand (build it with
    /// [`component_registration!`](crate::component_registration)).
    pub fn add(&mut self, registration: ComponentRegistration) {
        self.added.push(registration);
    }

    /// Reports a failure; registration is abandoned and the host reports `message`.
    pub fn fail(&mut self, message: impl Into<String>) {
        self.error = Some(message.into());
    }

    /// Runs a plugin's register closure, turning a panic into a failure. Used by
    /// [`declare_plugin!`](crate::declare_plugin); the closure runs in the plugin's code.
    ///
    /// While it runs, the process's panic hook is replaced by one that only records where a
    /// panic happened, so a failing plugin yields one error message rather than a panic
    /// report and backtrace on stderr.
    pub fn run<F: FnOnce(&mut PluginRegistrar)>(&mut self, register: F) -> RegisterStatus {
        static PANIC_LOCATION: Mutex<Option<String>> = Mutex::new(None);
        let previous_hook = panic::take_hook();
        panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            *PANIC_LOCATION.lock().unwrap_or_else(|e| e.into_inner()) = location;
        }));
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| register(self)));
        panic::set_hook(previous_hook);
        if let Err(payload) = outcome {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_owned());
            let location = PANIC_LOCATION
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .map(|l| format!(" (at {l})"))
                .unwrap_or_default();
            self.error = Some(format!(
                "the register function panicked: {message}{location}"
            ));
        }
        if self.error.is_some() {
            REGISTER_FAILED
        } else {
            REGISTER_OK
        }
    }

    pub(super) fn finish(self) -> Result<Vec<ComponentRegistration>, String> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.added),
        }
    }
}
