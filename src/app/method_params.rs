//! One side's acceleration-method settings. Each side of the comparison has its own set, so
//! the left side's method is tuned independently of the right side's.

use crate::job::{defaults, method_spec};
use crate::sampler::{Method, MethodKind, UCacheSettings};
use serde::{Deserialize, Serialize};

/// The settings of every method for one side (only the chosen method's are used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MethodParams {
    /// δ (adaptive methods).
    pub delta: f64,
    /// C_max (adaptive methods).
    pub max_skips: usize,
    /// Step count of the `steps` method.
    pub steps_n: usize,
    /// Threshold of the `ucache` method.
    pub ucache_threshold: f64,
    /// `cache_interval` of DeepCache.
    pub deepcache_interval: usize,
    /// `cache_branch_id` of DeepCache.
    pub deepcache_branch: usize,
    /// `gate_step` of T-GATE (its other settings keep their defaults).
    pub tgate_gate: usize,
}

impl Default for MethodParams {
    fn default() -> Self {
        Self {
            delta: defaults::DELTA,
            max_skips: defaults::MAX_SKIPS,
            steps_n: defaults::STEPS / 2,
            ucache_threshold: UCacheSettings::default().threshold,
            deepcache_interval: method_spec::DEEPCACHE_DEFAULTS.0,
            deepcache_branch: method_spec::DEEPCACHE_DEFAULTS.1,
            tgate_gate: method_spec::TGATE_DEFAULTS.0,
        }
    }
}

impl MethodParams {
    /// A method of the given kind with these settings.
    pub fn method(&self, kind: MethodKind) -> Method {
        match kind {
            MethodKind::Baseline => Method::Baseline,
            MethodKind::Adaptive => Method::Adaptive {
                delta: self.delta,
                max_skips: self.max_skips,
            },
            MethodKind::AdaptiveForecast => Method::AdaptiveForecast {
                delta: self.delta,
                max_skips: self.max_skips,
            },
            MethodKind::Steps => Method::Steps { n: self.steps_n },
            MethodKind::TGate => {
                let (_, sp_interval, fi_interval, warm_up) = method_spec::TGATE_DEFAULTS;
                Method::TGate {
                    gate: self.tgate_gate,
                    sp_interval,
                    fi_interval,
                    warm_up,
                }
            }
            MethodKind::DeepCache => Method::DeepCache {
                interval: self.deepcache_interval,
                branch: self.deepcache_branch,
            },
            MethodKind::UCache => Method::UCache(UCacheSettings {
                threshold: self.ucache_threshold,
                ..UCacheSettings::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_takes_its_own_settings() {
        let p = MethodParams {
            delta: 0.05,
            steps_n: 7,
            ..MethodParams::default()
        };
        assert_eq!(p.method(MethodKind::Adaptive).delta(), Some(0.05));
        assert_eq!(p.method(MethodKind::Steps).own_steps(), Some(7));
        assert_eq!(p.method(MethodKind::Baseline), Method::Baseline);
    }
}
