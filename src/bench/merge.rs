//! Merging the parts of a sharded benchmark (`OUT/shards/K-of-N/`) into one in `OUT`:
//! the parts must have run one plan (same settings, model, version, split), every planned
//! run must be there (a run found twice, from a requeued part, counts once), and then
//! `OUT` gets the `runs.csv` (rows in the one-machine order), `bench.json`, reports, plots
//! and baseline images a one-machine benchmark writes. Everything is checked before the
//! first file is written, and each file is written atomically.

use super::records::{COLUMNS, RunRow, read_rows};
use super::shard::{SHARDS_DIR, Shard, ShardRecord};
use super::{BENCH_JSON, BenchMeta, IMAGES_DIR, MergeRecord, RUNS_CSV, report, settings_diff};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// A part with runs missing.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingPart {
    /// The part.
    pub shard: Shard,
    /// Its missing run ids (all of them when it never started and its plan is unknown:
    /// then empty, and `never_started` is set).
    pub runs: Vec<String>,
    /// The part has no `bench.json`: it never started.
    pub never_started: bool,
    /// The arguments that run a part of this plan (the part's own, or another part's when
    /// it never started); the front end rewrites the part and adds resuming.
    pub args: Vec<String>,
    /// The folder those arguments ran in.
    pub workdir: Option<PathBuf>,
}

/// Planned runs that are in no part: the merge writes nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} of the {planned} planned runs are missing: {}; run those parts again (resuming), then merge again", self.missing_count(), self.by_part())]
pub struct Incomplete {
    /// Runs of the whole plan.
    pub planned: usize,
    /// Runs found.
    pub found: usize,
    /// The parts with runs missing.
    pub parts: Vec<MissingPart>,
}

impl Incomplete {
    /// How many runs are missing.
    pub fn missing_count(&self) -> usize {
        self.planned.saturating_sub(self.found)
    }

