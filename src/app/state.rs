//! UI state: the live session (what the worker reported for the current job). Plain data,
//! no egui and no candle, so it is easy to test. The persisted settings are
//! [`super::settings`].

use super::protocol::{
    Comparison, Event, Frames, JobId, ModelInfo, ReferenceComparison, Side, SideResult,
};
use crate::complexity::ComplexityBudget;
use crate::job::Job;
use crate::sampler::StepRecord;
use std::sync::Arc;
use std::time::Instant;

/// Where one side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideStatus {
    /// Nothing yet.
    Idle,
    /// Waiting for its turn (model load, the other side).
    Waiting,
    /// Running.
    Running,
    /// Done.
    Done,
    /// Stopped before the end.
    Cancelled,
    /// The job failed.
    Failed,
}

/// What the UI knows about one side of the current job.
#[derive(Debug, Clone)]
pub struct SideView {
    /// Status.
    pub status: SideStatus,
    /// Step budget.
    pub budget: usize,
    /// The steps so far.
    pub steps: Vec<StepRecord>,
    /// The latest preview (live) or the final image.
    pub image: Option<Arc<image::RgbImage>>,
    /// A clip's frames: the latest preview (live) or the final frames.
    pub frames: Option<Frames>,
    /// Bumped whenever `image` or `frames` change (the panel re-uploads the texture).
    pub image_version: u64,
    /// The final result.
    pub result: Option<Arc<SideResult>>,
    /// Served from the cache: computed for an earlier job.
    pub from_cache: bool,
    /// When it started (for the live clock).
    pub started: Option<Instant>,
    /// The job on screen when its result was computed.
    pub finished_during: Option<JobId>,
}

impl Default for SideView {
    fn default() -> Self {
        Self {
            status: SideStatus::Idle,
            budget: 0,
            steps: vec![],
            image: None,
            frames: None,
            image_version: 0,
            result: None,
            from_cache: false,
            started: None,
            finished_during: None,
        }
    }
}

impl SideView {
    fn reset(&mut self, status: SideStatus) {
        let version = self.image_version + 1;
        *self = SideView {
            status,
            image_version: version,
            ..SideView::default()
        };
    }

    /// Noise-predictor calls so far.
    pub fn calls(&self) -> usize {
        self.steps.iter().filter(|r| r.computed).count()
    }

    /// Loop time so far (or of the finished run), milliseconds.
    pub fn elapsed_ms(&self) -> f64 {
        match &self.result {
            Some(r) => r.trace.elapsed_ms,
            // (`+ 0.0`: an empty float sum is −0.)
            None => self.steps.iter().map(|r| r.step_ms).sum::<f64>() + 0.0,
        }
    }

    /// Progress in 0..=1.
    pub fn progress(&self) -> f32 {
        if self.status == SideStatus::Done {
            return 1.0;
        }
        if self.budget == 0 {
            0.0
        } else {
            self.steps.len() as f32 / self.budget as f32
        }
    }
}

/// The overall phase of the current job.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// No job yet.
    Idle,
    /// Loading (or downloading) the model.
    Loading {
        /// Which model.
        model: String,
    },
    /// Running a side.
    Running,
    /// Both sides done.
    Done,
    /// Cancelled by the user.
    Cancelled,
    /// Failed.
    Failed,
}

/// Download progress of a hub model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Download {
    /// Files already in the cache.
    pub files_done: usize,
    /// Files needed.
    pub files_total: usize,
    /// Bytes in the cache folder.
    pub bytes: u64,
    /// Bytes when loading began (to show what this download added).
    pub bytes_at_start: u64,
    /// When the first progress report arrived.
    pub since: Instant,
}

