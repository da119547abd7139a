//! The desktop app (eframe): two methods side by side (the full-step baseline and an
//! accelerated method unless others are chosen), live per-step curves, sliders, export.
//!
//! * [`worker`] — the background thread that owns the model and the device: the run queue
//!   and its policy, the baseline cache.
//! * [`protocol`] — the commands and events between the UI and the worker (plain data).
//! * [`state`] — persisted [`Settings`] (which build the [`crate::job::Job`]) and the live
//!   [`Session`] built from worker events.
//! * [`wording`] — the app's names for settings in error messages.
//! * [`method_params`] — one side's method settings (each side has its own).
//! * [`names`] — what each side is called: by its method, in every label and file name.
//! * [`dialogs`] — file choosers, and what the app says when the desktop has none.
//! * `panels` — the egui panels (controls, results, plots, status bars): they read the
//!   app's state, edit the settings, and queue what the user asks for as commands.
//! * `commands` — those commands (`UiCommand`), which the app applies once per
//!   frame, after the panels ran.
//! * [`export`] / [`compose`] / [`filmstrip`] — PNG export with text chunks, the
//!   comparison picture, a clip's GIF, filmstrip and frames.
//! * [`player`] — the clip player's logic (one frame for both sides) and the PSNR strip's
//!   layout.
//! * [`preview`] — the latent → RGB preview (with [`worker`], the only candle users here).
//! * `quality`, `downloads`, `worker_stats`, `thread_priority` — the worker's helpers.
//! * [`frame_stats`] — frame-time instrumentation (`ADIFF_FRAME_STATS`, F12 overlay).
//!
//! The UI thread never runs a model: it sends commands and renders what the worker streams.
//! No panel writes the app's state: a frame draws the panels, then applies their commands.

mod commands;
pub mod compose;
pub mod dialogs;
mod downloads;
pub mod export;
pub mod filmstrip;
pub mod frame_stats;
pub mod method_params;
pub mod names;
mod panels;
pub mod player;
pub mod preview;
pub mod protocol;
mod quality;
mod raster;
pub mod settings;
pub mod state;
mod thread_priority;
pub mod wording;
pub mod worker;
pub mod worker_stats;

pub use eframe::egui;
pub use export::{ExportData, ExportKind};
pub use method_params::MethodParams;
pub use player::Player;
pub use protocol::{JobId, Side};
pub use settings::{LoraEntry, ModelChoice, Settings, Video, ViewMode};
pub use state::{Phase, Session, SideStatus};
pub use worker::WorkerHandle;
pub use worker_stats::StatsSnapshot;

use commands::{Commands, UiCommand};
use crossbeam_channel::{Receiver, Sender};
use dialogs::{DialogKind, FileChooser, Picked};
use frame_stats::FrameStats;
use std::path::PathBuf;
use std::time::Instant;

/// The app's name; the window title adds the two sides' methods and the phase.
pub const TITLE: &str = "Adaptive Diffusion";
/// The name eframe stores the settings under (kept from earlier versions, so that saved
/// settings still load).
const STORAGE_NAME: &str = "Adaptive Diffusion — baseline vs adaptive";
const SETTINGS_KEY: &str = "adiff.settings";

/// The result of one export.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// What was exported.
    pub kind: ExportKind,
    /// Where it went, or why it failed.
    pub result: Result<PathBuf, String>,
    /// When it ended.
    pub at: Instant,
}

