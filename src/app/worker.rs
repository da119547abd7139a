//! The background worker: a thread, a queue and a cache. One thread owns the device and the
//! loaded model, takes [`Command`]s over a crossbeam channel and streams [`Event`]s back
//! (the protocol is [`super::protocol`]), each tagged with the [`JobId`] it belongs to.
//!
//! Queue policy: a new `Generate` while a job runs supersedes it. The running job stops at
//! the next step boundary — except when it is still computing the very baseline the new job
//! needs (same model, prompt, negative prompt, seed, scheduler, steps, guidance and size):
//! then the baseline finishes (and lands in the cache), the old job's adaptive side is
//! skipped, and the new job starts with a cache hit. Baselines are cached by those settings,
//! so moving δ or C_max re-runs only the adaptive side; the right side's runs are cached
//! too, so a change to the left side alone re-runs only the left side.

use super::protocol::{Command, Event, JobId, ModelInfo, ReferenceComparison, Side, SideResult};
use super::worker_stats::{StatsSnapshot, WorkerStats};
use crate::complexity::{ComplexityBudget, ComplexityEngine, Scoring};
use crate::job::{BaselineKey, InputsKey, Job, ModelKey, Pass};
use crate::pipeline::{self, LoadedModel, Prepared};
use crate::sampler::{Cancelled, StepEvent};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many baselines the worker keeps.
const BASELINE_CACHE: usize = 8;

