//! The central panel: both images (side by side, difference, blink or wipe) with their
//! progress and numbers, the quality metrics, and the per-step plots.

use super::super::compose::{key_numbers, palette};
use super::super::protocol::Side;
use super::super::state::{SideStatus, SideView, ViewMode};
use super::super::{GuiApp, egui};
use super::{Slot, color};
use egui::{Color32, Rect, RichText, Sense, pos2, vec2};
use std::sync::Arc;

pub(in crate::app) fn results(app: &mut GuiApp, ui: &mut egui::Ui) {
    let ctx = ui.ctx().clone();
    ui.horizontal(|ui| {
        ui.label("View:");
        for m in ViewMode::ALL {
            ui.selectable_value(&mut app.settings.view, m, m.label());
        }
        match app.settings.view {
            ViewMode::Difference => {
                ui.add(
                    egui::Slider::new(&mut app.settings.diff_gain, 1.0..=64.0)
                        .logarithmic(true)
                        .text("gain"),
                );
            }
            ViewMode::Wipe => {
                ui.add(egui::Slider::new(&mut app.wipe, 0.0..=1.0).text("split"));
            }
            _ => {}
        }
    });

    let total_h = ui.available_height();
    let image_area_h = (total_h * 0.52).clamp(220.0, 900.0);
    let width = ui.available_width();

    // Textures follow the session's image versions.
    let s = &app.session;
    let tb = app
        .textures
        .baseline
        .sync(
            &ctx,
            "baseline",
            s.baseline.image.as_ref(),
            s.baseline.image_version,
            s.baseline.status == SideStatus::Running,
        )
        .cloned();
    let ta = app
        .textures
        .adaptive
        .sync(
            &ctx,
            "adaptive",
            s.adaptive.image.as_ref(),
            s.adaptive.image_version,
            s.adaptive.status == SideStatus::Running,
        )
        .cloned();
    let gain = app.settings.diff_gain;
    let diff_img = (app.settings.view == ViewMode::Difference)
        .then(|| {
            s.comparison
                .as_ref()
                .map(|c| Arc::new(amplify(&c.diff, gain)))
        })
        .flatten();
    let diff_version = s.comparison_version.wrapping_mul(1 << 20) ^ gain.to_bits() as u64;
    let td = if app.settings.view == ViewMode::Difference {
        sync_diff(
            &mut app.textures.diff,
            &ctx,
            diff_img.as_ref(),
            diff_version,
        )
    } else {
        None
    };

    let s = &app.session;
    let img_side = (image_area_h - 110.0).min(width / 2.0 - 24.0).max(64.0);
    match app.settings.view {
        ViewMode::SideBySide => {
            ui.columns(2, |cols| {
                side_card(
                    &mut cols[0],
                    Side::Baseline,
                    &s.baseline,
                    tb.as_ref(),
                    img_side,
                    s,
                );
                side_card(
                    &mut cols[1],
                    Side::Adaptive,
                    &s.adaptive,
                    ta.as_ref(),
                    img_side,
                    s,
                );
            });
        }
        mode => {
            let big = (image_area_h - 60.0).min(width - 40.0).max(64.0);
            ui.columns(2, |cols| {
                let ui = &mut cols[0];
                let (rect, _) = ui
                    .allocate_exact_size(vec2(big.min(ui.available_width()), big), Sense::hover());
                ui.painter().rect_filled(rect, 4.0, Color32::from_gray(28));
                match mode {
                    ViewMode::Difference => match &td {
                        Some(t) => paint_fit(ui, t, rect, None),
                        None => {
                            ui.painter().text(
                                rect.center(),
                                egui::Align2::CENTER_CENTER,
                                "The difference appears once both sides are done",
                                egui::FontId::proportional(16.0),
                                Color32::GRAY,
                            );
                        }
                    },
                    ViewMode::Blink => {
                        let t = ctx.input(|i| i.time);
                        let show_adaptive = (t / 0.8) as i64 % 2 == 1;
                        let (tex, label) = if show_adaptive {
                            (ta.as_ref(), "adaptive")
                        } else {
                            (tb.as_ref(), "baseline")
                        };
                        if let Some(t) = tex {
                            paint_fit(ui, t, rect, None);
                        }
                        ui.painter().text(
                            rect.left_top() + vec2(8.0, 8.0),
                            egui::Align2::LEFT_TOP,
                            label,
                            egui::FontId::proportional(20.0),
                            Color32::WHITE,
                        );
                        ctx.request_repaint_after(std::time::Duration::from_millis(100));
                    }
                    ViewMode::Wipe => {
                        if let Some(t) = tb.as_ref() {
                            paint_fit(ui, t, rect, None);
                        }
                        if let Some(t) = ta.as_ref() {
                            paint_fit(ui, t, rect, Some(app.wipe));
                        }
                        let x = rect.left() + rect.width() * app.wipe;
                        ui.painter().line_segment(
                            [pos2(x, rect.top()), pos2(x, rect.bottom())],
                            egui::Stroke::new(2.0, Color32::WHITE),
                        );
                    }
                    ViewMode::SideBySide => {}
                }
                let ui = &mut cols[1];
                side_numbers(ui, Side::Baseline, &s.baseline, s);
                ui.add_space(8.0);
                side_numbers(ui, Side::Adaptive, &s.adaptive, s);
            });
        }
    }

    ui.add_space(4.0);
    metrics_row(app, ui);
    ui.separator();
    super::plots::plots(app, ui);
}

