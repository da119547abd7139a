//! Full sampling runs pinned to diffusers: baseline DDIM / Euler / DPM-Solver++ runs and the
//! published AdaptiveDiffusion rule's skip masks, recorded by
//! `tools/reference/make_reference.py` on the tiny random-weight pipeline.

mod common;

use common::{fixtures, rel_err};

use adaptive_diffusion::model::StableDiffusion;
use adaptive_diffusion::sampler::{
    self, Method, RunSettings, SchedulerConfig, SchedulerKind, build_scheduler,
};
use candle_core::{DType, Device, IndexOp, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::ops::ControlFlow;

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixtures().join("reference/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tensors(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference").join(file), &Device::Cpu).unwrap()
}

struct Setup {
    sd: StableDiffusion,
    schedule: SchedulerConfig,
    cond: adaptive_diffusion::model::Conditioning,
    guidance: f64,
}

fn setup(m: &Value) -> Setup {
    let dir = fixtures().join("tiny-sd");
    let sd = StableDiffusion::load_dir(&dir, &Device::Cpu, DType::F32).unwrap();
    let schedule =
        SchedulerConfig::from_file(&dir.join("scheduler/scheduler_config.json")).unwrap();
    let g = &m["generation"];
    let guidance = g["guidance_scale"].as_f64().unwrap();
    let cond = sd
        .encode_prompt(
            g["prompt"].as_str().unwrap(),
            Some(g["negative_prompt"].as_str().unwrap()),
            guidance,
        )
        .unwrap();
    Setup {
        sd,
        schedule,
        cond,
        guidance,
    }
}

fn kind(name: &str) -> SchedulerKind {
    name.parse().unwrap()
}

/// Run the sampler from the file's init latents; return the trace and every step's latent.
fn run(
    s: &Setup,
    kind: SchedulerKind,
    steps: usize,
    method: Method,
    init: &Tensor,
) -> (sampler::RunOutput, Vec<Tensor>) {
    let settings = RunSettings {
        scheduler: kind,
        steps,
        guidance: s.guidance,
        method,
        early_stop: None,
    };
    let mut den = s.sd.denoiser(&s.cond);
    let mut lat = Vec::new();
    let out = sampler::run(&mut den, &s.schedule, &settings, init, &mut |ev| {
        lat.push(ev.latents.clone());
        ControlFlow::Continue(())
    })
    .unwrap();
    (out, lat)
}

