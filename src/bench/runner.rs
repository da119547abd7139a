//! Running a benchmark: open (or resume) its folder, then for each prompt × seed ×
//! scheduler group run the baseline once and every other setting from the same prepared
//! inputs, appending each finished run to `runs.csv` at once.

use super::observer::{BenchEvent, BenchObserver};
use super::plan::{BenchOptions, Setting};
use super::prompts::BenchPrompt;
use super::records::{CsvAppender, RunRow, read_rows};
use super::shard::ShardRecord;
use super::{
    BENCH_JSON, BenchMeta, ClipStatus, IMAGES_DIR, Machine, RUNS_CSV, check_same_settings, pattern,
    peak_rss_mb, report, run_id, utc_now,
};
use crate::complexity::{BudgetMap, Complexity, ComplexityEngine};
use crate::field::{Field, FieldError, Fix, NAME};
use crate::job::{Job, Pass};
use crate::metrics::ClipScorer;
use crate::model::HubOptions;
use crate::pipeline::{self, Generation, LoadedModel, Prepared};
use crate::sampler::SchedulerKind;
use anyhow::{Context, Result, bail};
use image::RgbImage;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

/// The lock file that marks a benchmark folder as in use (held with `flock` for the run).
pub const LOCK_FILE: &str = ".adiff-bench.lock";

/// Run (or continue) a benchmark and write its reports; notes, warnings and progress go
/// to `observer`.
///
/// One bench per folder: a second bench or resume on the same folder while one runs is
/// refused, naming the one that holds it. A bench that fails before its first run is
/// recorded removes what it created, so that the plain command can be run again.
pub fn run_bench(opts: &BenchOptions, observer: &mut dyn BenchObserver) -> Result<report::Summary> {
    let out = &opts.out;
    let existed = out.exists();
    // The folders this creates above `out` (a part's `OUT/shards/`, and `OUT`).
    let created_above: Vec<std::path::PathBuf> = out
        .ancestors()
        .skip(1)
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let _lock = lock_folder(out)?;
    let csv_path = out.join(RUNS_CSV);
    let fresh = !csv_path.exists();
    let images_existed = out.join(IMAGES_DIR).exists();
    let result = run_bench_locked(opts, observer);
    if result.is_err() && fresh && read_rows(&csv_path).map_or(true, |rows| rows.is_empty()) {
        // Nothing was measured: leave the folder as it was.
        for f in [RUNS_CSV, BENCH_JSON] {
            std::fs::remove_file(out.join(f)).ok();
        }
        if !images_existed {
            std::fs::remove_dir(out.join(IMAGES_DIR)).ok();
        }
        if !existed {
            std::fs::remove_file(out.join(LOCK_FILE)).ok();
            std::fs::remove_dir(out).ok();
            for dir in &created_above {
                std::fs::remove_dir(dir).ok();
            }
        }
    }
    result
}

/// Take the folder's bench lock, or say who holds it.
pub(crate) fn lock_folder(out: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = out.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            file.read_to_string(&mut holder).ok();
            let holder = crate::field::cut(holder.trim(), 200);
            return Err(FieldError::new(
                Field::Out,
                format!(
                    "{} is in use by another adiff bench ({}); wait for it to finish, or choose another {NAME}",
                    out.display(),
                    if holder.is_empty() {
                        "just starting"
                    } else {
                        holder.as_str()
                    }
                ),
            )
            .into());
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let me = format!(
        "process {} on {} since {}",
        std::process::id(),
        if host.is_empty() {
            "this machine"
        } else {
            &host
        },
        utc_now()
    );
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(me.as_bytes())?;
    Ok(file)
}