    fn by_part(&self) -> String {
        self.parts
            .iter()
            .map(|p| {
                if p.never_started {
                    format!("part {} never started", p.shard)
                } else {
                    let mut ids = p
                        .runs
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ");
                    if p.runs.len() > 3 {
                        ids.push_str(", …");
                    }
                    format!("part {} lacks {} ({ids})", p.shard, p.runs.len())
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What a merge wrote.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The merged summary (as written to `summary.json`).
    pub summary: report::Summary,
    /// Parts merged.
    pub parts: usize,
    /// Rows found twice, counted once.
    pub duplicates: usize,
}

/// One part's folder as read.
struct Part {
    shard: Shard,
    dir: PathBuf,
    meta: Option<(BenchMeta, ShardRecord)>,
}

/// Merge `out/shards/*` into `out`; the merged report's command is `whole_command` of a
/// part's (the front end drops the part's own selection from it).
pub fn merge(out: &Path, whole_command: &dyn Fn(&str) -> String) -> Result<Merged> {
    let parts = read_parts(out)?;
    let count = parts[0].shard.count;
    let started: Vec<&Part> = parts.iter().filter(|p| p.meta.is_some()).collect();
    let Some(first) = started.first() else {
        bail!(
            "no part in {} has started (no bench.json in any {}/K-of-{count}/); run the parts first",
            out.join(SHARDS_DIR).display(),
            SHARDS_DIR
        );
    };
    let (meta0, rec0) = first.meta.as_ref().expect("started");
    for p in &started[1..] {
        let (meta, rec) = p.meta.as_ref().expect("started");
        same_plan(first, meta0, rec0, p, meta, rec)?;
    }
    ensure_not_running(&parts)?;

    // The rows, each run once, checked against its part's plan.
    let mut rows: HashMap<String, RunRow> = HashMap::new();
    let mut duplicates = 0;
    let mut missing = Vec::new();
    for p in &parts {
        let Some((_, rec)) = &p.meta else {
            missing.push(MissingPart {
                shard: p.shard,
                runs: Vec::new(),
                never_started: true,
                args: rec0.args.clone(),
                workdir: rec0.workdir.clone(),
            });
            continue;
        };
        let planned: HashSet<String> = rec.run_ids().into_iter().collect();
        let csv = p.dir.join(RUNS_CSV);
        let part_rows = if csv.exists() {
            read_rows(&csv)?
        } else {
            Vec::new()
        };
        for r in part_rows {
            if !planned.contains(&r.run_id) {
                bail!(
                    "{} has run {}, which is not in part {}'s plan; the folder was changed by hand or by another command",
                    csv.display(),
                    r.run_id,
                    p.shard
                );
            }
            if rows.contains_key(&r.run_id) {
                duplicates += 1;
            } else {
                rows.insert(r.run_id.clone(), r);
            }
        }
        let lacking: Vec<String> = rec
            .run_ids()
            .into_iter()
            .filter(|id| !rows.contains_key(id))
            .collect();
        if !lacking.is_empty() {
            missing.push(MissingPart {
                shard: p.shard,
                runs: lacking,
                never_started: false,
                args: rec.args.clone(),
                workdir: rec.workdir.clone(),
            });
        }
    }
    if !missing.is_empty() {
        return Err(Incomplete {
            planned: rec0.plan_runs,
            found: rows.len(),
            parts: missing,
        }
        .into());
    }
    if rows.len() != rec0.plan_runs {
        bail!(
            "the parts hold {} runs, and the plan has {}; the part folders do not belong together",
            rows.len(),
            rec0.plan_runs
        );
    }
    let rows = in_run_order(rows, meta0, rec0);
    let meta = merged_meta(&started, rows.len(), duplicates, whole_command);
    check_target(out)?;
    write(out, &parts, meta, &rows, duplicates)
}

/// The parts in `out/shards/`, one per `K-of-N` folder, all of one N, each present.
fn read_parts(out: &Path) -> Result<Vec<Part>> {
    let dir = out.join(SHARDS_DIR);
    let entries = std::fs::read_dir(&dir).with_context(|| {
        format!(
            "{} has no {SHARDS_DIR}/ folder: it holds no sharded benchmark",
            out.display()
        )
    })?;
    let mut found: BTreeMap<Shard, PathBuf> = BTreeMap::new();
    for e in entries {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        if !e.path().is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(shard) = Shard::from_dir_name(&name) else {
            bail!(
                "{} is not a part's folder (K-of-N, such as 1-of-4); move it out of {}",
                e.path().display(),
                dir.display()
            );
        };
        found.insert(shard, e.path());
    }
    let Some(first) = found.keys().next().copied() else {
        bail!("{} holds no part folder (K-of-N)", dir.display());
    };
    if let Some(other) = found.keys().find(|s| s.count != first.count) {
        bail!(
            "{} holds parts of different splits ({first} and {other}); keep the parts of one split",
            dir.display()
        );
    }
    let mut parts = Vec::new();
    for index in 1..=first.count {
        let shard = Shard {
            index,
            count: first.count,
        };
        let dir = found
            .get(&shard)
            .cloned()
            .unwrap_or_else(|| dir.join(shard.dir_name()));
        let meta = read_part_meta(&dir, shard)?;
        parts.push(Part { shard, dir, meta });
    }
    Ok(parts)
}

/// A part's `bench.json` and its record (`None`: the part never started).
fn read_part_meta(dir: &Path, shard: Shard) -> Result<Option<(BenchMeta, ShardRecord)>> {
    let path = dir.join(BENCH_JSON);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["adiff_version"].as_str().map(String::from))
        .unwrap_or_else(|| "unknown".into());
    let ours = env!("CARGO_PKG_VERSION");
    let older = || {
        anyhow::anyhow!(
            "{} was written by adiff {version} and this is adiff {ours}: parts merge only with the version that ran them; run part {shard} again with this adiff into a fresh folder",
            path.display()
        )
    };
    let meta: BenchMeta = serde_json::from_str(&text).map_err(|_| older())?;
    if meta.adiff_version != ours {
        return Err(older());
    }
    let Some(rec) = meta.shard.clone() else {
        bail!(
            "{} is a whole benchmark, not part {shard} of one; move it out of {}",
            path.display(),
            SHARDS_DIR
        );
    };
    if rec.shard() != shard {
        bail!(
            "{} records part {}, but its folder is {}; the folders were renamed",
            path.display(),
            rec.shard(),
            shard.dir_name()
        );
    }
    Ok(Some((meta, rec)))
}

/// Refuse parts of different plans, naming what differs.
fn same_plan(
    a: &Part,
    meta_a: &BenchMeta,
    rec_a: &ShardRecord,
    b: &Part,
    meta_b: &BenchMeta,
    rec_b: &ShardRecord,
) -> Result<()> {
    let mut diffs = settings_diff(&meta_a.settings, &meta_b.settings)?;
    if rec_a.settings != rec_b.settings {
        diffs.push(format!(
            "settings run: was {:?}, now {:?}",
            rec_a.settings, rec_b.settings
        ));
    }
    if diffs.is_empty() && rec_a.plan_digest != rec_b.plan_digest {
        diffs.push(format!(
            "the prompts' text or the split: plan digest {} vs {}",
            rec_a.plan_digest, rec_b.plan_digest
        ));
    }
    if !diffs.is_empty() {
        bail!(
            "parts {} and {} ran different plans ({}); merge only the parts of one command",
            a.shard,
            b.shard,
            diffs.join("; ")
        );
    }
    Ok(())
}

/// Refuse while a part is still running (its folder's bench lock is held).
fn ensure_not_running(parts: &[Part]) -> Result<()> {
    for p in parts {
        let lock = p.dir.join(super::runner::LOCK_FILE);
        let Ok(file) = std::fs::File::open(&lock) else {
            continue;
        };
        if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock_shared() {
            let holder = std::fs::read_to_string(&lock).unwrap_or_default();
            bail!(
                "part {} is still running ({}); merge when it has finished",
                p.shard,
                crate::field::cut(holder.trim(), 200)
            );
        }
    }
    Ok(())
}

/// The rows in the order one machine runs them: prompt, seed, scheduler, setting.
fn in_run_order(rows: HashMap<String, RunRow>, meta: &BenchMeta, rec: &ShardRecord) -> Vec<RunRow> {
    let st = &meta.settings;
    let pos = |v: &[String], x: &str| v.iter().position(|y| y == x).unwrap_or(usize::MAX);
    let mut rows: Vec<RunRow> = rows.into_values().collect();
    rows.sort_by_key(|r| {
        (
            r.prompt_index,
            st.seeds
                .iter()
                .position(|&s| s == r.seed)
                .unwrap_or(usize::MAX),
            pos(&st.schedulers, &r.scheduler),
            pos(&rec.settings, &r.setting),
        )
    });
    rows
}

/// The merged `bench.json`: the first part's, started when the first part started, with
/// every part's resumes, the whole plan's runs and the hosts.
fn merged_meta(
    started: &[&Part],
    runs: usize,
    duplicates: usize,
    whole_command: &dyn Fn(&str) -> String,
) -> BenchMeta {
    let metas: Vec<(&BenchMeta, &ShardRecord)> = started
        .iter()
        .filter_map(|p| p.meta.as_ref().map(|(m, r)| (m, r)))
        .collect();
    let (first, rec) = metas[0];
    let mut meta = first.clone();
    meta.command = whole_command(&first.command);
    meta.started_utc = metas
        .iter()
        .map(|(m, _)| m.started_utc.clone())
        .min()
        .unwrap_or_default();
    let mut resumed: Vec<String> = metas
        .iter()
        .flat_map(|(m, _)| m.resumed_utc.iter().cloned())
        .collect();
    resumed.sort();
    meta.resumed_utc = resumed;
    meta.image_size = metas.iter().find_map(|(m, _)| m.image_size);
    meta.expected_runs = runs;
    let mut hosts: Vec<String> = metas
        .iter()
        .flat_map(|(_, r)| r.hosts.iter().cloned())
        .collect();
    hosts.sort();
    hosts.dedup();
    meta.shard = None;
    meta.merged = Some(MergeRecord {
        shards: rec.count,
        hosts,
        duplicates,
        merged_utc: super::utc_now(),
    });
    meta
}

/// `out` may receive the merge: empty of a benchmark, or holding an earlier merge.
fn check_target(out: &Path) -> Result<()> {
    let path = out.join(BENCH_JSON);
    if !path.exists() {
        return Ok(());
    }
    let earlier: Option<BenchMeta> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    match earlier {
        Some(m) if m.merged.is_some() => Ok(()),
        _ => bail!(
            "{} holds a benchmark that was not merged from parts; merge into the folder that holds only {SHARDS_DIR}/",
            out.display()
        ),
    }
}

/// Write the merged benchmark: images, then `runs.csv`, `bench.json` and the reports.
fn write(
    out: &Path,
    parts: &[Part],
    meta: BenchMeta,
    rows: &[RunRow],
    duplicates: usize,
) -> Result<Merged> {
    let _lock = super::runner::lock_folder(out)?;
    let images = out.join(IMAGES_DIR);
    std::fs::create_dir_all(&images)
        .with_context(|| format!("cannot create {}", images.display()))?;
    for p in parts {
        let Ok(entries) = std::fs::read_dir(p.dir.join(IMAGES_DIR)) else {
            continue;
        };
        for e in entries.flatten() {
            let to = images.join(e.file_name());
            if to.exists() {
                continue;
            }
            let bytes = std::fs::read(e.path())
                .with_context(|| format!("cannot read {}", e.path().display()))?;
            crate::output::write_atomic(&to, &bytes)?;
        }
    }
    let mut csv = format!("{}\n", COLUMNS.join(","));
    for r in rows {
        csv.push_str(&r.to_csv_line());
    }
    crate::output::write_atomic(&out.join(RUNS_CSV), csv.as_bytes())?;
    crate::output::write_json(&out.join(BENCH_JSON), &meta)?;
    let parts_n = meta.merged.as_ref().map_or(parts.len(), |m| m.shards);
    let summary = report::write_reports_from(out, meta, rows)?;
    Ok(Merged {
        summary,
        parts: parts_n,
        duplicates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_list_names_each_part() {
        let e = Incomplete {
            planned: 24,
            found: 19,
            parts: vec![
                MissingPart {
                    shard: Shard { index: 2, count: 4 },
                    runs: (0..4).map(|i| format!("p{i}-s42-ddim-baseline")).collect(),
                    never_started: false,
                    args: vec![],
                    workdir: None,
                },
                MissingPart {
                    shard: Shard { index: 4, count: 4 },
                    runs: vec![],
                    never_started: true,
                    args: vec![],
                    workdir: None,
                },
            ],
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("5 of the 24 planned runs are missing"),
            "{msg}"
        );
        assert!(msg.contains("part 2-of-4 lacks 4 (p0-s42-ddim-baseline, p1-s42-ddim-baseline, p2-s42-ddim-baseline, …)"), "{msg}");
        assert!(msg.contains("part 4-of-4 never started"), "{msg}");
    }
}
