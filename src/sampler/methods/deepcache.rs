//! DeepCache's schedule (horseee/DeepCache, `DeepCache/extension/deepcache.py`,
//! `DeepCacheSDHelper`; identical in PyPI `DeepCache` 0.1.1): which UNet modules a step
//! recomputes and which return their output of the last full step. The sampler decides the
//! plan of every step; the model ([`crate::model`]) carries it out.
//!
//! The helper wraps every down block's resnets and attentions (layer `j`), its downsampler
//! (layer = its number of resnets) and the whole block (layer 0); the mid block; every up
//! block's resnets and attentions, numbered from the end (block `B − 1 − i`, layer
//! `L − 1 − j`), its upsampler and the whole block (layer 0). `cache_branch_id` b names
//! block `b / 3`, layer `b % 3`. With the uniform schedule step `s` is full when
//! `s % cache_interval == 0`; otherwise a wrapped module returns its cached output when its
//! block is deeper than the branch's, when it is the mid block, or in the branch's block
//! when its layer is at or past the branch's layer (down) / past it (up). A quirk kept from
//! the official code: at step index 50 every wrapped module returns its cache.

use super::{Choice, Key, KeyKind, MethodDef, Notes, RunInfo, SliderMax, Step, StepRule};
use crate::sampler::denoise::CallPlan;
use crate::sampler::method::Method;
use crate::sampler::trace::Decision;
use anyhow::Result;

/// `cache_interval` and `cache_branch_id`, with the defaults of DeepCache's README
/// (`cache_interval=3, cache_branch_id=0`; the helper's own default interval, 1, would cache
/// nothing).
const KEYS: [Key; 2] = [
    Key::new("interval", KeyKind::Count, 3.0, 1.0, f64::INFINITY)
        .described(
            "interval",
            "cache_interval: every interval-th step runs the whole UNet; the others only its shallow branch",
        )
        .unit("steps")
        .slider(1.0, SliderMax::Value(10.0), false),
    Key::new("branch", KeyKind::Count, 0.0, 0.0, 11.0)
        .described(
            "branch",
            "cache_branch_id: where the shallow branch ends (block branch / 3, layer branch % 3)",
        )
        .slider(0.0, SliderMax::Value(11.0), false),
];

/// DeepCache.
pub struct DeepCache;

impl MethodDef for DeepCache {
    fn name(&self) -> &'static str {
        "deepcache"
    }
    fn title(&self) -> &'static str {
        "DeepCache"
    }
    fn short(&self) -> &'static str {
        "DeepCache"
    }
    fn about(&self) -> &'static str {
        "DeepCache (Ma et al., CVPR 2024; horseee/DeepCache, DeepCacheSDHelper): between full steps the UNet's deep modules return their cached outputs"
    }
    fn keys(&self) -> &'static [Key] {
        &KEYS
    }
    fn rule(&self, m: &Method, _: &RunInfo) -> Result<Box<dyn StepRule>> {
        Ok(Box::new(DeepCacheRule {
            interval: m.count("interval"),
            branch: m.count("branch"),
        }))
    }
}

struct DeepCacheRule {
    interval: usize,
    branch: usize,
}

impl StepRule for DeepCacheRule {
    fn before(&mut self, step: &Step<'_>, _: &mut Notes) -> Result<Choice> {
        let plan = DeepCachePlan::for_step(step.index, self.interval, self.branch);
        Ok(Choice::Call {
            decision: if plan.full {
                Decision::Computed
            } else {
                Decision::Partial
            },
            plan: Some(CallPlan::DeepCache(plan)),
        })
    }
}

/// Where a wrapped module sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UNetPart {
    /// A down block (or one of its modules).
    Down,
    /// The mid block.
    Mid,
    /// An up block (or one of its modules); block and layer numbered from the end.
    Up,
}

/// What one UNet call of a DeepCache run computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeepCachePlan {
    /// Every module computes (and refreshes its cache).
    pub full: bool,
    /// The branch's block (`cache_branch_id / 3`).
    pub block: usize,
    /// The branch's layer (`cache_branch_id % 3`).
    pub layer: usize,
    /// Every wrapped module returns its cache (the official code's step-50 quirk).
    pub all_cached: bool,
}

impl DeepCachePlan {
    /// The plan of step `step` (0-based) with `interval` and `branch`.
    pub fn for_step(step: usize, interval: usize, branch: usize) -> Self {
        Self {
            full: step.is_multiple_of(interval.max(1)),
            block: branch / 3,
            layer: branch % 3,
            all_cached: step == 50,
        }
    }

    /// Whether the wrapped module at (`part`, `block`, `layer`) returns its cached output.
    pub fn skips(&self, part: UNetPart, block: usize, layer: usize) -> bool {
        if self.all_cached {
            return true;
        }
        if self.full {
            return false;
        }
        if block > self.block || part == UNetPart::Mid {
            return true;
        }
        if block < self.block {
            return false;
        }
        match part {
            UNetPart::Down => layer >= self.layer,
            UNetPart::Up | UNetPart::Mid => layer > self.layer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UNetPart::*;

    #[test]
    fn the_branch_splits_the_unet_as_the_helper_does() {
        assert!(DeepCachePlan::for_step(3, 3, 0).full);
        let p = DeepCachePlan::for_step(4, 3, 0);
        assert!(!p.full);
        // Branch 0: the whole first down block is cached, only the last module of the last
        // up block (layer 0 counted from the end) computes.
        assert!(p.skips(Down, 0, 0));
        assert!(!p.skips(Up, 0, 0) && p.skips(Up, 0, 1));
        assert!(p.skips(Mid, 0, 0) && p.skips(Down, 1, 0) && p.skips(Up, 1, 0));
        // Branch 4 = block 1, layer 1: block 0 computes, block 1's layer 0 too.
        let p = DeepCachePlan::for_step(1, 2, 4);
        assert!(!p.skips(Down, 0, 2) && !p.skips(Up, 0, 2));
        assert!(!p.skips(Down, 1, 0) && p.skips(Down, 1, 1));
        assert!(!p.skips(Up, 1, 1) && p.skips(Up, 1, 2));
        // A full step computes everything; step 50 (the official quirk) nothing.
        assert!(!DeepCachePlan::for_step(6, 3, 0).skips(Mid, 0, 0));
        assert!(DeepCachePlan::for_step(50, 1, 0).skips(Down, 0, 0));
    }
}
