//! `adiff complexity` offline, and `--budget auto` on `generate` / `compare` with the tiny
//! random-weight pipeline in `tests/fixtures/tiny-sd`.

mod common;

use common::adiff;
use serde_json::Value;
use std::path::{Path, PathBuf};

const SIMPLE: &str = "a red apple on a white background";
const COMPLEX: &str = "a crowded night market with hundreds of people, food stalls, hanging lanterns, neon signs with legible text, reflections on wet pavement, intricate, 8k";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/tiny-sd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One `error:` line, non-zero exit, no panic.
fn expect_error(args: &[&str], needle: &str) {
    let o = adiff(args);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded: {err}");
    assert_ne!(o.status.code(), Some(101), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected '{needle}' in {err}"
    );
}

#[test]
fn complexity_command_offline() {
    let o = adiff(&["complexity", SIMPLE]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        out.contains("score      0.00 (0 of 12), level 1 of 5"),
        "{out}"
    );
    assert!(out.contains("scorer     heuristic\n"), "{out}");
    assert!(out.contains("budget     14 of 50 steps for the adaptive run (δ 0.01, C_max 4); the baseline keeps 50"), "{out}");

    let o = adiff(&[
        "complexity",
        COMPLEX,
        "--json",
        "--steps",
        "25",
        "--scale-policy",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["prompt"], COMPLEX);
    assert_eq!(j["scorer"], "heuristic");
    assert!(j["fallback"].is_null());
    assert!(j["score"].as_f64().unwrap() >= 0.8, "{j}");
    assert_eq!(j["budget"]["level"], 5);
    assert_eq!(j["budget"]["steps"], 17, "34 × 25/50");
    assert_eq!(j["budget"]["baseline_steps"], 25);
    assert_eq!(j["budget"]["policy_scaled"], true);
    assert_eq!(j["budget"]["max_skips"], 3);
    assert!(j["rationale"].as_str().unwrap().contains("hundreds"));
    for f in [
        "subject_count",
        "scene_density",
        "lighting_complexity",
        "fine_detail",
    ] {
        assert!(j["factors"][f].as_u64().unwrap() <= 3);
    }
}

#[test]
fn complexity_command_reports_the_graded_set() {
    let set = root().join("assets/prompts/graded.txt");
    let o = adiff(&["complexity", "--graded", set.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let line = out
        .lines()
        .find(|l| l.starts_with("Spearman rho of score against grade: "))
        .expect(&out);
    let rho: f64 = line
        .trim_start_matches("Spearman rho of score against grade: ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rho >= 0.8, "{line}");
}

#[test]
fn complexity_command_bad_input() {
    expect_error(&["complexity", "   "], "prompt is empty");
    expect_error(&["complexity", SIMPLE, "--steps", "0"], "--steps");
    expect_error(
        &[
            "complexity",
            SIMPLE,
            "--scorer",
            "ollama",
            "--ollama-timeout",
            "0",
        ],
        "--ollama-timeout",
    );
    expect_error(
        &[
            "complexity",
            SIMPLE,
            "--scorer",
            "ollama",
            "--ollama-url",
            "localhost 11434",
        ],
        "not a valid URL",
    );
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map.json");
    std::fs::write(&map, r#"{"reference_steps":50,"min_steps":5,"max_steps":50,"levels":[{"min_score":0.0,"steps":30},{"min_score":0.5,"steps":20}]}"#).unwrap();
    expect_error(
        &["complexity", SIMPLE, "--budget-map", map.to_str().unwrap()],
        "steps must not decrease",
    );
    expect_error(
        &[
            "complexity",
            SIMPLE,
            "--budget-map",
            "/nonexistent/map.json",
        ],
        "cannot read --budget-map",
    );
    expect_error(&["complexity", SIMPLE, "--scorer", "gpt"], "gpt");
}

#[test]
fn custom_budget_map_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map.json");
    std::fs::write(
        &map,
        r#"{"reference_steps":40,"min_steps":4,"max_steps":40,"levels":[{"min_score":0.0,"steps":10},{"min_score":0.5,"steps":30}]}"#,
    )
    .unwrap();
    let o = adiff(&[
        "complexity",
        SIMPLE,
        "--json",
        "--steps",
        "40",
        "--budget-map",
        map.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["budget"]["steps"], 10);
    assert_eq!(j["budget"]["levels"], 2);
    assert_eq!(j["budget"]["mapping"]["reference_steps"], 40);
}

fn compare_trace(prompt: &str, dir: &Path, name: &str) -> Value {
    let out = dir.join(format!("{name}.png"));
    let trace = dir.join(format!("{name}.json"));
    let w = fixture();
    let o = adiff(&[
        "compare",
        "--weights",
        w.to_str().unwrap(),
        "--prompt",
        prompt,
        "--steps",
        "20",
        "--budget",
        "auto",
        "--truncate",
        "--out",
        out.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("complexity "), "the decision is shown: {err}");
    assert!(err.contains("→ adaptive budget"), "{err}");
    serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap()
}

#[test]
fn compare_budget_auto_gives_simple_prompts_fewer_steps() {
    let dir = tempfile::tempdir().unwrap();
    let simple = compare_trace(SIMPLE, dir.path(), "simple");
    let complex = compare_trace(COMPLEX, dir.path(), "complex");
    for j in [&simple, &complex] {
        assert_eq!(j["left"]["budget"], 20, "the baseline keeps --steps");
        assert_eq!(j["left"]["steps_run"], 20);
        assert_eq!(j["complexity"]["scorer"], "heuristic");
        assert_eq!(j["complexity"]["budget"]["baseline_steps"], 20);
        assert_eq!(
            j["right"]["budget"], j["complexity"]["budget"]["steps"],
            "the adaptive trace runs the chosen budget"
        );
        assert!(j["complexity"]["rationale"].as_str().is_some());
        assert!(j["complexity"]["factors"]["subject_count"].is_u64());
    }
    let (s, c) = (
        simple["right"]["budget"].as_u64().unwrap(),
        complex["right"]["budget"].as_u64().unwrap(),
    );
    assert_eq!((s, c), (6, 14), "14 × 20/50 and 34 × 20/50, rounded");
    assert!(simple["right"]["unet_calls"].as_u64().unwrap() <= 6);
}

#[test]
fn generate_budget_auto_and_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let w = fixture();
    let out = dir.path().join("g.png");
    let trace = dir.path().join("g.json");
    let o = adiff(&[
        "generate",
        "--weights",
        w.to_str().unwrap(),
        "--prompt",
        SIMPLE,
        "--steps",
        "10",
        "--budget",
        "auto",
        "--scale-policy",
        "--out",
        out.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    assert_eq!(j["budget"], 3, "14 × 10/50 rounded");
    assert_eq!(j["complexity"]["budget"]["steps"], 3);
    assert_eq!(
        j["max_skips"], 5,
        "C_max 4 + 1 at level 1 with --scale-policy"
    );
    assert!((j["delta"].as_f64().unwrap() - 0.015).abs() < 1e-12);

    // Fixed (the default) records no complexity at all.
    let o = adiff(&[
        "generate",
        "--weights",
        w.to_str().unwrap(),
        "--prompt",
        SIMPLE,
        "--steps",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    assert_eq!(j["budget"], 4);
    assert!(j.get("complexity").is_none(), "{j}");

    let out2 = dir.path().join("never.png");
    expect_error(
        &[
            "generate",
            "--weights",
            w.to_str().unwrap(),
            "--prompt",
            SIMPLE,
            "--mode",
            "baseline",
            "--budget",
            "auto",
            "--out",
            out2.to_str().unwrap(),
        ],
        "--budget auto",
    );
    assert!(!out2.exists());
}
