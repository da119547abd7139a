//! `adiff train ...`.
//!
//! * [`args`] — the subcommands' flags and their value parsers.
//! * [`measure`] — `adiff train measure`: a UNet call and a training step, timed.
//! * Here: running each subcommand.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use candle_core::Device;

use crate::train::{Arch, TrainConfig, Trainer};

pub mod args;
pub mod measure;

pub use args::*;
use measure::measure;

/// Run `adiff train ...`.
pub fn run(args: &TrainArgs) -> Result<()> {
    // `main` keeps freed memory in the process for every command
    // (`malloc_tuning::keep_freed_memory`), training's many large temporaries included.
    match &args.what {
        TrainCommand::Shapes(a) => train_shapes(a),
        TrainCommand::Export(a) => export(a),
        TrainCommand::Clip(a) => train_clip(a),
        TrainCommand::ClipEval(a) => clip_eval(a),
        TrainCommand::Measure(a) => measure(a),
        TrainCommand::Pack(a) => pack(a),
        TrainCommand::Probe(a) => probe(a),
        TrainCommand::ShiftProbe(a) => shift_probe(a),
        TrainCommand::Eval(a) => eval(a),
        TrainCommand::Motion(a) => train_motion(a),
        TrainCommand::MotionEval(a) => motion_eval(a),
        TrainCommand::MotionLoss(a) => motion_loss(a),
    }
}

/// `adiff train motion-loss`.
fn motion_loss(a: &MotionLossArgs) -> Result<()> {
    use crate::train::motion::{MotionTrainConfig, MotionTrainer, has_checkpoint};
    ensure!(
        has_checkpoint(&a.out),
        "{} holds no motion checkpoint: give --out the folder of an `adiff train motion` run (e.g. a copy of assets/models/shapes/motion/checkpoint)",
        a.out.display()
    );
    ensure!(
        a.batches >= 1,
        "--batches must be at least 1 (got {})",
        a.batches
    );
    let mut t = MotionTrainer::open(&a.out, Path::new(""), MotionTrainConfig::default())?;
    let bands: Vec<(usize, usize)> = (0..5).map(|i| (i * 200, (i + 1) * 200)).collect();
    let losses = t.loss_by_band(&bands, a.batches, a.seed)?;
    println!(
        "step {}, {} batches of {} clips × {} frames per band (seed {}); ε loss as trained (weighted min(1/ᾱ, {}))",
        t.step, a.batches, t.config.batch, t.config.frames, a.seed, t.config.high_noise_weight
    );
    println!("| timesteps | with the modules | proj_out zeroed | ratio |");
    println!("|---|---:|---:|---:|");
    for ((lo, hi), (with, without)) in bands.iter().zip(&losses) {
        println!(
            "| {lo}–{} | {with:.4} | {without:.4} | {:.3} |",
            hi - 1,
            with / without
        );
    }
    Ok(())
}

