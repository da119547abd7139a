//! The left panel: prompt, model, sampling and adaptive settings, Generate / Cancel, export.

use super::super::commands::UiCommand;
use super::super::export::ExportKind;
use super::super::protocol::Side;
use super::super::settings::{ModelChoice, Video, hub_label};
use super::super::{DialogKind, egui};
use super::{Panel, methods};
use crate::model::HubModel;
use crate::sampler::SchedulerKind;
use egui::{Color32, RichText};

/// The side panel; returns its width as drawn.
pub(in crate::app) fn controls(p: &mut Panel<'_>, ui: &mut egui::Ui) -> f32 {
    // At most half the window: a width saved by an older version cannot cover the results.
    let max = (ui.available_width() * 0.5).max(MIN_WIDTH);
    let panel = egui::Panel::left("controls")
        .resizable(true)
        .default_size(380.0)
        .min_size(MIN_WIDTH)
        .max_size(max)
        .show(ui, |ui| {
            // The contents never widen the panel: they are laid out in a child bounded by
            // the panel's width and clipped to it, and only that width is reported back. (A
            // panel grows to whatever its contents allocate and saves that as its width; at
            // fractional UI scales a widget sized from the available width can come out a
            // pixel wider after rounding, so the panel crept wider on every redraw.)
            let rect = ui.available_rect_before_wrap();
            let mut inner = ui.new_child(
                egui::UiBuilder::new()
                    .max_rect(rect)
                    .layout(egui::Layout::top_down(egui::Align::Min)),
            );
            inner.shrink_clip_rect(rect);
            egui::ScrollArea::vertical().show(&mut inner, |ui| {
                ui.add_space(4.0);
                prompt(p, ui);
                ui.add_space(6.0);
                run_buttons(p, ui);
                ui.separator();
                model(p, ui);
                ui.separator();
                sampling(p, ui);
                ui.separator();
                methods::adaptive(p, ui);
                ui.separator();
                export(p, ui);
                ui.separator();
                view(p, ui);
                ui.add_space(8.0);
            });
            ui.advance_cursor_after_rect(rect);
        });
    panel.response.rect.width()
}

/// The side panel's narrowest width.
const MIN_WIDTH: f32 = 300.0;

fn prompt(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    let l = ui.label(RichText::new("Prompt").strong());
    // A long prompt scrolls inside its box (at most about 5 lines) instead of pushing every
    // control down.
    let line = ui.text_style_height(&egui::TextStyle::Body);
    egui::ScrollArea::vertical()
        .id_salt("prompt_scroll")
        .max_height(line * 5.0 + 12.0)
        .show(ui, |ui| {
            ui.add(
                egui::TextEdit::multiline(&mut p.settings.prompt)
                    .desired_rows(3)
                    .desired_width(f32::INFINITY)
                    .hint_text("describe the image"),
            )
            .labelled_by(l.id);
        });
    let l = ui.label("Negative prompt");
    ui.add(
        egui::TextEdit::multiline(&mut p.settings.negative)
            .desired_rows(1)
            .desired_width(f32::INFINITY)
            .hint_text("optional"),
    )
    .labelled_by(l.id);
}

