//! UI frame-time instrumentation: eframe's per-frame CPU time (our `ui` code plus
//! tessellation and rendering, vsync excluded), split into frames while a job runs and
//! idle frames. `ADIFF_FRAME_STATS=path.json` writes a summary on exit; F12 toggles an
//! overlay with the live numbers.

use serde::Serialize;
use std::path::PathBuf;

/// Frame times collected so far.
#[derive(Debug, Default)]
pub struct FrameStats {
    /// CPU time of frames rendered while a job ran, ms.
    pub running_ms: Vec<f32>,
    /// CPU time of the other frames, ms.
    pub idle_ms: Vec<f32>,
    /// Time spent in the app's own `ui` code per frame (all frames), ms.
    pub ui_ms: Vec<f32>,
    /// Wall-clock gaps between consecutive frames while running, ms.
    pub running_interval_ms: Vec<f32>,
    /// Wall-clock gaps between consecutive frames while idle, ms.
    pub idle_interval_ms: Vec<f32>,
    last_frame_start: Option<std::time::Instant>,
    /// Write the summary here on exit.
    pub out: Option<PathBuf>,
}

/// Percentiles of one series.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    /// Number of frames.
    pub frames: usize,
    /// Median, ms.
    pub p50_ms: f32,
    /// 95th percentile, ms.
    pub p95_ms: f32,
    /// 99th percentile, ms.
    pub p99_ms: f32,
    /// Maximum, ms.
    pub max_ms: f32,
}

/// Nearest-rank percentile of unsorted values.
pub fn summarize(values: &[f32]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let pct = |p: f32| {
        let rank = ((p / 100.0) * v.len() as f32).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    };
    Some(Summary {
        frames: v.len(),
        p50_ms: pct(50.0),
        p95_ms: pct(95.0),
        p99_ms: pct(99.0),
        max_ms: *v.last().expect("non-empty"),
    })
}

/// The written report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// What the numbers are.
    pub what: &'static str,
    /// Frames while a job ran: eframe CPU time (ui + tessellation + paint).
    pub running: Option<Summary>,
    /// Idle frames.
    pub idle: Option<Summary>,
    /// The app's ui code alone, all frames.
    pub ui_only: Option<Summary>,
    /// Gaps between frame starts while running: the full frame cost including the buffer
    /// swap (software rasterization on machines without a GPU) and scheduling.
    pub running_interval: Option<Summary>,
    /// Gaps between frame starts while idle (the same, without the model competing).
    pub idle_interval: Option<Summary>,
}

impl FrameStats {
    /// Stats that write to `$ADIFF_FRAME_STATS` on exit, when set.
    pub fn from_env() -> Self {
        Self {
            out: std::env::var_os("ADIFF_FRAME_STATS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            ..Self::default()
        }
    }

    /// Record the previous frame's CPU time (eframe reports it one frame late).
    pub fn record_frame(&mut self, cpu_seconds: Option<f32>, running: bool) {
        let now = std::time::Instant::now();
        if let Some(prev) = self.last_frame_start {
            let gap = now.duration_since(prev).as_secs_f32() * 1e3;
            if running {
                self.running_interval_ms.push(gap);
            } else {
                self.idle_interval_ms.push(gap);
            }
        }
        self.last_frame_start = Some(now);
        if let Some(s) = cpu_seconds {
            let ms = s * 1e3;
            if running {
                self.running_ms.push(ms);
            } else {
                self.idle_ms.push(ms);
            }
        }
    }

    /// Record the time of the app's own ui code.
    pub fn record_ui(&mut self, ms: f32) {
        self.ui_ms.push(ms);
    }

    /// The summary.
    pub fn report(&self) -> Report {
        Report {
            what: "milliseconds; running/idle/ui_only: frame CPU time (eframe IntegrationInfo::cpu_usage: app ui + tessellation + GL calls, buffer swap excluded); *_interval: wall time between frame starts with continuous repaints (includes the swap)",
            running: summarize(&self.running_ms),
            idle: summarize(&self.idle_ms),
            ui_only: summarize(&self.ui_ms),
            running_interval: summarize(&self.running_interval_ms),
            idle_interval: summarize(&self.idle_interval_ms),
        }
    }

    /// Write the summary where `ADIFF_FRAME_STATS` says, and print it on stderr.
    pub fn write(&self) {
        let Some(path) = &self.out else { return };
        let report = self.report();
        if let Ok(text) = serde_json::to_string_pretty(&report) {
            eprintln!("frame stats: {text}");
            if let Err(e) = crate::output::write_atomic(path, text.as_bytes()) {
                eprintln!("cannot write {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        let s = summarize(&v).unwrap();
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p95_ms, 95.0);
        assert_eq!(s.max_ms, 100.0);
        assert!(summarize(&[]).is_none());
        assert_eq!(summarize(&[3.0]).unwrap().p95_ms, 3.0);
    }
}
