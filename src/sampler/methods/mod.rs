//! The method registry: every acceleration method is one module here implementing
//! [`MethodDef`], and [`METHODS`] lists them. Nothing else in the crate names a method's
//! keys, defaults or rule: the spec parser (`job::method_spec`), the trace's JSON
//! ([`super::Method`]), the app's menus and sliders, the bench's `--method` and report labels
//! all read the registry, and [`super::run`] drives any method through its [`StepRule`].
//!
//! A new method is a new module with a `MethodDef` (its name, its keys with their defaults,
//! ranges and controls, its checks, the schedulers it supports, its per-step rule) and one
//! line in [`METHODS`].

pub use super::change::Change;
use super::denoise::{CallPlan, RawPrediction};
use super::method::{Method, MethodError};
use super::schedule::PredictionType;
use super::scheduler::{Scheduler, SchedulerKind, StepOutput};
use super::trace::Decision;
use anyhow::Result;
use candle_core::Tensor;

pub mod adaptive;
pub mod baseline;
pub mod deepcache;
pub mod forecast;
pub mod sada;
pub mod spectrum;
pub mod steps;
pub mod tgate;
pub mod ucache;

/// Every method, in menu order (the baseline first).
pub static METHODS: &[&dyn MethodDef] = &[
    &baseline::Baseline,
    &adaptive::Adaptive,
    &steps::Steps,
    &forecast::AdaptiveForecast,
    &ucache::UCacheMethod,
    &deepcache::DeepCache,
    &tgate::TGate,
    &sada::Sada,
    &spectrum::Spectrum,
];

/// The registered method called `name`.
pub fn find(name: &str) -> Option<&'static dyn MethodDef> {
    METHODS.iter().copied().find(|m| m.name() == name.trim())
}

/// The names of every method, for messages (`baseline, adaptive, …`).
pub fn names() -> String {
    METHODS
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The smallest valid value of a key that must be positive (checked as "a positive number").
pub const POSITIVE: f64 = f64::MIN_POSITIVE;

/// How a key's value is read, written and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A whole number ≥ 0 (steps, intervals).
    Count,
    /// A real number.
    Number,
    /// On or off (written 0 / 1 in specs, `false` / `true` in JSON).
    Flag,
}

/// Where the upper end of an app slider lies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SliderMax {
    /// A fixed value.
    Value(f64),
    /// The run's step count (a step index or a step count).
    Steps,
}

/// How the app shows a key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Control {
    /// Not in the app (the spec and the CLI still take it; the app uses the default).
    Hidden,
    /// A slider from `min` to `max` (typed values beyond it are kept and checked).
    Slider {
        /// The lower end.
        min: f64,
        /// The upper end.
        max: SliderMax,
        /// Logarithmic scale.
        log: bool,
    },
    /// A checkbox (flags).
    Checkbox,
}

/// One setting of a method: the only place its name, default, range and control are written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Key {
    /// The name in specs, traces and JSON (`delta`, `max_skips`, `gate_step`).
    pub name: &'static str,
    /// Earlier names still read from old specs and traces; `a.b` names key `b` of an old
    /// nested object `a`.
    pub aliases: &'static [&'static str],
    /// The app's label.
    pub label: &'static str,
    /// One line on what it does (the app's hover text, the CLI's help).
    pub help: &'static str,
    /// How its value is read.
    pub kind: KeyKind,
    /// Its value when a spec leaves it out (ignored when `required`).
    pub default: f64,
    /// A spec must give it (`steps:n`); the app starts from `default`.
    pub required: bool,
    /// The smallest valid value.
    pub min: f64,
    /// The largest valid value.
    pub max: f64,
    /// The unit, for help and labels ("" when none).
    pub unit: &'static str,
    /// How the app shows it.
    pub control: Control,
}

impl Key {
    /// A key with no aliases, no unit, not required and a hidden control; the builders below
    /// set the rest.
    pub const fn new(name: &'static str, kind: KeyKind, default: f64, min: f64, max: f64) -> Key {
        Key {
            name,
            aliases: &[],
            label: name,
            help: "",
            kind,
            default,
            required: false,
            min,
            max,
            unit: "",
            control: Control::Hidden,
        }
    }

    /// The app's label and the one-line help.
    pub const fn described(mut self, label: &'static str, help: &'static str) -> Key {
        self.label = label;
        self.help = help;
        self
    }

    /// Earlier names.
    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Key {
        self.aliases = aliases;
        self
    }

