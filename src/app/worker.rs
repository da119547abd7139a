//! The background worker: one thread owns the device and the loaded model, takes
//! [`Command`]s over a crossbeam channel and streams [`Event`]s back, each tagged with the
//! [`JobId`] it belongs to. The UI never touches candle: events carry plain data (RGB
//! images, [`StepRecord`]s, strings).
//!
//! Queue policy: a new `Generate` while a job runs supersedes it. The running job stops at
//! the next step boundary — except when it is still computing the very baseline the new job
//! needs (same model, prompt, negative prompt, seed, scheduler, steps, guidance and size):
//! then the baseline finishes (and lands in the cache), the old job's adaptive side is
//! skipped, and the new job starts with a cache hit. Baselines are cached by those settings,
//! so moving δ or C_max re-runs only the adaptive side.

use crate::complexity::{ComplexityBudget, ComplexityEngine, ScorerKind, ScoringArgs};
use crate::model::ModelSource;
use crate::pipeline::{self, LoadedModel, Prepared, Request};
use crate::sampler::{
    Cancelled, EarlyStop, RunTrace, SchedulerKind, SkipPolicy, StepEvent, StepRecord,
};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use image::RgbImage;
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Identifies one Generate request; every event carries the id of the job it belongs to.
pub type JobId = u64;

/// How many baselines the worker keeps.
const BASELINE_CACHE: usize = 8;

/// Everything one comparison needs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Where the weights come from.
    pub model: ModelSource,
    /// Stay on the CPU even when a GPU is available.
    pub force_cpu: bool,
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
    /// Width in pixels (None: the model's native size).
    pub width: Option<usize>,
    /// Height in pixels (None: the model's native size).
    pub height: Option<usize>,
    /// δ of the adaptive side.
    pub delta: f64,
    /// C_max of the adaptive side.
    pub max_skips: usize,
    /// Early stop of the adaptive side.
    pub early_stop: Option<EarlyStop>,
    /// Take the adaptive side's step budget from the prompt's complexity (the baseline
    /// keeps `steps`).
    pub complexity: Option<ComplexitySetup>,
}

/// Which complexity scorer decides the adaptive step budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ComplexitySetup {
    /// Heuristic (offline) or Ollama (falls back to the heuristic, visibly).
    pub scorer: ScorerKind,
    /// Ollama server.
    pub ollama_url: String,
    /// Ollama model.
    pub ollama_model: String,
    /// Also scale δ and C_max with the complexity level.
    pub scale_policy: bool,
}

impl ComplexitySetup {
    fn args(&self) -> ScoringArgs {
        ScoringArgs {
            scorer: self.scorer,
            ollama_url: self.ollama_url.clone(),
            ollama_model: self.ollama_model.clone(),
            ollama_timeout: crate::complexity::ollama::DEFAULT_TIMEOUT_S,
            budget_map: None,
            scale_policy: self.scale_policy,
        }
    }
}

impl JobSpec {
    /// The adaptive side's skip policy.
    pub fn policy(&self) -> SkipPolicy {
        SkipPolicy::Adaptive {
            delta: self.delta,
            max_skips: self.max_skips,
        }
    }

    /// The key of the baseline this job needs.
    pub fn baseline_key(&self) -> BaselineKey {
        BaselineKey {
            model: self.model_key(),
            prompt: self.prompt.clone(),
            negative: self.negative.clone(),
            seed: self.seed,
            scheduler: self.scheduler,
            steps: self.steps,
            guidance_bits: self.guidance.to_bits(),
            width: self.width,
            height: self.height,
        }
    }

    fn model_key(&self) -> ModelKey {
        ModelKey {
            source: self.model.clone(),
            force_cpu: self.force_cpu,
        }
    }

    fn prepare_key(&self) -> PrepareKey {
        PrepareKey {
            model: self.model_key(),
            prompt: self.prompt.clone(),
            negative: self.negative.clone(),
            guidance_bits: self.guidance.to_bits(),
            seed: self.seed,
            width: self.width,
            height: self.height,
        }
    }

