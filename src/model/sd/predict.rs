//! The UNet call of each family — image, video (ModelScope), motion (AnimateDiff) — with
//! classifier-free guidance's two halves, and [`SdDenoiser`], the sampler's view of it.

use super::*;

use anyhow::{Result, ensure};
use candle_core::Tensor;

use crate::model::motion::MotionModules;
use crate::model::unet::{AddedCond, ModuleCache, UNet};
use crate::model::unet3d::UNet3D;
use crate::sampler::{CallPlan, Denoiser, RawPrediction};

/// A UNet output over the batch `[uncond; cond]` (guided) or `[cond]` as the two halves.
pub(super) fn split_guided(cond: &Conditioning, out: Tensor) -> Result<RawPrediction> {
    Ok(if cond.guided {
        RawPrediction {
            uncond: Some(out.narrow(0, 0, 1)?),
            cond: out.narrow(0, 1, 1)?,
        }
    } else {
        RawPrediction {
            uncond: None,
            cond: out,
        }
    })
}

impl StableDiffusion {
    /// Run the UNet once on `x` (batch 1, scaled model input).
    pub fn predict(&self, cond: &Conditioning, x: &Tensor, timestep: f64) -> Result<RawPrediction> {
        self.predict_cached(cond, x, timestep, &mut ModuleCache::default())
    }

    /// As [`StableDiffusion::predict`], the UNet's module outputs kept in (and, where its
    /// plan says, taken from) `cache`.
    pub fn predict_cached(
        &self,
        cond: &Conditioning,
        x: &Tensor,
        timestep: f64,
        cache: &mut ModuleCache,
    ) -> Result<RawPrediction> {
        if let Backbone::Video(unet) = &self.unet {
            return self.predict_video(unet, cond, x, timestep, cache);
        }
        if let Backbone::Motion(unet, modules) = &self.unet {
            return self.predict_motion(unet, modules, cond, x, timestep, cache);
        }
        let (b, _, h, w) = x.dims4()?;
        ensure!(
            b == 1,
            "the denoiser takes one latent at a time (got batch {b})"
        );
        let out_dtype = x.dtype();
        let batch = if cond.guided { 2 } else { 1 };
        ensure!(
            cond.context.dim(0)? == batch,
            "conditioning batch {} does not match guidance ({})",
            cond.context.dim(0)?,
            if cond.guided { "on: 2" } else { "off: 1" }
        );
        let x_in = if cond.guided {
            Tensor::cat(&[x, x], 0)?
        } else {
            x.clone()
        };
        let added = match &cond.pooled {
            None => None,
            Some(pooled) => {
                // diffusers' default: original size = target size = the image size, no crop.
                let (ih, iw) = ((h * self.vae_scale()) as f32, (w * self.vae_scale()) as f32);
                let ids = Tensor::new(&[ih, iw, 0.0, 0.0, ih, iw], &self.device)?
                    .unsqueeze(0)?
                    .repeat((batch, 1))?;
                Some(AddedCond {
                    text_embeds: pooled.clone(),
                    time_ids: ids,
                })
            }
        };
        let t = Tensor::full(timestep as f32, x_in.dim(0)?, x_in.device())?;
        let Backbone::Image(unet) = &self.unet else {
            unreachable!("video UNets return above");
        };
        let out = unet
            .forward_cached(&x_in, &t, &cond.context, added.as_ref(), cache)?
            .to_dtype(out_dtype)?;
        split_guided(cond, out)
    }

