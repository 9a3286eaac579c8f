//! The `voxreg` command line.

mod cli;
mod logging;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_args();
    logging::init();
    if !voxreg::allocator::apply() {
        tracing::debug!("the allocator keeps its default policy");
    }
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if cli::stdout::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            let message = error.to_string();
            eprintln!("error: {}", cli::error_text::compact_long_numbers(&message));
            for cause in error.chain().skip(1) {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    eprintln!(
                        "  caused by: {}",
                        cli::error_text::compact_long_numbers(&cause)
                    );
                }
            }
            match error.downcast_ref::<voxreg::engine::EngineError>() {
                Some(voxreg::engine::EngineError::Interrupted { .. }) => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