    /// The pipeline request of this job.
    pub fn request(&self) -> Request {
        Request {
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            negative: self.negative.clone(),
            scheduler: self.scheduler,
            steps: self.steps,
            guidance: self.guidance,
            seed: self.seed,
            width: self.width,
            height: self.height,
            policy: self.policy(),
            early_stop: self.early_stop,
            init_latents: None,
            // The GUI truncates with a visible note rather than refusing to run.
            truncate: true,
            force_cpu: self.force_cpu,
            dtype: None,
            budget: None,
        }
    }

    /// Check the settings before anything is sent to the worker.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.prompt.trim().is_empty() {
            anyhow::bail!("the prompt is empty: describe the image to generate");
        }
        if self.steps == 0 {
            anyhow::bail!("steps must be at least 1");
        }
        for (what, v) in [("width", self.width), ("height", self.height)] {
            if let Some(v) = v
                && (v == 0 || v % 8 != 0)
            {
                anyhow::bail!("{what} {v} is not a positive multiple of 8");
            }
        }
        if !(self.guidance.is_finite() && self.guidance >= 0.0) {
            anyhow::bail!("guidance must be a finite number ≥ 0");
        }
        self.policy().validate()?;
        if let Some(es) = &self.early_stop {
            es.validate()?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelKey {
    source: ModelSource,
    force_cpu: bool,
}

/// What makes two baselines identical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineKey {
    model: ModelKey,
    prompt: String,
    negative: String,
    seed: u64,
    scheduler: SchedulerKind,
    steps: usize,
    guidance_bits: u64,
    width: Option<usize>,
    height: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PrepareKey {
    model: ModelKey,
    prompt: String,
    negative: String,
    guidance_bits: u64,
    seed: u64,
    width: Option<usize>,
    height: Option<usize>,
}

/// Which pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Every step calls the noise predictor.
    Baseline,
    /// Third-order step skipping.
    Adaptive,
}

impl Side {
    /// `"baseline"` or `"adaptive"`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Baseline => "baseline",
            Side::Adaptive => "adaptive",
        }
    }
}

/// What the worker tells the UI about the loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Where it came from.
    pub origin: String,
    /// Device, e.g. `Cpu` or `Cuda`.
    pub device: String,
    /// Load time, milliseconds.
    pub load_ms: f64,
    /// The model's native image size (width, height).
    pub native_size: (usize, usize),
    /// SDXL (two text encoders) or not.
    pub sdxl: bool,
}

/// One finished side.
#[derive(Debug, Clone)]
pub struct SideResult {
    /// Which side.
    pub side: Side,
    /// The decoded image.
    pub image: RgbImage,
    /// The run's trace.
    pub trace: RunTrace,
    /// VAE decode time, milliseconds.
    pub decode_ms: f64,
    /// Model origin.
    pub model: String,
}

/// Adaptive vs baseline, computed on the worker once both sides are done.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// PSNR of the adaptive image against the baseline, dB.
    pub psnr_db: f64,
    /// SSIM of the adaptive image against the baseline (when the metric is available).
    pub ssim: Option<f64>,
    /// |adaptive − baseline| per channel.
    pub diff: Arc<RgbImage>,
}

/// Commands to the worker.
#[derive(Debug, Clone)]
pub enum Command {
    /// Run a comparison; supersedes whatever runs.
    Generate(JobId, Box<JobSpec>),
    /// Stop this job at the next step boundary.
    Cancel(JobId),
    /// Stop the worker.
    Shutdown,
}

