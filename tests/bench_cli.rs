//! End-to-end tests of `adiff bench` and `adiff calibrate` on the tiny random-weight
//! pipeline in `tests/fixtures/tiny-sd` (CLIP: the tiny random CLIP in
//! `tests/fixtures/metrics/tiny-clip`).

mod common;

use common::{adiff, root, stderr};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "adiff failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `runs.csv` as maps column → value (RFC 4180: the method column quotes its commas).
fn rows(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut records = adaptive_diffusion::bench::records::parse_csv(&text).into_iter();
    let head = records.next().unwrap();
    records
        .map(|f| {
            assert_eq!(f.len(), head.len(), "{f:?}");
            head.iter().cloned().zip(f).collect()
        })
        .collect()
}

fn num(r: &HashMap<String, String>, k: &str) -> f64 {
    r[k].parse().unwrap_or_else(|_| panic!("{k} = '{}'", r[k]))
}

fn prompts_file(dir: &Path) -> PathBuf {
    let p = dir.join("prompts.txt");
    std::fs::write(
        &p,
        "# test prompts\na red circle at the top left\n3\ttwo cats on a sofa under warm lamp light\n",
    )
    .unwrap();
    p
}

fn bench_args<'a>(prompts: &'a str, weights: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "bench",
        "--prompts",
        prompts,
        "--weights",
        weights,
        "--schedulers",
        "ddim,dpm++",
        "--seeds",
        "42",
        "--steps",
        "12",
        "--deltas",
        "0.004,0.012",
        "--out",
        out,
    ]
}

#[test]
fn bench_writes_reports_that_parse_and_agree_with_runs_csv() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = prompts_file(dir.path());
    let out = dir.path().join("bench");
    let weights = root().join("tests/fixtures/tiny-sd");
    let clip = root().join("tests/fixtures/metrics/tiny-clip");
    let mut args = bench_args(
        prompts.to_str().unwrap(),
        weights.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    args.extend(["--clip", clip.to_str().unwrap(), "--save-images"]);
    let o = adiff(&args);
    ok(&o);

    for f in [
        "runs.csv",
        "summary.json",
        "report.md",
        "bench.json",
        "speedup_vs_psnr.svg",
        "steps_vs_complexity.svg",
        "skip_pattern.svg",
        "skip_pattern.png",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    for f in [
        "speedup_vs_psnr.svg",
        "steps_vs_complexity.svg",
        "skip_pattern.svg",
    ] {
        let svg = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{f}"
        );
    }
    image::open(out.join("skip_pattern.png")).unwrap();

    // 2 prompts × 1 seed × 2 schedulers × (baseline + 2 δ)
    let runs = rows(&out.join("runs.csv"));
    assert_eq!(runs.len(), 12);
    let ids: std::collections::HashSet<&str> = runs.iter().map(|r| r["run_id"].as_str()).collect();
    assert_eq!(ids.len(), 12, "run ids are unique");
    for r in &runs {
        assert_eq!(r["budget"], "12");
        assert_eq!(r["pattern"].len(), 12);
        assert!(num(r, "loop_ms") > 0.0);
        assert!(
            !r["clip_cosine"].is_empty(),
            "CLIP measured with the tiny CLIP"
        );
        let cos = num(r, "clip_cosine");
        assert!((-1.0..=1.0).contains(&cos));
        assert!((num(r, "clip_score") - 100.0 * cos.max(0.0)).abs() < 1e-9);
        if r["setting"] == "baseline" {
            assert!(r["psnr_db"].is_empty() && r["ssim"].is_empty());
            assert!(out.join(format!("images/{}.png", r["run_id"])).is_file());
        } else {
            assert_eq!(r["mode"], "adaptive");
            assert!(num(r, "unet_calls") <= 12.0);
            assert!(!r["psnr_db"].is_empty() && !r["ssim"].is_empty());
            assert!(!r["clip_delta"].is_empty());
            assert!(out.join(format!("images/{}.png", r["run_id"])).is_file());
        }
    }
    // the graded prompt's grade and a complexity score are recorded
    assert!(runs.iter().any(|r| r["grade"] == "3"));
    assert!(runs.iter().all(|r| !r["complexity"].is_empty()));

    // recompute summary numbers from runs.csv
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["runs_done"], 12);
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["clip"]["measured"], true);
    let groups = summary["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 6);
    for sch in ["ddim", "dpm++"] {
        let g = groups
            .iter()
            .find(|g| g["scheduler"] == sch && g["setting"] == "delta=0.012")
            .unwrap();
        let base: HashMap<&str, &HashMap<String, String>> = runs
            .iter()
            .filter(|r| r["scheduler"] == sch && r["setting"] == "baseline")
            .map(|r| (r["prompt_index"].as_str(), r))
            .collect();
        let ad: Vec<&HashMap<String, String>> = runs
            .iter()
            .filter(|r| r["scheduler"] == sch && r["setting"] == "delta=0.012")
            .collect();
        let base_ms: f64 = ad
            .iter()
            .map(|r| num(base[r["prompt_index"].as_str()], "loop_ms"))
            .sum();
        let ms: f64 = ad.iter().map(|r| num(r, "loop_ms")).sum();
        let speedup = g["speedup"].as_f64().unwrap();
        assert!(
            (speedup - base_ms / ms).abs() < 1e-9 * speedup,
            "{sch}: speedup {speedup} vs {}",
            base_ms / ms
        );
        let nfe: f64 = ad.iter().map(|r| num(r, "unet_calls")).sum::<f64>() / ad.len() as f64;
        assert!((g["nfe"]["mean"].as_f64().unwrap() - nfe).abs() < 1e-9);
        let finite: Vec<f64> = ad
            .iter()
            .map(|r| num(r, "psnr_db"))
            .filter(|p| p.is_finite())
            .collect();
        if finite.is_empty() {
            assert!(g["psnr_db"]["mean"].is_null());
        } else {
            let mean = finite.iter().sum::<f64>() / finite.len() as f64;
            // runs.csv keeps Rust's shortest round-trip form of each PSNR
            assert!(
                (g["psnr_db"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9,
                "{sch}"
            );
        }
        let ssim = ad.iter().map(|r| num(r, "ssim")).sum::<f64>() / ad.len() as f64;
        assert!((g["ssim"]["mean"].as_f64().unwrap() - ssim).abs() < 1e-9);
        let dclip = ad.iter().map(|r| num(r, "clip_delta")).sum::<f64>() / ad.len() as f64;
        assert!((g["clip_delta"]["mean"].as_f64().unwrap() - dclip).abs() < 1e-9);
    }

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "## ddim",
        "## dpm++",
        "Pareto front",
        "speedup_vs_psnr.svg",
        "δ = 0.012",
        "- Swept: AdaptiveDiffusion δ ∈ {",
        "adiff bench --prompts",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle}:\n{md}");
    }
    assert!(!md.contains("not measured"), "{md}");
}

