//! The desktop app driven through egui_kittest (no window, no GPU): type a prompt, press
//! Generate, watch both sides finish on the tiny random-weight pipeline, move δ and see
//! only the adaptive side re-run, cancel, supersede, export, and show errors.
#![cfg(feature = "gui")]

use adaptive_diffusion::app::{
    ExportKind, GuiApp, LoraEntry, MethodParams, ModelChoice, Phase, Settings, SideStatus, egui,
    export,
};
use adaptive_diffusion::sampler::{Method, MethodKind};
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type App = Option<GuiApp>;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd")
}

fn settings(export_dir: &Path) -> Settings {
    Settings {
        prompt: String::new(),
        model: ModelChoice::Local(tiny()),
        steps: 12,
        force_cpu: true,
        export_dir: export_dir.to_path_buf(),
        ui_scale: 1.0,
        ..Settings::default()
    }
}

/// A harness whose app is created on the first frame, with the harness's context (the
/// worker repaints it).
fn harness(settings: Settings) -> Harness<'static, App> {
    harness_sized(settings, egui::vec2(1600.0, 1500.0))
}

/// [`harness`] with a window of `size`.
fn harness_sized(settings: Settings, size: egui::Vec2) -> Harness<'static, App> {
    let mut h = Harness::builder().with_size(size).build_ui_state(
        move |ui, app: &mut App| {
            app.get_or_insert_with(|| GuiApp::new(ui.ctx(), settings.clone()))
                .ui(ui);
        },
        None,
    );
    h.step();
    h
}

fn app<'a>(h: &'a Harness<'_, App>) -> &'a GuiApp {
    h.state().as_ref().expect("created on the first frame")
}

fn app_mut<'a>(h: &'a mut Harness<'_, App>) -> &'a mut GuiApp {
    h.state_mut().as_mut().expect("created on the first frame")
}

/// Step frames until `cond` holds (panics with `what` after five minutes: a guard against
/// a hang, generous because the suite shares two cores, often with other work).
fn wait_for(h: &mut Harness<'_, App>, what: &str, cond: impl Fn(&GuiApp) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        h.step();
        if cond(app(h)) {
            return;
        }
        if Instant::now() > deadline {
            let a = app(h);
            panic!(
                "timed out waiting for {what}: phase {:?}, error {:?}, stats {:?}",
                a.session.phase,
                a.session.error,
                a.worker_stats()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Step frames until a node's label contains `text` (panics after ten seconds).
fn wait_for_label(h: &mut Harness<'_, App>, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        h.step();
        if h.query_all_by_label_contains(text).next().is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for “{text}”");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn done(a: &GuiApp) -> bool {
    a.session.phase == Phase::Done && a.session.comparison.is_some()
}

fn type_prompt(h: &mut Harness<'_, App>, text: &str) {
    let field = h.get_by_label("Prompt");
    field.focus();
    h.step();
    h.get_by_label("Prompt").type_text(text);
    h.step();
    h.step();
}

#[test]
fn gui_generate_runs_both_sides_on_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(settings(dir.path()));
    type_prompt(&mut h, "a red fox in the snow");
    assert_eq!(app(&h).settings.prompt, "a red fox in the snow");

    h.get_by_label("Generate").click();
    wait_for(&mut h, "both sides", done);

    let a = app(&h);
    let s = &a.session;
    let (b, ad) = s.results().expect("both results");
    assert_eq!(s.baseline.status, SideStatus::Done);
    assert_eq!(s.adaptive.status, SideStatus::Done);
    assert_eq!(b.trace.steps_run, 12);
    assert_eq!(b.trace.unet_calls, 12, "the baseline computes every step");
    assert_eq!(ad.trace.method.name(), "adaptive");
    assert_eq!(ad.trace.method.delta(), Some(0.01));
    assert_eq!(b.image.dimensions(), ad.image.dimensions());
    assert_eq!(
        s.baseline.steps.len(),
        12,
        "every step was streamed to the UI"
    );
    let c = s.comparison.as_ref().unwrap();
    assert!(c.psnr_db > 0.0);
    let ssim = c.ssim.expect("SSIM of 64×64 images");
    assert!((-1.0..=1.0).contains(&ssim));
    let st = a.worker_stats();
    assert_eq!(
        (st.baseline_runs, st.adaptive_runs, st.model_loads),
        (1, 1, 1)
    );
    assert!(s.model.as_ref().unwrap().origin.contains("tiny-sd"));

    // The numbers are on screen.
    h.get_by_label_contains("Adaptive vs Baseline:");
    h.get_by_label_contains("Against Baseline:");
    h.run();
}

#[test]
fn gui_moving_delta_reruns_only_the_adaptive_side() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.prompt = "a lighthouse at dusk".into();
    let mut h = harness(s);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    wait_for(&mut h, "the first comparison", done);
    let first = app(&h).session.results().unwrap();
    assert_eq!(app(&h).worker_stats().baseline_runs, 1);

    // Move the δ slider: the adaptive side re-runs by itself, the baseline comes from the cache.
    h.get_by_role_and_label(Role::Slider, "δ threshold")
        .set_value_accesskit(0.05);
    wait_for(&mut h, "the re-run with δ = 0.05", |a| {
        done(a)
            && a.session
                .spec
                .as_ref()
                .is_some_and(|s| s.method.delta() == Some(0.05))
    });
    let a = app(&h);
    let st = a.worker_stats();
    assert_eq!(
        st.baseline_runs, 1,
        "the baseline must not run again: {st:?}"
    );
    assert_eq!(st.baseline_cache_hits, 1, "{st:?}");
    assert_eq!(st.adaptive_runs, 2, "{st:?}");
    let (b, ad) = a.session.results().unwrap();
    assert!(std::sync::Arc::ptr_eq(&b, &first.0), "same cached baseline");
    assert_eq!(ad.trace.method.delta(), Some(0.05));
    assert!(a.session.baseline.from_cache);

    // C_max too.
    h.get_by_role_and_label(Role::Slider, "C_max")
        .set_value_accesskit(2.0);
    wait_for(&mut h, "the re-run with C_max = 2", |a| {
        done(a)
            && a.session
                .spec
                .as_ref()
                .is_some_and(|s| s.method.max_skips() == Some(2))
    });
    let st = app(&h).worker_stats();
    assert_eq!((st.baseline_runs, st.adaptive_runs), (1, 3), "{st:?}");

    // A new seed needs a new baseline.
    app_mut(&mut h).settings.seed += 1;
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the new seed", |a| {
        done(a) && a.worker_stats().baseline_runs == 2
    });
    let st = app(&h).worker_stats();
    assert_eq!((st.baseline_runs, st.adaptive_runs), (2, 4), "{st:?}");
    h.run();
}

/// A run long enough to be interrupted: 150 steps at 128×128.
fn slow(dir: &Path) -> Settings {
    Settings {
        prompt: "a slow run".into(),
        steps: 150,
        custom_size: true,
        width: 128,
        height: 128,
        ..settings(dir)
    }
}

#[test]
fn gui_cancel_stops_between_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(slow(dir.path()));
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the first baseline steps", |a| {
        a.session.baseline.steps.len() >= 2
    });
    h.key_press(egui::Key::Escape);
    wait_for(&mut h, "the cancel", |a| {
        a.session.phase == Phase::Cancelled
    });
    let a = app(&h);
    assert!(a.session.baseline.steps.len() < 150, "stopped early");
    assert_eq!(a.session.baseline.status, SideStatus::Cancelled);
    assert!(a.session.results().is_none());
    // The worker is idle again and nothing more arrives.
    wait_for(&mut h, "the worker to go idle", |a| !a.worker_stats().busy);
    let st = app(&h).worker_stats();
    assert_eq!((st.cancelled, st.adaptive_runs), (1, 0), "{st:?}");
    let n = app(&h).session.baseline.steps.len();
    for _ in 0..20 {
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(app(&h).session.baseline.steps.len(), n);
    assert!(h.query_by_label("Cancel").is_some());
    h.run();
}