/// Stop between runs: set from a signal handler (Slurm's warning before a time limit).
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ask a running benchmark to stop after the run it is on (async-signal-safe).
pub fn request_stop() {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

/// [`run_bench`] with the folder locked.
fn run_bench_locked(
    opts: &BenchOptions,
    observer: &mut dyn BenchObserver,
) -> Result<report::Summary> {
    let out = &opts.out;
    let csv_path = out.join(RUNS_CSV);
    if csv_path.exists() && !opts.resume {
        return Err(FieldError::new(
            Field::Out,
            format!(
                "{} already holds a benchmark (runs.csv): choose another {NAME}",
                out.display()
            ),
        )
        .with_fix(Fix::Resume)
        .into());
    }
    std::fs::create_dir_all(out.join(IMAGES_DIR))
        .with_context(|| format!("cannot create {}", out.join(IMAGES_DIR).display()))?;
    let engine = opts.scoring.engine()?;
    let map = opts.scoring.mapping()?;
    let complexities = score_prompts(&opts.prompts, &engine, observer);
    let settings = opts.settings();
    let groups = opts.groups();
    // The heuristic scorer is deterministic: every part computes the same budgets, so the
    // split may use them; another scorer's would not agree between machines.
    let deterministic = opts.scoring.scorer == crate::complexity::ScorerKind::Heuristic;
    let costs: Vec<u64> = groups
        .iter()
        .map(|g| {
            opts.group_cost(
                &settings,
                g.scheduler,
                &map,
                deterministic.then(|| &complexities[g.pi]),
            )
        })
        .collect();
    let (in_part, record) = opts.part(&costs);
    let planned: Vec<String> = groups
        .iter()
        .zip(&in_part)
        .filter(|(_, i)| **i)
        .flat_map(|(g, _)| {
            settings
                .iter()
                .filter(|s| s.runs_on(g.scheduler, &settings))
                .map(move |s| run_id(g.pi, g.seed, g.scheduler.name(), &s.label))
        })
        .collect();
    let meta_path = out.join(BENCH_JSON);
    let mut meta = open_meta(opts, &meta_path, planned.len(), record)?;
    let done = done_runs(opts, &csv_path)?;
    let remaining = planned.iter().filter(|id| !done.contains_key(*id)).count();
    if remaining == 0 {
        crate::output::write_json(&meta_path, &meta)?;
        let rows = read_rows(&csv_path).unwrap_or_default();
        return report::write_reports_from(out, meta, &rows);
    }

    let model = pipeline::load_job_model(&opts.job, &observer.downloads())?;
    for note in model.messages() {
        observer.event(BenchEvent::Note(note));
    }
    meta.device = format!("{:?}", model.sd.device().location());
    meta.machine = Machine::detect();
    let clip = load_clip(opts, &model, &mut meta, observer);
    crate::output::write_json(&meta_path, &meta)?;

    let expected = planned.len();
    observer.event(BenchEvent::Planned {
        total: expected,
        done: expected - remaining,
    });
    let mut runner = Runner {
        opts,
        model: &model,
        clip: clip.as_ref(),
        map,
        settings,
        done: &done,
        csv: CsvAppender::open(&csv_path)?,
        observer,
        warmed: false,
    };
    let mut last_report = Instant::now();
    for (g, _) in groups.iter().zip(&in_part).filter(|(_, i)| **i) {
        if stop_requested() {
            break;
        }
        let group = Group {
            pi: g.pi,
            prompt: &opts.prompts[g.pi],
            complexity: &complexities[g.pi],
            seed: g.seed,
            scheduler: g.scheduler,
        };
        runner.run_group(&group, &mut meta)?;
        if last_report.elapsed() > Duration::from_secs(60) {
            let rows = read_rows(&csv_path)?;
            report::write_reports_from(out, meta.clone(), &rows)?;
            last_report = Instant::now();
        }
    }
    runner.observer.event(BenchEvent::Finished);
    crate::output::write_json(&meta_path, &meta)?;
    let rows = read_rows(&csv_path)?;
    report::write_reports_from(out, meta, &rows)
}

/// The complexity of every prompt (cheap for the heuristic; cached for Ollama); a fallback
/// of the requested scorer is said once.
fn score_prompts(
    prompts: &[BenchPrompt],
    engine: &ComplexityEngine,
    observer: &mut dyn BenchObserver,
) -> Vec<Complexity> {
    let mut warned = false;
    prompts
        .iter()
        .map(|p| {
            let c = engine.score(&p.text);
            if let Some(why) = c.fallback.as_ref().filter(|_| !warned) {
                observer.event(BenchEvent::ScorerFallback(why));
                warned = true;
            }
            c
        })
        .collect()
}

/// The benchmark's `bench.json`: the stored one when resuming (its settings, and a part's
/// plan, must match), else a new one. A part records the host of each start.
fn open_meta(
    opts: &BenchOptions,
    meta_path: &Path,
    expected_runs: usize,
    record: Option<ShardRecord>,
) -> Result<BenchMeta> {
    let bench_settings = opts.bench_settings();
    let record = record.map(|mut r| {
        r.hosts.push(super::shard::host_name());
        r.workdir = std::env::current_dir().ok();
        r
    });
    if opts.resume && meta_path.exists() {
        let text = std::fs::read_to_string(meta_path)?;
        let mut m: BenchMeta = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bench.json", meta_path.display()))?;
        check_same_settings(&m.settings, &bench_settings)?;
        match (&mut m.shard, record) {
            (None, None) => {}
            (Some(old), Some(new)) if old.plan_digest == new.plan_digest => {
                old.hosts.extend(new.hosts);
                old.args = new.args;
                old.workdir = new.workdir;
            }
            (Some(old), Some(new)) => bail!(
                "{} holds part {} of another plan (digest {}, now {}: the prompts' text changed, or another adiff version split it); use the original prompt file, or run this part into a fresh folder",
                meta_path.display(),
                old.shard(),
                old.plan_digest,
                new.plan_digest
            ),
            (old, new) => bail!(
                "{} holds {}, and this is {}; resume it the way it was run, or use another folder",
                meta_path.display(),
                old.as_ref().map_or("a whole benchmark".into(), |r| format!(
                    "part {}",
                    r.shard()
                )),
                new.as_ref().map_or("a whole benchmark".into(), |r| format!(
                    "part {}",
                    r.shard()
                )),
            ),
        }
        m.resumed_utc.push(utc_now());
        return Ok(m);
    }
    Ok(BenchMeta {
        adiff_version: env!("CARGO_PKG_VERSION").into(),
        command: opts.command.clone(),
        started_utc: utc_now(),
        resumed_utc: Vec::new(),
        machine: Machine::detect(),
        device: String::new(),
        image_size: None,
        settings: bench_settings,
        clip: ClipStatus {
            measured: false,
            model: None,
            note: "no run yet".into(),
        },
        expected_runs,
        shard: record,
        merged: None,
    })
}

/// The runs already in `runs.csv`, by run id; each must still be of the same prompt.
fn done_runs(opts: &BenchOptions, csv_path: &Path) -> Result<HashMap<String, RunRow>> {
    if !csv_path.exists() {
        return Ok(HashMap::new());
    }
    let done: HashMap<String, RunRow> = read_rows(csv_path)?
        .into_iter()
        .map(|r| (r.run_id.clone(), r))
        .collect();
    for r in done.values() {
        match opts.prompts.get(r.prompt_index) {
            Some(p) if p.text == r.prompt => {}
            _ => {
                return Err(FieldError::new(
                    Field::Out,
                    format!(
                        "runs.csv row {} has prompt #{} \"{}\", which is not prompt #{} of {} any more; use the original prompt file or another {NAME}",
                        r.run_id,
                        r.prompt_index,
                        r.prompt,
                        r.prompt_index,
                        opts.prompts_file.display()
                    ),
                )
                .into());
            }
        }
    }
    Ok(done)
}

/// The CLIP scorer, or why alignment is not measured (recorded in `meta`, and said).
fn load_clip(
    opts: &BenchOptions,
    model: &LoadedModel,
    meta: &mut BenchMeta,
    observer: &mut dyn BenchObserver,
) -> Option<ClipScorer> {
    let not_measured = |note: String| ClipStatus {
        measured: false,
        model: None,
        note,
    };
    let Some(src) = &opts.clip else {
        meta.clip = not_measured("not asked for".into());
        return None;
    };
    let hub = HubOptions::reporting(&observer.downloads());
    match ClipScorer::load(src, &hub, model.sd.device()) {
        Ok(c) => {
            meta.clip = ClipStatus {
                measured: true,
                model: Some(c.origin().to_string()),
                note: String::new(),
            };
            Some(c)
        }
        Err(e) => {
            let why = crate::field::one_line(&e, &crate::field::Plain);
            observer.event(BenchEvent::ClipUnavailable(&why));
            meta.clip = not_measured(format!("no CLIP weights could be loaded: {why}"));
            None
        }
    }
}

/// One prompt × seed × scheduler: the runs that share prepared inputs.
struct Group<'a> {
    pi: usize,
    prompt: &'a BenchPrompt,
    complexity: &'a Complexity,
    seed: u64,
    scheduler: SchedulerKind,
}