#[test]
fn bench_resumes_after_an_interruption_without_rerunning() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = prompts_file(dir.path());
    let out = dir.path().join("bench");
    let weights = root().join("tests/fixtures/tiny-sd");
    let mut args = bench_args(
        prompts.to_str().unwrap(),
        weights.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    args.push("--no-clip");
    ok(&adiff(&args));
    let csv = out.join("runs.csv");
    let full = std::fs::read_to_string(&csv).unwrap();
    // simulate a kill after 4 runs, in the middle of writing the 5th
    let lines: Vec<&str> = full.lines().collect();
    let kept = format!("{}\n{}", lines[..5].join("\n"), &lines[5][..20]);
    std::fs::write(&csv, kept).unwrap();

    // without --resume the folder is protected
    let o = adiff(&args);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    // with other settings --resume refuses
    let mut other = args.clone();
    let i = other.iter().position(|a| *a == "12").unwrap();
    other[i] = "10";
    other.push("--resume");
    let o = adiff(&other);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("steps"), "{}", stderr(&o));

    args.push("--resume");
    ok(&adiff(&args));
    let after = rows(&csv);
    assert_eq!(after.len(), 12);
    let before: Vec<HashMap<String, String>> = {
        let text = format!("{}\n", lines[..5].join("\n"));
        let records = adaptive_diffusion::bench::records::parse_csv(&text);
        let head = &records[0];
        records[1..]
            .iter()
            .map(|f| head.iter().cloned().zip(f.iter().cloned()).collect())
            .collect()
    };
    assert_eq!(
        &after[..4],
        &before[..],
        "finished runs are kept as they were"
    );
    let ids: std::collections::HashSet<&str> = after.iter().map(|r| r["run_id"].as_str()).collect();
    assert_eq!(ids.len(), 12);
    // resumed runs reproduce the same images: PSNR of the same settings matches the full run
    let full_rows: Vec<&str> = full.lines().collect();
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["clip"]["measured"], false);
    assert_eq!(full_rows.len(), 13);
    let bench: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    assert_eq!(bench["resumed_utc"].as_array().unwrap().len(), 1);
}

