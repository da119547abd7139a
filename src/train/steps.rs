//! The step loop of the shapes-model and tiny-CLIP trainers.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

/// How long a run trains, how often it logs and checkpoints.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Train until this many steps are done.
    pub total_steps: usize,
    /// Log the mean loss every this many steps.
    pub log_every: usize,
    /// Checkpoint every this many seconds (and at the end).
    pub ckpt_every_s: f64,
}

/// A trainer that [`run`] drives.
pub(super) trait Steps {
    /// Steps done.
    fn steps_done(&self) -> usize;
    /// One optimisation step; returns the loss.
    fn train_step(&mut self) -> Result<f64>;
    /// Count `seconds` more of training.
    fn add_train_seconds(&mut self, seconds: f64);
    /// Record the mean loss of the steps since the last log; the log line, with their rate.
    fn log_loss(&mut self, mean: f64, steps_per_s: f64) -> String;
    /// Write the checkpoint into `dir`.
    fn save_checkpoint(&self, dir: &Path) -> Result<()>;
}

/// Train until `total_steps` or until `stop()` (polled before each step), giving `log` the
/// mean loss every `log_every` steps and checkpointing into `dir` every `ckpt_every_s`
/// seconds and at the end.
pub(super) fn run(
    t: &mut impl Steps,
    dir: &Path,
    schedule: &Schedule,
    stop: &dyn Fn() -> bool,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let Schedule {
        total_steps,
        log_every,
        ckpt_every_s,
    } = *schedule;
    let mut last_ckpt = Instant::now();
    let (mut acc, mut count, mut t_log) = (0.0, 0usize, Instant::now());
    while t.steps_done() < total_steps && !stop() {
        let t0 = Instant::now();
        acc += t.train_step()?;
        t.add_train_seconds(t0.elapsed().as_secs_f64());
        count += 1;
        if t.steps_done().is_multiple_of(log_every.max(1)) {
            let steps_per_s = count as f64 / t_log.elapsed().as_secs_f64();
            log(&t.log_loss(acc / count as f64, steps_per_s));
            (acc, count, t_log) = (0.0, 0, Instant::now());
        }
        if last_ckpt.elapsed().as_secs_f64() >= ckpt_every_s {
            t.save_checkpoint(dir)?;
            last_ckpt = Instant::now();
        }
    }
    t.save_checkpoint(dir)
}

/// Remove a leftover `dir/STOP` and return a poll for a new one: creating the file stops a
/// run at its next step (with a checkpoint).
pub fn stop_file(dir: &Path) -> impl Fn() -> bool + use<> {
    let stop_file = dir.join("STOP");
    let _ = std::fs::remove_file(&stop_file);
    move || stop_file.exists()
}