#[test]
fn gui_new_generate_supersedes_the_running_job_without_mixing() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(slow(dir.path()));
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the first job's steps", |a| {
        a.session.baseline.steps.len() >= 2
    });
    // Another seed and a short run: job 1 must stop, and only job 2's results show.
    {
        let a = app_mut(&mut h);
        a.settings.seed = 7;
        a.settings.steps = 8;
        a.settings.custom_size = false;
    }
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the second job", done);
    let a = app(&h);
    let s = &a.session;
    assert_eq!(s.job, Some(2));
    assert_eq!(s.spec.as_ref().unwrap().seed, 7);
    let (b, ad) = s.results().unwrap();
    assert_eq!((b.trace.budget, ad.trace.budget), (8, 8));
    assert_eq!(b.image.dimensions(), (64, 64));
    assert_eq!(s.baseline.steps.len(), 8, "no step of job 1 in the view");
    let st = a.worker_stats();
    assert_eq!(st.cancelled, 1, "{st:?}");
    assert_eq!(
        st.adaptive_runs, 1,
        "job 1 never reached its adaptive side: {st:?}"
    );
    h.run();
}

#[test]
fn gui_delta_change_during_the_baseline_lets_the_baseline_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(Settings {
        steps: 40,
        ..slow(dir.path())
    });
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the first baseline steps", |a| {
        a.session.baseline.steps.len() >= 2
    });
    h.get_by_role_and_label(Role::Slider, "δ threshold")
        .set_value_accesskit(0.05);
    wait_for(&mut h, "the second job", |a| {
        done(a)
            && a.session
                .spec
                .as_ref()
                .is_some_and(|s| s.method.delta() == Some(0.05))
    });
    let a = app(&h);
    let st = a.worker_stats();
    // One baseline (job 1's, finished for job 2), one adaptive run (job 2's).
    assert_eq!(
        (st.baseline_runs, st.baseline_cache_hits, st.adaptive_runs),
        (1, 1, 1),
        "{st:?}"
    );
    assert_eq!(a.session.job, Some(2));
    assert_eq!(a.session.baseline.steps.len(), 40);
    // The baseline ran on screen a moment ago: not labelled as reused (issue 30, 12).
    assert!(!a.session.baseline.from_cache);
    assert_eq!(
        a.session.results().unwrap().1.trace.method.delta(),
        Some(0.05)
    );
    h.step();
    assert!(
        h.query_all_by_label_contains("reused from")
            .next()
            .is_none()
    );
    h.run();
}

/// The label of an export's button.
fn export_label(kind: ExportKind) -> &'static str {
    match kind {
        ExportKind::Comparison => "Export comparison PNG",
        ExportKind::Image(adaptive_diffusion::app::Side::Baseline) => "Baseline PNG",
        ExportKind::Image(_) => "Adaptive PNG",
        ExportKind::TraceJson => "Trace JSON",
        ExportKind::TraceCsv => "Trace CSV",
        ExportKind::ClipGif => "Clip GIF",
        ExportKind::Filmstrip => "Filmstrip PNG",
        ExportKind::Frames => "Frames (each side)",
    }
}

/// Press an export's button and wait for it: where it wrote.
fn export_by_button(h: &mut Harness<'_, App>, kind: ExportKind) -> PathBuf {
    app_mut(h).last_export = None;
    let label = export_label(kind);
    h.get_by_label(label).click();
    wait_for(h, label, |a| a.last_export.is_some());
    let out = app(h).last_export.clone().unwrap();
    assert_eq!(out.kind, kind);
    out.result.expect("export succeeded")
}

#[test]
fn gui_export_writes_png_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.prompt = "a teapot, studio light".into();
    s.negative = "blurry".into();
    let mut h = harness(s);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "both sides", done);

    let exported = |h: &mut Harness<'_, App>, kind: ExportKind| -> PathBuf {
        app_mut(h).last_export = None;
        export_by_button(h, kind)
    };

    let png = exported(&mut h, ExportKind::Comparison);
    assert!(
        png.starts_with(dir.path()) && png.is_file(),
        "{}",
        png.display()
    );
    let img = image::open(&png).expect("decodes").to_rgb8();
    assert!(
        img.width() >= 2 * 448 && img.height() > 448 + 3 * 190,
        "{:?}",
        img.dimensions()
    );
    let chunks = export::read_text_chunks(&png).unwrap();
    let get = |k: &str| {
        chunks
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k} chunk in {chunks:?}"))
    };
    let params = get("parameters");
    let mut lines = params.lines();
    assert_eq!(lines.next(), Some("a teapot, studio light"));
    assert_eq!(lines.next(), Some("Negative prompt: blurry"));
    let fields = lines.next().unwrap();
    for want in [
        "Steps: 12",
        "Sampler: DDIM",
        "CFG scale: 7.5",
        "Seed: 42",
        "Size: 64x64",
        "Model: tiny-sd",
        "Adaptive delta: 0.01",
        "C_max: 4",
        "Baseline predictor calls: 12",
    ] {
        assert!(fields.contains(want), "{want} missing in {fields}");
    }
    let trace: serde_json::Value = serde_json::from_str(&get("adiff_trace")).unwrap();
    assert_eq!(trace["prompt"], "a teapot, studio light");
    assert_eq!(trace["left"]["steps"].as_array().unwrap().len(), 12);
    assert_eq!(trace["right"]["mode"], "adaptive");
    assert!(trace["summary"]["ssim"].is_number());

    let one = exported(
        &mut h,
        ExportKind::Image(adaptive_diffusion::app::Side::Baseline),
    );
    assert_eq!(image::open(&one).unwrap().to_rgb8().dimensions(), (64, 64));
    let chunks = export::read_text_chunks(&one).unwrap();
    assert!(
        chunks
            .iter()
            .any(|(k, v)| k == "parameters" && v.contains("Mode: baseline"))
    );

    let csv = exported(&mut h, ExportKind::TraceCsv);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("side,index,"));
    assert_eq!(
        text.lines().filter(|l| l.starts_with("baseline,")).count(),
        12
    );
    let json = exported(&mut h, ExportKind::TraceJson);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["settings"]["steps"], 12);
    // The left side is the full-step baseline: it is the reference, one run.
    assert_eq!(v["reference"]["same_run_as"], "left");
    assert_eq!(v["left_vs_reference"]["psnr_db"], serde_json::Value::Null);
    assert_eq!(
        v["right_vs_reference"]["unet_calls_saved"],
        v["summary"]["unet_calls_saved"]
    );
    h.run();
}

#[test]
fn gui_shows_errors_instead_of_crashing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.prompt = "anything".into();
    s.model = ModelChoice::Local("/nonexistent/adiff-model".into());
    let mut h = harness(s);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the failure", |a| a.session.phase == Phase::Failed);
    h.get_by_label_contains("/nonexistent/adiff-model");
    // An empty prompt is refused before anything is sent to the worker.
    app_mut(&mut h).session.error = None;
    app_mut(&mut h).settings.prompt = "   ".into();
    app_mut(&mut h).settings.model = ModelChoice::Local(tiny());
    h.get_by_label("Generate").click();
    h.step();
    h.get_by_label_contains("the prompt is empty");
    assert_eq!(app(&h).worker_stats().jobs, 1);
    h.run();
}

