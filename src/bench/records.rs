//! `runs.csv`: one row per run, appended (and flushed to disk) as each run finishes, so an
//! interrupted benchmark loses nothing and `--resume` continues it. Reports are computed
//! from this file alone.

use crate::sampler::MethodKind;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// One run (a baseline or one adaptive setting of one prompt × seed × scheduler).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// `p{prompt}-s{seed}-{scheduler}-{setting}`: unique, the resume key.
    pub run_id: String,
    /// 0-based index of the prompt in the prompt set.
    pub prompt_index: usize,
    /// The prompt.
    pub prompt: String,
    /// Hand-assigned grade from a graded prompt file.
    pub grade: Option<u8>,
    /// Complexity score in [0, 1] from the complexity scorer.
    pub complexity: Option<f64>,
    /// Seed of the initial noise.
    pub seed: u64,
    /// `ddim`, `euler` or `dpm++`.
    pub scheduler: String,
    /// `baseline`, `budget` (the complexity budget without skipping) or `delta=…`.
    pub setting: String,
    /// The kind of method (`baseline`, `adaptive`, `steps`, …).
    pub mode: MethodKind,
    /// The method with its settings, as a spec (`adaptive:delta=0.01,cmax=4`; empty in rows
    /// written before methods had specs).
    pub method: String,
    /// Multiply-accumulates of the run's noise-predictor calls.
    pub unet_macs: Option<u64>,
    /// `unet_macs` in full SD 1.5 512×512 CFG calls.
    pub unet_cost: Option<f64>,
    /// A video run's frames (empty for an image run).
    pub frames: Option<usize>,
    /// A video run's mean per-frame PSNR against the baseline's clip (its whole-clip PSNR is
    /// `psnr_db`, its mean per-frame SSIM `ssim`).
    pub psnr_frame_mean_db: Option<f64>,
    /// The worst frame's PSNR.
    pub psnr_frame_worst_db: Option<f64>,
    /// δ of an adaptive run.
    pub delta: Option<f64>,
    /// C_max of an adaptive run.
    pub max_skips: Option<usize>,
    /// Early stopping enabled.
    pub early_stop: bool,
    /// The step budget of this run.
    pub budget: usize,
    /// Steps executed.
    pub steps_run: usize,
    /// Noise-predictor calls (NFE; a classifier-free-guidance batch counts once).
    pub unet_calls: usize,
    /// Step after which the run stopped early.
    pub stopped_early_at: Option<usize>,
    /// Wall time of the denoising loop, ms.
    pub loop_ms: f64,
    /// VAE decode, ms.
    pub decode_ms: f64,
    /// `loop_ms + decode_ms`.
    pub total_ms: f64,
    /// Peak resident memory of the process during the run (Linux, CPU), MiB.
    pub peak_rss_mb: Option<f64>,
    /// PSNR vs the full-step baseline, dB on 0–255 (`inf` when identical; empty for the
    /// baseline itself).
    pub psnr_db: Option<f64>,
    /// SSIM vs the baseline.
    pub ssim: Option<f64>,
    /// CLIP cosine of the image with its prompt (empty: not measured).
    pub clip_cosine: Option<f64>,
    /// CLIPScore `100·max(cos, 0)`.
    pub clip_score: Option<f64>,
    /// `clip_cosine` minus the baseline's.
    pub clip_delta: Option<f64>,
    /// One character per executed step: `W` warm-up, `C` computed, `F` forced, `S` skipped
    /// (prediction reused).
    pub pattern: String,
    /// UTC time the run finished.
    pub finished_at: String,
}

/// The column order of `runs.csv`.
pub const COLUMNS: [&str; 34] = [
    "run_id",
    "prompt_index",
    "prompt",
    "grade",
    "complexity",
    "seed",
    "scheduler",
    "setting",
    "mode",
    "delta",
    "max_skips",
    "early_stop",
    "budget",
    "steps_run",
    "unet_calls",
    "stopped_early_at",
    "loop_ms",
    "decode_ms",
    "total_ms",
    "peak_rss_mb",
    "psnr_db",
    "ssim",
    "clip_cosine",
    "clip_score",
    "clip_delta",
    "pattern",
    "finished_at",
    "version",
    "method",
    "unet_macs",
    "unet_cost",
    "frames",
    "psnr_frame_mean_db",
    "psnr_frame_worst_db",
];

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v}")
    }
}

fn optf(v: Option<f64>) -> String {
    v.map(float).unwrap_or_default()
}

