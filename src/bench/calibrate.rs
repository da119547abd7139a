//! `adiff calibrate`: per prompt, the largest δ and the smallest step budget whose output
//! stays at or above a PSNR target against the full-step baseline, and the complexity →
//! budget mapping fitted from them (written as a budget-map file for the automatic budget).
//!
//! Searches are monotone and stop early: δ ascending at the full budget (the largest δ
//! before the first one that misses the target), budgets descending with the adaptive
//! policy at `--delta` (the smallest budget before the first one that misses). Each level
//! of the mapping gets the largest minimal budget among its calibration prompts (so every
//! calibration prompt of the level meets the target), kept non-decreasing across levels;
//! levels without prompts keep the current mapping's steps. The fitted δ per level (the
//! smallest "largest δ" among its prompts, relative to `--delta`) goes into `delta_scale`,
//! used with `--scale-policy`.

use super::observer::{BenchEvent, BenchObserver};
use super::prompts::BenchPrompt;
use super::records::csv_field;
use crate::complexity::{BudgetLevel, BudgetMap, Scoring};
use crate::job::{Job, Pass};
use crate::pipeline;
use crate::sampler::Method;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::path::PathBuf;

/// A validated calibration request.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// What every run shares: model, device, scheduler, full-step baseline steps,
    /// guidance, negative prompt, size, truncation. Prompt, seed and method vary per run.
    pub job: Job,
    /// The prompts.
    pub prompts: Vec<BenchPrompt>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// C_max.
    pub max_skips: usize,
    /// PSNR target, dB.
    pub psnr_target: f64,
    /// δ grid, ascending.
    pub deltas: Vec<f64>,
    /// δ of the budget search.
    pub delta: f64,
    /// Budget grid, ascending.
    pub budgets: Vec<usize>,
    /// Scorer and mapping.
    pub scoring: Scoring,
    /// Output folder.
    pub out: PathBuf,
}

/// One probed setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// δ of the probe.
    pub delta: f64,
    /// Step budget of the probe.
    pub steps: usize,
    /// Noise-predictor calls.
    pub unet_calls: usize,
    /// PSNR vs the baseline (`None` when identical).
    pub psnr_db: Option<f64>,
    /// Identical to the baseline.
    pub identical: bool,
    /// PSNR ≥ target (or identical).
    pub passes: bool,
}

/// The calibration of one prompt × seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptCalibration {
    /// Index in the prompt set.
    pub prompt_index: usize,
    /// The prompt.
    pub prompt: String,
    /// Seed.
    pub seed: u64,
    /// Complexity score.
    pub complexity: f64,
    /// 1-based level of the score in the mapping.
    pub level: usize,
    /// The δ probes at the full budget.
    pub delta_probes: Vec<Probe>,
    /// Largest δ of the grid that keeps the target (`None`: even the smallest misses).
    pub largest_delta: Option<f64>,
    /// The budget probes at `--delta`.
    pub budget_probes: Vec<Probe>,
    /// Smallest budget that keeps the target (the full budget when none smaller does).
    pub min_budget: usize,
    /// Whether the full budget itself keeps the target at `--delta`.
    pub full_budget_passes: bool,
}

/// The fit of one level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelFit {
    /// 1-based level.
    pub level: usize,
    /// Lowest score of the level.
    pub min_score: f64,
    /// Calibration samples in the level.
    pub samples: usize,
    /// Fitted budget (before monotonicity).
    pub fitted_steps: Option<usize>,
    /// Steps in the written mapping.
    pub steps: usize,
    /// Smallest "largest δ" among the samples.
    pub largest_delta: Option<f64>,
}

/// `calibration.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    /// `adiff` version.
    pub adiff_version: String,
    /// The command line.
    pub command: String,
    /// When it ran (UTC).
    pub created_utc: String,
    /// Model origin.
    pub model: String,
    /// Scheduler.
    pub scheduler: String,
    /// Full-step budget.
    pub steps: usize,
    /// PSNR target, dB.
    pub psnr_target: f64,
    /// δ of the budget search.
    pub delta: f64,
    /// The complexity scorer.
    pub scorer: String,
    /// Per prompt × seed.
    pub prompts: Vec<PromptCalibration>,
    /// Per level.
    pub levels: Vec<LevelFit>,
    /// Median over samples of the largest δ keeping the target.
    pub suggested_delta: Option<f64>,
    /// The fitted mapping (also written to `budget_map.json`).
    pub budget_map: BudgetMap,
}

