//! The report files of a benchmark folder: `summary.json`, `report.md` and the plots,
//! rebuilt from `runs.csv` and `bench.json`.

use super::labels::Labels;
use super::plan::BASELINE;
use super::plots;
use super::records::{RunRow, read_rows};
use super::summary::{GroupSummary, Stat, summarize};
use super::{BENCH_JSON, BenchMeta, RUNS_CSV};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Settings, machine, command and CLIP status (as in `bench.json`).
    #[serde(flatten)]
    pub meta: BenchMeta,
    /// When this summary was written (UTC).
    pub written_utc: String,
    /// Rows in `runs.csv`.
    pub runs_done: usize,
    /// Whether every planned run is in `runs.csv`.
    pub complete: bool,
    /// One entry per scheduler × setting.
    pub groups: Vec<GroupSummary>,
}

/// File names of the plots.
pub const PLOTS: [&str; 5] = [
    "speedup_vs_psnr.svg",
    "steps_vs_complexity.svg",
    "skip_pattern.svg",
    "skip_pattern.png",
    "macs_speedup_vs_psnr.svg",
];

/// Rebuild `summary.json`, `report.md` and the plots of a benchmark folder.
pub fn write_reports(out: &Path) -> Result<Summary> {
    let meta: BenchMeta = {
        let p = out.join(BENCH_JSON);
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bench.json", p.display()))?
    };
    let rows = read_rows(&out.join(RUNS_CSV))?;
    write_reports_from(out, meta, &rows)
}

/// Write the reports from already loaded metadata and rows.
pub fn write_reports_from(out: &Path, meta: BenchMeta, rows: &[RunRow]) -> Result<Summary> {
    let groups = summarize(rows);
    let summary = Summary {
        written_utc: super::utc_now(),
        runs_done: rows.len(),
        complete: rows.len() >= meta.expected_runs,
        meta,
        groups,
    };
    let w = |name: &str, bytes: &[u8]| crate::output::write_atomic(&out.join(name), bytes);
    w(
        "summary.json",
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    w("report.md", markdown(&summary, rows).as_bytes())?;
    w(
        PLOTS[0],
        plots::speedup_vs_psnr(&summary.groups, plots::SpeedupAxis::Wall).as_bytes(),
    )?;
    w(
        PLOTS[4],
        plots::speedup_vs_psnr(&summary.groups, plots::SpeedupAxis::Macs).as_bytes(),
    )?;
    w(PLOTS[1], plots::steps_vs_complexity(rows).as_bytes())?;
    w(PLOTS[2], plots::skip_heatmap_svg(rows).as_bytes())?;
    let png = plots::skip_heatmap_png(rows);
    crate::output::write_atomic_with(&out.join(PLOTS[3]), |f| {
        let mut bw = std::io::BufWriter::new(f);
        png.write_to(&mut bw, image::ImageFormat::Png)?;
        Ok(())
    })?;
    Ok(summary)
}

fn f(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "—".into())
}

fn mean_median(s: &Stat, prec: usize) -> String {
    match (s.mean, s.median) {
        (Some(m), Some(md)) => format!("{m:.prec$} / {md:.prec$}"),
        _ => "—".into(),
    }
}

/// `report.md`.
pub fn markdown(s: &Summary, rows: &[RunRow]) -> String {
    let mut o = String::new();
    write_header(&mut o, s);
    let mut schedulers: Vec<&str> = Vec::new();
    for g in &s.groups {
        if !schedulers.contains(&g.scheduler.as_str()) {
            schedulers.push(&g.scheduler);
        }
    }
    for sch in &schedulers {
        write_scheduler_table(&mut o, s, sch);
    }
    if rows.is_empty() {
        let _ = writeln!(o, "No runs yet.\n");
    }
    let _ = writeln!(o, "## Plots\n");
    let _ = writeln!(o, "![speedup vs PSNR]({})\n", PLOTS[0]);
    let _ = writeln!(o, "![work saved vs PSNR]({})\n", PLOTS[4]);
    let _ = writeln!(o, "![steps vs complexity]({})\n", PLOTS[1]);
    let _ = writeln!(o, "![skip pattern]({})\n", PLOTS[2]);
    let _ = writeln!(o, "## How to read this\n");
    let _ = writeln!(
        o,
        "- Every adaptive run starts from the same initial noise as its baseline (same prompt, seed and scheduler); quality is measured against that full-step baseline image.\n\
         - Latency is the wall time of the denoising loop (VAE decode excluded; `runs.csv` has `decode_ms` and `total_ms`), measured after one discarded warm-up call. Speedup is the mean baseline latency over the mean adaptive latency of the same prompt × seed pairs; NFE speedup is the ratio of noise-predictor calls.\n\
         - PSNR is on 8-bit RGB (0–255), as in the AdaptiveDiffusion paper; images identical to the baseline (PSNR = ∞) are counted apart, not averaged. SSIM: 11×11 Gaussian window, σ = 1.5, mean over R, G, B.\n\
         - CLIP cos is the cosine of CLIP's image and prompt embeddings, Δ the adaptive image's minus its baseline's; CLIPScore = 100·max(cos, 0) (torchmetrics' convention). The reference project printed (cos + 1)/2.\n\
         - All numbers are recomputed from `runs.csv` (one row per run)."
    );
    o
}

