//! The noise-predictor interface the sampler drives.

use super::methods::deepcache::DeepCachePlan;
use super::methods::tgate::TGatePlan;
use anyhow::Result;
use candle_core::Tensor;

/// One raw noise prediction: the conditional half and, with classifier-free guidance, the
/// unconditional half. Both are kept so that a reused prediction can have guidance re-applied.
#[derive(Debug, Clone)]
pub struct RawPrediction {
    /// ε for the negative / empty prompt, present when guidance is on.
    pub uncond: Option<Tensor>,
    /// ε for the prompt.
    pub cond: Tensor,
}

impl RawPrediction {
    /// Apply classifier-free guidance: `uncond + g · (cond − uncond)`, or `cond` without it.
    pub fn guided(&self, guidance: f64) -> Result<Tensor> {
        match &self.uncond {
            None => Ok(self.cond.clone()),
            Some(u) => Ok((u + ((&self.cond - u)? * guidance)?)?),
        }
    }
}

/// What a partial UNet call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPlan {
    /// DeepCache: deep modules from the cache.
    DeepCache(DeepCachePlan),
    /// T-GATE: attention computed, cached or reused; one batch past the gate.
    TGate(TGatePlan),
}

impl CallPlan {
    /// The method that plans such calls.
    pub fn method_name(&self) -> &'static str {
        match self {
            CallPlan::DeepCache(_) => "deepcache",
            CallPlan::TGate(_) => "tgate",
        }
    }
}

/// A noise predictor (a UNet with its conditioning already bound).
///
/// One call to [`Denoiser::predict`] is one noise-predictor call in the trace, even when the
/// implementation evaluates the conditional and unconditional halves as one batch.
pub trait Denoiser {
    /// Predict ε for the *scaled* model input `x` (the scheduler's `scale_model_input`
    /// output) at the scheduler timestep `timestep`.
    fn predict(&mut self, x: &Tensor, timestep: f64) -> Result<RawPrediction>;

    /// Plan the next call: with `Some`, a partial call (DeepCache's cached modules, T-GATE's
    /// cached attention). A noise predictor that cannot run partial calls refuses.
    fn plan_call(&mut self, plan: Option<CallPlan>) -> Result<()> {
        if let Some(p) = plan {
            anyhow::bail!(
                "{} needs the UNet's internals, which this noise predictor does not expose",
                p.method_name()
            );
        }
        Ok(())
    }

    /// Multiply-accumulates of one [`Denoiser::predict`] call on `x` (as planned), when the
    /// implementation can count them (the trace's cost of a run).
    fn call_macs(&self, _x: &Tensor) -> Option<u64> {
        None
    }
}
