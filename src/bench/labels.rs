//! The labels of a report's settings: each a method spec shortened to what tells it apart
//! from the others in the same report — its method's name plus only the keys whose values
//! differ between that method's settings — so that two rows never read the same
//! (`adaptive` and `adaptive+forecast`, not "δ = 0.01" twice). A setting whose short form
//! would still collide keeps its full spec.

use super::plan::BASELINE;
use super::records::RunRow;
use super::summary::GroupSummary;
use crate::sampler::Method;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The `budget` setting's label.
const BUDGET_LABEL: &str = "complexity budget, no skipping";

/// Prefix and suffix of a fixed-step run matched to another setting's calls.
const MATCH: (&str, &str) = ("steps:n=match(", ")");

/// One label per setting of a report.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    labels: HashMap<String, String>,
}

/// A setting as a report knows it: its name in `runs.csv`, and the δ and C_max of a
/// `delta=…` setting of a δ sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingOf {
    /// The `setting` column.
    pub setting: String,
    /// δ, when the row has one.
    pub delta: Option<f64>,
    /// C_max, when the row has one.
    pub max_skips: Option<usize>,
}

/// A spec's method name and its `key=value` pairs.
fn split(spec: &str) -> (&str, Vec<(&str, &str)>) {
    match spec.split_once(':') {
        Some((name, keys)) => (
            name,
            keys.split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect(),
        ),
        None => (spec, vec![]),
    }
}

/// The inner spec of `steps:n=match(SPEC)`.
fn matched(spec: &str) -> Option<&str> {
    spec.strip_prefix(MATCH.0)?.strip_suffix(MATCH.1)
}

impl Labels {
    /// The labels of these settings (repeats are fine).
    pub fn new(settings: impl IntoIterator<Item = SettingOf>) -> Self {
        let mut seen: Vec<SettingOf> = vec![];
        for s in settings {
            if !seen.iter().any(|t| t.setting == s.setting) {
                seen.push(s);
            }
        }
        // A report of a δ sweep alone keeps its "δ = …" labels; beside other methods a
        // sweep's setting is named as the AdaptiveDiffusion spec it ran.
        let sweep_only = seen
            .iter()
            .filter(|s| s.setting != BASELINE && s.setting != "budget")
            .all(|s| s.setting.starts_with("delta="));
        let spec_of = |s: &SettingOf| -> String {
            match (s.setting.strip_prefix("delta="), s.delta, s.max_skips) {
                (Some(_), Some(delta), Some(max_skips)) => {
                    crate::job::method_spec::format(&Method::adaptive(delta, max_skips))
                }
                (Some(d), _, _) => format!("adaptive:delta={d}"),
                _ => s.setting.clone(),
            }
        };
        // Every spec in the report, the matched ones' inner specs too.
        let specs: Vec<String> = seen
            .iter()
            .map(spec_of)
            .flat_map(|s| {
                let inner = matched(&s).map(str::to_string);
                std::iter::once(s).chain(inner)
            })
            .collect();
        // Per method name, each key's values.
        let mut values: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
        for spec in specs.iter().filter(|s| matched(s).is_none()) {
            let (name, keys) = split(spec);
            let v = values.entry(name).or_default();
            for (k, x) in keys {
                v.entry(k).or_default().insert(x);
            }
        }
        let short = |spec: &str| -> String {
            let (name, keys) = split(spec);
            let varying: Vec<String> = keys
                .iter()
                .filter(|(k, _)| values[name].get(k).is_some_and(|v| v.len() > 1))
                .map(|(k, x)| format!("{k}={x}"))
                .collect();
            if varying.is_empty() {
                name.to_string()
            } else {
                format!("{name}:{}", varying.join(","))
            }
        };
        let mut labels: HashMap<String, String> = seen
            .iter()
            .map(|s| {
                let label = match s.setting.as_str() {
                    BASELINE => BASELINE.to_string(),
                    "budget" => BUDGET_LABEL.to_string(),
                    _ if sweep_only => match s.delta {
                        Some(d) => format!("δ = {d}"),
                        None => s.setting.clone(),
                    },
                    _ => {
                        let spec = spec_of(s);
                        match matched(&spec) {
                            Some(inner) => format!("{}{}{}", MATCH.0, short(inner), MATCH.1),
                            None => short(&spec),
                        }
                    }
                };
                (s.setting.clone(), label)
            })
            .collect();
        // Whatever still collides keeps its full name.
        let mut count: HashMap<String, usize> = HashMap::new();
        for l in labels.values() {
            *count.entry(l.clone()).or_default() += 1;
        }
        for (setting, label) in labels.iter_mut() {
            if count[label.as_str()] > 1 {
                *label = setting.clone();
            }
        }
        Self { labels }
    }

