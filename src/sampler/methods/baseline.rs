//! The baseline: every step calls the noise predictor (the reference of every comparison).

use super::{EveryStep, Key, MethodDef, RunInfo, StepRule};
use crate::sampler::method::Method;
use anyhow::Result;

/// Every step.
pub struct Baseline;

impl MethodDef for Baseline {
    fn name(&self) -> &'static str {
        "baseline"
    }
    fn title(&self) -> &'static str {
        "Baseline (every step)"
    }
    fn short(&self) -> &'static str {
        "Baseline"
    }
    fn about(&self) -> &'static str {
        "Every step calls the noise predictor: the full-step reference"
    }
    fn keys(&self) -> &'static [Key] {
        &[]
    }
    fn saves_work(&self) -> bool {
        false
    }
    fn rule(&self, _: &Method, _: &RunInfo) -> Result<Box<dyn StepRule>> {
        Ok(Box::new(EveryStep))
    }
}