/// The app.
pub struct GuiApp {
    /// The settings (persisted).
    pub settings: Settings,
    /// The current job as the worker reported it.
    pub session: Session,
    worker: WorkerHandle,
    textures: panels::Textures,
    frame_stats: FrameStats,
    show_overlay: bool,
    export_tx: Sender<ExportOutcome>,
    export_rx: Receiver<ExportOutcome>,
    exports_in_flight: usize,
    /// The latest export.
    pub last_export: Option<ExportOutcome>,
    picked_tx: Sender<Picked>,
    picked_rx: Receiver<Picked>,
    dialog_open: bool,
    file_chooser: FileChooser,
    /// The settings a Generate refused (the error clears once they change).
    settings_error: Option<Settings>,
    /// Why the last file chooser showed nothing, beside the control that opened it.
    dialog_note: Option<(DialogKind, String)>,
    builtins: Vec<PathBuf>,
    /// A method or its settings changed: the re-run waits until the value settles.
    rerun: commands::Rerun,
    /// What the UI asked for in this frame, applied after the panels ran.
    commands: Commands,
    /// Frames whose commands asked for the frame to be drawn again, since the start.
    redrawn_frames: usize,
    applied_zoom: Option<f32>,
    title: String,
    /// Where the wipe view's divider sits, 0 (left edge) … 1.
    wipe: f32,
    /// The clip player: the frame both sides show.
    player: Player,
    /// The comparison the player last started playing for.
    played_comparison: u64,
    /// Whether a clip was on screen in the last frame.
    had_clip: bool,
    /// The side panel's width in points, as drawn in the last frame.
    controls_width: f32,
    notify: std::sync::Arc<dyn Fn() + Send + Sync>,
}

impl GuiApp {
    /// A new app with these settings; the worker repaints `ctx` on every event.
    pub fn new(ctx: &egui::Context, settings: Settings) -> Self {
        let repaint_ctx = ctx.clone();
        let notify: std::sync::Arc<dyn Fn() + Send + Sync> =
            std::sync::Arc::new(move || repaint_ctx.request_repaint());
        let n = notify.clone();
        let worker = WorkerHandle::spawn(move || n());
        let (export_tx, export_rx) = crossbeam_channel::unbounded();
        let (picked_tx, picked_rx) = crossbeam_channel::unbounded();
        let mut builtins = settings::builtin_models();
        if let ModelChoice::Builtin(p) = &settings.model
            && !builtins.contains(p)
        {
            builtins.push(p.clone());
        }
        Self {
            settings,
            session: Session::default(),
            worker,
            textures: panels::Textures::default(),
            frame_stats: FrameStats::from_env(),
            show_overlay: std::env::var_os("ADIFF_DEBUG_OVERLAY").is_some_and(|v| v != "0"),
            export_tx,
            export_rx,
            exports_in_flight: 0,
            last_export: None,
            picked_tx,
            picked_rx,
            dialog_open: false,
            file_chooser: dialogs::system_chooser,
            settings_error: None,
            dialog_note: None,
            builtins,
            rerun: commands::Rerun::default(),
            commands: Commands::default(),
            redrawn_frames: 0,
            applied_zoom: None,
            title: TITLE.to_string(),
            wipe: 0.5,
            player: Player::default(),
            played_comparison: 0,
            had_clip: false,
            controls_width: 0.0,
            notify,
        }
    }

