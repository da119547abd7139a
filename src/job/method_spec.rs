//! Methods written as text: `NAME[:KEY=VALUE,…]` (`adaptive:delta=0.02,max_skips=3`,
//! `steps:n=20`, `ucache:threshold=0.8`), what `--method`, `compare --left/--right` and the
//! bench take. The names, keys and defaults come from the method registry
//! ([`crate::sampler::methods`]); keys a spec leaves out take their defaults. A benchmark
//! may sweep a key with several values separated by `/` ([`expand_sweep`]).

use crate::field::{Field, FieldError};
use crate::sampler::methods::{KeyKind, METHODS, MethodDef};
use crate::sampler::{Method, methods};
use std::fmt;

/// Every method with its keys, for messages and `--help`:
/// `baseline, adaptive[:delta=D,max_skips=N], steps:n=N, …`.
pub fn methods_help() -> String {
    METHODS
        .iter()
        .map(|m| usage(*m))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One method's spec form: `NAME`, `NAME:KEY=V` (required keys) or `NAME[:KEY=V,…]`.
pub fn usage(m: &dyn MethodDef) -> String {
    let keys: Vec<String> = m
        .keys()
        .iter()
        .map(|k| {
            let v = match k.kind {
                KeyKind::Count => "N",
                KeyKind::Number => "X",
                KeyKind::Flag => "0|1",
            };
            format!("{}={v}", k.name)
        })
        .collect();
    if keys.is_empty() {
        m.name().to_string()
    } else if m.keys().iter().any(|k| k.required) {
        format!("{}:{}", m.name(), keys.join(","))
    } else {
        format!("{}[:{}]", m.name(), keys.join(","))
    }
}

fn problem(spec: &str, what: impl fmt::Display) -> FieldError {
    FieldError::new(Field::Method, format!("'{spec}': {what}"))
}

/// Parse one spec (no sweeps), checking its keys and values.
pub fn parse(spec: &str) -> Result<Method, FieldError> {
    let (name, rest) = spec.trim().split_once(':').unwrap_or((spec.trim(), ""));
    let name = name.trim();
    let def = methods::find(name).ok_or_else(|| {
        problem(
            spec,
            format!("no method is called '{name}' (methods: {})", methods_help()),
        )
    })?;
    let keys = def.keys();
    let mut method = Method::of(def);
    let mut given: Vec<&str> = Vec::new();
    for item in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(problem(spec, format!("'{item}' is not KEY=VALUE")));
        };
        let (k, v) = (k.trim(), v.trim());
        let Some(key) = keys
            .iter()
            .find(|key| key.name == k || key.aliases.contains(&k))
        else {
            let allowed = if keys.is_empty() {
                "it takes none".to_string()
            } else {
                let names: Vec<_> = keys.iter().map(|k| k.name).collect();
                format!("keys: {}", names.join(", "))
            };
            return Err(problem(
                spec,
                format!("{name} has no key '{k}' ({allowed})"),
            ));
        };
        if given.contains(&key.name) {
            return Err(problem(spec, format!("'{}' is given twice", key.name)));
        }
        given.push(key.name);
        let value = match key.kind {
            KeyKind::Number => v
                .parse::<f64>()
                .map_err(|_| problem(spec, format!("{k}='{v}' is not a number")))?,
            KeyKind::Count => v
                .parse::<usize>()
                .map_err(|_| problem(spec, format!("{k}='{v}' is not a whole number ≥ 0")))?
                as f64,
            KeyKind::Flag => match v {
                "1" | "true" | "on" => 1.0,
                "0" | "false" | "off" => 0.0,
                _ => return Err(problem(spec, format!("{k}='{v}' is not 0 or 1"))),
            },
        };
        method = method.with(key.name, value);
    }
    if let Some(k) = keys.iter().find(|k| k.required && !given.contains(&k.name)) {
        return Err(problem(spec, format!("{name} needs {}=N", k.name)));
    }
    method
        .validate()
        .map_err(|e| problem(spec, format!("{} {}", e.key, e.problem)))?;
    super::validate_method(&method).map_err(|e| problem(spec, e.problem.clone()))?;
    Ok(method)
}

/// The canonical spec of a method (every key, in order): what `parse` reads back.
pub fn format(method: &Method) -> String {
    method.spec()
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
        assert_eq!(parse("baseline").unwrap(), Method::BASELINE);
        assert_eq!(parse("adaptive").unwrap(), super::super::defaults::ADAPTIVE);
        assert_eq!(
            parse("adaptive:max_skips=3, delta=0.02").unwrap(),
            Method::adaptive(0.02, 3)
        );
        // The old name of C_max still reads.
        assert_eq!(
            parse("adaptive:cmax=3,delta=0.02").unwrap(),
            Method::adaptive(0.02, 3)
        );
        assert_eq!(parse("steps:n=20").unwrap(), Method::steps(20));
        let dc = Method::named("deepcache").unwrap();
        assert_eq!(
            parse("deepcache:branch=4,interval=2").unwrap(),
            dc.with("interval", 2.0).with("branch", 4.0)
        );
        let tg = Method::named("tgate").unwrap();
        assert_eq!(parse("tgate:gate=6").unwrap(), tg.with("gate_step", 6.0));
        assert_eq!(tg.count("sp_interval"), 5);
        let u = parse("ucache:threshold=0.5,relative=0").unwrap();
        assert_eq!(
            u,
            Method::named("ucache")
                .unwrap()
                .with("threshold", 0.5)
                .with("relative", 0.0)
        );
        for def in METHODS {
            let m = Method::of(*def);
            assert_eq!(parse(&format(&m)).unwrap(), m, "{}", format(&m));
        }
        assert_eq!(
            format(&Method::adaptive(0.01, 4)),
            "adaptive:delta=0.01,max_skips=4"
        );
        assert_eq!(
            format(&Method::named("ucache").unwrap()),
            "ucache:threshold=1,start=0.15,end=0.95,decay=1,relative=1,reset=1"
        );
    }

    #[test]
    fn bad_specs_name_the_method_and_the_allowed_keys() {
        let e = |s: &str| parse(s).unwrap_err().worded("--method");
        assert!(e("warp").contains("no method is called 'warp' (methods: baseline, adaptive"));
        assert!(
            e("adaptive:interval=2")
                .contains("adaptive has no key 'interval' (keys: delta, max_skips)")
        );
        assert!(e("baseline:n=3").contains("baseline has no key 'n' (it takes none)"));
        assert!(e("steps").contains("steps needs n=N"));
        assert!(e("steps:n=0").contains("n must be at least 1"));
        assert!(e("adaptive:delta=x").contains("delta='x' is not a number"));
        assert!(e("adaptive:delta=-1").contains("delta must be within 0–10"));
        assert!(e("adaptive:cmax=0").contains("max_skips must be at least 1"));
        assert!(e("ucache:relative=maybe").contains("relative='maybe' is not 0 or 1"));
        assert!(e("adaptive:delta=1,delta=2").contains("'delta' is given twice"));
        assert!(e("adaptive:delta").contains("'delta' is not KEY=VALUE"));
        assert!(e("deepcache:branch=12").contains("branch must be within 0–11"));
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
