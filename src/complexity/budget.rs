//! From a complexity score to the adaptive run's budget: steps, and optionally δ and C_max.
//!
//! The default mapping is the reference project's: five levels of the score (equal fifths
//! of [0, 1]) with 14 / 16 / 22 / 28 / 34 steps, inside 5–50, for a 50-step baseline. For
//! another baseline every step count is scaled by `baseline / reference_steps` (rounded,
//! at least 1, at most the baseline). With `scale_policy`, each level also multiplies δ and
//! shifts C_max: simple prompts may skip more, complex ones less.

use super::engine::Complexity;
use crate::field::{Field, FieldError, NAME};
use crate::sampler::Method;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One level of the mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetLevel {
    /// Lowest score of the level (inclusive); the first level starts at 0.
    pub min_score: f64,
    /// Steps at the reference baseline (`reference_steps`).
    pub steps: usize,
    /// δ multiplier, applied when the mapping's `scale_policy` is on.
    #[serde(default = "one")]
    pub delta_scale: f64,
    /// Added to C_max (result at least 1) when `scale_policy` is on.
    #[serde(default)]
    pub max_skips_offset: i32,
}

fn one() -> f64 {
    1.0
}

/// Score → budget, clearly parameterised and serialisable (`--budget-map FILE` reads it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetMap {
    /// The baseline the level steps are written for.
    pub reference_steps: usize,
    /// Fewest steps at the reference baseline.
    pub min_steps: usize,
    /// Most steps at the reference baseline.
    pub max_steps: usize,
    /// The levels, by increasing `min_score`.
    pub levels: Vec<BudgetLevel>,
    /// Also scale δ and C_max per level.
    #[serde(default)]
    pub scale_policy: bool,
}

impl Default for BudgetMap {
    fn default() -> Self {
        let level = |min_score, steps, delta_scale, max_skips_offset| BudgetLevel {
            min_score,
            steps,
            delta_scale,
            max_skips_offset,
        };
        Self {
            reference_steps: 50,
            min_steps: 5,
            max_steps: 50,
            levels: vec![
                level(0.0, 14, 1.5, 1),
                level(0.2, 16, 1.25, 1),
                level(0.4, 22, 1.0, 0),
                level(0.6, 28, 0.85, 0),
                level(0.8, 34, 0.7, -1),
            ],
            scale_policy: false,
        }
    }
}

/// The budget chosen for one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Level of the score, 1-based.
    pub level: usize,
    /// Number of levels.
    pub levels: usize,
    /// The fixed budget (`--steps`) the baseline keeps.
    pub baseline_steps: usize,
    /// Steps of the adaptive run.
    pub steps: usize,
    /// δ of the adaptive run (scaled when `policy_scaled`).
    pub delta: Option<f64>,
    /// C_max of the adaptive run (shifted when `policy_scaled`).
    pub max_skips: Option<usize>,
    /// Whether δ and C_max were scaled by the level.
    pub policy_scaled: bool,
    /// The mapping that decided.
    pub mapping: BudgetMap,
}

impl Budget {
    /// `method` (the run's method as asked) with this budget's δ and C_max.
    pub fn method(&self, method: Method) -> Method {
        match (self.delta, self.max_skips) {
            (Some(delta), Some(max_skips)) => method.with_adaptive_rule(delta, max_skips),
            _ => method,
        }
    }
}

/// A complexity verdict and the budget it led to: what reports record under `complexity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComplexityBudget {
    /// Score, factors, rationale, the scorer that decided and any fallback.
    #[serde(flatten)]
    pub complexity: Complexity,
    /// The chosen budget.
    pub budget: Budget,
}

