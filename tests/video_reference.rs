//! The ModelScope text-to-video family pinned to its references, on the tiny perturbed
//! pipeline `tests/fixtures/tiny-modelscope` (made by `tools/reference/make_video_reference.py`):
//! baseline DDIM / Euler / DPM-Solver++ runs against diffusers 0.42.1's
//! `TextToVideoSDPipeline`, and the AdaptiveDiffusion rule on 5-D latents against the
//! authors' own adaptive `TextToVideoSDPipeline` (its skip masks and final latents).

mod common;

use common::{fixtures, rel_err};

use adaptive_diffusion::model::StableDiffusion;
use adaptive_diffusion::sampler::{self, Method, RunSettings, SchedulerConfig, SchedulerKind};
use candle_core::{DType, Device, IndexOp, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::ops::ControlFlow;

fn meta() -> Value {
    let text = std::fs::read_to_string(fixtures().join("reference/video/meta.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tensors(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference/video").join(file), &Device::Cpu)
        .unwrap()
}

struct Setup {
    sd: StableDiffusion,
    schedule: SchedulerConfig,
    cond: adaptive_diffusion::model::Conditioning,
    guidance: f64,
    init: Tensor,
}

fn setup(m: &Value) -> Setup {
    let dir = fixtures().join("tiny-modelscope");
    let sd = StableDiffusion::load_dir(&dir, &Device::Cpu, DType::F32).unwrap();
    assert!(sd.is_video());
    let schedule =
        SchedulerConfig::from_file(&dir.join("scheduler/scheduler_config.json")).unwrap();
    let guidance = m["guidance_scale"].as_f64().unwrap();
    let cond = sd
        .encode_prompt(
            m["prompt"].as_str().unwrap(),
            Some(m["negative_prompt"].as_str().unwrap()),
            guidance,
        )
        .unwrap();
    let init = tensors("init_latents.safetensors")["latents"].clone();
    Setup {
        sd,
        schedule,
        cond,
        guidance,
        init,
    }
}

/// A run from the fixture's noise, scaled by the scheduler's initial σ as diffusers'
/// `prepare_latents` does; the trace and every step's latents.
fn run(
    s: &Setup,
    kind: SchedulerKind,
    steps: usize,
    method: Method,
) -> (sampler::RunOutput, Vec<Tensor>) {
    let settings = RunSettings {
        scheduler: kind,
        steps,
        guidance: s.guidance,
        method,
        early_stop: None,
    };
    let sigma = sampler::build_scheduler(kind, &s.schedule, steps)
        .unwrap()
        .init_noise_sigma();
    let init = (&s.init * sigma).unwrap();
    let mut den = s.sd.denoiser(&s.cond);
    let mut lat = Vec::new();
    let out = sampler::run(&mut den, &s.schedule, &settings, &init, &mut |ev| {
        lat.push(ev.latents.clone());
        ControlFlow::Continue(())
    })
    .unwrap();
    (out, lat)
}

#[test]
fn the_prompt_tokens_match_the_reference_tokenizer() {
    let m = meta();
    let s = setup(&m);
    let ids = s.sd.tokenizers()[0]
        .encode(m["prompt"].as_str().unwrap())
        .unwrap();
    let want: Vec<u32> = m["prompt_token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ids.ids, want);
}

#[test]
fn baseline_clips_match_diffusers_text_to_video() {
    let m = meta();
    let s = setup(&m);
    let steps = m["num_inference_steps"].as_u64().unwrap() as usize;
    for (name, kind) in [
        ("ddim", SchedulerKind::Ddim),
        ("euler", SchedulerKind::Euler),
        ("dpm++", SchedulerKind::DpmPlusPlus),
    ] {
        let file = m["runs"][name]["file"].as_str().unwrap();
        let t = tensors(file);
        let (out, lat) = run(&s, kind, steps, Method::BASELINE);
        assert_eq!(out.latents.dims(), &[1, 4, 8, 8, 8]);
        assert_eq!(out.trace.unet_calls, steps);
        for (i, x) in lat.iter().enumerate() {
            let want = t["step_latents"].i(i).unwrap();
            let e = rel_err(x, &want);
            assert!(e < 1e-4, "{name} step {i}: relative error {e:e}");
        }
        let e = rel_err(&out.latents, &t["latents"]);
        println!("{name}: final latents relative error {e:e}");
        assert!(e < 1e-4, "{name}: final latents relative error {e:e}");
    }
}

#[test]
fn the_official_video_rule_is_reproduced_mask_and_latents() {
    let m = meta();
    let s = setup(&m);
    let o = &m["official_adaptive"];
    let steps = o["num_inference_steps"].as_u64().unwrap() as usize;
    let cmax = o["max_skip_steps"].as_u64().unwrap() as usize;
    let mut runs = vec![&o["default"]];
    runs.extend(o["extra"].as_array().unwrap());
    for r in runs {
        let delta = r["threshold_delta"].as_f64().unwrap();
        let want_mask = r["mask"].as_str().unwrap();
        let (out, _) = run(
            &s,
            SchedulerKind::Ddim,
            steps,
            Method::adaptive(delta, cmax),
        );
        let mask: String = out
            .trace
            .steps
            .iter()
            .map(|st| if st.computed { 'C' } else { 'S' })
            .collect();
        assert_eq!(mask, want_mask, "δ {delta}");
        let t = tensors(r["file"].as_str().unwrap());
        let e = rel_err(&out.latents, &t["latents"]);
        println!("δ {delta}: mask {mask}, final latents relative error {e:e}");
        assert!(e < 1e-4, "δ {delta}: final latents relative error {e:e}");
    }
}

/// `--dtype bf16` on the CPU runs the video UNet (its 2-D and temporal layers' products on
/// the bf16 kernels, the rest in f32): the clips stay within 2e-2 relative of diffusers' f32
/// ones, on the best kernel path here and on the portable one.
#[test]
fn bf16_clips_stay_near_f32() {
    use adaptive_diffusion::model::kernels::bf16::{Bf16Path, with_forced_path};
    let m = meta();
    let mut s = setup(&m);
    let dir = fixtures().join("tiny-modelscope");
    s.sd = StableDiffusion::load_dir(&dir, &Device::Cpu, DType::BF16).unwrap();
    s.cond =
        s.sd.encode_prompt(
            m["prompt"].as_str().unwrap(),
            Some(m["negative_prompt"].as_str().unwrap()),
            s.guidance,
        )
        .unwrap();
    let steps = m["num_inference_steps"].as_u64().unwrap() as usize;
    for (name, kind) in [
        ("ddim", SchedulerKind::Ddim),
        ("euler", SchedulerKind::Euler),
    ] {
        let t = tensors(m["runs"][name]["file"].as_str().unwrap());
        for path in [Bf16Path::Amx, Bf16Path::Portable] {
            let (out, _) = with_forced_path(path, || run(&s, kind, steps, Method::BASELINE));
            let e = rel_err(&out.latents, &t["latents"]);
            println!("{name} bf16 on {path} (or the next path down): {e:e} vs f32");
            assert!(e < 2e-2, "{name} bf16 on {path}: relative error {e:e}");
        }
    }
}
