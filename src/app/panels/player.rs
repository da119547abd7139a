//! The clip player's controls under the two players: play / pause, the frame slider and
//! frame-by-frame buttons and keys, loop and frame rate; and the per-frame PSNR strip
//! (click a frame to go there). Both sides show the one frame of [`crate::app::Player`].

use super::super::commands::{PlayerAction, UiCommand};
use super::super::egui;
use super::super::player::Strip;
use super::Panel;
use crate::pipeline::VideoQuality;
use egui::{Color32, Rect, RichText, Sense, pos2, vec2};

/// The frame keys (Left / Right, Space) while no widget has the keyboard (a focused slider
/// or text field keeps its keys). Called once per frame while a clip is on screen (the app
/// advances playback to the frame due before the panels draw).
pub(in crate::app) fn keys(p: &mut Panel<'_>, ui: &egui::Ui) {
    let n = p.app.session.clip_len();
    let ctx = ui.ctx();
    let nothing_focused = ctx.memory(|m| m.focused().is_none());
    if n > 0 && nothing_focused {
        use egui::{Key, Modifiers};
        for (key, action) in [
            (Key::ArrowLeft, PlayerAction::Step(-1)),
            (Key::ArrowRight, PlayerAction::Step(1)),
            (Key::Space, PlayerAction::Toggle),
        ] {
            if ctx.input_mut(|i| i.consume_key(Modifiers::NONE, key)) {
                p.push(UiCommand::Player(action));
            }
        }
    }
}

/// Play / pause, previous / next, the frame slider, loop and frame rate.
pub(in crate::app) fn transport(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    let n = p.app.session.clip_len();
    if n == 0 {
        return;
    }
    ui.horizontal_wrapped(|ui| {
        if ui
            .button("Previous frame")
            .on_hover_text("One frame back (Left arrow key)")
            .clicked()
        {
            p.push(UiCommand::Player(PlayerAction::Step(-1)));
        }
        let play = if p.app.player.is_playing() {
            "Pause"
        } else {
            "Play"
        };
        if ui
            .add_enabled(n > 1, egui::Button::new(RichText::new(play).strong()))
            .on_hover_text("Both clips, in step (Space)")
            .clicked()
        {
            p.push(UiCommand::Player(PlayerAction::Toggle));
        }
        if ui
            .button("Next frame")
            .on_hover_text("One frame on (Right arrow key)")
            .clicked()
        {
            p.push(UiCommand::Player(PlayerAction::Step(1)));
        }
        let mut frame = p.app.player.frame();
        let r = ui.add_enabled(
            n > 1,
            egui::Slider::new(&mut frame, 0..=n - 1)
                .text("Frame")
                .clamping(egui::SliderClamping::Always),
        );
        if r.changed() {
            p.push(UiCommand::Player(PlayerAction::GoTo(frame)));
        }
        ui.label(format!("of {n}"));
        ui.checkbox(&mut p.settings.loop_playback, "Loop");
        ui.add(
            egui::Slider::new(&mut p.settings.fps, 1.0..=30.0)
                .step_by(1.0)
                .text("Frame rate (fps)"),
        );
    });
}

/// Height of the per-frame PSNR strip.
const STRIP_H: f32 = 46.0;

/// The per-frame PSNR strip: a bar per frame (taller: closer to the left side), the worst
/// frame in orange, the frame on screen outlined; a click goes to that frame.
pub(in crate::app) fn psnr_strip(p: &mut Panel<'_>, ui: &mut egui::Ui, v: &VideoQuality) {
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
    let current = p.app.player.frame();
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
        p.push(UiCommand::Player(PlayerAction::GoTo(i)));
    }
}