/// `adiff train motion`.
fn train_motion(a: &MotionArgs) -> Result<()> {
    use crate::train::motion::{MotionTrainConfig, MotionTrainer};
    ensure!(a.batch >= 1, "--batch must be at least 1 (got {})", a.batch);
    ensure!(
        (0.0..1.0).contains(&a.shared_noise),
        "--shared-noise {} is out of range: give a share in 0..1 (e.g. 0.5)",
        a.shared_noise
    );
    let config = MotionTrainConfig {
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        shared_noise: a.shared_noise,
        ..Default::default()
    };
    if let Some(k) = a.motion_weight {
        ensure!(
            k.is_finite() && k >= 0.0,
            "--motion-weight {k} is out of range: give 0 or more (e.g. 4)"
        );
    }
    if let Some(k) = a.adapt_base {
        ensure!(
            k.is_finite() && (0.0..=1.0).contains(&k),
            "--adapt-base {k} is out of range: give a share of the learning rate in 0..1 (e.g. 0.05)"
        );
    }
    if let Some(k) = a.warped_noise {
        ensure!(
            k.is_finite() && (0.0..=1.0).contains(&k),
            "--warped-noise {k} is out of range: give the share of the noise a clip's frames share, in 0..=1 (e.g. 0.95)"
        );
    }
    let mut t = MotionTrainer::open_adjusted(&a.out, &a.base, config, a.adapt_base)?;
    if let Some(k) = a.warped_noise {
        t.set_warped_noise(true, k);
    }
    if let Some(LrDecay(d)) = a.lr_decay {
        t.config.lr_decay = d;
    }
    if let Some(k) = a.motion_weight {
        t.config.motion_weight = k;
    }
    if let Some(Focus(f)) = a.high_noise_focus {
        t.config.high_noise_focus = f;
    }
    eprintln!(
        "motion module: {} parameters trained, step {} of {}, {} clips × {} frames per batch, motion weight {}, timesteps {}, image UNet {}, {:.0} % of the noise shared{}, {:.0} s trained so far; checkpoints in {}",
        t.num_parameters(),
        t.step,
        a.steps,
        t.config.batch,
        t.config.frames,
        t.config.motion_weight,
        match t.config.high_noise_focus {
            Some((from, share)) => format!("{:.0} % from {from}..999", share * 100.0),
            None => "uniform".to_string(),
        },
        if t.config.base_lr_scale > 0.0 {
            format!(
                "trained at {}× the learning rate since step {}",
                t.config.base_lr_scale, t.config.base_since
            )
        } else {
            "frozen".to_string()
        },
        t.config.shared_noise * 100.0,
        if t.config.warped_noise {
            " and moving with the clip (warped)"
        } else {
            ""
        },
        t.train_seconds,
        a.out.display()
    );
    t.run(
        &a.out,
        &a.progress.schedule(a.steps),
        &crate::train::steps::stop_file(&a.out),
        &mut |line| eprintln!("{line}"),
    )?;
    if let Some(out) = &a.export {
        t.export(out, !a.raw)?;
        eprintln!("exported the motion module to {}", out.display());
    }
    Ok(())
}

/// `adiff train motion-eval`.
fn motion_eval(a: &MotionEvalArgs) -> Result<()> {
    use crate::train::motion_eval::{MotionEvalOptions, evaluate};
    // Where --record writes, checked before the clips are made.
    let record_to = a.model.join("motion/config.json");
    if let Some(date) = &a.record {
        ensure!(
            record_to.is_file(),
            "--record writes into {}, which does not exist: give --model a folder whose motion/ module has a config.json",
            record_to.display()
        );
        ensure!(
            !date.trim().is_empty(),
            "--record needs the date of the measurement (e.g. 2026-12-07)"
        );
    }
    if let Some(d) = &a.clips {
        std::fs::create_dir_all(d)?;
    }
    let opts = MotionEvalOptions {
        single: a.single,
        pairs: a.pairs,
        frames: a.frames,
        steps: a.steps,
        guidance: a.guidance,
        seed: a.seed,
    };
    let report = evaluate(
        &a.model,
        &opts,
        &mut |i, prompt, frames| {
            if let Some(d) = &a.clips {
                let strip = crate::output::clip::filmstrip(frames);
                let name = format!("{i:03}-{}.png", prompt.replace(' ', "_"));
                crate::output::write_png(&d.join(name), &strip)?;
            }
            Ok(())
        },
        &mut |line| eprintln!("{line}"),
    )?;
    println!("{}", report.single.line("one object"));
    println!("{}", report.pairs.line("two objects"));
    println!("{:.2} s per clip", report.seconds_per_clip);
    if let Some(d) = &a.clips {
        crate::output::write_json(&d.join("summary.json"), &report)?;
    }
    if let Some(date) = &a.record {
        let by = format!(
            "adiff train motion-eval --single {} --pairs {} --frames {} --steps {} --guidance {} --seed {}, {date}",
            a.single, a.pairs, a.frames, a.steps, a.guidance, a.seed
        );
        let scores = report.scores();
        crate::train::motion_eval::record_scores(&record_to, &scores, &by)?;
        for s in &scores {
            println!("{}: {}/{} right", s.words, s.right, s.clips);
        }
        println!("recorded in {}", record_to.display());
    }
    Ok(())
}

