//! Command-line options of the complexity scorers and the `adiff complexity` command.
//!
//! The command line defaults to the heuristic scorer: scripts must give the same budget on
//! every machine, with or without a running Ollama. `--scorer ollama` asks the LLM and falls
//! back to the heuristic, with a warning on stderr and a `fallback` entry in the JSON, when
//! Ollama cannot answer.

use crate::complexity::graded::{load_graded, spearman};
use crate::complexity::ollama::{DEFAULT_MODEL, DEFAULT_TIMEOUT_S, DEFAULT_URL};
use crate::complexity::{
    BudgetMap, Complexity, ComplexityBudget, ComplexityEngine, Factors, ScorerKind, Scoring,
};
use crate::job::defaults;
use crate::sampler::Method;
use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

/// Scorer and budget-mapping options, shared by `generate`, `compare` and `complexity`.
#[derive(Debug, Clone, Args)]
pub struct ScoringArgs {
    /// Prompt-complexity scorer: heuristic (offline, deterministic) or ollama (a local LLM;
    /// falls back to the heuristic, with a warning, when Ollama cannot answer).
    #[arg(long, value_enum, default_value_t = Scoring::default().scorer)]
    pub scorer: ScorerKind,
    /// Ollama server for --scorer ollama.
    #[arg(long, default_value = DEFAULT_URL)]
    pub ollama_url: String,
    /// Ollama model for --scorer ollama (pull it first: `ollama pull MODEL`).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub ollama_model: String,
    /// Seconds to wait for each Ollama request before falling back.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_S)]
    pub ollama_timeout: f64,
    /// A JSON score-to-budget mapping replacing the default five levels (the format is the
    /// `budget.mapping` object of `adiff complexity --json`).
    #[arg(long)]
    pub budget_map: Option<PathBuf>,
    /// Also scale δ and C_max with the complexity level (simple prompts skip more).
    #[arg(long)]
    pub scale_policy: bool,
}

impl ScoringArgs {
    /// The scoring settings these options give.
    pub fn scoring(&self) -> Scoring {
        Scoring {
            scorer: self.scorer,
            ollama_url: self.ollama_url.clone(),
            ollama_model: self.ollama_model.clone(),
            ollama_timeout_s: self.ollama_timeout,
            budget_map: self.budget_map.clone(),
            scale_policy: self.scale_policy,
        }
    }
}

/// Print the visible fallback warning, if the requested scorer did not decide.
pub fn warn_fallback(c: &Complexity) {
    if let Some(why) = &c.fallback {
        eprintln!("warning: {why}; using the heuristic scorer");
    }
}

/// `adiff complexity`.
#[derive(Debug, Clone, Args)]
pub struct ComplexityArgs {
    /// The prompt to rate.
    #[arg(required_unless_present = "graded", conflicts_with = "graded")]
    pub prompt: Option<String>,
    /// Rate every prompt of a graded set (`GRADE<TAB>PROMPT` lines, e.g.
    /// assets/prompts/graded.txt) and print Spearman's rho of score against grade.
    #[arg(long)]
    pub graded: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The fixed budget the adaptive budget is chosen relative to.
    #[arg(long, default_value_t = defaults::STEPS)]
    pub steps: usize,
    /// δ of the adaptive run (shown scaled with --scale-policy).
    #[arg(long, default_value_t = defaults::DELTA, allow_negative_numbers = true)]
    pub delta: f64,
    /// C_max of the adaptive run (shown shifted with --scale-policy).
    #[arg(long, default_value_t = defaults::MAX_SKIPS)]
    pub max_skips: usize,
    /// Scorer and mapping.
    #[command(flatten)]
    pub scoring: ScoringArgs,
}

/// One row of `adiff complexity --graded --json`.
#[derive(Debug, Clone, Serialize)]
struct GradedRow {
    grade: u8,
    prompt: String,
    score: f64,
    factors: Factors,
    level: usize,
    steps: usize,
    scorer: ScorerKind,
}