fn sync_diff(
    slot: &mut Slot,
    ctx: &egui::Context,
    img: Option<&Arc<image::RgbImage>>,
    version: u64,
) -> Option<egui::TextureHandle> {
    slot.sync(ctx, "difference", img, version, false).cloned()
}

fn amplify(diff: &image::RgbImage, gain: f32) -> image::RgbImage {
    let mut out = diff.clone();
    for v in out.iter_mut() {
        *v = (*v as f32 * gain).min(255.0) as u8;
    }
    out
}

/// Paint `tex` fitted into `rect`; with `from = Some(f)`, only the part right of `f`.
fn paint_fit(ui: &egui::Ui, tex: &egui::TextureHandle, rect: Rect, from: Option<f32>) {
    let size = tex.size_vec2();
    let scale = (rect.width() / size.x).min(rect.height() / size.y);
    let shown = Rect::from_center_size(rect.center(), size * scale);
    let (dst, uv) = match from {
        None => (shown, Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0))),
        Some(f) => {
            let x = rect.left() + rect.width() * f;
            let u = ((x - shown.left()) / shown.width()).clamp(0.0, 1.0);
            (
                Rect::from_min_max(
                    pos2(shown.left() + u * shown.width(), shown.top()),
                    shown.max,
                ),
                Rect::from_min_max(pos2(u, 0.0), pos2(1.0, 1.0)),
            )
        }
    };
    ui.painter().image(tex.id(), dst, uv, Color32::WHITE);
}

fn title(side: Side, s: &super::super::state::Session) -> (String, Color32) {
    match side {
        Side::Baseline => {
            let t = match &s.spec {
                Some(spec) if spec.reference != crate::sampler::Method::Baseline => format!(
                    "{}: {}",
                    super::super::compose::method_title(&spec.reference),
                    super::super::compose::method_settings(&spec.reference)
                ),
                _ => "Baseline: every step".into(),
            };
            (t, color(palette::BASELINE))
        }
        Side::Adaptive => {
            let t = match &s.spec {
                Some(spec) => format!(
                    "{}: {}",
                    super::super::compose::method_title(&spec.method),
                    super::super::compose::method_settings(&spec.method)
                ),
                None => "Adaptive".into(),
            };
            (t, color(palette::ADAPTIVE))
        }
    }
}