/// A single-file checkpoint with a LoRA from the list (an unticked one stays out), then a
/// LoRA made for another family shown in red.
#[test]
fn gui_loads_a_single_file_checkpoint_with_a_listed_lora() {
    let dir = tempfile::tempdir().unwrap();
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/single-file");
    let mut s = settings(dir.path());
    s.prompt = "a red circle".into();
    s.steps = 4;
    s.custom_size = true;
    (s.width, s.height) = (64, 64);
    s.model = ModelChoice::LocalFile(files.join("tiny-sd1.safetensors"));
    s.loras = vec![
        LoraEntry {
            path: files.join("lora-sd1-kohya.safetensors"),
            scale: 0.8,
            enabled: true,
        },
        LoraEntry {
            path: files.join("lora-sd1-peft.safetensors"),
            scale: 1.0,
            enabled: false,
        },
    ];
    let mut h = harness(s);
    h.get_by_label("lora-sd1-kohya.safetensors");
    h.get_by_label("lora-sd1-peft.safetensors");
    assert!(
        h.get_all_by_label("scale").count() >= 2,
        "a scale slider per LoRA"
    );
    h.get_by_label("Add LoRA…");
    h.get_by_label("Checkpoint file");
    h.get_by_label("Generate").click();
    wait_for(&mut h, "both sides", done);
    let notes = &app(&h).session.model.as_ref().unwrap().notes;
    assert!(notes[0].contains("SD 1.x checkpoint ("), "{notes:?}");
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[1].contains("lora-sd1-kohya.safetensors ×0.8: merged into 170 modules"),
        "{notes:?}"
    );
    h.get_by_label_contains("· 1 LoRA");
    // The load notes under the LoRA list, paths cut to file names.
    h.get_by_label("tiny-sd1.safetensors: SD 1.x checkpoint (897 tensors, F16, UNet input 4 channels, with its VAE)");
    h.get_by_label_contains("LoRA lora-sd1-kohya.safetensors ×0.8: merged into 170 modules");

    app_mut(&mut h).settings.model = ModelChoice::LocalFile(files.join("tiny-sdxl.safetensors"));
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the failure", |a| a.session.phase == Phase::Failed);
    h.get_by_label_contains("made for SD 1.x / 2.x");
    // Issue 30, defect 7: the comparison on screen before the failed load stays.
    let a = app(&h);
    assert!(a.session.results().is_some(), "the previous results stay");
    assert!(a.export_data().is_some(), "and can still be exported");
    h.get_by_label_contains("Adaptive vs Baseline:");
    h.run();
}

/// Files dropped on the window: a checkpoint becomes the model, a LoRA joins the list, a
/// VAE replaces the model's, and anything else is named in red.
#[test]
fn gui_dropped_files_become_model_lora_and_vae() {
    let dir = tempfile::tempdir().unwrap();
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/single-file");
    let mut h = harness(settings(dir.path()));
    /// A file as a window system hands it over.
    #[derive(Debug)]
    struct Dropped(PathBuf);
    impl egui::DroppedFile for Dropped {
        fn path(&self) -> &Path {
            &self.0
        }
        fn bytes(&self) -> Result<Vec<u8>, String> {
            std::fs::read(&self.0).map_err(|e| e.to_string())
        }
    }
    let drop = |h: &mut Harness<'_, App>, path: PathBuf| {
        h.input_mut()
            .dropped_files
            .push(std::sync::Arc::new(Dropped(path)));
        h.step();
    };
    drop(&mut h, files.join("tiny-sdxl.safetensors"));
    drop(&mut h, files.join("lora-sdxl-kohya.safetensors"));
    drop(&mut h, files.join("tiny-vae-ldm.safetensors"));
    let s = &app(&h).settings;
    assert_eq!(
        s.model,
        ModelChoice::LocalFile(files.join("tiny-sdxl.safetensors"))
    );
    assert_eq!(s.loras.len(), 1);
    assert_eq!(s.loras[0].path, files.join("lora-sdxl-kohya.safetensors"));
    assert_eq!(s.vae, Some(files.join("tiny-vae-ldm.safetensors")));
    h.get_by_label("lora-sdxl-kohya.safetensors");

    drop(&mut h, files.join("unet_keymap.json"));
    h.get_by_label_contains("cannot use the dropped file");
    h.run();
}

/// A custom size below 64 (a 32×32 pixel-space model) survives the size fields.
#[test]
fn gui_custom_size_keeps_small_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(Settings {
        custom_size: true,
        width: 32,
        height: 24,
        ..settings(dir.path())
    });
    h.step();
    h.step();
    assert_eq!((app(&h).settings.width, app(&h).settings.height), (32, 24));
}

#[test]
fn gui_choosing_another_method_reruns_only_the_right_side() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.prompt = "a red circle".into();
    let mut h = harness(s);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    wait_for(&mut h, "the first comparison", done);

    // Pick the fewer-steps control from the method menu: the right side re-runs with it.
    h.get_by_label("Method").click();
    h.run_steps(3);
    h.get_by_label("Fewer steps (control)").click();
    h.run_steps(3);
    h.get_by_role_and_label(Role::Slider, "steps")
        .set_value_accesskit(5.0);
    wait_for(&mut h, "the re-run with 5 steps", |a| {
        done(a)
            && a.session
                .results()
                .is_some_and(|(_, r)| r.trace.method.own_steps() == Some(5))
    });
    let a = app(&h);
    let (_, right) = a.session.results().unwrap();
    assert_eq!(right.trace.unet_calls, 5);
    assert!(right.trace.unet_cost.is_some_and(|c| c > 0.0));
    assert_eq!(
        a.worker_stats().baseline_runs,
        1,
        "the baseline stays cached"
    );
    h.get_by_label_contains("Fewer steps: 5 steps");

    // ucache has its own control.
    h.get_by_label("Method").click();
    h.run_steps(3);
    h.get_by_label("ucache (stable-diffusion.cpp)").click();
    h.run_steps(3);
    h.get_by_role_and_label(Role::Slider, "threshold");
    wait_for(&mut h, "the ucache run", |a| {
        done(a)
            && a.session
                .results()
                .is_some_and(|(_, r)| r.trace.method.name() == "ucache")
    });
}

#[test]
fn gui_the_left_side_can_run_another_method() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.prompt = "a red circle".into();
    s.left.set(kind("steps"), "n", 6.0);
    let mut h = harness(s);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    wait_for(&mut h, "the first comparison", done);
    h.get_by_label("Left side").click();
    h.run_steps(3);
    h.get_by_label("Fewer steps (control)").click();
    wait_for(&mut h, "the left side's 6-step run", |a| {
        done(a)
            && a.session
                .results()
                .is_some_and(|(l, _)| l.trace.method.own_steps() == Some(6))
    });
    let a = app(&h);
    let (left, right) = a.session.results().unwrap();
    assert_eq!(left.trace.unet_calls, 6);
    assert_eq!(right.trace.method.name(), "adaptive");
    h.get_by_label_contains("Fewer steps: 6 steps");
    // Neither side is the full-step baseline: both are measured against it, which came
    // from the cache (the first comparison's left side was it), so nothing ran twice.
    let runs = |h: &Harness<'_, App>| app(h).worker_stats().baseline_runs;
    assert_eq!(runs(&h), 2, "the first baseline and the 6-step left side");
    h.get_by_label_contains("Against the full-step baseline (12 steps): left PSNR");
    let json = export_by_button(&mut h, ExportKind::TraceJson);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["reference"]["spec"], "baseline");
    assert_eq!(v["reference"]["unet_calls"], 12);
    assert!(
        v["reference"].get("same_run_as").is_none(),
        "{}",
        v["reference"]
    );
    assert!(v["left_vs_reference"]["psnr_db"].as_f64().unwrap() > 0.0);
    assert_eq!(v["left_vs_reference"]["nfe_speedup"], 2.0);
    assert!(v["right_vs_reference"]["psnr_db"].as_f64().is_some());
}

