//! A method with its settings: [`Method`], the one value every front end builds (or parses
//! from a spec, see `job::method_spec`), the sampler runs and the trace records. What a
//! method *is* — its keys, defaults, checks and rule — lives in its module under
//! [`super::methods`]; a `Method` is a registered [`MethodDef`] plus one value per key.
//!
//! In JSON a method is the `mode` key (its name), the `delta` and `max_skips` keys of every
//! earlier version (`null` where a method has no such setting), and each of its own keys by
//! name; older spellings of a key (`cmax`, T-GATE's `gate`, the nested `ucache` and `tgate`
//! objects) still read.

use super::methods::{self, KeyKind, MethodDef};
use serde::de::Error as _;
use serde::ser::SerializeMap;
use std::collections::BTreeMap;
use std::fmt;

/// The most keys a method may have.
pub const MAX_KEYS: usize = 8;

/// A registered method with a value for each of its keys.
#[derive(Clone, Copy)]
pub struct Method {
    def: &'static dyn MethodDef,
    /// In the order of `def.keys()`.
    values: [f64; MAX_KEYS],
}

/// A method's setting that cannot run, named by the method and its key (each front end words
/// it with its own name for the setting: a flag, a slider, a spec key).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{method}: {key} {problem}")]
pub struct MethodError {
    /// The method.
    pub method: &'static str,
    /// The key (empty when the problem is the method itself, e.g. its scheduler).
    pub key: &'static str,
    /// What is wrong, worded to follow the key's name.
    pub problem: String,
}

impl Method {
    /// Every step calls the noise predictor.
    pub const BASELINE: Method = Method {
        def: &methods::baseline::Baseline,
        values: [0.0; MAX_KEYS],
    };

    /// AdaptiveDiffusion with threshold δ and at most `max_skips` (C_max) skips in a row.
    pub const fn adaptive(delta: f64, max_skips: usize) -> Method {
        let mut values = [0.0; MAX_KEYS];
        values[0] = delta;
        values[1] = max_skips as f64;
        Method {
            def: &methods::adaptive::Adaptive,
            values,
        }
    }

    /// `n` steps of the same scheduler, every one computed.
    pub const fn steps(n: usize) -> Method {
        let mut values = [0.0; MAX_KEYS];
        values[0] = n as f64;
        Method {
            def: &methods::steps::Steps,
            values,
        }
    }

    /// `def` with every key at its default.
    pub fn of(def: &'static dyn MethodDef) -> Method {
        let mut values = [0.0; MAX_KEYS];
        for (v, k) in values.iter_mut().zip(def.keys()) {
            *v = k.default;
        }
        Method { def, values }
    }

    /// The registered method called `name`, with its defaults.
    pub fn named(name: &str) -> Option<Method> {
        methods::find(name).map(Method::of)
    }

