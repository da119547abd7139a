//! The `adiff` command line.

use std::process::ExitCode;

/// Entry point of the `adiff` binary.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