    /// One AnimateDiff call on a clip `(1, c, frames, h, w)`: both CFG halves' frames in one
    /// batch, each frame with its half's encoder states, as diffusers' `AnimateDiffPipeline`
    /// runs them.
    fn predict_motion(
        &self,
        unet: &UNet,
        modules: &MotionModules,
        cond: &Conditioning,
        x: &Tensor,
        timestep: f64,
        cache: &mut ModuleCache,
    ) -> Result<RawPrediction> {
        let (b, _, frames, _, _) = x.dims5()?;
        ensure!(
            b == 1,
            "the denoiser takes one clip at a time (got batch {b})"
        );
        // DeepCache and T-GATE run as on images: the motion modules sit inside the modules
        // DeepCache keeps, T-GATE's attention means are over each CFG half's frames.
        let x_in = if cond.guided {
            Tensor::cat(&[x, x], 0)?
        } else {
            x.clone()
        };
        use crate::model::clip_layout::{per_frame, to_clip, to_frames};
        let n = x_in.dim(0)?;
        let t = Tensor::full(timestep as f32, n * frames, x.device())?;
        let out = unet.forward_motion(
            &to_frames(&x_in)?,
            &t,
            &per_frame(&cond.context, frames)?,
            crate::model::motion::Temporal { modules, frames },
            cache,
        )?;
        let out = to_clip(&out, frames)?.to_dtype(x.dtype())?;
        split_guided(cond, out)
    }

    /// One video UNet call on a clip `(1, c, frames, h, w)`: both CFG halves in one batch,
    /// as diffusers' `TextToVideoSDPipeline` runs them.
    fn predict_video(
        &self,
        unet: &UNet3D,
        cond: &Conditioning,
        x: &Tensor,
        timestep: f64,
        cache: &mut ModuleCache,
    ) -> Result<RawPrediction> {
        let (b, ..) = x.dims5()?;
        ensure!(
            b == 1,
            "the denoiser takes one clip at a time (got batch {b})"
        );
        let x_in = if cond.guided {
            Tensor::cat(&[x, x], 0)?
        } else {
            x.clone()
        };
        let out = unet
            .forward_cached(&x_in, timestep, &cond.context, cache)?
            .to_dtype(x.dtype())?;
        split_guided(cond, out)
    }
}

/// The noise predictor of one generation: a UNet bound to its conditioning.
pub struct SdDenoiser<'a> {
    pub(super) sd: &'a StableDiffusion,
    pub(super) cond: &'a Conditioning,
    /// DeepCache's module outputs and the plan of the next call.
    pub(super) cache: ModuleCache,
}

impl SdDenoiser<'_> {
    /// Whether the next call is past T-GATE's gate.
    pub(super) fn after_gate(&self) -> bool {
        matches!(self.cache.plan(), Some(CallPlan::TGate(t)) if t.after_gate)
    }
}

impl Denoiser for SdDenoiser<'_> {
    fn predict(&mut self, x: &Tensor, timestep: f64) -> Result<RawPrediction> {
        if self.after_gate() && self.cond.guided {
            // T-GATE past its gate: one batch on the negative prompt, no guidance.
            let negative = self.cond.negative_only()?;
            return self
                .sd
                .predict_cached(&negative, x, timestep, &mut self.cache);
        }
        self.sd
            .predict_cached(self.cond, x, timestep, &mut self.cache)
    }

    fn plan_call(&mut self, plan: Option<CallPlan>) -> Result<()> {
        self.cache.set_plan(plan);
        Ok(())
    }

    fn call_macs(&self, x: &Tensor) -> Option<u64> {
        if x.rank() == 5 {
            let (_, _, frames, h, w) = x.dims5().ok()?;
            let (batch, ctx_len, _) = self.cond.context.dims3().ok()?;
            let temporal = match &self.sd.unet {
                Backbone::Video(u) => crate::model::macs::TemporalLayers::ModelScope {
                    transformer_in_head_dim: u.config().transformer_in_head_dim,
                },
                Backbone::Motion(_, m) => crate::model::macs::TemporalLayers::Motion {
                    mid: m.config().mid_block,
                },
                Backbone::Image(_) => return None,
            };
            return Some(crate::model::macs::video_call_macs(
                self.sd.unet.config(),
                temporal,
                batch,
                frames,
                h,
                w,
                ctx_len,
                self.cache.plan().as_ref(),
            ));
        }
        let (_, _, h, w) = x.dims4().ok()?;
        let (batch, ctx_len, _) = self.cond.context.dims3().ok()?;
        let batch = if self.after_gate() { 1 } else { batch };
        Some(crate::model::macs::unet_call_macs_planned(
            self.sd.unet.config(),
            batch,
            h,
            w,
            ctx_len,
            self.cache.plan().as_ref(),
        ))
    }
}
