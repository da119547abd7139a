//! Per-step plots on a shared x axis, the position in the schedule (step k of n sits at
//! (k + 1) / n, so runs of different step counts line up): the latent change d_k of both
//! sides, the right side's decision test against its threshold with the decision markers,
//! and the noise-predictor time per step. Each plot's legend is a row above it, never over
//! the data. Hovering shows the nearest step's numbers.

use super::super::compose::{decision_color, palette, test_points};
use super::super::egui;
use super::super::settings::Settings;
use super::results::Sides;
use super::{View, color};
use crate::sampler::{Decision, StepRecord};
use egui::{Color32, RichText};
use egui_plot::{
    GridInput, GridMark, HoverPosition, Line, LineStyle, MarkerShape, Plot, PlotPoints, Points,
    Span,
};
use std::ops::RangeInclusive;

/// Where step `index` of a run of `n` steps sits in the schedule: (index + 1) / n.
pub(in crate::app) fn position(index: usize, n: usize) -> f64 {
    (index + 1) as f64 / n.max(1) as f64
}

/// The step of a run of `n` steps nearest to schedule position `x`.
fn step_at(x: f64, n: usize) -> usize {
    ((x * n as f64).round() as i64 - 1).clamp(0, n.saturating_sub(1) as i64) as usize
}

/// `10^value` at 1, 2 or 5 × a power of ten (the marks of [`log_marks`]) as typed: `0.02`,
/// `0.5`, `200`, `5e-6`. Each mark gets a distinct label.
pub(in crate::app) fn log_label(value: f64) -> String {
    let exp = value.floor();
    let mantissa = 10f64.powf(value - exp).round();
    let (mantissa, exp) = if mantissa >= 10.0 {
        (1.0, exp + 1.0)
    } else {
        (mantissa, exp)
    };
    if (-3.0..4.0).contains(&exp) {
        let decimals = (-exp).max(0.0) as usize;
        format!("{:.*}", decimals, mantissa * 10f64.powf(exp))
    } else {
        format!("{mantissa:.0}e{exp:.0}")
    }
}

fn log_axis(mark: GridMark, _range: &RangeInclusive<f64>) -> String {
    log_label(mark.value)
}

/// Grid marks of a log10 axis: whole decades (every 1, 2, 5… decades, whichever leaves room
/// for a label), plus 2× and 5× within a decade when there is room.
pub(in crate::app) fn log_marks(input: GridInput) -> Vec<GridMark> {
    let (lo, hi) = input.bounds;
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo || input.base_step_size <= 0.0 {
        return vec![];
    }
    // egui_plot draws a label only where marks are more than ~20 points apart; the base
    // step is about 8 points.
    let min_step = input.base_step_size * 3.0;
    let decade_step = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        .into_iter()
        .find(|d| *d >= min_step)
        .unwrap_or(100.0);
    let mut marks = vec![];
    let mut k = (lo / decade_step).floor() * decade_step;
    while k <= hi {
        if k >= lo {
            marks.push(GridMark {
                value: k,
                step_size: decade_step,
            });
        }
        k += decade_step;
    }
    if decade_step == 1.0 && min_step <= 0.3 {
        for d in (lo.floor() as i64)..=(hi.ceil() as i64) {
            for m in [2.0f64, 5.0] {
                let v = d as f64 + m.log10();
                if (lo..=hi).contains(&v) {
                    marks.push(GridMark {
                        value: v,
                        step_size: 0.3,
                    });
                }
            }
        }
    }
    marks
}

/// The y range of a log plot: whole decades around the data (so that the axis always has
/// numbers), 10⁻³…1 while there is no data.
fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !(lo.is_finite() && hi.is_finite()) {
        return (-3.0, 0.0);
    }
    let (lo, hi) = (lo.floor(), hi.ceil());
    if hi > lo { (lo, hi) } else { (lo, lo + 1.0) }
}

/// A plot on the shared schedule axis (0…1, linked cursor) of height `h`.
fn schedule_plot(id: &str, h: f32, group: egui::Id) -> Plot<'static> {
    Plot::new(id)
        .height(h)
        .link_axis(group, [true, false])
        .link_cursor(group, [true, false])
        .include_x(0.0)
        .include_x(1.0)
        .x_axis_formatter(|mark, _| format!("{:.0} %", mark.value * 100.0))
}

/// A plot of log10 values over whole decades `range`, labelled `label`, without its own x
/// labels (the bottom plot has them).
fn log_plot(id: &str, h: f32, group: egui::Id, label: &str, range: (f64, f64)) -> Plot<'static> {
    schedule_plot(id, h, group)
        .y_axis_formatter(log_axis)
        .y_grid_spacer(log_marks)
        .y_axis_label(label.to_string())
        .include_y(range.0)
        .include_y(range.1)
        .show_x(false)
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Swatch {
    Line(Color32),
    Dashed(Color32),
    Dot(Color32),
    Diamond(Color32),
    Band(Color32),
}