    /// A spec must give it.
    pub const fn required(mut self) -> Key {
        self.required = true;
        self
    }

    /// Its unit.
    pub const fn unit(mut self, unit: &'static str) -> Key {
        self.unit = unit;
        self
    }

    /// Shown in the app as a slider.
    pub const fn slider(mut self, min: f64, max: SliderMax, log: bool) -> Key {
        self.control = Control::Slider { min, max, log };
        self
    }

    /// Shown in the app as a checkbox.
    pub const fn checkbox(mut self) -> Key {
        self.control = Control::Checkbox;
        self
    }

    /// A value as specs, titles and messages write it (counts and flags whole).
    pub fn show(&self, v: f64) -> String {
        match self.kind {
            KeyKind::Count | KeyKind::Flag => format!("{}", v as i64),
            KeyKind::Number => format!("{v}"),
        }
    }

    /// Whether `v` is a valid value: in range, and whole for counts, 0 or 1 for flags.
    pub fn check(&self, v: f64) -> Result<(), String> {
        let shown = |x: f64| self.show(x);
        match self.kind {
            KeyKind::Flag if v != 0.0 && v != 1.0 => {
                return Err(format!("must be 0 or 1 (got {v})"));
            }
            KeyKind::Count if !(v.is_finite() && v.fract() == 0.0 && v >= 0.0) => {
                return Err(format!("must be a whole number ≥ 0 (got {v})"));
            }
            KeyKind::Number if !v.is_finite() => {
                return Err(format!("must be a finite number (got {v})"));
            }
            _ => {}
        }
        if v < self.min || v > self.max {
            let range = if self.min == POSITIVE && self.max == f64::INFINITY {
                "must be a positive number".to_string()
            } else if self.max == f64::INFINITY {
                match (self.kind, self.min) {
                    (KeyKind::Count, m) => format!("must be at least {}", shown(m)),
                    (_, m) => format!("must be a finite number ≥ {}", shown(m)),
                }
            } else {
                format!("must be within {}–{}", shown(self.min), shown(self.max))
            };
            return Err(format!("{range} (got {})", shown(v)));
        }
        Ok(())
    }
}

/// One acceleration method.
pub trait MethodDef: Send + Sync + 'static {
    /// The name in specs, traces, CSV files and menus' ids (`adaptive`, `deepcache`).
    fn name(&self) -> &'static str;
    /// The menu title ("AdaptiveDiffusion (reuse)").
    fn title(&self) -> &'static str;
    /// A short name for picture titles and report columns ("Adaptive", "DeepCache").
    fn short(&self) -> &'static str;
    /// What it does and where it comes from (repository, commit, file).
    fn about(&self) -> &'static str;
    /// Its settings, in spec order.
    fn keys(&self) -> &'static [Key];
    /// Checks beyond each key's own range (relations between keys).
    fn check(&self, _m: &Method) -> Result<(), MethodError> {
        Ok(())
    }
    /// The schedulers it runs on (`None`: every one).
    fn schedulers(&self) -> Option<&'static [SchedulerKind]> {
        None
    }
    /// Whether its runs may save work (what a `steps:n=match` control follows): false for
    /// the baseline and the fewer-steps control.
    fn saves_work(&self) -> bool {
        true
    }
    /// The step count it runs instead of the job's (`steps:n`).
    fn own_steps(&self, _m: &Method) -> Option<usize> {
        None
    }
    /// A short description of its settings for picture titles ("δ 0.01 · C_max 4"); empty
    /// for none.
    fn describe(&self, m: &Method) -> String {
        self.keys()
            .iter()
            .filter(|k| k.control != Control::Hidden)
            .map(|k| format!("{} {}", k.label, m.shown(k.name)))
            .collect::<Vec<_>>()
            .join(" · ")
    }
    /// The per-run state that decides every step of a run.
    fn rule(&self, m: &Method, run: &RunInfo) -> Result<Box<dyn StepRule>>;
}

/// What a rule knows of its run before the first step.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The scheduler.
    pub scheduler: SchedulerKind,
    /// Steps of the run.
    pub steps: usize,
    /// The noise level σ of every step (`Scheduler::sigma`).
    pub sigmas: Vec<f64>,
    /// The timestep of every step.
    pub timesteps: Vec<f64>,
    /// The guidance scale.
    pub guidance: f64,
    /// The model's training noise schedule: β of every training timestep.
    pub betas: Vec<f64>,
    /// What the model predicts (ε, v or the sample).
    pub prediction: PredictionType,
}

