//! Aggregates of `runs.csv` per scheduler × setting: latency, speedup, NFE, PSNR, SSIM and
//! CLIP, and the Pareto front of speedup against PSNR. Everything here is a pure function
//! of the rows, so a report can always be rebuilt from `runs.csv`.

use super::plan::BASELINE;
use super::records::RunRow;
use crate::sampler::MethodKind;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Mean, median, min and max of the finite values of a sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Number of finite values.
    pub n: usize,
    /// Mean (absent when `n` = 0).
    pub mean: Option<f64>,
    /// Median: the middle value, or the mean of the two middle values.
    pub median: Option<f64>,
    /// Smallest value.
    pub min: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
}

impl Stat {
    /// Statistics of the finite values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Self {
            n,
            mean: Some(v.iter().sum::<f64>() / n as f64),
            median: Some(median_sorted(&v)),
            min: v.first().copied(),
            max: v.last().copied(),
        }
    }
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The summary of one scheduler × setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// Scheduler.
    pub scheduler: String,
    /// `baseline`, `budget` or `delta=…`.
    pub setting: String,
    /// The kind of method (`baseline`, `adaptive`).
    pub mode: MethodKind,
    /// Nominal δ of the setting.
    pub delta: Option<f64>,
    /// C_max.
    pub max_skips: Option<usize>,
    /// Runs in the group.
    pub runs: usize,
    /// Step budget per run.
    pub budget: Stat,
    /// Denoising-loop wall time per run, ms (VAE decode excluded).
    pub latency_ms: Stat,
    /// Loop + decode, ms.
    pub total_ms: Stat,
    /// The matching baseline runs' loop time, ms.
    pub baseline_latency_ms: Stat,
    /// Mean baseline loop time / mean loop time over the matched runs.
    pub speedup: Option<f64>,
    /// Median over runs of (baseline loop time / loop time).
    pub speedup_median: Option<f64>,
    /// Noise-predictor calls per run.
    pub nfe: Stat,
    /// Baseline calls / calls, summed over the matched runs.
    pub nfe_speedup: Option<f64>,
    /// The noise predictor's work per run, in full SD 1.5 512×512 CFG calls (when counted).
    #[serde(default)]
    pub cost: Stat,
    /// Baseline multiply-accumulates / multiply-accumulates, summed over the matched runs:
    /// the speedup in work, which also compares partial calls (DeepCache, T-GATE).
    #[serde(default)]
    pub macs_speedup: Option<f64>,
    /// PSNR vs the baseline, dB (finite values; identical images are counted in
    /// `identical`, not averaged as infinity).
    pub psnr_db: Stat,
    /// Runs whose image equals the baseline's bit for bit (PSNR = ∞).
    pub identical: usize,
    /// SSIM vs the baseline.
    pub ssim: Stat,
    /// CLIP cosine with the prompt.
    pub clip_cosine: Stat,
    /// CLIPScore, `100·max(cos, 0)`.
    pub clip_score: Stat,
    /// CLIP cosine minus the baseline's.
    pub clip_delta: Stat,
    /// Largest peak resident memory seen, MiB.
    pub peak_rss_mb: Option<f64>,
    /// Runs that stopped early.
    pub stopped_early: usize,
    /// On the Pareto front of (speedup, mean PSNR) among this scheduler's settings.
    pub pareto: bool,
}

impl GroupSummary {
    /// Mean PSNR for ranking: +∞ when every run was identical to its baseline.
    pub fn psnr_key(&self) -> f64 {
        match self.psnr_db.mean {
            Some(m) => m,
            None if self.identical > 0 => f64::INFINITY,
            None => f64::NEG_INFINITY,
        }
    }
}

/// Order of settings in tables: baseline, budget, then δ ascending.
fn setting_order(s: &GroupSummary) -> (u8, f64) {
    match s.setting.as_str() {
        BASELINE => (0, 0.0),
        "budget" => (1, 0.0),
        _ => (2, s.delta.unwrap_or(f64::INFINITY)),
    }
}

