//! One side's acceleration-method settings. Each side of the comparison has its own set, so
//! the left side's method is tuned independently of the right side's; every registered
//! method keeps its own values (switching methods and back keeps them).

use crate::sampler::{Method, MethodKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The settings of every method for one side (only the chosen method's are used); a method
/// never touched has its registry defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodParams {
    by_name: BTreeMap<&'static str, Method>,
}

impl MethodParams {
    /// A method of the given kind with these settings.
    pub fn method(&self, kind: MethodKind) -> Method {
        self.by_name
            .get(kind.name())
            .copied()
            .unwrap_or_else(|| Method::of(kind.def()))
    }

    /// The value of `key` of method `kind`.
    pub fn get(&self, kind: MethodKind, key: &str) -> f64 {
        self.method(kind).get(key).unwrap_or(0.0)
    }

    /// Set `key` of method `kind` (a key it does not have is ignored).
    pub fn set(&mut self, kind: MethodKind, key: &str, v: f64) {
        let m = self.method(kind).with(key, v);
        self.by_name.insert(kind.name(), m);
    }

    /// Keep `method`'s settings as its kind's.
    pub fn keep(&mut self, method: Method) {
        self.by_name.insert(method.name(), method);
    }
}

impl Serialize for MethodParams {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.by_name.serialize(s)
    }
}

impl<'de> Deserialize<'de> for MethodParams {
    /// Leniently: a method that is no longer registered, or whose settings no longer read,
    /// takes its defaults instead of failing the whole settings file.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        let mut p = MethodParams::default();
        for v in raw.values() {
            if let Ok(m) = serde_json::from_value::<Method>(v.clone()) {
                p.keep(m);
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_takes_its_own_settings() {
        let mut p = MethodParams::default();
        p.set(MethodKind::ADAPTIVE, "delta", 0.05);
        let steps = MethodKind::named("steps").unwrap();
        p.set(steps, "n", 7.0);
        assert_eq!(p.method(MethodKind::ADAPTIVE).delta(), Some(0.05));
        assert_eq!(p.method(steps).own_steps(), Some(7));
        assert_eq!(p.method(MethodKind::BASELINE), Method::BASELINE);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<MethodParams>(&json).unwrap(), p);
        // A method that no longer reads keeps its defaults; the others survive.
        let odd = r#"{"warp":{"mode":"warp"},"steps":{"mode":"steps","n":9}}"#;
        let back: MethodParams = serde_json::from_str(odd).unwrap();
        assert_eq!(back.get(steps, "n"), 9.0);
    }
}
