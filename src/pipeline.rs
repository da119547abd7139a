//! One generation end to end: load a model, encode the prompt, make the initial noise, run
//! the sampler, decode. Shared by the command line (and later the GUI worker and the
//! benchmark runner); it joins the model layer and the sampler without either knowing the
//! other.

use crate::model::{ModelSource, StableDiffusion, sd};
use crate::sampler::{
    self, EarlyStop, RunSettings, RunTrace, SchedulerConfig, SchedulerKind, SkipPolicy, StepEvent,
};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything that defines one generation (or one baseline/adaptive pair).
#[derive(Debug, Clone)]
pub struct Request {
    /// Where the weights come from.
    pub model: ModelSource,
    /// The prompt.
    pub prompt: String,
    /// The negative prompt ("" = none).
    pub negative: String,
    /// The scheduler.
    pub scheduler: SchedulerKind,
    /// The step budget.
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub guidance: f64,
    /// Seed of the initial noise.
    pub seed: u64,
    /// Width in pixels (default: the model's, or the init latents').
    pub width: Option<usize>,
    /// Height in pixels.
    pub height: Option<usize>,
    /// The skip policy of the adaptive side (or the only side of `generate`).
    pub policy: SkipPolicy,
    /// Early stop of the adaptive side.
    pub early_stop: Option<EarlyStop>,
    /// Initial latents from a file instead of seeded noise.
    pub init_latents: Option<PathBuf>,
    /// Truncate over-long prompts instead of failing.
    pub truncate: bool,
    /// Stay on the CPU.
    pub force_cpu: bool,
    /// The UNet's dtype (default: f32 on the CPU, f16 on GPUs).
    pub dtype: Option<DType>,
    /// `--budget auto`: the prompt's complexity and the adaptive side's budget chosen from
    /// it (the baseline keeps `steps`). `None`: every side runs `steps`.
    pub budget: Option<crate::complexity::ComplexityBudget>,
}

impl Request {
    /// Steps of a run with this policy: the complexity budget for the adaptive side when
    /// there is one, `steps` otherwise.
    pub fn steps_for(&self, policy: &SkipPolicy) -> usize {
        match (&self.budget, policy) {
            (Some(b), SkipPolicy::Adaptive { .. }) => b.budget.steps,
            _ => self.steps,
        }
    }
}

/// A loaded pipeline plus its schedule.
pub struct LoadedModel {
    /// The pipeline.
    pub sd: StableDiffusion,
    /// Its `scheduler_config.json`.
    pub schedule: SchedulerConfig,
    /// Where it came from, for reports.
    pub origin: String,
    /// Load time, milliseconds.
    pub load_ms: f64,
    /// Why the model runs on the CPU although a GPU backend is compiled in (shown once).
    pub device_note: Option<String>,
}

impl LoadedModel {
    /// For the command line: say on stderr why a GPU build runs on the CPU, if it does.
    pub fn print_device_note(&self) {
        if let Some(note) = &self.device_note {
            eprintln!("adiff: {note}");
        }
    }
}

/// Load the model a request names (downloading hub weights when needed).
pub fn load_model(
    source: &ModelSource,
    force_cpu: bool,
    dtype: Option<DType>,
) -> Result<LoadedModel> {
    let t0 = Instant::now();
    let (device, device_note) = if force_cpu {
        (Device::Cpu, None)
    } else {
        sd::best_device_noted()
    };
    let dtype = dtype.unwrap_or_else(|| sd::default_dtype(&device));
    let hub = crate::model::HubOptions::default();
    let sd = StableDiffusion::from_source(source, &hub, &device, dtype)?;
    let schedule = SchedulerConfig::from_file(sd.scheduler_config_path())?;
    Ok(LoadedModel {
        sd,
        schedule,
        origin: source.to_string(),
        load_ms: t0.elapsed().as_secs_f64() * 1e3,
        device_note,
    })
}