impl BudgetMap {
    /// Read a mapping from a JSON file and check it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let field = |problem: String| FieldError::new(Field::BudgetMap, problem);
        let text = std::fs::read_to_string(path)
            .map_err(|e| field(format!("cannot read {NAME} {}: {e}", path.display())))?;
        let map: Self = serde_json::from_str(&text).map_err(|e| {
            field(format!(
                "{} is not a budget mapping (JSON with reference_steps, min_steps, max_steps, levels): {e}",
                path.display()
            ))
        })?;
        map.validate()
            .map_err(|e| field(format!("{}: {e}", path.display())))?;
        Ok(map)
    }

    /// Check the mapping's invariants.
    pub fn validate(&self) -> Result<()> {
        if self.reference_steps == 0 {
            bail!("reference_steps must be at least 1");
        }
        if self.min_steps == 0 || self.min_steps > self.max_steps {
            bail!(
                "need 1 ≤ min_steps ≤ max_steps (got {} and {})",
                self.min_steps,
                self.max_steps
            );
        }
        let Some(first) = self.levels.first() else {
            bail!("levels is empty");
        };
        if first.min_score != 0.0 {
            bail!(
                "the first level must start at score 0 (got {})",
                first.min_score
            );
        }
        for (i, l) in self.levels.iter().enumerate() {
            if !(0.0..=1.0).contains(&l.min_score) {
                bail!("level {}: min_score {} is outside 0–1", i + 1, l.min_score);
            }
            if !(l.min_steps_ok(self)) {
                bail!(
                    "level {}: {} steps is outside {}–{}",
                    i + 1,
                    l.steps,
                    self.min_steps,
                    self.max_steps
                );
            }
            if !(l.delta_scale > 0.0 && l.delta_scale.is_finite()) {
                bail!(
                    "level {}: delta_scale must be > 0 (got {})",
                    i + 1,
                    l.delta_scale
                );
            }
            if i > 0 {
                let prev = &self.levels[i - 1];
                if l.min_score <= prev.min_score {
                    bail!("level {}: min_score must increase", i + 1);
                }
                if l.steps < prev.steps {
                    bail!(
                        "level {}: steps must not decrease with complexity ({} after {})",
                        i + 1,
                        l.steps,
                        prev.steps
                    );
                }
            }
        }
        Ok(())
    }

    /// The 0-based level of a score.
    pub fn level_of(&self, score: f64) -> usize {
        self.levels
            .iter()
            .rposition(|l| score >= l.min_score)
            .unwrap_or(0)
    }

    /// Scale a step count written for `reference_steps` to `baseline_steps`.
    fn scale(&self, steps: usize, baseline_steps: usize) -> usize {
        let s = steps as f64 * baseline_steps as f64 / self.reference_steps as f64;
        (s.round() as usize).max(1)
    }

    /// The budget for a score, relative to the fixed budget `baseline_steps`, from the
    /// adaptive method the job asked for.
    pub fn decide(&self, score: f64, baseline_steps: usize, method: Method) -> Budget {
        let i = self.level_of(score);
        let level = &self.levels[i];
        let lo = self
            .scale(self.min_steps, baseline_steps)
            .min(baseline_steps);
        let hi = self
            .scale(self.max_steps, baseline_steps)
            .clamp(lo, baseline_steps.max(lo));
        let steps = self.scale(level.steps, baseline_steps).clamp(lo, hi);
        let (delta, max_skips) = match method.adaptive_rule() {
            Some((delta, max_skips)) if self.scale_policy => (
                Some(delta * level.delta_scale),
                Some((max_skips as i64 + i64::from(level.max_skips_offset)).max(1) as usize),
            ),
            Some((delta, max_skips)) => (Some(delta), Some(max_skips)),
            None => (None, None),
        };
        Budget {
            level: i + 1,
            levels: self.levels.len(),
            baseline_steps,
            steps,
            delta,
            max_skips,
            policy_scaled: self.scale_policy && delta.is_some(),
            mapping: self.clone(),
        }
    }
}

impl BudgetLevel {
    fn min_steps_ok(&self, map: &BudgetMap) -> bool {
        (map.min_steps..=map.max_steps).contains(&self.steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_levels_at_50_and_scaled() {
        let m = BudgetMap::default();
        m.validate().unwrap();
        let p = Method::adaptive(0.01, 4);
        let steps: Vec<usize> = [0.0, 0.2, 0.45, 0.7, 1.0]
            .iter()
            .map(|&s| m.decide(s, 50, p).steps)
            .collect();
        assert_eq!(steps, vec![14, 16, 22, 28, 34]);
        let steps: Vec<usize> = [0.0, 0.2, 0.45, 0.7, 1.0]
            .iter()
            .map(|&s| m.decide(s, 25, p).steps)
            .collect();
        assert_eq!(steps, vec![7, 8, 11, 14, 17]);
        assert_eq!(m.decide(0.0, 2, p).steps, 1);
        assert_eq!(m.decide(0.19999, 50, p).level, 1);
        assert_eq!(m.decide(0.2, 50, p).level, 2);
        let b = m.decide(1.0, 50, p);
        assert_eq!(
            (b.delta, b.max_skips, b.policy_scaled),
            (Some(0.01), Some(4), false)
        );
    }

    #[test]
    fn policy_scaling_and_validation() {
        let m = BudgetMap {
            scale_policy: true,
            ..BudgetMap::default()
        };
        let p = Method::adaptive(0.01, 4);
        let lo = m.decide(0.0, 50, p);
        let hi = m.decide(0.9, 50, p);
        assert_eq!(lo.max_skips, Some(5));
        assert_eq!(hi.max_skips, Some(3));
        assert!(lo.delta.unwrap() > 0.01 && hi.delta.unwrap() < 0.01);
        let (delta, max_skips) = hi.method(p).adaptive_rule().unwrap();
        assert!(
            (delta - 0.007).abs() < 1e-12 && max_skips == 3,
            "{delta} {max_skips}"
        );

        let mut bad = BudgetMap::default();
        bad.levels[2].steps = 10;
        assert!(bad.validate().is_err());
        let json = serde_json::to_string(&BudgetMap::default()).unwrap();
        let back: BudgetMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, BudgetMap::default());
    }
}