/// One step as a rule sees it.
pub struct Step<'a> {
    /// The step, 0-based.
    pub index: usize,
    /// Steps of the run.
    pub steps: usize,
    /// The timestep given to the noise predictor.
    pub timestep: f64,
    /// The noise level σ (`Scheduler::sigma`).
    pub sigma: f64,
    /// The latents before the step, x_i.
    pub latents: &'a Tensor,
    /// The scaled model input (`Scheduler::scale_model_input`).
    pub model_in: &'a Tensor,
    /// The guidance scale.
    pub guidance: f64,
    /// The scheduler: `pred_x0` and `output_for_x0` convert between a model output and its
    /// x0 estimate at this step.
    pub scheduler: &'a dyn Scheduler,
    /// `(step, raw prediction)` of the last two computed steps, oldest first.
    pub history: &'a [(usize, RawPrediction)],
}

/// What a rule decides for a step.
pub enum Choice {
    /// Call the noise predictor, with a plan for a partial call when `Some`.
    Call {
        /// Why (computed, warm-up, forced, partial).
        decision: Decision,
        /// DeepCache's or T-GATE's plan of the call.
        plan: Option<CallPlan>,
    },
    /// No call: the rule's prediction (with `uncond: None`, `cond` is already guided).
    Skip {
        /// The prediction the scheduler steps with.
        prediction: RawPrediction,
        /// Why (reused).
        decision: Decision,
    },
}

impl Choice {
    /// A full call.
    pub fn compute() -> Choice {
        Choice::Call {
            decision: Decision::Computed,
            plan: None,
        }
    }
}

/// What a rule adds to a step's trace record.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Notes {
    /// AdaptiveDiffusion's δ · d_{i−1}.
    pub threshold: Option<f64>,
    /// Another rule's decision signal.
    pub signal: Option<f64>,
    /// The limit `signal` was tested against (skip when `signal < limit`).
    pub signal_limit: Option<f64>,
}

/// The per-run state of a method: asked before each step, told what the step did.
pub trait StepRule: Send {
    /// Before step `i`'s model call: call (fully or partly) or skip with a prediction.
    fn before(&mut self, step: &Step<'_>, notes: &mut Notes) -> Result<Choice>;
    /// After a call at this step: its raw prediction.
    fn computed(&mut self, _step: &Step<'_>, _prediction: &RawPrediction) -> Result<()> {
        Ok(())
    }
    /// After the scheduler's step: the new latents and x0 estimate, and the change made.
    fn after(
        &mut self,
        _step: &Step<'_>,
        _out: &StepOutput,
        _change: &Change,
        _notes: &mut Notes,
    ) -> Result<()> {
        Ok(())
    }
}

/// The rule of methods that call the model at every step (the baseline, fewer steps).
pub struct EveryStep;

impl StepRule for EveryStep {
    fn before(&mut self, _: &Step<'_>, _: &mut Notes) -> Result<Choice> {
        Ok(Choice::compute())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_keys_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for m in METHODS {
            assert!(seen.insert(m.name()), "{} twice", m.name());
            assert!(
                m.keys().len() <= super::super::method::MAX_KEYS,
                "{}",
                m.name()
            );
            let mut keys = std::collections::HashSet::new();
            for k in m.keys() {
                assert!(keys.insert(k.name), "{}: {} twice", m.name(), k.name);
                assert!(k.min <= k.max, "{}: {}", m.name(), k.name);
                if !k.required {
                    assert!(
                        k.check(k.default).is_ok(),
                        "{}: {} default",
                        m.name(),
                        k.name
                    );
                }
                assert!(!k.help.is_empty(), "{}: {} has no help", m.name(), k.name);
            }
            assert!(!m.about().is_empty());
        }
        assert_eq!(METHODS[0].name(), "baseline");
    }

    #[test]
    fn a_key_checks_its_kind_and_range() {
        let count = Key::new("n", KeyKind::Count, 1.0, 1.0, f64::INFINITY);
        assert!(count.check(3.0).is_ok());
        assert_eq!(count.check(0.0).unwrap_err(), "must be at least 1 (got 0)");
        assert!(count.check(1.5).unwrap_err().contains("whole number"));
        let unit = Key::new("start", KeyKind::Number, 0.1, 0.0, 1.0);
        assert_eq!(unit.check(1.5).unwrap_err(), "must be within 0–1 (got 1.5)");
        let flag = Key::new("reset", KeyKind::Flag, 1.0, 0.0, 1.0);
        assert!(flag.check(2.0).is_err());
    }
}