/// Quote a CSV field when needed (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl RunRow {
    /// The row's fields in [`COLUMNS`] order.
    pub fn fields(&self) -> Vec<String> {
        vec![
            self.run_id.clone(),
            self.prompt_index.to_string(),
            self.prompt.clone(),
            opt(&self.grade),
            optf(self.complexity),
            self.seed.to_string(),
            self.scheduler.clone(),
            self.setting.clone(),
            self.mode.name().to_string(),
            optf(self.delta),
            opt(&self.max_skips),
            self.early_stop.to_string(),
            self.budget.to_string(),
            self.steps_run.to_string(),
            self.unet_calls.to_string(),
            opt(&self.stopped_early_at),
            format!("{:.3}", self.loop_ms),
            format!("{:.3}", self.decode_ms),
            format!("{:.3}", self.total_ms),
            self.peak_rss_mb
                .map(|v| format!("{v:.1}"))
                .unwrap_or_default(),
            optf(self.psnr_db),
            optf(self.ssim),
            optf(self.clip_cosine),
            optf(self.clip_score),
            optf(self.clip_delta),
            self.pattern.clone(),
            self.finished_at.clone(),
            env!("CARGO_PKG_VERSION").to_string(),
            self.method.clone(),
            opt(&self.unet_macs),
            optf(self.unet_cost),
            opt(&self.frames),
            optf(self.psnr_frame_mean_db),
            optf(self.psnr_frame_worst_db),
        ]
    }

    /// The row as one CSV line (with the newline).
    pub fn to_csv_line(&self) -> String {
        let mut s = self
            .fields()
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",");
        s.push('\n');
        s
    }

    fn from_record(header: &HashMap<&str, usize>, rec: &[String], line: usize) -> Result<Self> {
        let get = |name: &str| -> Result<&str> {
            let i = *header
                .get(name)
                .with_context(|| format!("runs.csv has no column '{name}'"))?;
            rec.get(i)
                .map(String::as_str)
                .with_context(|| format!("runs.csv record {line} has no field '{name}'"))
        };
        fn parse<T: std::str::FromStr>(s: &str, name: &str, line: usize) -> Result<T> {
            s.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("runs.csv record {line}: bad {name} '{s}'"))
        }
        let req = |name: &str| -> Result<&str> { get(name) };
        // Columns added later: absent in older files (and in their rows), read as empty.
        let newer = |name: &str| -> &str {
            header
                .get(name)
                .and_then(|&i| rec.get(i))
                .map_or("", String::as_str)
        };
        let optp = |name: &str| -> Result<Option<f64>> {
            let s = get(name)?;
            if s.trim().is_empty() {
                Ok(None)
            } else {
                Ok(Some(parse(s, name, line)?))
            }
        };
        let optu = |name: &str| -> Result<Option<usize>> {
            let s = get(name)?;
            if s.trim().is_empty() {
                Ok(None)
            } else {
                Ok(Some(parse(s, name, line)?))
            }
        };
        Ok(Self {
            run_id: req("run_id")?.to_string(),
            prompt_index: parse(req("prompt_index")?, "prompt_index", line)?,
            prompt: req("prompt")?.to_string(),
            grade: optu("grade")?.map(|g| g.min(255) as u8),
            complexity: optp("complexity")?,
            seed: parse(req("seed")?, "seed", line)?,
            scheduler: req("scheduler")?.to_string(),
            setting: req("setting")?.to_string(),
            mode: parse(req("mode")?, "mode", line)?,
            delta: optp("delta")?,
            max_skips: optu("max_skips")?,
            early_stop: parse(req("early_stop")?, "early_stop", line)?,
            budget: parse(req("budget")?, "budget", line)?,
            steps_run: parse(req("steps_run")?, "steps_run", line)?,
            unet_calls: parse(req("unet_calls")?, "unet_calls", line)?,
            stopped_early_at: optu("stopped_early_at")?,
            loop_ms: parse(req("loop_ms")?, "loop_ms", line)?,
            decode_ms: parse(req("decode_ms")?, "decode_ms", line)?,
            total_ms: parse(req("total_ms")?, "total_ms", line)?,
            peak_rss_mb: optp("peak_rss_mb")?,
            psnr_db: optp("psnr_db")?,
            ssim: optp("ssim")?,
            clip_cosine: optp("clip_cosine")?,
            clip_score: optp("clip_score")?,
            clip_delta: optp("clip_delta")?,
            pattern: req("pattern")?.to_string(),
            finished_at: req("finished_at")?.to_string(),
            method: newer("method").to_string(),
            unet_macs: match newer("unet_macs").trim() {
                "" => None,
                s => Some(parse(s, "unet_macs", line)?),
            },
            unet_cost: match newer("unet_cost").trim() {
                "" => None,
                s => Some(parse(s, "unet_cost", line)?),
            },
            frames: match newer("frames").trim() {
                "" => None,
                s => Some(parse(s, "frames", line)?),
            },
            psnr_frame_mean_db: match newer("psnr_frame_mean_db").trim() {
                "" => None,
                s => Some(parse(s, "psnr_frame_mean_db", line)?),
            },
            psnr_frame_worst_db: match newer("psnr_frame_worst_db").trim() {
                "" => None,
                s => Some(parse(s, "psnr_frame_worst_db", line)?),
            },
        })
    }
}

