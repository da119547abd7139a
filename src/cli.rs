//! The `adiff` command line.

use crate::model::ModelSource;
use crate::pipeline::{self, Request};
use crate::sampler::{EarlyStop, SchedulerKind, SkipPolicy};
use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

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
    Overhead(OverheadArgs),
    /// Time one CFG call of a diffusers UNet folder on inputs from a file and report peak
    /// memory (the adiff side of tools/perf/unet_vs_torch.sh).
    UnetCall(UNetCallArgs),
    /// Rate a prompt's complexity (score, factors, rationale) and show the adaptive step
    /// budget it leads to with --budget auto.
    Complexity(crate::complexity::ComplexityArgs),
    /// Benchmark baseline vs adaptive over a prompt set: latency, noise-predictor calls,
    /// PSNR, SSIM and CLIP alignment; writes runs.csv, summary.json, report.md and plots.
    Bench(crate::bench::args::BenchArgs),
    /// Find per prompt the largest δ and smallest budget that keep a PSNR target, and fit
    /// the complexity → budget mapping read by --budget auto --budget-map.
    Calibrate(crate::bench::args::CalibrateArgs),
    /// Train the built-in "shapes" model (resumable), export it, time it, score it.
    Train(crate::train::cli::TrainArgs),
}

/// `adiff overhead`.
#[derive(Debug, Clone, Args)]
pub struct OverheadArgs {
    /// Image size in pixels (square, multiple of 64).
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// Timed UNet calls (after one warm-up call).
    #[arg(long, default_value_t = 2)]
    pub calls: usize,
    /// Controller iterations to average over.
    #[arg(long, default_value_t = 200)]
    pub iters: usize,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    pub cpu: bool,
    /// Also write the measurement as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `adiff unet-call`.
#[derive(Debug, Clone, Args)]
pub struct UNetCallArgs {
    /// A diffusers UNet folder (config.json, diffusion_pytorch_model*.safetensors).
    #[arg(long)]
    pub unet: PathBuf,
    /// Inputs (x{SIZE}, t, context) as safetensors [default: UNET/inputs.safetensors].
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// Image size in pixels: selects the input latents x{SIZE}.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// Timed calls (after one warm-up call).
    #[arg(long, default_value_t = 2)]
    pub calls: usize,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    pub cpu: bool,
    /// Write the last call's output here (safetensors, tensor "out", f32).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Time each operation of the timed calls and print the table on stderr.
    #[arg(long)]
    pub profile: bool,
    /// The UNet's number format [default: f32 on the CPU, f16 on a GPU].
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
}

/// A number format for the model weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

impl DTypeArg {
    /// The candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            DTypeArg::F32 => candle_core::DType::F32,
            DTypeArg::F16 => candle_core::DType::F16,
            DTypeArg::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// Baseline or adaptive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Every step calls the noise predictor.
    Baseline,
    /// Third-order step skipping (AdaptiveDiffusion).
    Adaptive,
}

/// Options shared by `generate` and `compare`.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// The negative prompt (empty: unconditional).
    #[arg(long, default_value = "")]
    pub negative: String,
    /// A local diffusers-format pipeline folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long, conflicts_with = "model")]
    pub weights: Option<PathBuf>,
    /// A model from the Hugging Face hub: sd15, sd21, sdxl or sd-turbo; or `shapes`, the
    /// built-in offline model (assets/models/shapes), the default when neither --model nor
    /// --weights is given and Stable Diffusion 1.5 is not in the hub cache.
    #[arg(long)]
    pub model: Option<String>,
    /// Scheduler: ddim, euler or dpm++.
    #[arg(long, default_value = "ddim")]
    pub scheduler: String,
    /// Number of denoising steps (the budget).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (≤ 1 turns guidance off).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Image width in pixels (multiple of 8; default: the model's native size).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels (multiple of 8; default: the model's native size).
    #[arg(long)]
    pub height: Option<usize>,
    /// δ, the adaptive rule's relative threshold.
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    pub delta: f64,
    /// C_max, the most consecutive skipped steps.
    #[arg(long, default_value_t = 4)]
    pub max_skips: usize,
    /// Stop when the latent has converged (relative change below τ for 3 steps, armed after
    /// 75 % of the budget) and output the predicted clean image.
    #[arg(long)]
    pub early_stop: bool,
    /// τ of the early stop.
    #[arg(long, default_value_t = 0.03)]
    pub early_stop_tau: f64,
    /// Start from these latents (safetensors, f32 NCHW tensor `latents`, already scaled by
    /// the scheduler's initial σ) instead of seeded noise.
    #[arg(long)]
    pub init_latents: Option<PathBuf>,
    /// Write the final latents (before VAE decoding) to this safetensors file.
    #[arg(long)]
    pub latents_out: Option<PathBuf>,
    /// Truncate prompts longer than the text encoder's 77 tokens instead of failing.
    #[arg(long)]
    pub truncate: bool,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    pub cpu: bool,
    /// The UNet's number format [default: f32 on the CPU, f16 on a GPU].
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
    /// The output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Write the per-step trace as JSON here.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Step budget of the adaptive run: fixed (--steps) or auto (from the prompt's
    /// complexity score, relative to --steps; the baseline keeps --steps).
    #[arg(long, value_enum, default_value_t = crate::complexity::BudgetMode::Fixed)]
    pub budget: crate::complexity::BudgetMode,
    /// Complexity scorer and budget mapping (used with --budget auto).
    #[command(flatten)]
    pub scoring: crate::complexity::ScoringArgs,
}