/// Issue 30, defect 1: the side panel kept its width at scale 1.0 but crept wider on every
/// redraw at 1.15 (450 → 1 490 px). At every scale it must keep its width through many
/// frames, pointer moves over it and the results, and a finished run.
#[test]
fn gui_side_panel_keeps_its_width_at_every_ui_scale() {
    for scale in [1.0f32, 1.15, 1.5, 2.0] {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness_sized(
            Settings {
                prompt: "a red circle".into(),
                ui_scale: scale,
                ..settings(dir.path())
            },
            egui::vec2(1600.0, 1000.0),
        );
        h.run_steps(3);
        let width = app(&h).controls_width();
        assert!(width > 250.0, "scale {scale}: panel drawn ({width})");
        let move_pointer = |h: &mut Harness<'_, App>, i: usize| {
            let x = 20.0 + (i * 37 % 1500) as f32;
            let y = 20.0 + (i * 53 % 900) as f32;
            h.input_mut()
                .events
                .push(egui::Event::PointerMoved(egui::pos2(x, y)));
            h.step();
        };
        for i in 0..60 {
            move_pointer(&mut h, i);
        }
        assert_eq!(
            app(&h).controls_width(),
            width,
            "scale {scale}: idle frames"
        );
        h.get_by_label("Generate").click();
        wait_for(&mut h, "both sides", done);
        for i in 0..60 {
            move_pointer(&mut h, i + 60);
        }
        assert_eq!(
            app(&h).controls_width(),
            width,
            "scale {scale}: after a finished run"
        );
    }
}

/// Issue 30, defect 4: a slower right side reads "1.29× slower loop", never "0.78× faster";
/// equal call counts read "as many predictor calls", never "1.00× fewer".
#[test]
fn gui_speed_wording_reads_right_when_the_method_is_slower() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(Settings {
        prompt: "a red circle".into(),
        ..settings(dir.path())
    });
    h.get_by_label("Generate").click();
    wait_for(&mut h, "both sides", done);
    // The numbers: T-GATE at 1 331 ms against a 1 033 ms baseline, same calls.
    {
        let s = &mut app_mut(&mut h).session;
        let (mut left, mut right) = (
            (*s.baseline.result.clone().unwrap()).clone(),
            (*s.adaptive.result.clone().unwrap()).clone(),
        );
        left.trace.elapsed_ms = 1033.0;
        right.trace.elapsed_ms = 1331.0;
        // The left side reused from a run two minutes before the right side's.
        right.computed_at = left.computed_at + Duration::from_secs(120);
        right.trace.unet_calls = left.trace.unet_calls;
        s.baseline.result = Some(std::sync::Arc::new(left));
        s.adaptive.result = Some(std::sync::Arc::new(right));
    }
    h.run_steps(2);
    h.get_by_label_contains("Adaptive vs Baseline: as many predictor calls · 1.29× slower loop");
    h.get_by_label_contains("Against Baseline: as many predictor calls · 1.29× slower loop");
    assert!(h.query_by_label_contains("faster loop").is_none());
    h.get_by_label_contains("Timed 2 min apart (the left side was reused from an earlier run)");
    assert!(h.query_by_label_contains("1.00×").is_none());
    assert!(h.query_by_label_contains("0.78×").is_none());
}

/// Issue 30, defect 5: with DeepCache on the left and fewer steps on the right, every
/// title, legend, key number and export button names the side by its method, an exported
/// image's file name too, and the left side's own settings drive the left side only.
#[test]
fn gui_labels_follow_the_methods_and_each_side_has_its_own_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.prompt = "a red circle".into();
    s.left_method = kind("deepcache");
    s.method = kind("steps");
    s.right.set(kind("steps"), "n", 6.0);
    let mut h = harness(s);
    // Named before the first run, too.
    h.get_by_label("DeepCache PNG");
    h.get_by_label("Fewer steps PNG");
    h.get_by_label("Generate").click();
    wait_for(&mut h, "both sides", done);
    h.get_by_label_contains("Fewer steps vs DeepCache:");
    h.get_by_label("Adaptive Diffusion — Fewer steps vs DeepCache");
    h.get_by_label_contains("Against DeepCache:");
    h.get_by_label_contains("DeepCache: interval");
    h.get_by_label_contains("Fewer steps: 6 steps");
    for gone in [
        "Adaptive vs baseline",
        "Adaptive vs Baseline",
        "Baseline PNG",
        "Adaptive PNG",
    ] {
        assert!(
            h.query_by_label_contains(gone).is_none(),
            "{gone} still shown"
        );
    }
    // The legends, outside the plots (labels, not egui_plot's checkboxes over the data).
    for legend in [
        "DeepCache d_k",
        "Fewer steps d_k",
        "DeepCache predictor ms",
        "Fewer steps predictor ms",
    ] {
        h.get_by_role_and_label(Role::Label, legend);
        assert!(
            h.query_by_role_and_label(Role::CheckBox, legend).is_none(),
            "{legend} drawn over the plot"
        );
    }
    // The right side ran its own 6 steps: its bar counts them, not the job's 12.
    h.get_by_label_contains("6 / 6 steps · done");
    // The export is named after the side's method.
    h.get_by_label("DeepCache PNG").click();
    wait_for(&mut h, "the export", |a| a.last_export.is_some());
    let path = app(&h).last_export.clone().unwrap().result.unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with("-left-deepcache.png"), "{name}");
    let chunks = export::read_text_chunks(&path).unwrap();
    let params = &chunks.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(params.contains("Mode: deepcache"), "{params}");

    // The slider under "Left side" is the left side's (DeepCache's interval): it re-runs the
    // left side with it and leaves the right side's settings alone.
    h.get_by_role_and_label(Role::Slider, "interval")
        .set_value_accesskit(2.0);
    wait_for(&mut h, "the left side with interval 2", |a| {
        done(a)
            && a.session.results().is_some_and(|(l, _)| {
                l.trace.method == Method::named("deepcache").unwrap().with("interval", 2.0)
            })
    });
    let a = app(&h);
    assert_eq!(a.settings.left.get(kind("deepcache"), "interval"), 2.0);
    let mut right = MethodParams::default();
    right.set(kind("steps"), "n", 6.0);
    assert_eq!(a.settings.right, right);
    assert_eq!(
        a.session.results().unwrap().1.trace.method,
        Method::steps(6)
    );
    h.get_by_label_contains("DeepCache: interval 2");
}

/// Issue 30, defect 2: when the system file chooser cannot open, the window says so, and
/// a typed path does the job: a LoRA, a VAE, and "Save comparison as".
#[test]
fn gui_file_chooser_failure_is_shown_and_paths_can_be_typed() {
    let dir = tempfile::tempdir().unwrap();
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/single-file");
    let mut h = harness(Settings {
        prompt: "a red circle".into(),
        ..settings(dir.path())
    });
    // A desktop without a portal or zenity: the chooser returns at once with nothing.
    app_mut(&mut h).set_file_chooser(|_| None);
    let type_into = |h: &mut Harness<'_, App>, field: &str, text: &str| {
        h.get_by_label(field).focus();
        h.step();
        h.get_by_label(field).type_text(text);
        h.step();
    };

    h.get_by_label("Add LoRA…").click();
    wait_for_label(&mut h, "“LoRA file” field");
    h.get_by_label_contains("The system file chooser did not open");
    let lora = files.join("lora-sd1-kohya.safetensors");
    type_into(&mut h, "LoRA file", &lora.display().to_string());
    h.get_by_label("Add").click();
    h.run_steps(2);
    assert_eq!(app(&h).settings.loras.len(), 1);
    assert_eq!(app(&h).settings.loras[0].path, lora);
    assert!(
        h.query_by_label_contains("did not open").is_none(),
        "the note goes once a path is taken"
    );

    h.get_by_label("Choose…").click();
    wait_for_label(&mut h, "“VAE file” field");
    let vae = files.join("tiny-vae-ldm.safetensors");
    type_into(&mut h, "VAE file", &vae.display().to_string());
    h.get_by_label("Use").click();
    h.run_steps(2);
    assert_eq!(app(&h).settings.vae, Some(vae));

    // Save as: a run first (without the LoRA and VAE, made for other pipelines).
    {
        let a = app_mut(&mut h);
        a.settings.loras.clear();
        a.settings.vae = None;
    }
    h.get_by_label("Generate").click();
    wait_for(&mut h, "both sides", done);
    h.get_by_label("Save comparison as…").click();
    wait_for_label(&mut h, "“Save as” field");
    type_into(&mut h, "Save as", "mine.png");
    h.get_by_label("Save").click();
    wait_for(&mut h, "the export", |a| a.last_export.is_some());
    let out = app(&h).last_export.clone().unwrap().result.unwrap();
    assert_eq!(out, dir.path().join("mine.png"));
    assert!(out.is_file());
}