/// Inputs shared by the two sides of a comparison: the encoded prompt and the noise.
pub struct Prepared {
    cond: sd::Conditioning,
    /// Unscaled N(0, 1) noise, or the file's latents (already scaled).
    noise: Tensor,
    noise_is_scaled: bool,
    /// Final width and height.
    pub size: (usize, usize),
    /// Things the user should know (e.g. prompt words the model's vocabulary lacks).
    pub warnings: Vec<String>,
}

/// Encode the prompt and prepare the initial latents of a request.
pub fn prepare(model: &LoadedModel, req: &Request) -> Result<Prepared> {
    let sd = &model.sd;
    let mut warnings = vec![];
    for (which, text) in [("--prompt", &req.prompt), ("--negative", &req.negative)] {
        let unknown = sd.unknown_words(text)?;
        if !unknown.is_empty() {
            warnings.push(format!(
                "{which}: this model's vocabulary does not know {}; they are read as an unknown word",
                unknown
                    .iter()
                    .map(|w| format!("\"{w}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let cond = sd.encode_prompt(
        &req.prompt,
        (!req.negative.is_empty()).then_some(req.negative.as_str()),
        req.guidance,
    )?;
    if let Some(t) = cond.truncation.first() {
        let which = match t.role {
            sd::PromptRole::Positive => "--prompt",
            sd::PromptRole::Negative => "--negative",
        };
        let msg = format!(
            "{which} is longer than the text encoder's 77 tokens: {} token(s) would be dropped: \"{}\"",
            t.truncated.dropped_tokens, t.truncated.dropped_text
        );
        if req.truncate {
            tracing::warn!("{msg} (truncated because of --truncate)");
        } else {
            bail!("{msg}; shorten it, or pass --truncate to drop them");
        }
    }
    let scale = sd.vae_scale();
    let (noise, noise_is_scaled, size) = match &req.init_latents {
        Some(path) => {
            let x = read_latents(path)?;
            let dims = x.dims().to_vec();
            let size = (
                req.width.unwrap_or(dims[3] * scale),
                req.height.unwrap_or(dims[2] * scale),
            );
            let want = sd.latent_shape(size.0, size.1)?;
            let want = [want.0, want.1, want.2, want.3];
            if dims != want {
                bail!(
                    "--init-latents {} has shape {:?} but a {}x{} image with this model needs {:?}; pass matching --width/--height or other latents",
                    path.display(),
                    dims,
                    size.0,
                    size.1,
                    want
                );
            }
            (x.to_device(sd.device())?, true, size)
        }
        None => {
            let (dw, dh) = sd.default_size();
            let size = (req.width.unwrap_or(dw), req.height.unwrap_or(dh));
            let s = sd.latent_shape(size.0, size.1)?;
            let noise = sampler::noise::gaussian(req.seed, &[s.0, s.1, s.2, s.3], sd.device())?;
            (noise, false, size)
        }
    };
    Ok(Prepared {
        cond,
        noise,
        noise_is_scaled,
        size,
        warnings,
    })
}

/// Read the f32 NCHW tensor `latents` from a safetensors file.
pub fn read_latents(path: &Path) -> Result<Tensor> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| {
        format!(
            "cannot read --init-latents {} (expected a safetensors file)",
            path.display()
        )
    })?;
    let Some(x) = tensors.get("latents") else {
        let mut names: Vec<_> = tensors.keys().cloned().collect();
        names.sort();
        bail!(
            "--init-latents {} has no tensor named 'latents' (found: {})",
            path.display(),
            names.join(", ")
        );
    };
    if x.rank() != 4 || x.dim(0)? != 1 {
        bail!(
            "--init-latents {}: 'latents' must be a (1, C, H, W) tensor, got shape {:?}",
            path.display(),
            x.dims()
        );
    }
    Ok(x.to_dtype(DType::F32)?)
}

/// Write tensors to a safetensors file atomically.
pub fn write_tensors(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| {
            Ok((
                k.to_string(),
                t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
            ))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::tensor::serialize(&map, None)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    crate::output::write_atomic(path, &bytes)
}

/// One finished generation.
pub struct Generation {
    /// The decoded image.
    pub image: image::RgbImage,
    /// The latents that were decoded.
    pub latents: Tensor,
    /// The per-step trace.
    pub trace: RunTrace,
    /// VAE decode time, milliseconds.
    pub decode_ms: f64,
}

/// Run one side (baseline or adaptive) from the prepared inputs.
pub fn generate(
    model: &LoadedModel,
    req: &Request,
    prepared: &Prepared,
    policy: SkipPolicy,
    early_stop: Option<EarlyStop>,
    observe: &mut dyn FnMut(StepEvent<'_>) -> ControlFlow<()>,
) -> Result<Generation> {
    let steps = req.steps_for(&policy);
    let settings = RunSettings {
        scheduler: req.scheduler,
        steps,
        guidance: req.guidance,
        policy,
        early_stop,
    };
    let init = if prepared.noise_is_scaled {
        prepared.noise.clone()
    } else {
        let sigma =
            sampler::build_scheduler(req.scheduler, &model.schedule, steps)?.init_noise_sigma();
        (&prepared.noise * sigma)?
    };
    let mut denoiser = model.sd.denoiser(&prepared.cond);
    let out = sampler::run(&mut denoiser, &model.schedule, &settings, &init, observe)?;
    let t0 = Instant::now();
    let decoded = model.sd.decode(&out.latents)?;
    let image = model.sd.to_rgb(&decoded)?;
    Ok(Generation {
        image,
        latents: out.latents,
        trace: out.trace,
        decode_ms: t0.elapsed().as_secs_f64() * 1e3,
    })
}

/// The settings echoed into every JSON report, so a result can be reproduced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// `adiff` version.
    pub adiff_version: String,
    /// Model origin (folder or hub repository).
    pub model: String,
    /// Device name.
    pub device: String,
    /// The prompt.
    pub prompt: String,
    /// The negative prompt.
    pub negative: String,
    /// Seed of the initial noise.
    pub seed: u64,
    /// File the initial latents came from, if any.
    pub init_latents: Option<PathBuf>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Model load time, milliseconds.
    pub load_ms: f64,
    /// `--budget auto`: score, factors, rationale, the scorer that decided (and any
    /// fallback) and the adaptive side's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity: Option<crate::complexity::ComplexityBudget>,
}

impl RunInfo {
    fn new(model: &LoadedModel, req: &Request, prepared: &Prepared) -> Self {
        Self {
            adiff_version: env!("CARGO_PKG_VERSION").into(),
            model: model.origin.clone(),
            device: format!("{:?}", model.sd.device().location()),
            prompt: req.prompt.clone(),
            negative: req.negative.clone(),
            seed: req.seed,
            init_latents: req.init_latents.clone(),
            width: prepared.size.0,
            height: prepared.size.1,
            load_ms: model.load_ms,
            complexity: req.budget.clone(),
        }
    }
}

/// The JSON written by `adiff generate --trace`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateReport {
    /// Settings.
    #[serde(flatten)]
    pub info: RunInfo,
    /// The run's trace (`unet_calls`, `elapsed_ms`, `steps`, ...).
    #[serde(flatten)]
    pub trace: RunTrace,
    /// VAE decode time, milliseconds.
    pub decode_ms: f64,
}

/// One side of a comparison in the JSON written by `adiff compare --trace`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SideReport {
    /// The run's trace.
    #[serde(flatten)]
    pub trace: RunTrace,
    /// VAE decode time, milliseconds.
    pub decode_ms: f64,
}

/// What the adaptive side saved and cost, relative to the baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareSummary {
    /// Noise-predictor calls avoided.
    pub unet_calls_saved: usize,
    /// Baseline calls / adaptive calls.
    pub nfe_speedup: f64,
    /// Baseline loop time / adaptive loop time (wall clock, same process).
    pub wall_speedup: f64,
    /// PSNR of the adaptive image against the baseline image, dB (0–255 scale).
    pub psnr_db: f64,
}

/// The JSON written by `adiff compare --trace`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    /// Settings.
    #[serde(flatten)]
    pub info: RunInfo,
    /// The fixed-step baseline.
    pub baseline: SideReport,
    /// The adaptive pipeline.
    pub adaptive: SideReport,
    /// Savings and quality.
    pub summary: CompareSummary,
}