/// The live session: the current job and what its events said.
#[derive(Debug)]
pub struct Session {
    /// The job whose adaptive side (and whose overall state) is shown.
    pub job: Option<JobId>,
    /// The job whose baseline events are shown: the current job, or an older job that is
    /// still computing the very baseline the current job needs.
    pub baseline_job: Option<JobId>,
    /// The current job's settings.
    pub spec: Option<Job>,
    /// Phase.
    pub phase: Phase,
    /// Baseline side.
    pub baseline: SideView,
    /// Adaptive side.
    pub adaptive: SideView,
    /// PSNR / SSIM / difference, once both are done.
    pub comparison: Option<Comparison>,
    /// Bumped whenever `comparison` changes.
    pub comparison_version: u64,
    /// When neither side is the full-step baseline: its run's progress, then both sides
    /// against it.
    pub reference: Option<ReferenceView>,
    /// The loaded model.
    pub model: Option<ModelInfo>,
    /// Download progress while a hub model loads.
    pub download: Option<Download>,
    /// The latest error, shown until dismissed.
    pub error: Option<String>,
    /// Warnings about the current job (e.g. prompt words the model does not know).
    pub warnings: Vec<String>,
    /// The prompt's complexity and the adaptive budget, when the scorer decided it.
    pub budget: Option<ComplexityBudget>,
    /// Events of older jobs that were dropped (never mixed into the view).
    pub stale_events: usize,
    /// The finished comparison that was on screen when the current job started, until the
    /// job produces a side: a job that fails before that (a model that does not load, a
    /// LoRA that does not fit) puts it back instead of leaving both sides empty.
    shown_before: Option<Box<Shown>>,
}

/// The full-step reference of a comparison whose sides are both accelerated.
#[derive(Debug, Clone)]
pub enum ReferenceView {
    /// Running: steps done of steps.
    Running(usize, usize),
    /// Done: both sides against it.
    Done(Box<ReferenceComparison>),
}

/// A finished comparison as it was on screen.
#[derive(Debug)]
struct Shown {
    spec: Option<Job>,
    baseline_job: Option<JobId>,
    baseline: SideView,
    adaptive: SideView,
    comparison: Option<Comparison>,
    reference: Option<ReferenceView>,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            job: None,
            baseline_job: None,
            spec: None,
            phase: Phase::Idle,
            baseline: SideView::default(),
            adaptive: SideView::default(),
            comparison: None,
            comparison_version: 0,
            reference: None,
            model: None,
            download: None,
            error: None,
            warnings: vec![],
            budget: None,
            stale_events: 0,
            shown_before: None,
        }
    }
}

impl Session {
    /// Whether a job is in flight.
    pub fn is_busy(&self) -> bool {
        matches!(self.phase, Phase::Loading { .. } | Phase::Running)
    }

    /// A new job was submitted. When the previous job is still computing the same
    /// baseline, its baseline keeps being shown (the worker lets it finish).
    pub fn start_job(&mut self, job: JobId, spec: Job) {
        let same_baseline = self
            .spec
            .as_ref()
            .is_some_and(|s| s.baseline_key() == spec.baseline_key());
        let baseline_running = self.is_busy()
            && matches!(
                self.baseline.status,
                SideStatus::Running | SideStatus::Waiting
            );
        let baseline_done = self.baseline.status == SideStatus::Done;
        if self.results().is_some() && self.comparison.is_some() {
            self.shown_before = Some(Box::new(Shown {
                spec: self.spec.clone(),
                baseline_job: self.baseline_job,
                baseline: self.baseline.clone(),
                adaptive: self.adaptive.clone(),
                comparison: self.comparison.clone(),
                reference: self.reference.clone(),
            }));
        }
        if same_baseline && baseline_running {
            // Keep following the older job's baseline.
        } else {
            self.baseline_job = Some(job);
            if !(same_baseline && baseline_done) {
                self.baseline.reset(SideStatus::Waiting);
            }
        }
        self.job = Some(job);
        self.spec = Some(spec);
        self.phase = Phase::Running;
        self.adaptive.reset(SideStatus::Waiting);
        self.comparison = None;
        self.comparison_version += 1;
        self.reference = None;
        self.error = None;
        self.warnings.clear();
        self.budget = None;
    }

    /// How long the job has left, from the time of its computed steps so far: the running
    /// side's remaining steps plus a waiting adaptive side's budget.
    pub fn estimate(&self) -> Option<crate::sampler::Estimate> {
        let running = [&self.baseline, &self.adaptive]
            .into_iter()
            .find(|v| v.status == SideStatus::Running)?;
        let mut left = running.budget.saturating_sub(running.steps.len());
        if std::ptr::eq(running, &self.baseline) && self.adaptive.status == SideStatus::Waiting {
            left += self
                .adaptive
                .budget
                .max(self.spec.as_ref().map_or(0, |s| s.steps));
        }
        crate::sampler::Estimate::from_steps(&running.steps, left)
            .or_else(|| crate::sampler::Estimate::from_steps(&self.baseline.steps, left))
    }