/// Split CSV text into records (RFC 4180: quoted fields, `""` escapes, newlines inside
/// quotes). A final line without its newline — a write cut short — is dropped.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut rec = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => rec.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                rec.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut rec));
            }
            _ => field.push(c),
        }
    }
    records
}

/// Read `runs.csv`. Incomplete trailing records (a run interrupted mid-write) are ignored.
pub fn read_rows(path: &Path) -> Result<Vec<RunRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let records = parse_csv(&text);
    let Some((head, body)) = records.split_first() else {
        return Ok(Vec::new());
    };
    let header: HashMap<&str, usize> = head
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), i))
        .collect();
    let mut rows = Vec::with_capacity(body.len());
    for (i, rec) in body.iter().enumerate() {
        if rec.len() == 1 && rec[0].is_empty() {
            continue;
        }
        if rec.len() != head.len() {
            bail!(
                "{} record {}: {} fields, the header has {}",
                path.display(),
                i + 1,
                rec.len(),
                head.len()
            );
        }
        rows.push(
            RunRow::from_record(&header, rec, i + 1).with_context(|| path.display().to_string())?,
        );
    }
    Ok(rows)
}

/// Appends rows to `runs.csv`, writing the header first when the file is new, and syncing
/// each row to disk.
pub struct CsvAppender {
    file: std::fs::File,
}

impl CsvAppender {
    /// Open (or create) the file for appending.
    pub fn open(path: &Path) -> Result<Self> {
        if path.exists() {
            // a previous run may have been cut mid-line: drop the partial record
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            if bytes.last().is_some_and(|&b| b != b'\n') {
                let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)?
                    .set_len(keep as u64)?;
            }
        }
        let new = std::fs::metadata(path)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for appending", path.display()))?;
        if new {
            file.write_all(format!("{}\n", COLUMNS.join(",")).as_bytes())?;
            file.sync_data()?;
        }
        Ok(Self { file })
    }

    /// Append one row and sync it.
    pub fn append(&mut self, row: &RunRow) -> Result<()> {
        self.file.write_all(row.to_csv_line().as_bytes())?;
        self.file.flush()?;
        self.file.sync_data()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> RunRow {
        RunRow {
            run_id: "p0-s42-ddim-delta=0.01".into(),
            prompt_index: 0,
            prompt: "a \"quoted\", comma prompt".into(),
            grade: Some(2),
            complexity: Some(0.25),
            seed: 42,
            scheduler: "ddim".into(),
            setting: "delta=0.01".into(),
            mode: MethodKind::ADAPTIVE,
            delta: Some(0.01),
            max_skips: Some(4),
            early_stop: false,
            budget: 20,
            steps_run: 20,
            unet_calls: 12,
            stopped_early_at: None,
            loop_ms: 12.5,
            decode_ms: 1.25,
            total_ms: 13.75,
            peak_rss_mb: None,
            psnr_db: Some(f64::INFINITY),
            ssim: Some(0.95),
            clip_cosine: None,
            clip_score: None,
            clip_delta: None,
            method: String::new(),
            unet_macs: None,
            unet_cost: None,
            frames: None,
            psnr_frame_mean_db: None,
            psnr_frame_worst_db: None,
            pattern: "WWWWCSSC".into(),
            finished_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn round_trip_with_quotes_and_infinity() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("runs.csv");
        let mut a = CsvAppender::open(&p).unwrap();
        let r = sample();
        a.append(&r).unwrap();
        let mut r2 = r.clone();
        r2.run_id = "x".into();
        r2.prompt = "line\nbreak".into();
        a.append(&r2).unwrap();
        drop(a);
        // a cut-off last line is ignored
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"p9-s1-ddim-baseline,9,half").unwrap();
        drop(f);
        let rows = read_rows(&p).unwrap();
        assert_eq!(rows, vec![r.clone(), r2]);
        // reopening drops the partial record
        let mut a = CsvAppender::open(&p).unwrap();
        a.append(&r).unwrap();
        assert_eq!(read_rows(&p).unwrap().len(), 3);
    }
}
