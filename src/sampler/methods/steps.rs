//! `steps`: the same scheduler with fewer steps, every one computed — the control every
//! accelerator must beat at the same number of calls.

use super::{EveryStep, Key, KeyKind, MethodDef, RunInfo, SliderMax, StepRule};
use crate::sampler::method::Method;
use anyhow::Result;

const KEYS: [Key; 1] = [Key::new("n", KeyKind::Count, 25.0, 1.0, f64::INFINITY)
    .required()
    .described(
        "steps",
        "The same scheduler with this many steps, every one computed",
    )
    .unit("steps")
    .slider(1.0, SliderMax::Steps, false)];

/// Fewer steps.
pub struct Steps;

impl MethodDef for Steps {
    fn name(&self) -> &'static str {
        "steps"
    }
    fn title(&self) -> &'static str {
        "Fewer steps (control)"
    }
    fn short(&self) -> &'static str {
        "Fewer steps"
    }
    fn about(&self) -> &'static str {
        "The same scheduler with fewer steps, every one computed: the control an accelerator must beat"
    }
    fn keys(&self) -> &'static [Key] {
        &KEYS
    }
    fn saves_work(&self) -> bool {
        false
    }
    fn own_steps(&self, m: &Method) -> Option<usize> {
        Some(m.count("n"))
    }
    fn describe(&self, m: &Method) -> String {
        format!("{} steps", m.count("n"))
    }
    fn rule(&self, _: &Method, _: &RunInfo) -> Result<Box<dyn StepRule>> {
        Ok(Box::new(EveryStep))
    }
}