#[test]
fn bench_without_clip_weights_reports_not_measured_and_reads_coco() {
    let dir = tempfile::tempdir().unwrap();
    let coco = dir.path().join("captions_val2017.json");
    std::fs::write(
        &coco,
        r#"{"images":[{"id":139},{"id":285}],
            "annotations":[{"image_id":285,"id":1,"caption":"A big brown bear."},
                           {"image_id":139,"id":2,"caption":"A living room with a TV."},
                           {"image_id":139,"id":3,"caption":"Second caption."}]}"#,
    )
    .unwrap();
    let out = dir.path().join("b");
    let weights = root().join("tests/fixtures/tiny-sd");
    let o = adiff(&[
        "bench",
        "--prompts",
        coco.to_str().unwrap(),
        "--limit",
        "1",
        "--weights",
        weights.to_str().unwrap(),
        "--steps",
        "8",
        "--deltas",
        "0.01",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    assert!(
        stderr(&o).contains("CLIP alignment not measured"),
        "{}",
        stderr(&o)
    );
    let runs = rows(&out.join("runs.csv"));
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["prompt"], "A living room with a TV.");
    assert!(
        runs.iter()
            .all(|r| r["clip_cosine"].is_empty() && r["clip_score"].is_empty())
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**not measured**"), "{md}");
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["clip"]["measured"], false);
    assert!(s["groups"][1]["clip_cosine"]["mean"].is_null());
}

