//! `adiff`: the Adaptive Diffusion command line.

fn main() -> std::process::ExitCode {
    adaptive_diffusion::cli::main()
}
