//! Acceleration methods: how a run saves noise-predictor work.
//!
//! [`Method`] is the one description of *how* a run saves work; every front end (command
//! line, desktop app, benchmark) builds it (or parses it from a spec string, see
//! [`crate::job::method_spec`]), the sampler runs it, and the trace records it (as `mode`,
//! `delta`, `max_skips` — the JSON of every earlier version — plus the keys of the newer
//! methods). A new method is a new variant here, a new [`MethodKind`], its keys in the spec
//! and the trace, and its rule in the sampler loop.
//!
//! * `baseline` — every step.
//! * `adaptive` — AdaptiveDiffusion's third-order rule ([`super::adaptive`]).
//! * `steps` — the same scheduler with fewer steps: the control every accelerator must beat.
//! * `adaptive+forecast` — AdaptiveDiffusion's decisions; a skipped step forecasts each
//!   guidance half from the last two computed predictions instead of reusing the last one.
//! * `ucache` — stable-diffusion.cpp's UNet cache ([`super::ucache`]).
//! * `deepcache` — DeepCache: partial UNet calls between full ones ([`super::deepcache`]).

/// How a run may save noise-predictor calls.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "MethodFields", try_from = "MethodFields")]
pub enum Method {
    /// Every step calls the noise predictor.
    Baseline,
    /// The third-order rule with threshold δ and at most `max_skips` (C_max) skips in a row.
    Adaptive {
        /// δ, relative threshold on the third-order latent difference.
        delta: f64,
        /// C_max, the longest run of skips before a compute is forced.
        max_skips: usize,
    },
    /// `n` steps of the same scheduler, every one computed.
    Steps {
        /// The step count.
        n: usize,
    },
    /// The third-order rule's decisions; a skipped step forecasts ε to first order.
    AdaptiveForecast {
        /// δ, as for [`Method::Adaptive`].
        delta: f64,
        /// C_max, as for [`Method::Adaptive`].
        max_skips: usize,
    },
    /// stable-diffusion.cpp's UNet cache.
    UCache(UCacheSettings),
    /// T-GATE: cross-attention cached after the gate step (and guidance dropped), self-
    /// attention refreshed at intervals.
    TGate {
        /// `gate_step`.
        gate: usize,
        /// `sp_interval`: self-attention refresh before the gate.
        sp_interval: usize,
        /// `fi_interval`: self-attention refresh after the gate.
        fi_interval: usize,
        /// `warm_up`: steps that always compute self-attention.
        warm_up: usize,
    },
    /// DeepCache: between full steps, the UNet's deep modules return their cached outputs.
    DeepCache {
        /// `cache_interval`: every `interval`-th step is full.
        interval: usize,
        /// `cache_branch_id`: where the shallow path ends (block `branch / 3`, layer
        /// `branch % 3`).
        branch: usize,
    },
}

/// The settings of `ucache` (stable-diffusion.cpp's `UCacheConfig`, its names shortened).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UCacheSettings {
    /// `reuse_threshold`: skip while the accumulated error stays below it.
    pub threshold: f64,
    /// `start_percent`: the cache is active from this share of the steps…
    pub start: f64,
    /// `end_percent`: …up to this share.
    pub end: f64,
    /// `error_decay_rate`: the accumulated error is multiplied by it at each test.
    pub decay: f64,
    /// `use_relative_threshold`: the change estimate is relative to the output's size.
    pub relative: bool,
    /// `reset_error_on_compute`: a computed step clears the accumulated error.
    pub reset: bool,
}

impl Default for UCacheSettings {
    /// stable-diffusion.cpp's defaults.
    fn default() -> Self {
        Self {
            threshold: 1.0,
            start: 0.15,
            end: 0.95,
            decay: 1.0,
            relative: true,
            reset: true,
        }
    }
}

/// The kinds of [`Method`], without their settings (what `--mode` and CSV columns name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    /// [`Method::Baseline`].
    Baseline,
    /// [`Method::Adaptive`].
    Adaptive,
    /// [`Method::Steps`].
    Steps,
    /// [`Method::AdaptiveForecast`].
    #[serde(rename = "adaptive+forecast")]
    AdaptiveForecast,
    /// [`Method::UCache`].
    #[serde(rename = "ucache")]
    UCache,
    /// [`Method::DeepCache`].
    #[serde(rename = "deepcache")]
    DeepCache,
    /// [`Method::TGate`].
    #[serde(rename = "tgate")]
    TGate,
}

impl MethodKind {
    /// Every kind, in menu order.
    pub const ALL: [MethodKind; 7] = [
        MethodKind::Baseline,
        MethodKind::Adaptive,
        MethodKind::Steps,
        MethodKind::AdaptiveForecast,
        MethodKind::UCache,
        MethodKind::DeepCache,
        MethodKind::TGate,
    ];