fn run_buttons(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    let busy = p.app.session.is_busy();
    ui.horizontal(|ui| {
        let generate = egui::Button::new(RichText::new("Generate").size(18.0).strong())
            .fill(Color32::from_rgb(40, 110, 200))
            .min_size(egui::vec2(150.0, 34.0));
        let same = p.app.runs(p.settings);
        let hover = if same {
            "Running with these settings: change a setting to restart, or Cancel (Esc)"
        } else if busy {
            "Restart with the changed settings (Ctrl+Enter)"
        } else {
            "Run both sides on the same noise (Ctrl+Enter)"
        };
        if ui
            .add_enabled(!same, generate)
            .on_hover_text(hover)
            .on_disabled_hover_text(hover)
            .clicked()
        {
            p.push(UiCommand::Generate);
        }
        let cancel =
            egui::Button::new(RichText::new("Cancel").size(18.0)).min_size(egui::vec2(100.0, 34.0));
        if ui
            .add_enabled(busy, cancel)
            .on_hover_text("Stop at the next step (Esc)")
            .clicked()
        {
            p.push(UiCommand::Cancel);
        }
    });
    if busy && !p.app.runs(p.settings) {
        ui.label(
            RichText::new("Settings changed: Generate restarts with them.")
                .color(ui.visuals().warn_fg_color),
        );
    }
    for warning in &p.app.session.warnings {
        egui::Frame::new()
            .fill(Color32::from_rgb(80, 65, 20))
            .inner_margin(6.0)
            .corner_radius(4.0)
            .show(ui, |ui| {
                ui.colored_label(Color32::from_rgb(255, 225, 150), format!("Note: {warning}"));
            });
    }
    if let Some(err) = &p.app.session.error {
        egui::Frame::new()
            .fill(Color32::from_rgb(90, 30, 30))
            .inner_margin(6.0)
            .corner_radius(4.0)
            .show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    ui.colored_label(Color32::from_rgb(255, 200, 200), format!("Error: {err}"));
                    if ui.small_button("Dismiss").clicked() {
                        p.commands.push(UiCommand::DismissError);
                    }
                });
            });
    }
}

fn model(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    let heading = ui.label(RichText::new("Model").strong());
    let current = p.settings.model.clone();
    // The local folder and file are remembered, so switching away and back keeps them.
    match &current {
        ModelChoice::Local(path) if !path.as_os_str().is_empty() => {
            p.settings.local_folder = path.clone();
        }
        ModelChoice::LocalFile(path) if !path.as_os_str().is_empty() => {
            p.settings.local_file = path.clone();
        }
        _ => {}
    }
    let mut choices: Vec<ModelChoice> = p
        .app
        .builtins
        .iter()
        .cloned()
        .map(ModelChoice::Builtin)
        .collect();
    choices.extend(
        HubModel::ALL
            .iter()
            .map(|m| ModelChoice::Hub(m.name().to_string())),
    );
    choices.push(ModelChoice::Local(p.settings.local_folder.clone()));
    choices.push(ModelChoice::LocalFile(p.settings.local_file.clone()));
    let combo = egui::ComboBox::from_id_salt("model")
        .selected_text(current.label())
        .width(ui.available_width() - 8.0)
        .show_ui(ui, |ui| {
            for c in choices {
                let label = match &c {
                    ModelChoice::Hub(name) => name
                        .parse::<HubModel>()
                        .map(|m| hub_label(m).to_string())
                        .unwrap_or_else(|_| name.clone()),
                    ModelChoice::Local(_) => "Local folder…".to_string(),
                    ModelChoice::LocalFile(_) => "Local file… (single-file checkpoint)".to_string(),
                    other => other.label(),
                };
                let selected = std::mem::discriminant(&c) == std::mem::discriminant(&current)
                    && (matches!(c, ModelChoice::Local(_) | ModelChoice::LocalFile(_))
                        || c == current);
                if ui.selectable_label(selected, label).clicked() {
                    p.settings.model = c;
                }
            }
        });
    combo.response.labelled_by(heading.id);
    match &p.settings.model {
        ModelChoice::Local(path) => {
            if let Some(typed) = path_row(ui, "Model folder", path) {
                p.settings.model = ModelChoice::Local(typed);
            }
            if browse_clicked(ui) {
                p.push(UiCommand::OpenDialog(DialogKind::ModelFolder));
            }
        }
        ModelChoice::LocalFile(path) => {
            if let Some(typed) = path_row(ui, "Checkpoint file", path) {
                p.settings.model = ModelChoice::LocalFile(typed);
            }
            if browse_clicked(ui) {
                p.push(UiCommand::OpenDialog(DialogKind::ModelFile));
            }
        }
        _ => {}
    }
    dialog_note(p, ui, &[DialogKind::ModelFolder, DialogKind::ModelFile]);
    weight_files(p, ui);
    if let ModelChoice::Hub(_) = &p.settings.model {
        ui.label(
            RichText::new(
                "Downloaded once into the Hugging Face cache (HF_HOME); needs network access.",
            )
            .weak(),
        );
    }
    if let Some(d) = p.app.session.download {
        let added = d.bytes.saturating_sub(d.bytes_at_start) as f64 / 1e6;
        let secs = d.since.elapsed().as_secs_f64().max(1e-3);
        let frac = d.files_done as f32 / d.files_total.max(1) as f32;
        ui.add(
            egui::ProgressBar::new(frac)
                .text(format!(
                    "{}/{} files · {:.0} MB in cache · {:.1} MB/s",
                    d.files_done,
                    d.files_total,
                    d.bytes as f64 / 1e6,
                    added / secs
                ))
                .animate(true),
        );
    }
    ui.checkbox(&mut p.settings.force_cpu, "CPU only (ignore GPUs)");
    ui.horizontal(|ui| {
        let l = ui.label("Number format");
        egui::ComboBox::from_id_salt("precision")
            .selected_text(p.settings.precision.label())
            .show_ui(ui, |ui| {
                for choice in crate::app::settings::Precision::ALL {
                    ui.selectable_value(&mut p.settings.precision, choice, choice.label());
                }
            })
            .response
            .labelled_by(l.id);
    });
}

