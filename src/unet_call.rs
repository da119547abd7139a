//! `adiff unet-call`: time one classifier-free-guidance UNet call on a diffusers UNet
//! folder with inputs from a file, and report the process's peak resident memory — the
//! adiff side of `tools/perf/unet_vs_torch.sh`, which runs PyTorch + diffusers on the same
//! weights and inputs and checks that both sides compute the same output.

use crate::model::checkpoint;
use crate::model::config::UNetConfig;
use crate::model::unet::{AddedCond, UNet};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct UNetCallReport {
    /// Always "adiff".
    pub side: &'static str,
    /// Image size in pixels (square).
    pub size: usize,
    /// Mean wall time of one call (batch 2), milliseconds, after one warm-up call.
    pub ms: f64,
    /// Each timed call, milliseconds.
    pub calls_ms: Vec<f64>,
    /// Time to load the weights, milliseconds.
    pub load_ms: f64,
    /// Of which checking every weight for NaN and ∞, milliseconds.
    pub load_check_ms: f64,
    /// Peak resident memory of the process after loading, bytes (Linux; 0 elsewhere).
    pub load_peak_rss_bytes: u64,
    /// Peak resident memory of the process at the end, bytes (Linux; 0 elsewhere).
    pub peak_rss_bytes: u64,
    /// Worker threads of the tensor library.
    pub threads: usize,
    /// Per-operation time of the timed calls, per call (empty unless profiling).
    pub profile: Vec<crate::model::profile::Row>,
}

/// The process's peak resident set (`VmHWM`), in bytes; 0 where /proc is not available.
pub fn peak_rss_bytes() -> u64 {
    crate::proc_info::peak_rss_bytes().unwrap_or(0)
}

/// Load `unet_dir` (config.json + safetensors weights), run `calls` timed CFG calls on
/// `inputs[x{size}]`, `inputs[t]`, `inputs[context]` after a warm-up, and return the output
/// of the last call with the report.
pub fn measure(
    unet_dir: &Path,
    inputs: &Path,
    size: usize,
    calls: usize,
    device: &Device,
    dtype: Option<candle_core::DType>,
    profile: bool,
) -> Result<(Tensor, UNetCallReport)> {
    let tensors = read_inputs(inputs, calls, device)?;
    let get = |k: &str| input(&tensors, inputs, k, "tools/perf/unet_torch.py make");
    let x = get(&format!("x{size}"))?;
    let context = get("context")?;
    let t = get("t")?.flatten_all()?.to_vec1::<f32>()?[0] as f64;
    // SDXL: pooled text embeddings and time ids, when the inputs carry them.
    let added = match (tensors.get("text_embeds"), tensors.get("time_ids")) {
        (Some(text_embeds), Some(time_ids)) => Some(AddedCond {
            text_embeds: text_embeds.clone(),
            time_ids: time_ids.clone(),
        }),
        _ => None,
    };

    let t0 = Instant::now();
    let config = UNetConfig::from_file(&unet_dir.join("config.json"))?;
    let dtype = dtype.unwrap_or_else(|| crate::model::default_dtype(device));
    let unet = UNet::new(unet_weights(unet_dir, dtype, device)?, &config)?;
    timed(size, calls, device, profile, t0, || {
        unet.forward(&x, t, &context, added.as_ref())
    })
}

/// The inputs file of a measurement of `calls` timed calls (at least one).
fn read_inputs(inputs: &Path, calls: usize, device: &Device) -> Result<HashMap<String, Tensor>> {
    if calls == 0 {
        return Err(crate::field::FieldError::new(
            crate::field::Field::Calls,
            "must be at least 1",
        )
        .into());
    }
    candle_core::safetensors::load(inputs, device)
        .with_context(|| format!("reading inputs {}", inputs.display()))
}

/// Tensor `k` of the inputs file, or an error naming the script that makes it.
fn input(tensors: &HashMap<String, Tensor>, inputs: &Path, k: &str, maker: &str) -> Result<Tensor> {
    tensors.get(k).cloned().with_context(|| {
        format!(
            "{} has no tensor {k:?} (make it with {maker})",
            inputs.display()
        )
    })
}

