//! Errors about one user setting, named by what the setting *is* ([`Field`]), not by how a
//! front end spells it: the command line words a [`FieldError`] with its flag (`--steps`),
//! the desktop app with its control ("Steps"). Library modules return these and never name a
//! flag; [`one_line`] renders any error chain on one line with the front end's names.

use std::fmt;

/// A setting of a run, a model source or a scorer that a user gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The prompt.
    Prompt,
    /// The negative prompt.
    Negative,
    /// The model (a hub name, a folder).
    Model,
    /// The scheduler name.
    Scheduler,
    /// The number of denoising steps.
    Steps,
    /// The classifier-free guidance scale.
    Guidance,
    /// The image width.
    Width,
    /// The image height.
    Height,
    /// The acceleration method (a spec such as `adaptive:delta=0.02`).
    Method,
    /// δ of the adaptive method.
    Delta,
    /// C_max of the adaptive method.
    MaxSkips,
    /// τ of the early stop.
    EarlyStopTau,
    /// A file of initial latents.
    InitLatents,
    /// The Ollama server URL.
    OllamaUrl,
    /// The Ollama model name.
    OllamaModel,
    /// Seconds to wait for Ollama.
    OllamaTimeout,
    /// A score-to-budget mapping file.
    BudgetMap,
    /// The CLIP model of the alignment metric.
    Clip,
    /// The image size of a measurement.
    Size,
    /// The number of timed calls of a measurement.
    Calls,
    /// The number of controller iterations of a measurement.
    Iters,
    /// The frames of a video clip.
    Frames,
    /// A benchmark's prompt file.
    Prompts,
    /// The folder a command writes into.
    Out,
}

impl Field {
    /// A plain name, for messages no front end words (logs, library tests).
    pub fn noun(self) -> &'static str {
        match self {
            Field::Prompt => "the prompt",
            Field::Negative => "the negative prompt",
            Field::Model => "the model",
            Field::Scheduler => "the scheduler",
            Field::Steps => "steps",
            Field::Guidance => "the guidance scale",
            Field::Width => "width",
            Field::Height => "height",
            Field::Method => "the method",
            Field::Delta => "δ",
            Field::MaxSkips => "C_max",
            Field::EarlyStopTau => "the early-stop τ",
            Field::InitLatents => "the initial latents",
            Field::OllamaUrl => "the Ollama URL",
            Field::OllamaModel => "the Ollama model",
            Field::OllamaTimeout => "the Ollama timeout",
            Field::BudgetMap => "the budget map",
            Field::Clip => "the CLIP model",
            Field::Size => "the image size",
            Field::Calls => "the number of timed calls",
            Field::Iters => "the number of controller iterations",
            Field::Frames => "the frame count",
            Field::Prompts => "the prompt file",
            Field::Out => "the output folder",
        }
    }
}

/// What a front end may add to a [`FieldError`] in its own words: the control or flag that
/// fixes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Truncating the prompt to the text encoder's length would let it run.
    Truncate,
    /// A local model folder instead of a hub download.
    LocalFolder,
    /// Loading the file as a single-file checkpoint instead of a pipeline folder.
    CheckpointFile,
    /// Giving the VAE a checkpoint was made for (it has none of its own).
    VaeFile,
    /// Setting the prediction type to ε, for an SD 2.x 512-px base model (a 768-px
    /// v-prediction model is assumed).
    EpsilonPrediction,
    /// Resuming the benchmark already in the folder.
    Resume,
}

/// Something a user should read about a load (the checkpoint detected, a LoRA merged, an
/// assumption made), with a fix a front end words in its own terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// What to read, with no setting named.
    pub text: String,
    /// What the user can do about it.
    pub fix: Option<Fix>,
}

