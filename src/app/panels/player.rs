//! The clip player's controls under the two players: play / pause, the frame slider and
//! frame-by-frame buttons and keys, loop and frame rate; and the per-frame PSNR strip
//! (click a frame to go there). Both sides show the one frame of [`crate::app::Player`].

use super::super::player::Strip;
use super::super::{GuiApp, egui};
use crate::pipeline::VideoQuality;
use egui::{Color32, Rect, RichText, Sense, pos2, vec2};

/// Advance playback to the frame due now and handle the frame keys (Left / Right, Space)
/// while no widget has the keyboard (a focused slider or text field keeps its keys).
/// Called once per frame while a clip is on screen.
pub(in crate::app) fn tick(app: &mut GuiApp, ui: &egui::Ui) {
    let n = app.session.clip_len();
    let looping = app.settings.loop_playback;
    let ctx = ui.ctx();
    let nothing_focused = ctx.memory(|m| m.focused().is_none());
    if n > 0 && nothing_focused {
        use egui::{Key, Modifiers};
        if ctx.input_mut(|i| i.consume_key(Modifiers::NONE, Key::ArrowLeft)) {
            app.player.step(-1, n, looping);
        }
        if ctx.input_mut(|i| i.consume_key(Modifiers::NONE, Key::ArrowRight)) {
            app.player.step(1, n, looping);
        }
        if ctx.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Space)) {
            app.player.toggle(n, looping);
        }
    }
    let now = ctx.input(|i| i.time);
    if let Some(wait) = app.player.tick(now, n, app.settings.fps, looping) {
        // (At least once a second: a frame rate read from saved settings may be absurd.)
        ctx.request_repaint_after(std::time::Duration::from_secs_f64(wait.min(1.0)));
    }
}

/// Play / pause, previous / next, the frame slider, loop and frame rate.
pub(in crate::app) fn transport(app: &mut GuiApp, ui: &mut egui::Ui) {
    let n = app.session.clip_len();
    if n == 0 {
        return;
    }
    let looping = app.settings.loop_playback;
    ui.horizontal_wrapped(|ui| {
        if ui
            .button("Previous frame")
            .on_hover_text("One frame back (Left arrow key)")
            .clicked()
        {
            app.player.step(-1, n, looping);
        }
        let play = if app.player.is_playing() {
            "Pause"
        } else {
            "Play"
        };
        if ui
            .add_enabled(n > 1, egui::Button::new(RichText::new(play).strong()))
            .on_hover_text("Both clips, in step (Space)")
            .clicked()
        {
            app.player.toggle(n, looping);
        }
        if ui
            .button("Next frame")
            .on_hover_text("One frame on (Right arrow key)")
            .clicked()
        {
            app.player.step(1, n, looping);
        }
        let mut frame = app.player.frame();
        let r = ui.add_enabled(
            n > 1,
            egui::Slider::new(&mut frame, 0..=n - 1)
                .text("Frame")
                .clamping(egui::SliderClamping::Always),
        );
        if r.changed() {
            app.player.pause();
            app.player.seek(frame, n);
        }
        ui.label(format!("of {n}"));
        ui.checkbox(&mut app.settings.loop_playback, "Loop");
        ui.add(
            egui::Slider::new(&mut app.settings.fps, 1.0..=30.0)
                .step_by(1.0)
                .text("Frame rate (fps)"),
        );
    });
}

/// Height of the per-frame PSNR strip.
const STRIP_H: f32 = 46.0;

/// The per-frame PSNR strip: a bar per frame (taller: closer to the left side), the worst
/// frame in orange, the frame on screen outlined; a click goes to that frame.
pub(in crate::app) fn psnr_strip(app: &mut GuiApp, ui: &mut egui::Ui, v: &VideoQuality) {
    let n = v.frames.min(v.psnr_per_frame_db.len());
    if n == 0 {
        return;
    }
    let width = ui.available_width().clamp(120.0, 900.0);
    let strip = Strip { frames: n, width };
    ui.label(
        RichText::new(format!(
            "PSNR per frame: mean {}, worst {} (frame {}) · click a frame to go there",
            crate::metrics::psnr_text(v.psnr_mean_db),
            crate::metrics::psnr_text(v.psnr_worst_db),
            v.worst_frame
        ))
        .small(),
    );
    let (rect, _) = ui.allocate_exact_size(vec2(width, STRIP_H), Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 3.0, Color32::from_gray(28));
    let current = app.player.frame();
    let mut go = None;
    for (i, &db) in v.psnr_per_frame_db.iter().enumerate().take(n) {
        let (x, w) = strip.cell(i);
        let cell = Rect::from_min_size(pos2(rect.left() + x, rect.top()), vec2(w, STRIP_H));
        let label = format!("Frame {i}: PSNR {}", crate::metrics::psnr_text(db));
        let id = ui.make_persistent_id(("psnr_strip", i));
        let r = ui.interact(cell, id, Sense::click()).on_hover_text(&label);
        r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &label));
        if r.clicked() {
            go = Some(i);
        }
        let h = (STRIP_H - 14.0) * Strip::bar(db);
        let bar = Rect::from_min_max(
            pos2(cell.left() + 1.0, cell.top() + 2.0 + (STRIP_H - 14.0 - h)),
            pos2(cell.right() - 1.0, cell.top() + STRIP_H - 12.0),
        );
        let fill = if i == v.worst_frame {
            Color32::from_rgb(235, 140, 50)
        } else {
            Color32::from_rgb(90, 150, 220)
        };
        painter.rect_filled(
            bar,
            1.0,
            if r.hovered() {
                fill.gamma_multiply(1.3)
            } else {
                fill
            },
        );
        if i == current {
            painter.rect_stroke(
                cell.shrink(0.5),
                2.0,
                egui::Stroke::new(2.0, Color32::WHITE),
                egui::StrokeKind::Inside,
            );
        }
        if w >= 14.0 || i % 4 == 0 {
            painter.text(
                pos2(cell.center().x, cell.bottom() - 1.0),
                egui::Align2::CENTER_BOTTOM,
                i.to_string(),
                egui::FontId::proportional(10.0),
                Color32::GRAY,
            );
        }
    }
    if let Some(i) = go {
        app.player.pause();
        app.player.seek(i, app.session.clip_len().max(n));
    }
}