/// `adiff generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// baseline or adaptive.
    #[arg(long, value_enum, default_value_t = Mode::Adaptive)]
    pub mode: Mode,
}

/// `adiff compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

impl CommonArgs {
    /// Turn the options into a validated request; every check that needs no model happens
    /// here, before anything is loaded.
    pub fn to_request(&self, policy: SkipPolicy) -> Result<Request> {
        if self.prompt.trim().is_empty() {
            bail!(
                "--prompt is empty: describe the image to generate, e.g. --prompt \"a red fox in the snow\""
            );
        }
        let scheduler: SchedulerKind = self.scheduler.parse().map_err(anyhow::Error::msg)?;
        if self.steps < 1 {
            bail!("--steps must be at least 1 (got {})", self.steps);
        }
        for (name, v) in [("--width", self.width), ("--height", self.height)] {
            if let Some(v) = v
                && (v == 0 || v % 8 != 0)
            {
                bail!(
                    "{name} {v} is not a positive multiple of 8 (try {})",
                    (v / 8).max(1) * 8
                );
            }
        }
        policy.validate()?;
        let early_stop = self.early_stop.then_some(EarlyStop {
            tau: self.early_stop_tau,
            ..EarlyStop::default()
        });
        if let Some(es) = &early_stop {
            es.validate()?;
        }
        let model = match (&self.weights, &self.model) {
            (Some(dir), _) => ModelSource::Local(dir.clone()),
            (None, Some(name)) => ModelSource::from_name(name)?,
            (None, None) => {
                let (source, why) = ModelSource::default_for(&crate::model::HubOptions::default());
                eprintln!("note: {why}");
                source
            }
        };
        Ok(Request {
            model,
            prompt: self.prompt.clone(),
            negative: self.negative.clone(),
            scheduler,
            steps: self.steps,
            guidance: self.guidance,
            seed: self.seed,
            width: self.width,
            height: self.height,
            policy,
            early_stop,
            init_latents: self.init_latents.clone(),
            truncate: self.truncate,
            force_cpu: self.cpu,
            dtype: self.dtype.map(DTypeArg::dtype),
            budget: None,
        })
    }

    /// `--budget auto`: score the prompt and set the adaptive run's steps (and, with
    /// `--scale-policy`, its δ and C_max) from the complexity.
    fn apply_budget(&self, req: &mut Request) -> Result<()> {
        if self.budget == crate::complexity::BudgetMode::Fixed {
            return Ok(());
        }
        if req.policy == SkipPolicy::Baseline {
            bail!(
                "--budget auto chooses the adaptive run's steps; with --mode baseline give the budget with --steps"
            );
        }
        let decision = self
            .scoring
            .auto_budget(&req.prompt, req.steps, req.policy)?;
        req.policy = decision.budget.policy();
        req.budget = Some(decision);
        Ok(())
    }

