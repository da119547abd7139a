//! DeepCache and T-GATE against their official code. The scripts in `tools/reference/`
//! ran PyPI `DeepCache` 0.1.1 (`DeepCacheSDHelper`) and `tgate` 1.0.0
//! (`TgateSDLoader(pipe).tgate(...)`) with diffusers on the tiny pipeline, for eight and
//! five cases (every DeepCache branch of the tiny UNet's two blocks; several T-GATE gates
//! and intervals; DDIM and Euler); `adiff generate --method …` must reach the same final
//! latents from the same initial latents.

mod common;

use candle_core::{Device, Tensor};
use common::{max_abs, root};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// Run every case of `tests/fixtures/reference/{name}.json` with the spec `spec(case)`;
/// each final latent must be within 1e-3 of the reference's largest value.
fn check_against_reference(
    name: &str,
    cases_expected: usize,
    spec: impl Fn(&serde_json::Value) -> String,
) {
    let refs = root().join("tests/fixtures/reference");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(refs.join(format!("{name}.json"))).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(refs.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = meta["cases"].as_array().unwrap();
    assert_eq!(cases.len(), cases_expected);
    let mut report = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let init = dir.path().join(format!("init{i}.safetensors"));
        let x: &Tensor = &tensors[case["init"].as_str().unwrap()];
        candle_core::safetensors::save(&HashMap::from([("latents".to_string(), x.clone())]), &init)
            .unwrap();
        let out = dir.path().join(format!("out{i}.safetensors"));
        let spec = spec(case);
        let o = Command::new(env!("CARGO_BIN_EXE_adiff"))
            .args(["generate", "--weights"])
            .arg(root().join("tests/fixtures/tiny-sd"))
            .args(["--prompt", meta["prompt"].as_str().unwrap()])
            .args(["--negative", meta["negative_prompt"].as_str().unwrap()])
            .args(["--guidance", "7.5"])
            .args(["--scheduler", case["scheduler"].as_str().unwrap()])
            .args(["--steps", &case["steps"].to_string()])
            .args(["--method", &spec])
            .arg("--init-latents")
            .arg(&init)
            .arg("--latents-out")
            .arg(&out)
            .arg("--out")
            .arg(dir.path().join(format!("img{i}.png")))
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{spec}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let ours =
            &candle_core::safetensors::load(Path::new(&out), &Device::Cpu).unwrap()["latents"];
        let want = &tensors[case["tensor"].as_str().unwrap()];
        let (diff, scale) = (max_abs(&(ours - want).unwrap()), max_abs(want));
        report.push(format!(
            "{} {spec}: max |Δ| {diff:.2e} of max |x| {scale:.2}",
            case["scheduler"]
        ));
        assert!(diff <= 1e-3 * scale.max(1.0), "{}", report.join("\n"));
    }
    println!("{}", report.join("\n"));
}

#[test]
fn deepcache_matches_the_official_helper() {
    check_against_reference("deepcache", 8, |c| {
        format!(
            "deepcache:interval={},branch={}",
            c["cache_interval"], c["cache_branch_id"]
        )
    });
}

#[test]
fn tgate_matches_the_official_pipeline() {
    check_against_reference("tgate", 5, |c| {
        format!(
            "tgate:gate={},sp_interval={},fi_interval={},warm_up={}",
            c["gate_step"], c["sp_interval"], c["fi_interval"], c["warm_up"]
        )
    });
}
