//! SADA and Spectrum on the tiny pipeline against their references.
//!
//! - SADA: `tools/reference/make_sada_reference.py` ran the official `sada` code
//!   (Ting-Justin-Jiang/sada-icml @bbbadce7, `apply_patch` with `max_downsample=0`) with
//!   diffusers 0.42.1 for eight cases on Euler and DPM-Solver++. `adiff generate --method
//!   sada:…` must call the UNet at the same steps, compute the same criterion at every tested
//!   step and reach the same final latents.
//! - Spectrum: `tools/reference/spectrum_reference.py` re-derived stable-diffusion.cpp's
//!   `SpectrumState` in NumPy and ran it on the tiny pipeline's guided x0 for five cases
//!   (Euler, DPM-Solver++, DDIM); the same decisions and final latents are expected.
//!
//! Also: the schedulers and settings each refuses.

mod common;

use candle_core::{Device, Tensor};
use common::{adiff, arg, max_abs, root, tiny_sd};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

struct Run {
    latents: Tensor,
    trace: Value,
}

/// `adiff generate` on the tiny pipeline from the reference's initial latents.
fn generate(meta: &Value, init: &Tensor, scheduler: &str, steps: u64, spec: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let init_path = dir.path().join("init.safetensors");
    candle_core::safetensors::save(
        &HashMap::from([("latents".to_string(), init.clone())]),
        &init_path,
    )
    .unwrap();
    let (out, trace) = (
        dir.path().join("out.safetensors"),
        dir.path().join("trace.json"),
    );
    let steps = steps.to_string();
    let o = adiff(&[
        "generate",
        "--weights",
        arg(&tiny_sd()),
        "--prompt",
        meta["prompt"].as_str().unwrap(),
        "--negative",
        meta["negative_prompt"].as_str().unwrap(),
        "--guidance",
        &meta["guidance_scale"].to_string(),
        "--scheduler",
        scheduler,
        "--steps",
        &steps,
        "--method",
        spec,
        "--init-latents",
        arg(&init_path),
        "--latents-out",
        arg(&out),
        "--trace",
        arg(&trace),
        "--out",
        arg(&dir.path().join("img.png")),
    ]);
    assert!(
        o.status.success(),
        "{spec}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Run {
        latents: candle_core::safetensors::load(Path::new(&out), &Device::Cpu).unwrap()["latents"]
            .clone(),
        trace: serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap(),
    }
}

fn reference(name: &str) -> (Value, HashMap<String, Tensor>) {
    let refs = root().join("tests/fixtures/reference");
    let meta =
        serde_json::from_slice(&std::fs::read(refs.join(format!("{name}.json"))).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(refs.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap();
    (meta, tensors)
}

/// The run's steps as `C` (the UNet ran) and `skipped` (it did not).
fn mask(trace: &Value, skipped: char) -> String {
    trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            if s["computed"].as_bool().unwrap() {
                'C'
            } else {
                skipped
            }
        })
        .collect()
}

/// `max |ours − want| ≤ 1e-3 · max(max |want|, 1)`, reported.
fn close(ours: &Tensor, want: &Tensor, what: &str, report: &mut Vec<String>) {
    let (diff, scale) = (max_abs(&(ours - want).unwrap()), max_abs(want));
    report.push(format!("{what}: max |Δ| {diff:.2e} of max |x| {scale:.2}"));
    assert!(diff <= 1e-3 * scale.max(1.0), "{}", report.join("\n"));
}

