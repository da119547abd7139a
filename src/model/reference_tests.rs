//! Checks against the tiny diffusers pipeline in `tests/fixtures/tiny-sd/` and the tensors
//! diffusers / transformers computed from it (`tests/fixtures/reference/`, written by
//! `tools/reference/make_reference.py`).
//!
//! Tolerance: every tensor comparison bounds the maximum absolute difference by
//! `1e-4 · max(1, max |reference|)` — i.e. 1e-4 absolute for tensors within ±1, relative to
//! the tensor's largest magnitude otherwise. The measured errors are printed (run with
//! `--nocapture`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::config::{ClipConfig, UNetConfig};
use super::sd::StableDiffusion;
use super::text_encoder::{ClipTextEncoder, eos_position};
use super::tokenizer::{ClipTokenizer, TokenizerSource};
use super::unet::UNet;
use super::{ModelError, checkpoint};
use crate::sampler::Denoiser;

const TOL: f32 = 1e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_dir() -> PathBuf {
    root().join("tests/fixtures/tiny-sd")
}

fn reference(name: &str) -> PathBuf {
    root().join("tests/fixtures/reference").join(name)
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(reference("manifest.json")).unwrap()).unwrap()
}

fn load_ref(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(reference(name), &Device::Cpu).unwrap()
}

