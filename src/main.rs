//! The `headway` binary: hands off to the command line.

fn main() -> std::process::ExitCode {
    headway::cli::run()
}
