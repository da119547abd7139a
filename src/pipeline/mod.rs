//! A [`Job`] end to end: load its model, encode its prompt, make its initial latents, run
//! each [`Pass`] through the sampler, decode. It joins the model layer and the sampler
//! without either knowing the other, and does no terminal I/O: progress goes to the caller's
//! observer, warnings come back as data ([`Prepared::warnings`]).
//!
//! * [`latents`] — initial latents from a file.
//! * [`memory`] — whether a run's size fits in the machine's memory, checked before loading.
//! * [`reports`] — the JSON written for a run or a comparison.

pub mod latents;
pub mod memory;
pub mod reports;

use crate::field::{Field, FieldError, Fix, Note};
use crate::job::{Job, Pass};
use crate::model::parts::Parts;
use crate::model::{
    Downloads, HubOptions, ModelSource, StableDiffusion, ldm_pipeline, lora, sd, single_file,
};
use crate::sampler::{self, RunSettings, RunTrace, StepEvent};
use anyhow::Result;
use candle_core::Tensor;
use std::ops::ControlFlow;
use std::time::Instant;

pub use reports::{
    CompareReport, CompareSummary, GenerateReport, Role, RunInfo, SideReport, VideoQuality,
};

/// A loaded pipeline (its schedule, `--prediction` applied, is `sd.schedule()`).
pub struct LoadedModel {
    /// The pipeline.
    pub sd: StableDiffusion,
    /// Where it came from, for reports.
    pub origin: String,
    /// Load time, milliseconds.
    pub load_ms: f64,
    /// Why the model runs on the CPU although a GPU backend is compiled in (shown once).
    pub device_note: Option<String>,
}

impl LoadedModel {
    /// What the user should read about the load, one line each: why a GPU build runs on
    /// the CPU, the checkpoint detected, each LoRA merged (for the front end to word).
    pub fn messages(&self) -> impl Iterator<Item = Note> + '_ {
        self.device_note
            .iter()
            .cloned()
            .chain(self.sd.precision_note())
            .map(Note::new)
            .chain(self.sd.notes().iter().cloned())
    }
}

/// The parts of the model a job names: a single-file checkpoint or a folder (downloading
/// hub weights when needed, their progress to `downloads`), with its VAE replaced, its
/// LoRAs merged and its prediction type set as the job says.
pub fn model_parts(job: &Job, downloads: &Downloads) -> Result<Parts> {
    let hub = HubOptions::reporting(downloads);
    let mut parts = match &job.model {
        // Pickles and other files go the folder way, which names what they are.
        ModelSource::Local(path) if path.is_file() && single_file::is_safetensors(path) => {
            ldm_pipeline::parts(path, job.vae.as_deref(), job.prediction)?
        }
        source => {
            let mut parts = Parts::folder(&source.resolve(&hub)?)?;
            if let Some(vae) = &job.vae {
                parts.replace_vae(vae)?;
            }
            if let Some(p) = job.prediction {
                parts.set_prediction(p);
            }
            parts
        }
    };
    lora::apply_all(&mut parts, &job.loras)?;
    if let Some(m) = job.motion_module() {
        parts.add_motion(&m, &hub)?;
    }
    Ok(parts)
}

/// Load the model a job names on the CPU or the best device; hub downloads report to
/// `downloads`.
pub fn load_model(job: &Job, downloads: &Downloads) -> Result<LoadedModel> {
    let t0 = Instant::now();
    let (device, device_note) = crate::model::device(job.force_cpu);
    let dtype = job.dtype.unwrap_or_else(|| sd::default_dtype(&device));
    let parts = model_parts(job, downloads)?;
    let sd = StableDiffusion::from_parts(parts, &device, dtype).map_err(|e| {
        // A poisoned weight is the whole story; "the weights do not match the config"
        // around it would send the user after the wrong problem.
        match crate::model::checkpoint::poisoned_weight(&e) {
            Some(message) => anyhow::anyhow!(message),
            None => e,
        }
    })?;
    Ok(LoadedModel {
        sd,
        origin: job.model.to_string(),
        load_ms: t0.elapsed().as_secs_f64() * 1e3,
        device_note,
    })
}

/// The model a job names; a size given that cannot fit in memory is refused first (a side
/// not given counts as 1024, the largest native size). Hub downloads report to
/// `downloads`.
pub fn load_job_model(job: &Job, downloads: &Downloads) -> Result<LoadedModel> {
    if job.width.is_some() || job.height.is_some() {
        let (w, h) = (job.width.unwrap_or(1024), job.height.unwrap_or(1024));
        memory::check_fits(&job.model, w, h, job.frames.unwrap_or(1))?;
    }
    load_model(job, downloads)
}

