//! Methods written as text: `NAME[:KEY=VALUE,…]` (`adaptive:delta=0.02,cmax=3`,
//! `steps:n=20`, `ucache:threshold=0.8`), what `--method`, `compare --left/--right` and the
//! bench take. Keys a spec leaves out take their defaults ([`super::defaults`] for δ and
//! C_max, stable-diffusion.cpp's for `ucache`). A benchmark may sweep a key with several
//! values separated by `/` ([`expand_sweep`]).

use super::defaults;
use crate::field::{Field, FieldError};
use crate::sampler::{Method, MethodKind, UCacheSettings};
use std::fmt;

/// Every method with its keys, for messages and `--help`.
pub const METHODS_HELP: &str = "baseline, adaptive[:delta=D,cmax=C], steps:n=N, adaptive+forecast[:delta=D,cmax=C], ucache[:threshold=T,start=S,end=E,decay=D,relative=0|1,reset=0|1], deepcache[:interval=N,branch=B], tgate[:gate=G,sp_interval=S,fi_interval=F,warm_up=W]";

/// T-GATE's defaults (its `tgate_scheduler`'s): gate 10, sp_interval 5, fi_interval 1,
/// warm_up 2.
pub const TGATE_DEFAULTS: (usize, usize, usize, usize) = (10, 5, 1, 2);

/// DeepCache's settings when a spec leaves them out: its README's `cache_interval=3,
/// cache_branch_id=0` (the helper's own default interval, 1, would cache nothing).
pub const DEEPCACHE_DEFAULTS: (usize, usize) = (3, 0);

/// The keys of a method's spec.
fn keys(kind: MethodKind) -> &'static [&'static str] {
    match kind {
        MethodKind::Baseline => &[],
        MethodKind::Adaptive | MethodKind::AdaptiveForecast => &["delta", "cmax"],
        MethodKind::Steps => &["n"],
        MethodKind::UCache => &["threshold", "start", "end", "decay", "relative", "reset"],
        MethodKind::DeepCache => &["interval", "branch"],
        MethodKind::TGate => &["gate", "sp_interval", "fi_interval", "warm_up"],
    }
}

fn problem(spec: &str, what: impl fmt::Display) -> FieldError {
    FieldError::new(Field::Method, format!("'{spec}': {what}"))
}

/// Parse one spec (no sweeps), checking its keys and values.
pub fn parse(spec: &str) -> Result<Method, FieldError> {
    let (name, rest) = spec.trim().split_once(':').unwrap_or((spec.trim(), ""));
    let kind: MethodKind = name.parse().map_err(|_| {
        problem(
            spec,
            format!("no method is called '{name}' (methods: {METHODS_HELP})"),
        )
    })?;
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for item in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(problem(spec, format!("'{item}' is not KEY=VALUE")));
        };
        let (k, v) = (k.trim(), v.trim());
        if !keys(kind).contains(&k) {
            let allowed = if keys(kind).is_empty() {
                "it takes none".to_string()
            } else {
                format!("keys: {}", keys(kind).join(", "))
            };
            return Err(problem(
                spec,
                format!("{name} has no key '{k}' ({allowed})"),
            ));
        }
        if pairs.iter().any(|(p, _)| *p == k) {
            return Err(problem(spec, format!("'{k}' is given twice")));
        }
        pairs.push((k, v));
    }
    let get = |k: &str| pairs.iter().find(|(p, _)| *p == k).map(|(_, v)| *v);
    let num = |k: &str, default: f64| -> Result<f64, FieldError> {
        match get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .map_err(|_| problem(spec, format!("{k}='{v}' is not a number"))),
        }
    };
    let count = |k: &str, default: Option<usize>| -> Result<usize, FieldError> {
        match (get(k), default) {
            (None, Some(d)) => Ok(d),
            (None, None) => Err(problem(spec, format!("{name} needs {k}=N"))),
            (Some(v), _) => v
                .parse::<usize>()
                .map_err(|_| problem(spec, format!("{k}='{v}' is not a whole number ≥ 0"))),
        }
    };
    let flag = |k: &str, default: bool| -> Result<bool, FieldError> {
        match get(k) {
            None => Ok(default),
            Some("1" | "true" | "on") => Ok(true),
            Some("0" | "false" | "off") => Ok(false),
            Some(v) => Err(problem(spec, format!("{k}='{v}' is not 0 or 1"))),
        }
    };
    let method = match kind {
        MethodKind::Baseline => Method::Baseline,
        MethodKind::Adaptive => Method::Adaptive {
            delta: num("delta", defaults::DELTA)?,
            max_skips: count("cmax", Some(defaults::MAX_SKIPS))?,
        },
        MethodKind::AdaptiveForecast => Method::AdaptiveForecast {
            delta: num("delta", defaults::DELTA)?,
            max_skips: count("cmax", Some(defaults::MAX_SKIPS))?,
        },
        MethodKind::Steps => Method::Steps {
            n: count("n", None)?,
        },
        MethodKind::TGate => Method::TGate {
            gate: count("gate", Some(TGATE_DEFAULTS.0))?,
            sp_interval: count("sp_interval", Some(TGATE_DEFAULTS.1))?,
            fi_interval: count("fi_interval", Some(TGATE_DEFAULTS.2))?,
            warm_up: count("warm_up", Some(TGATE_DEFAULTS.3))?,
        },
        MethodKind::DeepCache => Method::DeepCache {
            interval: count("interval", Some(DEEPCACHE_DEFAULTS.0))?,
            branch: count("branch", Some(DEEPCACHE_DEFAULTS.1))?,
        },
        MethodKind::UCache => {
            let d = UCacheSettings::default();
            Method::UCache(UCacheSettings {
                threshold: num("threshold", d.threshold)?,
                start: num("start", d.start)?,
                end: num("end", d.end)?,
                decay: num("decay", d.decay)?,
                relative: flag("relative", d.relative)?,
                reset: flag("reset", d.reset)?,
            })
        }
    };
    super::validate_method(&method).map_err(|e| {
        let text = match e.field {
            Field::Delta => e.worded("delta"),
            Field::MaxSkips => e.worded("cmax"),
            _ => e.problem.clone(),
        };
        problem(spec, text)
    })?;
    Ok(method)
}