    /// The labels of a summary's groups.
    pub fn of_groups(groups: &[GroupSummary]) -> Self {
        Self::new(groups.iter().map(|g| SettingOf {
            setting: g.setting.clone(),
            delta: g.delta,
            max_skips: g.max_skips,
        }))
    }

    /// The labels of the settings of these runs.
    pub fn of_rows(rows: &[RunRow]) -> Self {
        Self::new(rows.iter().map(|r| SettingOf {
            setting: r.setting.clone(),
            delta: r.delta,
            max_skips: r.max_skips,
        }))
    }

    /// The label of a setting (the setting itself when it is not one of the report's).
    pub fn get<'a>(&'a self, setting: &'a str) -> &'a str {
        self.labels.get(setting).map_or(setting, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(settings: &[(&str, Option<f64>)]) -> Labels {
        Labels::new(settings.iter().map(|(s, d)| SettingOf {
            setting: s.to_string(),
            delta: *d,
            max_skips: d.map(|_| 4),
        }))
    }

    #[test]
    fn adaptive_and_its_forecast_variant_read_apart() {
        // The committed methods bench: both at δ = 0.01 read "δ = 0.01" before.
        let settings = [
            ("baseline", None),
            ("adaptive:delta=0.01,cmax=4", Some(0.01)),
            ("adaptive+forecast:delta=0.01,cmax=4", Some(0.01)),
            ("deepcache:interval=3,branch=0", None),
            ("steps:n=match(adaptive:delta=0.01,cmax=4)", None),
            ("steps:n=match(adaptive+forecast:delta=0.01,cmax=4)", None),
        ];
        let l = labels(&settings);
        let got: Vec<&str> = settings.iter().map(|(s, _)| l.get(s)).collect();
        assert_eq!(
            got,
            [
                "baseline",
                "adaptive",
                "adaptive+forecast",
                "deepcache",
                "steps:n=match(adaptive)",
                "steps:n=match(adaptive+forecast)",
            ]
        );
    }

    #[test]
    fn a_sweep_keeps_the_keys_that_vary() {
        let settings = [
            ("baseline", None),
            ("adaptive:delta=0.004,cmax=4", Some(0.004)),
            ("adaptive:delta=0.02,cmax=4", Some(0.02)),
            ("deepcache:interval=2,branch=0", None),
            ("deepcache:interval=3,branch=0", None),
            ("steps:n=match(deepcache:interval=2,branch=0)", None),
        ];
        let l = labels(&settings);
        let got: Vec<&str> = settings.iter().map(|(s, _)| l.get(s)).collect();
        assert_eq!(
            got,
            [
                "baseline",
                "adaptive:delta=0.004",
                "adaptive:delta=0.02",
                "deepcache:interval=2",
                "deepcache:interval=3",
                "steps:n=match(deepcache:interval=2)",
            ]
        );
    }

    #[test]
    fn a_delta_sweep_alone_reads_as_deltas_and_beside_methods_as_specs() {
        let alone = labels(&[
            ("baseline", None),
            ("budget", None),
            ("delta=0.004", Some(0.004)),
            ("delta=0.012", Some(0.012)),
        ]);
        assert_eq!(alone.get("delta=0.012"), "δ = 0.012");
        assert_eq!(alone.get("budget"), BUDGET_LABEL);
        // Beside the forecast variant at the same δ, the old `delta=` setting (as in a
        // `runs.csv` of an earlier version) names its method.
        let mixed = labels(&[
            ("baseline", None),
            ("delta=0.01", Some(0.01)),
            ("adaptive+forecast:delta=0.01,cmax=4", Some(0.01)),
        ]);
        assert_eq!(mixed.get("delta=0.01"), "adaptive");
        assert_eq!(
            mixed.get("adaptive+forecast:delta=0.01,cmax=4"),
            "adaptive+forecast"
        );
    }

    #[test]
    fn labels_that_would_collide_keep_the_full_setting() {
        // The sweep's `delta=0.01` and the spec run the same method: both short forms read
        // "adaptive", so both keep their full names.
        let l = labels(&[
            ("delta=0.01", Some(0.01)),
            ("adaptive:delta=0.01,cmax=4", Some(0.01)),
            ("tgate:gate=10", None),
        ]);
        assert_eq!(l.get("delta=0.01"), "delta=0.01");
        assert_eq!(
            l.get("adaptive:delta=0.01,cmax=4"),
            "adaptive:delta=0.01,cmax=4"
        );
        assert_eq!(l.get("tgate:gate=10"), "tgate");
        assert_eq!(l.get("unknown"), "unknown");
    }
}