/// Inputs shared by every pass of a job: the encoded prompt and the initial latents.
pub struct Prepared {
    cond: sd::Conditioning,
    /// Unscaled N(0, 1) noise, or the file's latents (already scaled).
    noise: Tensor,
    noise_is_scaled: bool,
    /// Final width and height.
    pub size: (usize, usize),
    /// Things the user should know about a setting (words the model's vocabulary lacks, a
    /// truncated prompt), for the front end to word and show.
    pub warnings: Vec<FieldError>,
}

impl Prepared {
    /// The starting latents: unscaled N(0, 1) noise (a clip's with its shared part, moved
    /// by the prompt's motion words when the module says so), or a file's latents.
    pub fn initial_latents(&self) -> &Tensor {
        &self.noise
    }
}

/// Words of the prompts that the model's vocabulary does not know.
fn unknown_word_warnings(sd: &StableDiffusion, job: &Job) -> Result<Vec<FieldError>> {
    let mut warnings = vec![];
    for (field, text) in [
        (Field::Prompt, &job.prompt),
        (Field::Negative, &job.negative),
    ] {
        let unknown = sd.unknown_words(text)?;
        if !unknown.is_empty() {
            let words: Vec<String> = unknown.iter().map(|w| format!("\"{w}\"")).collect();
            warnings.push(FieldError::new(
                field,
                format!(
                    "has words this model's vocabulary does not know: {}; they are read as an unknown word",
                    crate::field::cut_list(&words, 10)
                ),
            ));
        }
    }
    Ok(warnings)
}

/// A clip's prompt asking for a motion its module mostly failed on held-out prompts (its
/// recorded evaluation): said, so that a still object is not taken for the method's doing.
fn motion_warning(sd: &StableDiffusion, job: &Job) -> Option<FieldError> {
    let (score, by) = sd.motion_score(&job.prompt)?;
    score.mostly_fails().then(|| {
        FieldError::new(
            Field::Prompt,
            format!(
                "asks for \"{}\", which this motion module got right in {} of {} held-out clips{}: expect little of that motion in the clip",
                score.words,
                score.right,
                score.clips,
                by.map(|b| format!(" ({b})")).unwrap_or_default()
            ),
        )
    })
}

/// Encode the prompt of a job: a prompt longer than the text encoder's window is an error,
/// or with [`Job::truncate`] a warning.
fn encode(
    sd: &StableDiffusion,
    job: &Job,
    warnings: &mut Vec<FieldError>,
) -> Result<sd::Conditioning> {
    let negative = (!job.negative.is_empty()).then_some(job.negative.as_str());
    let cond = sd.encode_prompt(&job.prompt, negative, job.guidance)?;
    if let Some(t) = cond.truncation.first() {
        let field = match t.role {
            sd::PromptRole::Positive => Field::Prompt,
            sd::PromptRole::Negative => Field::Negative,
        };
        let n = t.truncated.dropped_tokens;
        let text = crate::field::cut_words(&t.truncated.dropped_text, 12);
        if job.truncate {
            warnings.push(FieldError::new(
                field,
                format!("is longer than the text encoder's 77 tokens: {n} token(s) were dropped: \"{text}\""),
            ));
        } else {
            return Err(FieldError::new(
                field,
                format!("is longer than the text encoder's 77 tokens: {n} token(s) would be dropped: \"{text}\"; shorten it"),
            )
            .with_fix(Fix::Truncate)
            .into());
        }
    }
    Ok(cond)
}

/// The frames of a job's clip on this model (1 for an image model).
fn clip_frames(sd: &StableDiffusion, job: &Job) -> usize {
    if sd.is_video() {
        job.frames.unwrap_or(sd::DEFAULT_FRAMES)
    } else {
        1
    }
}