impl Group<'_> {
    fn run_id(&self, setting: &Setting) -> String {
        run_id(self.pi, self.seed, self.scheduler.name(), &setting.label)
    }
}

/// What one run measured.
struct Measured {
    output: Generation,
    peak_rss_mb: Option<f64>,
    clip_cosine: Option<f64>,
}

/// The reference a run is compared with: the baseline's image and CLIP cosine.
struct Reference<'a> {
    image: &'a RgbImage,
    clip_cosine: Option<f64>,
}

/// The baseline's work in a group: its calls and their multiply-accumulates.
#[derive(Debug, Clone, Copy)]
struct Work {
    calls: usize,
    macs: Option<u64>,
}

impl Work {
    fn of(row: &RunRow) -> Self {
        Self {
            calls: row.unet_calls,
            macs: row.unet_macs,
        }
    }

    /// The work of `row` in full baseline steps: its MACs over one full call's (partial
    /// calls, DeepCache's and T-GATE's, count for what they computed), or its calls when
    /// MACs were not counted.
    fn full_steps(&self, row: &RunRow) -> usize {
        match (self.macs, row.unet_macs) {
            (Some(base), Some(own)) if base > 0 && self.calls > 0 => {
                let per_call = base as f64 / self.calls as f64;
                (own as f64 / per_call).round() as usize
            }
            _ => row.unet_calls,
        }
    }
}