#[test]
fn sada_matches_the_official_code_on_euler_and_dpmpp() {
    let (meta, tensors) = reference("sada");
    let cases = meta["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    let mut report = Vec::new();
    for case in cases {
        let keys = [
            "acc_start",
            "acc_end",
            "max_interval",
            "lagrange_term",
            "lagrange_int",
            "lagrange_step",
        ];
        let spec = format!(
            "sada:{}",
            keys.map(|k| format!("{k}={}", case[k])).join(",")
        );
        let scheduler = case["scheduler"].as_str().unwrap();
        let steps = case["steps"].as_u64().unwrap();
        let run = generate(
            &meta,
            &tensors[case["init"].as_str().unwrap()],
            scheduler,
            steps,
            &spec,
        );
        let what = format!("{scheduler} {spec}");
        assert_eq!(
            mask(&run.trace, 'S'),
            case["computed"].as_str().unwrap(),
            "{what}: UNet calls"
        );
        // The criterion of every step that tests one (steps 2 to N − 2: the last step's
        // decision has no step to apply to).
        let records = run.trace["steps"].as_array().unwrap();
        let official = case["criterion"].as_array().unwrap();
        let scale = official
            .iter()
            .filter_map(Value::as_f64)
            .fold(0.0f64, |a, m| a.max(m.abs()));
        for (n, (rec, want)) in records.iter().zip(official).enumerate() {
            let ours = rec["signal"].as_f64();
            if n < 2 || n + 1 == records.len() {
                assert_eq!(ours, None, "{what}: step {n} tests nothing");
                continue;
            }
            let (ours, want) = (ours.unwrap(), want.as_f64().unwrap());
            assert!(
                (ours - want).abs() <= 1e-3 * scale,
                "{what}: step {n}'s criterion {ours:e} vs the official {want:e}"
            );
            assert_eq!(rec["signal_limit"].as_f64(), Some(0.0));
        }
        close(
            &run.latents,
            &tensors[case["tensor"].as_str().unwrap()],
            &what,
            &mut report,
        );
    }
    println!("{}", report.join("\n"));
}

#[test]
fn spectrum_matches_the_numpy_re_derivation_on_the_tiny_pipeline() {
    let (meta, tensors) = reference("spectrum");
    let runs = meta["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    let mut report = Vec::new();
    for case in runs {
        let s = &case["settings"];
        let spec = format!(
            "spectrum:{}",
            ["w", "m", "lam", "window", "flex", "warmup", "stop"]
                .map(|k| format!("{k}={}", s[k]))
                .join(",")
        );
        let scheduler = case["scheduler"].as_str().unwrap();
        let run = generate(
            &meta,
            &tensors[case["init"].as_str().unwrap()],
            scheduler,
            case["steps"].as_u64().unwrap(),
            &spec,
        );
        let what = format!("{scheduler} {spec}");
        assert_eq!(
            mask(&run.trace, 'P'),
            case["decisions"].as_str().unwrap(),
            "{what}"
        );
        close(
            &run.latents,
            &tensors[case["tensor"].as_str().unwrap()],
            &what,
            &mut report,
        );
    }
    println!("{}", report.join("\n"));
}

/// `adiff generate` with these arguments fails; its message.
fn refused(method: &str, scheduler: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let o = adiff(&[
        "generate",
        "--weights",
        arg(&tiny_sd()),
        "--prompt",
        "a red circle",
        "--steps",
        "6",
        "--scheduler",
        scheduler,
        "--method",
        method,
        "--out",
        arg(&dir.path().join("img.png")),
    ]);
    assert!(!o.status.success(), "{method} on {scheduler} ran");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn sada_refuses_ddim_naming_the_schedulers_it_supports() {
    let e = refused("sada", "ddim");
    assert!(e.contains("sada"), "{e}");
    assert!(e.contains("euler") && e.contains("dpm++"), "{e}");
}

#[test]
fn sada_refuses_settings_that_cannot_run() {
    let e = refused("sada:acc_start=20,acc_end=10", "euler");
    assert!(e.contains("acc_start") && e.contains("acc_end"), "{e}");
    let e = refused(
        "sada:lagrange_term=3,lagrange_int=4,lagrange_step=10",
        "dpm++",
    );
    assert!(e.contains("lagrange_step") && e.contains("multiple"), "{e}");
}

#[test]
fn spectrum_refuses_a_degree_or_window_out_of_range() {
    let e = refused("spectrum:m=9", "euler");
    assert!(
        e.contains("'spectrum:m=9': m must be within 0–8 (got 9)"),
        "{e}"
    );
    let e = refused("spectrum:window=0", "euler");
    assert!(
        e.contains("'spectrum:window=0': window must be within 1–100 (got 0)"),
        "{e}"
    );
}
