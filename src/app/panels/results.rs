//! The central panel: both images (side by side, difference, blink or wipe) with their
//! progress and numbers, the quality metrics, and the per-step plots.

use super::super::commands::UiCommand;
use super::super::compose::{key_numbers, method_settings, palette, speed_words};
use super::super::egui;
use super::super::names::SideNames;
use super::super::protocol::{Comparison, Side, SideResult};
use super::super::settings::Settings;
use super::super::settings::ViewMode;
use super::super::state::{ReferenceView, Session, SideStatus, SideView};
use super::{Panel, Slot, View, color};
use crate::sampler::Method;
use egui::{Color32, Rect, RichText, Sense, pos2, vec2};
use std::sync::Arc;

pub(in crate::app) fn results(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    let ctx = ui.ctx().clone();
    // A clip plays in both players at one frame.
    super::player::keys(p, ui);
    let frame = p.app.player.frame();
    // The wipe view's divider: drawn where it is dragged to, kept by the app.
    let mut wipe = p.app.wipe;
    ui.horizontal(|ui| {
        ui.label("View:");
        for m in ViewMode::ALL {
            ui.selectable_value(&mut p.settings.view, m, m.label());
        }
        match p.settings.view {
            ViewMode::Difference => {
                ui.add(
                    egui::Slider::new(&mut p.settings.diff_gain, 1.0..=64.0)
                        .logarithmic(true)
                        .text("gain"),
                );
            }
            ViewMode::Wipe => {
                ui.add(egui::Slider::new(&mut wipe, 0.0..=1.0).text("split"));
            }
            _ => {}
        }
    });

    let total_h = ui.available_height();
    let image_area_h = (total_h * 0.52).clamp(220.0, 900.0);
    let width = ui.available_width();

    // Textures follow the session's image versions (and a clip's frame on screen).
    let s = p.app.session;
    let tb = p
        .textures
        .baseline
        .sync(
            &ctx,
            "baseline",
            shown(&s.baseline, frame),
            shown_version(&s.baseline, frame),
            s.baseline.status == SideStatus::Running,
        )
        .cloned();
    let ta = p
        .textures
        .adaptive
        .sync(
            &ctx,
            "adaptive",
            shown(&s.adaptive, frame),
            shown_version(&s.adaptive, frame),
            s.adaptive.status == SideStatus::Running,
        )
        .cloned();
    let gain = p.settings.diff_gain;
    let diff_img = (p.settings.view == ViewMode::Difference)
        .then(|| {
            s.comparison.as_ref().map(|c| {
                // A clip's difference is the frame on screen's.
                let d = c.frame_diffs.get(frame).unwrap_or(&c.diff);
                Arc::new(amplify(d, gain))
            })
        })
        .flatten();
    let diff_version = (s.comparison_version.wrapping_mul(1 << 20) ^ gain.to_bits() as u64)
        .wrapping_mul(4096)
        .wrapping_add(frame as u64);
    let td = if p.settings.view == ViewMode::Difference {
        sync_diff(&mut p.textures.diff, &ctx, diff_img.as_ref(), diff_version)
    } else {
        None
    };

    let sides = Sides::of(s, p.settings);
    let n = s.clip_len();
    // The frame both players show, under each of them.
    let clip = (n > 0).then(|| format!("Frame {} (0–{})", frame.min(n - 1), n - 1));
    let img_side = (image_area_h - 110.0).min(width / 2.0 - 24.0).max(64.0);
    match p.settings.view {
        ViewMode::SideBySide => {
            ui.columns(2, |cols| {
                side_card(
                    &mut cols[0],
                    Side::Baseline,
                    tb.as_ref(),
                    img_side,
                    s,
                    &sides,
                    clip.as_deref(),
                );
                side_card(
                    &mut cols[1],
                    Side::Adaptive,
                    ta.as_ref(),
                    img_side,
                    s,
                    &sides,
                    clip.as_deref(),
                );
            });
        }
        mode => {
            let big = (image_area_h - 60.0).min(width - 40.0).max(64.0);
            ui.columns(2, |cols| {
                let ui = &mut cols[0];
                let sense = if mode == ViewMode::Wipe {
                    Sense::click_and_drag()
                } else {
                    Sense::hover()
                };
                let (rect, response) =
                    ui.allocate_exact_size(vec2(big.min(ui.available_width()), big), sense);
                ui.painter().rect_filled(rect, 4.0, Color32::from_gray(28));
                match mode {
                    ViewMode::Difference => match &td {
                        Some(t) => {
                            paint_fit(ui, t, rect, None);
                            difference_key(ui, rect, &sides, gain);
                        }
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
                            (ta.as_ref(), sides.names.right.as_str())
                        } else {
                            (tb.as_ref(), sides.names.left.as_str())
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
                        // Drag (or click) on the image to move the divider.
                        let response = response.accessible_name("Wipe image");
                        if (response.dragged() || response.clicked())
                            && let Some(p) = response.interact_pointer_pos()
                        {
                            wipe = ((p.x - rect.left()) / rect.width()).clamp(0.0, 1.0);
                        }
                        if let Some(t) = tb.as_ref() {
                            paint_fit(ui, t, rect, None);
                        }
                        if let Some(t) = ta.as_ref() {
                            paint_fit(ui, t, rect, Some(wipe));
                        }
                        // The divider stays on the image.
                        let painter = ui.painter_at(rect);
                        let x = rect.left() + rect.width() * wipe;
                        painter.line_segment(
                            [pos2(x, rect.top()), pos2(x, rect.bottom())],
                            egui::Stroke::new(2.0, Color32::WHITE),
                        );
                        corner_label(
                            &painter,
                            rect,
                            egui::Align2::LEFT_TOP,
                            &format!("left: {}", sides.names.left),
                        );
                        corner_label(
                            &painter,
                            rect,
                            egui::Align2::RIGHT_TOP,
                            &format!("right: {}", sides.names.right),
                        );
                        if response.hovered() || response.dragged() {
                            ctx.set_cursor_icon(egui::CursorIcon::ResizeHorizontal);
                        }
                        ui.label(
                            RichText::new(format!(
                                "left: {} | right: {} · drag on the image to move the divider",
                                sides.names.left, sides.names.right
                            ))
                            .small()
                            .weak(),
                        );
                    }
                    ViewMode::SideBySide => {}
                }
                if let Some(c) = &clip {
                    ui.label(c);
                }
                let ui = &mut cols[1];
                side_numbers(ui, Side::Baseline, &s.baseline, s, &sides);
                ui.add_space(8.0);
                side_numbers(ui, Side::Adaptive, &s.adaptive, s, &sides);
            });
        }
    }

    if wipe != p.app.wipe {
        p.push(UiCommand::Wipe(wipe));
    }
    if s.clip_len() > 0 {
        super::player::transport(p, ui);
        if let Some(v) = s.comparison.as_ref().and_then(|c| c.video.clone()) {
            super::player::psnr_strip(p, ui, &v);
        }
    }
    ui.add_space(4.0);
    metrics_row(&p.app, ui, &sides);
    ui.separator();
    super::plots::plots(&p.app, p.settings, ui);
}