    /// Apply one worker event; events of other jobs are dropped.
    pub fn apply(&mut self, ev: Event) {
        let job = ev.job();
        if !self.is_relevant(&ev) {
            self.stale_events += 1;
            return;
        }
        match ev {
            Event::Loading { model, .. } => {
                self.phase = Phase::Loading { model };
                self.download = None;
            }
            Event::Download {
                files_done,
                files_total,
                bytes,
                ..
            } => self.downloaded(files_done, files_total, bytes),
            Event::ModelReady { info, .. } => {
                self.model = Some(info);
                self.download = None;
                self.phase = Phase::Running;
            }
            Event::Started { side, budget, .. } => {
                self.shown_before = None;
                if side == Side::Baseline {
                    self.baseline_job = Some(job);
                }
                let v = self.side_mut(side);
                v.reset(SideStatus::Running);
                v.budget = budget;
                v.started = Some(Instant::now());
                self.phase = Phase::Running;
            }
            Event::Step {
                side,
                record,
                preview,
                preview_frames,
                ..
            } => {
                let v = self.side_mut(side);
                v.status = SideStatus::Running;
                v.steps.push(record);
                if let Some(p) = preview {
                    v.image = Some(p);
                    v.image_version += 1;
                }
                if let Some(f) = preview_frames {
                    v.frames = Some(f);
                    v.image_version += 1;
                }
            }
            Event::Finished {
                result, from_cache, ..
            } => self.finished(job, result, from_cache),
            Event::Warning { message, .. } => {
                if !self.warnings.contains(&message) {
                    self.warnings.push(message);
                }
            }
            Event::Budget { budget, .. } => {
                self.budget = Some(*budget);
            }
            Event::Compared { comparison, .. } => {
                self.comparison = Some(comparison);
                self.comparison_version += 1;
            }
            Event::ReferenceStep { done, steps, .. } => {
                self.reference = Some(ReferenceView::Running(done, steps));
            }
            Event::Referenced { reference, .. } => {
                self.reference = Some(ReferenceView::Done(reference));
            }
            Event::Done { .. } => {
                self.phase = Phase::Done;
            }
            Event::Cancelled { superseded, .. } => {
                if !superseded {
                    self.phase = Phase::Cancelled;
                    self.end_unfinished(SideStatus::Cancelled);
                    self.restore_shown();
                }
            }
            Event::Failed { message, .. } => {
                self.phase = Phase::Failed;
                self.download = None;
                self.error = Some(message);
                self.end_unfinished(SideStatus::Failed);
                self.restore_shown();
            }
        }
    }

    /// Whether an event is about what is on screen: the current job, or (for the baseline
    /// side) the job whose baseline is shown. The current job starting or finishing its own
    /// baseline takes over the baseline view.
    fn is_relevant(&self, ev: &Event) -> bool {
        let job = ev.job();
        let current = self.job == Some(job);
        let baseline_source = self.baseline_job == Some(job);
        match ev {
            Event::Started { side, .. } => match side {
                Side::Baseline => baseline_source || current,
                Side::Adaptive => current,
            },
            Event::Step { side, .. } => match side {
                Side::Baseline => baseline_source,
                Side::Adaptive => current,
            },
            Event::Finished { result, .. } => match result.side {
                Side::Baseline => baseline_source || current,
                Side::Adaptive => current,
            },
            _ => current,
        }
    }

    /// Download progress (the first report sets where the count started).
    fn downloaded(&mut self, files_done: usize, files_total: usize, bytes: u64) {
        let d = self.download.get_or_insert(Download {
            files_done,
            files_total,
            bytes,
            bytes_at_start: bytes,
            since: Instant::now(),
        });
        d.files_done = files_done;
        d.files_total = files_total;
        d.bytes = bytes;
    }

