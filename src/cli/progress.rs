//! Every bar of the command line, on stderr, in the one style ([`bar`]): the step bars of
//! `generate` and `compare` (with the long-run estimate after the first computed step), the
//! hub downloads' ([`downloads`]) and the runs of `bench` and `calibrate` ([`BenchBar`],
//! which also words the benchmark's notes and warnings).

use crate::bench::{BenchEvent, BenchObserver};
use crate::job::Pass;
use crate::model::{DownloadEvent, Downloads};
use crate::pipeline::Progress;
use crate::sampler::StepEvent;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::ops::ControlFlow;
use std::sync::{Mutex, PoisonError};

/// A bar of `len` units drawn with `template` (indicatif's syntax; `{prefix}`, `{msg}`…) in
/// the project's one style; hidden when `visible` is false.
pub fn bar(len: u64, template: &str, visible: bool) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if visible {
        bar.set_style(style(template));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// The project's bar style with `template`.
pub fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A bar per downloaded hub file.
pub fn downloads() -> Downloads {
    let current: Mutex<Option<ProgressBar>> = Mutex::new(None);
    Downloads::to(move |event| {
        let mut current = current.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            DownloadEvent::Start { file, bytes, .. } => {
                let b = bar(
                    *bytes,
                    "{msg:<40} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
                    true,
                );
                b.set_message(file.clone());
                *current = Some(b);
            }
            DownloadEvent::Progress { bytes } => {
                if let Some(b) = current.as_ref() {
                    b.inc(*bytes);
                }
            }
            DownloadEvent::Finish => {
                if let Some(b) = current.take() {
                    b.finish();
                }
            }
        }
    })
}

/// The bars of the passes of one command, one after the other.
pub struct StepBars {
    bar: Option<ProgressBar>,
    label: &'static str,
    steps: usize,
    then: usize,
    calls: usize,
    done: usize,
}

impl StepBars {
    /// No pass started yet.
    pub fn new() -> Self {
        Self {
            bar: None,
            label: "",
            steps: 0,
            then: 0,
            calls: 0,
            done: 0,
        }
    }

    /// After the first step that called the noise predictor, a run that will take long
    /// says so once, with its estimate.
    fn long_run_note(&self, bar: &ProgressBar, ev: &StepEvent<'_>) {
        let left = (ev.budget.max(self.steps) + self.then).saturating_sub(self.done);
        let estimate = crate::sampler::Estimate::from_steps(std::slice::from_ref(ev.record), left);
        if let Some(note) = estimate.and_then(|e| e.long_run_note()) {
            // A hidden bar (stderr not a terminal) drops its println: say it plainly.
            if bar.is_hidden() {
                eprintln!("{}: {note}", self.label);
            } else {
                bar.println(format!("{}: {note}", self.label));
            }
        }
    }
}

impl Default for StepBars {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for StepBars {
    fn start(&mut self, pass: &Pass, steps: usize, then: usize) {
        let bar = bar(
            steps as u64,
            "{prefix:>8} [{bar:30}] {pos}/{len} steps {msg} ({elapsed})",
            true,
        );
        self.label = pass.method.name();
        bar.set_prefix(self.label);
        self.bar = Some(bar);
        (self.steps, self.then, self.calls, self.done) = (steps, then, 0, 0);
    }

    fn step(&mut self, ev: StepEvent<'_>) -> ControlFlow<()> {
        self.calls += usize::from(ev.record.computed);
        self.done += 1;
        if let Some(bar) = &self.bar {
            if self.calls == 1 && ev.record.computed {
                self.long_run_note(bar, &ev);
            }
            bar.set_message(format!("{} predictor calls", self.calls));
            bar.inc(1);
        }
        ControlFlow::Continue(())
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// The bar of `bench` or `calibrate`, with the benchmark's notes and warnings worded for
/// the command line.
pub struct BenchBar {
    bar: Option<ProgressBar>,
    template: &'static str,
}

impl BenchBar {
    /// The runs of `adiff bench`, the last run's numbers beside the bar.
    pub fn bench() -> Self {
        Self {
            bar: None,
            template: "bench [{bar:30}] {pos}/{len} runs, {elapsed} elapsed, ETA {eta} {msg}",
        }
    }

    /// The runs of `adiff calibrate` (at most: its searches stop early).
    pub fn calibrate() -> Self {
        Self {
            bar: None,
            template: "calibrate [{bar:30}] {pos}/{len} runs (at most), {elapsed} elapsed, ETA {eta}",
        }
    }

    /// A line that does not tear the bar.
    fn say(&self, line: String) {
        match &self.bar {
            Some(b) if !b.is_hidden() => b.suspend(|| eprintln!("{line}")),
            _ => eprintln!("{line}"),
        }
    }
}

impl BenchObserver for BenchBar {
    fn event(&mut self, event: BenchEvent<'_>) {
        match event {
            BenchEvent::Note(note) => self.say(format!("adiff: {}", note.worded(&super::Flags))),
            BenchEvent::ScorerFallback(why) => {
                self.say(format!("warning: {why}; using the heuristic scorer"));
            }
            // A prompt of a set: its words, not the --prompt flag, are at fault.
            BenchEvent::PromptWarning { prompt, warning } => self.say(format!(
                "warning: prompt #{prompt}: {}",
                crate::field::printable(&warning.to_string())
            )),
            BenchEvent::ClipUnavailable(why) => self.say(format!(
                "warning: CLIP alignment not measured: {why} (give --clip a local transformers CLIP folder, or --no-clip)"
            )),
            BenchEvent::Planned { total, done } => {
                let b = bar(total as u64, self.template, true);
                b.set_position(done as u64);
                b.reset_eta();
                self.bar = Some(b);
            }
            BenchEvent::Ran(row) => {
                if let Some(b) = &self.bar {
                    if let Some(row) = row {
                        b.set_message(format!(
                            "last: {} {} {} calls, PSNR {}",
                            row.scheduler,
                            row.setting,
                            row.unet_calls,
                            row.psnr_db.map_or("-".into(), |p| format!("{p:.1}"))
                        ));
                    }
                    b.inc(1);
                }
            }
            BenchEvent::Finished => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
            }
        }
    }

    fn downloads(&self) -> Downloads {
        downloads()
    }
}