/// A plot's legend as a row of entries above it.
fn legend(ui: &mut egui::Ui, entries: &[(String, Swatch)]) {
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing.x = 4.0;
        for (name, swatch) in entries {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(18.0, 12.0), egui::Sense::hover());
            let p = ui.painter();
            let c = rect.center();
            match *swatch {
                Swatch::Line(col) => {
                    p.line_segment(
                        [rect.left_center(), rect.right_center()],
                        egui::Stroke::new(2.0, col),
                    );
                }
                Swatch::Dashed(col) => {
                    for i in 0..3 {
                        let x = rect.left() + i as f32 * 7.0;
                        p.line_segment(
                            [egui::pos2(x, c.y), egui::pos2(x + 4.0, c.y)],
                            egui::Stroke::new(2.0, col),
                        );
                    }
                }
                Swatch::Dot(col) => {
                    p.circle_filled(c, 4.0, col);
                }
                Swatch::Diamond(col) => {
                    let r = 4.5;
                    p.add(egui::Shape::convex_polygon(
                        vec![
                            c + egui::vec2(0.0, -r),
                            c + egui::vec2(r, 0.0),
                            c + egui::vec2(0.0, r),
                            c + egui::vec2(-r, 0.0),
                        ],
                        col,
                        egui::Stroke::NONE,
                    ));
                }
                Swatch::Band(col) => {
                    p.rect_filled(rect, 2.0, col);
                }
            }
            ui.label(RichText::new(name).small());
            ui.add_space(8.0);
        }
    });
}

/// The numbers of the steps nearest to schedule position `x` as a hover text.
fn describe(
    x: f64,
    names: &super::super::names::SideNames,
    runs: [(&[StepRecord], usize); 2],
) -> String {
    let [(base, nb), (adapt, na)] = runs;
    let mut s = format!("{:.0} % of the schedule", x * 100.0);
    if na > 0 {
        let k = step_at(x, na);
        if let Some(r) = adapt.get(k) {
            s.push_str(&format!(
                "\n{} step {} of {na}: {}",
                names.right,
                k + 1,
                format!("{:?}", r.decision).to_lowercase()
            ));
            if let Some(d) = r.d {
                s.push_str(&format!(", d = {d:.3e}"));
            }
            s.push_str(&format!(", predictor {:.1} ms", r.predictor_ms));
            if k > 0
                && let Some(prev) = adapt.get(k - 1)
                && let (Some(t), Some(th)) = (prev.third_order, prev.threshold)
            {
                let verdict = if t <= th { "≤" } else { ">" };
                s.push_str(&format!(
                    "\ntest after step {k}: {t:.3e} {verdict} δ·d = {th:.3e}"
                ));
            }
        }
    }
    if nb > 0 {
        let k = step_at(x, nb);
        if let Some(r) = base.get(k) {
            s.push_str(&format!(
                "\n{} step {} of {nb}: predictor {:.1} ms",
                names.left,
                k + 1,
                r.predictor_ms
            ));
            if let Some(d) = r.d {
                s.push_str(&format!(", d = {d:.3e}"));
            }
        }
    }
    s
}

