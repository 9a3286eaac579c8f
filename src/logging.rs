//! Log output: `VOXREG_LOG` sets the level, as a tracing env-filter (`info`,
//! `voxreg_framework=debug`) or as DeepReg's numeric levels 0–5.

use tracing_subscriber::EnvFilter;

/// The environment variable holding the log level.
pub const LOG_ENV: &str = "VOXREG_LOG";

/// Installs the global subscriber, writing to stderr. Defaults to `info`.
pub fn init() {
    let filter = std::env::var(LOG_ENV)
        .ok()
        .map(|level| deepreg_level(&level).map(str::to_owned).unwrap_or(level))
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// DeepReg's numeric levels: 0 everything, 1 debug, 2 info, 3 warnings, 4 errors, 5 critical.
fn deepreg_level(level: &str) -> Option<&'static str> {
    Some(match level.trim() {
        "0" => "trace",
        "1" => "debug",
        "2" => "info",
        "3" => "warn",
        "4" | "5" => "error",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_deepreg_levels() {
        assert_eq!(deepreg_level("3"), Some("warn"));
        assert_eq!(deepreg_level("debug"), None);
    }
}
