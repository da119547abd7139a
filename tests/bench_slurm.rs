//! `adiff bench slurm --submit` against a real Slurm: the one-node cluster that
//! `tools/slurm/local-cluster.sh start` brings up (`.ci/run` starts it). Each test is
//! skipped, saying so, when `sbatch` is not installed.
//!
//! * A 4-task array over the tiny pipeline, merged by its merge job, gives the rows of one
//!   `adiff bench` process (all but the timing columns).
//! * A task cancelled mid-run (`scancel`) and requeued, and a task told to stop before its
//!   time limit (`USR1`, which requeues itself), lose no run and duplicate none.

mod common;

use adaptive_diffusion::bench::records::{RunRow, read_rows};
use common::{adiff, arg, stderr, tiny_sd};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Whether `sbatch` is installed; when not, say why the test is skipped. When it is, the
/// cluster must answer.
fn slurm_available(test: &str) -> bool {
    if Command::new("sbatch").arg("--version").output().is_err() {
        // Straight to stderr, past the test harness's capture: shown by a plain `cargo test`.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "{test}: SKIPPED: sbatch is not installed; install Slurm (apt-get install -y slurm-wlm munge) and start a local cluster with tools/slurm/local-cluster.sh start to run it"
        );
        return false;
    }
    let o = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .output()
        .expect("sinfo");
    assert!(
        o.status.success(),
        "sbatch is installed but no Slurm cluster answers ({}); start one with tools/slurm/local-cluster.sh start",
        String::from_utf8_lossy(&o.stderr).trim()
    );
    true
}

/// Cancels the jobs when the test ends, passed or not.
struct Jobs(Vec<String>);

impl Drop for Jobs {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = Command::new("scancel").arg(id).output();
        }
    }
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "adiff failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The job ids `adiff bench slurm --submit` printed: (array, merge).
fn job_ids(o: &Output) -> (String, String) {
    let out = String::from_utf8_lossy(&o.stdout);
    let id = |what: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(what))
            .unwrap_or_else(|| panic!("no '{what}' in {out}"))
            .trim()
            .to_string()
    };
    (id("array job "), id("merge job "))
}

