//! The egui panels. Each reads the app's state (a [`View`]), edits the plain settings its
//! widgets show ([`Settings`]), and queues what the user asks for as a
//! [`UiCommand`](super::commands::UiCommand), which [`GuiApp`](super::GuiApp) applies after
//! the panels ran: no panel writes the app's state. None of them blocks: model work goes
//! to the worker, exports and dialogs to their own threads.

mod controls;
mod methods;
mod player;
mod plots;
mod results;

pub(super) use controls::controls;
pub(super) use results::results;

use super::commands::{Commands, Rerun, UiCommand};
use super::dialogs::DialogKind;
use super::frame_stats::{FrameStats, summarize};
use super::names::SideNames;
use super::state::Phase;
use super::{ExportOutcome, Player, Session, Settings, StatsSnapshot, egui};
use egui::{Color32, RichText};
use std::path::PathBuf;

/// What the panels read of the app in one frame (borrowed: they never write it).
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    /// The job on screen, as the worker reported it.
    pub session: &'a Session,
    /// The clip player (its frame is the one both sides show).
    pub player: &'a Player,
    /// Where the wipe view's divider sits, 0 … 1.
    pub wipe: f32,
    /// The latest export.
    pub last_export: Option<&'a ExportOutcome>,
    /// Why the last file chooser showed nothing.
    pub dialog_note: Option<&'a (DialogKind, String)>,
    /// The built-in models the model menu offers.
    pub builtins: &'a [PathBuf],
    /// What the worker ran so far.
    pub stats: StatsSnapshot,
    /// The frame times (the F12 overlay).
    pub frame_stats: &'a FrameStats,
    /// Whether a method change waits to be re-run.
    pub rerun: Rerun,
    /// Whether both sides are done (an export has something to write).
    pub export_ready: bool,
}

impl View<'_> {
    /// What the two sides are called (after the job on screen, else `settings`).
    pub fn side_names(&self, settings: &Settings) -> SideNames {
        super::side_names(self.session, settings)
    }

    /// Whether the job in flight is the one `settings` describe.
    pub fn runs(&self, settings: &Settings) -> bool {
        super::runs_settings(self.session, settings)
    }
}

/// What a panel works with in one frame: the app's state to read, the settings its widgets
/// edit, the textures it draws, and the queue its commands go to.
pub(super) struct Panel<'a> {
    /// The app's state.
    pub app: View<'a>,
    /// The settings (plain data: a widget edits them in place).
    pub settings: &'a mut Settings,
    /// The uploaded images of the results view.
    pub textures: &'a mut Textures,
    /// What the user asked for in this frame.
    pub commands: &'a mut Commands,
}

impl Panel<'_> {
    /// Queue `command` (applied after the panels ran).
    pub fn push(&mut self, command: UiCommand) {
        self.commands.push(command);
    }
}

/// Colour of a palette entry.
pub(super) fn color(c: [u8; 3]) -> Color32 {
    Color32::from_rgb(c[0], c[1], c[2])
}

/// One uploaded image and the version it shows.
#[derive(Default)]
pub(super) struct Slot {
    version: Option<u64>,
    texture: Option<egui::TextureHandle>,
}

impl Slot {
    /// Upload `img` when `version` changed; returns the texture. Previews are filtered;
    /// small final images stay crisp pixels.
    fn sync(
        &mut self,
        ctx: &egui::Context,
        name: &str,
        img: Option<&image::RgbImage>,
        version: u64,
        preview: bool,
    ) -> Option<&egui::TextureHandle> {
        if self.version != Some(version) {
            self.version = Some(version);
            match img {
                Some(img) => {
                    let ci = egui::ColorImage::from_rgb(
                        [img.width() as usize, img.height() as usize],
                        img.as_raw(),
                    );
                    let options = if img.width() < 160 && !preview {
                        egui::TextureOptions::NEAREST
                    } else {
                        egui::TextureOptions::LINEAR
                    };
                    match &mut self.texture {
                        Some(t) => t.set(ci, options),
                        None => self.texture = Some(ctx.load_texture(name, ci, options)),
                    }
                }
                None => self.texture = None,
            }
        }
        self.texture.as_ref()
    }
}

/// The textures of the results view.
#[derive(Default)]
pub(super) struct Textures {
    pub baseline: Slot,
    pub adaptive: Slot,
    pub diff: Slot,
}

pub(super) fn top_bar(p: &Panel<'_>, ui: &mut egui::Ui) {
    egui::Panel::top("top_bar").show(ui, |ui| {
        ui.horizontal(|ui| {
            let head = format!(
                "{} — {}",
                super::TITLE,
                p.app.side_names(p.settings).versus()
            );
            ui.heading(RichText::new(head).strong());
            ui.separator();
            let s = p.app.session;
            match (&s.phase, &s.model) {
                (Phase::Loading { model }, _) => {
                    ui.spinner();
                    ui.label(format!("Loading {model}…"));
                }
                (_, Some(m)) => {
                    let loras = m.notes.iter().filter(|n| n.starts_with("LoRA ")).count();
                    let label = ui.label(format!(
                        "Model: {} · {} {} · loaded in {:.1} s{}",
                        short(&m.origin, 60),
                        m.device,
                        m.precision,
                        m.load_ms / 1e3,
                        match loras {
                            0 => String::new(),
                            1 => " · 1 LoRA".into(),
                            n => format!(" · {n} LoRAs"),
                        }
                    ));
                    if !m.notes.is_empty() {
                        label.on_hover_text(m.notes.join("\n"));
                    }
                }
                (_, None) => {
                    ui.label("No model loaded yet: press Generate (Ctrl+Enter)");
                }
            }
        });
    });
}

