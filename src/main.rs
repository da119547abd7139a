//! `adiff`: the Adaptive Diffusion command line.

fn main() -> std::process::ExitCode {
    adaptive_diffusion::malloc_tuning::keep_freed_memory();
    adaptive_diffusion::cli::main()
}
