//! The AnimateDiff family pinned to diffusers 0.42.1: the tiny SD 1.x pipeline
//! `tests/fixtures/tiny-sd` with the tiny perturbed motion adapter
//! `tests/fixtures/tiny-animatediff` (both layouts), sampled like `AnimateDiffPipeline`
//! with DDIM / Euler / DPM-Solver++ (made by `tools/reference/make_animatediff_reference.py`).

mod common;

use common::{fixtures, rel_err};

use adaptive_diffusion::job::Job;
use adaptive_diffusion::model::{ModelSource, StableDiffusion};
use adaptive_diffusion::sampler::{self, Method, RunSettings, SchedulerConfig, SchedulerKind};
use candle_core::{Device, IndexOp, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

fn meta() -> Value {
    let text = std::fs::read_to_string(fixtures().join("reference/animatediff/meta.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tensors(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join("reference/animatediff").join(file),
        &Device::Cpu,
    )
    .unwrap()
}

/// The tiny SD 1.x pipeline with the motion adapter at `motion`, loaded the way `--motion`
/// does.
fn load(motion: &Path) -> StableDiffusion {
    load_as(motion, None)
}

/// [`load`] in a given number format (`bf16`: mixed precision on the CPU).
fn load_as(motion: &Path, dtype: Option<&str>) -> StableDiffusion {
    let mut job = Job::new(ModelSource::Local(fixtures().join("tiny-sd")), "x");
    job.motion = Some(motion.to_path_buf());
    job.force_cpu = true;
    job.set_dtype_name(dtype);
    adaptive_diffusion::pipeline::load_model(&job, &Default::default())
        .unwrap()
        .sd
}

/// The DDIM config AnimateDiff's authors recommend, as the reference ran it.
fn schedule(m: &Value, dir: &Path) -> SchedulerConfig {
    let path = dir.join("scheduler_config.json");
    std::fs::write(&path, m["scheduler_config"]["ddim_config"].to_string()).unwrap();
    SchedulerConfig::from_file(&path).unwrap()
}

#[test]
fn animatediff_clips_match_diffusers_for_each_scheduler_and_both_layouts() {
    let m = meta();
    let dir = tempfile::tempdir().unwrap();
    let sch = schedule(&m, dir.path());
    let guidance = m["guidance_scale"].as_f64().unwrap();
    let steps = m["num_inference_steps"].as_u64().unwrap() as usize;
    let noise = tensors("init_latents.safetensors")["latents"].clone();
    let runs = [
        ("ddim", SchedulerKind::Ddim),
        ("euler", SchedulerKind::Euler),
        ("dpm++", SchedulerKind::DpmPlusPlus),
    ];
    // The original-layout file with the adapter's config.json beside it (the tiny module
    // has 2 heads where published ones have 8, which weights cannot show).
    let original = dir.path().join("mm_tiny_v2.safetensors");
    std::fs::copy(
        fixtures().join("tiny-animatediff/mm_tiny_v2.safetensors"),
        &original,
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("tiny-animatediff/motion_adapter/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    for (layout, motion, runs) in [
        (
            "diffusers",
            fixtures().join("tiny-animatediff/motion_adapter"),
            &runs[..],
        ),
        ("original", original, &runs[..1]),
    ] {
        let sd = load(&motion);
        assert!(sd.is_video());
        let cond = sd
            .encode_prompt(
                m["prompt"].as_str().unwrap(),
                Some(m["negative_prompt"].as_str().unwrap()),
                guidance,
            )
            .unwrap();
        for &(name, kind) in runs {
            let want = tensors(m["runs"][name]["file"].as_str().unwrap());
            let settings = RunSettings {
                scheduler: kind,
                steps,
                guidance,
                method: Method::BASELINE,
                early_stop: None,
            };
            let sigma = sampler::build_scheduler(kind, &sch, steps)
                .unwrap()
                .init_noise_sigma();
            let mut den = sd.denoiser(&cond);
            let mut lat = vec![];
            let out = sampler::run(
                &mut den,
                &sch,
                &settings,
                &(&noise * sigma).unwrap(),
                &mut |ev| {
                    lat.push(ev.latents.clone());
                    ControlFlow::Continue(())
                },
            )
            .unwrap();
            for (i, x) in lat.iter().enumerate() {
                let e = rel_err(x, &want["step_latents"].i(i).unwrap());
                assert!(e < 1e-4, "{layout} {name} step {i}: relative error {e:e}");
            }
            let e = rel_err(&out.latents, &want["latents"]);
            println!("{layout} {name}: final latents relative error {e:e}");
            assert!(
                e < 1e-4,
                "{layout} {name}: final latents relative error {e:e}"
            );
        }
    }
}

/// `--dtype bf16` with a motion module: the image UNet's and the motion modules' products on
/// the bf16 kernels; the DDIM clip stays within 2e-2 relative of diffusers' f32 one.
#[test]
fn a_bf16_animatediff_clip_stays_near_f32() {
    let m = meta();
    let dir = tempfile::tempdir().unwrap();
    let sch = schedule(&m, dir.path());
    let guidance = m["guidance_scale"].as_f64().unwrap();
    let steps = m["num_inference_steps"].as_u64().unwrap() as usize;
    let noise = tensors("init_latents.safetensors")["latents"].clone();
    let sd = load_as(
        &fixtures().join("tiny-animatediff/motion_adapter"),
        Some("bf16"),
    );
    assert!(
        sd.precision().starts_with("bf16 (CPU"),
        "{}",
        sd.precision()
    );
    let cond = sd
        .encode_prompt(
            m["prompt"].as_str().unwrap(),
            Some(m["negative_prompt"].as_str().unwrap()),
            guidance,
        )
        .unwrap();
    let want = tensors(m["runs"]["ddim"]["file"].as_str().unwrap());
    let settings = RunSettings {
        scheduler: SchedulerKind::Ddim,
        steps,
        guidance,
        method: Method::BASELINE,
        early_stop: None,
    };
    let sigma = sampler::build_scheduler(SchedulerKind::Ddim, &sch, steps)
        .unwrap()
        .init_noise_sigma();
    let mut den = sd.denoiser(&cond);
    let out = sampler::run(
        &mut den,
        &sch,
        &settings,
        &(&noise * sigma).unwrap(),
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let e = rel_err(&out.latents, &want["latents"]);
    println!("ddim bf16: final latents relative error {e:e} vs f32");
    assert!(e < 2e-2, "bf16: relative error {e:e}");
}
