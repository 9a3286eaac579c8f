//! The plugin declaration check the loader runs on every library's exported record before
//! using it: fuzzed ABI version, fingerprint strings (any bytes, any length), build id, crate
//! name and version.

#![no_main]

use std::path::Path;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use voxreg::plugin::abi::{self, AbiStr, Fingerprint, PluginDeclaration, RegisterStatus};
use voxreg::plugin::PluginRegistrar;

#[derive(Arbitrary, Debug)]
struct Declared {
    /// `None`: the host's ABI version.
    abi_version: Option<u32>,
    /// Per string, `None` keeps the host's: voxreg, rustc, candle, features, name, version.
    strings: [Option<Vec<u8>>; 6],
    /// A length claimed past the cap for the string at this index (never read).
    oversized: Option<u8>,
    /// `None`: the host's build id.
    build_id: Option<u64>,
}

unsafe extern "C" fn never_called(_: *mut PluginRegistrar) -> RegisterStatus {
    abi::REGISTER_FAILED
}

fuzz_target!(|declared: Declared| {
    voxreg_fuzz::start();
    let host = Fingerprint::current();
    let defaults = [
        host.voxreg_version,
        host.rustc_version,
        host.candle_version,
        host.features,
        AbiStr::new("fuzz-plugin"),
        AbiStr::new("0.1.0"),
    ];
    let mut strings = defaults;
    for (index, (slot, bytes)) in strings.iter_mut().zip(&declared.strings).enumerate() {
        if let Some(bytes) = bytes {
            // SAFETY: the bytes live until the end of this call, past every read.
            *slot = unsafe { AbiStr::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        }
        if declared.oversized.map(usize::from) == Some(index) {
            // SAFETY: over the cap, so never read.
            *slot = unsafe { AbiStr::from_raw_parts(std::ptr::null(), abi::MAX_STRING_LEN + 1) };
        }
    }
    let declaration = PluginDeclaration {
        abi_version: declared.abi_version.unwrap_or(abi::ABI_VERSION),
        fingerprint: Fingerprint {
            voxreg_version: strings[0],
            rustc_version: strings[1],
            candle_version: strings[2],
            features: strings[3],
            build_id: declared.build_id.unwrap_or(host.build_id),
        },
        name: strings[4],
        version: strings[5],
        register: never_called,
    };
    // SAFETY: the record is live and every string within the cap points to live bytes.
    let verified =
        unsafe { voxreg::plugin::verify_declaration(Path::new("fuzz.so"), &declaration) };
    if verified.is_ok() {
        assert_eq!(declaration.abi_version, abi::ABI_VERSION);
    } else {
        assert!(verified.unwrap_err().to_string().contains("fuzz.so"));
    }
});