/// Events from the worker, each tagged with its job.
#[derive(Debug, Clone)]
pub enum Event {
    /// The job's model is being loaded (or downloaded).
    Loading {
        /// The job.
        job: JobId,
        /// The model being loaded.
        model: String,
    },
    /// Download progress of a hub model, polled from the Hugging Face cache.
    Download {
        /// The job.
        job: JobId,
        /// Files of the model already in the cache.
        files_done: usize,
        /// Files the model needs.
        files_total: usize,
        /// Bytes in the repository's cache folder (finished and partial files).
        bytes: u64,
    },
    /// The model is loaded.
    ModelReady {
        /// The job.
        job: JobId,
        /// About the model.
        info: ModelInfo,
    },
    /// Something the user should know about the job (not an error).
    Warning {
        /// The job.
        job: JobId,
        /// The message.
        message: String,
    },
    /// The prompt's complexity and the adaptive budget chosen from it.
    Budget {
        /// The job.
        job: JobId,
        /// Score, scorer (and any fallback) and budget.
        budget: Box<ComplexityBudget>,
    },
    /// A side starts (from scratch, not from the cache).
    Started {
        /// The job.
        job: JobId,
        /// Which side.
        side: Side,
        /// The step budget.
        budget: usize,
    },
    /// A side finished one step.
    Step {
        /// The job.
        job: JobId,
        /// Which side.
        side: Side,
        /// The step's numbers.
        record: StepRecord,
        /// A cheap preview of the predicted clean image, now and then.
        preview: Option<Arc<RgbImage>>,
    },
    /// A side is done.
    Finished {
        /// The job.
        job: JobId,
        /// The result.
        result: Arc<SideResult>,
        /// Served from the baseline cache.
        from_cache: bool,
    },
    /// Both sides are done; the quality numbers.
    Compared {
        /// The job.
        job: JobId,
        /// The numbers.
        comparison: Comparison,
    },
    /// The job is complete.
    Done {
        /// The job.
        job: JobId,
    },
    /// The job stopped early: cancelled, or superseded by a newer job.
    Cancelled {
        /// The job.
        job: JobId,
        /// Superseded by a newer Generate (rather than an explicit cancel).
        superseded: bool,
    },
    /// The job failed.
    Failed {
        /// The job.
        job: JobId,
        /// What went wrong, on one line.
        message: String,
    },
}

impl Event {
    /// The job an event belongs to.
    pub fn job(&self) -> JobId {
        match self {
            Event::Loading { job, .. }
            | Event::Download { job, .. }
            | Event::ModelReady { job, .. }
            | Event::Budget { job, .. }
            | Event::Warning { job, .. }
            | Event::Started { job, .. }
            | Event::Step { job, .. }
            | Event::Finished { job, .. }
            | Event::Compared { job, .. }
            | Event::Done { job }
            | Event::Cancelled { job, .. }
            | Event::Failed { job, .. } => *job,
        }
    }
}

/// Counters of what the worker actually ran (tests and the debug overlay read them).
#[derive(Debug, Default)]
pub struct WorkerStats {
    jobs: AtomicUsize,
    model_loads: AtomicUsize,
    baseline_runs: AtomicUsize,
    baseline_cache_hits: AtomicUsize,
    adaptive_runs: AtomicUsize,
    cancelled: AtomicUsize,
    failed: AtomicUsize,
    busy: AtomicBool,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Generate commands started.
    pub jobs: usize,
    /// Models loaded.
    pub model_loads: usize,
    /// Baseline runs started (not counting cache hits).
    pub baseline_runs: usize,
    /// Baselines served from the cache.
    pub baseline_cache_hits: usize,
    /// Adaptive runs started.
    pub adaptive_runs: usize,
    /// Jobs cancelled or superseded.
    pub cancelled: usize,
    /// Jobs failed.
    pub failed: usize,
    /// A job is being processed right now.
    pub busy: bool,
}

impl WorkerStats {
    fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicUsize| a.load(Ordering::SeqCst);
        StatsSnapshot {
            jobs: g(&self.jobs),
            model_loads: g(&self.model_loads),
            baseline_runs: g(&self.baseline_runs),
            baseline_cache_hits: g(&self.baseline_cache_hits),
            adaptive_runs: g(&self.adaptive_runs),
            cancelled: g(&self.cancelled),
            failed: g(&self.failed),
            busy: self.busy.load(Ordering::SeqCst),
        }
    }

    fn inc(a: &AtomicUsize) {
        a.fetch_add(1, Ordering::SeqCst);
    }
}

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
    pub fn submit(&mut self, spec: JobSpec) -> JobId {
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
    prepared: Option<(PrepareKey, Prepared)>,
    baselines: VecDeque<(BaselineKey, Arc<SideResult>)>,
    /// A command that arrived while a job ran.
    pending: Option<Command>,
    warmed_up: bool,
    scorer: Option<(ComplexitySetup, ComplexityEngine)>,
}

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