fn probe(psnr: f64, target: f64, delta: f64, steps: usize, calls: usize) -> Probe {
    let identical = psnr.is_infinite();
    Probe {
        delta,
        steps,
        unet_calls: calls,
        psnr_db: (!identical).then_some(psnr),
        identical,
        passes: identical || psnr >= target,
    }
}

/// Fit the level steps and δ scales from calibration samples.
pub fn fit_mapping(
    base: &BudgetMap,
    samples: &[PromptCalibration],
    steps: usize,
    delta: f64,
) -> (BudgetMap, Vec<LevelFit>) {
    let scaled = |s: usize| -> usize {
        ((s as f64 * steps as f64 / base.reference_steps as f64).round() as usize).clamp(1, steps)
    };
    let mut fits = Vec::new();
    let mut levels = Vec::new();
    let mut floor = 1usize;
    for (i, l) in base.levels.iter().enumerate() {
        let in_level: Vec<&PromptCalibration> =
            samples.iter().filter(|s| s.level == i + 1).collect();
        let fitted = in_level.iter().map(|s| s.min_budget).max();
        let largest_delta = in_level
            .iter()
            .map(|s| s.largest_delta.unwrap_or(0.0))
            .min_by(f64::total_cmp);
        let steps_i = fitted
            .unwrap_or_else(|| scaled(l.steps))
            .max(floor)
            .min(steps);
        floor = steps_i;
        let delta_scale = match largest_delta {
            Some(d) if d > 0.0 => d / delta,
            Some(_) => 0.5,
            None => l.delta_scale,
        };
        fits.push(LevelFit {
            level: i + 1,
            min_score: l.min_score,
            samples: in_level.len(),
            fitted_steps: fitted,
            steps: steps_i,
            largest_delta,
        });
        levels.push(BudgetLevel {
            min_score: l.min_score,
            steps: steps_i,
            delta_scale,
            max_skips_offset: l.max_skips_offset,
        });
    }
    let lowest = levels.iter().map(|l| l.steps).min().unwrap_or(1);
    let map = BudgetMap {
        reference_steps: steps,
        min_steps: scaled(base.min_steps).min(lowest).max(1),
        max_steps: steps,
        levels,
        scale_policy: base.scale_policy,
    };
    (map, fits)
}

/// Probe `settings` in order until the first that misses the target: every probe made,
/// and the last setting that met it.
fn search<T: Copy>(
    settings: &[T],
    mut probe_one: impl FnMut(T) -> Result<Probe>,
) -> Result<(Vec<Probe>, Option<T>)> {
    let mut probes = Vec::new();
    let mut last_pass = None;
    for &x in settings {
        let pr = probe_one(x)?;
        let passes = pr.passes;
        probes.push(pr);
        if !passes {
            break;
        }
        last_pass = Some(x);
    }
    Ok((probes, last_pass))
}