/// The UI's handle on the worker thread.
pub struct WorkerHandle {
    tx: Sender<Command>,
    rx: Receiver<Event>,
    stats: Arc<WorkerStats>,
    next_job: JobId,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Start the worker. `notify` is called after every event (the UI passes
    /// `request_repaint`).
    pub fn spawn(notify: impl Fn() + Send + 'static) -> Self {
        let (tx, cmd_rx) = crossbeam_channel::unbounded();
        let (ev_tx, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(WorkerStats::default());
        let worker = Worker {
            rx: cmd_rx,
            tx: ev_tx,
            notify: Box::new(notify),
            stats: stats.clone(),
            model: None,
            prepared: None,
            baselines: VecDeque::new(),
            methods: VecDeque::new(),
            pending: None,
            warmed_up: false,
            scorer: None,
        };
        let thread = std::thread::Builder::new()
            .name("adiff-worker".into())
            .spawn(move || worker.run())
            .ok();
        Self {
            tx,
            rx,
            stats,
            next_job: 1,
            thread,
        }
    }

    /// Submit a comparison; returns its id. A running job is superseded.
    pub fn submit(&mut self, spec: Job) -> JobId {
        let job = self.next_job;
        self.next_job += 1;
        let _ = self.tx.send(Command::Generate(job, Box::new(spec)));
        job
    }

    /// Ask the worker to stop `job` at the next step boundary.
    pub fn cancel(&self, job: JobId) {
        let _ = self.tx.send(Command::Cancel(job));
    }

    /// The next event, if any.
    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Whether the worker thread is still alive.
    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// What the worker has run so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        // The worker stops at the next step boundary; it is not joined so that closing the
        // window never waits for a long noise-predictor call.
        drop(self.thread.take());
    }
}

struct Worker {
    rx: Receiver<Command>,
    tx: Sender<Event>,
    notify: Box<dyn Fn() + Send>,
    stats: Arc<WorkerStats>,
    model: Option<(ModelKey, LoadedModel)>,
    prepared: Option<(InputsKey, Prepared)>,
    baselines: VecDeque<(BaselineKey, Arc<SideResult>)>,
    /// The right side's runs, by what makes them identical: a change to the left side
    /// alone never re-runs the right side.
    methods: VecDeque<(MethodKey, Arc<SideResult>)>,
    /// A command that arrived while a job ran.
    pending: Option<Command>,
    warmed_up: bool,
    scorer: Option<(Scoring, ComplexityEngine)>,
}

/// What makes two right-side runs identical: the inputs, the scheduler and the pass
/// (method, steps, early stop) as text (f64 settings make `Pass` not `Eq`).
type MethodKey = (InputsKey, crate::sampler::SchedulerKind, String);

/// Why a job stopped before the end.
enum Stop {
    Cancelled { superseded: bool },
    Shutdown,
}

/// What the step observer decided after looking at the command channel.
#[derive(Default)]
struct Inbox {
    cancel: bool,
    superseded: bool,
    shutdown: bool,
}

impl Worker {
    fn run(mut self) {
        super::thread_priority::lower_priority();
        loop {
            let cmd = match self.pending.take() {
                Some(c) => c,
                None => match self.rx.recv() {
                    Ok(c) => c,
                    Err(_) => return,
                },
            };
            match cmd {
                Command::Shutdown => return,
                Command::Cancel(_) => {}
                Command::Generate(job, spec) => {
                    self.stats.busy.store(true, Ordering::SeqCst);
                    WorkerStats::inc(&self.stats.jobs);
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.job(job, &spec)
                    }));
                    self.stats.busy.store(false, Ordering::SeqCst);
                    match outcome {
                        Ok(Ok(None)) => self.send(Event::Done { job }),
                        Ok(Ok(Some(Stop::Cancelled { superseded }))) => {
                            WorkerStats::inc(&self.stats.cancelled);
                            self.send(Event::Cancelled { job, superseded });
                        }
                        Ok(Ok(Some(Stop::Shutdown))) => return,
                        Ok(Err(e)) => {
                            WorkerStats::inc(&self.stats.failed);
                            self.send(Event::Failed {
                                job,
                                message: super::wording::one_line(&e),
                            });
                        }
                        Err(panic) => {
                            WorkerStats::inc(&self.stats.failed);
                            let what = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "unknown panic".into());
                            // A panic may leave the model in any state: drop it.
                            self.model = None;
                            self.prepared = None;
                            self.send(Event::Failed {
                                job,
                                message: format!("internal error in the worker: {what}"),
                            });
                        }
                    }
                }
            }
        }
    }

    fn send(&self, ev: Event) {
        let _ = self.tx.send(ev);
        (self.notify)();
    }

    /// Look at the command channel without blocking. A newer Generate is kept as pending.
    /// Jobs that were queued and dropped (replaced by a newer Generate, or cancelled before
    /// they started) are reported as cancelled through `tx`.
    fn poll_inbox(
        rx: &Receiver<Command>,
        tx: &Sender<Event>,
        stats: &WorkerStats,
        pending: &mut Option<Command>,
        job: JobId,
    ) -> Inbox {
        let mut inbox = Inbox::default();
        let drop_pending = |pending: &mut Option<Command>, superseded: bool| {
            if let Some(Command::Generate(old, _)) = pending.take() {
                WorkerStats::inc(&stats.cancelled);
                let _ = tx.send(Event::Cancelled {
                    job: old,
                    superseded,
                });
            }
        };
        let mut cancel_self = false;
        loop {
            match rx.try_recv() {
                Ok(Command::Generate(j, s)) => {
                    drop_pending(pending, true);
                    *pending = Some(Command::Generate(j, s));
                }
                Ok(Command::Cancel(j)) => {
                    if j == job {
                        cancel_self = true;
                    }
                    if matches!(pending, Some(Command::Generate(p, _)) if *p == j) {
                        drop_pending(pending, false);
                    }
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    drop_pending(pending, false);
                    inbox.shutdown = true;
                    *pending = Some(Command::Shutdown);
                    break;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        inbox.superseded = matches!(pending, Some(Command::Generate(..)));
        inbox.cancel = cancel_self || inbox.superseded || inbox.shutdown;
        inbox
    }

    fn stop_from(inbox: &Inbox) -> Stop {
        if inbox.shutdown {
            Stop::Shutdown
        } else {
            Stop::Cancelled {
                superseded: inbox.superseded,
            }
        }
    }

    /// Check between phases whether the job should go on.
    fn check(&mut self, job: JobId) -> Option<Stop> {
        let inbox = Self::poll_inbox(&self.rx, &self.tx, &self.stats, &mut self.pending, job);
        inbox.cancel.then(|| Self::stop_from(&inbox))
    }

    fn job(&mut self, job: JobId, spec: &Job) -> anyhow::Result<Option<Stop>> {
        spec.validate()?;
        self.ensure_model(job, spec)?;
        if spec.frames.is_some() {
            let (_, model) = self.model.as_ref().expect("model loaded");
            if !model.sd.is_video() {
                anyhow::bail!(
                    "{} makes images, not clips (no motion module was found for it): untick “Make a clip”, or choose a model that makes video",
                    super::export::short_model(&model.origin)
                );
            }
        }
        if let Some(stop) = self.check(job) {
            return Ok(Some(stop));
        }
        let budget = match &spec.budget {
            Some(scoring) => {
                let budget = self.complexity_budget(scoring, spec)?;
                self.send(Event::Budget {
                    job,
                    budget: Box::new(budget.clone()),
                });
                if let Some(stop) = self.check(job) {
                    return Ok(Some(stop));
                }
                Some(budget)
            }
            None => None,
        };
        self.prepare(job, spec)?;
        let baseline = match self.baseline(job, spec, Target::Side(Side::Baseline))? {
            Ok(r) => r,
            Err(stop) => return Ok(Some(stop)),
        };
        // A newer job that arrived during the baseline (and let it finish) takes over now.
        if let Some(Command::Generate(..)) = &self.pending {
            return Ok(Some(Stop::Cancelled { superseded: true }));
        }
        if let Some(stop) = self.check(job) {
            return Ok(Some(stop));
        }
        let pass = spec.method_pass(budget.as_ref());
        let key: MethodKey = (spec.inputs_key(), spec.scheduler, format!("{pass:?}"));
        let (adaptive, from_cache) = match cached(&self.methods, &key) {
            Some(r) => {
                WorkerStats::inc(&self.stats.method_cache_hits);
                (r, true)
            }
            None => {
                WorkerStats::inc(&self.stats.adaptive_runs);
                let r = match self.run_side(job, spec, Target::Side(Side::Adaptive), &pass)? {
                    Ok(r) => r,
                    Err(stop) => return Ok(Some(stop)),
                };
                keep(&mut self.methods, key, r.clone());
                (r, false)
            }
        };
        self.send(Event::Finished {
            job,
            result: adaptive.clone(),
            from_cache,
        });
        let comparison = super::quality::compare(&baseline, &adaptive)?;
        self.send(Event::Compared { job, comparison });
        // Two accelerated sides: both against the full-step baseline too (from the cache,
        // or run once). When the left side is it, nothing runs twice.
        if !pipeline::is_full_step(spec, &spec.baseline_pass()) {
            let reference = match self.reference(job, spec)? {
                Ok(r) => r,
                Err(stop) => return Ok(Some(stop)),
            };
            let left = super::quality::compare(&reference, &baseline)?;
            let right = super::quality::compare(&reference, &adaptive)?;
            self.send(Event::Referenced {
                job,
                reference: Box::new(ReferenceComparison {
                    reference,
                    left,
                    right,
                }),
            });
        }
        Ok(None)
    }

    /// The full-step baseline of the job's prompt, seed and scheduler: from the baseline
    /// cache (where a comparison whose left side was it left it), or run quietly (its steps
    /// reported as `ReferenceStep`) and cached; the inner `Err` is a stop.
    fn reference(
        &mut self,
        job: JobId,
        spec: &Job,
    ) -> anyhow::Result<Result<Arc<SideResult>, Stop>> {
        let full = Job {
            reference: crate::sampler::Method::BASELINE,
            ..spec.clone()
        };
        self.baseline(job, &full, Target::Reference)
    }

    /// Encode the prompt and make the initial noise, unless the last job's are the same;
    /// warm the model up once.
    fn prepare(&mut self, job: JobId, spec: &Job) -> anyhow::Result<()> {
        let key = spec.inputs_key();
        let (_, model) = self.model.as_ref().expect("model loaded before");
        if self.prepared.as_ref().is_none_or(|(k, _)| *k != key) {
            self.prepared = None;
            let prepared = pipeline::prepare(model, spec)?;
            for w in &prepared.warnings {
                let message = super::wording::one_line(&anyhow::Error::new(w.clone()));
                self.send(Event::Warning { job, message });
            }
            self.prepared = Some((key, prepared));
        }
        if !self.warmed_up {
            let (_, model) = self.model.as_ref().expect("model loaded before");
            let (_, prepared) = self.prepared.as_ref().expect("prepared above");
            pipeline::warm_up(model, spec, prepared)?;
            self.warmed_up = true;
        }
        Ok(())
    }

    /// The job's baseline (its left side, or with `Target::Reference` the quiet full-step
    /// reference): from the cache, or run (and cached); the inner `Err` is a stop. Only a
    /// side reports that it finished.
    fn baseline(
        &mut self,
        job: JobId,
        spec: &Job,
        target: Target,
    ) -> anyhow::Result<Result<Arc<SideResult>, Stop>> {
        let key = spec.baseline_key();
        let (r, from_cache) = match cached(&self.baselines, &key) {
            Some(r) => {
                WorkerStats::inc(&self.stats.baseline_cache_hits);
                (r, true)
            }
            None => {
                WorkerStats::inc(&self.stats.baseline_runs);
                let r = match self.run_side(job, spec, target, &spec.baseline_pass())? {
                    Ok(r) => r,
                    Err(stop) => return Ok(Err(stop)),
                };
                keep(&mut self.baselines, key, r.clone());
                (r, false)
            }
        };
        if let Target::Side(_) = target {
            self.send(Event::Finished {
                job,
                result: r.clone(),
                from_cache,
            });
        }
        Ok(Ok(r))
    }

    /// Score the prompt and choose the method's budget (the engine, and so the scorer's
    /// verdicts, are kept while the scoring settings stay the same).
    fn complexity_budget(
        &mut self,
        scoring: &Scoring,
        spec: &Job,
    ) -> anyhow::Result<ComplexityBudget> {
        if self.scorer.as_ref().is_none_or(|(s, _)| s != scoring) {
            self.scorer = Some((scoring.clone(), scoring.engine()?));
        }
        let (_, engine) = self.scorer.as_ref().expect("set above");
        let map = scoring.mapping()?;
        Ok(Scoring::decide(
            engine,
            &map,
            &spec.prompt,
            spec.steps,
            spec.method,
        ))
    }

    fn ensure_model(&mut self, job: JobId, spec: &Job) -> anyhow::Result<()> {
        let key = spec.model_key();
        if self.model.as_ref().is_some_and(|(k, _)| *k == key) {
            return Ok(());
        }
        // Free the old model before loading the next one.
        self.model = None;
        self.prepared = None;
        self.warmed_up = false;
        self.send(Event::Loading {
            job,
            model: spec.model.to_string(),
        });
        // Download progress goes through the event channel only; the UI repaints on a timer
        // while loading.
        let downloads = super::downloads::reporter(job, self.tx.clone());
        let model = pipeline::load_job_model(spec, &downloads)?;
        if let Some(note) = &model.device_note {
            self.send(Event::Warning {
                job,
                message: note.clone(),
            });
        }
        WorkerStats::inc(&self.stats.model_loads);
        let info = ModelInfo {
            origin: model.origin.clone(),
            device: format!("{:?}", model.sd.device().location()),
            precision: model.sd.precision(),
            load_ms: model.load_ms,
            native_size: model.sd.default_size(),
            sdxl: model.sd.family() == crate::model::Family::Sdxl,
            notes: model
                .sd
                .notes()
                .iter()
                .map(|n| n.worded(&super::wording::Controls))
                .collect(),
        };
        self.model = Some((key, model));
        self.send(Event::ModelReady { job, info });
        Ok(())
    }

    /// Run one side (or the quiet full-step reference); the inner `Err` is a cancel (or
    /// shutdown) between two steps.
    fn run_side(
        &mut self,
        job: JobId,
        spec: &Job,
        target: Target,
        pass: &Pass,
    ) -> anyhow::Result<Result<Arc<SideResult>, Stop>> {
        let baseline_key: BaselineKey = spec.baseline_key();
        let (_, model) = self.model.as_ref().expect("model loaded");
        let (_, prepared) = self.prepared.as_ref().expect("prepared");
        // The reference is a baseline run; its steps are reported as progress only.
        let side = match target {
            Target::Side(side) => side,
            Target::Reference => Side::Baseline,
        };
        if let Target::Side(side) = target {
            self.send(Event::Started {
                job,
                side,
                budget: pass.steps,
            });
        }
        let sdxl = model.sd.family() == crate::model::Family::Sdxl;
        let rx = &self.rx;
        let tx = &self.tx;
        let notify = &self.notify;
        let stats = &*self.stats;
        let pending = &mut self.pending;
        let mut inbox = Inbox::default();
        let mut last_preview: Option<Instant> = None;
        let mut observe = |ev: StepEvent<'_>| -> ControlFlow<()> {
            let last = ev.record.index + 1 >= ev.budget;
            if target == Target::Reference {
                let _ = tx.send(Event::ReferenceStep {
                    job,
                    done: ev.record.index + 1,
                    steps: ev.budget,
                });
                notify();
                let new = Self::poll_inbox(rx, tx, stats, pending, job);
                inbox.cancel |= new.cancel;
                inbox.superseded |= new.superseded;
                inbox.shutdown |= new.shutdown;
                return if inbox.cancel {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                };
            }
            let due = last_preview.is_none_or(|t| t.elapsed() >= Duration::from_millis(80));
            let (mut preview, mut preview_frames) = (None, None);
            if due || last {
                last_preview = Some(Instant::now());
                // A clip's latents have a frame axis: one cheap picture per frame.
                if ev.pred_x0.rank() == 5 {
                    preview_frames = super::preview::latent_preview_frames(ev.pred_x0, sdxl)
                        .ok()
                        .map(Arc::new);
                } else {
                    preview = super::preview::latent_preview(ev.pred_x0, sdxl)
                        .ok()
                        .map(Arc::new);
                }
            }
            let _ = tx.send(Event::Step {
                job,
                side,
                record: ev.record.clone(),
                preview,
                preview_frames,
            });
            notify();
            if !inbox.cancel || inbox.superseded {
                let new = Self::poll_inbox(rx, tx, stats, pending, job);
                inbox.cancel |= new.cancel;
                inbox.superseded = new.superseded;
                inbox.shutdown |= new.shutdown;
            }
            // A newer job that needs exactly this baseline lets it finish.
            let keep_going = target == Target::Side(Side::Baseline)
                && inbox.superseded
                && !inbox.shutdown
                && matches!(&*pending, Some(Command::Generate(_, s)) if s.baseline_key() == baseline_key);
            if inbox.cancel && !keep_going {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let out = pipeline::generate(model, spec, prepared, pass, &mut observe);
        match out {
            Ok(g) => Ok(Ok(Arc::new(SideResult {
                side,
                image: g.image,
                frames: Arc::new(g.frames),
                trace: g.trace,
                decode_ms: g.decode_ms,
                model: model.origin.clone(),
                computed_at: Instant::now(),
            }))),
            Err(e) if e.downcast_ref::<Cancelled>().is_some() => Ok(Err(Self::stop_from(&inbox))),
            Err(e) => Err(e),
        }
    }
}

/// The result kept under `key`, if any.
fn cached<K: PartialEq>(
    cache: &VecDeque<(K, Arc<SideResult>)>,
    key: &K,
) -> Option<Arc<SideResult>> {
    cache.iter().find(|(k, _)| k == key).map(|(_, r)| r.clone())
}

/// Keep `r` under `key`, newest first, the oldest dropped past [`BASELINE_CACHE`].
fn keep<K: PartialEq>(cache: &mut VecDeque<(K, Arc<SideResult>)>, key: K, r: Arc<SideResult>) {
    cache.retain(|(k, _)| *k != key);
    cache.push_front((key, r));
    cache.truncate(BASELINE_CACHE);
}

/// What a run is for: one of the two sides, or the full-step reference of two
/// accelerated sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Side(Side),
    Reference,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSource;

    fn spec() -> Job {
        let mut j = Job::new(ModelSource::Local("x".into()), "a fox");
        j.force_cpu = true;
        j.steps = 10;
        j
    }

    #[test]
    fn queued_jobs_that_are_replaced_or_cancelled_are_reported() {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
        let stats = WorkerStats::default();
        let mut pending = None;
        cmd_tx.send(Command::Generate(5, Box::new(spec()))).unwrap();
        cmd_tx.send(Command::Generate(6, Box::new(spec()))).unwrap();
        let inbox = Worker::poll_inbox(&cmd_rx, &ev_tx, &stats, &mut pending, 1);
        assert!(inbox.cancel && inbox.superseded && !inbox.shutdown);
        assert!(matches!(pending, Some(Command::Generate(6, _))));
        assert!(matches!(
            ev_rx.try_recv(),
            Ok(Event::Cancelled {
                job: 5,
                superseded: true
            })
        ));
        // Cancelling the queued job drops it; the running job 1 goes on.
        cmd_tx.send(Command::Cancel(6)).unwrap();
        let inbox = Worker::poll_inbox(&cmd_rx, &ev_tx, &stats, &mut pending, 1);
        assert!(!inbox.cancel && !inbox.superseded);
        assert!(pending.is_none());
        assert!(matches!(
            ev_rx.try_recv(),
            Ok(Event::Cancelled {
                job: 6,
                superseded: false
            })
        ));
        cmd_tx.send(Command::Cancel(1)).unwrap();
        assert!(Worker::poll_inbox(&cmd_rx, &ev_tx, &stats, &mut pending, 1).cancel);
        assert_eq!(stats.snapshot().cancelled, 2);
    }

    #[test]
    fn a_failing_job_reports_an_error_and_the_worker_survives() {
        let mut w = WorkerHandle::spawn(|| {});
        let mut bad = spec();
        bad.model = ModelSource::Local("/nonexistent/model/folder".into());
        let job = w.submit(bad);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut failed = None;
        while Instant::now() < deadline && failed.is_none() {
            match w.try_recv() {
                Some(Event::Failed { job: j, message }) => failed = Some((j, message)),
                Some(_) => {}
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let (j, message) = failed.expect("a Failed event");
        assert_eq!(j, job);
        assert!(message.contains("/nonexistent/model/folder"), "{message}");
        assert!(w.is_alive());
        assert_eq!(w.stats().failed, 1);
    }
}