/// Encode the prompt and prepare the initial latents of a job.
pub fn prepare(model: &LoadedModel, job: &Job) -> Result<Prepared> {
    let sd = &model.sd;
    let mut warnings = unknown_word_warnings(sd, job)?;
    warnings.extend(motion_warning(sd, job));
    let cond = encode(sd, job, &mut warnings)?;
    let (noise, noise_is_scaled, size) = match &job.init_latents {
        Some(path) => {
            let x = latents::read_latents(path)?;
            let size = latents::check_shape(sd, &x, path, job.width, job.height, job.frames)?;
            memory::check_fits(&job.model, size.0, size.1, clip_frames(sd, job))?;
            let sigma = scheduler_for(model, job, job.steps)?.init_noise_sigma();
            latents::check_values(&x, path, sigma)?;
            let native = sd.default_size();
            if (job.width, job.height) == (None, None) && size != native {
                warnings.push(FieldError::new(
                    Field::InitLatents,
                    format!(
                        "{} gives a {}x{} image (this model's native size is {}x{})",
                        path.display(),
                        size.0,
                        size.1,
                        native.0,
                        native.1
                    ),
                ));
            }
            (x.to_device(sd.device())?, true, size)
        }
        None => {
            let (dw, dh) = sd.default_size();
            let size = (job.width.unwrap_or(dw), job.height.unwrap_or(dh));
            memory::check_fits(&job.model, size.0, size.1, clip_frames(sd, job))?;
            let dims = sd
                .latent_dims(size.0, size.1, job.frames)
                .map_err(|e| FieldError::new(Field::Frames, e.to_string()))?;
            let mut noise = sampler::noise::gaussian(job.seed, &dims, sd.device())?;
            if let Some((share, pyramid)) = sd.shared_noise() {
                let motion = sd.noise_motion(&job.prompt).map(|r| r.motion);
                noise = latents::mix_shared(&noise, share, job.seed, motion, pyramid)?;
            }
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

/// One finished run.
pub struct Generation {
    /// The decoded image (a video model's clip: its frames in a grid).
    pub image: image::RgbImage,
    /// A video model's frames, in order (empty for an image model).
    pub frames: Vec<image::RgbImage>,
    /// The latents that were decoded.
    pub latents: Tensor,
    /// The per-step trace.
    pub trace: RunTrace,
    /// VAE decode time, milliseconds.
    pub decode_ms: f64,
    /// What the run had to do differently (a VAE decode redone in f32), for the front end
    /// to show as a warning.
    pub notes: Vec<String>,
}

/// The scheduler of a pass, with a step count the model's schedule cannot give named as
/// the steps setting.
fn scheduler_for(
    model: &LoadedModel,
    job: &Job,
    steps: usize,
) -> Result<Box<dyn sampler::Scheduler>> {
    sampler::build_scheduler(job.scheduler, model.sd.schedule(), steps)
        .map_err(|e| FieldError::new(Field::Steps, format!("is not usable: {e}")).into())
}

/// Run one pass from the prepared inputs; `observe` sees every step and may cancel.
pub fn generate(
    model: &LoadedModel,
    job: &Job,
    prepared: &Prepared,
    pass: &Pass,
    observe: &mut dyn FnMut(StepEvent<'_>) -> ControlFlow<()>,
) -> Result<Generation> {
    let settings = RunSettings {
        scheduler: job.scheduler,
        steps: pass.steps,
        guidance: job.guidance,
        method: pass.method,
        early_stop: pass.early_stop,
    };
    let init = if prepared.noise_is_scaled {
        prepared.noise.clone()
    } else {
        let sigma = match pass.method.own_steps() {
            // The step count the user typed in the method spec is named as such.
            Some(n) => {
                sampler::build_scheduler(job.scheduler, model.sd.schedule(), n).map_err(|e| {
                    FieldError::new(
                        Field::Method,
                        format!(
                            "{} is not usable: {e}",
                            crate::job::method_spec::format(&pass.method)
                        ),
                    )
                })?
            }
            None => scheduler_for(model, job, pass.steps)?,
        }
        .init_noise_sigma();
        (&prepared.noise * sigma)?
    };
    let mut denoiser = model.sd.denoiser(&prepared.cond);
    let mut out = sampler::run(
        &mut denoiser,
        model.sd.schedule(),
        &settings,
        &init,
        observe,
    )?;
    out.trace.unet_cost = out
        .trace
        .unet_macs
        .map(|m| m as f64 / crate::model::macs::reference_call_macs() as f64);
    let t0 = Instant::now();
    let (decoded, note) = model.sd.decode_noted(&out.latents)?;
    let (image, frames) = if model.sd.is_video() {
        let frames = model.sd.to_frames(&decoded)?;
        (crate::output::clip::filmstrip(&frames), frames)
    } else {
        (model.sd.to_rgb(&decoded)?, vec![])
    };
    Ok(Generation {
        image,
        frames,
        latents: out.latents,
        trace: out.trace,
        decode_ms: t0.elapsed().as_secs_f64() * 1e3,
        notes: note.into_iter().collect(),
    })
}

/// One discarded noise-predictor call, so that one-time costs (allocations, kernel
/// selection, page faults of memory-mapped weights) do not land on whichever pass runs first.
pub fn warm_up(model: &LoadedModel, job: &Job, prepared: &Prepared) -> Result<()> {
    use crate::sampler::Denoiser;
    let sch = scheduler_for(model, job, job.steps)?;
    let x = sch.scale_model_input(&prepared.noise, 0)?;
    model
        .sd
        .denoiser(&prepared.cond)
        .predict(&x, sch.timesteps()[0])?;
    Ok(())
}

/// What a caller shows while a comparison runs.
pub trait Progress {
    /// A pass of `steps` steps starts, `then` steps of later passes follow it.
    fn start(&mut self, pass: &Pass, steps: usize, then: usize);
    /// One step finished; `Break` cancels.
    fn step(&mut self, ev: StepEvent<'_>) -> ControlFlow<()>;
    /// The pass finished.
    fn finish(&mut self);
}

/// Shows nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _: &Pass, _: usize, _: usize) {}
    fn step(&mut self, _: StepEvent<'_>) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    fn finish(&mut self) {}
}

/// A comparison's runs: its two sides and the full-step reference both are measured
/// against.
pub struct Comparison {
    /// The left side's run ([`Job::baseline_pass`]).
    pub left: Generation,
    /// The right side's run ([`Job::method_pass`]).
    pub right: Generation,
    /// The full-step reference: its own run, or the side that is it.
    pub reference: Reference,
    /// The right side against the left.
    pub summary: CompareSummary,
    /// The left side against the reference.
    pub left_vs_reference: CompareSummary,
    /// The right side against the reference.
    pub right_vs_reference: CompareSummary,
}

/// Where a comparison's full-step reference came from.
pub enum Reference {
    /// Neither side is the full-step baseline: it ran on its own.
    Ran(Box<Generation>),
    /// This side is the full-step baseline; it ran once.
    Side(Role),
}

impl Comparison {
    /// The reference run.
    pub fn reference(&self) -> &Generation {
        match &self.reference {
            Reference::Ran(g) => g,
            Reference::Side(Role::Right) => &self.right,
            Reference::Side(_) => &self.left,
        }
    }

    /// The side that is the reference, if one is.
    pub fn reference_side(&self) -> Option<Role> {
        match self.reference {
            Reference::Ran(_) => None,
            Reference::Side(r) => Some(r),
        }
    }
}

/// Whether a pass is the job's full-step baseline: every one of the job's steps computed
/// (`baseline`, or `steps:n=N` with the job's N), no early stop.
pub fn is_full_step(job: &Job, pass: &Pass) -> bool {
    // A method that saves no work at its own step count (the baseline, `steps:n=N`).
    let full =
        !pass.method.saves_work() && pass.method.own_steps().unwrap_or(job.steps) == job.steps;
    full && pass.steps == job.steps && pass.early_stop.is_none()
}

/// Run the left side, the right side and (unless a side is it) the full-step baseline from
/// the same inputs, after one warm-up call, and measure each side against the reference
/// and the right against the left.
pub fn compare(
    model: &LoadedModel,
    job: &Job,
    prepared: &Prepared,
    right: &Pass,
    progress: &mut dyn Progress,
) -> Result<Comparison> {
    let left = job.baseline_pass();
    let side = if is_full_step(job, &left) {
        Some(Role::Left)
    } else if is_full_step(job, right) {
        Some(Role::Right)
    } else {
        None
    };
    let reference = job.full_step_pass();
    let mut run = |pass: &Pass, then: usize| -> Result<Generation> {
        progress.start(pass, pass.steps, then);
        let g = generate(model, job, prepared, pass, &mut |ev| progress.step(ev))?;
        progress.finish();
        Ok(g)
    };
    warm_up(model, job, prepared)?;
    let own = match side {
        None => Some(run(&reference, left.steps + right.steps)?),
        Some(_) => None,
    };
    let l = run(&left, right.steps)?;
    let r = run(right, 0)?;
    let (left_vs_reference, right_vs_reference) = {
        let reference = match (&own, side) {
            (Some(g), _) => g,
            (None, Some(Role::Right)) => &r,
            (None, _) => &l,
        };
        (
            CompareSummary::of(reference, &l)?,
            CompareSummary::of(reference, &r)?,
        )
    };
    Ok(Comparison {
        summary: CompareSummary::of(&l, &r)?,
        left: l,
        right: r,
        reference: match (own, side) {
            (Some(g), _) => Reference::Ran(Box::new(g)),
            (None, s) => Reference::Side(s.unwrap_or(Role::Left)),
        },
        left_vs_reference,
        right_vs_reference,
    })
}