/// Issue 30, defect 9: "Exported …" never covers the shortcut hints, and goes after a few
/// seconds.
#[test]
fn gui_export_note_leaves_the_hints_alone_and_goes() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir
        .path()
        .join("a-rather-long-folder-name-for-exports-of-the-adaptive-diffusion-comparisons")
        .join("and-another-long-one-below-it-to-make-the-path-wide");
    let mut h = harness(Settings {
        prompt: "a red circle".into(),
        ..settings(&long)
    });
    h.get_by_label("Generate").click();
    wait_for(&mut h, "both sides", done);
    h.get_by_label("Export comparison PNG").click();
    wait_for(&mut h, "the export", |a| a.last_export.is_some());
    h.run_steps(2);
    let note = h.get_by_label_contains("Exported ").rect();
    let hints = h.get_by_label_contains("Ctrl+Enter generate").rect();
    assert!(
        note.max.x <= hints.min.x,
        "the note {note:?} runs into the hints {hints:?}"
    );
    // Ten seconds later it is gone.
    if let Some(e) = app_mut(&mut h).last_export.as_mut() {
        e.at = Instant::now() - Duration::from_secs(10);
    }
    h.run_steps(2);
    assert!(h.query_by_label_contains("Exported ").is_none());
}

/// Issue 30, defect 12: the "prompt is empty" error goes once a prompt is typed.
#[test]
fn gui_prompt_error_goes_once_a_prompt_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(settings(dir.path()));
    h.get_by_label("Generate").click();
    h.run_steps(2);
    h.get_by_label_contains("the prompt is empty");
    type_prompt(&mut h, "a red circle");
    h.run_steps(2);
    assert!(h.query_by_label_contains("the prompt is empty").is_none());
}

/// Issue 30, defect 12: a long prompt scrolls in its box instead of pushing every control
/// down.
#[test]
fn gui_long_prompt_does_not_push_the_controls_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(Settings {
        prompt: "a red circle".into(),
        ..settings(dir.path())
    });
    h.run_steps(2);
    let short = h.get_by_label("Generate").rect().min.y;
    app_mut(&mut h).settings.prompt = "a red circle on a gray background, ".repeat(60);
    h.run_steps(3);
    let long = h.get_by_label("Generate").rect().min.y;
    assert!(long - short < 60.0, "Generate moved from {short} to {long}");
}

/// Issue 30, defect 12: a local checkpoint's path survives picking another model and back.
#[test]
fn gui_local_checkpoint_path_survives_switching_models() {
    let dir = tempfile::tempdir().unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/single-file/tiny-sd1.safetensors");
    let mut h = harness(Settings {
        model: ModelChoice::LocalFile(file.clone()),
        ..settings(dir.path())
    });
    h.run_steps(2);
    app_mut(&mut h).settings.model = ModelChoice::Local(tiny());
    h.run_steps(2);
    h.get_by_role_and_label(Role::ComboBox, "Model").click();
    h.run_steps(3);
    h.get_by_label("Local file… (single-file checkpoint)")
        .click();
    h.run_steps(3);
    assert_eq!(app(&h).settings.model, ModelChoice::LocalFile(file));
}

/// Issue 30, defect 12: δ = 0.5 typed in is kept (any δ ≥ 0 is valid), not clamped to 0.2.
#[test]
fn gui_delta_above_the_slider_range_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(settings(dir.path()));
    h.get_by_role_and_label(Role::Slider, "δ threshold")
        .set_value_accesskit(0.5);
    h.run_steps(3);
    assert_eq!(
        app(&h).settings.right.get(MethodKind::ADAPTIVE, "delta"),
        0.5
    );
}

/// Issue 30, defect 12: Generate during a run with the same settings does not restart it
/// (the button is greyed out); changed settings restart.
#[test]
fn gui_generate_during_a_run_does_not_restart_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(slow(dir.path()));
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the first steps", |a| {
        a.session.baseline.steps.len() >= 2
    });
    for _ in 0..5 {
        h.get_by_label("Generate").click();
        h.step();
    }
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    h.step();
    assert_eq!(app(&h).session.job, Some(1));
    assert_eq!(app(&h).worker_stats().jobs, 1);
    assert!(app(&h).session.is_busy());
    // Another view is not another job.
    app_mut(&mut h).settings.view = adaptive_diffusion::app::ViewMode::Wipe;
    h.run_steps(2);
    assert!(h.query_by_label_contains("Settings changed").is_none());
    assert!(app(&h).is_running_current_settings());
    // Another seed: Generate restarts with it.
    app_mut(&mut h).settings.seed += 1;
    h.run_steps(2);
    h.get_by_label_contains("Settings changed");
    h.get_by_label("Generate").click();
    h.step();
    assert_eq!(app(&h).session.job, Some(2));
    app_mut(&mut h).cancel();
    wait_for(&mut h, "the cancel", |a| !a.session.is_busy());
}

/// Issue 30, defect 12: before the first run the bars say so, not "0 / 0 steps · idle".
#[test]
fn gui_bars_before_the_first_run_say_not_run_yet() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(settings(dir.path()));
    h.run_steps(2);
    assert_eq!(h.get_all_by_label("not run yet").count(), 2);
    assert!(h.query_by_label_contains("0 / 0 steps").is_none());
}

/// Issue 30, defect 8: in a narrow centre, long titles stay on one line (cut with "…"), so
/// both sides' images and bars start at the same height.
#[test]
fn gui_side_by_side_stays_aligned_when_the_centre_narrows() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness_sized(
        Settings {
            left_method: kind("tgate"),
            method: kind("adaptive+forecast"),
            ..settings(dir.path())
        },
        egui::vec2(900.0, 900.0),
    );
    h.run_steps(3);
    let bars: Vec<egui::Rect> = h
        .get_all_by_label("not run yet")
        .map(|n| n.rect())
        .collect();
    assert_eq!(bars.len(), 2);
    assert_eq!(bars[0].min.y, bars[1].min.y, "{bars:?}");
}

/// Issue 30, defect 11: dragging on the wipe image moves the divider, each side is
/// labelled; the difference view has a caption and a colour scale.
#[test]
fn gui_wipe_follows_the_pointer_and_difference_has_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(Settings {
        prompt: "a red circle".into(),
        view: adaptive_diffusion::app::ViewMode::Wipe,
        ..settings(dir.path())
    });
    h.get_by_label("Generate").click();
    wait_for(&mut h, "both sides", done);
    h.run_steps(2);
    h.get_by_label_contains("left: Baseline | right: Adaptive");
    let r = h.get_by_label("Wipe image").rect();
    let at = egui::pos2(r.left() + 0.25 * r.width(), r.center().y);
    let to = egui::pos2(r.left() + 0.8 * r.width(), r.center().y);
    for ev in [
        egui::Event::PointerMoved(at),
        egui::Event::PointerButton {
            pos: at,
            button: egui::PointerButton::Primary,
            pressed: true,
            modifiers: egui::Modifiers::NONE,
        },
    ] {
        h.input_mut().events.push(ev);
    }
    h.step();
    h.input_mut().events.push(egui::Event::PointerMoved(to));
    h.step();
    h.input_mut().events.push(egui::Event::PointerButton {
        pos: to,
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: egui::Modifiers::NONE,
    });
    h.step();
    let w = app(&h).wipe();
    assert!((w - 0.8).abs() < 0.02, "divider at {w}");

    app_mut(&mut h).settings.view = adaptive_diffusion::app::ViewMode::Difference;
    h.run_steps(3);
    h.get_by_label_contains("Difference: |Adaptive − Baseline| × 4.0; black = same");
}

