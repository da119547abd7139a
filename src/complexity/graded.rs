//! Graded prompt sets (`assets/prompts/graded.txt`) and Spearman's rank correlation, to
//! check that a scorer's score rises with the hand-assigned grade.

use anyhow::{Context, Result, bail};
use std::path::Path;

/// One graded prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct GradedPrompt {
    /// Hand-assigned grade (1 = simplest).
    pub grade: u8,
    /// The prompt.
    pub prompt: String,
}

/// Parse `GRADE<TAB>PROMPT` lines; `#` comments and blank lines are skipped.
pub fn parse_graded(text: &str) -> Result<Vec<GradedPrompt>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((g, p)) = line.split_once('\t') else {
            bail!("line {}: expected GRADE<TAB>PROMPT", i + 1);
        };
        let grade: u8 = g
            .trim()
            .parse()
            .with_context(|| format!("line {}: grade '{}' is not a number", i + 1, g.trim()))?;
        if p.trim().is_empty() {
            bail!("line {}: empty prompt", i + 1);
        }
        out.push(GradedPrompt {
            grade,
            prompt: p.trim().to_owned(),
        });
    }
    if out.is_empty() {
        bail!("no graded prompts found");
    }
    Ok(out)
}

/// Read a graded prompt file.
pub fn load_graded(path: &Path) -> Result<Vec<GradedPrompt>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read graded prompt set {}", path.display()))?;
    parse_graded(&text).with_context(|| format!("graded prompt set {}", path.display()))
}

/// Ranks 1..n with ties given their average rank.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's ρ: Pearson's correlation of the (tie-averaged) ranks. NaN when either side
/// is constant or the lengths differ.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    if x.len() != y.len() || x.len() < 2 {
        return f64::NAN;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = rx.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_basics() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(ranks(&[5.0, 1.0, 5.0, 3.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
        // textbook example with a tie
        let r = spearman(&[1.0, 2.0, 2.0, 4.0, 5.0], &[1.0, 3.0, 2.0, 4.0, 5.0]);
        assert!((r - 0.9746794344808963).abs() < 1e-9, "{r}");
    }

    #[test]
    fn parse_rejects_bad_lines() {
        assert!(parse_graded("# c\n\n1\ta cat\n").is_ok());
        assert!(parse_graded("x\ta cat").is_err());
        assert!(parse_graded("1 a cat").is_err());
        assert!(parse_graded("# only comments").is_err());
    }
}