    /// What the method is.
    pub fn def(&self) -> &'static dyn MethodDef {
        self.def
    }

    /// Which method, without its settings.
    pub fn kind(&self) -> MethodKind {
        MethodKind(self.def)
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        self.def.name()
    }

    fn index(&self, key: &str) -> Option<usize> {
        self.def.keys().iter().position(|k| k.name == key)
    }

    /// The value of `key`, when the method has it.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.index(key).map(|i| self.values[i])
    }

    /// The value of the method's own `key` (0 for a key it does not have).
    pub fn num(&self, key: &str) -> f64 {
        debug_assert!(
            self.index(key).is_some(),
            "{} has no key {key}",
            self.name()
        );
        self.get(key).unwrap_or(0.0)
    }

    /// The value of the method's own count `key`.
    pub fn count(&self, key: &str) -> usize {
        self.num(key).max(0.0) as usize
    }

    /// The value of the method's own flag `key`.
    pub fn flag(&self, key: &str) -> bool {
        self.num(key) != 0.0
    }

    /// The same method with `key` set to `v` (unchanged when it has no such key).
    pub fn with(mut self, key: &str, v: f64) -> Method {
        if let Some(i) = self.index(key) {
            self.values[i] = v;
        }
        self
    }

    /// The value of `key` as written in specs and picture titles.
    pub fn shown(&self, key: &str) -> String {
        let Some(i) = self.index(key) else {
            return String::new();
        };
        self.def.keys()[i].show(self.values[i])
    }

    /// Check every key's value and the method's own relations between them.
    pub fn validate(&self) -> Result<(), MethodError> {
        for (k, &v) in self.def.keys().iter().zip(&self.values) {
            k.check(v).map_err(|problem| MethodError {
                method: self.name(),
                key: k.name,
                problem,
            })?;
        }
        self.def.check(self)
    }

    /// The canonical spec (every key, in order): what `job::method_spec::parse` reads back.
    pub fn spec(&self) -> String {
        let keys: Vec<String> = self
            .def
            .keys()
            .iter()
            .map(|k| format!("{}={}", k.name, self.shown(k.name)))
            .collect();
        if keys.is_empty() {
            self.name().to_string()
        } else {
            format!("{}:{}", self.name(), keys.join(","))
        }
    }

    /// Its settings in a few words for picture titles ("δ threshold 0.01 · C_max 4").
    pub fn describe(&self) -> String {
        self.def.describe(self)
    }

    /// When it does not run with `scheduler` (its authors' code supports others): the
    /// schedulers it runs on, as "euler, dpm++".
    pub fn refuses(&self, scheduler: super::SchedulerKind) -> Option<String> {
        let ok = self.def.schedulers()?;
        (!ok.contains(&scheduler))
            .then(|| ok.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "))
    }

    /// Whether its runs may save work.
    pub fn saves_work(&self) -> bool {
        self.def.saves_work()
    }

    /// The step count it runs instead of the job's (`steps:n=N`).
    pub fn own_steps(&self) -> Option<usize> {
        self.def.own_steps(self)
    }

    /// δ and C_max of the methods that have both (AdaptiveDiffusion's rule).
    pub fn adaptive_rule(&self) -> Option<(f64, usize)> {
        Some((self.get("delta")?, self.get("max_skips")? as usize))
    }

    /// δ of a method that has it.
    pub fn delta(&self) -> Option<f64> {
        self.get("delta")
    }

    /// C_max of a method that has it.
    pub fn max_skips(&self) -> Option<usize> {
        self.get("max_skips").map(|v| v as usize)
    }

    /// The same method with δ and C_max replaced (methods without them are unchanged).
    pub fn with_adaptive_rule(self, delta: f64, max_skips: usize) -> Method {
        self.with("delta", delta)
            .with("max_skips", max_skips as f64)
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name() && self.values == other.values
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Method({})", self.spec())
    }
}

impl serde::Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("mode", self.name())?;
        map.serialize_entry("delta", &self.delta())?;
        map.serialize_entry("max_skips", &self.max_skips())?;
        for (k, &v) in self.def.keys().iter().zip(&self.values) {
            if matches!(k.name, "delta" | "max_skips") {
                continue;
            }
            match k.kind {
                KeyKind::Count => map.serialize_entry(k.name, &(v as u64))?,
                KeyKind::Flag => map.serialize_entry(k.name, &(v != 0.0))?,
                KeyKind::Number => map.serialize_entry(k.name, &v)?,
            }
        }
        map.end()
    }
}

/// A JSON value as a key's number: numbers, and booleans as 0 / 1.
fn json_number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
        v => v.as_f64(),
    }
}