/// How long an "Exported …" message stays in the status bar.
const EXPORT_NOTE_SECS: f64 = 8.0;

pub(super) fn status_bar(p: &Panel<'_>, ui: &mut egui::Ui) {
    let app = &p.app;
    let names = app.side_names(p.settings);
    egui::Panel::bottom("status_bar").show(ui, |ui| {
        // The hints take the right end first; the rest fills what is left, one line, cut
        // with "…" (never drawn over the hints).
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            let hints = if app.session.clip_len() > 0 {
                "Ctrl+Enter generate · Esc cancel · Ctrl+1–4 view · Left/Right frame · Space play"
            } else {
                "Ctrl+Enter generate · Esc cancel · Ctrl+1–4 view · F12 frame times"
            };
            ui.label(RichText::new(hints).weak());
            ui.separator();
            ui.with_layout(egui::Layout::left_to_right(egui::Align::Center), |ui| {
                status_text(app, ui, &names);
            });
        });
    });
}

fn status_text(app: &View<'_>, ui: &mut egui::Ui, names: &SideNames) {
    let s = app.session;
    let phase = match &s.phase {
        Phase::Idle => "Ready".to_string(),
        Phase::Loading { .. } => "Loading the model…".into(),
        Phase::Running => match (s.baseline.status, s.adaptive.status) {
            (super::SideStatus::Running, _) => format!("Running the left side ({})…", names.left),
            (_, super::SideStatus::Running) => {
                format!("Running the right side ({})…", names.right)
            }
            _ => "Working…".into(),
        },
        Phase::Done => "Done".into(),
        Phase::Cancelled => "Cancelled".into(),
        Phase::Failed => "Failed (see the message above)".into(),
    };
    ui.label(RichText::new(phase).strong());
    if let Some(job) = s.job {
        ui.separator();
        ui.label(format!("job #{job}"));
    }
    let st = app.stats;
    ui.separator();
    ui.add(
        egui::Label::new(format!(
            "worker: {} left-side run(s), {} reused, {} right-side run(s), {} model load(s)",
            st.baseline_runs, st.baseline_cache_hits, st.adaptive_runs, st.model_loads
        ))
        .truncate(),
    );
    // An export's outcome: a success for a few seconds, a failure until the next export.
    if let Some(e) = app.last_export {
        let fresh = e.at.elapsed().as_secs_f64() < EXPORT_NOTE_SECS;
        match &e.result {
            Ok(p) if fresh => {
                ui.separator();
                ui.add(egui::Label::new(format!("Exported {}", p.display())).truncate())
                    .on_hover_text(p.display().to_string());
                ui.ctx()
                    .request_repaint_after(std::time::Duration::from_secs_f64(EXPORT_NOTE_SECS));
            }
            Ok(_) => {}
            Err(msg) => {
                ui.separator();
                ui.add(
                    egui::Label::new(
                        RichText::new(format!("Export failed: {msg}"))
                            .color(Color32::from_rgb(255, 120, 120)),
                    )
                    .truncate(),
                )
                .on_hover_text(msg.as_str());
            }
        }
    }
}

pub(super) fn overlay(app: &View<'_>, ctx: &egui::Context) {
    let recent = |v: &[f32]| summarize(&v[v.len().saturating_sub(300)..]);
    let running = recent(&app.frame_stats.running_ms);
    let idle = recent(&app.frame_stats.idle_ms);
    let ui_ms = recent(&app.frame_stats.ui_ms);
    egui::Area::new(egui::Id::unique("frame_overlay"))
        .anchor(egui::Align2::RIGHT_TOP, [-12.0, 48.0])
        .show(ctx, |ui| {
            egui::Frame::popup(ui.style()).show(ui, |ui| {
                ui.label(RichText::new("Frame CPU time (last 300 frames)").strong());
                for (name, s) in [
                    ("while running", running),
                    ("idle", idle),
                    ("app ui code", ui_ms),
                ] {
                    match s {
                        Some(s) => ui.label(format!(
                            "{name}: p50 {:.1} ms · p95 {:.1} ms · max {:.1} ms ({} frames)",
                            s.p50_ms, s.p95_ms, s.max_ms, s.frames
                        )),
                        None => ui.label(format!("{name}: no frames yet")),
                    };
                }
                let st = app.stats;
                ui.label(format!(
                    "worker: {} jobs, {} cancelled, {} failed, busy {}",
                    st.jobs, st.cancelled, st.failed, st.busy
                ));
                ui.label(format!(
                    "events dropped from older jobs: {}",
                    app.session.stale_events
                ));
            });
        });
}

/// `s` cut to `n` characters from the left.
pub(super) fn short(s: &str, n: usize) -> String {
    let s = s.split(" (cache ").next().unwrap_or(s);
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: Vec<char> = s.chars().rev().take(n - 1).collect();
        format!("…{}", tail.into_iter().rev().collect::<String>())
    }
}