/// Issue 30, defect 7: a LoRA left ticked on the built-in model is refused in words before
/// anything loads, and the results on screen stay.
#[test]
fn gui_lora_on_the_builtin_model_is_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/single-file");
    let mut h = harness(Settings {
        prompt: "a red circle".into(),
        ..settings(dir.path())
    });
    h.get_by_label("Generate").click();
    wait_for(&mut h, "both sides", done);
    {
        let a = app_mut(&mut h);
        a.settings.model = ModelChoice::Builtin(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/shapes"),
        );
        a.settings.loras.push(LoraEntry {
            path: files.join("lora-sd1-kohya.safetensors"),
            scale: 1.0,
            enabled: true,
        });
    }
    h.get_by_label("Generate").click();
    h.run_steps(2);
    h.get_by_label_contains("lora-sd1-kohya.safetensors does not fit the built-in model");
    assert!(app(&h).session.results().is_some(), "the last results stay");
    assert_eq!(
        app(&h).worker_stats().jobs,
        1,
        "nothing was sent to the worker"
    );
}

/// Issue 30, defect 6: a change to the left side re-runs the left side only; the right
/// side comes from the cache and says how old it is.
#[test]
fn gui_changing_the_left_side_does_not_rerun_the_right_side() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.prompt = "a red circle".into();
    s.left.set(kind("steps"), "n", 6.0);
    let mut h = harness(s);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the first comparison", done);
    let right = app(&h).session.results().unwrap().1;
    h.get_by_label("Left side").click();
    h.run_steps(3);
    h.get_by_label("Fewer steps (control)").click();
    wait_for(&mut h, "the left side's 6-step run", |a| {
        done(a)
            && a.session
                .results()
                .is_some_and(|(l, _)| l.trace.method.own_steps() == Some(6))
    });
    let a = app(&h);
    let st = a.worker_stats();
    assert_eq!(
        (st.baseline_runs, st.adaptive_runs, st.method_cache_hits),
        (2, 1, 1),
        "{st:?}"
    );
    assert!(std::sync::Arc::ptr_eq(
        &a.session.results().unwrap().1,
        &right
    ));
    h.get_by_label_contains("done · reused from a run");
}

/// Issue 30, defects 1 and 2: with a checkpoint path, two LoRAs and long file names, every
/// control of the side panel lies inside it (nothing clipped at its edge).
#[test]
fn gui_side_panel_rows_fit_inside_the_panel() {
    let dir = tempfile::tempdir().unwrap();
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/single-file");
    let mut s = settings(dir.path());
    s.model = ModelChoice::LocalFile(files.join("tiny-sd1.safetensors"));
    s.loras = ["lora-sd1-kohya.safetensors", "lora-sd1-peft.safetensors"]
        .map(|f| LoraEntry {
            path: files.join(f),
            scale: 0.8,
            enabled: true,
        })
        .to_vec();
    let mut h = harness_sized(s, egui::vec2(1600.0, 1000.0));
    h.run_steps(4);
    let right = app(&h).controls_width();
    for label in [
        "Add",
        "Use",
        "Save",
        "Browse…",
        "Choose…",
        "Use module",
        "Choose module…",
    ] {
        for node in h.get_all_by_label(label) {
            let r = node.rect();
            assert!(
                r.max.x <= right + 0.5,
                "{label} at {r:?} runs past the panel ({right})"
            );
        }
    }
    assert_eq!(h.get_all_by_label("Remove").count(), 2);
    for node in h.get_all_by_label("Remove") {
        assert!(
            node.rect().max.x <= right + 0.5,
            "Remove at {:?}",
            node.rect()
        );
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The tiny pipeline with the tiny AnimateDiff motion module: 4-frame clips of 32×32 (the
/// smallest SSIM's window allows), cheap on a 2-core machine.
fn clip_settings(export_dir: &Path) -> Settings {
    let mut s = Settings {
        prompt: "a red circle moving right".into(),
        motion: Some(fixtures().join("tiny-animatediff/motion_adapter")),
        frames: 4,
        steps: 8,
        custom_size: true,
        width: 32,
        height: 32,
        fps: 8.0,
        ..settings(export_dir)
    };
    // Large enough for the right side to skip steps in 8.
    s.right.set(MethodKind::ADAPTIVE, "delta", 0.2);
    s
}

/// A registered method's kind.
fn kind(name: &str) -> MethodKind {
    MethodKind::named(name).unwrap()
}

/// How many players say they show `frame` of the 4-frame clip.
fn showing(h: &Harness<'_, App>, frame: usize) -> usize {
    h.query_all_by_label(&format!("Frame {frame} (0–3)"))
        .count()
}

#[test]
fn gui_clip_plays_both_sides_on_one_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(clip_settings(dir.path()));
    h.get_by_label("Frames");
    h.get_by_label("Generate").click();
    wait_for(&mut h, "both clips", done);
    let a = app(&h);
    let (b, ad) = a.session.results().unwrap();
    assert_eq!((b.frames.len(), ad.frames.len()), (4, 4));
    assert_eq!(b.frames[0].dimensions(), (32, 32));
    let c = a.session.comparison.as_ref().unwrap();
    let v = c.video.as_ref().expect("per-frame quality");
    assert_eq!(
        (v.frames, v.psnr_per_frame_db.len(), c.frame_diffs.len()),
        (4, 4, 4)
    );
    assert_eq!(c.psnr_db, v.psnr_clip_db());
    assert!(
        ad.trace.unet_calls < b.trace.unet_calls,
        "the right side skipped"
    );
    assert!(v.psnr_per_frame_db.iter().all(|p| p.is_finite()), "{v:?}");
    // The finished clips play at once, both players on one frame.
    h.step();
    assert!(app(&h).player().is_playing());
    let f = app(&h).player().frame();
    assert_eq!(showing(&h, f), 2, "both players on frame {f}");
    h.get_by_label("Pause").click();
    h.run_steps(2);
    assert!(!app(&h).player().is_playing());

    // The frame slider moves both players.
    h.get_by_role_and_label(Role::Slider, "Frame")
        .set_value_accesskit(2.0);
    h.run_steps(2);
    assert_eq!(app(&h).player().frame(), 2);
    assert_eq!((showing(&h, 2), showing(&h, 0)), (2, 0));

    // Frame by frame: → to the last frame, → again wraps (Loop is on), ← back.
    let key = |h: &mut Harness<'_, App>, k: egui::Key| {
        h.key_press(k);
        h.run_steps(2);
        app(h).player().frame()
    };
    assert_eq!(key(&mut h, egui::Key::ArrowRight), 3);
    assert_eq!(key(&mut h, egui::Key::ArrowRight), 0);
    assert_eq!(key(&mut h, egui::Key::ArrowLeft), 3);
    h.step();
    assert_eq!(showing(&h, 3), 2);
    h.get_by_label("Previous frame").click();
    h.run_steps(2);
    assert_eq!(app(&h).player().frame(), 2);
    // Without Loop, → stops at the last frame.
    app_mut(&mut h).settings.loop_playback = false;
    assert_eq!(key(&mut h, egui::Key::ArrowRight), 3);
    assert_eq!(key(&mut h, egui::Key::ArrowRight), 3);
    app_mut(&mut h).settings.loop_playback = true;
    // A focused slider keeps its keys: → raises the frame rate, the frame stays.
    h.get_by_role_and_label(Role::Slider, "Frame rate (fps)")
        .focus();
    h.run_steps(2);
    h.key_press(egui::Key::ArrowRight);
    h.run_steps(2);
    assert_eq!(app(&h).player().frame(), 3);
    assert_eq!(app(&h).settings.fps, 9.0);

    // Play: each harness frame is 0.25 s, two frames of the clip at 8 fps; both players
    // follow on every frame.
    h.get_by_label("Play").click();
    h.step();
    assert!(app(&h).player().is_playing());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        h.step();
        let f = app(&h).player().frame();
        seen.insert(f);
        assert_eq!(showing(&h, f), 2, "both players on frame {f}");
    }
    assert!(seen.len() >= 2, "playback advanced: {seen:?}");
    h.get_by_label("Pause").click();
    h.step();
    let paused = app(&h).player().frame();
    h.step();
    h.step();
    assert_eq!(app(&h).player().frame(), paused, "paused");

    // The per-frame PSNR strip: a click goes to that frame.
    let target = (paused + 2) % 4;
    h.get_by_label_contains(&format!("Frame {target}: PSNR"))
        .click();
    h.run_steps(2);
    assert_eq!(app(&h).player().frame(), target);
    assert_eq!(showing(&h, target), 2);
    h.get_by_label_contains("PSNR per frame: mean");

    // Difference, Blink and Wipe show the same frame, one player.
    for view in ["Difference", "Blink", "Wipe"] {
        h.get_by_label(view).click();
        h.run_steps(2);
        assert_eq!(showing(&h, target), 1, "{view}");
        if view == "Difference" {
            h.get_by_label_contains("Difference: |");
        }
    }

    // δ moves: only the right side re-runs (the left clip from the cache), on the same frame.
    h.get_by_role_and_label(Role::Slider, "δ threshold")
        .set_value_accesskit(0.1);
    wait_for(&mut h, "the re-run with δ = 0.1", |a| {
        done(a)
            && a.session
                .spec
                .as_ref()
                .is_some_and(|s| s.method.delta() == Some(0.1))
    });
    let st = app(&h).worker_stats();
    assert_eq!((st.baseline_runs, st.adaptive_runs), (1, 2), "{st:?}");
    assert_eq!(app(&h).session.clip_len(), 4);
    // The new comparison plays (from the frame on screen).
    h.step();
    assert!(app(&h).player().is_playing());
    let f = app(&h).player().frame();
    assert_eq!(showing(&h, f), 1, "the wipe view on frame {f}");
    h.get_by_label("Pause").click();
    h.run();
}