fn side_card(
    ui: &mut egui::Ui,
    side: Side,
    v: &SideView,
    tex: Option<&egui::TextureHandle>,
    img_side: f32,
    s: &super::super::state::Session,
) {
    let (t, c) = title(side, s);
    ui.label(RichText::new(t).size(20.0).color(c).strong());
    let w = img_side.min(ui.available_width());
    let (rect, _) = ui.allocate_exact_size(vec2(w, w), Sense::hover());
    ui.painter().rect_filled(rect, 4.0, Color32::from_gray(28));
    match tex {
        Some(t) => paint_fit(ui, t, rect, None),
        None => {
            let msg = match v.status {
                SideStatus::Waiting => "waiting…",
                SideStatus::Idle => "press Generate",
                _ => "",
            };
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                msg,
                egui::FontId::proportional(16.0),
                Color32::GRAY,
            );
        }
    }
    if v.status == SideStatus::Running {
        let galley = ui.painter().layout_no_wrap(
            "live preview (latent projection)".into(),
            egui::FontId::proportional(13.0),
            Color32::WHITE,
        );
        let pos = rect.left_top() + vec2(6.0, 6.0);
        ui.painter().rect_filled(
            Rect::from_min_size(pos, galley.size()).expand(3.0),
            3.0,
            Color32::from_black_alpha(180),
        );
        ui.painter().galley(pos, galley, Color32::WHITE);
    }
    side_numbers(ui, side, v, s);
}

fn side_numbers(ui: &mut egui::Ui, side: Side, v: &SideView, s: &super::super::state::Session) {
    let budget = v.budget.max(s.spec.as_ref().map(|x| x.steps).unwrap_or(0));
    let status = match v.status {
        SideStatus::Idle => "idle",
        SideStatus::Waiting => "waiting",
        SideStatus::Running => "running",
        SideStatus::Done if v.from_cache => "done (cached baseline)",
        SideStatus::Done => "done",
        SideStatus::Cancelled => "cancelled",
        SideStatus::Failed => "failed",
    };
    let (_, c) = title(side, s);
    ui.add(
        egui::ProgressBar::new(v.progress())
            .fill(c.gamma_multiply(0.7))
            .text(format!("{} / {} steps · {status}", v.steps.len(), budget)),
    );
    if v.status == SideStatus::Running
        && let Some(note) = s.estimate().and_then(|e| e.long_run_note())
    {
        ui.colored_label(ui.visuals().warn_fg_color, format!("Long run: {note}"));
    }
    let calls = v.calls();
    let mut line = format!(
        "{} of {} steps called the noise predictor · {:.0} ms",
        calls,
        v.steps.len(),
        v.elapsed_ms()
    );
    if let Some(r) = &v.result {
        line.push_str(&format!(" (+{:.0} ms decode)", r.decode_ms));
        if let Some(at) = r.trace.stopped_early_at {
            line.push_str(&format!(" · stopped early after step {at}"));
        }
    }
    ui.label(line);
    if side == Side::Adaptive
        && let (Some(b), Some(a)) = (&s.baseline.result, &v.result)
    {
        let nfe = b.trace.unet_calls as f64 / a.trace.unet_calls.max(1) as f64;
        let wall = b.trace.elapsed_ms / a.trace.elapsed_ms.max(1e-9);
        ui.label(
            RichText::new(format!(
                "Speedup: {nfe:.2}× fewer predictor calls, {wall:.2}× wall time"
            ))
            .strong()
            .color(color(palette::ADAPTIVE)),
        );
    }
}

fn metrics_row(app: &mut GuiApp, ui: &mut egui::Ui) {
    let s = &app.session;
    ui.horizontal_wrapped(
        |ui| match (&s.baseline.result, &s.adaptive.result, &s.comparison) {
            (Some(b), Some(a), Some(c)) => {
                let ssim = c.ssim;
                ui.label(
                    RichText::new(format!(
                        "Adaptive vs baseline: {}",
                        key_numbers(b, a, Some(c.psnr_db), ssim)
                    ))
                    .size(17.0)
                    .strong(),
                );
                if ssim.is_none() {
                    ui.label(RichText::new("(SSIM needs images of at least 11×11 pixels)").weak());
                }
            }
            _ => {
                ui.label(RichText::new("PSNR / SSIM appear once both sides are done.").weak());
            }
        },
    );
}