/// A label on a dark backing in a corner of `rect`.
fn corner_label(painter: &egui::Painter, rect: Rect, corner: egui::Align2, text: &str) {
    let galley = painter.layout_no_wrap(
        text.to_string(),
        egui::FontId::proportional(15.0),
        Color32::WHITE,
    );
    let inner = rect.shrink(8.0);
    let pos = corner.align_size_within_rect(galley.size(), inner).min;
    painter.rect_filled(
        Rect::from_min_size(pos, galley.size()).expand(3.0),
        3.0,
        Color32::from_black_alpha(180),
    );
    painter.galley(pos, galley, Color32::WHITE);
}

/// The difference view's caption and colour scale, under the image.
fn difference_key(ui: &mut egui::Ui, rect: Rect, sides: &Sides, gain: f32) {
    let painter = ui.painter_at(rect);
    corner_label(
        &painter,
        rect,
        egui::Align2::LEFT_TOP,
        &format!(
            "|{} − {}| per pixel and channel, × {gain:.1}",
            sides.names.right, sides.names.left
        ),
    );
    // A black-to-white bar: black = identical, white = a difference of 255 / gain or more.
    let bar = Rect::from_min_size(
        rect.left_bottom() + vec2(12.0, -30.0),
        vec2((rect.width() * 0.6).max(120.0), 10.0),
    );
    let mut mesh = egui::Mesh::default();
    mesh.colored_vertex(bar.left_top(), Color32::BLACK);
    mesh.colored_vertex(bar.right_top(), Color32::WHITE);
    mesh.colored_vertex(bar.right_bottom(), Color32::WHITE);
    mesh.colored_vertex(bar.left_bottom(), Color32::BLACK);
    mesh.add_triangle(0, 1, 2);
    mesh.add_triangle(0, 2, 3);
    painter.rect_filled(bar.expand(2.0), 2.0, Color32::from_gray(90));
    painter.add(egui::Shape::mesh(mesh));
    let font = egui::FontId::proportional(12.0);
    painter.text(
        bar.left_bottom() + vec2(0.0, 3.0),
        egui::Align2::LEFT_TOP,
        "0",
        font.clone(),
        Color32::WHITE,
    );
    painter.text(
        bar.right_bottom() + vec2(0.0, 3.0),
        egui::Align2::RIGHT_TOP,
        format!("{:.0}+ of 255", 255.0 / gain),
        font,
        Color32::WHITE,
    );
    // The same words for screen readers and tests.
    ui.label(
        RichText::new(format!(
            "Difference: |{} − {}| × {gain:.1}; black = same, white = {:.0} of 255 or more",
            sides.names.right,
            sides.names.left,
            255.0 / gain
        ))
        .small()
        .weak(),
    );
}