/// The command, machine, date, model, prompts and settings of the benchmark.
fn write_header(o: &mut String, s: &Summary) {
    let m = &s.meta;
    let st = &m.settings;
    let _ = writeln!(o, "# adiff bench report\n");
    let _ = writeln!(o, "- Command: `{}`", m.command);
    let _ = writeln!(
        o,
        "- Machine: {} ({} cores{}), {} {}; device {}",
        m.machine.cpu,
        m.machine.cores,
        m.machine
            .memory_gib
            .map(|g| format!(", {g:.0} GiB RAM"))
            .unwrap_or_default(),
        m.machine.os,
        m.machine.arch,
        m.device
    );
    let _ = writeln!(
        o,
        "- Date: started {}, report written {} (UTC); adiff {}",
        m.started_utc, s.written_utc, m.adiff_version
    );
    if let Some(mr) = &m.merged {
        let _ = writeln!(
            o,
            "- Ran as {} parts on {} machine{}: {}; merged {}{}",
            mr.shards,
            mr.hosts.len(),
            if mr.hosts.len() == 1 { "" } else { "s" },
            mr.hosts.join(", "),
            mr.merged_utc,
            if mr.duplicates > 0 {
                format!(
                    " ({} runs recorded twice by a requeued part, counted once)",
                    mr.duplicates
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(sr) = &m.shard {
        let _ = writeln!(
            o,
            "- Part {} of {} of a {}-run plan, run on {}; merge the parts for the whole benchmark",
            sr.index,
            sr.count,
            sr.plan_runs,
            sr.hosts.join(", ")
        );
    }
    let _ = writeln!(o, "- Model: {}", st.model);
    let _ = writeln!(
        o,
        "- Prompts: {} from `{}`; seeds {}; schedulers {}",
        st.prompt_count,
        st.prompts_file.display(),
        st.seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        st.schedulers.join(", ")
    );
    let size = match m.image_size {
        Some((w, h)) => format!("{w}×{h}"),
        None => "model default".into(),
    };
    let _ = writeln!(
        o,
        "- Baseline: {} steps, guidance {}, {size}; budget {}{}, early stop {}",
        st.steps,
        st.guidance,
        st.budget,
        if st.budget == "auto" {
            format!(" ({} scorer)", st.scorer)
        } else {
            String::new()
        },
        match &st.early_stop {
            Some(e) => format!("on (τ {})", e.tau),
            None => "off".into(),
        }
    );
    let _ = writeln!(o, "- Swept: {}", swept(s));
    if let Some(line) = not_run(st) {
        let _ = writeln!(o, "- Not run: {line}");
    }
    let _ = writeln!(
        o,
        "- CLIP alignment: {}",
        if m.clip.measured {
            format!(
                "{} (cosine of projected embeddings)",
                m.clip.model.as_deref().unwrap_or("?")
            )
        } else {
            format!("**not measured** — {}", m.clip.note)
        }
    );
    let _ = writeln!(
        o,
        "- Runs: {} of {}{}\n",
        s.runs_done,
        m.expected_runs,
        if s.complete {
            ""
        } else {
            " (incomplete: resume the benchmark to continue it)"
        }
    );
}

/// The methods that do not run with some of the plan's schedulers (their authors' code
/// supports others), e.g. "`sada` on ddim (it runs on euler, dpm++)".
fn not_run(st: &super::BenchSettings) -> Option<String> {
    let mut items = vec![];
    for spec in &st.methods {
        let Ok(m) = crate::job::method_spec::parse(spec) else {
            continue;
        };
        // (scheduler, the schedulers the method runs on) for each one it refuses.
        let refused: Vec<(&str, String)> = st
            .schedulers
            .iter()
            .filter_map(|k| Some((k.as_str(), m.refuses(k.parse().ok()?)?)))
            .collect();
        let Some((_, on)) = refused.first() else {
            continue;
        };
        let off: Vec<&str> = refused.iter().map(|(k, _)| *k).collect();
        items.push(format!(
            "`{}` on {} (its authors' code runs on {on}; nor its `steps:n=match` control)",
            m.name(),
            off.join(", "),
        ));
    }
    (!items.is_empty()).then(|| items.join("; "))
}

/// What the benchmark swept: the δ of a δ sweep, and each other setting by its label (with
/// the spec it stands for when that is longer).
fn swept(s: &Summary) -> String {
    let st = &s.meta.settings;
    let labels = Labels::of_groups(&s.groups);
    let mut items = vec![];
    if !st.deltas.is_empty() {
        items.push(format!(
            "AdaptiveDiffusion δ ∈ {{{}}} (C_max {})",
            st.deltas
                .iter()
                .map(f64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            st.max_skips
        ));
    }
    let (mut seen, mut matched): (Vec<&str>, Vec<&str>) = (vec![], vec![]);
    for g in &s.groups {
        let set = g.setting.as_str();
        if set == BASELINE || set == "budget" || set.starts_with("delta=") || seen.contains(&set) {
            continue;
        }
        seen.push(set);
        let label = labels.get(set);
        if let Some(inner) = label
            .strip_prefix("steps:n=match(")
            .and_then(|l| l.strip_suffix(')'))
        {
            matched.push(inner);
            continue;
        }
        items.push(if label == set {
            format!("`{set}`")
        } else {
            format!("`{label}` = `{set}`")
        });
    }
    if !matched.is_empty() {
        items.push(format!(
            "`steps:n=match(…)`: every step computed, as many steps as the work (in full calls) of {}",
            matched
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if st.budget == "auto" {
        items.push("the complexity budget without skipping".into());
    }
    if items.is_empty() {
        "nothing (the baseline only)".into()
    } else {
        items.join("; ")
    }
}

/// One scheduler's table of settings and its Pareto front.
fn write_scheduler_table(o: &mut String, s: &Summary, sch: &str) {
    let _ = writeln!(o, "## {sch}\n");
    let _ = writeln!(
        o,
        "| setting | runs | steps | latency mean / median (ms) | speedup | NFE | NFE speedup | MACs speedup | PSNR mean / median (dB) | SSIM mean | CLIP cos (Δ) | CLIPScore | Pareto |"
    );
    let _ = writeln!(
        o,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"
    );
    let labels = Labels::of_groups(&s.groups);
    for g in s.groups.iter().filter(|g| g.scheduler == sch) {
        let _ = writeln!(
            o,
            "{}",
            table_row(g, labels.get(&g.setting), s.meta.clip.measured)
        );
    }
    let front: Vec<String> = s
        .groups
        .iter()
        .filter(|g| g.scheduler == sch && g.pareto)
        .map(|g| {
            let p = match g.psnr_db.mean {
                Some(p) => format!("{p:.2} dB"),
                None => "PSNR ∞".into(),
            };
            format!(
                "{} ({}, {p})",
                labels.get(&g.setting),
                g.speedup.map(|x| format!("{x:.2}×")).unwrap_or_default()
            )
        })
        .collect();
    let _ = writeln!(
        o,
        "\nPareto front of speedup vs mean PSNR: {}\n",
        if front.is_empty() {
            "—".into()
        } else {
            front.join("; ")
        }
    );
}

/// One setting's row of a scheduler's table.
fn table_row(g: &GroupSummary, label: &str, clip_measured: bool) -> String {
    let base = g.setting == BASELINE;
    let psnr = if base {
        "—".to_string()
    } else {
        let mut t = mean_median(&g.psnr_db, 2);
        if g.identical > 0 {
            t = if g.psnr_db.n == 0 {
                format!("∞ (all {} identical)", g.identical)
            } else {
                format!("{t} (+{} identical)", g.identical)
            };
        }
        t
    };
    let measured = clip_measured && g.clip_cosine.n > 0;
    let clip = if !measured {
        "not measured".to_string()
    } else if base {
        f(g.clip_cosine.mean, 4)
    } else {
        format!(
            "{} ({:+.4})",
            f(g.clip_cosine.mean, 4),
            g.clip_delta.mean.unwrap_or(0.0)
        )
    };
    let clip_score = if measured {
        f(g.clip_score.mean, 2)
    } else {
        "not measured".to_string()
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        label,
        g.runs,
        f(g.budget.mean, 1),
        mean_median(&g.latency_ms, 1),
        if base {
            "1.00×".into()
        } else {
            g.speedup.map(|x| format!("{x:.2}×")).unwrap_or("—".into())
        },
        f(g.nfe.mean, 1),
        if base {
            "1.00×".into()
        } else {
            g.nfe_speedup
                .map(|x| format!("{x:.2}×"))
                .unwrap_or("—".into())
        },
        if base {
            "1.00×".into()
        } else {
            g.macs_speedup
                .map(|x| format!("{x:.2}×"))
                .unwrap_or("—".into())
        },
        psnr,
        if base {
            "—".into()
        } else {
            f(g.ssim.mean, 4)
        },
        clip,
        clip_score,
        if g.pareto { "★" } else { "" }
    )
}