impl TryFrom<&BTreeMap<String, serde_json::Value>> for Method {
    type Error = String;
    fn try_from(map: &BTreeMap<String, serde_json::Value>) -> Result<Self, String> {
        let name = map
            .get("mode")
            .and_then(|v| v.as_str())
            .ok_or("a run needs its method's name under `mode`")?;
        let def = methods::find(name)
            .ok_or_else(|| format!("unknown method '{name}' (methods: {})", methods::names()))?;
        let mut method = Method::of(def);
        for (i, k) in def.keys().iter().enumerate() {
            let lookup = |name: &str| -> Option<&serde_json::Value> {
                match name.split_once('.') {
                    Some((outer, inner)) => map.get(outer)?.get(inner),
                    None => map.get(name),
                }
            };
            let found = std::iter::once(k.name)
                .chain(k.aliases.iter().copied())
                .find_map(lookup);
            match found {
                Some(serde_json::Value::Null) => {
                    return Err(format!("a {name} run needs `{}` (it is null)", k.name));
                }
                Some(v) => {
                    method.values[i] = json_number(v)
                        .ok_or_else(|| format!("{name}'s `{}` is not a number: {v}", k.name))?;
                }
                None if k.required => return Err(format!("a {name} run needs `{}`", k.name)),
                None => {}
            }
        }
        Ok(method)
    }
}

impl<'de> serde::Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        Method::try_from(&map).map_err(D::Error::custom)
    }
}

/// Which method, without its settings (what menus, `--mode` and CSV columns name).
#[derive(Clone, Copy)]
pub struct MethodKind(&'static dyn MethodDef);

impl MethodKind {
    /// [`Method::BASELINE`]'s kind.
    pub const BASELINE: MethodKind = MethodKind(&methods::baseline::Baseline);
    /// AdaptiveDiffusion's kind.
    pub const ADAPTIVE: MethodKind = MethodKind(&methods::adaptive::Adaptive);

    /// Every registered kind, in menu order.
    pub fn all() -> impl Iterator<Item = MethodKind> {
        methods::METHODS.iter().map(|d| MethodKind(*d))
    }

    /// The registered kind called `name`.
    pub fn named(name: &str) -> Option<MethodKind> {
        methods::find(name).map(MethodKind)
    }

    /// What the method is.
    pub fn def(self) -> &'static dyn MethodDef {
        self.0
    }

    /// The name in specs, traces and CSV files.
    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl PartialEq for MethodKind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for MethodKind {}

impl std::hash::Hash for MethodKind {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.name().hash(h);
    }
}

impl fmt::Debug for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MethodKind({})", self.name())
    }
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MethodKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MethodKind::named(s)
            .ok_or_else(|| format!("unknown method '{s}' (methods: {})", methods::names()))
    }
}

/// The registered names, for serde's enum form.
fn variant_names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| methods::METHODS.iter().map(|m| m.name()).collect())
}

impl serde::Serialize for MethodKind {
    /// As a unit variant named by the method: a string in JSON and CSV, the bare identifier
    /// the enum of earlier versions wrote in eframe's RON.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let index = methods::METHODS
            .iter()
            .position(|m| m.name() == self.name())
            .unwrap_or(0);
        s.serialize_unit_variant("MethodKind", index as u32, self.name())
    }
}

