//! `adiff generate` and `compare` on a video model (the tiny ModelScope pipeline): the
//! side-by-side animation, the frames, per-frame quality in the trace, 5-D latents in and
//! out, and the bad inputs of video options.

mod common;

use common::{adiff, arg, root, stderr};
use std::path::PathBuf;

fn tiny_video() -> PathBuf {
    root().join("tests/fixtures/tiny-modelscope")
}

#[test]
fn compare_writes_a_side_by_side_clip_frames_and_per_frame_psnr() {
    let dir = tempfile::tempdir().unwrap();
    let (out, trace, frames, lat) = (
        dir.path().join("clip.gif"),
        dir.path().join("t.json"),
        dir.path().join("frames"),
        dir.path().join("lat.safetensors"),
    );
    let w = tiny_video();
    let o = adiff(&[
        "compare",
        "--weights",
        arg(&w),
        "--prompt",
        "a red circle moving left",
        "--frames",
        "6",
        "--steps",
        "20",
        "--fps",
        "10",
        "--out",
        arg(&out),
        "--trace",
        arg(&trace),
        "--frames-out",
        arg(&frames),
        "--latents-out",
        arg(&lat),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("right against left (the left side is the reference), per frame: PSNR mean"),
        "{err}"
    );
    // A looping animation of 6 frames, each both clips side by side (64-px frames enlarged
    // to at least 256, a gap between).
    use image::AnimationDecoder;
    let bytes = std::fs::read(&out).unwrap();
    let dec = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
    let gif: Vec<image::Frame> = dec.into_frames().collect::<Result<_, _>>().unwrap();
    assert_eq!(gif.len(), 6);
    let (w0, h0) = gif[0].buffer().dimensions();
    assert_eq!(h0, 256);
    assert!(w0 > 512, "{w0}");
    assert_eq!(
        gif[0].delay().numer_denom_ms().0 / gif[0].delay().numer_denom_ms().1,
        100
    );
    // Each side's frames as PNGs.
    for side in ["left", "right"] {
        for i in 0..6 {
            let p = frames.join(side).join(format!("frame_{i:03}.png"));
            assert_eq!(image::open(&p).unwrap().width(), 64, "{}", p.display());
        }
    }
    // Per-frame quality in the trace: 6 frames, the clip's PSNR between the worst and the
    // best frame's.
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let v = &t["summary"]["video"];
    let per: Vec<f64> = v["psnr_per_frame_db"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::INFINITY)) // null: an identical frame
        .collect();
    assert_eq!(per.len(), 6);
    let worst = per.iter().copied().fold(f64::INFINITY, f64::min);
    let best = per.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(v["psnr_worst_db"].as_f64().unwrap(), worst);
    let clip = t["summary"]["psnr_db"].as_f64().unwrap();
    assert!(worst <= clip && clip <= best, "{worst} {clip} {best}");
    assert!(t["summary"]["unet_calls_saved"].as_u64().unwrap() > 0);
    // The baseline is the left side: it ran once, and the right side against it is the pair.
    assert_eq!(t["reference"]["same_run_as"], "left");
    assert_eq!(t["right_vs_reference"]["video"], t["summary"]["video"]);
    assert!(!frames.join("reference").exists(), "no third run");
    // 5-D latents out: [1, 4, 6, 8, 8] per side, and they feed back in.
    let l = candle_core::safetensors::load(&lat, &candle_core::Device::Cpu).unwrap();
    assert_eq!(l["left"].dims(), &[1, 4, 6, 8, 8]);
    let back = dir.path().join("in.safetensors");
    let noise =
        candle_core::Tensor::randn(0f32, 1.0, (1, 4, 6, 8, 8), &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("latents".to_string(), noise)]),
        &back,
    )
    .unwrap();
    let png = dir.path().join("strip.png");
    let o = adiff(&[
        "generate",
        "--weights",
        arg(&w),
        "--prompt",
        "a red circle",
        "--steps",
        "3",
        "--init-latents",
        arg(&back),
        "--out",
        arg(&png),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // An image format holds the frames in a grid: 6 frames → 3 × 2 of 64 px.
    assert_eq!(
        image::open(&png).unwrap().to_rgb8().dimensions(),
        (3 * 64, 2 * 64)
    );
}

/// One `error:` line containing `needle`, exit 1, nothing written in `dir`.
fn refused(args: &[&str], needle: &str, dir: &std::path::Path) {
    let o = adiff(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    assert!(
        lines[0].starts_with("error: ") && err.contains(needle),
        "{args:?}: {err}"
    );
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        1,
        "{args:?} wrote a file"
    );
}

#[test]
fn bad_video_options_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lat = d.join("lat.safetensors");
    let noise = candle_core::Tensor::zeros(
        (1, 4, 5, 8, 8),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("latents".to_string(), noise)]),
        &lat,
    )
    .unwrap();
    let (v, img) = (tiny_video(), common::tiny_sd());
    let gif = d.join("o.gif");
    let png = d.join("o.png");
    let run = |extra: &[&str], weights: &PathBuf, out: &PathBuf| {
        let mut a = vec![
            "generate",
            "--weights",
            arg(weights),
            "--prompt",
            "a",
            "--steps",
            "2",
        ];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--out", arg(out)]);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let check = |args: Vec<String>, needle: &str| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&a, needle, d);
    };
    check(
        run(&["--frames", "0"], &v, &gif),
        "--frames must be from 1 to 128 (got 0)",
    );
    check(
        run(&["--frames", "500"], &v, &gif),
        "--frames must be from 1 to 128",
    );
    check(
        run(&["--frames", "8"], &img, &png),
        "makes images, not video",
    );
    check(run(&[], &img, &gif), "a GIF is a clip");
    check(run(&["--fps", "0"], &v, &gif), "--fps must be");
    check(
        run(&["--frames", "8", "--init-latents", arg(&lat)], &v, &gif),
        "a 64x64 clip of 8 frames with this model needs [1, 4, 8, 8, 8]",
    );
    check(
        run(&["--init-latents", arg(&lat)], &img, &png),
        "but this model's latents are [batch, channels, height, width]",
    );
}