/// Run `adiff complexity`.
pub fn run(a: &ComplexityArgs) -> Result<()> {
    if a.steps < 1 {
        bail!("--steps must be at least 1 (got {})", a.steps);
    }
    let method = Method::adaptive(a.delta, a.max_skips);
    crate::job::validate_method(&method)?;
    let scoring = a.scoring.scoring();
    let map = scoring.mapping()?;
    let engine = scoring.engine()?;
    if let Some(path) = &a.graded {
        return run_graded(a, path, &engine, &map, method);
    }
    let prompt = a.prompt.as_deref().unwrap_or_default();
    if prompt.trim().is_empty() {
        bail!("the prompt is empty: give one, e.g. adiff complexity \"a red fox in the snow\"");
    }
    let complexity = engine.score(prompt);
    warn_fallback(&complexity);
    let budget = map.decide(complexity.score, a.steps, method);
    if a.json {
        #[derive(Serialize)]
        struct Out<'a> {
            prompt: &'a str,
            #[serde(flatten)]
            decision: &'a ComplexityBudget,
        }
        let decision = ComplexityBudget { complexity, budget };
        println!(
            "{}",
            serde_json::to_string_pretty(&Out {
                prompt,
                decision: &decision
            })?
        );
        return Ok(());
    }
    let c = &complexity;
    println!(
        "score      {:.2} ({} of 12), level {} of {}",
        c.score,
        c.factors.total(),
        budget.level,
        budget.levels
    );
    println!("factors    {}", c.factors.describe());
    println!("rationale  {}", c.rationale);
    println!("scorer     {}", c.scorer_label());
    let policy_text = match (budget.delta, budget.max_skips) {
        (Some(d), Some(m)) => format!(
            " (δ {d}, C_max {m}{})",
            if budget.policy_scaled {
                ", scaled by level"
            } else {
                ""
            }
        ),
        _ => String::new(),
    };
    println!(
        "budget     {} of {} steps for the adaptive run{policy_text}; the baseline keeps {}",
        budget.steps, budget.baseline_steps, budget.baseline_steps
    );
    for n in &c.notes {
        println!("note       {n}");
    }
    Ok(())
}

fn run_graded(
    a: &ComplexityArgs,
    path: &std::path::Path,
    engine: &ComplexityEngine,
    map: &BudgetMap,
    method: Method,
) -> Result<()> {
    let set = load_graded(path)?;
    let mut rows = Vec::with_capacity(set.len());
    let mut fallbacks = 0usize;
    for g in &set {
        let c = engine.score(&g.prompt);
        if c.fallback.is_some() {
            fallbacks += 1;
            if fallbacks == 1 {
                warn_fallback(&c);
            }
        }
        let b = map.decide(c.score, a.steps, method);
        rows.push(GradedRow {
            grade: g.grade,
            prompt: g.prompt.clone(),
            score: c.score,
            factors: c.factors,
            level: b.level,
            steps: b.steps,
            scorer: c.scorer,
        });
    }
    let grades: Vec<f64> = rows.iter().map(|r| f64::from(r.grade)).collect();
    let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
    let rho = spearman(&scores, &grades);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "set": path,
                "requested": engine.requested(),
                "fallbacks": fallbacks,
                "spearman_rho": rho,
                "prompts": rows,
            }))?
        );
        return Ok(());
    }
    println!("grade  score  level  steps  scorer     prompt");
    for r in &rows {
        println!(
            "{:>5}  {:>5.2}  {:>5}  {:>5}  {:<9}  {}",
            r.grade,
            r.score,
            r.level,
            r.steps,
            r.scorer.name(),
            r.prompt
        );
    }
    println!(
        "Spearman rho of score against grade: {rho:.3} over {} prompts ({} scorer{})",
        rows.len(),
        engine.requested().name(),
        if fallbacks > 0 {
            format!(", {fallbacks} fell back to the heuristic")
        } else {
            String::new()
        }
    );
    Ok(())
}
