//! The `headway` command line.

/// Parses the command line and runs it.
pub fn run() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