/// Max |a − b| and max |b|; asserts the tolerance above.
fn assert_close(what: &str, got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let got = got.to_dtype(DType::F32).unwrap();
    let want = want.to_dtype(DType::F32).unwrap();
    let diff = (&got - &want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    let diff = diff.to_scalar::<f32>().unwrap();
    let scale = want
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    println!("{what}: max abs diff {diff:.3e} (reference max abs {scale:.3})");
    assert!(
        diff <= TOL * scale.max(1.0),
        "{what}: max abs diff {diff} > {TOL} × max(1, {scale})"
    );
    diff
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn check_tokens(tok: &ClipTokenizer) {
    let tokens: Value =
        serde_json::from_str(&std::fs::read_to_string(reference("tokens.json")).unwrap()).unwrap();
    assert_eq!(tok.bos_id() as u64, tokens["bos_id"].as_u64().unwrap());
    assert_eq!(tok.eos_id() as u64, tokens["eos_id"].as_u64().unwrap());
    assert_eq!(tok.pad_id() as u64, tokens["pad_id"].as_u64().unwrap());
    assert_eq!(tok.max_len() as u64, tokens["max_length"].as_u64().unwrap());
    let prompts = tokens["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 5);
    for p in prompts {
        let text = p["text"].as_str().unwrap();
        let want: Vec<u32> = p["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text).unwrap();
        assert_eq!(got.ids, want, "prompt {text:?}");
        let full = p["num_tokens_untruncated"].as_u64().unwrap() as usize;
        let untruncated: Vec<u32> = p["ids_untruncated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let content = tok.content_ids(text).unwrap();
        assert_eq!(
            content,
            untruncated[1..untruncated.len() - 1],
            "untruncated ids of {text:?}"
        );
        match (&got.truncated, full > tok.max_len()) {
            (None, false) => assert_eq!(got.eos_position, full - 1),
            (Some(t), true) => {
                assert_eq!(t.dropped_tokens, full - tok.max_len(), "{text:?}");
                assert_eq!(got.eos_position, tok.max_len() - 1);
                // The dropped text is a suffix of the prompt, and re-tokenises to the dropped ids.
                assert!(
                    text.trim_end().ends_with(&t.dropped_text),
                    "{:?}",
                    t.dropped_text
                );
                let again = tok.content_ids(&t.dropped_text).unwrap();
                assert_eq!(again, untruncated[tok.max_len() - 1..untruncated.len() - 1]);
            }
            (t, long) => {
                panic!("{text:?}: truncated {t:?} but untruncated length {full} (long: {long})")
            }
        }
    }
}

#[test]
fn tokenizer_json_matches_transformers() {
    let tok = ClipTokenizer::from_dir(&model_dir().join("tokenizer")).unwrap();
    assert_eq!(tok.source(), TokenizerSource::TokenizerJson);
    check_tokens(&tok);
}

#[test]
fn vocab_merges_tokenizer_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&model_dir().join("tokenizer"), dir.path());
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.source(), TokenizerSource::VocabMerges);
    check_tokens(&tok);
}

fn text_encoder_from(dir: &Path) -> ClipTextEncoder {
    let config = ClipConfig::from_file(&model_dir().join("text_encoder/config.json")).unwrap();
    ClipTextEncoder::load(
        &config,
        &[dir.join("model.safetensors")],
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

fn check_text_encoder(enc: &ClipTextEncoder) -> f32 {
    let r = load_ref("text_encoder.safetensors");
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let eos = enc.config().vocab_size as u32 - 1;
    let rows = ids.to_vec2::<u32>().unwrap();
    let positions: Vec<usize> = rows.iter().map(|row| eos_position(row, eos)).collect();
    let out = enc.forward(&ids, &positions).unwrap();
    assert_close(
        "text encoder last_hidden_state",
        &out.last_hidden_state,
        &r["last_hidden_state"],
    )
}

#[test]
fn text_encoder_matches_transformers() {
    let enc = text_encoder_from(&model_dir().join("text_encoder"));
    check_text_encoder(&enc);
}

#[test]
fn text_encoder_without_text_model_prefix() {
    let src = model_dir().join("text_encoder/model.safetensors");
    let tensors = candle_core::safetensors::load(&src, &Device::Cpu).unwrap();
    assert!(
        tensors.keys().all(|k| k.starts_with("text_model.")),
        "fixture layout changed"
    );
    let stripped: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("text_model.").to_string(), v))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    candle_core::safetensors::save(&stripped, dir.path().join("model.safetensors")).unwrap();
    let enc = text_encoder_from(dir.path());
    check_text_encoder(&enc);
}

#[test]
fn unet_matches_diffusers() {
    let config = UNetConfig::from_file(&model_dir().join("unet/config.json")).unwrap();
    let files =
        checkpoint::check_all(&[model_dir().join("unet/diffusion_pytorch_model.safetensors")])
            .unwrap();
    let vb = checkpoint::var_builder(&files, DType::F32, &Device::Cpu).unwrap();
    let unet = UNet::new(vb, &config).unwrap();
    let r = load_ref("unet.safetensors");
    let t = manifest()["unet"]["timestep"].as_f64().unwrap();
    let out = unet
        .forward(&r["sample"], t, &r["encoder_hidden_states"], None)
        .unwrap();
    assert_close("unet out", &out, &r["out"]);
}

fn tiny_sd() -> StableDiffusion {
    StableDiffusion::load_dir(&model_dir(), &Device::Cpu, DType::F32).unwrap()
}

#[test]
fn vae_decode_matches_diffusers() {
    let sd = tiny_sd();
    let r = load_ref("vae.safetensors");
    let sf = manifest()["vae"]["scaling_factor"].as_f64().unwrap();
    assert_eq!(sd.vae_scaling_factor(), sf);
    // The reference decodes the raw latents; `decode` divides by the scaling factor first.
    let image = sd.decode(&(&r["latents"] * sf).unwrap()).unwrap();
    assert_close("vae image", &image, &r["image"]);

    let rgb = sd.to_rgb(&image).unwrap();
    assert_eq!(rgb.dimensions(), (64, 64));
    let v = r["image"].get(0).unwrap().to_vec3::<f32>().unwrap();
    for (x, y) in [(0usize, 0usize), (13, 40), (63, 63)] {
        for (c, plane) in v.iter().enumerate() {
            let want = ((plane[y][x] / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as i32;
            let got = rgb.get_pixel(x as u32, y as u32)[c] as i32;
            assert!(
                (got - want).abs() <= 1,
                "pixel ({x},{y}) channel {c}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn pipeline_guided_prediction_matches_diffusers_loop() {
    let sd = tiny_sd();
    assert_eq!(sd.default_size(), (64, 64));
    assert_eq!(sd.latent_shape(64, 64).unwrap(), (1, 4, 8, 8));
    assert_eq!(sd.schedule().steps_offset, 1);

    let m = manifest();
    let generation = &m["generation"];
    let prompt = generation["prompt"].as_str().unwrap();
    let negative = generation["negative_prompt"].as_str().unwrap();
    let guidance = generation["guidance_scale"].as_f64().unwrap();
    let base = load_ref("baseline_ddim.safetensors");
    let t0 = m["baseline"][0]["timesteps"][0].as_f64().unwrap();
    assert_eq!(m["baseline"][0]["scheduler"], "ddim");

    let cond = sd.encode_prompt(prompt, Some(negative), guidance).unwrap();
    assert!(cond.guided);
    assert!(cond.truncation.is_empty());
    assert_eq!(cond.context.dims(), &[2, 77, 32]);
    // DDIM's scale_model_input is the identity, so the first model input is init_latents.
    let x = &base["init_latents"];
    let mut denoiser = sd.denoiser(&cond);
    let raw = denoiser.predict(x, t0).unwrap();
    assert!(raw.uncond.is_some());
    let guided = raw.guided(guidance).unwrap();
    let want = base["noise_preds"].get(0).unwrap().unsqueeze(0).unwrap();
    assert_close("guided noise prediction (DDIM step 0)", &guided, &want);

    // Without guidance only the conditional branch runs, and it equals the guided run's.
    let plain = sd.encode_prompt(prompt, None, 1.0).unwrap();
    assert!(!plain.guided);
    assert_eq!(plain.context.dims(), &[1, 77, 32]);
    let raw1 = sd.denoiser(&plain).predict(x, t0).unwrap();
    assert!(raw1.uncond.is_none());
    assert_close("unguided = conditional half", &raw1.cond, &raw.cond);

    // The empty prompt's states are the reference's second row.
    let te = load_ref("text_encoder.safetensors");
    let empty = sd.encode_prompt("", None, 1.0).unwrap();
    assert_close(
        "empty prompt states",
        &empty.context,
        &te["last_hidden_state"]
            .get(1)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
    );
}

#[test]
fn long_prompt_truncation_is_reported() {
    let sd = tiny_sd();
    let long = ["a very long prompt with many words that keeps going"; 10].join(" ");
    let cond = sd.encode_prompt(&long, Some("short"), 7.5).unwrap();
    assert_eq!(cond.truncation.len(), 1);
    let report = &cond.truncation[0];
    assert_eq!(report.role, super::PromptRole::Positive);
    assert!(report.truncated.dropped_tokens > 0);
    assert!(long.ends_with(&report.truncated.dropped_text));
}

#[test]
fn bad_image_sizes_are_rejected() {
    let sd = tiny_sd();
    let err = sd.latent_shape(65, 64).unwrap_err();
    assert_eq!(
        err.to_string(),
        "width 65 is not a multiple of 8 (the VAE's downsampling factor)"
    );
    assert!(sd.latent_shape(64, 4).is_err());
}

#[test]
fn truncated_weights_give_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&model_dir(), dir.path());
    let unet = dir.path().join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&unet).unwrap();
    std::fs::write(&unet, &bytes[..bytes.len() / 2]).unwrap();
    let err = StableDiffusion::load_dir(dir.path(), &Device::Cpu, DType::F32).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("unet/diffusion_pytorch_model.safetensors is truncated or corrupt"),
        "{msg}"
    );
    assert!(matches!(
        err.downcast_ref::<ModelError>(),
        Some(ModelError::CorruptWeights { .. })
    ));
}

#[test]
fn missing_files_give_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&model_dir(), dir.path());
    std::fs::remove_file(dir.path().join("vae/config.json")).unwrap();
    let err = StableDiffusion::load_dir(dir.path(), &Device::Cpu, DType::F32).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("missing VAE config: expected "), "{msg}");
    assert!(msg.contains("vae/config.json"), "{msg}");
    assert!(msg.contains("text_encoder_2/"), "{msg}");

    copy_dir(&model_dir(), dir.path());
    std::fs::remove_file(dir.path().join("text_encoder/model.safetensors")).unwrap();
    let msg = StableDiffusion::load_dir(dir.path(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing text encoder weights"), "{msg}");
    assert!(msg.contains("text_encoder/model.safetensors"), "{msg}");

    copy_dir(&model_dir(), dir.path());
    for f in ["tokenizer.json", "merges.txt"] {
        std::fs::remove_file(dir.path().join("tokenizer").join(f)).unwrap();
    }
    let msg = StableDiffusion::load_dir(dir.path(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("tokenizer/merges.txt"), "{msg}");
}

#[test]
fn unet_config_mismatch_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&model_dir(), dir.path());
    let path = dir.path().join("unet/config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["cross_attention_dim"] = Value::from(64);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let msg = StableDiffusion::load_dir(dir.path(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cross_attention_dim"), "{msg}");
    cfg["cross_attention_dim"] = Value::from(32);
    cfg["up_block_types"] = serde_json::json!(["UpBlock2D", "SimpleCrossAttnUpBlock2D"]);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let msg = StableDiffusion::load_dir(dir.path(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("up_block_types[1]"), "{msg}");
}