#[test]
fn scheduler_timesteps_and_sigmas_match_diffusers() {
    let m = manifest();
    let schedule =
        SchedulerConfig::from_file(&fixtures().join("tiny-sd/scheduler/scheduler_config.json"))
            .unwrap();
    for b in m["baseline"].as_array().unwrap() {
        let name = b["scheduler"].as_str().unwrap();
        let steps = b["steps"].as_u64().unwrap() as usize;
        let sch = build_scheduler(kind(name), &schedule, steps).unwrap();
        let want: Vec<f64> = b["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(sch.timesteps(), want.as_slice(), "{name} timesteps");
        let init = b["init_noise_sigma"].as_f64().unwrap();
        assert!(
            (sch.init_noise_sigma() - init).abs() < 1e-5 * init,
            "{name} init sigma {} vs {init}",
            sch.init_noise_sigma()
        );
        if let Some(sigmas) = b["sigmas"].as_array() {
            for (i, s) in sigmas.iter().take(steps).enumerate() {
                let s = s.as_f64().unwrap();
                assert!(
                    (sch.sigma(i) - s).abs() < 1e-5 * s.max(1.0),
                    "{name} sigma[{i}] {} vs {s}",
                    sch.sigma(i)
                );
            }
        }
    }
    for a in m["adaptive"].as_array().unwrap() {
        let name = a["scheduler"].as_str().unwrap();
        let t = tensors(a["file"].as_str().unwrap());
        let want: Vec<f32> = t["timesteps"].to_vec1().unwrap();
        let sch = build_scheduler(kind(name), &schedule, want.len()).unwrap();
        for (i, w) in want.iter().enumerate() {
            assert!(
                (sch.timesteps()[i] - *w as f64).abs() < 1e-3,
                "{name} 25-step timestep {i}: {} vs {w}",
                sch.timesteps()[i]
            );
        }
    }
}

#[test]
fn baseline_runs_match_diffusers() {
    let m = manifest();
    let s = setup(&m);
    for b in m["baseline"].as_array().unwrap() {
        let name = b["scheduler"].as_str().unwrap();
        let steps = b["steps"].as_u64().unwrap() as usize;
        let t = tensors(b["file"].as_str().unwrap());
        let (out, lat) = run(&s, kind(name), steps, Method::BASELINE, &t["init_latents"]);
        assert_eq!(out.trace.unet_calls, steps);
        for (i, x) in lat.iter().enumerate() {
            let want = t["step_latents"].i(i).unwrap().unsqueeze(0).unwrap();
            let e = rel_err(x, &want);
            assert!(e < 1e-3, "{name} step {i}: relative error {e:e}");
        }
        let e = rel_err(&out.latents, &t["final_latents"]);
        println!("{name}: final latents relative error {e:e}");
        assert!(e < 1e-3, "{name}: final latents relative error {e:e}");
    }
}

#[test]
fn adaptive_runs_reproduce_published_masks() {
    let m = manifest();
    let s = setup(&m);
    let mut mixed = 0;
    for a in m["adaptive"].as_array().unwrap() {
        let name = a["scheduler"].as_str().unwrap();
        let steps = a["steps"].as_u64().unwrap() as usize;
        let policy = Method::adaptive(
            a["delta"].as_f64().unwrap(),
            a["max_skips"].as_u64().unwrap() as usize,
        );
        let t = tensors(a["file"].as_str().unwrap());
        let (out, _) = run(&s, kind(name), steps, policy, &t["init_latents"]);
        let want: Vec<bool> = a["computed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        let got: Vec<bool> = out.trace.steps.iter().map(|r| r.computed).collect();
        let show = |v: &[bool]| {
            v.iter()
                .map(|&c| if c { 'C' } else { '.' })
                .collect::<String>()
        };
        assert_eq!(
            show(&got),
            show(&want),
            "{name} δ={}: compute/skip mask",
            a["delta"]
        );
        assert_eq!(
            out.trace.unet_calls,
            a["unet_calls"].as_u64().unwrap() as usize
        );
        if want.iter().any(|c| !c) && want[4..].iter().any(|c| *c) {
            mixed += 1;
        }
        let e = rel_err(&out.latents, &t["final_latents"]);
        assert!(
            e < 1e-3,
            "{name} δ={}: final latents relative error {e:e}",
            a["delta"]
        );
        // The third-order values and thresholds the controller saw match the reference.
        let dv: Vec<Vec<f32>> = t["decision_values"].to_vec2().unwrap();
        for (k, row) in dv.iter().enumerate() {
            let rec = &out.trace.steps[k + 3];
            let third = rec.third_order.unwrap();
            let thr = rec.threshold.unwrap();
            assert!(
                (third - row[3] as f64).abs() < 1e-3 * row[1] as f64,
                "{name} k={k}"
            );
            assert!(
                (thr - row[4] as f64).abs() < 1e-4 * row[4].abs() as f64 + 1e-9,
                "{name} k={k}"
            );
        }
    }
    assert!(
        mixed >= 6,
        "the fixtures must mix skipped and computed steps"
    );
}

/// `--dtype bf16` on the CPU (bf16 weights for the products, f32 activations) on every
/// bf16 kernel path this machine can run, forced one at a time: the final latents of the
/// baseline runs stay within 2e-2 relative of diffusers' f32 ones. (The paths multiply the
/// same bf16 operands, but a different f32 summation order can round an activation to the
/// neighbouring bf16 value, so two paths' runs differ by about as much as each differs from
/// f32.)
#[test]
fn bf16_runs_on_every_kernel_path_stay_near_f32() {
    use adaptive_diffusion::model::kernels::bf16::{Bf16Path, CpuBf16, choose, with_forced_path};
    let m = manifest();
    let mut s = setup(&m);
    let dir = fixtures().join("tiny-sd");
    let f32_sd = std::mem::replace(
        &mut s.sd,
        StableDiffusion::load_dir(&dir, &Device::Cpu, DType::BF16).unwrap(),
    );
    assert_eq!(s.sd.activation_dtype(), DType::F32);
    let g = &m["generation"];
    s.cond =
        s.sd.encode_prompt(
            g["prompt"].as_str().unwrap(),
            Some(g["negative_prompt"].as_str().unwrap()),
            s.guidance,
        )
        .unwrap();
    let cpu = CpuBf16::detect();
    let mut paths: Vec<Bf16Path> = Bf16Path::ALL
        .iter()
        .map(|p| choose(Some(*p), cpu))
        .collect();
    paths.dedup();
    for b in m["baseline"].as_array().unwrap() {
        let name = b["scheduler"].as_str().unwrap();
        let steps = b["steps"].as_u64().unwrap() as usize;
        let t = tensors(b["file"].as_str().unwrap());
        for path in &paths {
            let (out, _) = with_forced_path(*path, || {
                run(&s, kind(name), steps, Method::BASELINE, &t["init_latents"])
            });
            assert_eq!(out.trace.unet_calls, steps);
            let e = rel_err(&out.latents, &t["final_latents"]);
            println!("{name} bf16 on {path}: final latents relative error {e:e} vs f32");
            assert!(e < 2e-2, "{name} bf16 on {path}: relative error {e:e}");
            // The VAE decoder's products in bf16 too: the same latents decode to within
            // 1e-2 of the f32 decoder's image.
            let want = f32_sd.decode(&t["final_latents"]).unwrap();
            let got = with_forced_path(*path, || s.sd.decode(&t["final_latents"]).unwrap());
            let e = rel_err(&got, &want);
            println!("{name} bf16 VAE decode on {path}: relative error {e:e} vs f32");
            assert!(
                e < 1e-2,
                "{name} bf16 decode on {path}: relative error {e:e}"
            );
        }
    }
}
