//! Printing to standard output without panicking when it is closed.
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`voxreg plugins list |
//! grep -q name`, `| head`). The CLI prints through [`say!`] instead, which returns the
//! write's error; `main` treats a broken pipe as the reader being done and exits quietly
//! with success, as `ripgrep` and coreutils do.

/// Writes one formatted line to stdout; evaluates to `std::io::Result<()>`.
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        ::std::writeln!(::std::io::stdout().lock(), $($arg)*)
    }};
}

/// Writes formatted text, without a line break added, to stdout; evaluates to
/// `std::io::Result<()>`.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        ::std::write!(::std::io::stdout().lock(), $($arg)*)
    }};
}

pub(crate) use {say, say_raw};

/// Whether `error` (or any error it wraps) is a write to a pipe whose reader has closed.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::is_broken_pipe;

    #[test]
    fn finds_a_broken_pipe_under_context() {
        let io = |kind| anyhow::Error::from(std::io::Error::from(kind));
        let wrapped = io(std::io::ErrorKind::BrokenPipe).context("printing the table");
        assert!(is_broken_pipe(&wrapped));
        assert!(!is_broken_pipe(&io(std::io::ErrorKind::PermissionDenied)));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe")));
    }
}
