//! The step bars of `generate` and `compare` on stderr, with the long-run estimate after the
//! first computed step.

use crate::job::Pass;
use crate::pipeline::Progress;
use crate::progress::bar;
use crate::sampler::StepEvent;
use indicatif::ProgressBar;
use std::ops::ControlFlow;

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
