//! The desktop app driven through egui_kittest (no window, no GPU): type a prompt, press
//! Generate, watch both sides finish on the tiny random-weight pipeline, move δ and see
//! only the adaptive side re-run, cancel, supersede, export, and show errors.
#![cfg(feature = "gui")]

use adaptive_diffusion::app::{
    ExportKind, GuiApp, LoraEntry, ModelChoice, Phase, Settings, SideStatus, egui, export,
};
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
    let mut h = Harness::builder()
        .with_size(egui::vec2(1600.0, 1500.0))
        .build_ui_state(
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

/// Step frames until `cond` holds (panics with `what` after two minutes).
fn wait_for(h: &mut Harness<'_, App>, what: &str, cond: impl Fn(&GuiApp) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
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
    h.get_by_label_contains("Adaptive vs baseline:");
    h.get_by_label_contains("Speedup:");
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
    assert_eq!(
        a.session.results().unwrap().1.trace.method.delta(),
        Some(0.05)
    );
    h.run();
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
        let label = match kind {
            ExportKind::Comparison => "Export comparison PNG",
            ExportKind::Image(adaptive_diffusion::app::Side::Baseline) => "Baseline PNG",
            ExportKind::Image(_) => "Adaptive PNG",
            ExportKind::TraceJson => "Trace JSON",
            ExportKind::TraceCsv => "Trace CSV",
        };
        h.get_by_label(label).click();
        wait_for(h, label, |a| a.last_export.is_some());
        let out = app(h).last_export.clone().unwrap();
        assert_eq!(out.kind, kind);
        out.result.expect("export succeeded")
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
    assert_eq!(trace["baseline"]["steps"].as_array().unwrap().len(), 12);
    assert_eq!(trace["adaptive"]["mode"], "adaptive");
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
    s.steps_n = 6;
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
}
