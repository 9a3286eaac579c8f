//! Where the running process loaded the framework from: the one file every dynamic plugin
//! must be compiled against (see `voxreg plugins build`).

use std::path::PathBuf;

/// The framework's shared library as the running process loaded it, canonicalised: the file
/// the operating system reports for this function's own code.
///
/// `None` where the platform cannot tell (not Unix) or where the framework is not a shared
/// library in this process (its own unit tests link it into the test executable).
pub fn framework_library() -> Option<PathBuf> {
    let path = code_file(framework_library as fn() -> Option<PathBuf> as *const ())?;
    let expected = format!(
        "{}voxreg_framework{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let name = path.file_name()?.to_str()?;
    (name == expected).then_some(path)
}

/// The file (executable or shared library) holding the code at `address`.
#[cfg(unix)]
fn code_file(address: *const ()) -> Option<PathBuf> {
    use std::ffi::{CStr, OsStr};
    use std::os::unix::ffi::OsStrExt;

    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only looks the address up in the loader's tables and fills `info`,
    // which is valid for writes; it returns 0 when the address is in no loaded object.
    let found = unsafe { libc::dladdr(address.cast(), info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: dladdr succeeded, so it initialised `info`.
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: non-null, and dladdr's file name is a NUL-terminated string owned by the
    // loader for as long as the object stays loaded (the framework never unloads).
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    PathBuf::from(OsStr::from_bytes(name.to_bytes()))
        .canonicalize()
        .ok()
}

#[cfg(not(unix))]
fn code_file(_address: *const ()) -> Option<PathBuf> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The framework's unit tests link it into the test executable, which is not the shared
    /// library; the end-to-end tests check the binary's answer.
    #[test]
    fn a_framework_linked_into_an_executable_is_not_reported_as_the_library() {
        assert_eq!(framework_library(), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_code_file_of_a_function_here_is_this_test_executable() {
        let file = code_file(
            the_code_file_of_a_function_here_is_this_test_executable as fn() as *const (),
        )
        .expect("dladdr finds the test executable");
        assert_eq!(
            file,
            std::env::current_exe().unwrap().canonicalize().unwrap()
        );
    }
}
