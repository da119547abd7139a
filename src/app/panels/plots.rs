//! Per-step plots with a shared x axis (the step): the latent change d_k of both sides,
//! the third-order value against the threshold δ·d_(k−1) with the decision markers, and
//! the noise-predictor time per step. Hovering shows the step's numbers.

use super::super::compose::{decision_color, palette, test_points};
use super::super::{GuiApp, egui};
use super::color;
use crate::sampler::{Decision, StepRecord};
use egui_plot::{
    GridMark, HoverPosition, Legend, Line, LineStyle, MarkerShape, Plot, PlotPoints, Points, Span,
};
use std::ops::RangeInclusive;

fn log_axis(mark: GridMark, _range: &RangeInclusive<f64>) -> String {
    let v = 10f64.powf(mark.value);
    if (1e-2..1e3).contains(&v) {
        format!("{v:.2}")
    } else {
        format!("{v:.0e}")
    }
}

/// A plot on the shared step axis (0..=`x_max`, linked cursor) of height `h`.
fn step_plot(id: &str, h: f32, group: egui::Id, x_max: f64) -> Plot<'static> {
    Plot::new(id)
        .height(h)
        .legend(Legend::default())
        .link_axis(group, [true, false])
        .link_cursor(group, [true, false])
        .include_x(0.0)
        .include_x(x_max)
}

/// A step plot of log10 values labelled `label`, showing 10⁻³…1 while `empty` (instead of
/// egui_plot's ±10²⁰), without its own x labels (the bottom plot has them).
fn log_step_plot(
    id: &str,
    h: f32,
    group: egui::Id,
    x_max: f64,
    label: &str,
    empty: bool,
) -> Plot<'static> {
    step_plot(id, h, group, x_max)
        .y_axis_formatter(log_axis)
        .y_axis_label(label.to_string())
        .include_y(if empty { -3.0 } else { f64::NAN })
        .include_y(if empty { 0.0 } else { f64::NAN })
        .show_x(false)
}

/// The numbers of step `k` as a hover text.
fn describe(k: usize, base: &[StepRecord], adapt: &[StepRecord]) -> String {
    let mut s = format!("step {k}");
    if let Some(r) = adapt.get(k) {
        s.push_str(&format!("\nadaptive: {:?}", r.decision).to_lowercase());
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
                "\ntest after step {}: {t:.3e} {verdict} δ·d = {th:.3e}",
                k - 1
            ));
        }
    }
    if let Some(r) = base.get(k) {
        s.push_str(&format!("\nbaseline: predictor {:.1} ms", r.predictor_ms));
        if let Some(d) = r.d {
            s.push_str(&format!(", d = {d:.3e}"));
        }
    }
    s
}