#[test]
fn gui_clip_exports_gif_filmstrip_frames_and_trace_and_not_while_sampling() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(clip_settings(dir.path()));
    h.get_by_label("Generate").click();
    h.step();
    assert!(app(&h).session.is_busy());
    // While the clip samples, an export says so and writes nothing.
    app_mut(&mut h).last_export = None;
    h.get_by_label("Clip GIF").click();
    h.run_steps(2);
    let refused = app(&h).last_export.clone().expect("an answer");
    let why = refused.result.expect_err("refused");
    assert!(why.contains("the clip is still sampling"), "{why}");
    h.get_by_label_contains("Export failed: the clip is still sampling");
    // The live preview shows the clip frame by frame as it takes shape (latent size: the
    // 32-px frames' 4×4 latents).
    wait_for(&mut h, "the live frames", |a| {
        a.session
            .baseline
            .frames
            .as_ref()
            .is_some_and(|f| f.len() == 4 && f[0].dimensions() == (4, 4))
    });
    assert!(
        app(&h).player().is_playing(),
        "the live frames play as they take shape"
    );
    wait_for(&mut h, "both clips", done);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let (b, ad) = app(&h).session.results().unwrap();

    // The side-by-side GIF: 4 frames, both sides (32 px enlarged to 256, a gap between).
    let gif = export_by_button(&mut h, ExportKind::ClipGif);
    assert!(
        gif.to_string_lossy().ends_with("-clip.gif"),
        "{}",
        gif.display()
    );
    use image::AnimationDecoder;
    let bytes = std::fs::read(&gif).unwrap();
    let dec = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
    let frames: Vec<image::Frame> = dec.into_frames().collect::<Result<_, _>>().unwrap();
    assert_eq!(frames.len(), 4);
    assert_eq!(frames[0].buffer().dimensions(), (256 + 8 + 256, 256));
    let (num, den) = frames[0].delay().numer_denom_ms();
    assert_eq!(num / den, 120, "8 fps: 12 hundredths");

    // The filmstrip: a PNG with both sides' frames, the settings and the trace.
    let strip = export_by_button(&mut h, ExportKind::Filmstrip);
    let img = image::open(&strip).expect("decodes").to_rgb8();
    assert!(
        img.width() >= 4 * 128 && img.height() > 2 * 128,
        "{:?}",
        img.dimensions()
    );
    let chunks = export::read_text_chunks(&strip).unwrap();
    let params = &chunks.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(
        params.contains("Frames: 4") && params.contains("Size: 32x32"),
        "{params}"
    );
    let trace = &chunks.iter().find(|(k, _)| k == "adiff_trace").unwrap().1;
    let trace: serde_json::Value = serde_json::from_str(trace).unwrap();
    assert_eq!(trace["summary"]["video"]["frames"], 4);

    // Each side's frames, as `adiff compare --frames-out` writes them, pixel for pixel.
    let folder = export_by_button(&mut h, ExportKind::Frames);
    assert!(folder.is_dir(), "{}", folder.display());
    for (side, r) in [("left", &b), ("right", &ad)] {
        for i in 0..4 {
            let p = folder.join(side).join(format!("frame_{i:03}.png"));
            assert_eq!(
                image::open(&p).unwrap().to_rgb8(),
                r.frames[i],
                "{}",
                p.display()
            );
        }
        assert_eq!(std::fs::read_dir(folder.join(side)).unwrap().count(), 4);
    }

    // The trace JSON: the shape of `adiff compare --trace`, with the per-frame quality.
    let json = export_by_button(&mut h, ExportKind::TraceJson);
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        t["summary"]["video"]["psnr_per_frame_db"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        (t["width"].as_u64(), t["height"].as_u64()),
        (Some(32), Some(32))
    );
    assert_eq!(t["left"]["steps"].as_array().unwrap().len(), 8);
    assert_eq!(t["settings"]["frames"], 4);
    assert_eq!(t["summary"]["video"]["frames"], 4);

    // Nothing staged or half-written is left beside the exports.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    h.run();
}

#[test]
fn gui_clip_settings_that_cannot_work_are_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    // More frames than the motion module has positions for.
    let mut s = clip_settings(dir.path());
    s.frames = 40;
    let mut h = harness(s);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the refusal", |a| a.session.phase == Phase::Failed);
    let err = app(&h).session.error.clone().unwrap();
    assert_eq!(
        err,
        "Frames is 40, beyond the motion module's position table of 32 frames; give at most 32"
    );
    h.get_by_label_contains("Error: Frames is 40");
    // A motion module on a model it does not fit: a video model already.
    {
        let a = app_mut(&mut h);
        a.settings.frames = 4;
        a.settings.model = ModelChoice::Local(fixtures().join("tiny-modelscope"));
    }
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the second refusal", |a| {
        a.session.phase == Phase::Failed
            && a.session
                .error
                .as_ref()
                .is_some_and(|e| e.contains("video model already"))
    });
    let err = app(&h).session.error.clone().unwrap();
    assert!(
        err.starts_with("the motion module ") && !err.contains("--"),
        "{err}"
    );
    // Nothing was exported or written.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    h.run();
}

/// A video UNet (the tiny ModelScope pipeline) makes clips by itself: the Frames control,
/// the live frames and the player, as with a motion module.
#[test]
fn gui_a_video_unet_plays_without_a_motion_module() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(Settings {
        prompt: "a red circle moving left".into(),
        model: ModelChoice::Local(fixtures().join("tiny-modelscope")),
        frames: 3,
        steps: 6,
        ..settings(dir.path())
    });
    h.get_by_label("Frames");
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    wait_for(&mut h, "both clips", done);
    let a = app(&h);
    let (b, ad) = a.session.results().unwrap();
    assert_eq!((b.frames.len(), ad.frames.len()), (3, 3));
    assert_eq!(
        a.session
            .comparison
            .as_ref()
            .unwrap()
            .video
            .as_ref()
            .unwrap()
            .frames,
        3
    );
    assert!(a.player().is_playing());
    h.get_by_label("Pause").click();
    h.run_steps(2);
    h.key_press(egui::Key::ArrowRight);
    h.run_steps(2);
    let f = app(&h).player().frame();
    assert_eq!(h.query_all_by_label(&format!("Frame {f} (0–2)")).count(), 2);
    h.run();
}

