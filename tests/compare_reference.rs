//! `adiff compare --left A --right B` measures both sides against the full-step baseline of
//! the same prompt, seed and scheduler, runs that baseline once (never again when a side is
//! it), words its ratios the right way round and names the sides by role in its JSON; on
//! the tiny pipeline `tests/fixtures/tiny-sd`.

mod common;

use adaptive_diffusion::job::{Job, Pass, method_spec};
use adaptive_diffusion::model::ModelSource;
use adaptive_diffusion::pipeline::{self, CompareReport, Progress, Reference, Role};
use adaptive_diffusion::sampler::StepEvent;
use common::{adiff, arg, stderr, tiny_sd};
use std::ops::ControlFlow;

/// The spec of every pass a comparison started, in order.
#[derive(Default)]
struct Passes(Vec<String>);

impl Progress for Passes {
    fn start(&mut self, pass: &Pass, _: usize, _: usize) {
        self.0.push(method_spec::format(&pass.method));
    }
    fn step(&mut self, _: StepEvent<'_>) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    fn finish(&mut self) {}
}

/// Compare `left` and `right` at 6 steps on the tiny pipeline (16×16 pixels): the passes
/// it ran and the comparison.
fn compare(left: &str, right: &str) -> (Vec<String>, pipeline::Comparison) {
    let mut job = Job::new(ModelSource::Local(tiny_sd()), "a red circle");
    job.steps = 6;
    job.width = Some(16);
    job.height = Some(16);
    job.force_cpu = true;
    job.reference = method_spec::parse(left).unwrap();
    job.method = method_spec::parse(right).unwrap();
    let model = pipeline::load_model(&job, &Default::default()).unwrap();
    let prepared = pipeline::prepare(&model, &job).unwrap();
    let mut passes = Passes::default();
    let c =
        pipeline::compare(&model, &job, &prepared, &job.method_pass(None), &mut passes).unwrap();
    (passes.0, c)
}

#[test]
fn the_full_step_baseline_runs_once_and_both_sides_are_measured_against_it() {
    // Neither side is the baseline: it runs first, on its own.
    let (passes, c) = compare("steps:n=3", "deepcache:interval=3");
    assert_eq!(
        passes,
        ["baseline", "steps:n=3", "deepcache:interval=3,branch=0"]
    );
    assert!(matches!(c.reference, Reference::Ran(_)));
    assert_eq!(c.reference().trace.unet_calls, 6);
    assert_eq!(c.left_vs_reference.nfe_speedup, 2.0, "6 calls / 3");
    assert_eq!(
        c.summary.nfe_speedup, 0.5,
        "right: 6 calls against the left's 3"
    );
    assert!(c.left_vs_reference.psnr_db.is_finite());
    assert!(
        c.right_vs_reference
            .ssim
            .is_some_and(|s| s > 0.0 && s <= 1.0)
    );

    // A side that is the full-step baseline is not run again.
    for (left, right, side) in [
        ("baseline", "steps:n=3", Role::Left),
        ("steps:n=3", "baseline", Role::Right),
        ("steps:n=6", "adaptive", Role::Left),
    ] {
        let (passes, c) = compare(left, right);
        assert_eq!(passes.len(), 2, "{left} vs {right}: {passes:?}");
        assert_eq!(c.reference_side(), Some(side), "{left} vs {right}");
        let other = if side == Role::Left {
            &c.right_vs_reference
        } else {
            &c.left_vs_reference
        };
        // The other side against the reference is the pair (PSNR is symmetric).
        assert_eq!(other.psnr_db, c.summary.psnr_db, "{left} vs {right}");
        let is = if side == Role::Left {
            &c.left
        } else {
            &c.right
        };
        assert!(std::ptr::eq(c.reference(), is));
    }
    // `steps:n=6` of 6 steps counts as the reference because it is the same run, to the bit.
    let (_, c) = compare("baseline", "steps:n=6");
    assert_eq!(c.summary.psnr_db, f64::INFINITY);
    // Three steps of six are no full-step run.
    let (passes, _) = compare("steps:n=3", "adaptive");
    assert_eq!(passes.len(), 3, "{passes:?}");
    assert_eq!(passes[0], "baseline");
}

#[test]
fn compare_writes_three_roles_and_words_the_ratios_the_right_way_round() {
    let dir = tempfile::tempdir().unwrap();
    let (out, trace) = (dir.path().join("c.png"), dir.path().join("c.json"));
    let w = tiny_sd();
    let o = adiff(&[
        "compare",
        "--weights",
        arg(&w),
        "--prompt",
        "a red circle",
        "--steps",
        "6",
        "--width",
        "16",
        "--height",
        "16",
        "--left",
        "steps:n=3",
        "--right",
        "steps:n=6",
        "--out",
        arg(&out),
        "--trace",
        arg(&trace),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // The right side (6 calls) against the left (3): more calls, never "0.50x fewer".
    assert!(err.contains("right against left"), "{err}");
    assert!(err.contains("2.00× more calls"), "{err}");
    assert!(!err.contains("0.50×"), "a ratio below 1 is worded: {err}");
    assert!(
        err.contains("right     steps:n=6: 6/6 calls") && err.contains("(the reference)"),
        "steps:n=6 of 6 steps is the reference: {err}"
    );
    assert!(
        err.contains("left      steps:n=3: 3/3 calls"),
        "each side by role and spec: {err}"
    );

    let text = std::fs::read_to_string(&trace).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(j.get("baseline").is_none() && j.get("adaptive").is_none());
    assert_eq!(j["left"]["spec"], "steps:n=3");
    assert_eq!(j["right"]["spec"], "steps:n=6");
    assert_eq!(j["reference"]["spec"], "steps:n=6");
    assert_eq!(j["reference"]["same_run_as"], "right");
    assert_eq!(j["reference"]["steps"], j["right"]["steps"]);
    assert_eq!(j["left_vs_reference"]["nfe_speedup"], 2.0);
    assert_eq!(j["left_vs_reference"]["unet_calls_saved"], 3);
    assert!(j["left_vs_reference"]["ssim"].is_number());
    assert_eq!(j["summary"]["nfe_speedup"], 0.5);
    // Identical images: JSON has no ∞, the PSNR reads null and back as ∞.
    assert!(j["right_vs_reference"]["psnr_db"].is_null());
    let back: CompareReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back.right_vs_reference.unwrap().psnr_db, f64::INFINITY);
    assert_eq!(back.reference.unwrap().same_run_as, Some(Role::Right));

    // A report written before the roles (`baseline` / `adaptive`, no specs, no reference)
    // still reads.
    let mut old = j.clone();
    let o = old.as_object_mut().unwrap();
    for k in ["reference", "left_vs_reference", "right_vs_reference"] {
        o.remove(k);
    }
    for (new, was) in [("left", "baseline"), ("right", "adaptive")] {
        let mut side = o.remove(new).unwrap();
        side.as_object_mut().unwrap().remove("spec");
        o.insert(was.into(), side);
    }
    o["summary"].as_object_mut().unwrap().remove("ssim");
    let old: CompareReport = serde_json::from_value(old).unwrap();
    assert_eq!(old.left.trace.unet_calls, 3);
    assert_eq!(old.right.trace.unet_calls, 6);
    assert!(old.reference.is_none() && old.left.spec.is_empty());
    assert_eq!(old.summary.ssim, None);
}

#[test]
fn compare_runs_the_reference_when_no_side_is_it() {
    let dir = tempfile::tempdir().unwrap();
    let (out, trace) = (dir.path().join("c.png"), dir.path().join("c.json"));
    let lat = dir.path().join("lat.safetensors");
    let w = tiny_sd();
    let o = adiff(&[
        "compare",
        "--weights",
        arg(&w),
        "--prompt",
        "a red circle",
        "--steps",
        "6",
        "--width",
        "16",
        "--height",
        "16",
        "--left",
        "steps:n=3",
        "--right",
        "deepcache:interval=2",
        "--out",
        arg(&out),
        "--trace",
        arg(&trace),
        "--latents-out",
        arg(&lat),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("reference baseline: 6/6 calls"),
        "the reference's own line: {err}"
    );
    assert_eq!(
        err.matches("against the reference: ").count(),
        2,
        "each side against the reference: {err}"
    );
    assert!(err.contains("left      steps:n=3: 3/3 calls"), "{err}");
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    assert_eq!(j["reference"]["spec"], "baseline");
    assert!(j["reference"].get("same_run_as").is_none());
    assert_eq!(j["reference"]["unet_calls"], 6);
    assert_eq!(j["reference"]["steps"].as_array().unwrap().len(), 6);
    assert_eq!(j["right"]["spec"], "deepcache:interval=2,branch=0");
    for side in ["left_vs_reference", "right_vs_reference"] {
        let p = j[side]["psnr_db"].as_f64().unwrap();
        assert!(p > 0.0 && p < 200.0, "{side}: {p}");
        assert!(j[side]["ssim"].as_f64().unwrap() < 1.0, "{side}");
    }
    let deepcache_work = j["right_vs_reference"]["macs_speedup"].as_f64().unwrap();
    assert!(
        deepcache_work > 1.2,
        "DeepCache does less work: {deepcache_work}"
    );
}
