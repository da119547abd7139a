//! The worker thread's scheduling priority.

/// Run the model at a lower scheduling priority than the UI (Linux: nice 10 for this
/// thread and the compute threads it spawns, e.g. rayon's pool), so that the window keeps
/// drawing while every core computes. `ADIFF_WORKER_NICE` overrides the value (0: off).
pub(super) fn lower_priority() {
    let nice: i32 = std::env::var("ADIFF_WORKER_NICE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(10);
    #[cfg(target_os = "linux")]
    if nice != 0 {
        // SAFETY: setpriority has no memory-safety preconditions; on Linux, `who = 0` with
        // PRIO_PROCESS applies to the calling thread only.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, nice) };
        if rc != 0 {
            tracing::debug!("could not lower the worker's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
