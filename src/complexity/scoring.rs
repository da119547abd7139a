//! The scorer and budget-mapping settings of a run ([`Scoring`]): which scorer rates the
//! prompt, which Ollama, which mapping. Plain data that the command line, the desktop app
//! and the benchmark all build; it makes the [`ComplexityEngine`] and the [`BudgetMap`].

use super::budget::{BudgetMap, ComplexityBudget};
use super::engine::ComplexityEngine;
use super::ollama::{DEFAULT_MODEL, DEFAULT_TIMEOUT_S, DEFAULT_URL, OllamaConfig};
use crate::field::{Field, FieldError};
use crate::sampler::Method;
use anyhow::Result;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Which scorer rates the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScorerKind {
    /// A local LLM through Ollama (falls back to the heuristic when unavailable).
    Ollama,
    /// Offline word lists and counts: instant and deterministic.
    Heuristic,
}

impl ScorerKind {
    /// `"ollama"` or `"heuristic"`.
    pub fn name(self) -> &'static str {
        match self {
            ScorerKind::Ollama => "ollama",
            ScorerKind::Heuristic => "heuristic",
        }
    }
}

/// How the adaptive run's step count is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BudgetMode {
    /// `--steps` as given.
    #[default]
    Fixed,
    /// From the prompt's complexity score, relative to `--steps` (the baseline keeps `--steps`).
    Auto,
}

/// Which scorer, which Ollama, which mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Scoring {
    /// Heuristic (offline) or Ollama (falls back to the heuristic, visibly).
    pub scorer: ScorerKind,
    /// Ollama server.
    pub ollama_url: String,
    /// Ollama model.
    pub ollama_model: String,
    /// Seconds to wait for each Ollama request.
    pub ollama_timeout_s: f64,
    /// A score-to-budget mapping file replacing the default levels.
    pub budget_map: Option<PathBuf>,
    /// Also scale δ and C_max with the complexity level.
    pub scale_policy: bool,
}

impl Default for Scoring {
    fn default() -> Self {
        Self {
            scorer: ScorerKind::Heuristic,
            ollama_url: DEFAULT_URL.into(),
            ollama_model: DEFAULT_MODEL.into(),
            ollama_timeout_s: DEFAULT_TIMEOUT_S,
            budget_map: None,
            scale_policy: false,
        }
    }
}

impl Scoring {
    /// The scorer front end these settings ask for.
    pub fn engine(&self) -> Result<ComplexityEngine> {
        if !(self.ollama_timeout_s > 0.0 && self.ollama_timeout_s.is_finite()) {
            return Err(FieldError::new(
                Field::OllamaTimeout,
                format!(
                    "must be a positive number of seconds (got {})",
                    self.ollama_timeout_s
                ),
            )
            .into());
        }
        match self.scorer {
            ScorerKind::Heuristic => Ok(ComplexityEngine::heuristic()),
            ScorerKind::Ollama => ComplexityEngine::ollama(OllamaConfig {
                url: self.ollama_url.clone(),
                model: self.ollama_model.clone(),
                timeout: Duration::from_secs_f64(self.ollama_timeout_s),
                ..OllamaConfig::default()
            }),
        }
    }

    /// The budget mapping these settings ask for.
    pub fn mapping(&self) -> Result<BudgetMap> {
        let mut map = match &self.budget_map {
            Some(p) => BudgetMap::from_file(p)?,
            None => BudgetMap::default(),
        };
        map.scale_policy |= self.scale_policy;
        Ok(map)
    }

    /// Score `prompt` with `engine` and choose the budget of a run of `method` relative to
    /// the fixed `baseline_steps`.
    pub fn decide(
        engine: &ComplexityEngine,
        map: &BudgetMap,
        prompt: &str,
        baseline_steps: usize,
        method: Method,
    ) -> ComplexityBudget {
        let complexity = engine.score(prompt);
        let budget = map.decide(complexity.score, baseline_steps, method);
        ComplexityBudget { complexity, budget }
    }
}