    /// The app as eframe creates it: settings from `$ADIFF_SETTINGS` (a JSON file, for
    /// scripted demos), else from eframe's storage (the last session), else the defaults.
    pub fn from_creation_context(cc: &eframe::CreationContext<'_>) -> Self {
        let from_file = std::env::var_os("ADIFF_SETTINGS")
            .filter(|p| !p.is_empty())
            .and_then(|p| match std::fs::read_to_string(&p) {
                Ok(text) => match serde_json::from_str::<Settings>(&text) {
                    Ok(mut s) => {
                        if let Ok(legacy) = serde_json::from_str(&text) {
                            s.take_legacy(&legacy);
                        }
                        Some(s)
                    }
                    Err(e) => {
                        tracing::warn!(
                            "ignoring ADIFF_SETTINGS {}: {e}",
                            PathBuf::from(&p).display()
                        );
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(
                        "cannot read ADIFF_SETTINGS {}: {e}",
                        PathBuf::from(&p).display()
                    );
                    None
                }
            });
        let settings = from_file
            .or_else(|| {
                let storage = cc.storage?;
                let mut s = eframe::get_value::<Settings>(storage, SETTINGS_KEY)?;
                if let Some(legacy) = eframe::get_value(storage, SETTINGS_KEY) {
                    s.take_legacy(&legacy);
                }
                Some(s)
            })
            .unwrap_or_default();
        Self::new(&cc.egui_ctx, settings)
    }

    /// What the worker has run so far (tests assert on it).
    pub fn worker_stats(&self) -> StatsSnapshot {
        self.worker.stats()
    }

    /// Where the wipe view's divider sits, 0 (left edge) … 1.
    pub fn wipe(&self) -> f32 {
        self.wipe
    }

    /// The clip player: the frame both sides show.
    pub fn player(&self) -> &Player {
        &self.player
    }

    /// Frames whose UI commands made the app draw the frame again at once, since the start
    /// (an idle app makes none).
    pub fn redrawn_frames(&self) -> usize {
        self.redrawn_frames
    }

    /// The side panel's width in points, as drawn in the last frame.
    pub fn controls_width(&self) -> f32 {
        self.controls_width
    }

    /// Whether a job or an export is in flight.
    pub fn is_busy(&self) -> bool {
        self.session.is_busy() || self.exports_in_flight > 0
    }

    /// Start a comparison with the current settings (Generate / Ctrl+Enter). A running job
    /// is superseded (see [`worker`] for the queue policy).
    ///
    /// While a job runs with exactly these settings, a repeated Generate does nothing (the
    /// button is greyed out): it would only restart the same run.
    pub fn generate(&mut self) {
        if self.is_running_current_settings() {
            return;
        }
        match self.settings.job(self.settings.steps) {
            Ok(spec) => {
                let job = self.worker.submit(spec.clone());
                self.session.start_job(job, spec);
                self.settings_error = None;
            }
            Err(e) => {
                self.session.error = Some(wording::one_line(&e));
                self.settings_error = Some(self.settings.clone());
            }
        }
    }

    /// Whether the job in flight is the job the current settings describe (a change of
    /// view, gain or export folder does not count).
    pub fn is_running_current_settings(&self) -> bool {
        runs_settings(&self.session, &self.settings)
    }

    /// Cancel the running job (Cancel / Esc); honoured at the next step boundary.
    pub fn cancel(&mut self) {
        if !self.session.is_busy() {
            return;
        }
        if let Some(job) = self.session.job {
            self.worker.cancel(job);
        }
        if let Some(job) = self.session.baseline_job
            && Some(job) != self.session.job
        {
            self.worker.cancel(job);
        }
    }

    /// A file dropped on the window: a folder or a checkpoint becomes the model, a LoRA
    /// joins the list (ticked, scale 1), a VAE replaces the model's, a motion module (a
    /// MotionAdapter folder or file) is added to the model; anything else is shown in red.
    fn take_dropped(&mut self, path: PathBuf) {
        use crate::model::single_file::{FileKind, classify};
        if is_motion_module(&path) {
            self.settings.motion = Some(path);
            return;
        }
        if path.is_dir() {
            self.settings.model = ModelChoice::Local(path);
            return;
        }
        match classify(&path) {
            Ok(FileKind::Checkpoint(_)) => self.settings.model = ModelChoice::LocalFile(path),
            Ok(FileKind::Lora) => {
                if !self.settings.loras.iter().any(|l| l.path == path) {
                    self.settings.loras.push(settings::LoraEntry {
                        path,
                        scale: 1.0,
                        enabled: true,
                    });
                }
            }
            Ok(FileKind::Vae) => self.settings.vae = Some(path),
            Err(e) => {
                self.session.error = Some(format!(
                    "cannot use the dropped file: {}",
                    wording::one_line(&e)
                ));
            }
        }
    }

    /// What the two sides are called: after their methods in the job on screen, else in the
    /// settings.
    pub fn side_names(&self) -> names::SideNames {
        side_names(&self.session, &self.settings)
    }

    /// A path chosen in a dialog or typed into a path field.
    fn take_path(&mut self, kind: DialogKind, p: PathBuf) {
        self.dialog_note = None;
        match kind {
            DialogKind::ModelFolder => self.settings.model = ModelChoice::Local(p),
            DialogKind::ModelFile => self.settings.model = ModelChoice::LocalFile(p),
            DialogKind::Vae => self.settings.vae = Some(p),
            DialogKind::Motion => self.settings.motion = Some(p),
            DialogKind::Lora => {
                if !self.settings.loras.iter().any(|l| l.path == p) {
                    self.settings.loras.push(settings::LoraEntry {
                        path: p,
                        scale: 1.0,
                        enabled: true,
                    });
                }
            }
            DialogKind::ExportDir => self.settings.export_dir = p,
            DialogKind::SaveAs(kind) => {
                // A bare name goes into the export folder.
                let p = if p.is_relative() {
                    self.settings.export_dir.join(p)
                } else {
                    p
                };
                self.export(kind, Some(p));
            }
        }
    }

    /// The data an export needs, when both sides are done.
    pub fn export_data(&self) -> Option<ExportData> {
        let (baseline, adaptive) = self.session.results()?;
        let spec = self.session.spec.clone()?;
        let model = self.session.model.clone();
        let comparison = self.session.comparison.as_ref();
        Some(ExportData {
            spec,
            model: baseline.model.clone(),
            model_notes: model.as_ref().map(|m| m.notes.clone()).unwrap_or_default(),
            device: model.as_ref().map(|m| m.device.clone()).unwrap_or_default(),
            precision: model
                .as_ref()
                .map(|m| m.precision.clone())
                .unwrap_or_default(),
            load_ms: model.as_ref().map(|m| m.load_ms).unwrap_or_default(),
            baseline,
            adaptive,
            psnr_db: comparison.map(|c| c.psnr_db),
            ssim: comparison.and_then(|c| c.ssim),
            complexity: self.session.budget.clone(),
            video: comparison.and_then(|c| c.video.clone()),
            fps: self.settings.fps,
            reference: match &self.session.reference {
                Some(state::ReferenceView::Done(r)) => Some((**r).clone()),
                _ => None,
            },
        })
    }

    /// Export in the background: to `path`, or into the export folder under a default name.
    pub fn export(&mut self, kind: ExportKind, path: Option<PathBuf>) {
        // Half a comparison is never written: say what is still running.
        let busy = self.session.is_busy().then(|| {
            if self.session.is_clip() {
                "the clip is still sampling: export once both sides are done"
            } else {
                "the comparison is still running: export once both sides are done"
            }
        });
        if let Some(why) = busy {
            self.last_export = Some(ExportOutcome {
                kind,
                result: Err(why.into()),
                at: Instant::now(),
            });
            return;
        }
        let Some(data) = self.export_data() else {
            self.last_export = Some(ExportOutcome {
                kind,
                result: Err("nothing to export yet: generate a comparison first".into()),
                at: Instant::now(),
            });
            return;
        };
        let dir = self.settings.export_dir.clone();
        let tx = self.export_tx.clone();
        let notify = self.notify.clone();
        self.exports_in_flight += 1;
        std::thread::spawn(move || {
            let result = match path {
                Some(p) => data.write(kind, &p).map(|()| p),
                None => data.write_into(kind, &dir),
            }
            .map_err(|e| wording::one_line(&e));
            let _ = tx.send(ExportOutcome {
                kind,
                result,
                at: Instant::now(),
            });
            notify();
        });
    }

    /// Open a file chooser on its own thread (the window keeps drawing meanwhile).
    fn open_dialog(&mut self, what: DialogKind) {
        if self.dialog_open {
            return;
        }
        self.dialog_open = true;
        self.dialog_note = None;
        let tx = self.picked_tx.clone();
        let notify = self.notify.clone();
        let chooser = self.file_chooser;
        let request = dialogs::DialogRequest {
            kind: what,
            start_dir: matches!(what, DialogKind::ExportDir | DialogKind::SaveAs(_))
                .then(|| self.settings.export_dir.clone()),
            file_name: match what {
                DialogKind::SaveAs(kind) => self.export_file_name(kind),
                _ => String::new(),
            },
        };
        std::thread::spawn(move || {
            let _ = tx.send(dialogs::run(chooser, &request));
            notify();
        });
    }

    /// Use `chooser` instead of the desktop's file chooser (tests, or a desktop without
    /// one).
    pub fn set_file_chooser(&mut self, chooser: FileChooser) {
        self.file_chooser = chooser;
    }

    /// The default file name of an export of the job on screen.
    fn export_file_name(&self, kind: ExportKind) -> String {
        self.export_data()
            .map(|d| kind.file_name(&d.stem(), &d.spec))
            .unwrap_or_else(|| format!("adiff.{}", kind.extension()))
    }

    fn drain(&mut self) {
        while let Some(ev) = self.worker.try_recv() {
            self.session.apply(ev);
        }
        // A clip plays as soon as its first live frames arrive, and a finished clip
        // comparison plays at once (both sides, from the frame on screen).
        let clip = self.session.clip_len();
        if clip > 0 && !self.had_clip {
            self.player.play(clip);
        }
        self.had_clip = clip > 0;
        if self.session.comparison_version != self.played_comparison {
            self.played_comparison = self.session.comparison_version;
            if self.session.comparison.is_some() {
                self.player.play(clip);
            }
        }
        if self.session.is_busy() && !self.worker.is_alive() {
            self.session.phase = Phase::Failed;
            self.session.error =
                Some("the worker thread stopped; restart the app to generate again".into());
        }
        while let Ok(outcome) = self.export_rx.try_recv() {
            self.exports_in_flight = self.exports_in_flight.saturating_sub(1);
            self.last_export = Some(outcome);
        }
        while let Ok(picked) = self.picked_rx.try_recv() {
            self.dialog_open = false;
            match picked {
                Picked::Path(kind, p) => self.take_path(kind, p),
                Picked::Nothing { kind, quick: true } => {
                    self.dialog_note = Some((kind, dialogs::not_opened_note(kind)));
                }
                Picked::Nothing { quick: false, .. } => {}
            }
        }
    }

    /// The keyboard shortcuts: actions are queued as commands, a view is chosen at once.
    fn shortcuts(&mut self, ctx: &egui::Context) {
        use egui::{Key, KeyboardShortcut, Modifiers};
        let generate = ctx.input_mut(|i| {
            i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::Enter))
        });
        if generate {
            self.commands.push(UiCommand::Generate);
        }
        if self.session.is_busy() && ctx.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Escape))
        {
            self.commands.push(UiCommand::Cancel);
        }
        if ctx.input_mut(|i| i.consume_key(Modifiers::NONE, Key::F12)) {
            self.commands.push(UiCommand::ToggleOverlay);
        }
        for (key, mode) in [Key::Num1, Key::Num2, Key::Num3, Key::Num4]
            .into_iter()
            .zip(ViewMode::ALL)
        {
            if ctx.input_mut(|i| i.consume_key(Modifiers::COMMAND, key)) {
                self.settings.view = mode;
            }
        }
        if ctx.input_mut(|i| i.consume_key(Modifiers::COMMAND, Key::Q)) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    /// Advance the clip player to the frame due now (before the panels draw it).
    fn tick_player(&mut self, ctx: &egui::Context) {
        let n = self.session.clip_len();
        let now = ctx.input(|i| i.time);
        let (fps, looping) = (self.settings.fps, self.settings.loop_playback);
        if let Some(wait) = self.player.tick(now, n, fps, looping) {
            // (At least once a second: a frame rate read from saved settings may be absurd.)
            ctx.request_repaint_after(std::time::Duration::from_secs_f64(wait.min(1.0)));
        }
    }

    /// Draw one frame: take the worker's events, draw the panels (they queue commands),
    /// then apply the commands.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let t0 = Instant::now();
        let ctx = ui.ctx().clone();
        if self.applied_zoom != Some(self.settings.ui_scale) {
            ctx.set_zoom_factor(self.settings.ui_scale.clamp(0.5, 3.0));
            self.applied_zoom = Some(self.settings.ui_scale);
        }
        self.drain();
        self.tick_player(&ctx);
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        for path in dropped {
            self.commands.push(UiCommand::Drop(path));
        }
        self.shortcuts(&ctx);
        // A refused Generate's message goes once its settings are edited (e.g. the prompt
        // typed after "the prompt is empty").
        if self
            .settings_error
            .as_ref()
            .is_some_and(|s| *s != self.settings)
        {
            self.settings_error = None;
            self.session.error = None;
        }
        // The panels read the app's state, edit the settings and queue commands.
        let export_ready = self.export_data().is_some();
        let mut panel = panels::Panel {
            app: panels::View {
                session: &self.session,
                player: &self.player,
                wipe: self.wipe,
                last_export: self.last_export.as_ref(),
                dialog_note: self.dialog_note.as_ref(),
                builtins: &self.builtins,
                stats: self.worker.stats(),
                frame_stats: &self.frame_stats,
                rerun: self.rerun,
                export_ready,
            },
            settings: &mut self.settings,
            textures: &mut self.textures,
            commands: &mut self.commands,
        };
        panels::top_bar(&panel, ui);
        panels::status_bar(&panel, ui);
        self.controls_width = panels::controls(&mut panel, ui);
        egui::CentralPanel::default().show(ui, |ui| panels::results(&mut panel, ui));
        if self.show_overlay {
            panels::overlay(&panel.app, &ctx);
        }
        self.apply_commands(&ctx);
        // The window title carries the phase (scripts and task bars read it).
        let head = format!("{TITLE} — {}", self.side_names().versus());
        let title = match &self.session.phase {
            Phase::Idle => head,
            Phase::Loading { .. } => format!("{head} [loading]"),
            Phase::Running => format!("{head} [running]"),
            Phase::Done => format!("{head} [done]"),
            Phase::Cancelled => format!("{head} [cancelled]"),
            Phase::Failed => format!("{head} [failed]"),
        };
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
        if self.frame_stats.out.is_some() {
            // Measuring: draw as many frames as the machine allows (idle and while running).
            ctx.request_repaint();
        } else if self.session.is_busy() || self.exports_in_flight > 0 || self.dialog_open {
            // Clocks, download progress and pending exports update on their own.
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
        self.frame_stats.record_ui(t0.elapsed().as_secs_f32() * 1e3);
    }
}