/// `adiff train shapes`: start or resume the run in `--out`, apply the options that also
/// change a resumed run, train until `--steps` (or until a file STOP appears in `--out`),
/// then export if asked.
fn train_shapes(a: &ShapesArgs) -> Result<()> {
    ensure!(a.batch >= 1, "--batch must be at least 1 (got {})", a.batch);
    let config = TrainConfig {
        arch: Arch::parse(&a.arch).context("--arch")?,
        batch: a.batch,
        lr: a.lr.unwrap_or(1e-3),
        seed: a.seed,
        ..TrainConfig::default()
    };
    if let Some(o) = a.offset_noise {
        ensure!(
            (0.0..=1.0).contains(&o),
            "--offset-noise {o} is out of range: give a standard deviation in 0..=1 (e.g. 0.15)"
        );
    }
    let device = super::device(a.cpu);
    let on = if device.is_cpu() { "CPU" } else { "GPU" };
    let mut t = Trainer::open_on(&a.out, config, device)?;
    apply_run_options(&mut t.config, a)?;
    eprintln!("{}", shapes_run_summary(&t, a, on));
    t.run(
        &a.out,
        &a.progress.schedule(a.steps),
        &crate::train::steps::stop_file(&a.out),
        &mut |line| eprintln!("{line}"),
    )?;
    eprintln!(
        "stopped at step {} ({:.0} s trained)",
        t.step, t.train_seconds
    );
    if let Some(dir) = &a.export {
        t.export(dir, true)?;
        eprintln!("exported the EMA weights to {}", dir.display());
    }
    Ok(())
}

/// Set the options of `adiff train shapes` that, given, also change a resumed run (whose
/// `config` comes from its checkpoint); checks their ranges (`--offset-noise` is checked
/// before the run is opened).
fn apply_run_options(config: &mut TrainConfig, a: &ShapesArgs) -> Result<()> {
    if let Some(o) = a.offset_noise {
        config.offset_noise = o;
    }
    if let Some(LrDecay(d)) = a.lr_decay {
        config.lr_decay = d;
    }
    if let Some(lr) = a.lr {
        ensure!(
            lr.is_finite() && lr > 0.0 && lr <= 0.1,
            "--lr {lr} is out of range: give a learning rate in (0, 0.1] (e.g. 1e-3)"
        );
        config.lr = lr;
    }
    if let Some(d) = a.pyramid_noise {
        ensure!(
            (0.0..1.0).contains(&d),
            "--pyramid-noise {d} is out of range: give a discount in 0..1 (0 = plain noise, e.g. 0.9)"
        );
        config.pyramid_noise = d;
    }
    if let Some(Focus(f)) = a.high_noise_focus {
        config.high_noise_focus = f;
    }
    if let Some(ObjectMix(m)) = a.objects {
        config.objects = m;
    }
    if let Some(f) = a.free_placement {
        ensure!(
            (0.0..=1.0).contains(&f),
            "--free-placement {f} is out of range: give a share of the scenes in 0..=1 (e.g. 0.5)"
        );
        config.free_placement = f;
    }
    if let Some(k) = a.high_noise_weight {
        ensure!(
            k.is_finite() && (1.0..=1000.0).contains(&k),
            "--high-noise-weight {k} is out of range: give a cap in 1..=1000 (1 = the plain ε loss, e.g. 50)"
        );
        config.high_noise_weight = k;
    }
    Ok(())
}

