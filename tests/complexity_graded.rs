//! The heuristic scorer's score rises with the hand-assigned grade of the graded prompt set
//! (`assets/prompts/graded.txt`): Spearman ρ ≥ 0.8. Run with `--nocapture` to see the table:
//! `cargo test --test complexity_graded -- --nocapture`.

use adaptive_diffusion::complexity::graded::{GradedPrompt, load_graded, spearman};
use adaptive_diffusion::complexity::{BudgetMap, ComplexityEngine};
use adaptive_diffusion::job::defaults::ADAPTIVE;
use std::path::Path;

fn set(name: &str) -> Vec<GradedPrompt> {
    load_graded(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/prompts")
            .join(name),
    )
    .unwrap()
}

/// Score every prompt; print the table and ρ; return (ρ, per-grade mean scores).
fn evaluate(name: &str) -> (f64, Vec<f64>) {
    let prompts = set(name);
    let engine = ComplexityEngine::heuristic();
    let map = BudgetMap::default();
    let mut grades = Vec::new();
    let mut scores = Vec::new();
    // One print per set, so parallel tests do not interleave their tables.
    let mut table = format!("{name}: grade  score  steps  prompt\n");
    for p in &prompts {
        let c = engine.score(&p.prompt);
        let steps = map.decide(c.score, 50, ADAPTIVE).steps;
        table.push_str(&format!(
            "{:>5}  {:.2}  {steps:>5}  {}\n",
            p.grade, c.score, p.prompt
        ));
        grades.push(f64::from(p.grade));
        scores.push(c.score);
    }
    let rho = spearman(&scores, &grades);
    let means: Vec<f64> = (1..=5)
        .map(|g| {
            let v: Vec<f64> = grades
                .iter()
                .zip(&scores)
                .filter(|(gr, _)| **gr == f64::from(g))
                .map(|(_, s)| *s)
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        })
        .collect();
    println!(
        "{table}{name}: Spearman rho (heuristic score vs grade) = {rho:.3} over {} prompts; mean score by grade {:.2?}",
        prompts.len(),
        means
    );
    (rho, means)
}

#[test]
fn graded_set_is_large_and_spans_all_grades() {
    let prompts = set("graded.txt");
    assert!(prompts.len() >= 30, "{}", prompts.len());
    for g in 1..=5 {
        assert!(
            prompts.iter().filter(|p| p.grade == g).count() >= 6,
            "grade {g}"
        );
    }
}

#[test]
fn heuristic_score_rises_with_grade() {
    let (rho, means) = evaluate("graded.txt");
    assert!(rho >= 0.8, "Spearman rho {rho:.3} < 0.8");
    for w in means.windows(2) {
        assert!(w[1] > w[0], "mean score by grade must rise: {means:?}");
    }
}

#[test]
fn heuristic_generalises_to_the_held_out_set() {
    // Never used to tune the word lists; a looser bar than the tuning set.
    let (rho, _) = evaluate("graded-holdout.txt");
    assert!(rho >= 0.7, "held-out Spearman rho {rho:.3} < 0.7");
}

#[test]
fn auto_budget_gives_simple_prompts_fewer_steps() {
    let prompts = set("graded.txt");
    let engine = ComplexityEngine::heuristic();
    let map = BudgetMap::default();
    let mean_steps = |g: u8| {
        let v: Vec<usize> = prompts
            .iter()
            .filter(|p| p.grade == g)
            .map(|p| {
                map.decide(engine.score(&p.prompt).score, 50, ADAPTIVE)
                    .steps
            })
            .collect();
        v.iter().sum::<usize>() as f64 / v.len() as f64
    };
    let (lo, hi) = (mean_steps(1), mean_steps(5));
    assert!(lo < hi, "grade 1 {lo} steps vs grade 5 {hi}");
    assert!(
        lo <= 16.0 && hi >= 28.0,
        "grade 1 {lo} steps vs grade 5 {hi}"
    );
}
