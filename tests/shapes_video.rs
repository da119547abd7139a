//! The built-in model makes video: `--model shapes --frames N` loads its motion module
//! (`assets/models/shapes/motion`, with its motion words), the clip comparison runs offline,
//! the evaluator judges clips, and the bad inputs of video on the built-in model.

mod common;

use common::{adiff, arg, root, stderr};
use std::process::Command;

fn adiff_env(args: &[&str], env: (&str, &std::path::Path)) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(args)
        .env(env.0, env.1)
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn the_builtin_model_compares_clips_with_its_motion_words() {
    let dir = tempfile::tempdir().unwrap();
    let (out, trace) = (dir.path().join("clip.gif"), dir.path().join("t.json"));
    let o = adiff(&[
        "compare",
        "--model",
        "shapes",
        "--frames",
        "4",
        "--steps",
        "6",
        "--prompt",
        "a red circle moving right",
        "--out",
        arg(&out),
        "--trace",
        arg(&trace),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // The module and its words were loaded; no word of the prompt is unknown to them.
    assert!(err.contains("the motion module's words"), "{err}");
    assert!(!err.contains("does not know"), "{err}");
    use image::AnimationDecoder;
    let bytes = std::fs::read(&out).unwrap();
    let dec = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
    let frames: Vec<image::Frame> = dec.into_frames().collect::<Result<_, _>>().unwrap();
    assert_eq!(frames.len(), 4);
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    assert_eq!(t["summary"]["video"]["frames"], 4, "{t}");

    // Without frames the image model runs, and the motion words are unknown to it.
    let png = dir.path().join("still.png");
    let o = adiff(&[
        "generate",
        "--model",
        "shapes",
        "--steps",
        "4",
        "--prompt",
        "a red circle moving right",
        "--out",
        arg(&png),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("moving"), "{err}");
}

#[test]
fn clips_beyond_the_modules_positions_and_models_without_one_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("c.gif");
    let o = adiff(&[
        "generate",
        "--model",
        "shapes",
        "--frames",
        "17",
        "--prompt",
        "a red circle moving up",
        "--out",
        arg(&gif),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("beyond the motion module's position table of 16 frames"),
        "{err}"
    );
    assert!(!gif.exists());
    // A copy of the image model without its motion module makes images only: frames are
    // refused.
    let gif = dir.path().join("c.png");
    let copy = dir.path().join("shapes-image");
    let src = root().join("assets/models/shapes");
    std::fs::create_dir_all(&copy).unwrap();
    for part in [
        "model_index.json",
        "unet",
        "text_encoder",
        "tokenizer",
        "scheduler",
    ] {
        copy_all(&src.join(part), &copy.join(part));
    }
    let o = adiff_env(
        &[
            "generate",
            "--model",
            "shapes",
            "--frames",
            "4",
            "--prompt",
            "a red circle moving up",
            "--out",
            arg(&gif),
        ],
        ("ADIFF_SHAPES_MODEL", &copy),
    );
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("makes images, not video"), "{err}");
    assert!(!gif.exists());
}

fn copy_all(from: &std::path::Path, to: &std::path::Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_all(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn the_evaluator_generates_held_out_clips_and_judges_each() {
    let dir = tempfile::tempdir().unwrap();
    let clips = dir.path().join("clips");
    let o = adiff(&[
        "train",
        "motion-eval",
        "--single",
        "2",
        "--pairs",
        "1",
        "--frames",
        "4",
        "--steps",
        "4",
        "--clips",
        arg(&clips),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("one object: motion right"), "{out}");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clips.join("summary.json")).unwrap()).unwrap();
    let results = s["clips"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(s["single"]["clips"], 2);
    assert_eq!(s["pairs"]["clips"], 1);
    // The last prompt is a pair moving apart; each clip is a filmstrip of its 4 frames.
    assert!(
        results[2]["prompt"]
            .as_str()
            .unwrap()
            .contains("moving apart")
    );
    let strips: Vec<_> = std::fs::read_dir(&clips)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "png").then_some(p)
        })
        .collect();
    assert_eq!(strips.len(), 3);
    // The frames in a grid of 32-px cells.
    let img = image::open(&strips[0]).unwrap();
    assert_eq!((img.width() % 32, img.height() % 32), (0, 0));
    assert!(img.width() * img.height() >= 4 * 32 * 32);
}

#[test]
fn the_loss_by_noise_level_compares_the_checkpoint_with_its_modules_off() {
    // The committed checkpoint, read only: a table of five bands, each with both losses.
    let o = adiff(&[
        "train",
        "motion-loss",
        "--out",
        "assets/models/shapes/motion/checkpoint",
        "--batches",
        "1",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains('–'))
        .collect();
    assert_eq!(rows.len(), 5, "{out}");
    assert!(
        rows[0].starts_with("| 0–199 |") && rows[4].starts_with("| 800–999 |"),
        "{out}"
    );
    // A folder without a checkpoint is refused by name, with what to give instead.
    let dir = tempfile::tempdir().unwrap();
    let o = adiff(&["train", "motion-loss", "--out", arg(dir.path())]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("holds no motion checkpoint"), "{err}");
}

/// The built-in model copied to `dir` with its motion module's `config.json` edited.
fn model_with_motion_config(
    dir: &std::path::Path,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let model = dir.join("shapes");
    copy_all(&root().join("assets/models/shapes"), &model);
    let _ = std::fs::remove_dir_all(model.join("checkpoint"));
    let _ = std::fs::remove_dir_all(model.join("motion/checkpoint"));
    let path = model.join("motion/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    model
}

#[test]
fn a_modules_noise_rules_move_the_shared_noise_by_the_prompts_motion_words() {
    use adaptive_diffusion::job::Job;
    use adaptive_diffusion::model::ModelSource;
    use adaptive_diffusion::pipeline;
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_motion_config(dir.path(), |cfg| {
        cfg["shared_noise"] = serde_json::json!(1.0);
        cfg["noise_motion"] = serde_json::json!([
            {"words": "moving right", "motion": {"Shift": {"dx": 18, "dy": 0}}},
            {"words": "moving apart", "motion": {"Apart": {"d": 7}}}
        ]);
    });
    let mut job = Job::new(ModelSource::Local(model.clone()), "");
    job.frames = Some(4);
    job.force_cpu = true;
    let loaded = pipeline::load_job_model(&job, &Default::default()).unwrap();
    // The noise of frame `f`, channel 0, as rows.
    let frame = |prompt: &str, f: usize| -> Vec<Vec<f32>> {
        let mut j = job.clone();
        j.prompt = prompt.into();
        let p = pipeline::prepare(&loaded, &j).unwrap();
        assert_eq!(p.initial_latents().dims(), &[1, 3, 4, 32, 32]);
        p.initial_latents()
            .narrow(2, f, 1)
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .chunks(32)
            .map(|r| r.to_vec())
            .collect()
    };
    // "moving right": what frame 0 has at x, the last frame has at x + 18.
    let (first, last) = (
        frame("a red circle moving right", 0),
        frame("a red circle moving right", 3),
    );
    for y in 0..32 {
        assert_eq!(&first[y][..14], &last[y][18..], "row {y}");
    }
    assert_ne!(first, last);
    // No rule's words: every frame is the same draw (the shared noise alone).
    assert_eq!(
        frame("a red circle growing", 0),
        frame("a red circle growing", 3)
    );
    // Apart: the left half moves left, the right half right.
    let (a0, a3) = (
        frame("a and b moving apart", 0),
        frame("a and b moving apart", 3),
    );
    for y in 0..32 {
        assert_eq!(&a0[y][7..16], &a3[y][..9], "left half, row {y}");
        assert_eq!(&a0[y][16..25], &a3[y][23..], "right half, row {y}");
    }
    // The error of loading the model with `key` of its motion config set to `value`.
    let refused = |name: &str, key: &str, value: serde_json::Value| -> String {
        let bad = model_with_motion_config(&dir.path().join(name), |cfg| cfg[key] = value);
        let mut j = job.clone();
        j.model = ModelSource::Local(bad);
        format!(
            "{:#}",
            pipeline::load_job_model(&j, &Default::default())
                .err()
                .unwrap()
        )
    };
    // A rule that does not parse is refused when the module loads, naming its field.
    let e = refused(
        "unparsed",
        "noise_motion",
        serde_json::json!([{"words": "moving right", "motion": "up"}]),
    );
    assert!(e.contains("config.json") && e.contains("Shift"), "{e}");
    // A rule that would draw a canvas of a million cells a side, and a pyramid discount
    // outside 0..1: refused by name.
    let e = refused(
        "huge",
        "noise_motion",
        serde_json::json!([{"words": "moving right", "motion": {"Shift": {"dx": 1_000_000, "dy": 0}}}]),
    );
    assert!(e.contains("at most 1024 cells"), "{e}");
    let e = refused("pyramid", "noise_pyramid", serde_json::json!(1.5));
    assert!(e.contains("noise_pyramid 1.5"), "{e}");
}

/// A module's recorded evaluation (`adiff train motion-eval --record`): a prompt asking for
/// a motion the module mostly got wrong is warned about, naming the measurement; one it
/// got right is not; a malformed record is refused at load.
#[test]
fn a_prompt_asking_for_a_motion_the_module_mostly_fails_is_warned_about() {
    use adaptive_diffusion::job::Job;
    use adaptive_diffusion::model::ModelSource;
    use adaptive_diffusion::pipeline;
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_motion_config(dir.path(), |cfg| {
        cfg["evaluated"] = serde_json::json!([
            {"words": "moving right", "right": 1, "clips": 6},
            {"words": "growing", "right": 5, "clips": 6}
        ]);
        cfg["evaluated_by"] = serde_json::json!("adiff train motion-eval --single 24, 2026-12-07");
    });
    let mut job = Job::new(ModelSource::Local(model.clone()), "");
    job.frames = Some(2);
    job.force_cpu = true;
    let loaded = pipeline::load_job_model(&job, &Default::default()).unwrap();
    let warned = |prompt: &str| -> Vec<String> {
        let mut j = job.clone();
        j.prompt = prompt.into();
        let p = pipeline::prepare(&loaded, &j).unwrap();
        p.warnings.iter().map(|w| w.to_string()).collect()
    };
    let w = warned("a red circle moving right on a black background");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("\"moving right\"")
            && w[0].contains("1 of 6 held-out clips")
            && w[0].contains("motion-eval --single 24, 2026-12-07"),
        "{w:?}"
    );
    assert!(warned("a red circle growing").is_empty());
    // "right" alone is a position, not the motion.
    assert!(warned("a red circle at the top right").is_empty());
    let mut bad_job = job.clone();
    bad_job.model = ModelSource::Local(model_with_motion_config(&dir.path().join("bad"), |cfg| {
        cfg["evaluated"] = serde_json::json!([{"words": "moving up", "right": 4, "clips": 3}]);
    }));
    let e = format!(
        "{:#}",
        pipeline::load_job_model(&bad_job, &Default::default())
            .err()
            .unwrap()
    );
    assert!(e.contains("\"moving up\" with 4 of 3 clips right"), "{e}");
}