/// The line that opens a shapes run: its size, where it stands and its settings.
fn shapes_run_summary(t: &Trainer, a: &ShapesArgs, on: &str) -> String {
    let c = &t.config;
    let focus = match c.high_noise_focus {
        Some((from, share)) => {
            format!("{:.0} % of timesteps from {from}..999", share * 100.0)
        }
        None => "uniform timesteps".into(),
    };
    let decay = match c.lr_decay {
        Some((from, to)) => format!("cosine decay {from}→{to}"),
        None => "no decay".into(),
    };
    let [p1, p2, p3] = c.objects;
    format!(
        "{} parameters; step {} of {}; batch {}; scenes with 1/2/3 objects {p1}/{p2}/{p3}, {} % placed anywhere; offset noise {}; pyramid noise {}; high-noise weight cap {}; {focus}; lr {:.1e}, {decay}; on the {on}; checkpoints in {}",
        t.num_parameters(),
        t.step,
        a.steps,
        c.batch,
        c.free_placement * 100.0,
        c.offset_noise,
        c.pyramid_noise,
        c.high_noise_weight,
        c.lr,
        a.out.display()
    )
}

/// `adiff train export`.
fn export(a: &ExportArgs) -> Result<()> {
    crate::train::export_from_checkpoint(&a.from, &a.to, !a.raw)?;
    eprintln!("exported {} to {}", a.from.display(), a.to.display());
    Ok(())
}

/// `adiff train pack`.
fn pack(a: &PackArgs) -> Result<()> {
    crate::train::pack_checkpoint(&a.from, &a.to)?;
    eprintln!("packed {} into {}", a.from.display(), a.to.display());
    Ok(())
}

/// `adiff train clip`: start or resume the tiny-CLIP run in `--out`, train, export if asked.
fn train_clip(a: &ClipArgs) -> Result<()> {
    ensure!(a.batch >= 1, "--batch must be at least 1 (got {})", a.batch);
    let device = super::device(a.cpu);
    let config = crate::train::clip::ClipTrainConfig {
        arch: crate::train::clip::ClipArch::parse(&a.arch).context("--arch")?,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        ..Default::default()
    };
    let mut t = crate::train::clip::ClipTrainer::open(&a.out, config, device)?;
    eprintln!(
        "tiny CLIP: {} parameters; step {} of {}; batch {}; checkpoints in {}",
        t.num_parameters(),
        t.step,
        a.steps,
        t.config.batch,
        a.out.display()
    );
    t.run(&a.out, &a.progress.schedule(a.steps), &mut |line| {
        eprintln!("{line}")
    })?;
    if let Some(dir) = &a.export {
        t.export(dir)?;
        eprintln!("exported the CLIP to {}", dir.display());
    }
    Ok(())
}

/// `adiff train clip-eval`: how often each held-out render's true caption ranks first.
fn clip_eval(a: &ClipEvalArgs) -> Result<()> {
    let scorer = crate::metrics::clip::ClipScorer::from_dir(&a.model, &Device::Cpu)?;
    let scores =
        crate::train::clip::rank_accuracy(&scorer, a.single, a.pairs, a.candidates, a.seed)?;
    for s in &scores {
        println!(
            "{:<6} true caption first among {}: {} / {} ({:.1} %)",
            s.group,
            s.candidates,
            s.top1,
            s.renders,
            100.0 * s.top1 as f64 / s.renders.max(1) as f64
        );
    }
    let (top1, n) = scores
        .iter()
        .fold((0, 0), |(a, b), s| (a + s.top1, b + s.renders));
    println!(
        "all    {top1} / {n} ({:.1} %)",
        100.0 * top1 as f64 / n.max(1) as f64
    );
    Ok(())
}

