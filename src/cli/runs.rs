//! `adiff generate` and `adiff compare`: build the job, run it with progress bars, write the
//! outputs and print the summary line.

use super::progress::StepBars;
use super::run_args::{CommonArgs, CompareArgs, GenerateArgs, decide_budget};
use crate::complexity::ComplexityBudget;
use crate::job::Job;
use crate::output::{self, Outputs};
use crate::pipeline::{
    self, CompareReport, GenerateReport, LoadedModel, Prepared, Progress, RunInfo,
};
use anyhow::Result;

/// A validated job, its complexity budget, its loaded model and prepared inputs, and the
/// command's planned outputs.
struct Ready {
    job: Job,
    budget: Option<ComplexityBudget>,
    model: LoadedModel,
    prepared: Prepared,
    outputs: Outputs,
}

/// Validate, decide the budget, plan the outputs, load and prepare; notes and warnings go
/// to stderr.
fn ready(common: &CommonArgs, job: Job) -> Result<Ready> {
    let gif = is_gif(&common.out);
    if !gif {
        output::image_format(&common.out)?;
    }
    let outputs = Outputs::plan(common.outputs())?;
    outputs.refuse_inputs(&job.input_files())?;
    let budget = decide_budget(&job)?;
    let model = pipeline::load_job_model(&job, &super::progress::downloads())?;
    if !model.sd.is_video() {
        let problem = if gif {
            Some(format!(
                "--out {}: a GIF is a clip, and {} makes images; name the file .png, .jpg or .webp",
                common.out.display(),
                model.origin
            ))
        } else if common.frames_out.is_some() {
            Some(format!(
                "--frames-out: {} makes images, not video; leave --frames-out out",
                model.origin
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            anyhow::bail!(p);
        }
    }
    // The notes follow a successful prepare: a setting refused there is one error line.
    let prepared = pipeline::prepare(&model, &job)?;
    for note in model.messages() {
        eprintln!("adiff: {}", note.worded(&super::Flags));
    }
    for w in &prepared.warnings {
        super::warn(w);
    }
    Ok(Ready {
        job,
        budget,
        model,
        prepared,
        outputs,
    })
}

/// Whether an output path names an animated GIF.
fn is_gif(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gif"))
}

/// The bytes of `--out`: a clip's animation when it names a GIF, else the image (a clip's
/// frames in a grid) in the format its extension names.
fn out_bytes(
    path: &std::path::Path,
    image: &image::RgbImage,
    frames: &[image::RgbImage],
    fps: f64,
) -> Result<Vec<u8>> {
    if is_gif(path) {
        output::clip::gif_bytes(frames, fps)
    } else {
        output::image_bytes(path, image)
    }
}

/// Print what a run had to do differently (a VAE decode redone in f32).
fn warn_notes<'a>(notes: impl IntoIterator<Item = &'a String>) {
    for n in notes {
        eprintln!("warning: {}", crate::field::printable(n));
    }
}

/// `adiff generate`.
pub fn generate_cmd(a: &GenerateArgs) -> Result<()> {
    let c = &a.common;
    let mut r = ready(c, c.to_job(a.method()?)?)?;
    let pass = r.job.method_pass(r.budget.as_ref());
    let mut bars = StepBars::new();
    bars.start(&pass, pass.steps, 0);
    let g = pipeline::generate(&r.model, &r.job, &r.prepared, &pass, &mut |ev| {
        bars.step(ev)
    })?;
    bars.finish();
    warn_notes(&g.notes);
    r.outputs
        .stage(&c.out, out_bytes(&c.out, &g.image, &g.frames, c.fps)?)?;
    if let Some(p) = &c.trace {
        let report = GenerateReport {
            info: RunInfo::new(
                &r.model,
                &r.job,
                &r.prepared,
                r.budget.as_ref(),
                &super::Flags,
            ),
            trace: g.trace.clone(),
            decode_ms: g.decode_ms,
        };
        r.outputs.stage(p, output::json_bytes(&report)?)?;
    }
    if let Some(p) = &c.latents_out {
        r.outputs
            .stage(p, output::tensor_bytes([("latents", &g.latents)])?)?;
    }
    r.outputs.commit()?;
    if let Some(dir) = &c.frames_out {
        output::clip::write_frames(dir, &g.frames)?;
    }
    eprintln!(
        "{}: {} of {} steps called the noise predictor, {:.0} ms; wrote {}",
        g.trace.method.name(),
        g.trace.unet_calls,
        g.trace.budget,
        g.trace.elapsed_ms,
        c.out.display()
    );
    Ok(())
}

/// `adiff compare`.
pub fn compare_cmd(a: &CompareArgs) -> Result<()> {
    let c = &a.common;
    let (left, right) = a.methods()?;
    let mut job = c.to_job(right)?;
    job.reference = left;
    job.validate()?;
    let mut r = ready(c, job)?;
    let pass = r.job.method_pass(r.budget.as_ref());
    let cmp = pipeline::compare(&r.model, &r.job, &r.prepared, &pass, &mut StepBars::new())?;
    let (left, right) = (&cmp.left, &cmp.right);
    let own_reference = match &cmp.reference {
        pipeline::Reference::Ran(g) => Some(g.as_ref()),
        pipeline::Reference::Side(_) => None,
    };
    warn_notes(
        left.notes
            .iter()
            .chain(&right.notes)
            .chain(own_reference.into_iter().flat_map(|g| &g.notes)),
    );
    let picture = side_by_side(&left.image, &right.image);
    let pairs: Vec<image::RgbImage> = left
        .frames
        .iter()
        .zip(&right.frames)
        .map(|(l, r)| side_by_side(l, r))
        .collect();
    r.outputs
        .stage(&c.out, out_bytes(&c.out, &picture, &pairs, c.fps)?)?;
    if let Some(p) = &c.trace {
        let info = RunInfo::new(
            &r.model,
            &r.job,
            &r.prepared,
            r.budget.as_ref(),
            &super::Flags,
        );
        let report = CompareReport::of(info, &cmp);
        r.outputs.stage(p, output::json_bytes(&report)?)?;
    }
    if let Some(p) = &c.latents_out {
        let mut latents = vec![("left", &left.latents), ("right", &right.latents)];
        latents.extend(own_reference.map(|g| ("reference", &g.latents)));
        r.outputs.stage(p, output::tensor_bytes(latents)?)?;
    }
    r.outputs.commit()?;
    if let Some(dir) = &c.frames_out {
        output::clip::write_frames(&dir.join("left"), &left.frames)?;
        output::clip::write_frames(&dir.join("right"), &right.frames)?;
        if let Some(g) = own_reference {
            output::clip::write_frames(&dir.join("reference"), &g.frames)?;
        }
    }
    for line in super::compare_lines::lines(&cmp) {
        eprintln!("{line}");
    }
    eprintln!("wrote {}", c.out.display());
    Ok(())
}

/// Two images side by side (baseline left): [`output::clip::side_by_side`].
pub use crate::output::clip::side_by_side;