    /// A side's result. A cache hit for the current job replaces the older job's baseline
    /// view only when that one is not already complete.
    fn finished(&mut self, job: JobId, result: Arc<SideResult>, from_cache: bool) {
        self.shown_before = None;
        let side = result.side;
        let current = self.job;
        if side == Side::Baseline
            && from_cache
            && self.baseline.status == SideStatus::Done
            && self
                .baseline
                .result
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &result))
        {
            self.baseline_job = Some(job);
            // Computed while this job was already on screen (it took over the older job's
            // run of the same side): not a result of an earlier run.
            self.baseline.from_cache = self.baseline.finished_during != Some(job);
            return;
        }
        let v = self.side_mut(side);
        v.status = SideStatus::Done;
        v.budget = result.trace.budget;
        v.steps = result.trace.steps.clone();
        v.image = Some(Arc::new(result.image.clone()));
        v.frames = (!result.frames.is_empty()).then(|| result.frames.clone());
        v.image_version += 1;
        v.from_cache = from_cache;
        if !from_cache {
            v.finished_during = current;
        }
        v.result = Some(result);
        if side == Side::Baseline {
            self.baseline_job = Some(job);
        }
    }

    /// Put back the comparison that was on screen before a job that failed without
    /// producing a side.
    fn restore_shown(&mut self) {
        let Some(shown) = self.shown_before.take() else {
            return;
        };
        let Shown {
            spec,
            baseline_job,
            mut baseline,
            mut adaptive,
            comparison,
            reference,
        } = *shown;
        // New versions, so that the panel uploads the images again.
        baseline.image_version = self.baseline.image_version + 1;
        adaptive.image_version = self.adaptive.image_version + 1;
        self.spec = spec;
        self.baseline_job = baseline_job;
        self.baseline = baseline;
        self.adaptive = adaptive;
        self.comparison = comparison;
        self.comparison_version += 1;
        self.reference = reference;
    }

    /// Mark the sides still running or waiting as ended with `status`.
    fn end_unfinished(&mut self, status: SideStatus) {
        for v in [&mut self.baseline, &mut self.adaptive] {
            if matches!(v.status, SideStatus::Running | SideStatus::Waiting) {
                v.status = status;
            }
        }
        if matches!(self.reference, Some(ReferenceView::Running(..))) {
            self.reference = None;
        }
    }

    /// One side's view.
    pub fn side(&self, side: Side) -> &SideView {
        match side {
            Side::Baseline => &self.baseline,
            Side::Adaptive => &self.adaptive,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut SideView {
        match side {
            Side::Baseline => &mut self.baseline,
            Side::Adaptive => &mut self.adaptive,
        }
    }

    /// Frames of the clip on screen (0: an image): both sides' when both have frames (the
    /// fewer, should they differ), else the one side's that has.
    pub fn clip_len(&self) -> usize {
        let len = |v: &SideView| v.frames.as_ref().map(|f| f.len());
        match (len(&self.baseline), len(&self.adaptive)) {
            (Some(a), Some(b)) => a.min(b),
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => 0,
        }
    }

    /// Whether the job on screen makes a clip.
    pub fn is_clip(&self) -> bool {
        self.clip_len() > 0
            || self
                .spec
                .as_ref()
                .is_some_and(|s| s.frames.is_some() || s.motion.is_some())
    }

    /// Both results, when both sides are done.
    pub fn results(&self) -> Option<(Arc<SideResult>, Arc<SideResult>)> {
        Some((self.baseline.result.clone()?, self.adaptive.result.clone()?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::settings::{ModelChoice, Settings};
    use super::*;
    use crate::sampler::{Decision, RunTrace};
    use crate::sampler::{Method, MethodKind};

    fn spec(delta: f64) -> Job {
        let mut s = Settings {
            model: ModelChoice::Local("m".into()),
            ..Settings::default()
        };
        s.right.set(MethodKind::ADAPTIVE, "delta", delta);
        s.job(10).unwrap()
    }

    fn record(i: usize) -> StepRecord {
        StepRecord {
            index: i,
            timestep: 0.0,
            sigma: 0.0,
            computed: true,
            decision: Decision::Computed,
            d: None,
            third_order: None,
            threshold: None,
            signal: None,
            signal_limit: None,
            rel_change: 0.0,
            predictor_ms: 1.0,
            controller_ms: 0.0,
            step_ms: 1.0,
        }
    }

    fn result(side: Side) -> Arc<SideResult> {
        Arc::new(SideResult {
            side,
            image: image::RgbImage::new(2, 2),
            frames: Arc::default(),
            trace: RunTrace {
                method: Method::BASELINE,
                scheduler: "ddim".into(),
                budget: 10,
                guidance: 7.5,
                early_stop: None,
                stopped_early_at: None,
                unet_calls: 10,
                unet_macs: None,
                unet_cost: None,
                steps_run: 10,
                elapsed_ms: 1.0,
                steps: (0..10).map(record).collect(),
            },
            decode_ms: 0.0,
            model: "m".into(),
            computed_at: Instant::now(),
        })
    }

    #[test]
    fn warnings_show_once_per_job_and_clear_on_the_next() {
        let mut s = Session::default();
        s.start_job(1, spec(0.01));
        for _ in 0..2 {
            s.apply(Event::Warning {
                job: 1,
                message: "unknown word".into(),
            });
        }
        s.apply(Event::Warning {
            job: 7,
            message: "another job's".into(),
        });
        assert_eq!(s.warnings, vec!["unknown word".to_string()]);
        s.start_job(2, spec(0.02));
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn events_of_older_jobs_never_reach_the_view() {
        let mut s = Session::default();
        s.start_job(1, spec(0.01));
        s.apply(Event::Started {
            job: 1,
            side: Side::Baseline,
            budget: 10,
        });
        // Job 2 with another seed: baseline of job 1 is no longer followed.
        let mut other = spec(0.01);
        other.seed += 1;
        s.start_job(2, other);
        s.apply(Event::Step {
            job: 1,
            side: Side::Baseline,
            record: record(0),
            preview: None,
            preview_frames: None,
        });
        s.apply(Event::Finished {
            job: 1,
            result: result(Side::Adaptive),
            from_cache: false,
        });
        assert!(s.baseline.steps.is_empty());
        assert!(s.adaptive.result.is_none());
        assert_eq!(s.stale_events, 2);
    }

    #[test]
    fn a_slow_first_step_gives_the_whole_job_an_estimate() {
        let mut s = Session::default();
        s.start_job(1, spec(0.01));
        assert_eq!(s.estimate(), None);
        s.apply(Event::Started {
            job: 1,
            side: Side::Baseline,
            budget: 10,
        });
        assert_eq!(s.estimate(), None, "no step timed yet");
        let mut slow = record(0);
        slow.step_ms = 20_000.0;
        s.apply(Event::Step {
            job: 1,
            side: Side::Baseline,
            record: slow,
            preview: None,
            preview_frames: None,
        });
        // 9 baseline steps left, then the adaptive side's 10.
        let e = s.estimate().unwrap();
        assert_eq!(e.steps_left, 19);
        assert_eq!(e.left_ms(), 19.0 * 20_000.0);
        assert!(e.long_run_note().unwrap().starts_with("about 6 min left"));
    }

    #[test]
    fn same_baseline_keeps_following_the_running_one() {
        let mut s = Session::default();
        s.start_job(1, spec(0.01));
        s.apply(Event::Started {
            job: 1,
            side: Side::Baseline,
            budget: 10,
        });
        s.apply(Event::Step {
            job: 1,
            side: Side::Baseline,
            record: record(0),
            preview: None,
            preview_frames: None,
        });
        s.start_job(2, spec(0.05));
        assert_eq!(s.baseline_job, Some(1));
        s.apply(Event::Step {
            job: 1,
            side: Side::Baseline,
            record: record(1),
            preview: None,
            preview_frames: None,
        });
        assert_eq!(s.baseline.steps.len(), 2);
        let r = result(Side::Baseline);
        s.apply(Event::Finished {
            job: 1,
            result: r.clone(),
            from_cache: false,
        });
        s.apply(Event::Cancelled {
            job: 1,
            superseded: true,
        });
        s.apply(Event::Finished {
            job: 2,
            result: r,
            from_cache: true,
        });
        assert_eq!(s.baseline.status, SideStatus::Done);
        assert!(
            !s.baseline.from_cache,
            "computed while job 2 was on screen: not a result of an earlier run"
        );
        assert_eq!(s.baseline_job, Some(2));
        assert!(s.is_busy());
        s.apply(Event::Started {
            job: 2,
            side: Side::Adaptive,
            budget: 10,
        });
        assert_eq!(s.adaptive.status, SideStatus::Running);
    }

    #[test]
    fn the_clip_on_screen_is_as_long_as_the_shorter_side() {
        let mut s = Session::default();
        assert_eq!((s.clip_len(), s.is_clip()), (0, false));
        s.start_job(1, spec(0.01));
        let frames = |n: usize| Arc::new(vec![image::RgbImage::new(2, 2); n]);
        s.apply(Event::Step {
            job: 1,
            side: Side::Baseline,
            record: record(0),
            preview: None,
            preview_frames: Some(frames(6)),
        });
        assert_eq!((s.clip_len(), s.is_clip()), (6, true));
        s.adaptive.frames = Some(frames(5));
        assert_eq!(s.clip_len(), 5);
    }
}