impl Note {
    /// A note with nothing to do about it.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            fix: None,
        }
    }

    /// The same note with a fix to suggest.
    pub fn with_fix(mut self, fix: Fix) -> Self {
        self.fix = Some(fix);
        self
    }

    /// The note with its fix in `wording`'s terms, after `; `.
    pub fn worded(&self, wording: &dyn Wording) -> String {
        match self.fix.and_then(|f| wording.fix(f)) {
            Some(advice) => format!("{}; {advice}", self.text),
            None => self.text.clone(),
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.worded(&Plain))
    }
}

impl From<String> for Note {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

/// Where a problem text puts the setting's name; without it the name comes first.
pub const NAME: &str = "{name}";

/// One setting is wrong: `problem` reads after the setting's name ("must be at least 1"), or
/// holds [`NAME`] where the name goes ("cannot read {name} map.json").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct FieldError {
    /// Which setting.
    pub field: Field,
    /// What is wrong, worded to follow the setting's name (or with [`NAME`] in it).
    pub problem: String,
    /// A fix a front end can name in its own terms.
    pub fix: Option<Fix>,
}

impl FieldError {
    /// `field` has `problem`.
    pub fn new(field: Field, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
            fix: None,
        }
    }

    /// The same error with a fix to suggest.
    pub fn with_fix(mut self, fix: Fix) -> Self {
        self.fix = Some(fix);
        self
    }

    /// The message with the setting called `name` (e.g. `--steps`, "Steps").
    pub fn worded(&self, name: &str) -> String {
        if self.problem.contains(NAME) {
            self.problem.replace(NAME, name)
        } else {
            format!("{name} {}", self.problem)
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.worded(self.field.noun()))
    }
}

/// How a front end names settings and fixes.
pub trait Wording {
    /// The name of a setting (a flag, a control).
    fn name(&self, field: Field) -> String;
    /// The advice for a fix, appended after `; ` (none: nothing is added).
    fn fix(&self, fix: Fix) -> Option<String>;
    /// The fix that an error other than a [`FieldError`] offers (a model error's, say),
    /// for front ends that know such errors.
    fn fix_of(&self, _cause: &(dyn std::error::Error + 'static)) -> Option<Fix> {
        None
    }
}

/// The library's own names ([`Field::noun`]), no fixes.
pub struct Plain;

impl Wording for Plain {
    fn name(&self, field: Field) -> String {
        field.noun().to_string()
    }
    fn fix(&self, _: Fix) -> Option<String> {
        None
    }
}

/// At most `keep` words of `text`, then a count of the rest (`a b c … (+97 more words)`).
pub fn cut_words(text: &str, keep: usize) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= keep {
        return words.join(" ");
    }
    format!(
        "{} … (+{} more words)",
        words[..keep].join(" "),
        words.len() - keep
    )
}

/// At most `keep` characters of a user's text, then a count of the rest
/// (`abcdef… (+99 994 more characters)`): the one way every front end echoes text a user
/// typed or a file held, so that a 1 MB line never fills a terminal or a window.
pub fn cut(text: &str, keep: usize) -> String {
    let total = text.chars().count();
    if total <= keep {
        return text.to_string();
    }
    let head: String = text.chars().take(keep).collect();
    format!("{head}… (+{} more characters)", total - keep)
}

/// At most `keep` items joined with ", ", then a count of the rest (`a, b and 7 more`).
pub fn cut_list(items: &[String], keep: usize) -> String {
    if items.len() <= keep {
        return items.join(", ");
    }
    format!(
        "{} and {} more",
        items[..keep].join(", "),
        items.len() - keep
    )
}

/// `text` with its control characters (escape sequences, bells, carriage returns) shown as
/// escapes, so that printing it cannot drive the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The error and its causes on one line, each [`FieldError`] (and each fix
/// [`Wording::fix_of`] finds) worded by `wording`.
pub fn one_line(e: &anyhow::Error, wording: &dyn Wording) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = match cause.downcast_ref::<FieldError>() {
            Some(fe) => {
                let mut s = fe.worded(&wording.name(fe.field));
                if let Some(advice) = fe.fix.and_then(|f| wording.fix(f)) {
                    s.push_str("; ");
                    s.push_str(&advice);
                }
                s
            }
            None => match wording.fix_of(cause).and_then(|f| wording.fix(f)) {
                Some(advice) => format!("{cause}; {advice}"),
                None => cause.to_string(),
            },
        };
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    cut_runs(&parts.join(": ").replace('\n', " "), MAX_RUN, MAX_LINE)
}