pub(in crate::app) fn plots(app: &mut GuiApp, ui: &mut egui::Ui) {
    let s = &app.session;
    let base: Vec<StepRecord> = s.baseline.steps.clone();
    let adapt: Vec<StepRecord> = s.adaptive.steps.clone();
    let budget = s
        .spec
        .as_ref()
        .map(|x| x.steps)
        .unwrap_or(app.settings.steps)
        .max(2);
    let x_max = (budget - 1) as f64;
    let group = egui::Id::unique("step_axis");
    let h = ((ui.available_height() - 12.0) / 3.0).max(90.0);
    let log = |v: f64| (v > 0.0 && v.is_finite()).then(|| v.log10());

    let hover = {
        let (b, a) = (base.clone(), adapt.clone());
        move |pos: &HoverPosition<'_>| {
            let x = match pos {
                HoverPosition::NearDataPoint { position, .. } => position.x,
                HoverPosition::Elsewhere { position } => position.x,
            };
            (x >= -0.5).then(|| describe(x.round().max(0.0) as usize, &b, &a))
        }
    };
    let warmup =
        Span::new("warm-up (always computed)", 0.0..=3.0).fill(egui::Color32::from_white_alpha(10));

    // 1. d_k of both sides.
    let d_line = |steps: &[StepRecord]| -> PlotPoints<'static> {
        steps
            .iter()
            .filter_map(|r| Some([r.index as f64, log(r.d?)?]))
            .collect()
    };
    let (bd, ad) = (d_line(&base), d_line(&adapt));
    let (empty_d, empty_t) = (base.len() + adapt.len() < 2, adapt.len() < 5);
    let adapt_for_markers = adapt.clone();
    log_step_plot("plot_d", h, group, x_max, "d_k (log)", empty_d)
        .label_formatter(hover.clone())
        .show(ui, |p| {
            p.line(
                Line::new("baseline d_k", bd)
                    .color(color(palette::BASELINE))
                    .width(2.0),
            );
            p.line(
                Line::new("adaptive d_k", ad)
                    .color(color(palette::ADAPTIVE))
                    .width(2.0),
            );
            for (d, name) in [
                (Decision::Reused, "reused (skipped)"),
                (Decision::Forced, "forced by C_max"),
            ] {
                let pts: PlotPoints<'static> = adapt_for_markers
                    .iter()
                    .filter(|r| r.decision == d)
                    .filter_map(|r| Some([r.index as f64, log(r.d?)?]))
                    .collect();
                p.points(
                    Points::new(name, pts)
                        .color(color(decision_color(d)))
                        .radius(4.0)
                        .shape(MarkerShape::Circle)
                        .filled(true),
                );
            }
        });

    // 2. The third-order test at the step it decides, and the threshold.
    let tests = test_points(&adapt);
    let third: PlotPoints<'static> = tests
        .iter()
        .filter_map(|t| Some([t.0, log(t.1)?]))
        .collect();
    let threshold: PlotPoints<'static> = tests
        .iter()
        .filter_map(|t| Some([t.0, log(t.2)?]))
        .collect();
    // Other methods' decision signal at the step it decides (ucache: the accumulated error
    // against its threshold).
    let signal: PlotPoints<'static> = adapt
        .iter()
        .filter_map(|r| Some([r.index as f64, log(r.signal?)?]))
        .collect();
    let signal_limit: PlotPoints<'static> = adapt
        .iter()
        .filter_map(|r| Some([r.index as f64, log(r.signal_limit?)?]))
        .collect();
    let has_signal = adapt.iter().any(|r| r.signal.is_some());
    let markers: Vec<(Decision, Vec<[f64; 2]>)> =
        [Decision::Computed, Decision::Reused, Decision::Forced]
            .into_iter()
            .map(|d| {
                (
                    d,
                    tests
                        .iter()
                        .filter(|t| t.3 == d)
                        .filter_map(|t| Some([t.0, log(t.1)?]))
                        .collect(),
                )
            })
            .collect();
    log_step_plot("plot_test", h, group, x_max, "3rd order (log)", empty_t)
        .label_formatter(hover.clone())
        .show(ui, |p| {
            p.span(warmup.clone());
            p.line(
                Line::new("third-order |Δ³|", third)
                    .color(color(palette::ADAPTIVE))
                    .width(2.0),
            );
            p.line(
                Line::new("threshold δ·d_(k−1)", threshold)
                    .color(color(palette::THRESHOLD))
                    .style(LineStyle::dashed_loose())
                    .width(2.0),
            );
            if has_signal {
                p.line(
                    Line::new("decision signal", signal)
                        .color(color(palette::ADAPTIVE))
                        .width(2.0),
                );
                p.line(
                    Line::new("signal limit", signal_limit)
                        .color(color(palette::THRESHOLD))
                        .style(LineStyle::dashed_loose())
                        .width(2.0),
                );
            }
            for (d, pts) in markers {
                let name = match d {
                    Decision::Computed => "step computed",
                    Decision::Reused => "step reused",
                    _ => "step forced",
                };
                p.points(
                    Points::new(name, pts)
                        .color(color(decision_color(d)))
                        .radius(4.5)
                        .shape(MarkerShape::Diamond)
                        .filled(true),
                );
            }
        });

    // 3. Predictor time per step.
    let ms = |steps: &[StepRecord]| -> PlotPoints<'static> {
        steps
            .iter()
            .map(|r| [r.index as f64, r.predictor_ms])
            .collect()
    };
    let (bm, am) = (ms(&base), ms(&adapt));
    // Which steps of the right side were full, partial or skipped.
    let kinds: Vec<(Decision, &str, Vec<[f64; 2]>)> = [
        (Decision::Computed, "full call"),
        (Decision::Partial, "partial call"),
        (Decision::Reused, "skipped"),
    ]
    .into_iter()
    .map(|(d, name)| {
        let pts = adapt
            .iter()
            .filter(|r| match d {
                Decision::Computed => r.computed && r.decision != Decision::Partial,
                _ => r.decision == d,
            })
            .map(|r| [r.index as f64, r.predictor_ms])
            .collect();
        (d, name, pts)
    })
    .collect();
    step_plot("plot_ms", h, group, x_max)
        .include_y(0.0)
        .include_y(1.0)
        .y_axis_label("predictor ms")
        .x_axis_label("step")
        .label_formatter(hover)
        .show(ui, |p| {
            p.line(
                Line::new("baseline predictor ms", bm)
                    .color(color(palette::BASELINE))
                    .width(2.0),
            );
            p.line(
                Line::new("adaptive predictor ms", am)
                    .color(color(palette::ADAPTIVE))
                    .width(2.0),
            );
            for (d, name, pts) in kinds {
                p.points(
                    Points::new(name, pts)
                        .color(color(decision_color(d)))
                        .radius(3.0)
                        .filled(true),
                );
            }
        });
}