/// Jobs of `ids` still pending, running or completing.
fn active(ids: &[&str]) -> usize {
    let o = Command::new("squeue")
        .args(["-h", "-o", "%i %t", "-j", &ids.join(",")])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&o.stdout).lines().count()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rows_in(csv: &Path) -> Vec<RunRow> {
    if csv.is_file() {
        read_rows(csv).unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// A row without its timing columns (and the time it finished).
fn untimed(r: &RunRow) -> RunRow {
    RunRow {
        loop_ms: 0.0,
        decode_ms: 0.0,
        total_ms: 0.0,
        peak_rss_mb: None,
        finished_at: String::new(),
        ..r.clone()
    }
}

fn bench_args<'a>(
    prompts: &'a str,
    weights: &'a str,
    out: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut v = vec![
        "--prompts",
        prompts,
        "--weights",
        weights,
        "--seeds",
        "42",
        "--no-clip",
        "--out",
        out,
    ];
    v.extend(extra);
    v
}

#[test]
fn a_four_task_array_gives_the_rows_of_one_process() {
    if !slurm_available("a_four_task_array_gives_the_rows_of_one_process") {
        return;
    }
    let t0 = Instant::now();
    let weights = tiny_sd();
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.txt");
    std::fs::write(
        &prompts,
        "a red circle at the top left\n3\ttwo cats on a sofa under warm lamp light\n",
    )
    .unwrap();
    let plan = [
        "--schedulers",
        "ddim,dpm++",
        "--steps",
        "12",
        "--deltas",
        "0.004,0.012",
    ];
    let sharded = dir.path().join("sharded");
    let mut args = vec!["bench", "slurm"];
    args.extend(bench_args(
        arg(&prompts),
        arg(&weights),
        arg(&sharded),
        &plan,
    ));
    args.extend(["--tasks", "4", "--time", "10", "--submit"]);
    let o = adiff(&args);
    ok(&o);
    let (array, merge) = job_ids(&o);
    let _jobs = Jobs(vec![array.clone(), merge.clone()]);

    // The same plan in one process, while the cluster runs.
    let single = dir.path().join("single");
    let mut args = vec!["bench"];
    args.extend(bench_args(
        arg(&prompts),
        arg(&weights),
        arg(&single),
        &plan,
    ));
    ok(&adiff(&args));

    wait_until(
        "the array and its merge job",
        Duration::from_secs(150),
        || active(&[&array, &merge]) == 0,
    );
    let merge_log = sharded.join(format!("slurm/logs/merge-{merge}.out"));
    let log = std::fs::read_to_string(&merge_log).unwrap_or_default();
    assert!(log.contains("merged 4 parts"), "merge job log: {log}");
    for k in 1..=4 {
        assert!(
            sharded
                .join(format!("slurm/logs/task-{array}_{k}.out"))
                .is_file()
        );
    }
    let merged = read_rows(&sharded.join("runs.csv")).unwrap();
    let one = read_rows(&single.join("runs.csv")).unwrap();
    assert_eq!(one.len(), 12);
    assert_eq!(
        merged.iter().map(untimed).collect::<Vec<_>>(),
        one.iter().map(untimed).collect::<Vec<_>>(),
        "the merged rows are one process's, in its order"
    );
    let bench: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sharded.join("bench.json")).unwrap())
            .unwrap();
    assert_eq!(bench["merged"]["shards"], 4);
    assert_eq!(bench["expected_runs"], 12);
    let md = std::fs::read_to_string(sharded.join("report.md")).unwrap();
    assert!(md.contains("Ran as 4 parts on 1 machine"), "{md}");
    assert!(sharded.join("images/p1-s42-dpm++-baseline.png").is_file());

    // sbatch refusing a script: its message, whole, on the one error line.
    let refused = dir.path().join("refused");
    let mut args = vec!["bench", "slurm"];
    args.extend(bench_args(
        arg(&prompts),
        arg(&weights),
        arg(&refused),
        &plan,
    ));
    args.extend(["--tasks", "2", "--partition", "nosuchpartition", "--submit"]);
    let o = adiff(&args);
    assert!(!o.status.success());
    let err = stderr(&o);
    let line: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(line.len(), 1, "{err}");
    assert!(
        line[0].contains("sbatch refused") && line[0].contains("nosuchpartition"),
        "{err}"
    );
    eprintln!(
        "4-task array, merged, and one process: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_cancelled_and_a_stopped_task_requeued_lose_nothing_and_duplicate_nothing() {
    if !slurm_available("a_cancelled_and_a_stopped_task_requeued_lose_nothing") {
        return;
    }
    let t0 = Instant::now();
    let weights = tiny_sd();
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.txt");
    std::fs::write(
        &prompts,
        "a red circle\na blue square\na green triangle\na yellow star\n",
    )
    .unwrap();
    // 4 groups × (baseline + 3 δ) = 16 runs, 8 per task.
    let plan = ["--steps", "30", "--deltas", "0.004,0.012,0.03"];
    let out = dir.path().join("b");
    let mut args = vec!["bench", "slurm"];
    args.extend(bench_args(arg(&prompts), arg(&weights), arg(&out), &plan));
    args.extend(["--tasks", "2", "--submit"]);
    let o = adiff(&args);
    ok(&o);
    let (array, merge) = job_ids(&o);
    let _jobs = Jobs(vec![array.clone(), merge.clone()]);
    let part_csv = |k: usize| out.join(format!("shards/{k}-of-2/runs.csv"));

    // Task 1: cancelled after its first run, then requeued.
    wait_until("task 1's first run", Duration::from_secs(90), || {
        !rows_in(&part_csv(1)).is_empty()
    });
    run("scancel", &[&format!("{array}_1")]);
    // Task 2: told to stop as before a time limit (USR1 to its batch script).
    wait_until("task 2's first run", Duration::from_secs(90), || {
        !rows_in(&part_csv(2)).is_empty()
    });
    run(
        "scancel",
        &["--batch", "--signal=USR1", &format!("{array}_2")],
    );
    wait_until("task 1 to end", Duration::from_secs(30), || {
        active(&[&format!("{array}_1")]) == 0
    });
    let cut = rows_in(&part_csv(1)).len();
    assert!(
        cut < 8,
        "task 1 finished before it was cancelled ({cut} runs)"
    );
    run("scontrol", &["requeue", &format!("{array}_1")]);

    wait_until(
        "both tasks and the merge job",
        Duration::from_secs(150),
        || active(&[&array, &merge]) == 0,
    );
    let log2 = std::fs::read_to_string(out.join(format!("slurm/logs/task-{array}_2.out"))).unwrap();
    assert!(
        log2.contains("stopped before the time limit; requeueing"),
        "{log2}"
    );
    assert!(log2.contains("try 2"), "task 2 ran again: {log2}");
    let log1 = std::fs::read_to_string(out.join(format!("slurm/logs/task-{array}_1.out"))).unwrap();
    assert!(log1.contains("try 2"), "task 1 ran again: {log1}");

    // Merge (again: the merge job may have run while task 1 was cancelled).
    let o = adiff(&["bench", "merge", arg(&out)]);
    ok(&o);
    let rows = read_rows(&out.join("runs.csv")).unwrap();
    let mut ids: Vec<&str> = rows.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids.len(), 16);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 16, "every run once");
    for p in 0..4 {
        for s in ["baseline", "delta=0.004", "delta=0.012", "delta=0.03"] {
            let id = format!("p{p}-s42-ddim-{s}");
            assert!(ids.contains(&id.as_str()), "{id} missing");
        }
    }
    // the parts' own files hold each run once too
    for k in 1..=2 {
        let part = rows_in(&part_csv(k));
        let mut ids: Vec<&str> = part.iter().map(|r| r.run_id.as_str()).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!((n, ids.len()), (8, 8), "part {k}");
    }
    eprintln!(
        "cancel + requeue and stop + requeue: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