/// `adiff train probe`: one line per probed timestep.
/// `adiff train shift-probe`.
fn shift_probe(a: &ShiftProbeArgs) -> Result<()> {
    use crate::train::shift_probe::{FOLLOW_PX, ShiftProbeSettings, shift_probe};
    let g = crate::train::eval::Generator::load(&a.model)?;
    let settings = ShiftProbeSettings {
        seeds: a.seeds,
        shifts: a.shifts.clone(),
        steps: a.steps,
        guidance: a.guidance,
        pyramid: a.pyramid,
    };
    let rows = shift_probe(&g, &settings)?;
    println!(
        "shift probe of {} ({} seeds, {}-step DDIM, guidance {}, noise {}): does the object move with the noise?",
        a.model.display(),
        a.seeds,
        a.steps,
        a.guidance,
        if a.pyramid > 0.0 {
            format!("pyramid {}", a.pyramid)
        } else {
            "plain".into()
        }
    );
    for r in &rows {
        println!(
            "shift {:>2} px: followed {:>2}/{} (within {FOLLOW_PX} px)  off where the noise puts it {:>5.2} px  moved {:>5.2} px",
            r.shift, r.followed, r.seeds, r.error, r.moved
        );
    }
    Ok(())
}

fn probe(a: &ProbeArgs) -> Result<()> {
    let g = crate::train::eval::Generator::load(&a.model)?;
    let rows = crate::train::probe::probe(&g, a.seeds, &a.timesteps, a.guidance)?;
    println!(
        "position probe of {} ({} seeds × 5 positions, guidance {}): distance (px) from the colour's centre to the named position",
        a.model.display(),
        a.seeds,
        a.guidance
    );
    for r in &rows {
        println!(
            "t {:>3}: distance {:>5.2} (if the words were ignored: {:>5.2})  moved by the words {:>5.2}  nearest the named position {:>3}/{}  corners' sides {:>3}/{}  | from a render's trace in x_t, no position words: nearest the rendered position {:>3}/{}",
            r.timestep,
            r.distance,
            r.distance_if_ignored,
            r.spread,
            r.nearest_right,
            r.prompts,
            r.sides_right,
            r.sides,
            r.trace_right,
            r.prompts
        );
    }
    Ok(())
}

/// `adiff train eval`: score held-out prompts; with `--images`, keep each image (named by
/// its verdict and prompt) and the scores as `summary.json`.
fn eval(a: &EvalArgs) -> Result<()> {
    let g = crate::train::eval::Generator::load(&a.model)?;
    if let Some(d) = &a.images {
        std::fs::create_dir_all(d)?;
    }
    let scores = crate::train::eval::score_held_out(
        &g,
        a.single,
        a.pairs,
        a.steps,
        a.guidance,
        &mut |prompt, i, img, ok| {
            if let Some(d) = &a.images {
                save_eval_image(d, prompt, i, img, ok);
            }
        },
    )?;
    for s in &scores {
        println!("{}", eval_score_line(s));
    }
    if let Some(d) = &a.images {
        crate::output::write_json(&d.join("summary.json"), &scores)?;
    }
    Ok(())
}

/// Write one evaluated image into `dir` as `ok|bad-III-PROMPT.png` (a failure is a warning).
fn save_eval_image(dir: &Path, prompt: &str, i: usize, img: &image::RgbImage, ok: bool) {
    let name = format!(
        "{}-{i:03}-{}.png",
        if ok { "ok" } else { "bad" },
        prompt.replace(' ', "_")
    );
    if let Err(e) = crate::output::write_png(&dir.join(&name), img) {
        eprintln!("warning: could not write {name} to {}: {e}", dir.display());
    }
}

/// One group's line of `adiff train eval`.
fn eval_score_line(s: &crate::train::eval::GroupScore) -> String {
    format!(
        "{:<7} {:>3} images: all right {:>5.1} %  background {:>5.1} %  objects {:>5.1} %  extra objects {:.2}/image  {:.2} s/image{}",
        s.group,
        s.images,
        100.0 * s.all_right as f64 / s.images as f64,
        100.0 * s.background_right as f64 / s.images as f64,
        100.0 * s.objects_right as f64 / s.objects.max(1) as f64,
        s.extra_objects as f64 / s.images as f64,
        s.seconds_per_image,
        if s.corner_sides > 0 {
            format!(
                "  corners' sides {:.1} % (one side of two: 50 %)",
                100.0 * s.corner_sides_right as f64 / s.corner_sides as f64
            )
        } else {
            String::new()
        }
    )
}