/// The longest run without whitespace an error line shows whole (a path, a method spec).
const MAX_RUN: usize = 160;
/// The longest error line shown whole.
const MAX_LINE: usize = 1200;

/// `line` with every run of more than `run` non-space characters [`cut`] to `run`, and the
/// whole cut to `line` characters: whatever a message quotes (a 100 KB method spec, a 1 MB
/// prompt line), it stays a readable line.
pub fn cut_runs(text: &str, run: usize, line: usize) -> String {
    let mut out = String::with_capacity(text.len().min(4 * line));
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(&cut(word, run));
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    cut(&out, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flags;
    impl Wording for Flags {
        fn name(&self, field: Field) -> String {
            format!("--{field:?}").to_lowercase()
        }
        fn fix(&self, fix: Fix) -> Option<String> {
            (fix == Fix::Truncate).then(|| "pass --truncate".into())
        }
    }

    #[test]
    fn long_texts_are_cut_with_a_count_and_controls_escaped() {
        assert_eq!(cut_words("a b c d e", 3), "a b c … (+2 more words)");
        assert_eq!(cut_words("a  b", 3), "a b");
        let items: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        assert_eq!(cut_list(&items, 3), "0, 1, 2 and 9 more");
        assert_eq!(printable("red\x1b[31m\x07fox"), "red\\u{1b}[31m\\u{7}fox");
        assert_eq!(cut("abcdef", 6), "abcdef");
        assert_eq!(cut("abcdefgh", 3), "abc… (+5 more characters)");
        assert_eq!(
            cut_runs("ab cdefgh  i", 3, 100),
            "ab cde… (+3 more characters)  i"
        );
        let long = format!("spec {} is bad", "k=1,".repeat(25_000));
        let e = anyhow::anyhow!("{long}");
        let shown = one_line(&e, &Plain);
        assert!(
            shown.starts_with("spec k=1,k=1,") && shown.ends_with(" is bad"),
            "{shown}"
        );
        assert!(
            shown.contains("(+99840 more characters)") && shown.len() < 300,
            "{shown}"
        );
        let words = "word ".repeat(100_000);
        let shown = one_line(&anyhow::anyhow!("line: {words}"), &Plain);
        assert!(
            shown.chars().count() < 1300 && shown.contains("more characters)"),
            "{shown}"
        );
    }

    #[test]
    fn field_errors_are_worded_by_the_front_end_anywhere_in_the_chain() {
        let e = anyhow::Error::new(
            FieldError::new(Field::Prompt, "is too long").with_fix(Fix::Truncate),
        )
        .context("prompt #3");
        assert_eq!(
            one_line(&e, &Flags),
            "prompt #3: --prompt is too long; pass --truncate"
        );
        assert_eq!(one_line(&e, &Plain), "prompt #3: the prompt is too long");
        let e = FieldError::new(Field::BudgetMap, "cannot read {name} m.json");
        assert_eq!(e.worded("--budget-map"), "cannot read --budget-map m.json");
        assert_eq!(e.to_string(), "cannot read the budget map m.json");
        let note = Note::new("v-prediction assumed").with_fix(Fix::Truncate);
        assert_eq!(note.worded(&Flags), "v-prediction assumed; pass --truncate");
        assert_eq!(note.to_string(), "v-prediction assumed");
        let e = anyhow::anyhow!("line one\nline two").context("outer");
        assert_eq!(one_line(&e, &Plain), "outer: line one line two");
    }
}
