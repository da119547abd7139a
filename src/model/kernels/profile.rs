//! A per-operation wall-time profile of model calls, off unless switched on
//! (`adiff unet-call --profile`): each instrumented operation adds its time to a named
//! bucket; the table shows where a call's time goes (convolutions, attention, norms, ...).
//! When off, an instrumented operation costs one relaxed atomic load.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<BTreeMap<&'static str, (Duration, u64)>> = Mutex::new(BTreeMap::new());

/// Switch recording on or off (and clear what was recorded).
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
    if let Ok(mut t) = TABLE.lock() {
        t.clear();
    }
}

/// Time `f` under `name` when recording is on.
#[inline]
pub fn time<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let t0 = Instant::now();
    let out = f();
    let dt = t0.elapsed();
    if let Ok(mut t) = TABLE.lock() {
        let e = t.entry(name).or_default();
        e.0 += dt;
        e.1 += 1;
    }
    out
}

/// One row of the profile.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// The operation.
    pub op: &'static str,
    /// Total milliseconds.
    pub ms: f64,
    /// How many times it ran.
    pub count: u64,
}

/// What was recorded, largest first.
pub fn rows() -> Vec<Row> {
    let t = TABLE.lock().map(|t| t.clone()).unwrap_or_default();
    let mut rows: Vec<Row> = t
        .into_iter()
        .map(|(op, (d, count))| Row {
            op,
            ms: d.as_secs_f64() * 1e3,
            count,
        })
        .collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_when_on() {
        enable(false);
        time("test.off", || ());
        assert!(rows().iter().all(|r| r.op != "test.off"));
        enable(true);
        time("test.on", || std::thread::sleep(Duration::from_millis(2)));
        time("test.on", || ());
        let row = rows().into_iter().find(|r| r.op == "test.on").unwrap();
        enable(false);
        assert_eq!(row.count, 2);
        assert!(row.ms >= 2.0, "{row:?}");
    }
}