/// The weights of a diffusers UNet folder.
fn unet_weights(
    dir: &Path,
    dtype: candle_core::DType,
    device: &Device,
) -> Result<candle_nn::VarBuilder<'static>> {
    let weights = crate::model::source::component_weights(dir, "diffusion_pytorch_model")?;
    checkpoint::network_var_builder(
        &checkpoint::check_all(&weights)?,
        &Default::default(),
        dtype,
        device,
    )
}

/// One guided call of a video UNet on a clip: ModelScope's `UNet3DConditionModel` folder,
/// or an SD 1.x UNet folder with AnimateDiff motion modules (`motion`). Inputs: `sample`
/// `(2, c, frames, h, w)`, `timestep` and `encoder_hidden_states` `(2, seq, dim)` — what
/// `tools/perf/video_torch.py make-*` writes.
pub fn measure_video(
    unet_dir: &Path,
    motion: Option<&Path>,
    inputs: &Path,
    calls: usize,
    device: &Device,
    dtype: Option<candle_core::DType>,
    profile: bool,
) -> Result<(Tensor, UNetCallReport)> {
    let tensors = read_inputs(inputs, calls, device)?;
    let get = |k: &str| input(&tensors, inputs, k, "tools/perf/video_torch.py");
    let x = get("sample")?;
    let context = get("encoder_hidden_states")?;
    let t = get("timestep")?.flatten_all()?.to_vec1::<f32>()?[0] as f64;
    let (b, _, frames, h, _) = x.dims5()?;
    let size = h * 8;
    let dtype = dtype.unwrap_or_else(|| crate::model::default_dtype(device));
    let t0 = Instant::now();
    let vb = unet_weights(unet_dir, dtype, device)?;
    match motion {
        None => {
            let config =
                crate::model::unet3d::UNet3DConfig::from_file(&unet_dir.join("config.json"))?;
            let unet = crate::model::unet3d::UNet3D::new(vb, &config)?;
            timed(size, calls, device, profile, t0, || {
                unet.forward(&x, t, &context)
            })
        }
        Some(m) => {
            let config = UNetConfig::from_file(&unet_dir.join("config.json"))?;
            let unet = UNet::new(vb, &config)?;
            let part = crate::model::motion::read(m)?;
            let modules = crate::model::motion::MotionModules::new(
                checkpoint::network_var_builder(
                    std::slice::from_ref(&part.file),
                    &Default::default(),
                    dtype,
                    device,
                )?,
                &part.config,
            )?;
            // Frames folded into the batch, each with its sample's encoder states, as
            // diffusers' UNetMotionModel runs them.
            use crate::model::clip_layout::{per_frame, to_clip, to_frames};
            let flat = to_frames(&x)?;
            let ctx = per_frame(&context, frames)?;
            let ts = Tensor::full(t as f32, b * frames, device)?;
            let temporal = crate::model::motion::Temporal {
                modules: &modules,
                frames,
            };
            timed(size, calls, device, profile, t0, || {
                let out = unet.forward_motion(
                    &flat,
                    &ts,
                    &ctx,
                    temporal,
                    &mut crate::model::unet::ModuleCache::default(),
                )?;
                Ok(to_clip(&out, frames)?)
            })
        }
    }
}

/// After loading (started at `t0`): one warm-up `call`, then `calls` timed ones.
fn timed(
    size: usize,
    calls: usize,
    device: &Device,
    profile: bool,
    t0: Instant,
    call: impl Fn() -> Result<Tensor>,
) -> Result<(Tensor, UNetCallReport)> {
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let load_check_ms = checkpoint::finite_check_ms();
    let load_peak_rss_bytes = peak_rss_bytes();

    let mut out = call()?;
    device.synchronize()?;
    crate::model::profile::enable(profile);
    let mut calls_ms = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        out = call()?;
        device.synchronize()?;
        calls_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let ms = calls_ms.iter().sum::<f64>() / calls as f64;
    let mut rows = crate::model::profile::rows();
    crate::model::profile::enable(false);
    for r in &mut rows {
        r.ms /= calls as f64;
        r.count /= calls as u64;
    }
    Ok((
        out,
        UNetCallReport {
            side: "adiff",
            size,
            ms,
            calls_ms,
            load_ms,
            load_check_ms,
            load_peak_rss_bytes,
            peak_rss_bytes: peak_rss_bytes(),
            threads: candle_core::utils::get_num_threads(),
            profile: rows,
        },
    ))
}
