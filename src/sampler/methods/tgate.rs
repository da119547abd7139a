//! T-GATE's schedule (HaozheLiu-ST/T-GATE, `tgate/tgate_utils.py` `tgate_scheduler` and
//! `tgate/SD.py`; identical in PyPI `tgate` 1.0.0): per step, whether each attention layer
//! computes, caches or reuses its output, and whether the UNet still runs both guidance
//! halves. The sampler decides the plan of every step; the model carries it out.
//!
//! Before the gate step `g` the UNet runs both halves: cross-attention computes;
//! self-attention computes for `s < warm_up`, computes and caches at `s == warm_up` and
//! whenever `s % sp_interval == 0`, and otherwise reuses its cache. At `s == g − 1` every
//! attention layer computes and caches the mean of its two halves. From `s ≥ g` the UNet
//! runs one batch on the negative prompt, cross-attention reuses the cached mean,
//! self-attention computes and caches when `s % fi_interval == 0` (else reuses), and no
//! guidance is applied (ε is the UNet's output). A cached attention output is taken after
//! `to_out`, before the residual addition.

use super::{Choice, Key, KeyKind, MethodDef, Notes, RunInfo, SliderMax, Step, StepRule};
use crate::sampler::denoise::CallPlan;
use crate::sampler::method::Method;
use crate::sampler::trace::Decision;
use anyhow::Result;

/// The official names and defaults (its `tgate_scheduler`'s).
const KEYS: [Key; 4] = [
    Key::new("gate_step", KeyKind::Count, 10.0, 1.0, f64::INFINITY)
        .aliases(&["gate", "tgate.gate_step"])
        .described(
            "gate step",
            "From this step on, cross-attention is cached and guidance dropped",
        )
        .unit("steps")
        .slider(1.0, SliderMax::Steps, false),
    Key::new("sp_interval", KeyKind::Count, 5.0, 1.0, f64::INFINITY)
        .aliases(&["tgate.sp_interval"])
        .described(
            "sp_interval",
            "Self-attention refresh interval before the gate",
        )
        .unit("steps"),
    Key::new("fi_interval", KeyKind::Count, 1.0, 1.0, f64::INFINITY)
        .aliases(&["tgate.fi_interval"])
        .described(
            "fi_interval",
            "Self-attention refresh interval after the gate",
        )
        .unit("steps"),
    Key::new("warm_up", KeyKind::Count, 2.0, 0.0, f64::INFINITY)
        .aliases(&["tgate.warm_up"])
        .described("warm_up", "Steps that always compute self-attention")
        .unit("steps"),
];

/// T-GATE.
pub struct TGate;

impl MethodDef for TGate {
    fn name(&self) -> &'static str {
        "tgate"
    }
    fn title(&self) -> &'static str {
        "T-GATE"
    }
    fn short(&self) -> &'static str {
        "T-GATE"
    }
    fn about(&self) -> &'static str {
        "T-GATE (Liu et al., 2024; HaozheLiu-ST/T-GATE): cross-attention cached after the gate step and guidance dropped, self-attention refreshed at intervals"
    }
    fn keys(&self) -> &'static [Key] {
        &KEYS
    }
    fn describe(&self, m: &Method) -> String {
        format!(
            "gate {} · sp {} · fi {} · warm-up {}",
            m.count("gate_step"),
            m.count("sp_interval"),
            m.count("fi_interval"),
            m.count("warm_up")
        )
    }
    fn rule(&self, m: &Method, _: &RunInfo) -> Result<Box<dyn StepRule>> {
        Ok(Box::new(TGateRule {
            gate: m.count("gate_step"),
            sp_interval: m.count("sp_interval"),
            fi_interval: m.count("fi_interval"),
            warm_up: m.count("warm_up"),
        }))
    }
}

struct TGateRule {
    gate: usize,
    sp_interval: usize,
    fi_interval: usize,
    warm_up: usize,
}

impl StepRule for TGateRule {
    fn before(&mut self, step: &Step<'_>, _: &mut Notes) -> Result<Choice> {
        let plan = TGatePlan::for_step(
            step.index,
            self.gate,
            self.sp_interval,
            self.fi_interval,
            self.warm_up,
        );
        let partial = plan.after_gate || plan.self_attn.reuse;
        Ok(Choice::Call {
            decision: if partial {
                Decision::Partial
            } else {
                Decision::Computed
            },
            plan: Some(CallPlan::TGate(plan)),
        })
    }
}

/// Whether an attention kind computes-and-caches, or reuses its cache (neither: computes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttentionGate {
    /// Compute, and keep the output.
    pub cache: bool,
    /// Return the kept output instead of computing (when one is kept).
    pub reuse: bool,
}

/// What one UNet call of a T-GATE run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TGatePlan {
    /// Cross-attention.
    pub cross: AttentionGate,
    /// Self-attention.
    pub self_attn: AttentionGate,
    /// Cache the mean of the two guidance halves instead of both (`keep_shape = False`).
    pub mean: bool,
    /// Past the gate: one batch on the negative prompt, no guidance.
    pub after_gate: bool,
}

const COMPUTE: AttentionGate = AttentionGate {
    cache: false,
    reuse: false,
};
const CACHE: AttentionGate = AttentionGate {
    cache: true,
    reuse: false,
};
const REUSE: AttentionGate = AttentionGate {
    cache: false,
    reuse: true,
};

impl TGatePlan {
    /// The plan of step `s` (0-based).
    pub fn for_step(
        s: usize,
        gate: usize,
        sp_interval: usize,
        fi_interval: usize,
        warm_up: usize,
    ) -> Self {
        let every = |interval: usize| s.is_multiple_of(interval.max(1));
        if s + 1 < gate {
            let self_attn = if s < warm_up {
                COMPUTE
            } else if s == warm_up || every(sp_interval) {
                CACHE
            } else {
                REUSE
            };
            TGatePlan {
                cross: COMPUTE,
                self_attn,
                mean: false,
                after_gate: false,
            }
        } else if s + 1 == gate {
            TGatePlan {
                cross: CACHE,
                self_attn: CACHE,
                mean: true,
                after_gate: false,
            }
        } else {
            TGatePlan {
                cross: REUSE,
                self_attn: if every(fi_interval) { CACHE } else { REUSE },
                mean: false,
                after_gate: true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_follows_tgate_scheduler() {
        // The defaults: gate 10, sp 5, fi 1, warm-up 2.
        let p = |s| TGatePlan::for_step(s, 10, 5, 1, 2);
        assert_eq!(p(0).self_attn, COMPUTE);
        assert_eq!(p(2).self_attn, CACHE, "the warm-up step caches");
        assert_eq!(p(3).self_attn, REUSE);
        assert_eq!(p(5).self_attn, CACHE, "every sp_interval-th step refreshes");
        assert!(p(8).cross == COMPUTE && !p(8).after_gate);
        let g = p(9);
        assert!(g.cross == CACHE && g.self_attn == CACHE && g.mean && !g.after_gate);
        let after = p(10);
        assert!(after.after_gate && after.cross == REUSE && after.self_attn == CACHE);
        let p2 = |s| TGatePlan::for_step(s, 6, 2, 2, 1);
        assert_eq!(p2(7).self_attn, REUSE, "fi_interval 2: odd steps reuse");
        assert_eq!(p2(8).self_attn, CACHE);
    }
}
