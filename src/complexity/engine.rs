//! The scorer front end used by the command line and the GUI: the requested scorer, the
//! heuristic fallback, and a per-run cache.

use super::heuristic::HeuristicScorer;
use super::ollama::{OllamaConfig, OllamaScorer};
use super::{Assessment, Factors, Scorer, ScorerKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The complexity of one prompt as decided, with who decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Complexity {
    /// Sum of the factors over its maximum, 0–1.
    pub score: f64,
    /// The factors, each 0–3.
    pub factors: Factors,
    /// Why (the LLM's words, or the heuristic's matched words).
    pub rationale: String,
    /// The scorer that decided.
    pub scorer: ScorerKind,
    /// Its model, for the Ollama scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The scorer that was asked for.
    pub requested: ScorerKind,
    /// Why the requested scorer was not used, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Adjustments on the way (instructions removed from the prompt, clamped factors, retries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Served from the cache.
    pub cached: bool,
    /// Time to decide, milliseconds.
    pub elapsed_ms: f64,
}

impl Complexity {
    /// `ollama (qwen2.5:1.5b-instruct)` / `heuristic (fallback: ...)`.
    pub fn scorer_label(&self) -> String {
        let mut s = match &self.model {
            Some(m) => format!("{} ({m})", self.scorer.name()),
            None => self.scorer.name().to_owned(),
        };
        if let Some(why) = &self.fallback {
            s.push_str(&format!(
                " — fallback from {}: {why}",
                self.requested.name()
            ));
        }
        s
    }
}

type CacheKey = (ScorerKind, String, String);

/// Scores prompts with the requested scorer, falling back to the heuristic visibly, and
/// caches each scorer's verdicts per (scorer, model, prompt) for the life of the engine.
/// Failures are not cached: a later call tries the requested scorer again.
pub struct ComplexityEngine {
    requested: ScorerKind,
    primary: Option<Box<dyn Scorer>>,
    heuristic: HeuristicScorer,
    cache: Mutex<HashMap<CacheKey, Assessment>>,
}

impl std::fmt::Debug for ComplexityEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComplexityEngine")
            .field("requested", &self.requested)
            .field("model", &self.primary.as_ref().and_then(|p| p.model()))
            .finish()
    }
}

impl ComplexityEngine {
    /// The offline heuristic alone.
    pub fn heuristic() -> Self {
        Self {
            requested: ScorerKind::Heuristic,
            primary: None,
            heuristic: HeuristicScorer,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Ollama, with the heuristic as fallback. Fails only on an unusable configuration
    /// (a malformed URL, a zero timeout); an unreachable server shows up as a fallback.
    pub fn ollama(cfg: OllamaConfig) -> anyhow::Result<Self> {
        Ok(Self::with_scorer(Box::new(OllamaScorer::new(cfg)?)))
    }

    /// Any scorer, with the heuristic as fallback.
    pub fn with_scorer(primary: Box<dyn Scorer>) -> Self {
        Self {
            requested: primary.kind(),
            primary: Some(primary),
            heuristic: HeuristicScorer,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The scorer asked for.
    pub fn requested(&self) -> ScorerKind {
        self.requested
    }

    fn cached(&self, scorer: &dyn Scorer, prompt: &str) -> (Result<Assessment, String>, bool) {
        let key = (
            scorer.kind(),
            scorer.model().unwrap_or_default().to_owned(),
            prompt.to_owned(),
        );
        if let Some(a) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return (Ok(a), true);
        }
        match scorer.assess(prompt) {
            Ok(a) => {
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(key, a.clone());
                }
                (Ok(a), false)
            }
            Err(e) => (Err(e.to_string()), false),
        }
    }

    /// Score a prompt. Never fails: when the requested scorer cannot answer, the heuristic
    /// does, and [`Complexity::fallback`] says why.
    pub fn score(&self, prompt: &str) -> Complexity {
        let t0 = Instant::now();
        let mut fallback = None;
        if let Some(p) = &self.primary {
            match self.cached(p.as_ref(), prompt) {
                (Ok(a), cached) => {
                    return Self::finish(a, p.kind(), p.model(), self.requested, None, cached, t0);
                }
                (Err(why), _) => fallback = Some(why),
            }
        }
        let (a, cached) = match self.cached(&self.heuristic, prompt) {
            (Ok(a), cached) => (a, cached),
            // The heuristic cannot fail; keep the type honest anyway.
            (Err(why), _) => (
                Assessment {
                    factors: Factors::default(),
                    rationale: format!("heuristic failed: {why}"),
                    notes: Vec::new(),
                },
                false,
            ),
        };
        Self::finish(
            a,
            ScorerKind::Heuristic,
            None,
            self.requested,
            fallback,
            cached,
            t0,
        )
    }

    fn finish(
        a: Assessment,
        scorer: ScorerKind,
        model: Option<&str>,
        requested: ScorerKind,
        fallback: Option<String>,
        cached: bool,
        t0: Instant,
    ) -> Complexity {
        Complexity {
            score: a.factors.score(),
            factors: a.factors,
            rationale: a.rationale,
            scorer,
            model: model.map(str::to_owned),
            requested,
            fallback,
            notes: a.notes,
            cached,
            elapsed_ms: t0.elapsed().as_secs_f64() * 1e3,
        }
    }
}
