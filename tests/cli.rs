//! End-to-end tests of the `adiff` binary on the tiny diffusers-format pipeline in
//! `tests/fixtures/tiny-sd` (random weights made by `tools/reference/make_reference.py`).

mod common;

use common::{adiff, stderr, tiny_sd as fixture};
use std::path::Path;
use std::process::Command;

/// Run a command that must fail: one `error:` line, no panic, non-zero exit, no output.
fn expect_error(args: &[&str], needle: &str, out: &Path) {
    let o = adiff(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} succeeded: {err}");
    assert_ne!(o.status.code(), Some(101), "{args:?} panicked: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("WARN"))
        .collect();
    assert_eq!(lines.len(), 1, "{args:?} printed more than one line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{args:?}: expected '{needle}' in: {err}"
    );
    assert!(!out.exists(), "{args:?} left {} behind", out.display());
}

#[test]
fn compare_end_to_end_writes_image_and_traces() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp.png");
    let trace = dir.path().join("cmp.json");
    let lat = dir.path().join("lat.safetensors");
    let w = fixture();
    let o = adiff(&[
        "compare",
        "--weights",
        w.to_str().unwrap(),
        "--prompt",
        "a red circle at the top left",
        "--negative",
        "blurry",
        "--steps",
        "25",
        "--scheduler",
        "dpm++",
        "--delta",
        "0.05",
        "--out",
        out.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--latents-out",
        lat.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&out).unwrap().to_rgb8();
    // 64×64 images, enlarged 4× pixel for pixel so that the picture is at least 256 high.
    assert_eq!(img.height(), 256);
    assert!(img.width() > 512, "side by side: {}", img.width());
    for (x, y) in [(0, 0), (100, 37), (255, 255)] {
        let block = (x / 4 * 4, y / 4 * 4);
        assert_eq!(img.get_pixel(x, y), img.get_pixel(block.0, block.1));
    }
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    for side in ["left", "right"] {
        let s = &j[side];
        assert!(s["unet_calls"].as_u64().unwrap() >= 1, "{side}");
        assert!(s["elapsed_ms"].as_f64().unwrap() > 0.0);
        let steps = s["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 25);
        for (i, st) in steps.iter().enumerate() {
            assert_eq!(st["index"].as_u64().unwrap() as usize, i);
            assert!(st["timestep"].is_number());
            assert!(st["computed"].is_boolean());
            assert!(st.get("d").is_some());
        }
        let computed = steps
            .iter()
            .filter(|s| s["computed"].as_bool().unwrap())
            .count();
        assert_eq!(computed as u64, s["unet_calls"].as_u64().unwrap());
    }
    assert_eq!(j["left"]["unet_calls"], 25);
    assert_eq!(j["left"]["spec"], "baseline");
    assert_eq!(
        j["reference"]["same_run_as"], "left",
        "the baseline runs once"
    );
    let adaptive_calls = j["right"]["unet_calls"].as_u64().unwrap();
    assert!(adaptive_calls < 25, "δ=0.05 should skip some steps");
    assert_eq!(
        j["summary"]["unet_calls_saved"].as_u64().unwrap(),
        25 - adaptive_calls
    );
    let t = candle_core::safetensors::load(&lat, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["left"].dims(), &[1, 4, 8, 8]);
    assert_eq!(t["right"].dims(), &[1, 4, 8, 8]);
    assert!(
        !t.contains_key("reference"),
        "the left side is the reference"
    );
}

#[test]
fn generate_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let w = fixture();
    let run = |seed: &str, name: &str| {
        let out = dir.path().join(name);
        let o = adiff(&[
            "generate",
            "--weights",
            w.to_str().unwrap(),
            "--prompt",
            "a blue square",
            "--steps",
            "6",
            "--mode",
            "baseline",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(out).unwrap()
    };
    let a = run("7", "a.png");
    let b = run("7", "b.png");
    let c = run("8", "c.png");
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn bad_input_gives_one_clear_error_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let o = out.to_str().unwrap();
    let w = fixture();
    let w = w.to_str().unwrap();
    let base = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["generate", "--weights", w, "--out", o]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !extra.contains(&"--prompt") {
            v.extend(["--prompt".to_string(), "a red circle".to_string()]);
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let check = |extra: &[&'static str], needle: &str| {
        let args = base(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_error(&refs, needle, &out);
    };
    check(&["--prompt", "  "], "--prompt is empty");
    check(&["--scheduler", "pndm"], "unknown scheduler 'pndm'");
    check(&["--steps", "0"], "--steps must be at least 1");
    check(
        &["--width", "100"],
        "--width 100 is not a positive multiple of 8",
    );
    check(&["--delta", "-0.5"], "--delta");
    check(&["--max-skips", "0"], "--max-skips must be at least 1");
    let long = "a red circle and a blue square ".repeat(20);
    let long: &'static str = Box::leak(long.into_boxed_str());
    check(&["--prompt", long], "77 tokens");

    // Missing weights folder.
    expect_error(
        &[
            "generate",
            "--weights",
            "/nonexistent/weights",
            "--prompt",
            "a",
            "--out",
            o,
        ],
        "/nonexistent/weights",
        &out,
    );
    // Unknown hub model.
    expect_error(
        &["generate", "--model", "sd99", "--prompt", "a", "--out", o],
        "sd99",
        &out,
    );
    // Unwritable output path.
    expect_error(
        &[
            "generate",
            "--weights",
            w,
            "--prompt",
            "a",
            "--out",
            "/nonexistent-dir/x.png",
        ],
        "does not exist",
        Path::new("/nonexistent-dir/x.png"),
    );
}

#[test]
fn truncated_weights_and_wrong_latents_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let o = out.to_str().unwrap();
    // A copy of the pipeline with a truncated UNet file.
    let copy = dir.path().join("tiny");
    copy_dir(&fixture(), &copy);
    let unet = copy.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&unet).unwrap();
    std::fs::write(&unet, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(
        &[
            "generate",
            "--weights",
            copy.to_str().unwrap(),
            "--prompt",
            "a",
            "--out",
            o,
        ],
        "diffusion_pytorch_model.safetensors",
        &out,
    );
    // Latents of the wrong shape.
    let lat = dir.path().join("lat.safetensors");
    let x = candle_core::Tensor::zeros(
        (1, 4, 5, 8),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("latents".to_string(), x)]),
        &lat,
    )
    .unwrap();
    let w = fixture();
    expect_error(
        &[
            "generate",
            "--weights",
            w.to_str().unwrap(),
            "--prompt",
            "a",
            "--width",
            "64",
            "--height",
            "64",
            "--init-latents",
            lat.to_str().unwrap(),
            "--out",
            o,
        ],
        "[1, 4, 5, 8]",
        &out,
    );
}

#[test]
fn hub_model_without_network_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let o = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(["generate", "--model", "sd15", "--prompt", "a cat", "--out"])
        .arg(&out)
        .env("HF_HUB_CACHE", dir.path().join("empty-cache"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("--weights"),
        "the error should suggest a local folder: {err}"
    );
    assert!(!out.exists());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Without --model or --weights (and with an empty hub cache) `adiff` uses the built-in
/// shapes model and says so; prompt words outside its vocabulary are reported.
#[test]
fn default_model_is_the_builtin_shapes_model_and_unknown_words_are_reported() {
    let dir = std::env::temp_dir().join(format!("adiff-default-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("x.png");
    let o = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args([
            "generate",
            "--prompt",
            "a red circle, watercolor",
            "--steps",
            "2",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", dir.join("empty-hub"))
        .env_remove("ADIFF_SHAPES_MODEL")
        .env_remove("ADIFF_LOG")
        .output()
        .expect("run adiff");
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("using the built-in shapes model"), "{err}");
    assert!(err.contains("\"watercolor\""), "{err}");
    assert!(
        !err.contains("\",\""),
        "punctuation reported as a word: {err}"
    );
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (32, 32));
    std::fs::remove_dir_all(&dir).ok();
}

/// `--vae FILE` replaces the model's VAE weights: the tiny pipeline's own VAE written in the
/// original layout (accepted by diffusers' `from_single_file` as exactly that VAE, see
/// `tools/reference/make_single_file_vae.py`) gives the same PNG byte for byte, and so does
/// the folder's diffusers-layout file; a VAE whose weights differ changes the image; files
/// that are no VAE are refused by name.
#[test]
fn a_separate_vae_file_replaces_the_models_vae() {
    let dir = tempfile::tempdir().unwrap();
    let w = fixture();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ldm = root.join("tests/fixtures/single-file/tiny-vae-ldm.safetensors");
    let run = |vae: Option<&Path>, name: &str| {
        let out = dir.path().join(name);
        let mut args = vec![
            "generate",
            "--weights",
            w.to_str().unwrap(),
            "--prompt",
            "a red circle",
            "--steps",
            "3",
            "--out",
            out.to_str().unwrap(),
        ];
        if let Some(v) = vae {
            args.extend(["--vae", v.to_str().unwrap()]);
        }
        let o = adiff(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(out).unwrap()
    };
    let own = run(None, "own.png");
    assert_eq!(run(Some(&ldm), "ldm.png"), own);
    let diffusers = w.join("vae/diffusion_pytorch_model.safetensors");
    assert_eq!(run(Some(&diffusers), "diffusers.png"), own);

    // Another VAE (the same file with the decoder's output bias moved) changes the image.
    let tensors = candle_core::safetensors::load(&ldm, &candle_core::Device::Cpu).unwrap();
    let mut other = tensors.clone();
    let bias = &tensors["decoder.conv_out.bias"];
    other.insert("decoder.conv_out.bias".into(), (bias + 0.5).unwrap());
    let other_path = dir.path().join("other-vae.safetensors");
    candle_core::safetensors::save(&other, &other_path).unwrap();
    assert_ne!(run(Some(&other_path), "other.png"), own);

    let out = dir.path().join("never.png");
    let bad = |vae: &Path, needle: &str| {
        expect_error(
            &[
                "generate",
                "--weights",
                w.to_str().unwrap(),
                "--prompt",
                "a",
                "--steps",
                "2",
                "--vae",
                vae.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            needle,
            &out,
        )
    };
    bad(
        &w.join("unet/diffusion_pytorch_model.safetensors"),
        "holds no VAE",
    );
    bad(&dir.path().join("none.safetensors"), "does not exist");
    let pickle = dir.path().join("vae.ckpt");
    std::fs::write(&pickle, b"\x80\x02").unwrap();
    bad(
        &pickle,
        "pickle files can run code when they are loaded, so adiff never opens them: convert it to safetensors first, on a machine where you trust it (with diffusers: AutoencoderKL.from_single_file",
    );
}

/// `compare --weights FILE --lora FILE:SCALE` end to end on the tiny single-file SD 1.x
/// checkpoint: both images and the report, which records the LoRA and what loading found.
#[test]
fn compare_runs_a_single_file_checkpoint_with_a_lora() {
    let dir = tempfile::tempdir().unwrap();
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/single-file");
    let model = files.join("tiny-sd1.safetensors");
    let lora = format!("{}:0.8", files.join("lora-sd1-kohya.safetensors").display());
    let out = dir.path().join("cmp.png");
    let trace = dir.path().join("cmp.json");
    let o = adiff(&[
        "compare",
        "--weights",
        model.to_str().unwrap(),
        "--lora",
        &lora,
        "--prompt",
        "a red circle",
        "--steps",
        "6",
        "--width",
        "64",
        "--height",
        "64",
        "--cpu",
        "--out",
        out.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("SD 1.x checkpoint (897 tensors, F16"), "{err}");
    assert!(
        err.contains("merged into 170 modules (UNet 160, text encoder 10)"),
        "{err}"
    );
    let img = image::open(&out).unwrap();
    assert!(img.width() >= 128, "two 64-px images side by side");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let text = report.to_string();
    assert!(text.contains("lora-sd1-kohya.safetensors:0.8"), "{text}");
    assert!(text.contains("tiny-sd1.safetensors"), "{text}");
}
