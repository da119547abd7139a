//! Prompt sets: plain text (one prompt per line, optionally `GRADE<TAB>PROMPT`) and
//! COCO-caption JSON (`captions_val2017.json`: the first caption of each image, the
//! AdaptiveDiffusion paper's protocol).

use crate::field::{Field, FieldError, NAME};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// One benchmark prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchPrompt {
    /// The prompt.
    pub text: String,
    /// A hand-assigned complexity grade (the `GRADE<TAB>` prefix of graded sets).
    pub grade: Option<u8>,
    /// Where it came from (`line 12`, `COCO image 139`).
    pub origin: String,
}

/// The prompt file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PromptFormat {
    /// `.json` → COCO captions, anything else → text.
    Auto,
    /// One prompt per line; blank lines and `#` comments are skipped; an optional
    /// `GRADE<TAB>` prefix (a whole number) is read as a complexity grade.
    Text,
    /// COCO captions JSON (`annotations` with `image_id` and `caption`, optionally `images`).
    Coco,
}

/// Parse a text prompt list.
pub fn parse_text(text: &str) -> Result<Vec<BenchPrompt>> {
    let mut out = Vec::new();
    // A UTF-8 byte-order mark (Windows editors write one) is no part of the first prompt.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (grade, prompt) = match raw.split_once('\t') {
            Some((g, p)) if looks_like_grade(g.trim()) => {
                let g: u8 = g.trim().parse().ok().with_context(|| {
                    format!(
                        "line {}: grade '{}' is not a whole number from 0 to 255 (a graded line is GRADE<TAB>PROMPT, e.g. 2<TAB>a red fox)",
                        i + 1,
                        crate::field::cut(g.trim(), 20)
                    )
                })?;
                (Some(g), p.trim())
            }
            _ => (None, line),
        };
        if prompt.is_empty() {
            bail!("line {}: empty prompt after the grade", i + 1);
        }
        out.push(BenchPrompt {
            text: prompt.to_string(),
            grade,
            origin: format!("line {}", i + 1),
        });
    }
    Ok(out)
}

/// Whether the text before a line's first tab was meant as a grade: a number of any kind
/// (`3`, `2.5`, `-1`, `300`) or a short word starting with a digit (`3a`); prompt text
/// that merely holds a tab is not.
fn looks_like_grade(g: &str) -> bool {
    !g.is_empty()
        && (g.parse::<f64>().is_ok()
            || (g.chars().count() <= 4
                && !g.contains(char::is_whitespace)
                && g.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+')))
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    caption: String,
}

#[derive(Deserialize)]
struct CocoCaptions {
    #[serde(default)]
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
}

/// Parse COCO captions: for each image (in the order of `images`, or by first appearance
/// in `annotations` when there is no `images` list) its first caption in file order.
/// Whitespace is collapsed (COCO captions carry stray newlines and double spaces).
pub fn parse_coco(json: &str) -> Result<Vec<BenchPrompt>> {
    let coco: CocoCaptions = serde_json::from_str(json).context(
        "not COCO captions JSON (expected {\"images\": [...], \"annotations\": [{\"image_id\", \"caption\"}, ...]})",
    )?;
    let mut first: HashMap<u64, &str> = HashMap::new();
    let mut order_seen = Vec::new();
    for a in &coco.annotations {
        if let std::collections::hash_map::Entry::Vacant(e) = first.entry(a.image_id) {
            e.insert(a.caption.as_str());
            order_seen.push(a.image_id);
        }
    }
    let order: Vec<u64> = if coco.images.is_empty() {
        order_seen
    } else {
        coco.images.iter().map(|i| i.id).collect()
    };
    let mut out = Vec::new();
    for id in order {
        if let Some(c) = first.get(&id) {
            let text = c.split_whitespace().collect::<Vec<_>>().join(" ");
            if !text.is_empty() {
                out.push(BenchPrompt {
                    text,
                    grade: None,
                    origin: format!("COCO image {id}"),
                });
            }
        }
    }
    Ok(out)
}

/// Load a prompt file, keeping at most `limit` prompts.
pub fn load(path: &Path, format: PromptFormat, limit: Option<usize>) -> Result<Vec<BenchPrompt>> {
    let named = |problem: String| FieldError::new(Field::Prompts, problem);
    let text = std::fs::read_to_string(path)
        .map_err(|e| named(format!("cannot read {NAME} {}: {e}", path.display())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let coco = match format {
        PromptFormat::Coco => true,
        PromptFormat::Text => false,
        PromptFormat::Auto => path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json")),
    };
    let mut prompts = if coco {
        parse_coco(text)
    } else {
        parse_text(text)
    }
    .map_err(|e| named(format!("{NAME} {}: {e:#}", path.display())))?;
    if let Some(n) = limit {
        prompts.truncate(n);
    }
    if prompts.is_empty() {
        return Err(named(format!("{NAME} {} has no prompts", path.display())).into());
    }
    Ok(prompts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_with_comments_and_grades() {
        let p = parse_text("# header\n\na red fox\n3\tthree cats on a sofa\n  spaced  \n").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].text, "a red fox");
        assert_eq!(p[0].grade, None);
        assert_eq!(p[1].grade, Some(3));
        assert_eq!(p[1].text, "three cats on a sofa");
        assert_eq!(p[2].text, "spaced");
        assert_eq!(p[1].origin, "line 4");
    }

    #[test]
    fn a_byte_order_mark_is_dropped_and_malformed_grades_are_named() {
        let p = parse_text("\u{feff}# comment\n2\ta red fox\n").unwrap();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].grade, p[0].text.as_str()), (Some(2), "a red fox"));
        let p = parse_text("\u{feff}3\tthree cats\n").unwrap();
        assert_eq!(p[0].grade, Some(3));
        for bad in ["2.5", "-1", "300", "3a"] {
            let e = parse_text(&format!("a cat\n{bad}\ta dog\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("line 2: grade '{bad}' is not a whole number")),
                "{e}"
            );
        }
        // A tab inside prompt text is not a grade.
        let p = parse_text("a red\tfox on a hill\n").unwrap();
        assert_eq!(
            (p[0].grade, p[0].text.as_str()),
            (None, "a red\tfox on a hill")
        );
    }

    #[test]
    fn coco_first_caption_per_image() {
        let json = r#"{"images":[{"id":7},{"id":3},{"id":9}],
            "annotations":[{"image_id":3,"id":1,"caption":"A dog\n on  grass."},
                           {"image_id":7,"id":2,"caption":"A cat."},
                           {"image_id":3,"id":3,"caption":"Second dog caption."}]}"#;
        let p = parse_coco(json).unwrap();
        let texts: Vec<&str> = p.iter().map(|x| x.text.as_str()).collect();
        assert_eq!(texts, vec!["A cat.", "A dog on grass."]);
        assert_eq!(p[1].origin, "COCO image 3");
        let no_images =
            r#"{"annotations":[{"image_id":5,"caption":"b"},{"image_id":4,"caption":"a"}]}"#;
        let texts: Vec<String> = parse_coco(no_images)
            .unwrap()
            .into_iter()
            .map(|x| x.text)
            .collect();
        assert_eq!(texts, vec!["b", "a"]);
        assert!(parse_coco("[1,2]").is_err());
    }
}
