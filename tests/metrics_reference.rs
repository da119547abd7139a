//! PSNR, SSIM and CLIP alignment against the Python references in `tests/fixtures/metrics`
//! (made by `tools/reference/make_metrics_reference.py`: scikit-image for PSNR/SSIM,
//! transformers `CLIPModel` + the PIL-backend `CLIPImageProcessor` for CLIP).

use adaptive_diffusion::metrics::clip::{ClipPreprocess, ClipScorer, cosine};
use adaptive_diffusion::metrics::{psnr, ssim};
use candle_core::{Device, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics")
}

fn png(rel: &str) -> image::RgbImage {
    image::open(dir().join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .to_rgb8()
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join(name)).unwrap()).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn psnr_and_ssim_match_scikit_image() {
    let expected = json("expected.json");
    let pairs = expected["pairs"].as_array().unwrap();
    assert!(pairs.len() >= 6);
    let (mut worst_psnr, mut worst_ssim) = (0f64, 0f64);
    for p in pairs {
        let a = png(p["a"].as_str().unwrap());
        let b = png(p["b"].as_str().unwrap());
        let got_p = psnr(&a, &b).unwrap();
        match p["psnr"].as_f64() {
            Some(want) => {
                let e = (got_p - want).abs();
                assert!(e <= 1e-3, "{p}: PSNR {got_p} vs {want}");
                worst_psnr = worst_psnr.max(e);
            }
            None => assert!(got_p.is_infinite(), "{p}: identical images give PSNR ∞"),
        }
        let got_s = ssim(&a, &b).unwrap();
        let want = p["ssim"].as_f64().unwrap();
        let e = (got_s - want).abs();
        assert!(e <= 1e-3, "{p}: SSIM {got_s} vs {want}");
        worst_ssim = worst_ssim.max(e);
    }
    eprintln!("largest |error| vs scikit-image: PSNR {worst_psnr:e} dB, SSIM {worst_ssim:e}");
    // the implementations are the same arithmetic in f64: far inside the 1e-3 contract
    assert!(worst_psnr < 1e-9 && worst_ssim < 1e-9);
}

fn reference_tensors() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("clip_reference.safetensors"), &Device::Cpu).unwrap()
}

fn case_name(case: &Value) -> String {
    Path::new(case["image"].as_str().unwrap())
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn clip_model_matches_transformers_on_identical_inputs() {
    let scorer = ClipScorer::from_dir(&dir().join("tiny-clip"), &Device::Cpu).unwrap();
    let refs = reference_tensors();
    let cases = json("clip_reference.json");
    let (mut worst_emb, mut worst_cos) = (0f32, 0f64);
    for case in cases["cases"].as_array().unwrap() {
        let name = case_name(case);
        let prompt = case["prompt"].as_str().unwrap();
        let want_ids: Vec<u32> = case["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            scorer.token_ids(prompt).unwrap(),
            want_ids,
            "{name}: token ids"
        );
        let text = scorer.text_features_from_ids(&want_ids).unwrap();
        let pv = &refs[&format!("pixel_values_{name}")];
        let img = scorer.image_features_from_pixels(pv).unwrap();
        let e_text = max_abs_diff(&text, &refs[&format!("text_embeds_{name}")]);
        let e_img = max_abs_diff(&img, &refs[&format!("image_embeds_{name}")]);
        assert!(e_text <= 1e-4, "{name}: text embedding off by {e_text}");
        assert!(e_img <= 1e-4, "{name}: image embedding off by {e_img}");
        let cos = cosine(&img, &text).unwrap();
        let want = case["cosine"].as_f64().unwrap();
        assert!((cos - want).abs() <= 1e-5, "{name}: cosine {cos} vs {want}");
        worst_emb = worst_emb.max(e_text).max(e_img);
        worst_cos = worst_cos.max((cos - want).abs());
    }
    eprintln!(
        "CLIP model vs transformers: embeddings max |error| {worst_emb:e}, cosine {worst_cos:e}"
    );
}

#[test]
fn clip_preprocessing_matches_transformers_pil_backend() {
    let refs = reference_tensors();
    let cases = json("clip_reference.json");
    let tiny =
        ClipPreprocess::from_file(&dir().join("tiny-clip/preprocessor_config.json"), 32).unwrap();
    assert_eq!(tiny.shortest_edge, 32);
    assert_eq!(tiny.crop, (32, 32));
    let default = ClipPreprocess::default();
    let mut worst = 0f32;
    for case in cases["cases"].as_array().unwrap() {
        let name = case_name(case);
        let img = png(case["image"].as_str().unwrap());
        // the whole processor at the tiny model's size (downsampling)
        let pv = tiny.pixel_values(&img, &Device::Cpu).unwrap();
        let e = max_abs_diff(&pv, &refs[&format!("pixel_values_{name}")]);
        worst = worst.max(e);
        assert!(e <= 1e-6, "{name}: pixel_values off by {e}");
        // the 8-bit resize + crop at openai/clip-vit-base-patch32's 224: bit-exact Pillow
        let crop = default.resize_crop(&img).unwrap();
        let want = png(&format!("clip224/{name}.png"));
        assert_eq!(crop.dimensions(), (224, 224));
        let differing = crop
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "{name}: {differing} bytes differ from Pillow's bicubic resize"
        );
    }
    assert!(
        cases["clip224_normalize_max_abs_diff"].as_f64().unwrap() <= 1e-6,
        "the reference's 224 crop normalises to the processor's pixel_values"
    );
    eprintln!(
        "CLIP preprocessing vs transformers (PIL backend): pixel_values max |error| {worst:e}; 224 crops bit-exact"
    );
}

#[test]
fn clip_score_end_to_end_matches_transformers() {
    let scorer = ClipScorer::from_dir(&dir().join("tiny-clip"), &Device::Cpu).unwrap();
    let cases = json("clip_reference.json");
    for case in cases["cases"].as_array().unwrap() {
        let img = png(case["image"].as_str().unwrap());
        let a = scorer
            .score(&img, case["prompt"].as_str().unwrap())
            .unwrap();
        let want = case["cosine"].as_f64().unwrap();
        assert!((a.cosine - want).abs() <= 1e-5, "{a:?} vs {want}");
        assert!((a.clip_score - 100.0 * want.max(0.0)).abs() <= 1e-3);
        assert!((a.half_cosine - (want + 1.0) / 2.0).abs() <= 1e-5);
    }
}

#[test]
fn missing_clip_weights_are_an_error_not_a_number() {
    let empty = tempfile::tempdir().unwrap();
    let err = ClipScorer::from_dir(empty.path(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}