    fn adaptive_policy(&self) -> SkipPolicy {
        SkipPolicy::Adaptive {
            delta: self.delta,
            max_skips: self.max_skips,
        }
    }

    fn outputs(&self) -> Vec<&PathBuf> {
        std::iter::once(&self.out)
            .chain(self.trace.iter())
            .chain(self.latents_out.iter())
            .collect()
    }
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
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("error: {first} (see 'adiff --help')");
    ExitCode::from(2)
}

/// The error and its causes on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
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
        Command::Generate(a) => {
            let policy = match a.mode {
                Mode::Baseline => SkipPolicy::Baseline,
                Mode::Adaptive => a.common.adaptive_policy(),
            };
            let mut req = a.common.to_request(policy)?;
            a.common.apply_budget(&mut req)?;
            for p in a.common.outputs() {
                crate::output::check_writable(p)?;
            }
            pipeline::generate_cmd(
                &req,
                &a.common.out,
                a.common.trace.as_deref(),
                a.common.latents_out.as_deref(),
            )
        }
        Command::Complexity(a) => crate::complexity::args::run(&a),
        Command::Bench(a) => crate::bench::args::run_bench_cmd(&a),
        Command::Calibrate(a) => crate::bench::args::run_calibrate_cmd(&a),
        Command::Train(a) => crate::train::cli::run(&a),
        Command::Overhead(a) => {
            if let Some(p) = &a.json {
                crate::output::check_writable(p)?;
            }
            let device = crate::model::device(a.cpu)?;
            let r = crate::overhead::measure(&device, a.size, a.calls, a.iters)?;
            println!(
                "device {} | UNet {:.0} M parameters, {}x{} image, latent {:?}",
                r.device,
                r.unet_parameters as f64 / 1e6,
                r.image_size,
                r.image_size,
                r.latent_shape
            );
            println!(
                "one CFG noise-predictor call (batch 2): {:.1} ms (mean of {})",
                r.unet_call_ms, r.unet_calls
            );
            println!(
                "adaptive controller per step: {:.4} ms = {:.5} % of a call; re-applying guidance on a skipped step: {:.4} ms",
                r.controller_ms,
                100.0 * r.controller_fraction,
                r.reuse_ms
            );
            if let Some(p) = &a.json {
                crate::output::write_atomic(p, serde_json::to_string_pretty(&r)?.as_bytes())?;
            }
            Ok(())
        }
        Command::UnetCall(a) => {
            if let Some(p) = &a.out {
                crate::output::check_writable(p)?;
            }
            let device = crate::model::device(a.cpu)?;
            let inputs = a
                .inputs
                .clone()
                .unwrap_or_else(|| a.unet.join("inputs.safetensors"));
            let (out, r) = crate::unet_call::measure(
                &a.unet,
                &inputs,
                a.size,
                a.calls,
                &device,
                a.dtype.map(DTypeArg::dtype),
                a.profile,
            )?;
            if a.profile {
                eprintln!(
                    "{:<22} {:>10} {:>6} {:>6}",
                    "operation", "ms/call", "%", "count"
                );
                for row in &r.profile {
                    eprintln!(
                        "{:<22} {:>10.1} {:>5.1}% {:>6}",
                        row.op,
                        row.ms,
                        100.0 * row.ms / r.ms,
                        row.count
                    );
                }
            }
            if let Some(p) = &a.out {
                pipeline::write_tensors(p, &[("out", &out)])?;
            }
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::Compare(a) => {
            let mut req = a.common.to_request(a.common.adaptive_policy())?;
            a.common.apply_budget(&mut req)?;
            for p in a.common.outputs() {
                crate::output::check_writable(p)?;
            }
            pipeline::compare_cmd(
                &req,
                &a.common.out,
                a.common.trace.as_deref(),
                a.common.latents_out.as_deref(),
            )
        }
    }
}

#[cfg(feature = "gui")]
fn run_gui() -> Result<()> {
    crate::app::run()
}

#[cfg(not(feature = "gui"))]
fn run_gui() -> Result<()> {
    bail!(
        "this adiff was built without the desktop app (feature `gui`); rebuild with default features, or use generate / compare (see 'adiff --help')"
    )
}