impl<'de> serde::Deserialize<'de> for MethodKind {
    /// From a unit variant named by the method (JSON and CSV strings, RON identifiers).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = MethodKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a method's name")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<MethodKind, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_enum<A: serde::de::EnumAccess<'de>>(
                self,
                data: A,
            ) -> Result<MethodKind, A::Error> {
                use serde::de::VariantAccess;
                let (Ident(name), variant): (Ident, _) = data.variant()?;
                variant.unit_variant()?;
                name.parse().map_err(A::Error::custom)
            }
        }
        /// A variant's name, read as an identifier (RON writes it bare).
        struct Ident(String);
        impl<'de> serde::Deserialize<'de> for Ident {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = Ident;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a method's name")
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Ident, E> {
                        Ok(Ident(s.to_string()))
                    }
                }
                d.deserialize_identifier(V)
            }
        }
        d.deserialize_enum("MethodKind", variant_names(), Name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_method_and_key() {
        let e = Method::adaptive(-0.1, 4).validate().unwrap_err();
        assert_eq!((e.method, e.key), ("adaptive", "delta"));
        assert_eq!(
            e.to_string(),
            "adaptive: delta must be within 0–10 (got -0.1)"
        );
        let e = Method::named("adaptive+forecast")
            .unwrap()
            .with("max_skips", 0.0)
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "max_skips");
        let e = Method::steps(0).validate().unwrap_err();
        assert_eq!(e.to_string(), "steps: n must be at least 1 (got 0)");
        let u = Method::named("ucache")
            .unwrap()
            .with("start", 0.9)
            .with("end", 0.5);
        let e = u.validate().unwrap_err();
        assert!(
            e.to_string().starts_with("ucache: start must be below end"),
            "{e}"
        );
        for m in methods::METHODS {
            if m.keys().iter().all(|k| !k.required) {
                assert!(Method::of(*m).validate().is_ok(), "{}", m.name());
            }
        }
    }

    #[test]
    fn every_method_survives_a_trip_through_json() {
        for def in methods::METHODS {
            let m = Method::of(*def).with("n", 12.0);
            let json = serde_json::to_value(m).unwrap();
            assert_eq!(json["mode"], m.name());
            assert!(json.get("delta").is_some() && json.get("max_skips").is_some());
            assert_eq!(serde_json::from_value::<Method>(json).unwrap(), m);
        }
        let json = serde_json::to_value(Method::adaptive(0.02, 3)).unwrap();
        assert_eq!(json["delta"], 0.02);
        assert_eq!(json["max_skips"], 3);
    }

    #[test]
    fn every_kind_round_trips_through_json_and_ron() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct S {
            method: MethodKind,
        }
        for k in MethodKind::all() {
            let s = S { method: k };
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!(r#"{{"method":"{}"}}"#, k.name()));
            assert_eq!(serde_json::from_str::<S>(&json).unwrap(), s);
            let ron = ron::ser::to_string(&s).unwrap();
            assert_eq!(ron::from_str::<S>(&ron).unwrap(), s, "{ron}");
        }
        // eframe's RON of the versions before the registry (a bare variant name).
        let old: S = ron::from_str("(method:adaptive)").unwrap();
        assert_eq!(old.method, MethodKind::ADAPTIVE);
        assert!(serde_json::from_str::<S>(r#"{"method":"warp"}"#).is_err());
    }

    #[test]
    fn old_json_still_reads() {
        let old = |s: &str| serde_json::from_str::<Method>(s).unwrap();
        assert_eq!(
            old(
                r#"{"mode":"tgate","delta":null,"max_skips":null,"tgate":{"gate_step":6,"sp_interval":5,"fi_interval":1,"warm_up":2}}"#
            ),
            Method::named("tgate").unwrap().with("gate_step", 6.0)
        );
        assert_eq!(
            old(
                r#"{"mode":"ucache","delta":null,"max_skips":null,"ucache":{"threshold":0.5,"start":0.15,"end":0.95,"decay":1.0,"relative":false,"reset":true}}"#
            ),
            Method::named("ucache")
                .unwrap()
                .with("threshold", 0.5)
                .with("relative", 0.0)
        );
        assert_eq!(
            old(r#"{"mode":"adaptive","delta":0.01,"max_skips":4}"#),
            Method::adaptive(0.01, 4)
        );
        assert_eq!(
            old(r#"{"mode":"deepcache","delta":null,"max_skips":null,"interval":3,"branch":2}"#),
            Method::named("deepcache").unwrap().with("branch", 2.0)
        );
        let e = serde_json::from_str::<Method>(r#"{"mode":"steps"}"#).unwrap_err();
        assert!(e.to_string().contains("a steps run needs `n`"), "{e}");
        let e = serde_json::from_str::<Method>(r#"{"mode":"warp"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown method 'warp'"), "{e}");
    }
}
