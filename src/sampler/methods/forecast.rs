//! `adaptive+forecast`: AdaptiveDiffusion's decisions ([`super::adaptive`]); a skipped step
//! forecasts each guidance half to first order from the last two computed predictions,
//! `ε̂_s = ε_c + (ε_c − ε_c′)·(s − c)/(c − c′)`, instead of reusing the last one. Our own
//! variant, measured against plain reuse.

use super::adaptive::{KEYS, ThirdOrderRule};
use super::{Key, MethodDef, RunInfo, StepRule};
use crate::sampler::method::Method;
use anyhow::Result;

/// AdaptiveDiffusion + a first-order forecast on skipped steps.
pub struct AdaptiveForecast;

impl MethodDef for AdaptiveForecast {
    fn name(&self) -> &'static str {
        "adaptive+forecast"
    }
    fn title(&self) -> &'static str {
        "AdaptiveDiffusion + forecast"
    }
    fn short(&self) -> &'static str {
        "Adaptive"
    }
    fn about(&self) -> &'static str {
        "AdaptiveDiffusion's skip decisions; a skipped step extrapolates each guidance half from the last two computed predictions (this project's variant)"
    }
    fn keys(&self) -> &'static [Key] {
        &KEYS
    }
    fn describe(&self, m: &Method) -> String {
        format!(
            "forecast · δ {} · C_max {}",
            m.shown("delta"),
            m.shown("max_skips")
        )
    }
    fn rule(&self, m: &Method, _: &RunInfo) -> Result<Box<dyn StepRule>> {
        Ok(Box::new(ThirdOrderRule::new(m, true)))
    }
}