pub(in crate::app) fn plots(app: &View<'_>, settings: &Settings, ui: &mut egui::Ui) {
    let s = app.session;
    let sides = Sides::of(s, settings);
    let names = sides.names.clone();
    let base: Vec<StepRecord> = s.baseline.steps.clone();
    let adapt: Vec<StepRecord> = s.adaptive.steps.clone();
    // Each side's step count: its budget (the steps it plans), at least the steps seen.
    let nb = s.baseline.budget.max(base.len());
    let na = s.adaptive.budget.max(adapt.len());
    let group = egui::Id::unique("schedule_axis");
    // Three plots and their legend rows.
    let legend_h = ui.text_style_height(&egui::TextStyle::Small) + 8.0;
    let h = ((ui.available_height() - 12.0) / 3.0 - legend_h).max(90.0);
    let log = |v: f64| (v > 0.0 && v.is_finite()).then(|| v.log10());
    let (left_c, right_c) = (color(palette::BASELINE), color(palette::ADAPTIVE));

    let hover = {
        let (b, a, names) = (base.clone(), adapt.clone(), names.clone());
        move |pos: &HoverPosition<'_>| {
            let x = match pos {
                HoverPosition::NearDataPoint { position, .. } => position.x,
                HoverPosition::Elsewhere { position } => position.x,
            };
            (0.0..=1.05)
                .contains(&x)
                .then(|| describe(x, &names, [(&b, nb), (&a, na)]))
        }
    };

    // 1. d_k of both sides.
    let d_points = |steps: &[StepRecord], n: usize| -> Vec<[f64; 2]> {
        steps
            .iter()
            .filter_map(|r| Some([position(r.index, n), log(r.d?)?]))
            .collect()
    };
    let (bd, ad) = (d_points(&base, nb), d_points(&adapt, na));
    let marks: Vec<(Decision, &str, Vec<[f64; 2]>)> = [
        (Decision::Reused, "reused (skipped)"),
        (Decision::Forecast, "forecast (skipped)"),
        (Decision::Forced, "forced by C_max"),
    ]
    .into_iter()
    .map(|(d, name)| {
        let pts = adapt
            .iter()
            .filter(|r| r.decision == d)
            .filter_map(|r| Some([position(r.index, na), log(r.d?)?]))
            .collect();
        (d, name, pts)
    })
    .collect();
    let range = decades(bd.iter().chain(&ad).map(|p| p[1]));
    let mut entries = vec![
        (format!("{} d_k", names.left), Swatch::Line(left_c)),
        (format!("{} d_k", names.right), Swatch::Line(right_c)),
    ];
    for (d, name, pts) in &marks {
        if !pts.is_empty() {
            entries.push((name.to_string(), Swatch::Dot(color(decision_color(*d)))));
        }
    }
    legend(ui, &entries);
    log_plot("plot_d", h, group, "d_k (log)", range)
        .label_formatter(hover.clone())
        .show(ui, |p| {
            p.line(
                Line::new(format!("{} d_k", names.left), PlotPoints::from(bd))
                    .color(left_c)
                    .width(2.0),
            );
            p.line(
                Line::new(format!("{} d_k", names.right), PlotPoints::from(ad))
                    .color(right_c)
                    .width(2.0),
            );
            for (d, name, pts) in marks {
                p.points(
                    Points::new(name, PlotPoints::from(pts))
                        .color(color(decision_color(d)))
                        .radius(4.0)
                        .shape(MarkerShape::Circle)
                        .filled(true),
                );
            }
        });

    // 2. The right side's decision test at the step it decides, and its threshold.
    let tests = test_points(&adapt);
    // (A test decides step `t.0`, an index.)
    let at = |t: f64| position(t as usize, na);
    let third: Vec<[f64; 2]> = tests
        .iter()
        .filter_map(|t| Some([at(t.0), log(t.1)?]))
        .collect();
    let threshold: Vec<[f64; 2]> = tests
        .iter()
        .filter_map(|t| Some([at(t.0), log(t.2)?]))
        .collect();
    // Other methods' decision signal at the step it decides (ucache: the accumulated error
    // against its threshold).
    let signal: Vec<[f64; 2]> = adapt
        .iter()
        .filter_map(|r| Some([position(r.index, na), log(r.signal?)?]))
        .collect();
    let signal_limit: Vec<[f64; 2]> = adapt
        .iter()
        .filter_map(|r| Some([position(r.index, na), log(r.signal_limit?)?]))
        .collect();
    let markers: Vec<(Decision, &str, Vec<[f64; 2]>)> = [
        (Decision::Computed, "step computed"),
        (Decision::Reused, "step reused"),
        (Decision::Forecast, "step forecast"),
        (Decision::Forced, "step forced"),
    ]
    .into_iter()
    .map(|(d, name)| {
        (
            d,
            name,
            tests
                .iter()
                .filter(|t| t.3 == d)
                .filter_map(|t| Some([at(t.0), log(t.1)?]))
                .collect(),
        )
    })
    .collect();
    let range = decades(
        third
            .iter()
            .chain(&threshold)
            .chain(&signal)
            .chain(&signal_limit)
            .map(|p| p[1]),
    );
    let threshold_c = color(palette::THRESHOLD);
    let warmup_c = Color32::from_white_alpha(10);
    // The warm-up and the threshold belong to a rule that decides by the test (the
    // adaptive methods); other methods' third-order values are shown alone.
    let has_rule = !threshold.is_empty();
    let mut entries = vec![];
    if has_rule {
        entries.push((
            "warm-up (always computed)".to_string(),
            Swatch::Band(Color32::from_white_alpha(40)),
        ));
    }
    if !third.is_empty() {
        entries.push(("third-order |Δ³|".to_string(), Swatch::Line(right_c)));
    }
    if has_rule {
        entries.push((
            "threshold δ·d_(k−1)".to_string(),
            Swatch::Dashed(threshold_c),
        ));
    }
    if !signal.is_empty() {
        entries.push(("decision signal".to_string(), Swatch::Line(right_c)));
        entries.push(("signal limit".to_string(), Swatch::Dashed(threshold_c)));
    }
    for (d, name, pts) in &markers {
        if !pts.is_empty() {
            entries.push((name.to_string(), Swatch::Diamond(color(decision_color(*d)))));
        }
    }
    if entries.is_empty() {
        entries.push((
            format!("{}: no decision test", names.right),
            Swatch::Band(Color32::TRANSPARENT),
        ));
    }
    legend(ui, &entries);
    log_plot("plot_test", h, group, "test (log)", range)
        .label_formatter(hover.clone())
        .show(ui, |p| {
            if has_rule {
                // The first 4 steps always compute (no label inside: the legend names it).
                p.span(Span::new("", 0.0..=position(3, na)).fill(warmup_c));
            }
            p.line(
                Line::new("third-order |Δ³|", PlotPoints::from(third))
                    .color(right_c)
                    .width(2.0),
            );
            p.line(
                Line::new("threshold δ·d_(k−1)", PlotPoints::from(threshold))
                    .color(threshold_c)
                    .style(LineStyle::dashed_loose())
                    .width(2.0),
            );
            p.line(
                Line::new("decision signal", PlotPoints::from(signal))
                    .color(right_c)
                    .width(2.0),
            );
            p.line(
                Line::new("signal limit", PlotPoints::from(signal_limit))
                    .color(threshold_c)
                    .style(LineStyle::dashed_loose())
                    .width(2.0),
            );
            for (d, name, pts) in markers {
                p.points(
                    Points::new(name, PlotPoints::from(pts))
                        .color(color(decision_color(d)))
                        .radius(4.5)
                        .shape(MarkerShape::Diamond)
                        .filled(true),
                );
            }
        });

    // 3. Predictor time per step.
    let ms = |steps: &[StepRecord], n: usize| -> Vec<[f64; 2]> {
        steps
            .iter()
            .map(|r| [position(r.index, n), r.predictor_ms])
            .collect()
    };
    let (bm, am) = (ms(&base, nb), ms(&adapt, na));
    // Which steps of the right side were full, partial or skipped.
    let kinds: Vec<(Decision, &str, Vec<[f64; 2]>)> = [
        (Decision::Computed, "full call"),
        (Decision::Partial, "partial call"),
        (Decision::Reused, "skipped"),
        (Decision::Forecast, "forecast"),
    ]
    .into_iter()
    .map(|(d, name)| {
        let pts = adapt
            .iter()
            .filter(|r| match d {
                Decision::Computed => r.computed && r.decision != Decision::Partial,
                _ => r.decision == d,
            })
            .map(|r| [position(r.index, na), r.predictor_ms])
            .collect();
        (d, name, pts)
    })
    .collect();
    let mut entries = vec![
        (format!("{} predictor ms", names.left), Swatch::Line(left_c)),
        (
            format!("{} predictor ms", names.right),
            Swatch::Line(right_c),
        ),
    ];
    for (d, name, pts) in &kinds {
        if !pts.is_empty() {
            entries.push((name.to_string(), Swatch::Dot(color(decision_color(*d)))));
        }
    }
    legend(ui, &entries);
    schedule_plot("plot_ms", h, group)
        .include_y(0.0)
        .include_y(1.0)
        .y_axis_label("predictor ms")
        .x_axis_label("position in the schedule (step k of n at (k + 1) / n)")
        .label_formatter(hover)
        .show(ui, |p| {
            p.line(
                Line::new(format!("{} predictor ms", names.left), PlotPoints::from(bm))
                    .color(left_c)
                    .width(2.0),
            );
            p.line(
                Line::new(
                    format!("{} predictor ms", names.right),
                    PlotPoints::from(am),
                )
                .color(right_c)
                .width(2.0),
            );
            for (d, name, pts) in kinds {
                p.points(
                    Points::new(name, PlotPoints::from(pts))
                        .color(color(decision_color(d)))
                        .radius(3.0)
                        .filled(true),
                );
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_labels_are_distinct_and_read_as_typed() {
        let marks = log_marks(GridInput {
            bounds: (-2.5, 0.2),
            base_step_size: 0.05,
        });
        let labels: Vec<String> = marks.iter().map(|m| log_label(m.value)).collect();
        let mut unique = labels.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), labels.len(), "{labels:?}");
        for want in ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"] {
            assert!(labels.contains(&want.to_string()), "{want} in {labels:?}");
        }
        assert_eq!(log_label(-6.0 + 5f64.log10()), "5e-6");
    }

    #[test]
    fn different_step_counts_line_up() {
        // Step 10 of 25 sits where step 20 of 50 does, not beside step 10 of 50.
        assert_eq!(position(9, 25), position(19, 50));
        assert_eq!(position(49, 50), 1.0);
        assert_eq!(step_at(0.4, 25), 9);
        assert_eq!(step_at(0.4, 50), 19);
        assert_eq!(decades([-2.3, -1.1].into_iter()), (-3.0, -1.0));
        assert_eq!(decades(std::iter::empty()), (-3.0, 0.0));
    }
}