/// A labelled path field; the new path when it was edited.
fn path_row(ui: &mut egui::Ui, label: &str, path: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut text = path.display().to_string();
    let changed = ui
        .horizontal(|ui| {
            let l = ui.label(label);
            ui.add(egui::TextEdit::singleline(&mut text).desired_width(ui.available_width() - 8.0))
                .labelled_by(l.id)
                .changed()
        })
        .inner;
    changed.then(|| text.into())
}

fn browse_clicked(ui: &mut egui::Ui) -> bool {
    ui.horizontal(|ui| ui.button("Browse…").clicked()).inner
}

/// Why the last file chooser for one of `kinds` showed nothing (it could not open).
fn dialog_note(p: &mut Panel<'_>, ui: &mut egui::Ui, kinds: &[DialogKind]) {
    let Some((kind, note)) = p.app.dialog_note else {
        return;
    };
    if !kinds.contains(kind) {
        return;
    }
    egui::Frame::new()
        .fill(Color32::from_rgb(80, 65, 20))
        .inner_margin(6.0)
        .corner_radius(4.0)
        .show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.colored_label(Color32::from_rgb(255, 225, 150), note);
                if ui.small_button("Dismiss").clicked() {
                    p.push(UiCommand::DismissDialogNote);
                }
            });
        });
}

/// A path field with a button that takes what was typed; the typed path when it was
/// pressed (or Enter was hit in the field).
fn typed_path(
    ui: &mut egui::Ui,
    id: &str,
    label: &str,
    button: &str,
    hint: &str,
) -> Option<std::path::PathBuf> {
    let id = ui.make_persistent_id(id);
    let mut text: String = ui.data_mut(|d| d.get_temp(id)).unwrap_or_default();
    let mut take = false;
    // Room for the button after the field: its text and padding.
    let reserve = {
        let font = egui::TextStyle::Button.resolve(ui.style());
        let text = ui.fonts_mut(|f| f.layout_no_wrap(button.into(), font, Color32::WHITE));
        (text.size().x + 2.0 * ui.spacing().button_padding.x + 2.0 * ui.spacing().item_spacing.x)
            .max(70.0)
    };
    ui.horizontal(|ui| {
        let l = ui.label(label);
        let r = ui
            .add(
                egui::TextEdit::singleline(&mut text)
                    .hint_text(hint)
                    .desired_width((ui.available_width() - reserve).max(60.0)),
            )
            .labelled_by(l.id);
        let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        let clicked = ui
            .add_enabled(!text.trim().is_empty(), egui::Button::new(button))
            .clicked();
        take = (enter || clicked) && !text.trim().is_empty();
    });
    let picked = take.then(|| std::path::PathBuf::from(text.trim()));
    if take {
        text.clear();
    }
    ui.data_mut(|d| d.insert_temp(id, text));
    picked
}