/// Run the calibration and write `calibration.json`, `calibration.csv`, `budget_map.json`;
/// notes, warnings and progress go to `observer`.
pub fn run_calibrate(
    opts: &CalibrateOptions,
    observer: &mut dyn BenchObserver,
) -> Result<Calibration> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let engine = opts.scoring.engine()?;
    let base_map = opts.scoring.mapping()?;
    let model = pipeline::load_job_model(&opts.job, &observer.downloads())?;
    for note in model.messages() {
        observer.event(BenchEvent::Note(note));
    }
    let steps = opts.job.steps;
    let per_sample = 1 + opts.deltas.len() + opts.budgets.len();
    observer.event(BenchEvent::Planned {
        total: opts.prompts.len() * opts.seeds.len() * per_sample,
        done: 0,
    });
    let mut samples = Vec::new();
    let mut warned = false;
    for (pi, p) in opts.prompts.iter().enumerate() {
        let c = engine.score(&p.text);
        if let Some(why) = c.fallback.as_ref().filter(|_| !warned) {
            observer.event(BenchEvent::ScorerFallback(why));
            warned = true;
        }
        let level = base_map.level_of(c.score) + 1;
        for &seed in &opts.seeds {
            let job = Job {
                prompt: p.text.clone(),
                seed,
                ..opts.job.clone()
            };
            let prepared = pipeline::prepare(&model, &job)
                .with_context(|| format!("prompt #{pi} ({}): \"{}\"", p.origin, p.text))?;
            let mut quiet = |_: crate::sampler::StepEvent<'_>| ControlFlow::Continue(());
            let mut run = |method: Method, steps: usize| {
                let pass = Pass {
                    method,
                    steps,
                    early_stop: None,
                };
                let g = pipeline::generate(&model, &job, &prepared, &pass, &mut quiet);
                observer.event(BenchEvent::Ran(None));
                g
            };
            let base = run(Method::BASELINE, steps)?;
            let adaptive = |delta| Method::adaptive(delta, opts.max_skips);
            // δ ascending at the full budget.
            let (delta_probes, largest_delta) = search(&opts.deltas, |d| {
                let g = run(adaptive(d), steps)?;
                let psnr = crate::metrics::psnr(&g.image, &base.image)?;
                Ok(probe(psnr, opts.psnr_target, d, steps, g.trace.unet_calls))
            })?;
            // Budgets descending, from the full one, at `--delta`.
            let mut budgets: Vec<usize> = opts.budgets.clone();
            if !budgets.contains(&steps) {
                budgets.push(steps);
            }
            budgets.sort_unstable_by(|a, b| b.cmp(a));
            let (budget_probes, smallest) = search(&budgets, |b| {
                let g = run(adaptive(opts.delta), b)?;
                let psnr = crate::metrics::psnr(&g.image, &base.image)?;
                Ok(probe(
                    psnr,
                    opts.psnr_target,
                    opts.delta,
                    b,
                    g.trace.unet_calls,
                ))
            })?;
            let full_budget_passes = smallest.is_some();
            let min_budget = smallest.unwrap_or(steps);
            samples.push(PromptCalibration {
                prompt_index: pi,
                prompt: p.text.clone(),
                seed,
                complexity: c.score,
                level,
                delta_probes,
                largest_delta,
                budget_probes,
                min_budget,
                full_budget_passes,
            });
        }
    }
    observer.event(BenchEvent::Finished);
    let (map, levels) = fit_mapping(&base_map, &samples, steps, opts.delta);
    map.validate()
        .context("the fitted budget mapping is invalid")?;
    let mut ld: Vec<f64> = samples.iter().filter_map(|s| s.largest_delta).collect();
    ld.sort_by(f64::total_cmp);
    let suggested_delta = (!ld.is_empty()).then(|| ld[ld.len() / 2]);
    let cal = Calibration {
        adiff_version: env!("CARGO_PKG_VERSION").into(),
        command: super::command_line(),
        created_utc: super::utc_now(),
        model: model.origin.clone(),
        scheduler: opts.job.scheduler.name().into(),
        steps,
        psnr_target: opts.psnr_target,
        delta: opts.delta,
        scorer: opts.scoring.scorer.name().into(),
        prompts: samples,
        levels,
        suggested_delta,
        budget_map: map,
    };
    let w = |name: &str, bytes: &[u8]| crate::output::write_atomic(&opts.out.join(name), bytes);
    w(
        "calibration.json",
        serde_json::to_string_pretty(&cal)?.as_bytes(),
    )?;
    w(
        "budget_map.json",
        serde_json::to_string_pretty(&cal.budget_map)?.as_bytes(),
    )?;
    let mut csv = String::from(
        "prompt_index,seed,prompt,complexity,level,largest_delta,min_budget,full_budget_passes\n",
    );
    for s in &cal.prompts {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            s.prompt_index,
            s.seed,
            csv_field(&s.prompt),
            s.complexity,
            s.level,
            s.largest_delta.map(|d| d.to_string()).unwrap_or_default(),
            s.min_budget,
            s.full_budget_passes
        ));
    }
    w("calibration.csv", csv.as_bytes())?;
    Ok(cal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(level: usize, min_budget: usize, largest: Option<f64>) -> PromptCalibration {
        PromptCalibration {
            prompt_index: 0,
            prompt: String::new(),
            seed: 0,
            complexity: 0.0,
            level,
            delta_probes: vec![],
            largest_delta: largest,
            budget_probes: vec![],
            min_budget,
            full_budget_passes: true,
        }
    }

    #[test]
    fn fit_is_conservative_and_monotone() {
        let base = BudgetMap::default();
        let s = vec![
            sample(1, 10, Some(0.02)),
            sample(1, 15, Some(0.04)),
            sample(3, 12, Some(0.01)),
            sample(5, 40, None),
        ];
        let (map, fits) = fit_mapping(&base, &s, 50, 0.01);
        map.validate().unwrap();
        let steps: Vec<usize> = map.levels.iter().map(|l| l.steps).collect();
        // level 1: max(10, 15); level 2: default 16; level 3: max(12, floor 16) = 16;
        // level 4: default 28; level 5: 40
        assert_eq!(steps, vec![15, 16, 16, 28, 40]);
        assert_eq!(fits[0].fitted_steps, Some(15));
        assert_eq!(fits[1].fitted_steps, None);
        assert!((map.levels[0].delta_scale - 2.0).abs() < 1e-12);
        assert_eq!(map.levels[4].delta_scale, 0.5);
        assert_eq!(map.reference_steps, 50);
    }
}