/// A clip asked of a model that may make clips (the built-in shapes model's folder name)
/// but has no motion module: refused in words, before any step.
#[test]
fn gui_a_clip_from_a_model_without_a_motion_module_is_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    // The tiny image pipeline under the built-in model's folder name.
    let shapes = dir
        .path()
        .join("models")
        .join(adaptive_diffusion::model::BUILTIN_SHAPES);
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(tiny(), &shapes).unwrap();
    #[cfg(not(unix))]
    return;
    let out = dir.path().join("out");
    let mut s = settings(&out);
    s.prompt = "a red circle moving right".into();
    s.model = ModelChoice::Builtin(shapes);
    let mut h = harness(s);
    // The check box asks for a clip; the Frames control follows it.
    h.get_by_label("Make a clip (video)").click();
    h.run_steps(2);
    assert!(app(&h).settings.clip);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the refusal", |a| a.session.phase == Phase::Failed);
    let err = app(&h).session.error.clone().unwrap();
    assert_eq!(
        err,
        "shapes makes images, not clips (no motion module was found for it): untick “Make a clip”, or choose a model that makes video"
    );
    assert_eq!(app(&h).worker_stats().baseline_runs, 0);
    assert!(!out.exists());
    h.run();
}

#[test]
fn gui_a_motion_module_is_dropped_or_typed_like_a_lora() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(settings(dir.path()));
    // An image model: no Frames control.
    assert!(h.query_by_label("Frames").is_none());
    #[derive(Debug)]
    struct Dropped(PathBuf);
    impl egui::DroppedFile for Dropped {
        fn path(&self) -> &Path {
            &self.0
        }
        fn bytes(&self) -> Result<Vec<u8>, String> {
            std::fs::read(&self.0).map_err(|e| e.to_string())
        }
    }
    let adapter = fixtures().join("tiny-animatediff/motion_adapter");
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(adapter.clone())));
    h.step();
    h.step();
    let s = &app(&h).settings;
    assert_eq!(s.motion.as_ref(), Some(&adapter));
    assert_eq!(s.model, ModelChoice::Local(tiny()), "the model stays");
    h.get_by_label("motion_adapter");
    h.get_by_label("Frames");
    // An original AnimateDiff file, dropped; then a typed path.
    let file = fixtures().join("tiny-animatediff/mm_tiny_v2.safetensors");
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(file.clone())));
    h.step();
    assert_eq!(app(&h).settings.motion.as_ref(), Some(&file));
    h.get_by_label("Motion module path").focus();
    h.step();
    h.get_by_label("Motion module path")
        .type_text(&adapter.display().to_string());
    h.step();
    h.get_by_label("Use module").click();
    h.run_steps(2);
    assert_eq!(app(&h).settings.motion.as_ref(), Some(&adapter));
    // The motion module's rows stay inside the panel, with Remove shown.
    let right = app(&h).controls_width();
    for label in ["Remove", "Choose module…", "Motion module", "Use module"] {
        for node in h.get_all_by_label(label) {
            assert!(
                node.rect().max.x <= right + 0.5,
                "{label} at {:?}",
                node.rect()
            );
        }
    }
    // A published module, by name (downloaded on first use).
    h.get_by_role_and_label(Role::ComboBox, "Motion module")
        .click();
    h.run_steps(2);
    h.get_by_label("animatediff-v1-5-2").click();
    h.run_steps(2);
    assert_eq!(
        app(&h).settings.motion,
        Some(PathBuf::from("animatediff-v1-5-2"))
    );
    // Removed: images again, no Frames control; a video UNet shows it by itself.
    h.get_by_label("Remove").click();
    h.run_steps(2);
    assert_eq!(app(&h).settings.motion, None);
    assert!(h.query_by_label("Frames").is_none());
    app_mut(&mut h).settings.model = ModelChoice::Local(fixtures().join("tiny-modelscope"));
    h.run_steps(2);
    h.get_by_label("Frames");
    h.run();
}

#[test]
fn gui_runs_in_bf16_and_names_the_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(Settings {
        precision: adaptive_diffusion::app::settings::Precision::Bf16,
        steps: 4,
        ..settings(dir.path())
    });
    // The menu offers it with the kernels it runs on here.
    let path = adaptive_diffusion::model::kernels::bf16::current_path();
    let offered = format!("bf16 (on the CPU: {path} kernels)");
    h.get(
        egui_kittest::kittest::By::new()
            .label("Number format")
            .value(&offered),
    );
    type_prompt(&mut h, "a red fox");
    h.get_by_label("Generate").click();
    wait_for(&mut h, "both sides", done);
    let model = app(&h).session.model.clone().unwrap();
    assert_eq!(model.precision, format!("bf16 (CPU, {path} kernels)"));
    wait_for_label(&mut h, &format!("Cpu bf16 (CPU, {path} kernels)"));
    h.run();
}

/// The app draws a frame twice only when a UI command changed what it shows: idle frames,
/// pointer moves and a running or finished clip (playing or paused) make no command that
/// redraws — which egui warned about in debug builds ("request_discard has been called 5
/// frames in a row") and which doubled the frame-time statistics.
#[test]
fn gui_idle_frames_and_a_playing_clip_draw_each_frame_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(clip_settings(dir.path()));
    h.run_steps(10);
    assert_eq!(app(&h).redrawn_frames(), 0, "idle frames");
    h.get_by_label("Generate").click();
    h.step();
    let after_click = app(&h).redrawn_frames();
    assert!(after_click >= 1, "Generate redraws once");
    wait_for(&mut h, "both clips", done);
    let settled = app(&h).redrawn_frames();
    assert!(
        settled - after_click <= 1,
        "sampling made {} redraws",
        settled - after_click
    );
    // Playing and idling: no command, no redraw.
    for i in 0..20 {
        h.input_mut()
            .events
            .push(egui::Event::PointerMoved(egui::pos2(
                400.0 + i as f32 * 10.0,
                300.0,
            )));
        h.step();
    }
    assert_eq!(app(&h).redrawn_frames(), settled, "playing clip");
    // A key press is one command, one redraw.
    h.key_press(egui::Key::ArrowRight);
    h.run_steps(3);
    assert_eq!(app(&h).redrawn_frames(), settled + 1, "one frame on");
}

/// A clip asked of a motion module whose recorded evaluation says it mostly fails that
/// motion: the app says so beside the prompt, naming the measurement, and still plays both
/// clips.
#[cfg(unix)]
#[test]
fn gui_a_motion_the_module_mostly_fails_is_noted_beside_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let shapes = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/shapes");
    // The built-in model, its motion module's config carrying a made-up record.
    let model = dir.path().join("shapes-recorded");
    std::fs::create_dir_all(model.join("motion")).unwrap();
    for part in [
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "unet",
    ] {
        std::os::unix::fs::symlink(shapes.join(part), model.join(part)).unwrap();
    }
    for part in [
        "diffusion_pytorch_model.safetensors",
        "text_encoder",
        "tokenizer",
    ] {
        std::os::unix::fs::symlink(
            shapes.join("motion").join(part),
            model.join("motion").join(part),
        )
        .unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shapes.join("motion/config.json")).unwrap()).unwrap();
    cfg["evaluated"] = serde_json::json!([{"words": "moving right", "right": 1, "clips": 4}]);
    cfg["evaluated_by"] = serde_json::json!("the test's record");
    std::fs::write(
        model.join("motion/config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    let mut h = harness(Settings {
        prompt: "a red circle moving right".into(),
        model: ModelChoice::Local(model),
        clip: true,
        frames: 2,
        steps: 3,
        ..settings(&dir.path().join("out"))
    });
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    wait_for(&mut h, "both clips", done);
    h.get_by_label_contains(
        "asks for \"moving right\", which this motion module got right in 1 of 4 held-out clips (the test's record)",
    );
    let (b, a) = app(&h).session.results().unwrap();
    assert_eq!((b.frames.len(), a.frames.len()), (2, 2));
}