/// The VAE replacing the model's own, and the LoRAs merged at load.
fn weight_files(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    let s = &mut p.settings;
    let mut open = None;
    ui.horizontal(|ui| {
        ui.label("VAE");
        match &s.vae {
            Some(p) => {
                ui.label(short_file(p))
                    .on_hover_text(p.display().to_string());
                if ui
                    .small_button("Remove")
                    .on_hover_text("Use the model's own VAE")
                    .clicked()
                {
                    s.vae = None;
                }
            }
            None => {
                ui.label(RichText::new("the model's own").weak());
            }
        }
        if ui.small_button("Choose…").clicked() {
            open = Some(DialogKind::Vae);
        }
    });
    if let Some(path) = typed_path(
        ui,
        "vae_path",
        "VAE file",
        "Use",
        "/path/to/vae.safetensors",
    ) {
        p.push(UiCommand::UsePath(DialogKind::Vae, path));
    }
    dialog_note(p, ui, &[DialogKind::Vae]);
    let s = &mut p.settings;
    ui.label("LoRAs");
    let mut remove = None;
    // Each LoRA on two lines (name, then scale and Remove), so that a row never runs past
    // the panel's edge: a row wider than the panel widens the space every later row is laid
    // out in, and their buttons end up clipped.
    for (i, lora) in s.loras.iter_mut().enumerate() {
        ui.push_id(i, |ui| {
            ui.add(egui::Checkbox::new(
                &mut lora.enabled,
                short_file(&lora.path),
            ))
            .on_hover_text(lora.path.display().to_string());
            ui.horizontal(|ui| {
                ui.add_space(ui.spacing().indent);
                ui.add(
                    egui::Slider::new(&mut lora.scale, -1.0..=2.0)
                        .step_by(0.05)
                        .text("scale"),
                );
                if ui
                    .small_button("Remove")
                    .on_hover_text("Remove from the list")
                    .clicked()
                {
                    remove = Some(i);
                }
            });
        });
    }
    if let Some(i) = remove {
        s.loras.remove(i);
    }
    if let Some(path) = typed_path(
        ui,
        "lora_path",
        "LoRA file",
        "Add",
        "/path/to/lora.safetensors",
    ) {
        p.push(UiCommand::UsePath(DialogKind::Lora, path));
    }
    if ui.button("Add LoRA…").clicked() {
        open = Some(DialogKind::Lora);
    }
    dialog_note(p, ui, &[DialogKind::Lora]);
    motion_module(p, ui, &mut open);
    // What the last load found: the checkpoint's family, each LoRA's modules.
    if let Some(m) = &p.app.session.model {
        for note in &m.notes {
            // Readable, and a merged LoRA in green: it is the confirmation it worked.
            let text = RichText::new(note_text(note));
            let text = if note.starts_with("LoRA ") && note.contains("merged") {
                text.color(Color32::from_rgb(140, 220, 140))
            } else {
                text
            };
            ui.label(text).on_hover_text(note.as_str());
        }
    }
    if let Some(kind) = open {
        p.push(UiCommand::OpenDialog(kind));
    }
}