impl eframe::App for GuiApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let running = self.session.is_busy();
        self.frame_stats
            .record_frame(frame.info().cpu_usage, running);
        GuiApp::ui(self, ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, SETTINGS_KEY, &self.settings);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.frame_stats.write();
    }
}

/// What the two sides are called: after their methods in the job on screen, else in the
/// settings.
fn side_names(session: &Session, settings: &Settings) -> names::SideNames {
    match &session.spec {
        Some(spec) => names::SideNames::new(&spec.reference, &spec.method),
        None => names::SideNames::new(&settings.left_method(), &settings.right_method()),
    }
}

/// Whether the job in flight is the job `settings` describe.
fn runs_settings(session: &Session, settings: &Settings) -> bool {
    session.is_busy()
        && settings
            .job(settings.steps)
            .is_ok_and(|job| session.spec.as_ref() == Some(&job))
}

/// Whether a dropped path is an AnimateDiff motion module: a folder whose `config.json`
/// names a `MotionAdapter`, or a `.safetensors` file of motion modules (its header read).
fn is_motion_module(path: &std::path::Path) -> bool {
    if path.is_dir() {
        return std::fs::read_to_string(path.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["_class_name"].as_str() == Some("MotionAdapter"));
    }
    path.is_file() && crate::model::motion::read(path).is_ok()
}