/// A progress bar for one run of `steps` steps, with `then` more steps queued after it
/// (the adaptive run after the baseline). After the first step that called the noise
/// predictor, a run that will take long says so once, with its estimate.
fn progress_observer(
    label: &'static str,
    steps: usize,
    then: usize,
) -> (
    indicatif::ProgressBar,
    impl FnMut(StepEvent<'_>) -> ControlFlow<()>,
) {
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {pos}/{len} steps {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(label);
    let b = bar.clone();
    let mut calls = 0usize;
    let mut done = 0usize;
    let observer = move |ev: StepEvent<'_>| {
        calls += usize::from(ev.record.computed);
        done += 1;
        if calls == 1 && ev.record.computed {
            let left = (ev.budget.max(steps) + then).saturating_sub(done);
            let estimate =
                crate::sampler::Estimate::from_steps(std::slice::from_ref(ev.record), left);
            if let Some(note) = estimate.and_then(|e| e.long_run_note()) {
                // A hidden bar (stderr not a terminal) drops its println: say it plainly.
                if b.is_hidden() {
                    eprintln!("{label}: {note}");
                } else {
                    b.println(format!("{label}: {note}"));
                }
            }
        }
        b.set_message(format!("{calls} predictor calls"));
        b.inc(1);
        ControlFlow::Continue(())
    };
    (bar, observer)
}

fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    crate::output::write_atomic_with(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        img.write_to(&mut w, image::ImageFormat::Png)
            .with_context(|| format!("cannot encode {}", path.display()))?;
        Ok(())
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    crate::output::write_atomic(path, text.as_bytes())
}

/// `adiff generate`.
pub fn generate_cmd(
    req: &Request,
    out: &Path,
    trace: Option<&Path>,
    latents_out: Option<&Path>,
) -> Result<()> {
    let model = load_model(&req.model, req.force_cpu, req.dtype)?;
    model.print_device_note();
    let prepared = prepare(&model, req)?;
    for w in &prepared.warnings {
        eprintln!("warning: {w}");
    }
    let (bar, mut obs) = progress_observer(req.policy.mode_name(), req.steps_for(&req.policy), 0);
    let early_stop = req.early_stop;
    let g = generate(&model, req, &prepared, req.policy, early_stop, &mut obs)?;
    bar.finish_and_clear();
    write_png(out, &g.image)?;
    if let Some(p) = trace {
        let report = GenerateReport {
            info: RunInfo::new(&model, req, &prepared),
            trace: g.trace.clone(),
            decode_ms: g.decode_ms,
        };
        write_json(p, &report)?;
    }
    if let Some(p) = latents_out {
        write_tensors(p, &[("latents", &g.latents)])?;
    }
    eprintln!(
        "{}: {} of {} steps called the noise predictor, {:.0} ms; wrote {}",
        g.trace.mode,
        g.trace.unet_calls,
        g.trace.budget,
        g.trace.elapsed_ms,
        out.display()
    );
    Ok(())
}

/// Images smaller than this (e.g. the built-in model's 32×32) are enlarged by an integer
/// factor, pixel for pixel, in the side-by-side picture so that they can be seen.
const MIN_SIDE_BY_SIDE: u32 = 256;

/// Put two images side by side (baseline left) with a gap; small images are enlarged by
/// an integer factor with nearest-neighbour sampling (every model pixel stays visible).
pub fn side_by_side(left: &image::RgbImage, right: &image::RgbImage) -> image::RgbImage {
    let smallest = left
        .width()
        .min(left.height())
        .min(right.width())
        .min(right.height())
        .max(1);
    let factor = MIN_SIDE_BY_SIDE.div_ceil(smallest).max(1);
    let enlarge = |img: &image::RgbImage| {
        if factor == 1 {
            img.clone()
        } else {
            image::imageops::resize(
                img,
                img.width() * factor,
                img.height() * factor,
                image::imageops::FilterType::Nearest,
            )
        }
    };
    let (left, right) = (&enlarge(left), &enlarge(right));
    let gap = (left.width() / 32).max(4);
    let w = left.width() + gap + right.width();
    let h = left.height().max(right.height());
    let mut img = image::RgbImage::from_pixel(w, h, image::Rgb([24, 24, 24]));
    image::imageops::replace(&mut img, left, 0, 0);
    image::imageops::replace(&mut img, right, (left.width() + gap) as i64, 0);
    img
}

/// One discarded noise-predictor call, so that one-time costs (allocations, kernel
/// selection, page faults of memory-mapped weights) do not land on whichever side runs first.
pub fn warm_up(model: &LoadedModel, req: &Request, prepared: &Prepared) -> Result<()> {
    use crate::sampler::Denoiser;
    let sch = sampler::build_scheduler(req.scheduler, &model.schedule, req.steps)?;
    let x = sch.scale_model_input(&prepared.noise, 0)?;
    model
        .sd
        .denoiser(&prepared.cond)
        .predict(&x, sch.timesteps()[0])?;
    Ok(())
}

/// Run baseline and adaptive from the same inputs (after one warm-up call).
pub fn compare(
    model: &LoadedModel,
    req: &Request,
    prepared: &Prepared,
    show_progress: bool,
) -> Result<(Generation, Generation, CompareSummary)> {
    let run_side = |label: &'static str, policy, early_stop, then| -> Result<Generation> {
        let (bar, mut obs) = progress_observer(label, req.steps_for(&policy), then);
        if !show_progress {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let g = generate(model, req, prepared, policy, early_stop, &mut obs)?;
        bar.finish_and_clear();
        Ok(g)
    };
    warm_up(model, req, prepared)?;
    let base = run_side(
        "baseline",
        SkipPolicy::Baseline,
        None,
        req.steps_for(&req.policy),
    )?;
    let adapt = run_side("adaptive", req.policy, req.early_stop, 0)?;
    let summary = CompareSummary {
        unet_calls_saved: base.trace.unet_calls.saturating_sub(adapt.trace.unet_calls),
        nfe_speedup: base.trace.unet_calls as f64 / adapt.trace.unet_calls.max(1) as f64,
        wall_speedup: base.trace.elapsed_ms / adapt.trace.elapsed_ms.max(1e-9),
        psnr_db: crate::metrics::psnr(&adapt.image, &base.image)?,
    };
    Ok((base, adapt, summary))
}

/// `adiff compare`.
pub fn compare_cmd(
    req: &Request,
    out: &Path,
    trace: Option<&Path>,
    latents_out: Option<&Path>,
) -> Result<()> {
    let model = load_model(&req.model, req.force_cpu, req.dtype)?;
    model.print_device_note();
    let prepared = prepare(&model, req)?;
    for w in &prepared.warnings {
        eprintln!("warning: {w}");
    }
    let (base, adapt, summary) = compare(&model, req, &prepared, true)?;
    write_png(out, &side_by_side(&base.image, &adapt.image))?;
    if let Some(p) = trace {
        let report = CompareReport {
            info: RunInfo::new(&model, req, &prepared),
            baseline: SideReport {
                trace: base.trace.clone(),
                decode_ms: base.decode_ms,
            },
            adaptive: SideReport {
                trace: adapt.trace.clone(),
                decode_ms: adapt.decode_ms,
            },
            summary: summary.clone(),
        };
        write_json(p, &report)?;
    }
    if let Some(p) = latents_out {
        write_tensors(
            p,
            &[("baseline", &base.latents), ("adaptive", &adapt.latents)],
        )?;
    }
    eprintln!(
        "baseline {}/{} calls {:.0} ms | adaptive {}/{} calls {:.0} ms | {:.2}x fewer calls, {:.2}x wall, PSNR {:.2} dB; wrote {}",
        base.trace.unet_calls,
        base.trace.budget,
        base.trace.elapsed_ms,
        adapt.trace.unet_calls,
        adapt.trace.budget,
        adapt.trace.elapsed_ms,
        summary.nfe_speedup,
        summary.wall_speedup,
        summary.psnr_db,
        out.display()
    );
    Ok(())
}
