//! Counters of what the worker actually ran (tests and the debug overlay read them).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Counters of what the worker actually ran (tests and the debug overlay read them).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub(super) jobs: AtomicUsize,
    pub(super) model_loads: AtomicUsize,
    pub(super) baseline_runs: AtomicUsize,
    pub(super) baseline_cache_hits: AtomicUsize,
    pub(super) adaptive_runs: AtomicUsize,
    pub(super) method_cache_hits: AtomicUsize,
    pub(super) cancelled: AtomicUsize,
    pub(super) failed: AtomicUsize,
    pub(super) busy: AtomicBool,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Generate commands started.
    pub jobs: usize,
    /// Models loaded.
    pub model_loads: usize,
    /// Baseline runs started (not counting cache hits).
    pub baseline_runs: usize,
    /// Baselines served from the cache.
    pub baseline_cache_hits: usize,
    /// Adaptive (right-side) runs started (not counting cache hits).
    pub adaptive_runs: usize,
    /// Right-side runs served from the cache.
    pub method_cache_hits: usize,
    /// Jobs cancelled or superseded.
    pub cancelled: usize,
    /// Jobs failed.
    pub failed: usize,
    /// A job is being processed right now.
    pub busy: bool,
}

impl WorkerStats {
    pub(super) fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicUsize| a.load(Ordering::SeqCst);
        StatsSnapshot {
            jobs: g(&self.jobs),
            model_loads: g(&self.model_loads),
            baseline_runs: g(&self.baseline_runs),
            baseline_cache_hits: g(&self.baseline_cache_hits),
            adaptive_runs: g(&self.adaptive_runs),
            method_cache_hits: g(&self.method_cache_hits),
            cancelled: g(&self.cancelled),
            failed: g(&self.failed),
            busy: self.busy.load(Ordering::SeqCst),
        }
    }

    pub(super) fn inc(a: &AtomicUsize) {
        a.fetch_add(1, Ordering::SeqCst);
    }
}
