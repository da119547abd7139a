//! The `adiff` command line: parses the arguments, builds a [`crate::job::Job`] (or a
//! benchmark, a measurement) from them, runs it and reports on the terminal. The only
//! front end that names flags: [`Flags`] words the library's field errors with them.
//!
//! * [`run_args`] — the options of `generate` and `compare`, turned into a job.
//! * [`runs`] — `generate` and `compare`: progress bars, outputs, the summary line.
//! * [`compare_lines`] — the lines `compare` ends with: each side against the full-step
//!   reference and against the other.
//! * [`progress`] — the one progress-bar style.
//! * [`measure`] — `overhead` and `unet-call`.
//! * [`bench`](mod@bench) — `bench` and `calibrate` options.
//! * [`shards`] — `bench merge` and `bench slurm`: benchmarks run in parts.
//! * [`complexity`] — the scorer options and `adiff complexity`.
//! * [`train`] — `adiff train`: the built-in model's training, export, evaluation.

pub mod bench;
pub mod compare_lines;
pub mod complexity;
pub mod measure;
pub mod methods;
pub mod progress;
pub mod run_args;
pub mod runs;
pub mod shards;
pub mod train;

use crate::field::{Field, Fix, Wording};
use crate::model::ModelError;
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub use run_args::{CommonArgs, CompareArgs, DTypeArg, GenerateArgs, ModelArgs};

/// Adaptive Diffusion: run a fixed-step baseline and an adaptive step-skipping pipeline on
/// the same prompt, seed and initial noise, and measure what the skipping saved and cost.
#[derive(Debug, Parser)]
#[command(name = "adiff", version, about, long_about = None)]
pub struct Cli {
    /// What to do (none: open the desktop app).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open the desktop app: baseline and adaptive side by side with live curves (the
    /// default when no command is given).
    Gui,
    /// Generate one image with the baseline or the adaptive pipeline.
    Generate(GenerateArgs),
    /// Run baseline and adaptive from the same noise; write a side-by-side PNG and both traces.
    Compare(CompareArgs),
    /// Measure the adaptive controller's per-step cost next to one noise-predictor call on
    /// a UNet of Stable Diffusion 1.5 size with random weights.
    Overhead(measure::OverheadArgs),
    /// Time one CFG call of a diffusers UNet folder on inputs from a file and report peak
    /// memory (the adiff side of tools/perf/unet_vs_torch.sh).
    UnetCall(measure::UNetCallArgs),
    /// Rate a prompt's complexity (score, factors, rationale) and show the adaptive step
    /// budget it leads to with --budget auto.
    Complexity(complexity::ComplexityArgs),
    /// Benchmark baseline vs adaptive over a prompt set: latency, noise-predictor calls,
    /// PSNR, SSIM and CLIP alignment; writes runs.csv, summary.json, report.md and plots.
    /// `bench merge` and `bench slurm` run one in parts, on a Slurm cluster.
    Bench(shards::BenchCommand),
    /// Find per prompt the largest δ and smallest budget that keep a PSNR target, and fit
    /// the complexity → budget mapping read by --budget auto --budget-map.
    Calibrate(bench::CalibrateArgs),
    /// Train the built-in "shapes" model (resumable), export it, time it, score it.
    Train(train::TrainArgs),
    /// List every acceleration method with its keys, defaults, ranges and sources.
    Methods,
}

/// The command line's names: a setting is its flag.
pub struct Flags;

impl Wording for Flags {
    fn name(&self, field: Field) -> String {
        match field {
            Field::Prompt => "--prompt",
            Field::Negative => "--negative",
            Field::Model => "--model",
            Field::Scheduler => "--scheduler",
            Field::Steps => "--steps",
            Field::Guidance => "--guidance",
            Field::Width => "--width",
            Field::Height => "--height",
            Field::Method => "--method",
            Field::Delta => "--delta",
            Field::MaxSkips => "--max-skips",
            Field::EarlyStopTau => "--early-stop-tau",
            Field::InitLatents => "--init-latents",
            Field::OllamaUrl => "--ollama-url",
            Field::OllamaModel => "--ollama-model",
            Field::OllamaTimeout => "--ollama-timeout",
            Field::BudgetMap => "--budget-map",
            Field::Clip => "--clip",
            Field::Size => "--size",
            Field::Calls => "--calls",
            Field::Iters => "--iters",
            Field::Frames => "--frames",
            Field::Prompts => "--prompts",
            Field::Out => "--out",
        }
        .to_string()
    }

    fn fix(&self, fix: Fix) -> Option<String> {
        Some(
            match fix {
                Fix::Truncate => "or pass --truncate to drop them",
                Fix::LocalFolder => "or pass --weights DIR with a local diffusers folder",
                Fix::CheckpointFile => "load it as a file with --weights FILE",
                Fix::VaeFile => "pass the VAE it was made for with --vae FILE",
                Fix::EpsilonPrediction => "pass --prediction epsilon for a 512-px base model",
                Fix::Resume => "or pass --resume to continue it",
            }
            .to_string(),
        )
    }