/// Summaries per scheduler (in first-appearance order) and setting, Pareto flags set.
pub fn summarize(rows: &[RunRow]) -> Vec<GroupSummary> {
    let baseline: HashMap<(usize, u64, &str), &RunRow> = rows
        .iter()
        .filter(|r| r.setting == BASELINE)
        .map(|r| ((r.prompt_index, r.seed, r.scheduler.as_str()), r))
        .collect();
    let mut order: Vec<(String, String)> = Vec::new();
    let mut groups: HashMap<(String, String), Vec<&RunRow>> = HashMap::new();
    for r in rows {
        let key = (r.scheduler.clone(), r.setting.clone());
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(r);
    }
    let mut out: Vec<GroupSummary> = order
        .iter()
        .map(|key| {
            let rs = &groups[key];
            let first = rs[0];
            let pairs: Vec<(&RunRow, &RunRow)> = rs
                .iter()
                .filter_map(|r| {
                    baseline
                        .get(&(r.prompt_index, r.seed, r.scheduler.as_str()))
                        .map(|b| (*r, *b))
                })
                .collect();
            let macs_speedup = {
                let sum = |f: &dyn Fn(&(&RunRow, &RunRow)) -> Option<u64>| -> Option<u64> {
                    pairs.iter().map(f).sum::<Option<u64>>()
                };
                let base = sum(&|(_, b)| b.unet_macs);
                let own = sum(&|(r, _)| r.unet_macs);
                match (base, own) {
                    (Some(b), Some(o)) if o > 0 && !pairs.is_empty() => Some(b as f64 / o as f64),
                    _ => None,
                }
            };
            let (speedup, speedup_median, nfe_speedup) = if pairs.is_empty() {
                (None, None, None)
            } else {
                let base_ms: f64 = pairs.iter().map(|(_, b)| b.loop_ms).sum();
                let ms: f64 = pairs.iter().map(|(r, _)| r.loop_ms).sum();
                let ratios = Stat::of(pairs.iter().map(|(r, b)| b.loop_ms / r.loop_ms));
                let base_calls: usize = pairs.iter().map(|(_, b)| b.unet_calls).sum();
                let calls: usize = pairs.iter().map(|(r, _)| r.unet_calls).sum();
                (
                    (ms > 0.0).then(|| base_ms / ms),
                    ratios.median,
                    (calls > 0).then(|| base_calls as f64 / calls as f64),
                )
            };
            GroupSummary {
                scheduler: key.0.clone(),
                setting: key.1.clone(),
                mode: first.mode,
                delta: first.delta,
                max_skips: first.max_skips,
                runs: rs.len(),
                budget: Stat::of(rs.iter().map(|r| r.budget as f64)),
                latency_ms: Stat::of(rs.iter().map(|r| r.loop_ms)),
                total_ms: Stat::of(rs.iter().map(|r| r.total_ms)),
                baseline_latency_ms: Stat::of(pairs.iter().map(|(_, b)| b.loop_ms)),
                speedup,
                speedup_median,
                nfe: Stat::of(rs.iter().map(|r| r.unet_calls as f64)),
                nfe_speedup,
                cost: Stat::of(rs.iter().filter_map(|r| r.unet_cost)),
                macs_speedup,
                psnr_db: Stat::of(rs.iter().filter_map(|r| r.psnr_db)),
                identical: rs
                    .iter()
                    .filter(|r| r.psnr_db.is_some_and(|p| p.is_infinite()))
                    .count(),
                ssim: Stat::of(rs.iter().filter_map(|r| r.ssim)),
                clip_cosine: Stat::of(rs.iter().filter_map(|r| r.clip_cosine)),
                clip_score: Stat::of(rs.iter().filter_map(|r| r.clip_score)),
                clip_delta: Stat::of(rs.iter().filter_map(|r| r.clip_delta)),
                peak_rss_mb: rs
                    .iter()
                    .filter_map(|r| r.peak_rss_mb)
                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))),
                stopped_early: rs.iter().filter(|r| r.stopped_early_at.is_some()).count(),
                pareto: false,
            }
        })
        .collect();
    // stable order: scheduler by first appearance, then baseline, budget, δ ascending
    let sched_rank: HashMap<String, usize> = {
        let mut m = HashMap::new();
        for (s, _) in &order {
            let n = m.len();
            m.entry(s.clone()).or_insert(n);
        }
        m
    };
    out.sort_by(|a, b| {
        sched_rank[&a.scheduler]
            .cmp(&sched_rank[&b.scheduler])
            .then(
                setting_order(a)
                    .partial_cmp(&setting_order(b))
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
    });
    mark_pareto(&mut out);
    out
}

