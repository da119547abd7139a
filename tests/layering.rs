//! The layering rules of ARCHITECTURE.md, checked on the source tree (plain text, no build):
//!
//! * a library module (anything under `src/` but the front ends `src/cli/`, `src/app/` and
//!   `src/main.rs`, and test-only code) names no command-line flag in a string literal and
//!   writes nothing to the terminal: it names settings (`field::Field`, `field::Fix`) and
//!   reports to an observer, and the front ends word and draw;
//! * no file under `src/` is longer than [`MAX_LINES`] lines;
//! * the app's panels (`src/app/panels/`) never name `GuiApp`: they read a `View` of it,
//!   edit the settings they are given and queue `UiCommand`s, so they cannot write its
//!   state.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The longest a source file may be.
const MAX_LINES: usize = 900;

/// Files allowed over [`MAX_LINES`]: none (a file that grows past it is split by what its
/// parts do).
const LONG_FILES: &[&str] = &[];

/// The front ends: they name flags and controls, print and draw.
const FRONT_ENDS: &[&str] = &["src/cli/", "src/app/", "src/main.rs"];

/// What writes to the terminal.
const TERMINAL: &[&str] = &[
    "println!",
    "eprintln!",
    "print!",
    "eprint!",
    "indicatif",
    "io::stdout",
    "io::stderr",
    "stdout()",
    "stderr()",
];

/// Other programs' flags a library module may write: `sbatch`'s, in the scripts and
/// command lines `bench::slurm` makes and the hints `bench::shard` gives. A flag that
/// follows the word `sbatch` or `#SBATCH` in its literal counts as sbatch's too.
const OTHER_PROGRAMS: &[(&str, &str)] = &[
    ("src/bench/slurm.rs", "--parsable"),
    ("src/bench/slurm.rs", "--dependency"),
];

/// A string literal of a source file.
#[derive(Debug)]
struct Literal {
    /// 1-based line of its opening quote.
    line: usize,
    /// Its text, simple escapes resolved.
    text: String,
}

/// A source file taken apart: its code with comments and literals blanked (`code`), and
/// its literals.
#[derive(Debug)]
struct Lexed {
    code: String,
    /// Each literal with the byte offset of its opening quote in `code`.
    literals: Vec<(usize, Literal)>,
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Whether the quote at `i` follows a lone `b` (a byte literal: `b'"'`).
fn byte_prefix(b: &[u8], i: usize) -> bool {
    i >= 1 && b[i - 1] == b'b' && !(i >= 2 && is_ident(b[i - 2]))
}

/// Blank out comments, and take out string literals, of Rust source.
fn lex(src: &str) -> Lexed {
    let b = src.as_bytes();
    let mut code = Vec::with_capacity(b.len());
    let mut literals = vec![];
    let mut line = 1;
    let mut i = 0;
    // Copy `b[from..to]` as blanks (newlines kept, so that offsets and lines stay).
    let blank = |code: &mut Vec<u8>, from: usize, to: usize, line: &mut usize| {
        for &c in &b[from..to] {
            if c == b'\n' {
                *line += 1;
                code.push(b'\n');
            } else {
                code.push(b' ');
            }
        }
    };
    while i < b.len() {
        let c = b[i];
        let prev_ident = i > 0 && is_ident(b[i - 1]);
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
            blank(&mut code, i, end, &mut line);
            i = end;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut code, i, j, &mut line);
            i = j;
        } else if !prev_ident && (c == b'r' || (c == b'b' && b.get(i + 1) == Some(&b'r'))) && {
            let k = if c == b'b' { i + 2 } else { i + 1 };
            let hashes = b[k..].iter().take_while(|&&h| h == b'#').count();
            b.get(k + hashes) == Some(&b'"')
        } {
            // A raw string: r"…", r#"…"#, br"…".
            let k = if c == b'b' { i + 2 } else { i + 1 };
            let hashes = b[k..].iter().take_while(|&&h| h == b'#').count();
            let open = k + hashes + 1;
            let close = format!("\"{}", "#".repeat(hashes));
            let end = src[open..].find(&close).map_or(b.len(), |n| open + n);
            literals.push((
                code.len(),
                Literal {
                    line,
                    text: src[open..end].to_string(),
                },
            ));
            let stop = (end + close.len()).min(b.len());
            blank(&mut code, i, stop, &mut line);
            i = stop;
        } else if c == b'"' {
            // A string (a b"…" or c"…" prefix stays in the code, harmlessly).
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = j.min(b.len());
            literals.push((
                code.len(),
                Literal {
                    line,
                    text: unescape(&src[i + 1..end]),
                },
            ));
            let stop = (end + 1).min(b.len());
            blank(&mut code, i, stop, &mut line);
            i = stop;
        } else if c == b'\'' && (!prev_ident || byte_prefix(b, i)) {
            // A char literal ('x', '\'', '"', b'"'), or a lifetime ('a), which stays.
            let len = if b.get(i + 1) == Some(&b'\\') {
                src[i + 2..].find('\'').map(|n| n + 3)
            } else {
                src[i + 1..]
                    .chars()
                    .next()
                    .map(char::len_utf8)
                    .filter(|&n| b.get(i + 1 + n) == Some(&b'\''))
                    .map(|n| n + 2)
            };
            match len {
                Some(n) => {
                    blank(&mut code, i, i + n, &mut line);
                    i += n;
                }
                None => {
                    code.push(c);
                    i += 1;
                }
            }
        } else {
            if c == b'\n' {
                line += 1;
            }
            code.push(c);
            i += 1;
        }
    }
    Lexed {
        code: String::from_utf8_lossy(&code).into_owned(),
        literals,
    }
}

