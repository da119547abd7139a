//! Single-file checkpoints and LoRAs against diffusers. `tools/reference/make_single_file_checkpoints.py`
//! wrote tiny SD 1.x (f16), SD 2.x (f32, OpenCLIP, v-prediction) and SDXL (bf16, two
//! encoders) pipelines as one original-layout file each, checked that diffusers'
//! `from_single_file` gives back the folder's pipeline, and ran 4 steps from fixed initial
//! latents; with LoRAs (PEFT and kohya formats, kohya with SDXL's original-layout names)
//! merged by `load_lora_weights` + `fuse_lora(0.8)` too. `adiff generate --weights FILE
//! [--lora FILE:0.8]` must reach the same final latents within 1e-4 of their largest value.

mod common;

use candle_core::Device;
use common::{adiff, arg, max_abs};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    common::root().join("tests/fixtures/single-file")
}

/// Run every case of the manifest whose `latents` tensor `pick` accepts.
fn check_cases(pick: impl Fn(&Value) -> bool) {
    let meta: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("single_file_runs.json")).unwrap())
            .unwrap();
    let tensors = candle_core::safetensors::load(
        fixtures().join("single_file_runs.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut report = vec![];
    for (i, case) in meta["cases"].as_array().unwrap().iter().enumerate() {
        if !pick(case) {
            continue;
        }
        let init = dir.path().join(format!("init{i}.safetensors"));
        let x = tensors[case["init"].as_str().unwrap()].clone();
        candle_core::safetensors::save(&HashMap::from([("latents".to_string(), x)]), &init)
            .unwrap();
        let out = dir.path().join(format!("out{i}.safetensors"));
        let png = dir.path().join(format!("img{i}.png"));
        let file = fixtures().join(case["file"].as_str().unwrap());
        let guidance = meta["guidance_scale"].to_string();
        let steps = meta["steps"].to_string();
        let mut args = vec![
            "generate",
            "--cpu",
            "--prompt",
            meta["prompt"].as_str().unwrap(),
            "--negative",
            meta["negative_prompt"].as_str().unwrap(),
            "--guidance",
            &guidance,
            "--steps",
            &steps,
            "--scheduler",
            case["scheduler"].as_str().unwrap(),
        ];
        let loras: Vec<String> = case["loras"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| fixtures().join(l.as_str().unwrap()).display().to_string())
            .collect();
        for l in &loras {
            args.extend(["--lora", l.as_str()]);
        }
        args.extend(["--weights", arg(&file), "--init-latents", arg(&init)]);
        args.extend(["--latents-out", arg(&out), "--out", arg(&png)]);
        let o = adiff(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "case {i}: {stderr}");
        assert!(stderr.contains("checkpoint ("), "{stderr}");
        for l in &loras {
            assert!(stderr.contains("merged into"), "{l}: {stderr}");
        }
        let ours = &candle_core::safetensors::load(&out, &Device::Cpu).unwrap()["latents"];
        let want = &tensors[case["latents"].as_str().unwrap()];
        let (diff, scale) = (max_abs(&(ours - want).unwrap()), max_abs(want));
        report.push(format!(
            "{} {:?}: max |Δ| {diff:.2e} of max |x| {scale:.2}",
            case["file"], loras
        ));
        assert!(diff <= 1e-4 * scale, "{}", report.join("\n"));
    }
    assert!(!report.is_empty());
    println!("{}", report.join("\n"));
}

#[test]
fn single_file_checkpoints_match_diffusers() {
    check_cases(|c| c["loras"].as_array().unwrap().is_empty());
}

#[test]
fn loras_in_both_formats_match_diffusers_fuse_lora() {
    check_cases(|c| !c["loras"].as_array().unwrap().is_empty());
}