/// Flag, per scheduler, the non-baseline settings no other setting beats on both speedup
/// and mean PSNR.
pub fn mark_pareto(groups: &mut [GroupSummary]) {
    let points: Vec<Option<(String, f64, f64)>> = groups
        .iter()
        .map(|g| {
            (g.setting != BASELINE)
                .then_some(())
                .and(g.speedup)
                .map(|s| (g.scheduler.clone(), s, g.psnr_key()))
        })
        .collect();
    for (i, g) in groups.iter_mut().enumerate() {
        let Some((sch, s, p)) = &points[i] else {
            continue;
        };
        let dominated = points.iter().enumerate().any(|(j, q)| {
            j != i
                && q.as_ref().is_some_and(|(sch2, s2, p2)| {
                    sch2 == sch && s2 >= s && p2 >= p && (s2 > s || p2 > p)
                })
        });
        g.pareto = !dominated;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        let s = Stat::of([3.0, 1.0, f64::INFINITY, 2.0, 10.0]);
        assert_eq!(s.n, 4);
        assert_eq!(s.mean, Some(4.0));
        assert_eq!(s.median, Some(2.5));
        assert_eq!(s.min, Some(1.0));
        assert_eq!(s.max, Some(10.0));
        assert_eq!(Stat::of([]).mean, None);
    }

    fn row(
        idx: usize,
        setting: &str,
        delta: Option<f64>,
        ms: f64,
        calls: usize,
        psnr: Option<f64>,
    ) -> RunRow {
        RunRow {
            run_id: format!("p{idx}-{setting}"),
            prompt_index: idx,
            prompt: "p".into(),
            grade: None,
            complexity: None,
            seed: 1,
            scheduler: "ddim".into(),
            setting: setting.into(),
            mode: if delta.is_some() {
                MethodKind::ADAPTIVE
            } else {
                MethodKind::BASELINE
            },
            delta,
            max_skips: delta.map(|_| 4),
            early_stop: false,
            budget: 10,
            steps_run: 10,
            unet_calls: calls,
            stopped_early_at: None,
            loop_ms: ms,
            decode_ms: 1.0,
            total_ms: ms + 1.0,
            peak_rss_mb: None,
            psnr_db: psnr,
            ssim: psnr.map(|_| 0.9),
            clip_cosine: None,
            clip_score: None,
            clip_delta: None,
            method: String::new(),
            unet_macs: None,
            unet_cost: None,
            frames: None,
            psnr_frame_mean_db: None,
            psnr_frame_worst_db: None,
            pattern: String::new(),
            finished_at: String::new(),
        }
    }

    #[test]
    fn speedups_and_pareto() {
        let rows = vec![
            row(0, "baseline", None, 100.0, 10, None),
            row(1, "baseline", None, 200.0, 10, None),
            row(0, "delta=0.01", Some(0.01), 50.0, 5, Some(30.0)),
            row(1, "delta=0.01", Some(0.01), 100.0, 5, Some(f64::INFINITY)),
            row(0, "delta=0.02", Some(0.02), 40.0, 4, Some(25.0)),
            row(1, "delta=0.02", Some(0.02), 100.0, 5, Some(20.0)),
            row(0, "delta=0.005", Some(0.005), 90.0, 8, Some(28.0)),
            row(1, "delta=0.005", Some(0.005), 190.0, 8, Some(27.0)),
        ];
        let g = summarize(&rows);
        let names: Vec<&str> = g.iter().map(|x| x.setting.as_str()).collect();
        assert_eq!(
            names,
            vec!["baseline", "delta=0.005", "delta=0.01", "delta=0.02"]
        );
        let d1 = &g[2];
        assert_eq!(d1.speedup, Some(2.0));
        assert_eq!(d1.nfe_speedup, Some(2.0));
        assert_eq!(d1.psnr_db.mean, Some(30.0));
        assert_eq!(d1.identical, 1);
        let d2 = &g[3];
        assert!((d2.speedup.unwrap() - 300.0 / 140.0).abs() < 1e-12);
        // δ=0.005 is slower and worse than δ=0.01: dominated
        assert!(!g[1].pareto);
        assert!(g[2].pareto);
        assert!(g[3].pareto); // fastest
        assert!(!g[0].pareto);
    }
}
