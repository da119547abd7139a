//! The side panel's method section: each side's method menu and the controls of its keys,
//! built from the method registry, the re-run rule, early stop and the complexity budget.

use super::super::egui;
use super::super::method_params::MethodParams;
use super::Panel;
use crate::complexity::ScorerKind;
use crate::sampler::MethodKind;
use crate::sampler::methods::{Control, KeyKind, SliderMax};
use egui::{Color32, RichText};

/// Menu label of a method.
fn method_label(k: MethodKind) -> &'static str {
    k.def().title()
}

/// Each side's method and its own controls: the left side's first, then the right side's.
pub(super) fn adaptive(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    ui.label(RichText::new("Acceleration method").strong());
    let before = (p.settings.method, p.settings.left_method);
    let steps = p.settings.steps.max(1);
    let mut responses = vec![];
    ui.push_id("left_side", |ui| {
        egui::ComboBox::from_label("Left side")
            .selected_text(method_label(p.settings.left_method))
            .show_ui(ui, |ui| {
                for k in MethodKind::all() {
                    ui.selectable_value(&mut p.settings.left_method, k, method_label(k));
                }
            })
            .response
            .on_hover_text(
                "The reference the right side is compared with, with its own settings below",
            );
        let kind = p.settings.left_method;
        responses.extend(method_controls(ui, &mut p.settings.left, kind, steps));
    });
    ui.add_space(4.0);
    ui.push_id("right_side", |ui| {
        egui::ComboBox::from_label("Method")
            .selected_text(method_label(p.settings.method))
            .show_ui(ui, |ui| {
                for k in MethodKind::all().filter(|k| *k != MethodKind::BASELINE) {
                    ui.selectable_value(&mut p.settings.method, k, method_label(k));
                }
            })
            .response
            .on_hover_text("The right side's method, with its own settings below");
        let kind = p.settings.method;
        responses.extend(method_controls(ui, &mut p.settings.right, kind, steps));
    });
    // Re-run once the value settles: not while dragging, not while typing into the field.
    let changed = (p.settings.method, p.settings.left_method) != before
        || responses.iter().any(|r| r.changed() || r.drag_stopped());
    let editing =
        responses.iter().any(egui::Response::dragged) || ui.ctx().egui_wants_keyboard_input();
    if let Some(rerun) = p.app.rerun.command(changed, editing) {
        p.push(rerun);
    }
    let s = &mut p.settings;
    ui.checkbox(
        &mut s.auto_rerun,
        "Re-run when a method or its settings change",
    )
    .on_hover_text("A side whose settings did not change comes from the cache");
    ui.checkbox(&mut s.early_stop, "Early stop (latent convergence)")
        .on_hover_text("On the right side");
    complexity(p, ui);
    let s = &mut p.settings;
    if s.early_stop {
        ui.add(
            egui::Slider::new(&mut s.early_stop_tau, 0.001..=0.2)
                .logarithmic(true)
                .text("τ"),
        );
    }
}

/// A number as typed: `0.01`, `0.08`, `0.2`, `0.0015` (no padding zeros).
fn plain_number(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// The controls of one method's settings (none for the baseline), built from its keys in
/// the registry: a slider or a checkbox per key the app shows.
fn method_controls(
    ui: &mut egui::Ui,
    p: &mut MethodParams,
    kind: MethodKind,
    steps: usize,
) -> Vec<egui::Response> {
    let mut responses = vec![];
    for key in kind.def().keys() {
        let mut v = p.get(kind, key.name);
        let before = v;
        let response = match key.control {
            Control::Hidden => continue,
            Control::Checkbox => {
                let mut on = v != 0.0;
                let r = ui.checkbox(&mut on, key.label);
                v = f64::from(u8::from(on));
                r
            }
            Control::Slider { min, max, log } => {
                let max = match max {
                    SliderMax::Value(m) => m,
                    SliderMax::Steps => steps as f64,
                }
                .max(min);
                let slider = if key.kind == KeyKind::Count {
                    egui::Slider::new(&mut v, min..=max)
                        .integer()
                        .logarithmic(log)
                } else {
                    // Typed values beyond the slider's range are kept (the job's check
                    // reports anything invalid).
                    egui::Slider::new(&mut v, min..=max)
                        .logarithmic(log)
                        .smallest_positive(if min > 0.0 { min } else { 1e-4 })
                        .clamping(egui::SliderClamping::Never)
                        .custom_formatter(|v, _| plain_number(v))
                };
                ui.add(slider.text(key.label))
            }
        };
        if v != before {
            p.set(kind, key.name, v);
        }
        responses.push(response.on_hover_text(key.help));
    }
    responses
}

fn complexity(p: &mut Panel<'_>, ui: &mut egui::Ui) {
    let s = &mut p.settings;
    ui.checkbox(&mut s.complexity_budget, "Adaptive step budget from prompt complexity")
        .on_hover_text("The left side keeps Steps; the right side gets a budget chosen from the prompt's complexity score");
    if !s.complexity_budget {
        return;
    }
    egui::ComboBox::from_label("Scorer")
        .selected_text(scorer_label(s.scorer))
        .show_ui(ui, |ui| {
            for k in [ScorerKind::Heuristic, ScorerKind::Ollama] {
                ui.selectable_value(&mut s.scorer, k, scorer_label(k));
            }
        });
    if s.scorer == ScorerKind::Ollama {
        ui.horizontal(|ui| {
            let l = ui.label("Ollama URL");
            ui.text_edit_singleline(&mut s.ollama_url).labelled_by(l.id);
        });
        ui.horizontal(|ui| {
            let l = ui.label("Ollama model");
            ui.text_edit_singleline(&mut s.ollama_model)
                .labelled_by(l.id);
        });
    }
    ui.checkbox(&mut s.scale_policy, "Also scale δ and C_max with the level");
    if let Some(b) = &p.app.session.budget {
        let c = &b.complexity;
        ui.label(
            RichText::new(format!(
                "Complexity {:.2}: level {} of {}, right-side budget {} of {} steps",
                c.score, b.budget.level, b.budget.levels, b.budget.steps, b.budget.baseline_steps
            ))
            .strong(),
        );
        ui.label(format!("Decided by: {}", c.scorer_label()));
        if c.fallback.is_some() {
            ui.colored_label(
                Color32::from_rgb(255, 200, 80),
                "The requested scorer did not answer: the heuristic decided.",
            );
        }
        ui.label(RichText::new(format!("{} — {}", c.factors.describe(), c.rationale)).weak());
    }
}

fn scorer_label(k: ScorerKind) -> &'static str {
    match k {
        ScorerKind::Heuristic => "Heuristic (offline, instant)",
        ScorerKind::Ollama => "Ollama (local LLM; heuristic fallback)",
    }
}

#[cfg(test)]
mod tests {
    use super::plain_number;

    #[test]
    fn numbers_show_as_typed() {
        assert_eq!(plain_number(0.01), "0.01");
        assert_eq!(plain_number(0.08), "0.08");
        assert_eq!(plain_number(0.2), "0.2");
        assert_eq!(plain_number(0.5), "0.5");
        assert_eq!(plain_number(0.0), "0");
        assert_eq!(plain_number(1.5), "1.5");
    }
}