/// A literal's text with `\n`, `\t`, `\\`, `\"` and line continuations resolved.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\n') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The byte ranges of `code` that only tests compile: each item after `#[cfg(test)]` (a
/// `mod tests { … }`, a helper function), and the names of test-only module files
/// (`#[cfg(test)] mod reference_tests;`).
fn test_only(code: &str) -> (Vec<std::ops::Range<usize>>, Vec<String>) {
    let b = code.as_bytes();
    let (mut ranges, mut files) = (vec![], vec![]);
    let mut from = 0;
    while let Some(n) = code[from..].find("#[cfg(test)]") {
        let start = from + n;
        let mut j = start + "#[cfg(test)]".len();
        while j < b.len() && b[j] != b'{' && b[j] != b';' {
            j += 1;
        }
        if b.get(j) == Some(&b';') {
            let item = code[start + "#[cfg(test)]".len()..j].trim();
            if let Some(name) = item.rsplit("mod ").next().filter(|_| item.contains("mod ")) {
                files.push(name.trim().to_string());
            }
            ranges.push(start..j + 1);
            from = j + 1;
            continue;
        }
        let mut depth = 0;
        while j < b.len() {
            match b[j] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        ranges.push(start..j.min(b.len()));
        from = j.min(b.len());
    }
    (ranges, files)
}

/// The flags a literal names: `--word` at its start or after a space or an opening
/// bracket or quote (so `models--org--name` is none), with the flags another program
/// takes (after `sbatch` / `#SBATCH`) left out.
fn flags_in(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while let Some(n) = text[i..].find("--") {
        let at = i + n;
        i = at + 2;
        let before = at.checked_sub(1).map(|k| b[k]);
        let opens = before.is_none_or(|c| c.is_ascii_whitespace() || b"([`'\"".contains(&c));
        if !opens || !b.get(at + 2).is_some_and(u8::is_ascii_lowercase) {
            continue;
        }
        let word: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let head = text[..at].trim_end();
        if head.ends_with("sbatch") || head.ends_with("#SBATCH") {
            continue;
        }
        out.push(word);
    }
    out
}

/// Whether `code[at..]` starts with `pattern` as a whole macro or path (not `eprint!`
/// inside `eprintln!`, nor `print!` inside `eprint!`).
fn names_at(code: &str, at: usize, pattern: &str) -> bool {
    let before = at.checked_sub(1).map(|k| code.as_bytes()[k]);
    !before.is_some_and(is_ident) && code[at..].starts_with(pattern)
}

/// What a library source file does that only a front end may: `file: line: what`.
fn library_problems(file: &str, src: &str) -> Vec<String> {
    let lexed = lex(src);
    let (tests, _) = test_only(&lexed.code);
    let in_tests = |at: usize| tests.iter().any(|r| r.contains(&at));
    let line_of = |at: usize| lexed.code[..at].matches('\n').count() + 1;
    let mut out = vec![];
    for (at, lit) in &lexed.literals {
        if in_tests(*at) {
            continue;
        }
        for flag in flags_in(&lit.text) {
            let allowed = OTHER_PROGRAMS
                .iter()
                .any(|(f, other)| *f == file && flag.starts_with(other));
            if !allowed {
                out.push(format!("{file}:{}: names the flag {flag}", lit.line));
            }
        }
    }
    for pattern in TERMINAL {
        let mut from = 0;
        while let Some(n) = lexed.code[from..].find(pattern) {
            let at = from + n;
            from = at + pattern.len();
            if names_at(&lexed.code, at, pattern) && !in_tests(at) {
                out.push(format!(
                    "{file}:{}: writes to the terminal ({pattern})",
                    line_of(at)
                ));
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every `.rs` file under `src/`, as `src/…` paths with its text.
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![];
    rust_files(&root.join("src"), &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).unwrap();
            (rel, text)
        })
        .collect()
}

/// The files only tests compile: those declared `#[cfg(test)] mod NAME;`.
fn test_only_files(sources: &[(String, String)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (file, src) in sources {
        let (_, names) = test_only(&lex(src).code);
        let dir = match file.rsplit_once('/') {
            Some((dir, name)) if name == "mod.rs" || name == "lib.rs" || name == "main.rs" => {
                dir.to_string()
            }
            _ => file.trim_end_matches(".rs").to_string(),
        };
        for name in names {
            out.insert(format!("{dir}/{name}.rs"));
            out.insert(format!("{dir}/{name}/mod.rs"));
        }
    }
    out
}

#[test]
fn library_modules_name_no_flags_and_write_nothing_to_the_terminal() {
    let sources = sources();
    let tests = test_only_files(&sources);
    let mut problems = vec![];
    let mut checked = 0;
    for (file, src) in &sources {
        if FRONT_ENDS.iter().any(|f| file.starts_with(f)) || tests.contains(file) {
            continue;
        }
        checked += 1;
        problems.extend(library_problems(file, src));
    }
    assert!(checked > 50, "only {checked} library files found");
    assert!(
        problems.is_empty(),
        "library modules must name settings (field::Field / field::Fix) and report to an \
         observer; the front ends (src/cli, src/app) word flags and write to the terminal:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let long: Vec<String> = sources()
        .iter()
        .map(|(file, src)| (file, src.lines().count()))
        .filter(|(file, n)| *n > MAX_LINES && !LONG_FILES.contains(&file.as_str()))
        .map(|(file, n)| format!("{file}: {n} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "split these by responsibility (at most {MAX_LINES} lines a file):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_app_panels_never_name_the_app() {
    let mut checked = 0;
    let mut problems = vec![];
    for (file, src) in sources() {
        if !file.starts_with("src/app/panels/") {
            continue;
        }
        checked += 1;
        let code = lex(&src).code;
        let mut from = 0;
        while let Some(n) = code[from..].find("GuiApp") {
            let at = from + n;
            from = at + "GuiApp".len();
            if names_at(&code, at, "GuiApp") {
                let line = code[..at].matches('\n').count() + 1;
                problems.push(format!("{file}:{line}: names GuiApp"));
            }
        }
    }
    assert!(checked >= 5, "only {checked} panel files found");
    assert!(
        problems.is_empty(),
        "a panel reads the app through panels::View, edits the settings it is given and \
         queues app::commands::UiCommand for every action; GuiApp applies them once per \
         frame:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checks_find_what_they_look_for() {
    let src = r##"
//! Docs may say --steps and println!.
fn f() -> String {
    let a = "pass --resume to continue"; // --comment
    let b = r#"raw "--weights" here"#;
    let c = ('"', b'"');
    let d = "models--org--name, 3 -- 4, sbatch --array=1-4, #SBATCH --time=1";
    eprintln!("{a}{b}{c}{d}");
    std::io::stdout();
    format!("x \
             --vae FILE")
}
#[cfg(test)]
mod tests {
    fn g() { println!("--fine-in-tests"); }
}
#[cfg(test)]
mod reference_tests;
"##;
    let problems = library_problems("src/x.rs", src);
    let expected = [
        "src/x.rs:4: names the flag --resume",
        "src/x.rs:5: names the flag --weights",
        "src/x.rs:10: names the flag --vae",
        "src/x.rs:8: writes to the terminal (eprintln!)",
        "src/x.rs:9: writes to the terminal (io::stdout)",
        "src/x.rs:9: writes to the terminal (stdout())",
    ];
    assert_eq!(problems, expected);
    let (_, files) = test_only(&lex(src).code);
    assert_eq!(files, ["reference_tests"]);
    assert!(library_problems("src/y.rs", "fn f<'a>(x: &'a str) { x.len(); }").is_empty());
}
