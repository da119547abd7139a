//! What a running benchmark or calibration tells its front end: notes, warnings and
//! progress as data ([`BenchEvent`]), for the front end to word and draw (the command line's
//! bar and `warning:` lines). Nothing in `bench` writes to the terminal.

use super::records::RunRow;
use crate::field::{FieldError, Note};
use crate::model::Downloads;

/// One thing a benchmark or calibration reports.
#[derive(Debug)]
pub enum BenchEvent<'a> {
    /// Something to read about the loaded model (the checkpoint detected, a LoRA merged,
    /// why a GPU build runs on the CPU).
    Note(Note),
    /// The complexity scorer asked for failed (`why`); the heuristic scores instead. Said
    /// once.
    ScorerFallback(&'a str),
    /// A warning about a prompt's settings (words the vocabulary lacks, a truncation).
    PromptWarning {
        /// The prompt's index in the set.
        prompt: usize,
        /// What is wrong.
        warning: &'a FieldError,
    },
    /// CLIP alignment will not be measured: the CLIP model did not load (`why`).
    ClipUnavailable(&'a str),
    /// The runs start: `total` planned (at most, for a calibration, whose searches stop
    /// early), `done` of them recorded before.
    Planned {
        /// Runs planned.
        total: usize,
        /// Runs already done.
        done: usize,
    },
    /// A run finished; its row when it is a compared run (not a baseline, not a
    /// calibration probe).
    Ran(Option<&'a RunRow>),
    /// No more runs.
    Finished,
}

/// A front end's ear on a benchmark or calibration.
pub trait BenchObserver {
    /// Take one event.
    fn event(&mut self, event: BenchEvent<'_>);

    /// Where the model's and the CLIP scorer's hub downloads report (default: nowhere).
    fn downloads(&self) -> Downloads {
        Downloads::default()
    }
}

/// Hears nothing: for tests and callers that want no reports.
pub struct Quiet;

impl BenchObserver for Quiet {
    fn event(&mut self, _: BenchEvent<'_>) {}
}