#[test]
fn bench_usage_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = prompts_file(dir.path());
    let weights = root().join("tests/fixtures/tiny-sd");
    let out = dir.path().join("o");
    for (extra, needle) in [
        (vec!["--schedulers", "heun"], "heun"),
        (vec!["--deltas", "-1"], "--delta"),
        (vec!["--clip", "not-a-repo"], "--clip"),
    ] {
        let mut args = bench_args(
            prompts.to_str().unwrap(),
            weights.to_str().unwrap(),
            out.to_str().unwrap(),
        );
        args.extend(extra);
        let o = adiff(&args);
        let err = stderr(&o);
        assert!(!o.status.success());
        assert!(err.contains(needle), "{err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
        assert!(!out.exists());
    }
    let o = adiff(&[
        "bench",
        "--prompts",
        "/nonexistent.txt",
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("cannot read --prompts"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn calibrate_writes_a_budget_map_that_budget_auto_reads() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = prompts_file(dir.path());
    let weights = root().join("tests/fixtures/tiny-sd");
    let out = dir.path().join("cal");
    let o = adiff(&[
        "calibrate",
        "--prompts",
        prompts.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--steps",
        "10",
        "--psnr-target",
        "40",
        "--deltas",
        "0.004,0.012,0.05",
        "--budgets",
        "4,6,8",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    let cal: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("calibration.json")).unwrap())
            .unwrap();
    let samples = cal["prompts"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    for s in samples {
        // the chosen δ and budget meet the target; the next probe (if any) does not
        let probes = s["delta_probes"].as_array().unwrap();
        if let Some(d) = s["largest_delta"].as_f64() {
            let p = probes
                .iter()
                .find(|p| p["delta"].as_f64() == Some(d))
                .unwrap();
            assert_eq!(p["passes"], true);
        }
        if let Some(last) = probes.last()
            && probes.len() < 3
        {
            assert_eq!(last["passes"], false);
        }
        let b = s["min_budget"].as_u64().unwrap();
        assert!((4..=10).contains(&b));
    }
    let map_path = out.join("budget_map.json");
    let map: Value = serde_json::from_str(&std::fs::read_to_string(&map_path).unwrap()).unwrap();
    assert_eq!(map["reference_steps"], 10);
    assert_eq!(map["levels"].as_array().unwrap().len(), 5);
    // `--budget auto` reads it
    let png = dir.path().join("c.png");
    let o = adiff(&[
        "compare",
        "--weights",
        weights.to_str().unwrap(),
        "--prompt",
        "a red circle at the top left",
        "--steps",
        "10",
        "--budget",
        "auto",
        "--budget-map",
        map_path.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    ok(&o);
    assert!(png.is_file());
}

#[test]
fn bench_compares_methods_with_the_matched_fewer_steps_control() {
    use adaptive_diffusion::bench::records::read_rows;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("prompts.txt");
    std::fs::write(&p, "a red circle at the top left\n").unwrap();
    let out = dir.path().join("b");
    let w = root().join("tests/fixtures/tiny-sd");
    let o = adiff(&[
        "bench",
        "--prompts",
        p.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "--steps",
        "16",
        "--no-clip",
        "--method",
        "adaptive:delta=0.02",
        "--method",
        "adaptive+forecast:delta=0.02",
        "--method",
        "ucache:threshold=1/3",
        "--method",
        "steps:n=match",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    let rows = read_rows(&out.join("runs.csv")).unwrap();
    let by = |setting: &str| {
        rows.iter()
            .find(|r| r.setting == setting)
            .unwrap_or_else(|| {
                panic!(
                    "no row {setting}: {:?}",
                    rows.iter().map(|r| &r.setting).collect::<Vec<_>>()
                )
            })
    };
    // baseline, 2 adaptive kinds, 2 ucache thresholds, and one matched control each.
    assert_eq!(rows.len(), 1 + 4 + 4, "{rows:?}");
    let base = by("baseline");
    assert_eq!(base.method, "baseline");
    assert!(base.unet_cost.unwrap() > 0.0 && base.unet_macs.unwrap() > 0);
    let adaptive = by("adaptive:delta=0.02,max_skips=4");
    assert_eq!(adaptive.mode.name(), "adaptive");
    assert!(adaptive.unet_calls < base.unet_calls);
    // Cost is per call: the same per-call MACs on both sides.
    let per_call =
        |r: &adaptive_diffusion::bench::records::RunRow| r.unet_macs.unwrap() / r.unet_calls as u64;
    assert_eq!(per_call(adaptive), per_call(base));
    let control = by("steps:n=match(adaptive:delta=0.02,max_skips=4)");
    assert_eq!(control.mode.name(), "steps");
    assert_eq!(
        control.budget, adaptive.unet_calls,
        "matched to the adaptive run's calls"
    );
    assert_eq!(control.unet_calls, adaptive.unet_calls);
    assert!(control.psnr_db.is_some());
    let forecast = by("adaptive+forecast:delta=0.02,max_skips=4");
    assert_eq!(
        forecast.pattern, adaptive.pattern,
        "the same decisions as plain reuse"
    );
    assert!(
        by("ucache:threshold=3,start=0.15,end=0.95,decay=1,relative=1,reset=1").unet_calls
            <= by("ucache:threshold=1,start=0.15,end=0.95,decay=1,relative=1,reset=1").unet_calls
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    // Each row's label is unique: plain AdaptiveDiffusion and its forecast variant at the
    // same δ read apart, the two ucache thresholds by the key that differs.
    let labels: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| setting"))
        .map(|l| l.split(" | ").next().unwrap().trim_start_matches("| "))
        .collect();
    assert_eq!(
        labels,
        [
            "baseline",
            "adaptive",
            "adaptive+forecast",
            "ucache:threshold=1",
            "ucache:threshold=3",
            "steps:n=match(adaptive)",
            "steps:n=match(adaptive+forecast)",
            "steps:n=match(ucache:threshold=1)",
            "steps:n=match(ucache:threshold=3)",
        ],
        "{md}"
    );
    // The header lists what was swept, each short label with its spec.
    assert!(
        md.contains("- Swept: `adaptive` = `adaptive:delta=0.02,max_skips=4`; `adaptive+forecast` = `adaptive+forecast:delta=0.02,max_skips=4`; `ucache:threshold=1` = `ucache:threshold=1,start=0.15,end=0.95,decay=1,relative=1,reset=1`"),
        "{md}"
    );
    assert!(!md.contains("δ ∈ {}") && !md.contains("δ = 0.02"), "{md}");
}

/// A row of `runs.csv` without the columns that time the run.
fn untimed(r: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .iter()
        .filter(|(k, _)| {
            ![
                "loop_ms",
                "decode_ms",
                "total_ms",
                "peak_rss_mb",
                "finished_at",
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort();
    v
}

fn one_error_line(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "succeeded: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "no '{n}' in {}", lines[0]);
    }
}

#[test]
fn sharded_parts_merge_into_the_rows_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = prompts_file(dir.path());
    let weights = root().join("tests/fixtures/tiny-sd");
    let (p, w) = (prompts.to_str().unwrap(), weights.to_str().unwrap());
    let single = dir.path().join("single");
    let mut args = bench_args(p, w, single.to_str().unwrap());
    args.push("--no-clip");
    ok(&adiff(&args));

    // 4 groups in 3 parts: 2, 1, 1.
    let out = dir.path().join("sharded");
    let o_str = out.to_str().unwrap();
    let mut args = bench_args(p, w, o_str);
    args.push("--no-clip");
    for k in ["1/3", "2/3"] {
        let mut a = args.clone();
        a.extend(["--shard", k]);
        ok(&adiff(&a));
    }
    assert_eq!(rows(&out.join("shards/1-of-3/runs.csv")).len(), 6);
    assert_eq!(rows(&out.join("shards/2-of-3/runs.csv")).len(), 3);
    // A part missing: nothing is merged, the error names it and its command follows.
    let o = adiff(&["bench", "merge", o_str]);
    one_error_line(
        &o,
        &[
            "3 of the 12 planned runs are missing",
            "part 3-of-3 never started",
        ],
    );
    assert!(
        stderr(&o).contains("--shard 3/3 --resume"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("runs.csv").exists());
    let mut a = args.clone();
    a.extend(["--shard", "3/3"]);
    ok(&adiff(&a));
    // A row recorded twice (a requeued part) counts once.
    let csv1 = out.join("shards/1-of-3/runs.csv");
    let text = std::fs::read_to_string(&csv1).unwrap();
    let again = text.lines().nth(2).unwrap().to_string();
    std::fs::write(&csv1, format!("{text}{again}\n")).unwrap();
    let o = adiff(&["bench", "merge", o_str]);
    ok(&o);
    assert!(stderr(&o).contains("1 found twice"), "{}", stderr(&o));

    let merged = rows(&out.join("runs.csv"));
    let one = rows(&single.join("runs.csv"));
    assert_eq!(merged.len(), 12);
    assert_eq!(
        merged.iter().map(untimed).collect::<Vec<_>>(),
        one.iter().map(untimed).collect::<Vec<_>>()
    );
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["complete"], true);
    assert_eq!(s["merged"]["shards"], 3);
    assert_eq!(s["merged"]["duplicates"], 1);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("Ran as 3 parts on 1 machine"), "{md}");
    assert!(md.contains("counted once"), "{md}");
    // The command is the whole benchmark's: no part's --shard.
    let command = md.lines().find(|l| l.starts_with("- Command:")).unwrap();
    assert!(
        command.contains("bench") && !command.contains("--shard"),
        "{command}"
    );
    // A part still running (its folder's bench lock held) is not merged.
    let lock = std::fs::File::open(out.join("shards/2-of-3/.adiff-bench.lock")).unwrap();
    lock.lock().unwrap();
    let o = adiff(&["bench", "merge", o_str]);
    one_error_line(&o, &["part 2-of-3 is still running"]);
    lock.unlock().unwrap();
    // A folder holding a one-machine benchmark does not receive a merge.
    std::fs::create_dir_all(single.join("shards")).unwrap();
    for k in 1..=3 {
        let to = single.join(format!("shards/{k}-of-3"));
        std::fs::create_dir_all(&to).unwrap();
        for f in ["bench.json", "runs.csv"] {
            std::fs::copy(out.join(format!("shards/{k}-of-3/{f}")), to.join(f)).unwrap();
        }
    }
    let before = std::fs::read(single.join("runs.csv")).unwrap();
    let o = adiff(&["bench", "merge", single.to_str().unwrap()]);
    one_error_line(&o, &["holds a benchmark that was not merged from parts"]);
    assert_eq!(std::fs::read(single.join("runs.csv")).unwrap(), before);

    // Parts of different plans, or from another version, are refused by name; nothing is
    // merged half-way.
    let edit = |what: &str, change: &dyn Fn(&mut Value)| {
        let bad = dir.path().join(what);
        std::fs::create_dir_all(bad.join("shards")).unwrap();
        for k in 1..=3 {
            let from = out.join(format!("shards/{k}-of-3"));
            let to = bad.join(format!("shards/{k}-of-3"));
            std::fs::create_dir_all(&to).unwrap();
            for f in ["bench.json", "runs.csv"] {
                std::fs::copy(from.join(f), to.join(f)).unwrap();
            }
        }
        let meta = bad.join("shards/2-of-3/bench.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
        change(&mut v);
        std::fs::write(&meta, v.to_string()).unwrap();
        let o = adiff(&["bench", "merge", bad.to_str().unwrap()]);
        assert!(!bad.join("runs.csv").exists() && !bad.join("report.md").exists());
        o
    };
    let o = edit("steps", &|v| v["settings"]["steps"] = 10.into());
    one_error_line(
        &o,
        &[
            "parts 1-of-3 and 2-of-3 ran different plans",
            "steps: was 12, now 10",
        ],
    );
    let o = edit("model", &|v| v["settings"]["model"] = "other".into());
    one_error_line(&o, &["different plans", "model: was"]);
    let o = edit("version", &|v| v["adiff_version"] = "0.0.1".into());
    one_error_line(&o, &["written by adiff 0.0.1", "2-of-3"]);
    let o = edit("older", &|v| {
        v.as_object_mut().unwrap().remove("shard");
    });
    one_error_line(&o, &["not part 2-of-3"]);
    // Parts of another split, and a folder that is not a part, beside them.
    let mixed = dir.path().join("older");
    std::fs::create_dir_all(mixed.join("shards/1-of-2")).unwrap();
    let o = adiff(&["bench", "merge", mixed.to_str().unwrap()]);
    one_error_line(&o, &["parts of different splits (1-of-2 and 1-of-3)"]);
    std::fs::remove_dir(mixed.join("shards/1-of-2")).unwrap();
    std::fs::create_dir_all(mixed.join("shards/notes")).unwrap();
    let o = adiff(&["bench", "merge", mixed.to_str().unwrap()]);
    one_error_line(&o, &["notes is not a part's folder (K-of-N"]);
}

#[test]
fn shard_and_slurm_bad_input_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = prompts_file(dir.path());
    let weights = root().join("tests/fixtures/tiny-sd");
    let (p, w) = (prompts.to_str().unwrap(), weights.to_str().unwrap());
    let out = dir.path().join("o");
    let o_str = out.to_str().unwrap();
    let bench = |extra: &[&str]| {
        let mut a = bench_args(p, w, o_str);
        a.extend(extra);
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_adiff"));
        c.args(&a).env("HF_HUB_OFFLINE", "1");
        for v in [
            "SLURM_ARRAY_TASK_ID",
            "SLURM_ARRAY_TASK_MIN",
            "SLURM_ARRAY_TASK_MAX",
            "SLURM_ARRAY_TASK_COUNT",
        ] {
            c.env_remove(v);
        }
        c.output().unwrap()
    };
    for (shard, needles) in [
        (
            "0/4",
            vec!["--shard", "part 0 of 4 does not exist", "1 to N"],
        ),
        ("5/4", vec!["--shard", "part 5 of 4 does not exist"]),
        ("two", vec!["--shard", "'two' is not K/N"]),
        (
            "auto",
            vec!["--shard", "SLURM_ARRAY_TASK_ID is not set", "K/N"],
        ),
        // 2 prompts × 2 schedulers
        (
            "5/5",
            vec!["--shard 5/5", "4 prompt × seed × scheduler groups"],
        ),
    ] {
        one_error_line(&bench(&["--shard", shard]), &needles);
        assert!(!out.exists(), "{shard}");
    }
    // A part that fails loading its model leaves no folder behind (OUT/shards/ included).
    let broken = dir.path().join("broken-sd");
    for sub in ["", "unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
        let from = weights.join(sub);
        std::fs::create_dir_all(broken.join(sub)).unwrap();
        for e in std::fs::read_dir(&from).unwrap().flatten() {
            let name = e.file_name();
            if e.path().is_file() && name != "diffusion_pytorch_model.safetensors" {
                std::fs::copy(e.path(), broken.join(sub).join(&name)).unwrap();
            }
        }
    }
    let mut a = bench_args(p, broken.to_str().unwrap(), o_str);
    a.extend(["--no-clip", "--shard", "1/2"]);
    one_error_line(&adiff(&a), &["diffusion_pytorch_model.safetensors"]);
    assert!(!out.exists(), "a failed part left {}", out.display());
    let slurm = |extra: &[&str], path: Option<&str>| {
        let mut a = vec!["bench", "slurm"];
        a.extend(&bench_args(p, w, o_str)[1..]);
        a.extend(extra);
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_adiff"));
        c.args(&a).env("HF_HUB_OFFLINE", "1");
        if let Some(path) = path {
            c.env("PATH", path);
        }
        c.output().unwrap()
    };
    one_error_line(
        &slurm(&["--tasks", "5"], None),
        &["--tasks 5", "4 or fewer"],
    );
    one_error_line(
        &slurm(&["--tasks", "2", "--time", "2days"], None),
        &["--time '2days' is not a Slurm time limit"],
    );
    one_error_line(
        &slurm(&["--tasks", "2", "--partition", "a b"], None),
        &["--partition 'a b'"],
    );
    one_error_line(
        &slurm(&["--tasks", "2", "--shard", "1/2"], None),
        &["--shard", "leave --shard out"],
    );
    // No sbatch here: the scripts are written, submitting them is refused, saying where.
    let empty = dir.path().join("no-tools");
    std::fs::create_dir_all(&empty).unwrap();
    let o = slurm(&["--tasks", "2", "--submit"], empty.to_str());
    one_error_line(&o, &["sbatch was not found", "/o/slurm"]);

    // --print: the array script an HPC user expects, with the bench command of a task.
    let o = slurm(
        &[
            "--tasks",
            "4",
            "--partition",
            "gpu",
            "--gpus-per-task",
            "1",
            "--time",
            "02:00:00",
            "--account",
            "proj42",
            "--max-parallel",
            "2",
            "--print",
        ],
        None,
    );
    ok(&o);
    let script = String::from_utf8_lossy(&o.stdout).into_owned();
    for line in [
        "#!/bin/bash",
        "#SBATCH --array=1-4%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj42",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --time=02:00:00",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@600",
        "#SBATCH --job-name=adiff-bench-merge",
    ] {
        assert!(script.lines().any(|l| l == line), "no {line} in\n{script}");
    }
    let task = script
        .lines()
        .find(|l| l.ends_with(" &"))
        .expect("the task's command");
    assert!(
        task.contains(" bench --prompts ")
            && task.contains("--shard auto --resume")
            && !task.contains("--tasks")
            && !task.contains("--partition"),
        "{task}"
    );
    let written = std::fs::read_to_string(out.join("slurm/bench-array.sbatch")).unwrap();
    assert!(script.starts_with(&written), "--print prints what it wrote");
}

/// SADA's authors' code runs on Euler and DPM++ only: a sweep over DDIM and Euler runs it
/// (and its matched control) on Euler, says in the report where it did not run, and counts
/// only the runs it made.
#[test]
fn bench_runs_a_method_only_on_the_schedulers_it_supports() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("prompts.txt");
    std::fs::write(&p, "a red circle at the top left\n").unwrap();
    let out = dir.path().join("b");
    let w = root().join("tests/fixtures/tiny-sd");
    let o = adiff(&[
        "bench",
        "--prompts",
        p.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "--schedulers",
        "ddim,euler",
        "--steps",
        "8",
        "--no-clip",
        "--method",
        "sada:acc_start=3,acc_end=7",
        "--method",
        "steps:n=match",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    let r = rows(&out.join("runs.csv"));
    let on = |k: &str| -> Vec<&str> {
        r.iter()
            .filter(|x| x["scheduler"] == k)
            .map(|x| x["setting"].as_str())
            .collect()
    };
    assert_eq!(on("ddim"), ["baseline"]);
    assert_eq!(on("euler").len(), 3, "{:?}", on("euler"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("- Not run: `sada` on ddim (its authors' code runs on euler, dpm++"),
        "{md}"
    );
    assert!(md.contains("- Runs: 4 of 4"), "{md}");
}