/// What the groups share.
struct Runner<'a> {
    opts: &'a BenchOptions,
    model: &'a LoadedModel,
    clip: Option<&'a ClipScorer>,
    map: BudgetMap,
    settings: Vec<Setting>,
    done: &'a HashMap<String, RunRow>,
    csv: CsvAppender,
    observer: &'a mut dyn BenchObserver,
    warmed: bool,
}

impl Runner<'_> {
    /// Run the group's missing runs: the baseline (or its saved image), then each setting.
    fn run_group(&mut self, g: &Group<'_>, meta: &mut BenchMeta) -> Result<()> {
        let ids: Vec<String> = self.settings.iter().map(|s| g.run_id(s)).collect();
        let runs: Vec<bool> = self
            .settings
            .iter()
            .map(|s| s.runs_on(g.scheduler, &self.settings))
            .collect();
        let all_done = ids
            .iter()
            .zip(&runs)
            .all(|(id, &r)| !r || self.done.contains_key(id));
        if all_done || stop_requested() {
            return Ok(());
        }
        let job = self.opts.job_for(g.prompt, g.seed, g.scheduler);
        let prepared = pipeline::prepare(self.model, &job).with_context(|| {
            format!(
                "prompt #{} ({}): \"{}\"",
                g.pi,
                g.prompt.origin,
                crate::field::cut(&g.prompt.text, 120)
            )
        })?;
        meta.image_size.get_or_insert(prepared.size);
        for warning in &prepared.warnings {
            self.observer.event(BenchEvent::PromptWarning {
                prompt: g.pi,
                warning,
            });
        }
        if !self.warmed {
            pipeline::warm_up(self.model, &job, &prepared)?;
            self.warmed = true;
        }
        let (base_image, base_cos, base_work) = self.baseline(g, &job, &prepared, &ids[0])?;
        let reference = Reference {
            image: &base_image,
            clip_cosine: base_cos,
        };
        let settings = self.settings.clone();
        // The work of each setting's run in this group, in full steps (a `steps:n=match`
        // control reads them).
        let mut calls: Vec<Option<usize>> = ids
            .iter()
            .map(|id| self.done.get(id).map(|r| base_work.full_steps(r)))
            .collect();
        for (k, (s, id)) in settings.iter().zip(&ids).enumerate().skip(1) {
            if self.done.contains_key(id) || !runs[k] {
                continue;
            }
            if stop_requested() {
                return Ok(());
            }
            let (pass, _) = s.pass(
                &job,
                &self.map,
                g.complexity,
                s.matched.and_then(|i| calls[i]),
            );
            let m = self.run_one(&job, &prepared, &pass)?;
            if self.opts.save_images {
                crate::output::write_png(&self.image_path(id), &m.output.image)?;
            }
            let row = make_row(g, s, &m, Some(&reference))?;
            calls[k] = Some(base_work.full_steps(&row));
            self.csv.append(&row)?;
            self.observer.event(BenchEvent::Ran(Some(&row)));
        }
        Ok(())
    }

    /// The image of run `id`; a method spec's `:`, `,` and `/` become `_` in the name.
    fn image_path(&self, id: &str) -> std::path::PathBuf {
        let name: String = id
            .chars()
            .map(|c| {
                if matches!(c, ':' | ',' | '/' | '\\') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        self.opts.out.join(IMAGES_DIR).join(format!("{name}.png"))
    }

    /// The group's baseline image, CLIP cosine and work: reloaded when it ran before, else
    /// run, saved and recorded.
    fn baseline(
        &mut self,
        g: &Group<'_>,
        job: &Job,
        prepared: &Prepared,
        id: &str,
    ) -> Result<(RgbImage, Option<f64>, Work)> {
        let png = self.image_path(id);
        let prev = self.done.get(id);
        if let Some(row) = prev
            && png.is_file()
        {
            let img = image::open(&png)
                .with_context(|| format!("cannot read {}", png.display()))?
                .to_rgb8();
            return Ok((img, row.clip_cosine, Work::of(row)));
        }
        let m = self.run_one(job, prepared, &job.baseline_pass())?;
        crate::output::write_png(&png, &m.output.image)?;
        let row = make_row(g, &self.settings[0], &m, None)?;
        if prev.is_none() {
            self.csv.append(&row)?;
            self.observer.event(BenchEvent::Ran(None));
        }
        Ok((m.output.image, m.clip_cosine, Work::of(&row)))
    }

    /// One run with its peak memory and CLIP alignment.
    fn run_one(&self, job: &Job, prepared: &Prepared, pass: &Pass) -> Result<Measured> {
        let rss = crate::proc_info::reset_peak_rss();
        let output = pipeline::generate(self.model, job, prepared, pass, &mut |_| {
            ControlFlow::Continue(())
        })?;
        let peak_rss_mb = if rss { peak_rss_mb() } else { None };
        let clip_cosine = match self.clip {
            Some(c) => Some(c.score(&output.image, &job.prompt)?.cosine),
            None => None,
        };
        Ok(Measured {
            output,
            peak_rss_mb,
            clip_cosine,
        })
    }
}

/// The `runs.csv` row of a run of `setting` in group `g`, compared with `reference` (none
/// for the baseline itself).
fn make_row(
    g: &Group<'_>,
    setting: &Setting,
    m: &Measured,
    reference: Option<&Reference<'_>>,
) -> Result<RunRow> {
    let t = &m.output.trace;
    let frames = &m.output.frames;
    let (psnr_db, ssim, video) = match reference {
        // A clip against the baseline's (its frames cut back out of its filmstrip, which
        // is all a resumed bench has of it).
        Some(r) if !frames.is_empty() => {
            let base = crate::output::clip::split(r.image, frames.len())?;
            let v = crate::pipeline::VideoQuality::of(&base, frames)?;
            (Some(v.psnr_clip_db()), Some(v.ssim_mean), Some(v))
        }
        Some(r) => (
            Some(crate::metrics::psnr(&m.output.image, r.image)?),
            Some(crate::metrics::ssim(&m.output.image, r.image)?),
            None,
        ),
        None => (None, None, None),
    };
    Ok(RunRow {
        run_id: g.run_id(setting),
        prompt_index: g.pi,
        prompt: g.prompt.text.clone(),
        grade: g.prompt.grade,
        complexity: Some(g.complexity.score),
        seed: g.seed,
        scheduler: g.scheduler.name().into(),
        setting: setting.label.clone(),
        mode: t.method.kind(),
        method: crate::job::method_spec::format(&t.method),
        unet_macs: t.unet_macs,
        unet_cost: t.unet_cost,
        delta: t.method.delta(),
        max_skips: t.method.max_skips(),
        early_stop: t.early_stop.is_some(),
        budget: t.budget,
        steps_run: t.steps_run,
        unet_calls: t.unet_calls,
        stopped_early_at: t.stopped_early_at,
        loop_ms: t.elapsed_ms,
        decode_ms: m.output.decode_ms,
        total_ms: t.elapsed_ms + m.output.decode_ms,
        peak_rss_mb: m.peak_rss_mb,
        psnr_db,
        ssim,
        clip_cosine: m.clip_cosine,
        clip_score: m
            .clip_cosine
            .map(|c| crate::metrics::ClipAlignment::from_cosine(c).clip_score),
        clip_delta: match (m.clip_cosine, reference.and_then(|r| r.clip_cosine)) {
            (Some(c), Some(b)) => Some(c - b),
            _ => None,
        },
        pattern: pattern(t),
        finished_at: utc_now(),
        frames: (!frames.is_empty()).then_some(frames.len()),
        psnr_frame_mean_db: video.as_ref().map(|v| v.psnr_mean_db),
        psnr_frame_worst_db: video.as_ref().map(|v| v.psnr_worst_db),
    })
}