    fn fix_of(&self, cause: &(dyn std::error::Error + 'static)) -> Option<Fix> {
        cause.downcast_ref::<ModelError>().and_then(ModelError::fix)
    }
}

/// The CPU with `--cpu`, else the best device, saying on stderr why a GPU build runs on the
/// CPU if it does.
pub fn device(cpu: bool) -> candle_core::Device {
    let (device, note) = crate::model::device(cpu);
    if let Some(note) = note {
        eprintln!("adiff: {note}");
    }
    device
}

/// An error on one line, settings named by their flags, control characters escaped.
pub fn one_line(e: &anyhow::Error) -> String {
    crate::field::printable(&crate::field::one_line(e, &Flags))
}

/// Print a library warning about a setting.
pub fn warn(w: &crate::field::FieldError) {
    eprintln!("warning: {}", one_line(&anyhow::Error::new(w.clone())));
}

/// Entry point of the `adiff` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    #[cfg(not(feature = "gui"))]
    if cli.command.is_none() {
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        eprintln!(
            "\nerror: this adiff was built without the desktop app (feature `gui`): give a command"
        );
        return ExitCode::from(2);
    }
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Print clap's message as one line (help and version print in full).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    eprintln!(
        "error: {} (see 'adiff --help')",
        usage_line(&e.render().to_string())
    );
    ExitCode::from(2)
}

/// clap's message on one line, whole: the problem, the arguments it names, the allowed
/// values and its tip; the usage block and the help pointer are left out.
fn usage_line(text: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("error: ").unwrap_or(line);
        parts.push(if line.starts_with("tip:") {
            format!("({line})")
        } else {
            line.to_string()
        });
    }
    if parts.is_empty() {
        return "invalid arguments".into();
    }
    crate::field::printable(&parts.join(" "))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ADIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<()> {
    let Some(command) = cli.command else {
        return run_gui();
    };
    match command {
        Command::Gui => run_gui(),
        Command::Generate(a) => runs::generate_cmd(&a),
        Command::Compare(a) => runs::compare_cmd(&a),
        Command::Complexity(a) => complexity::run(&a),
        Command::Bench(a) => shards::run(&a),
        Command::Calibrate(a) => bench::run_calibrate_cmd(&a),
        Command::Train(a) => train::run(&a),
        Command::Methods => methods::run(),
        Command::Overhead(a) => measure::overhead_cmd(&a),
        Command::UnetCall(a) => measure::unet_call_cmd(&a),
    }
}

#[cfg(feature = "gui")]
fn run_gui() -> Result<()> {
    crate::app::run()
}

#[cfg(not(feature = "gui"))]
fn run_gui() -> Result<()> {
    anyhow::bail!(
        "this adiff was built without the desktop app (feature `gui`); rebuild with default features, or use generate / compare (see 'adiff --help')"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(args: &[&str]) -> String {
        let e = Cli::try_parse_from(args).unwrap_err();
        usage_line(&e.render().to_string())
    }

    #[test]
    fn clap_errors_reach_the_user_whole() {
        let missing = usage(&["adiff", "generate", "--model", "shapes"]);
        assert!(missing.contains("--prompt <PROMPT>"), "{missing}");
        assert!(missing.contains("--out <OUT>"), "{missing}");
        let bad = usage(&[
            "adiff", "generate", "--prompt", "a", "--out", "x", "--mode", "basline",
        ]);
        assert!(
            bad.contains("[possible values: baseline, adaptive]"),
            "{bad}"
        );
        assert!(
            bad.contains("tip: a similar value exists: 'baseline'"),
            "{bad}"
        );
        assert!(!bad.contains("Usage"), "{bad}");
    }

    #[test]
    fn library_fixes_and_notes_are_worded_with_flags() {
        let note = crate::field::Note::new("SD 2.x: v-prediction at 768×768 assumed")
            .with_fix(Fix::EpsilonPrediction);
        assert!(
            note.worded(&Flags)
                .ends_with("; pass --prediction epsilon for a 512-px base model")
        );
        let e = anyhow::Error::new(ModelError::NoVae {
            path: "m.safetensors".into(),
        });
        assert!(
            one_line(&e).ends_with("; pass the VAE it was made for with --vae FILE"),
            "{}",
            one_line(&e)
        );
        let e = anyhow::Error::new(
            crate::field::FieldError::new(
                Field::Out,
                "o already holds a benchmark: choose another {name}",
            )
            .with_fix(Fix::Resume),
        );
        assert_eq!(
            one_line(&e),
            "o already holds a benchmark: choose another --out; or pass --resume to continue it"
        );
    }
}