#[test]
fn bench_runs_prompt_sets_on_a_video_model_with_per_frame_columns() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, "a red circle moving left\n").unwrap();
    let out = dir.path().join("b");
    let o = adiff(&[
        "bench",
        "--weights",
        arg(&tiny_video()),
        "--prompts",
        arg(&prompts),
        "--frames",
        "3",
        "--steps",
        "16",
        "--deltas",
        "0.05",
        "--no-clip",
        "--out",
        arg(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = adaptive_diffusion::bench::records::read_rows(&out.join("runs.csv")).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.frames == Some(3)));
    let fast = rows.iter().find(|r| r.setting != "baseline").unwrap();
    assert!(fast.unet_calls < 16, "{}", fast.pattern);
    let (mean, worst, clip) = (
        fast.psnr_frame_mean_db.unwrap(),
        fast.psnr_frame_worst_db.unwrap(),
        fast.psnr_db.unwrap(),
    );
    assert!(
        worst <= mean && worst <= clip && clip.is_finite(),
        "{worst} {mean} {clip}"
    );
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    assert_eq!(settings["settings"]["frames"], 3, "{settings}");
}

#[test]
fn deepcache_and_tgate_run_on_both_video_families() {
    let fx = root().join("tests/fixtures");
    let animatediff = [
        "--weights".to_string(),
        arg(&fx.join("tiny-sd")).to_string(),
        "--motion".to_string(),
        arg(&fx.join("tiny-animatediff/motion_adapter")).to_string(),
    ];
    let modelscope = ["--weights".to_string(), arg(&tiny_video()).to_string()];
    for model in [&animatediff[..], &modelscope[..]] {
        check_deepcache_and_tgate(model);
    }
}

fn check_deepcache_and_tgate(model: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let run = |right: &str| -> serde_json::Value {
        let (out, trace) = (dir.path().join("a.gif"), dir.path().join("a.json"));
        let mut args: Vec<&str> = vec!["compare"];
        args.extend(model.iter().map(String::as_str));
        let o = adiff(
            &[
                &args[..],
                &[
                    "--prompt",
                    "a red circle moving left",
                    "--frames",
                    "2",
                    "--steps",
                    "8",
                    "--right",
                    right,
                    "--out",
                    arg(&out),
                    "--trace",
                    arg(&trace),
                ][..],
            ]
            .concat(),
        );
        assert!(o.status.success(), "{model:?} {right}: {}", stderr(&o));
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap()
    };
    // DeepCache recomputing every step is the baseline, to the bit.
    let t = run("deepcache:interval=1");
    assert!(
        t["summary"]["psnr_db"].is_null(),
        "identical clips: {}",
        t["summary"]
    );
    // Every third step full: the other steps compute the shallow branch only (with its
    // temporal layers; on the tiny two-block models a large share of a call), less work;
    // the clip stays close.
    let t = run("deepcache:interval=3");
    let less = t["summary"]["macs_speedup"].as_f64().unwrap();
    assert!(less > 1.25, "{}", t["summary"]);
    assert!(t["summary"]["psnr_db"].as_f64().unwrap() > 20.0);
    // T-GATE past its gate: one batch on the negative prompt with the cached cross-attention
    // (means over each CFG half's frames).
    let t = run("tgate:gate=5");
    assert!(
        t["summary"]["macs_speedup"].as_f64().unwrap() > 1.0,
        "{}",
        t["summary"]
    );
    assert!(t["summary"]["psnr_db"].as_f64().unwrap() > 20.0);
}

#[test]
fn compare_of_two_methods_measures_each_clip_against_the_full_step_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (out, trace, frames) = (
        dir.path().join("clip.gif"),
        dir.path().join("clip.json"),
        dir.path().join("frames"),
    );
    let w = tiny_video();
    let o = adiff(&[
        "compare",
        "--weights",
        arg(&w),
        "--prompt",
        "a red circle moving left",
        "--frames",
        "3",
        "--steps",
        "6",
        "--left",
        "steps:n=3",
        "--right",
        "deepcache:interval=2",
        "--out",
        arg(&out),
        "--trace",
        arg(&trace),
        "--frames-out",
        arg(&frames),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for pair in [
        "left against the reference, per frame: PSNR mean",
        "right against the reference, per frame: PSNR mean",
        "right against left, per frame: PSNR mean",
    ] {
        assert!(err.contains(pair), "{pair}: {err}");
    }
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    assert_eq!(t["reference"]["spec"], "baseline");
    assert_eq!(t["reference"]["unet_calls"], 6);
    for pair in ["summary", "left_vs_reference", "right_vs_reference"] {
        let v = &t[pair]["video"];
        assert_eq!(v["frames"], 3, "{pair}");
        assert_eq!(
            v["psnr_per_frame_db"].as_array().unwrap().len(),
            3,
            "{pair}"
        );
        assert_eq!(t[pair]["ssim"], v["ssim_mean"], "{pair}");
    }
    assert_ne!(
        t["left_vs_reference"]["video"],
        t["right_vs_reference"]["video"]
    );
    for side in ["left", "right", "reference"] {
        let p = frames.join(side).join("frame_002.png");
        assert!(p.is_file(), "{}", p.display());
    }
}