/// The AnimateDiff motion module added to the model: with one, the model makes clips.
fn motion_module(p: &mut Panel<'_>, ui: &mut egui::Ui, open: &mut Option<DialogKind>) {
    let s = &mut p.settings;
    // Two lines, so that a long file name never runs past the panel's edge (see the LoRAs).
    let heading = ui
        .horizontal(|ui| {
            let l = ui.label("Motion module");
            match &s.motion {
                Some(p) => {
                    ui.add(egui::Label::new(short_file(p)).truncate())
                        .on_hover_text(p.display().to_string());
                }
                None => {
                    ui.label(RichText::new("none (images)").weak());
                }
            }
            l
        })
        .inner;
    ui.horizontal(|ui| {
        ui.add_space(ui.spacing().indent);
        if s.motion.is_some()
            && ui
                .small_button("Remove")
                .on_hover_text("Make images again")
                .clicked()
        {
            s.motion = None;
        }
        if ui
            .small_button("Choose module…")
            .on_hover_text("An AnimateDiff motion module: the model then makes clips")
            .clicked()
        {
            *open = Some(DialogKind::Motion);
        }
        // The published modules, by name (downloaded into the Hugging Face cache on first
        // use, as the hub models are).
        egui::ComboBox::from_id_salt("published_motion")
            .selected_text("Published")
            .width(90.0)
            .show_ui(ui, |ui| {
                for (name, repo) in crate::model::motion::HUB_MODULES {
                    if ui
                        .selectable_label(
                            s.motion.as_deref() == Some(std::path::Path::new(name)),
                            name,
                        )
                        .on_hover_text(format!("{repo} (hub download for SD 1.5 models)"))
                        .clicked()
                    {
                        s.motion = Some(name.into());
                    }
                }
            })
            .response
            .labelled_by(heading.id)
            .on_hover_text("A published AnimateDiff motion module for SD 1.5 models");
    });
    if let Some(path) = typed_path(
        ui,
        "motion_path",
        "Motion module path",
        "Use module",
        "MotionAdapter folder or mm_*.safetensors",
    ) {
        p.push(UiCommand::UsePath(DialogKind::Motion, path));
    }
    dialog_note(p, ui, &[DialogKind::Motion]);
}

/// The frame count of a clip, for a model that makes clips (or may: a check box asks for
/// one).
fn frames(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    let s = &mut p.settings;
    let video = s.video();
    if video == Video::No {
        return;
    }
    if video == Video::Optional {
        ui.checkbox(&mut s.clip, "Make a clip (video)")
            .on_hover_text("This model makes images, or clips with its motion module");
    }
    ui.add_enabled_ui(video == Video::Always || s.clip, |ui| {
        ui.horizontal(|ui| {
            let l = ui.label("Frames");
            ui.add(
                egui::DragValue::new(&mut s.frames)
                    .range(1..=crate::job::limits::FRAMES)
                    .speed(0.2),
            )
            .labelled_by(l.id)
            .on_hover_text("Frames of the clip: both sides make the same number");
        });
    });
}