fn sync_diff(
    slot: &mut Slot,
    ctx: &egui::Context,
    img: Option<&Arc<image::RgbImage>>,
    version: u64,
) -> Option<egui::TextureHandle> {
    slot.sync(ctx, "difference", img.map(|i| &**i), version, false)
        .cloned()
}

/// What a side shows: a clip's frame `frame` (its last, should the clip be shorter), else
/// its image.
fn shown(v: &SideView, frame: usize) -> Option<&image::RgbImage> {
    match &v.frames {
        Some(f) if !f.is_empty() => f.get(frame.min(f.len() - 1)),
        _ => v.image.as_deref(),
    }
}

/// The version of what [`shown`] returns: the side's image version and the frame.
fn shown_version(v: &SideView, frame: usize) -> u64 {
    let frame = if v.frames.is_some() { frame as u64 } else { 0 };
    v.image_version.wrapping_mul(4096).wrapping_add(frame)
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

/// What the results view needs to name each side: the names and the methods of the job on
/// screen (or, before the first run, of the settings).
pub(super) struct Sides {
    pub names: SideNames,
    pub left: Method,
    pub right: Method,
}

impl Sides {
    pub(super) fn of(session: &Session, settings: &Settings) -> Self {
        let (left, right) = match &session.spec {
            Some(spec) => (spec.reference, spec.method),
            None => (settings.left_method(), settings.right_method()),
        };
        Self {
            names: SideNames::new(&left, &right),
            left,
            right,
        }
    }

    /// A side's title (`DeepCache: interval 3 · branch 0`, `Baseline: every step`) and colour.
    fn title(&self, side: Side) -> (String, Color32) {
        let (method, c) = match side {
            Side::Baseline => (&self.left, palette::BASELINE),
            Side::Adaptive => (&self.right, palette::ADAPTIVE),
        };
        let settings = match method_settings(method) {
            m if m.is_empty() => "every step".to_string(),
            m => m,
        };
        (format!("{}: {settings}", self.names.of(side)), color(c))
    }
}

fn side_card(
    ui: &mut egui::Ui,
    side: Side,
    tex: Option<&egui::TextureHandle>,
    img_side: f32,
    s: &Session,
    sides: &Sides,
    clip: Option<&str>,
) {
    let v = s.side(side);
    let (t, c) = sides.title(side);
    // One line, cut with "…" when the column is narrow (the full title on hover), so that
    // both images start at the same height.
    ui.add(egui::Label::new(RichText::new(&t).size(20.0).color(c).strong()).truncate())
        .on_hover_text(&t);
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
    if let Some(c) = clip {
        ui.label(c);
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
    side_numbers(ui, side, v, s, sides);
}

/// The steps a side runs: its own budget once it started, else what the job gives it.
fn side_steps(side: Side, v: &SideView, s: &Session) -> Option<usize> {
    if v.budget > 0 {
        return Some(v.budget);
    }
    let spec = s.spec.as_ref()?;
    Some(match side {
        Side::Baseline => spec.baseline_pass().steps,
        Side::Adaptive => spec.method_pass(s.budget.as_ref()).steps,
    })
}

/// How long ago, in words: `12 s`, `3 min`.
fn age(since: std::time::Instant) -> String {
    let secs = since.elapsed().as_secs();
    if secs < 90 {
        format!("{secs} s")
    } else {
        format!("{} min", (secs + 30) / 60)
    }
}

fn side_numbers(ui: &mut egui::Ui, side: Side, v: &SideView, s: &Session, sides: &Sides) {
    let status = match v.status {
        SideStatus::Idle => "idle".to_string(),
        SideStatus::Waiting => "waiting".into(),
        SideStatus::Running => "running".into(),
        SideStatus::Done if v.from_cache => match &v.result {
            Some(r) => format!("done · reused from a run {} ago", age(r.computed_at)),
            None => "done · reused from an earlier run".into(),
        },
        SideStatus::Done => "done".into(),
        SideStatus::Cancelled => "cancelled".into(),
        SideStatus::Failed => "failed".into(),
    };
    let (_, c) = sides.title(side);
    let text = match side_steps(side, v, s) {
        None => "not run yet".to_string(),
        Some(n) => format!("{} / {n} steps · {status}", v.steps.len()),
    };
    ui.add(
        egui::ProgressBar::new(v.progress())
            .fill(c.gamma_multiply(0.7))
            .text(text),
    );
    if v.status == SideStatus::Running
        && let Some(note) = s.estimate().and_then(|e| e.long_run_note())
    {
        ui.colored_label(ui.visuals().warn_fg_color, format!("Long run: {note}"));
    }
    if v.status == SideStatus::Idle && v.steps.is_empty() {
        return;
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
        ui.label(
            RichText::new(format!(
                "Against {}: {}",
                sides.names.left,
                speed_words(b, a)
            ))
            .strong()
            .color(color(palette::ADAPTIVE)),
        );
        // Times taken far apart (one side reused from an earlier run) compare less well:
        // say so.
        if let Some(note) = timing_gap(b, a) {
            ui.colored_label(ui.visuals().warn_fg_color, note);
        }
    }
}

/// How far apart the two sides were timed, when more than 30 s: the loop times compare
/// less well (machine load, clocks and caches change). The time between the two runs
/// counts, not between their ends: one side running right after the other, however long
/// it takes (a clip, a large model on the CPU), was timed together with it.
pub(in crate::app) fn timing_gap(
    left: &super::super::protocol::SideResult,
    right: &super::super::protocol::SideResult,
) -> Option<String> {
    use std::time::Duration;
    // A run's span: from its start (its end less its loop and decode times) to its end.
    let span = |r: &super::super::protocol::SideResult| {
        let took = Duration::from_secs_f64(((r.trace.elapsed_ms + r.decode_ms) / 1e3).max(0.0));
        (
            r.computed_at.checked_sub(took).unwrap_or(r.computed_at),
            r.computed_at,
        )
    };
    let ((ls, le), (rs, re)) = (span(left), span(right));
    let gap = if le <= rs {
        rs - le
    } else if re <= ls {
        ls - re
    } else {
        Duration::ZERO
    };
    (gap.as_secs() >= 30).then(|| {
        let older = if le < re { "left" } else { "right" };
        let secs = gap.as_secs();
        let words = if secs < 90 {
            format!("{secs} s")
        } else {
            format!("{} min", (secs + 30) / 60)
        };
        format!("Timed {words} apart (the {older} side was reused from an earlier run): loop times compare less well")
    })
}

fn metrics_row(app: &View<'_>, ui: &mut egui::Ui, sides: &Sides) {
    let s = &app.session;
    ui.horizontal_wrapped(
        |ui| match (&s.baseline.result, &s.adaptive.result, &s.comparison) {
            (Some(b), Some(a), Some(c)) => {
                let ssim = c.ssim;
                ui.label(
                    RichText::new(format!(
                        "{}: {}",
                        sides.names.versus(),
                        key_numbers(b, a, Some(c.psnr_db), ssim)
                    ))
                    .size(17.0)
                    .strong(),
                );
                if ssim.is_none() {
                    ui.label(RichText::new("(SSIM needs images of at least 11×11 pixels)").weak());
                }
                if let Some(line) = reference_line(s) {
                    ui.end_row();
                    ui.label(RichText::new(line).size(15.0));
                }
            }
            _ => {
                ui.label(RichText::new("PSNR / SSIM appear once both sides are done.").weak());
            }
        },
    );
}

/// Both accelerated sides against the full-step baseline (neither side is it): its progress
/// while it runs, then each side's PSNR, SSIM and calls against it.
fn reference_line(s: &Session) -> Option<String> {
    Some(match s.reference.as_ref()? {
        ReferenceView::Running(done, steps) => format!(
            "Against the full-step baseline: running it ({done} of {steps} steps) to measure both sides…"
        ),
        ReferenceView::Done(r) => {
            let side = |name: &str, c: &Comparison, run: &SideResult| {
                let psnr = if c.psnr_db.is_finite() {
                    format!("PSNR {:.2} dB", c.psnr_db)
                } else {
                    "identical".into()
                };
                let ssim = c
                    .ssim
                    .map(|v| format!(" · SSIM {v:.4}"))
                    .unwrap_or_default();
                format!(
                    "{name} {psnr}{ssim}, {} of {} calls",
                    run.trace.unet_calls, r.reference.trace.unet_calls
                )
            };
            let (b, a) = s.results()?;
            format!(
                "Against the full-step baseline ({} steps): {}; {}",
                r.reference.trace.budget,
                side("left", &r.left, &b),
                side("right", &r.right, &a)
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::protocol::{Side, SideResult};
    use super::timing_gap;
    use crate::sampler::{Method, RunTrace};
    use std::time::{Duration, Instant};

    fn run(end: Instant, loop_ms: f64) -> SideResult {
        SideResult {
            side: Side::Baseline,
            image: image::RgbImage::new(1, 1),
            frames: Default::default(),
            trace: RunTrace {
                method: Method::BASELINE,
                scheduler: "ddim".into(),
                budget: 1,
                guidance: 7.5,
                early_stop: None,
                stopped_early_at: None,
                unet_calls: 1,
                unet_macs: None,
                unet_cost: None,
                steps_run: 1,
                elapsed_ms: loop_ms,
                steps: vec![],
            },
            decode_ms: 500.0,
            model: "m".into(),
            computed_at: end,
        }
    }

    #[test]
    fn only_the_time_between_the_runs_counts() {
        let t0 = Instant::now() + Duration::from_secs(1000);
        // A right side that ran for 45 s right after the left side: timed together.
        let left = run(t0, 20_000.0);
        let right = run(t0 + Duration::from_secs_f64(45.6), 45_000.0);
        assert_eq!(timing_gap(&left, &right), None);
        // The left side from a run two minutes before the right side started.
        let right = run(t0 + Duration::from_secs(130), 10_000.0);
        let note = timing_gap(&left, &right).unwrap();
        assert!(
            note.starts_with("Timed 2 min apart (the left side was reused"),
            "{note}"
        );
        // The right side reused, the left side (20.5 s with its decode) started 40 s after
        // it ended.
        let right = run(t0 - Duration::from_secs_f64(60.5), 1_000.0);
        let note = timing_gap(&left, &right).unwrap();
        assert!(
            note.starts_with("Timed 40 s apart (the right side"),
            "{note}"
        );
    }
}
