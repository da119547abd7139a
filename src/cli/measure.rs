//! `adiff overhead` and `adiff unet-call`: measurements of the engine.

use super::run_args::DTypeArg;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

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
    /// AnimateDiff motion modules for the (SD 1.x) UNet: time one call on a clip (inputs
    /// `sample`, `timestep`, `encoder_hidden_states`, as tools/perf/video_torch.py writes
    /// them). A ModelScope UNet3D folder is timed on a clip without this.
    #[arg(long, value_name = "DIR|FILE")]
    pub motion: Option<PathBuf>,
}

/// `adiff overhead`.
pub fn overhead_cmd(a: &OverheadArgs) -> Result<()> {
    if let Some(p) = &a.json {
        crate::output::check_writable(p)?;
    }
    let device = super::device(a.cpu);
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
        crate::output::write_json(p, &r)?;
    }
    Ok(())
}

/// `adiff unet-call`.
pub fn unet_call_cmd(a: &UNetCallArgs) -> Result<()> {
    if let Some(p) = &a.out {
        crate::output::check_writable(p)?;
    }
    let device = super::device(a.cpu);
    let inputs = a
        .inputs
        .clone()
        .unwrap_or_else(|| a.unet.join("inputs.safetensors"));
    let video =
        a.motion.is_some() || crate::model::unet3d::is_video_config(&a.unet.join("config.json"));
    let (out, r) = if video {
        crate::unet_call::measure_video(
            &a.unet,
            a.motion.as_deref(),
            &inputs,
            a.calls,
            &device,
            a.dtype.map(DTypeArg::dtype),
            a.profile,
        )?
    } else {
        crate::unet_call::measure(
            &a.unet,
            &inputs,
            a.size,
            a.calls,
            &device,
            a.dtype.map(DTypeArg::dtype),
            a.profile,
        )?
    };
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
        crate::output::write_tensors(p, [("out", &out)])?;
    }
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