/// The canonical spec of a method (every key, in order): what `parse` reads back.
pub fn format(method: &Method) -> String {
    match *method {
        Method::Baseline => "baseline".into(),
        Method::Adaptive { delta, max_skips } => format!("adaptive:delta={delta},cmax={max_skips}"),
        Method::AdaptiveForecast { delta, max_skips } => {
            format!("adaptive+forecast:delta={delta},cmax={max_skips}")
        }
        Method::Steps { n } => format!("steps:n={n}"),
        Method::DeepCache { interval, branch } => {
            format!("deepcache:interval={interval},branch={branch}")
        }
        Method::TGate {
            gate,
            sp_interval,
            fi_interval,
            warm_up,
        } => format!(
            "tgate:gate={gate},sp_interval={sp_interval},fi_interval={fi_interval},warm_up={warm_up}"
        ),
        Method::UCache(u) => format!(
            "ucache:threshold={},start={},end={},decay={},relative={},reset={}",
            u.threshold,
            u.start,
            u.end,
            u.decay,
            u8::from(u.relative),
            u8::from(u.reset)
        ),
    }
}

/// The specs a sweep stands for: a key with values separated by `/` gives one spec per
/// value (several such keys: every combination), e.g. `adaptive:delta=0.01/0.02` →
/// `adaptive:delta=0.01`, `adaptive:delta=0.02`.
pub fn expand_sweep(spec: &str) -> Vec<String> {
    let (name, rest) = match spec.split_once(':') {
        Some((n, r)) => (n, r),
        None => return vec![spec.to_string()],
    };
    let mut specs = vec![String::new()];
    for item in rest.split(',').filter(|s| !s.trim().is_empty()) {
        let (k, vs) = item.split_once('=').unwrap_or((item, ""));
        let values: Vec<&str> = vs.split('/').collect();
        specs = specs
            .iter()
            .flat_map(|s| {
                values.iter().map(move |v| {
                    let sep = if s.is_empty() { "" } else { "," };
                    format!("{s}{sep}{k}={v}")
                })
            })
            .collect();
    }
    specs.into_iter().map(|s| format!("{name}:{s}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_defaults_and_read_back() {
        assert_eq!(parse("baseline").unwrap(), Method::Baseline);
        assert_eq!(parse("adaptive").unwrap(), defaults::ADAPTIVE);
        assert_eq!(
            parse("adaptive:cmax=3, delta=0.02").unwrap(),
            Method::Adaptive {
                delta: 0.02,
                max_skips: 3
            }
        );
        assert_eq!(parse("steps:n=20").unwrap(), Method::Steps { n: 20 });
        assert_eq!(
            parse("deepcache:branch=4,interval=2").unwrap(),
            Method::DeepCache {
                interval: 2,
                branch: 4
            }
        );
        assert_eq!(
            parse("tgate:gate=6").unwrap(),
            Method::TGate {
                gate: 6,
                sp_interval: 5,
                fi_interval: 1,
                warm_up: 2
            }
        );
        let u = parse("ucache:threshold=0.5,relative=0").unwrap();
        assert_eq!(
            u,
            Method::UCache(UCacheSettings {
                threshold: 0.5,
                relative: false,
                ..UCacheSettings::default()
            })
        );
        for m in [
            Method::Baseline,
            parse("deepcache").unwrap(),
            parse("tgate").unwrap(),
            parse("adaptive+forecast:delta=0.03").unwrap(),
            parse("steps:n=7").unwrap(),
            u,
        ] {
            assert_eq!(parse(&format(&m)).unwrap(), m, "{}", format(&m));
        }
    }

    #[test]
    fn bad_specs_name_the_method_and_the_allowed_keys() {
        let e = |s: &str| parse(s).unwrap_err().worded("--method");
        assert!(e("warp").contains("no method is called 'warp' (methods: baseline, adaptive"));
        assert!(
            e("adaptive:interval=2").contains("adaptive has no key 'interval' (keys: delta, cmax)")
        );
        assert!(e("baseline:n=3").contains("baseline has no key 'n' (it takes none)"));
        assert!(e("steps").contains("steps needs n=N"));
        assert!(e("steps:n=0").contains("n must be at least 1"));
        assert!(e("adaptive:delta=x").contains("delta='x' is not a number"));
        assert!(e("adaptive:delta=-1").contains("delta must be a finite number ≥ 0"));
        assert!(e("adaptive:cmax=0").contains("cmax must be at least 1"));
        assert!(e("ucache:relative=maybe").contains("relative='maybe' is not 0 or 1"));
        assert!(e("adaptive:delta=1,delta=2").contains("'delta' is given twice"));
        assert!(e("adaptive:delta").contains("'delta' is not KEY=VALUE"));
    }

    #[test]
    fn sweeps_expand_to_every_combination() {
        assert_eq!(expand_sweep("baseline"), ["baseline"]);
        assert_eq!(
            expand_sweep("adaptive:delta=0.01/0.02,cmax=3/4"),
            [
                "adaptive:delta=0.01,cmax=3",
                "adaptive:delta=0.01,cmax=4",
                "adaptive:delta=0.02,cmax=3",
                "adaptive:delta=0.02,cmax=4"
            ]
        );
    }
}
