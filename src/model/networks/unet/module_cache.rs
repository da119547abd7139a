//! What partial UNet calls keep between calls — DeepCache's module outputs, T-GATE's
//! attention outputs — and the plan of the next call.

use crate::sampler::{CallPlan, DeepCachePlan, UNetPart};
use anyhow::{Result, bail};
use candle_core::Tensor;
use std::collections::HashMap;

type CResult<T> = candle_core::Result<T>;

/// The modules DeepCache wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(in crate::model::networks) enum Wrapped {
    Resnet,
    Attention,
    /// A down block's downsampler or an up block's upsampler.
    Sampler,
    /// A whole block.
    Block,
}

/// What partial UNet calls keep between calls — DeepCache's module outputs, T-GATE's
/// attention outputs — and the plan of the next call. The default (no plan) keeps nothing
/// and computes everything.
#[derive(Default)]
pub struct ModuleCache {
    pub(super) plan: Option<CallPlan>,
    pub(super) store: HashMap<(UNetPart, Wrapped, usize, usize), Vec<Tensor>>,
    /// T-GATE: the kept output of every attention layer, in call order.
    pub(super) attention: Vec<Option<Tensor>>,
    /// The next attention layer of the current call.
    pub(super) attention_index: usize,
}

impl ModuleCache {
    /// The plan of the next call (`None`: compute everything, keep nothing).
    pub fn set_plan(&mut self, plan: Option<CallPlan>) {
        self.plan = plan;
    }

    /// The plan of the next call.
    pub fn plan(&self) -> Option<CallPlan> {
        self.plan
    }

    pub(super) fn deepcache(&self) -> Option<DeepCachePlan> {
        match self.plan {
            Some(CallPlan::DeepCache(p)) => Some(p),
            _ => None,
        }
    }

    pub(super) fn is_on(&self) -> bool {
        self.deepcache().is_some()
    }

    pub(in crate::model::networks) fn begin_call(&mut self) {
        self.attention_index = 0;
    }

    /// An attention layer's output plus `residual`: under T-GATE computed, kept or taken
    /// from the cache as the plan says; `compute(r)` is the layer with residual `r` added
    /// (or none).
    pub(super) fn attention(
        &mut self,
        cross: bool,
        residual: &Tensor,
        compute: impl FnOnce(Option<&Tensor>) -> CResult<Tensor>,
    ) -> CResult<Tensor> {
        let Some(CallPlan::TGate(plan)) = self.plan else {
            return compute(Some(residual));
        };
        let index = self.attention_index;
        self.attention_index += 1;
        if self.attention.len() <= index {
            self.attention.resize(index + 1, None);
        }
        let gate = if cross { plan.cross } else { plan.self_attn };
        if gate.reuse
            && let Some(kept) = &self.attention[index]
        {
            return kept + residual;
        }
        let out = compute(None)?;
        if gate.cache {
            self.attention[index] = Some(if plan.mean {
                // The mean of the [uncond; cond] halves (a clip's frames: each half's frames).
                let half = out.dim(0)? / 2;
                ((out.narrow(0, 0, half)? + out.narrow(0, half, half)?)? / 2.0)?
            } else {
                out.clone()
            });
        }
        out + residual
    }

    /// The branch must name a block of this UNet.
    pub(in crate::model::networks) fn check_fits(&self, blocks: usize) -> Result<()> {
        if let Some(p) = self.deepcache()
            && p.block >= blocks
        {
            bail!(
                "deepcache: branch {} names block {} but this UNet has {blocks} down blocks (branches 0–{})",
                p.block * 3 + p.layer,
                p.block,
                blocks * 3 - 1
            );
        }
        Ok(())
    }

    /// The cached output of a module the plan skips (an error when none was kept yet).
    pub(super) fn cached(
        &self,
        part: UNetPart,
        module: Wrapped,
        block: usize,
        layer: usize,
    ) -> Option<CResult<Vec<Tensor>>> {
        let plan = self.deepcache()?;
        if !plan.skips(part, block, layer) {
            return None;
        }
        Some(
            self.store
                .get(&(part, module, block, layer))
                .cloned()
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "deepcache: no cached output of {part:?} block {block} {module:?} {layer} (the first step must be full)"
                    ))
                }),
        )
    }

    pub(super) fn keep(
        &mut self,
        part: UNetPart,
        module: Wrapped,
        block: usize,
        layer: usize,
        out: Vec<Tensor>,
    ) {
        if self.is_on() {
            self.store.insert((part, module, block, layer), out);
        }
    }

    /// A module's output: from the cache when the plan skips it, else computed (and kept).
    /// Down block `b` as DeepCache wraps it: from the cache (its output and the skip
    /// connections it pushed) when the plan says so, else `body`, whose output and pushed
    /// skips are kept.
    pub(in crate::model::networks) fn down_block(
        &mut self,
        b: usize,
        skips: &mut Vec<Tensor>,
        body: impl FnOnce(&mut Self, &mut Vec<Tensor>) -> CResult<Tensor>,
    ) -> CResult<Tensor> {
        if let Some(out) = self.cached(UNetPart::Down, Wrapped::Block, b, 0) {
            let out = out?;
            skips.extend(out[1..].iter().cloned());
            return Ok(out[0].clone());
        }
        let start = skips.len();
        let x = body(self, skips)?;
        if self.is_on() {
            let out: Vec<Tensor> = std::iter::once(x.clone())
                .chain(skips[start..].iter().cloned())
                .collect();
            self.keep(UNetPart::Down, Wrapped::Block, b, 0, out);
        }
        Ok(x)
    }

    /// Up block `b` (counted from the end) as DeepCache wraps it: from the cache, or `body`
    /// whose output is kept. (The caller has already popped the block's skip connections,
    /// as diffusers slices them before the call.)
    pub(in crate::model::networks) fn up_block(
        &mut self,
        b: usize,
        body: impl FnOnce(&mut Self) -> CResult<Tensor>,
    ) -> CResult<Tensor> {
        if let Some(out) = self.cached(UNetPart::Up, Wrapped::Block, b, 0) {
            return Ok(out?[0].clone());
        }
        let x = body(self)?;
        self.keep(UNetPart::Up, Wrapped::Block, b, 0, vec![x.clone()]);
        Ok(x)
    }

    pub(in crate::model::networks) fn step(
        &mut self,
        part: UNetPart,
        module: Wrapped,
        block: usize,
        layer: usize,
        compute: impl FnOnce(&mut Self) -> CResult<Tensor>,
    ) -> CResult<Tensor> {
        if let Some(out) = self.cached(part, module, block, layer) {
            return Ok(out?[0].clone());
        }
        let y = compute(self)?;
        self.keep(part, module, block, layer, vec![y.clone()]);
        Ok(y)
    }
}
