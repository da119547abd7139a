//! `adiff overhead`: what the adaptive controller costs per step, next to one
//! noise-predictor call, on a UNet of real Stable Diffusion size with random weights.
//!
//! The controller's work per step is the latent difference `d_k`, the third-order test and
//! the early-stop norm; a skipped step additionally re-applies guidance to the cached raw
//! prediction. All of it is measured here on latents of the real shape, and compared with
//! the wall time of one classifier-free-guidance UNet call (batch 2).

use crate::field::{Field, FieldError};
use crate::model::config::{SD15_UNET_CONFIG, UNetConfig, UNetJson};
use crate::model::unet::UNet;
use crate::sampler::change::ChangeTracker;
use crate::sampler::methods::adaptive::ThirdOrderRule;
use crate::sampler::{RawPrediction, run::rel_change};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The measurement.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    /// Device the measurement ran on.
    pub device: String,
    /// UNet parameters.
    pub unet_parameters: usize,
    /// Image size in pixels (square).
    pub image_size: usize,
    /// Latent shape.
    pub latent_shape: Vec<usize>,
    /// Timed UNet calls (after one warm-up call).
    pub unet_calls: usize,
    /// Mean wall time of one CFG UNet call (batch 2), milliseconds.
    pub unet_call_ms: f64,
    /// Mean controller time per step (d_k, third-order test, early-stop norm), milliseconds.
    pub controller_ms: f64,
    /// Mean time to re-apply guidance to a cached prediction on a skipped step, milliseconds.
    pub reuse_ms: f64,
    /// controller_ms / unet_call_ms.
    pub controller_fraction: f64,
}

fn parse_sd15() -> Result<UNetConfig> {
    let json: UNetJson = serde_json::from_str(SD15_UNET_CONFIG)?;
    UNetConfig::from_json(&json, Path::new("<built-in SD 1.5 unet config>"))
}

/// Build an SD 1.5-size UNet with random weights and measure.
pub fn measure(
    device: &Device,
    image_size: usize,
    calls: usize,
    controller_iters: usize,
) -> Result<OverheadReport> {
    if image_size == 0 || !image_size.is_multiple_of(64) {
        return Err(FieldError::new(
            Field::Size,
            format!("must be a positive multiple of 64 (got {image_size})"),
        )
        .into());
    }
    if calls == 0 {
        return Err(FieldError::new(Field::Calls, "must be at least 1").into());
    }
    if controller_iters == 0 {
        return Err(FieldError::new(Field::Iters, "must be at least 1").into());
    }
    let dtype = crate::model::default_dtype(device);
    let cfg = parse_sd15()?;
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, dtype, device);
    let unet = UNet::new(vb, &cfg)?;
    let mut params = 0;
    for var in varmap.all_vars() {
        let t = var.as_tensor();
        params += t.elem_count();
        let r = (Tensor::randn(0f32, 0.02, t.shape(), device)?).to_dtype(dtype)?;
        var.set(&r).context("randomising UNet weights")?;
    }
    let lat = image_size / 8;
    let shape = [1, 4, lat, lat];
    let x = Tensor::randn(0f32, 1.0, &shape[..], device)?;
    let x2 = Tensor::cat(&[&x, &x], 0)?;
    let context = Tensor::randn(0f32, 1.0, (2, 77, 768), device)?;

    // One warm-up call, then the timed ones.
    let mut out = unet.forward(&x2, 999.0, &context, None)?;
    device.synchronize()?;
    let t0 = Instant::now();
    for i in 0..calls {
        out = unet.forward(&x2, 999.0 - i as f64, &context, None)?;
    }
    device.synchronize()?;
    let unet_call_ms = t0.elapsed().as_secs_f64() * 1e3 / calls as f64;
    let chunks = out.to_dtype(DType::F32)?.chunk(2, 0)?;
    let pred = RawPrediction {
        uncond: Some(chunks[0].clone()),
        cond: chunks[1].clone(),
    };

    // The controller on a stream of latents of the real shape.
    let latents: Vec<Tensor> = (0..8)
        .map(|_| Tensor::randn(0f32, 1.0, &shape[..], device))
        .collect::<candle_core::Result<_>>()?;
    let mut tracker = ChangeTracker::default();
    let mut ctl = ThirdOrderRule::new(&crate::job::defaults::ADAPTIVE, false);
    let t0 = Instant::now();
    for i in 0..controller_iters {
        let cur = &latents[i % latents.len()];
        let prev = &latents[(i + 1) % latents.len()];
        std::hint::black_box(ctl.observe(&tracker.observe(cur)?));
        std::hint::black_box(rel_change(cur, prev)?);
    }
    device.synchronize()?;
    let controller_ms = t0.elapsed().as_secs_f64() * 1e3 / controller_iters as f64;
    let t0 = Instant::now();
    for _ in 0..controller_iters {
        std::hint::black_box(pred.guided(7.5)?);
    }
    device.synchronize()?;
    let reuse_ms = t0.elapsed().as_secs_f64() * 1e3 / controller_iters as f64;
    Ok(OverheadReport {
        device: format!("{:?}", device.location()),
        unet_parameters: params,
        image_size,
        latent_shape: shape.to_vec(),
        unet_calls: calls,
        unet_call_ms,
        controller_ms,
        reuse_ms,
        controller_fraction: controller_ms / unet_call_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_sd15_config_has_sd15_shape() {
        let cfg = parse_sd15().unwrap();
        assert_eq!(cfg.context_dim(), 768);
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(measure(&Device::Cpu, 100, 1, 1).is_err());
        assert!(measure(&Device::Cpu, 512, 0, 1).is_err());
    }
}