/// Run the model at a lower scheduling priority than the UI (Linux: nice 10 for this
/// thread and the compute threads it spawns, e.g. rayon's pool), so that the window keeps
/// drawing while every core computes. `ADIFF_WORKER_NICE` overrides the value (0: off).
fn lower_priority() {
    let nice: i32 = std::env::var("ADIFF_WORKER_NICE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(10);
    #[cfg(target_os = "linux")]
    if nice != 0 {
        // SAFETY: setpriority has no memory-safety preconditions; on Linux, `who = 0` with
        // PRIO_PROCESS applies to the calling thread only.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, nice) };
        if rc != 0 {
            tracing::debug!("could not lower the worker's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

impl Worker {
    fn run(mut self) {
        lower_priority();
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
                                message: crate::cli::one_line(&e),
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

    fn job(&mut self, job: JobId, spec: &JobSpec) -> anyhow::Result<Option<Stop>> {
        spec.validate()?;
        self.ensure_model(job, spec)?;
        if let Some(stop) = self.check(job) {
            return Ok(Some(stop));
        }
        let mut req = spec.request();
        if let Some(setup) = &spec.complexity {
            let budget = self.complexity_budget(setup, spec)?;
            self.send(Event::Budget {
                job,
                budget: Box::new(budget.clone()),
            });
            req.budget = Some(budget);
            if let Some(stop) = self.check(job) {
                return Ok(Some(stop));
            }
        }
        let prep_key = spec.prepare_key();
        if self.prepared.as_ref().is_none_or(|(k, _)| *k != prep_key) {
            self.prepared = None;
            let (_, model) = self.model.as_ref().expect("model loaded above");
            let prepared = pipeline::prepare(model, &req)?;
            for message in &prepared.warnings {
                self.send(Event::Warning {
                    job,
                    message: message.clone(),
                });
            }
            self.prepared = Some((prep_key, prepared));
        }
        if !self.warmed_up {
            let (_, model) = self.model.as_ref().expect("model loaded above");
            let (_, prepared) = self.prepared.as_ref().expect("prepared above");
            pipeline::warm_up(model, &req, prepared)?;
            self.warmed_up = true;
        }

        // Baseline: from the cache, or run it.
        let key = spec.baseline_key();
        let cached = self
            .baselines
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, r)| r.clone());
        let baseline = match cached {
            Some(r) => {
                WorkerStats::inc(&self.stats.baseline_cache_hits);
                self.send(Event::Finished {
                    job,
                    result: r.clone(),
                    from_cache: true,
                });
                r
            }
            None => {
                WorkerStats::inc(&self.stats.baseline_runs);
                match self.run_side(job, &req, Side::Baseline, SkipPolicy::Baseline, None, &key)? {
                    Ok(r) => {
                        self.baselines.retain(|(k, _)| *k != key);
                        self.baselines.push_front((key.clone(), r.clone()));
                        self.baselines.truncate(BASELINE_CACHE);
                        self.send(Event::Finished {
                            job,
                            result: r.clone(),
                            from_cache: false,
                        });
                        r
                    }
                    Err(stop) => return Ok(Some(stop)),
                }
            }
        };
        // A newer job that arrived during the baseline (and let it finish) takes over now.
        if let Some(Command::Generate(..)) = &self.pending {
            return Ok(Some(Stop::Cancelled { superseded: true }));
        }
        if let Some(stop) = self.check(job) {
            return Ok(Some(stop));
        }

        WorkerStats::inc(&self.stats.adaptive_runs);
        let policy = match &req.budget {
            Some(b) => b.budget.policy(),
            None => spec.policy(),
        };
        let adaptive =
            match self.run_side(job, &req, Side::Adaptive, policy, spec.early_stop, &key)? {
                Ok(r) => r,
                Err(stop) => return Ok(Some(stop)),
            };
        self.send(Event::Finished {
            job,
            result: adaptive.clone(),
            from_cache: false,
        });
        let comparison = compare(&baseline.image, &adaptive.image)?;
        self.send(Event::Compared { job, comparison });
        Ok(None)
    }

    /// Score the prompt and choose the adaptive budget (scorer verdicts are cached).
    fn complexity_budget(
        &mut self,
        setup: &ComplexitySetup,
        spec: &JobSpec,
    ) -> anyhow::Result<ComplexityBudget> {
        let args = setup.args();
        if self.scorer.as_ref().is_none_or(|(s, _)| s != setup) {
            self.scorer = Some((setup.clone(), args.engine()?));
        }
        let (_, engine) = self.scorer.as_ref().expect("set above");
        let complexity = engine.score(&spec.prompt);
        let budget = args
            .mapping()?
            .decide(complexity.score, spec.steps, spec.policy());
        Ok(ComplexityBudget { complexity, budget })
    }

    fn ensure_model(&mut self, job: JobId, spec: &JobSpec) -> anyhow::Result<()> {
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
        let poller = match &spec.model {
            ModelSource::Hub(m) => Some(DownloadPoller::start(
                *m,
                job,
                self.tx.clone(),
                // The poller's notifications go through the event channel only; the UI
                // repaints on a timer while loading.
            )),
            ModelSource::Local(_) => None,
        };
        let loaded = pipeline::load_model(&spec.model, spec.force_cpu, None);
        drop(poller);
        let model = loaded?;
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
            load_ms: model.load_ms,
            native_size: model.sd.default_size(),
            sdxl: model.sd.family() == crate::model::Family::Sdxl,
        };
        self.model = Some((key, model));
        self.send(Event::ModelReady { job, info });
        Ok(())
    }

    /// Run one side; the inner `Err` is a cancel (or shutdown) between two steps.
    fn run_side(
        &mut self,
        job: JobId,
        req: &Request,
        side: Side,
        policy: SkipPolicy,
        early_stop: Option<EarlyStop>,
        baseline_key: &BaselineKey,
    ) -> anyhow::Result<Result<Arc<SideResult>, Stop>> {
        let (_, model) = self.model.as_ref().expect("model loaded");
        let (_, prepared) = self.prepared.as_ref().expect("prepared");
        self.send(Event::Started {
            job,
            side,
            budget: req.steps_for(&policy),
        });
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
            let due = last_preview.is_none_or(|t| t.elapsed() >= Duration::from_millis(80));
            let preview = if due || last {
                last_preview = Some(Instant::now());
                super::preview::latent_preview(ev.pred_x0, sdxl)
                    .ok()
                    .map(Arc::new)
            } else {
                None
            };
            let _ = tx.send(Event::Step {
                job,
                side,
                record: ev.record.clone(),
                preview,
            });
            notify();
            if !inbox.cancel || inbox.superseded {
                let new = Self::poll_inbox(rx, tx, stats, pending, job);
                inbox.cancel |= new.cancel;
                inbox.superseded = new.superseded;
                inbox.shutdown |= new.shutdown;
            }
            // A newer job that needs exactly this baseline lets it finish.
            let keep_going = side == Side::Baseline
                && inbox.superseded
                && !inbox.shutdown
                && matches!(&*pending, Some(Command::Generate(_, s)) if s.baseline_key() == *baseline_key);
            if inbox.cancel && !keep_going {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let out = pipeline::generate(model, req, prepared, policy, early_stop, &mut observe);
        match out {
            Ok(g) => Ok(Ok(Arc::new(SideResult {
                side,
                image: g.image,
                trace: g.trace,
                decode_ms: g.decode_ms,
                model: model.origin.clone(),
            }))),
            Err(e) if e.downcast_ref::<Cancelled>().is_some() => Ok(Err(Self::stop_from(&inbox))),
            Err(e) => Err(e),
        }
    }
}

/// PSNR (and SSIM when the metric exists) plus the difference image.
fn compare(baseline: &RgbImage, adaptive: &RgbImage) -> anyhow::Result<Comparison> {
    let psnr_db = crate::metrics::psnr(adaptive, baseline)?;
    let ssim = ssim(adaptive, baseline);
    let diff = RgbImage::from_fn(baseline.width(), baseline.height(), |x, y| {
        let a = adaptive.get_pixel(x, y).0;
        let b = baseline.get_pixel(x, y).0;
        image::Rgb([
            a[0].abs_diff(b[0]),
            a[1].abs_diff(b[1]),
            a[2].abs_diff(b[2]),
        ])
    });
    Ok(Comparison {
        psnr_db,
        ssim,
        diff: Arc::new(diff),
    })
}

/// SSIM of the adaptive image against the baseline (`None` when it cannot be computed,
/// e.g. for images smaller than the 11×11 window).
fn ssim(adaptive: &RgbImage, baseline: &RgbImage) -> Option<f64> {
    crate::metrics::ssim(adaptive, baseline).ok()
}

/// Polls the Hugging Face cache folder of a hub model while it downloads.
struct DownloadPoller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DownloadPoller {
    fn start(model: crate::model::HubModel, job: JobId, tx: Sender<Event>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("adiff-download-poll".into())
            .spawn(move || {
                let Ok(cache_dir) = crate::model::HubOptions::default().resolved_cache_dir() else {
                    return;
                };
                let files = model.files();
                let repo_dir: PathBuf =
                    cache_dir.join(format!("models--{}", model.repo().replace('/', "--")));
                let cache = hf_hub::Cache::new(cache_dir);
                let cached = cache.model(model.repo().to_string());
                while !flag.load(Ordering::SeqCst) {
                    let files_done = files.iter().filter(|f| cached.get(f).is_some()).count();
                    let bytes = dir_size(&repo_dir.join("blobs"));
                    if tx
                        .send(Event::Download {
                            job,
                            files_done,
                            files_total: files.len(),
                            bytes,
                        })
                        .is_err()
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for DownloadPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            model: ModelSource::Local("x".into()),
            force_cpu: true,
            prompt: "a fox".into(),
            negative: String::new(),
            scheduler: SchedulerKind::Ddim,
            steps: 10,
            guidance: 7.5,
            seed: 1,
            width: None,
            height: None,
            delta: 0.01,
            max_skips: 4,
            early_stop: None,
            complexity: None,
        }
    }

    #[test]
    fn baseline_key_ignores_adaptive_settings_only() {
        let a = spec();
        let mut b = a.clone();
        b.delta = 0.05;
        b.max_skips = 2;
        b.early_stop = Some(EarlyStop::default());
        assert_eq!(a.baseline_key(), b.baseline_key());
        for change in [
            |s: &mut JobSpec| s.seed += 1,
            |s: &mut JobSpec| s.steps += 1,
            |s: &mut JobSpec| s.guidance += 0.5,
            |s: &mut JobSpec| s.prompt.push('!'),
            |s: &mut JobSpec| s.negative.push('x'),
            |s: &mut JobSpec| s.scheduler = SchedulerKind::Euler,
            |s: &mut JobSpec| s.width = Some(64),
            |s: &mut JobSpec| s.model = ModelSource::Local("y".into()),
        ] {
            let mut c = a.clone();
            change(&mut c);
            assert_ne!(a.baseline_key(), c.baseline_key(), "{c:?}");
        }
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
    fn validation_names_the_problem() {
        let mut s = spec();
        s.prompt = "  ".into();
        assert!(s.validate().unwrap_err().to_string().contains("prompt"));
        let mut s = spec();
        s.width = Some(65);
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("multiple of 8")
        );
        let mut s = spec();
        s.max_skips = 0;
        assert!(s.validate().is_err());
        assert!(spec().validate().is_ok());
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