    /// The name in specs, traces and CSV files.
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Baseline => "baseline",
            MethodKind::Adaptive => "adaptive",
            MethodKind::Steps => "steps",
            MethodKind::AdaptiveForecast => "adaptive+forecast",
            MethodKind::UCache => "ucache",
            MethodKind::DeepCache => "deepcache",
            MethodKind::TGate => "tgate",
        }
    }
}

impl std::fmt::Display for MethodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MethodKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MethodKind::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = MethodKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown method '{s}' (methods: {})", names.join(", "))
            })
    }
}

/// A setting of a [`Method`] that cannot run, named by what it is (each front end words it
/// with its own name for the setting: a flag, a slider, a spec key).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MethodError {
    /// δ is negative or not finite.
    #[error("δ must be a finite number ≥ 0 (got {0})")]
    Delta(f64),
    /// C_max is 0.
    #[error(
        "C_max must be at least 1 (it caps consecutive skipped steps; the baseline never skips)"
    )]
    MaxSkips,
    /// Another setting of a method.
    #[error("{method}: {key} {problem}")]
    Setting {
        /// The method.
        method: &'static str,
        /// The spec key.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl Method {
    /// Check the method's settings.
    pub fn validate(&self) -> Result<(), MethodError> {
        match *self {
            Method::Baseline => Ok(()),
            Method::Adaptive { delta, max_skips }
            | Method::AdaptiveForecast { delta, max_skips } => {
                if !(delta >= 0.0 && delta.is_finite()) {
                    return Err(MethodError::Delta(delta));
                }
                if max_skips == 0 {
                    return Err(MethodError::MaxSkips);
                }
                Ok(())
            }
            Method::Steps { n } => {
                if n == 0 {
                    return Err(self.setting("n", "must be at least 1".into()));
                }
                Ok(())
            }
            Method::TGate {
                gate,
                sp_interval,
                fi_interval,
                ..
            } => {
                if gate == 0 {
                    return Err(self.setting("gate", "must be at least 1".into()));
                }
                if sp_interval == 0 {
                    return Err(self.setting("sp_interval", "must be at least 1".into()));
                }
                if fi_interval == 0 {
                    return Err(self.setting("fi_interval", "must be at least 1".into()));
                }
                Ok(())
            }
            Method::DeepCache { interval, .. } => {
                if interval == 0 {
                    return Err(self.setting("interval", "must be at least 1".into()));
                }
                Ok(())
            }
            Method::UCache(u) => {
                let unit = |key, v: f64| {
                    if (0.0..=1.0).contains(&v) {
                        Ok(())
                    } else {
                        Err(self.setting(key, format!("must be within 0–1 (got {v})")))
                    }
                };
                unit("start", u.start)?;
                unit("end", u.end)?;
                if u.start >= u.end {
                    return Err(self.setting(
                        "start",
                        format!("must be below end (got {} ≥ {})", u.start, u.end),
                    ));
                }
                if !(u.threshold > 0.0 && u.threshold.is_finite()) {
                    return Err(self.setting(
                        "threshold",
                        format!("must be a positive number (got {})", u.threshold),
                    ));
                }
                if !(u.decay >= 0.0 && u.decay.is_finite()) {
                    return Err(self.setting(
                        "decay",
                        format!("must be a finite number ≥ 0 (got {})", u.decay),
                    ));
                }
                Ok(())
            }
        }
    }

    fn setting(&self, key: &'static str, problem: String) -> MethodError {
        MethodError::Setting {
            method: self.name(),
            key,
            problem,
        }
    }

    /// Which kind of method.
    pub fn kind(&self) -> MethodKind {
        match self {
            Method::Baseline => MethodKind::Baseline,
            Method::Adaptive { .. } => MethodKind::Adaptive,
            Method::Steps { .. } => MethodKind::Steps,
            Method::AdaptiveForecast { .. } => MethodKind::AdaptiveForecast,
            Method::UCache(_) => MethodKind::UCache,
            Method::DeepCache { .. } => MethodKind::DeepCache,
            Method::TGate { .. } => MethodKind::TGate,
        }
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// δ and C_max of the methods that use the third-order rule.
    pub fn adaptive_rule(&self) -> Option<(f64, usize)> {
        match *self {
            Method::Adaptive { delta, max_skips }
            | Method::AdaptiveForecast { delta, max_skips } => Some((delta, max_skips)),
            _ => None,
        }
    }

    /// δ of an adaptive method.
    pub fn delta(&self) -> Option<f64> {
        self.adaptive_rule().map(|(d, _)| d)
    }

    /// C_max of an adaptive method.
    pub fn max_skips(&self) -> Option<usize> {
        self.adaptive_rule().map(|(_, m)| m)
    }

    /// The same method with δ and C_max replaced (methods without them are unchanged).
    pub fn with_adaptive_rule(self, delta: f64, max_skips: usize) -> Method {
        match self {
            Method::Adaptive { .. } => Method::Adaptive { delta, max_skips },
            Method::AdaptiveForecast { .. } => Method::AdaptiveForecast { delta, max_skips },
            other => other,
        }
    }

    /// The step count a method runs instead of the job's (`steps:n=N`).
    pub fn own_steps(&self) -> Option<usize> {
        match *self {
            Method::Steps { n } => Some(n),
            _ => None,
        }
    }
}

/// The serialised form of a [`Method`]: the `mode`, `delta` and `max_skips` keys of every
/// trace, report and PNG metadata since the first version (`null` where a method has no
/// such setting), and the keys of the newer methods where they apply.
#[derive(serde::Serialize, serde::Deserialize)]
struct MethodFields {
    mode: MethodKind,
    #[serde(default)]
    delta: Option<f64>,
    #[serde(default)]
    max_skips: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ucache: Option<UCacheSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    branch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tgate: Option<TGateFields>,
}

/// T-GATE's settings in a trace (the official names).
#[derive(serde::Serialize, serde::Deserialize)]
struct TGateFields {
    gate_step: usize,
    sp_interval: usize,
    fi_interval: usize,
    warm_up: usize,
}

impl From<Method> for MethodFields {
    fn from(m: Method) -> Self {
        MethodFields {
            mode: m.kind(),
            delta: m.delta(),
            max_skips: m.max_skips(),
            n: m.own_steps(),
            ucache: match m {
                Method::UCache(u) => Some(u),
                _ => None,
            },
            interval: match m {
                Method::DeepCache { interval, .. } => Some(interval),
                _ => None,
            },
            branch: match m {
                Method::DeepCache { branch, .. } => Some(branch),
                _ => None,
            },
            tgate: match m {
                Method::TGate {
                    gate,
                    sp_interval,
                    fi_interval,
                    warm_up,
                } => Some(TGateFields {
                    gate_step: gate,
                    sp_interval,
                    fi_interval,
                    warm_up,
                }),
                _ => None,
            },
        }
    }
}

impl TryFrom<MethodFields> for Method {
    type Error = String;
    fn try_from(f: MethodFields) -> Result<Self, String> {
        let rule = || match (f.delta, f.max_skips) {
            (Some(delta), Some(max_skips)) => Ok((delta, max_skips)),
            _ => Err(format!(
                "an {} run needs both `delta` and `max_skips`",
                f.mode.name()
            )),
        };
        Ok(match f.mode {
            MethodKind::Baseline => Method::Baseline,
            MethodKind::Adaptive => {
                let (delta, max_skips) = rule()?;
                Method::Adaptive { delta, max_skips }
            }
            MethodKind::AdaptiveForecast => {
                let (delta, max_skips) = rule()?;
                Method::AdaptiveForecast { delta, max_skips }
            }
            MethodKind::Steps => Method::Steps {
                n: f.n.ok_or("a steps run needs `n`")?,
            },
            MethodKind::TGate => {
                let t = f.tgate.ok_or("a tgate run needs its `tgate` settings")?;
                Method::TGate {
                    gate: t.gate_step,
                    sp_interval: t.sp_interval,
                    fi_interval: t.fi_interval,
                    warm_up: t.warm_up,
                }
            }
            MethodKind::DeepCache => Method::DeepCache {
                interval: f.interval.ok_or("a deepcache run needs `interval`")?,
                branch: f.branch.ok_or("a deepcache run needs `branch`")?,
            },
            MethodKind::UCache => {
                Method::UCache(f.ucache.ok_or("a ucache run needs its `ucache` settings")?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_setting() {
        let e = Method::Adaptive {
            delta: -0.1,
            max_skips: 4,
        }
        .validate()
        .unwrap_err();
        assert_eq!(e, MethodError::Delta(-0.1));
        let e = Method::AdaptiveForecast {
            delta: 0.1,
            max_skips: 0,
        }
        .validate()
        .unwrap_err();
        assert_eq!(e, MethodError::MaxSkips);
        let e = Method::Steps { n: 0 }.validate().unwrap_err();
        assert_eq!(e.to_string(), "steps: n must be at least 1");
        let u = UCacheSettings {
            start: 0.9,
            end: 0.5,
            ..UCacheSettings::default()
        };
        let e = Method::UCache(u).validate().unwrap_err();
        assert!(
            e.to_string().starts_with("ucache: start must be below end"),
            "{e}"
        );
        assert!(Method::UCache(UCacheSettings::default()).validate().is_ok());
    }

    #[test]
    fn every_method_survives_a_trip_through_json() {
        for m in [
            Method::Baseline,
            Method::Adaptive {
                delta: 0.02,
                max_skips: 3,
            },
            Method::Steps { n: 12 },
            Method::AdaptiveForecast {
                delta: 0.01,
                max_skips: 4,
            },
            Method::UCache(UCacheSettings::default()),
            Method::DeepCache {
                interval: 3,
                branch: 2,
            },
            Method::TGate {
                gate: 10,
                sp_interval: 5,
                fi_interval: 1,
                warm_up: 2,
            },
        ] {
            let json = serde_json::to_value(m).unwrap();
            assert_eq!(json["mode"], m.name());
            assert_eq!(serde_json::from_value::<Method>(json).unwrap(), m);
        }
    }
}