/// A load note with its file paths cut to their names.
fn note_text(note: &str) -> String {
    note.split(' ')
        .map(|w| {
            let (word, colon) = w.strip_suffix(':').map_or((w, ""), |x| (x, ":"));
            if word.contains(std::path::MAIN_SEPARATOR) {
                format!("{}{colon}", short_file(std::path::Path::new(word)))
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn short_file(p: &std::path::Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn sampling(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    let s = &mut p.settings;
    ui.label(RichText::new("Sampling").strong());
    egui::ComboBox::from_label("Scheduler")
        .selected_text(scheduler_label(s.scheduler))
        .show_ui(ui, |ui| {
            for k in SchedulerKind::ALL {
                ui.selectable_value(&mut s.scheduler, k, scheduler_label(k));
            }
        });
    ui.add(egui::Slider::new(&mut s.steps, 1..=150).text("Steps"));
    ui.add(
        egui::Slider::new(&mut s.guidance, 0.0..=20.0)
            .step_by(0.5)
            .text("Guidance (CFG)"),
    );
    ui.horizontal(|ui| {
        let l = ui.label("Seed");
        ui.add(egui::DragValue::new(&mut s.seed).speed(1.0))
            .labelled_by(l.id);
        if ui
            .button("Random seed")
            .on_hover_text("Pick a random seed")
            .clicked()
        {
            s.seed = random_seed();
        }
    });
    ui.checkbox(
        &mut s.custom_size,
        "Custom size (default: the model's native size)",
    );
    if s.custom_size {
        ui.horizontal(|ui| {
            let l = ui.label("Width");
            ui.add(
                egui::DragValue::new(&mut s.width)
                    .range(8..=2048)
                    .speed(8.0),
            )
            .labelled_by(l.id);
            let l = ui.label("Height");
            ui.add(
                egui::DragValue::new(&mut s.height)
                    .range(8..=2048)
                    .speed(8.0),
            )
            .labelled_by(l.id);
        });
        // Snap to a multiple of 8, at least 8 (pixel-space models are 32×32).
        s.width = (s.width / 8).max(1) * 8;
        s.height = (s.height / 8).max(1) * 8;
    }
    frames(p, ui);
}

fn export(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    ui.label(RichText::new("Export").strong());
    let ready = p.app.export_ready;
    // While a job runs the buttons stay on: pressing one says what is still running.
    let busy = p.app.session.is_busy();
    let clip = p.app.session.is_clip();
    let names = p.app.side_names(p.settings);
    let mut dir = p.settings.export_dir.display().to_string();
    ui.horizontal(|ui| {
        let l = ui.label("Export folder");
        let r = ui
            .add(
                egui::TextEdit::singleline(&mut dir)
                    .desired_width((ui.available_width() - 80.0).max(60.0)),
            )
            .labelled_by(l.id);
        if r.changed() {
            p.settings.export_dir = dir.clone().into();
        }
        if ui.button("Browse…").clicked() {
            p.push(UiCommand::OpenDialog(DialogKind::ExportDir));
        }
    });
    dialog_note(p, ui, &[DialogKind::ExportDir]);
    ui.add_enabled_ui(ready || busy, |ui| {
        if clip {
            ui.horizontal_wrapped(|ui| {
                for (kind, label, hover) in [
                    (
                        ExportKind::ClipGif,
                        "Clip GIF",
                        "Both clips side by side, looping, at the player's frame rate",
                    ),
                    (
                        ExportKind::Filmstrip,
                        "Filmstrip PNG",
                        "Each side's frames in rows, with the method titles and key numbers",
                    ),
                    (
                        ExportKind::Frames,
                        "Frames (each side)",
                        "Every frame of both sides as PNGs, in a folder (left/, right/)",
                    ),
                ] {
                    if ui.button(label).on_hover_text(hover).clicked() {
                        p.push(UiCommand::Export(kind));
                    }
                }
            });
        }
        ui.horizontal_wrapped(|ui| {
            if ui
                .button("Export comparison PNG")
                .on_hover_text("Both images, labels, numbers and curves; settings and traces in PNG text chunks")
                .clicked()
            {
                p.push(UiCommand::Export(ExportKind::Comparison));
            }
            if ui.button("Save comparison as…").clicked() {
                p.push(UiCommand::OpenDialog(DialogKind::SaveAs(ExportKind::Comparison)));
            }
            for side in [Side::Baseline, Side::Adaptive] {
                if ui
                    .button(format!("{} PNG", names.of(side)))
                    .on_hover_text(format!("The {} side's image alone", match side {
                        Side::Baseline => "left",
                        Side::Adaptive => "right",
                    }))
                    .clicked()
                {
                    p.push(UiCommand::Export(ExportKind::Image(side)));
                }
            }
            if ui.button("Trace JSON").clicked() {
                p.push(UiCommand::Export(ExportKind::TraceJson));
            }
            if ui.button("Trace CSV").clicked() {
                p.push(UiCommand::Export(ExportKind::TraceCsv));
            }
        });
        if let Some(path) = typed_path(
            ui,
            "save_as_path",
            "Save as",
            "Save",
            "comparison.png (in the export folder) or a full path",
        ) {
            p.push(UiCommand::UsePath(DialogKind::SaveAs(ExportKind::Comparison), path));
        }
    });
    dialog_note(p, ui, &[DialogKind::SaveAs(ExportKind::Comparison)]);
    if busy && clip {
        ui.label(
            RichText::new("The clip is still sampling: export once both sides are done.").weak(),
        );
    } else if !ready {
        ui.label(RichText::new("Available once both sides are done.").weak());
    }
}

fn view(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    ui.label(RichText::new("Display").strong());
    ui.add(egui::Slider::new(&mut p.settings.ui_scale, 0.75..=2.0).text("UI scale"));
}

fn scheduler_label(k: SchedulerKind) -> &'static str {
    match k {
        SchedulerKind::Ddim => "DDIM",
        SchedulerKind::Euler => "Euler",
        SchedulerKind::DpmPlusPlus => "DPM-Solver++ 2M",
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() % 4_294_967_296
}