/// Open the window and run until it is closed.
pub fn run() -> anyhow::Result<()> {
    #[cfg(all(unix, not(target_os = "macos")))]
    if ["DISPLAY", "WAYLAND_DISPLAY", "WAYLAND_SOCKET"]
        .iter()
        .all(|v| std::env::var_os(v).is_none_or(|x| x.is_empty()))
    {
        anyhow::bail!(
            "no display to open the window on (DISPLAY and WAYLAND_DISPLAY are unset); on a server use the command line instead: adiff compare / generate / bench (see 'adiff --help')"
        );
    }
    let viewport = egui::ViewportBuilder::default()
        .with_title(TITLE)
        .with_app_id("adiff")
        .with_inner_size([1600.0, 1000.0])
        .with_min_inner_size([900.0, 600.0]);
    let mut options = eframe::NativeOptions {
        viewport,
        ..Default::default()
    };
    // ADIFF_VSYNC=0 turns vsync off (frame-time measurements).
    options.glow_options.vsync = std::env::var("ADIFF_VSYNC").map_or(true, |v| v.trim() != "0");
    eframe::run_native(
        STORAGE_NAME,
        options,
        Box::new(|cc| {
            cc.egui_ctx.set_theme(egui::Theme::Dark);
            Ok(Box::new(GuiApp::from_creation_context(cc)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}
