//! Export: the comparison PNG (both images, labels, numbers, curves) with the settings in
//! an A1111-style `parameters` text chunk and both traces as JSON in an `adiff_trace`
//! chunk; each image alone (with its own `parameters`); the traces as JSON or CSV. A clip
//! also exports as `adiff compare` writes it: the side-by-side GIF, each side's frames,
//! and the trace with the per-frame quality; and as a filmstrip PNG.

use super::compose::{self, CompositeInput, sampler_name};
use super::protocol::{Comparison, ReferenceComparison, Side, SideResult};
use crate::job::Job;
use crate::pipeline::{CompareReport, CompareSummary, Role, RunInfo, SideReport, VideoQuality};
use anyhow::{Context, Result};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Text-chunk keyword of the A1111-style settings.
pub const PARAMETERS_KEY: &str = "parameters";
/// Text-chunk keyword of the JSON report (settings, both traces, summary).
pub const TRACE_KEY: &str = "adiff_trace";

/// Everything an export needs, cloned out of the UI state (exports run off the UI thread).
#[derive(Debug, Clone)]
pub struct ExportData {
    /// The job's settings.
    pub spec: Job,
    /// Model origin.
    pub model: String,
    /// What loading found (checkpoint family, LoRAs merged).
    pub model_notes: Vec<String>,
    /// Device name.
    pub device: String,
    /// The UNet's number format.
    pub precision: String,
    /// Model load time, ms.
    pub load_ms: f64,
    /// The baseline.
    pub baseline: Arc<SideResult>,
    /// The adaptive run.
    pub adaptive: Arc<SideResult>,
    /// PSNR of adaptive vs baseline, dB.
    pub psnr_db: Option<f64>,
    /// SSIM of adaptive vs baseline.
    pub ssim: Option<f64>,
    /// The prompt's complexity and the adaptive budget, when the scorer decided it.
    pub complexity: Option<crate::complexity::ComplexityBudget>,
    /// A clip's quality frame by frame.
    pub video: Option<VideoQuality>,
    /// The clip's frame rate (the GIF's), frames per second.
    pub fps: f64,
    /// Both sides against the full-step baseline, when neither side is it.
    pub reference: Option<ReferenceComparison>,
}

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// The comparison PNG.
    Comparison,
    /// One image alone.
    Image(Side),
    /// Both traces and the settings, JSON.
    TraceJson,
    /// Both traces, CSV (one row per step and side).
    TraceCsv,
    /// A clip: both sides side by side, as a looping GIF.
    ClipGif,
    /// A clip: each side's frames in rows, titled, with the key numbers (PNG).
    Filmstrip,
    /// A clip: each side's frames as PNGs, in a folder (`left/`, `right/`).
    Frames,
}

impl ExportKind {
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportKind::Comparison | ExportKind::Image(_) | ExportKind::Filmstrip => "png",
            ExportKind::TraceJson => "json",
            ExportKind::TraceCsv => "csv",
            ExportKind::ClipGif => "gif",
            // A folder.
            ExportKind::Frames => "",
        }
    }

    /// Whether only a clip has it.
    pub fn clip_only(self) -> bool {
        matches!(
            self,
            ExportKind::ClipGif | ExportKind::Filmstrip | ExportKind::Frames
        )
    }

    /// A default file name for a job: an image is named after its side and method
    /// (`…-left-deepcache.png`).
    pub fn file_name(self, stem: &str, spec: &Job) -> String {
        let what = match self {
            ExportKind::Comparison => "compare".to_string(),
            ExportKind::Image(Side::Baseline) => {
                super::names::file_word(Side::Baseline, &spec.reference)
            }
            ExportKind::Image(Side::Adaptive) => {
                super::names::file_word(Side::Adaptive, &spec.method)
            }
            ExportKind::TraceJson | ExportKind::TraceCsv => "trace".to_string(),
            ExportKind::ClipGif => "clip".to_string(),
            ExportKind::Filmstrip => "filmstrip".to_string(),
            ExportKind::Frames => return format!("{stem}-frames"),
        };
        format!("{stem}-{what}.{}", self.extension())
    }
}

impl ExportData {
    /// A file stem from the seed and the prompt's first words.
    pub fn stem(&self) -> String {
        let words: String = self
            .spec
            .prompt
            .split_whitespace()
            .take(5)
            .collect::<Vec<_>>()
            .join("-")
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-')
            .take(40)
            .collect::<String>()
            .to_lowercase();
        let words = if words.is_empty() {
            "image".into()
        } else {
            words
        };
        format!("adiff-{}-seed{}", words, self.spec.seed)
    }

    /// The A1111-style `parameters` text. `side: None` describes the comparison.
    pub fn parameters(&self, side: Option<Side>) -> String {
        let s = &self.spec;
        // A clip's size is its frames'.
        let img = self.baseline.frames.first().unwrap_or(&self.baseline.image);
        let mut out = s.prompt.clone();
        if !s.negative.is_empty() {
            out.push_str(&format!("\nNegative prompt: {}", s.negative));
        }
        let mut fields = vec![
            // An image alone: the steps its own side ran to (fewer steps: its own count).
            format!(
                "Steps: {}",
                side.map_or(s.steps, |side| self.side(side).trace.budget)
            ),
            format!("Sampler: {}", sampler_name(s.scheduler)),
            format!("CFG scale: {}", s.guidance),
            format!("Seed: {}", s.seed),
            format!("Size: {}x{}", img.width(), img.height()),
            format!("Model: {}", sanitize(&self.model)),
        ];
        if !self.baseline.frames.is_empty() {
            fields.push(format!("Frames: {}", self.baseline.frames.len()));
        }
        // The method settings of the side described (the right side's for the comparison).
        let method = match side {
            Some(Side::Baseline) => &s.reference,
            _ => &s.method,
        };
        if let Some(delta) = method.delta() {
            fields.push(format!("Adaptive delta: {delta}"));
        }
        if let Some(max_skips) = method.max_skips() {
            fields.push(format!("C_max: {max_skips}"));
        }
        if side != Some(Side::Baseline) {
            if let Some(es) = &s.early_stop {
                fields.push(format!("Early stop tau: {}", es.tau));
            }
            if let Some(c) = &self.complexity {
                fields.push(format!("Complexity: {:.3}", c.complexity.score));
                fields.push(format!("Complexity scorer: {}", c.complexity.scorer.name()));
                fields.push(format!("Adaptive steps: {}", c.budget.steps));
            }
        }
        match side {
            None => {
                fields.push(format!(
                    "Baseline predictor calls: {}",
                    self.baseline.trace.unet_calls
                ));
                fields.push(format!(
                    "Adaptive predictor calls: {}",
                    self.adaptive.trace.unet_calls
                ));
                if let Some(p) = self.psnr_db.filter(|p| p.is_finite()) {
                    fields.push(format!("PSNR: {p:.3}"));
                }
                if let Some(v) = self.ssim {
                    fields.push(format!("SSIM: {v:.4}"));
                }
            }
            Some(side) => {
                let r = self.side(side);
                // The side's method (`baseline`, `deepcache`, …), not its position.
                fields.push(format!("Mode: {}", r.trace.method.name()));
                fields.push(format!("Predictor calls: {}", r.trace.unet_calls));
            }
        }
        fields.push(format!("Version: adiff {}", env!("CARGO_PKG_VERSION")));
        out.push('\n');
        out.push_str(&fields.join(", "));
        out
    }

    fn side(&self, side: Side) -> &SideResult {
        match side {
            Side::Baseline => &self.baseline,
            Side::Adaptive => &self.adaptive,
        }
    }

    /// The JSON report: the same shape as `adiff compare --trace`, plus `ssim` in the
    /// summary and the GUI's settings under `settings`.
    pub fn report_json(&self) -> Result<serde_json::Value> {
        let (b, a) = (&self.baseline, &self.adaptive);
        let size = b.frames.first().unwrap_or(&b.image).dimensions();
        // The full-step reference is known when it ran, or when the left side is it (a
        // comparison stopped before its reference finished writes none).
        let known = self.reference.is_some()
            || crate::pipeline::is_full_step(&self.spec, &self.spec.baseline_pass());
        let report = CompareReport {
            info: RunInfo {
                adiff_version: env!("CARGO_PKG_VERSION").into(),
                model: self.model.clone(),
                vae: self.spec.vae.clone(),
                loras: self.spec.loras.iter().map(|l| l.to_string()).collect(),
                model_notes: self.model_notes.clone(),
                device: self.device.clone(),
                precision: self.precision.clone(),
                prompt: self.spec.prompt.clone(),
                negative: self.spec.negative.clone(),
                seed: self.spec.seed,
                init_latents: None,
                width: size.0 as usize,
                height: size.1 as usize,
                load_ms: self.load_ms,
                complexity: self.complexity.clone(),
            },
            left: SideReport {
                spec: crate::job::method_spec::format(&b.trace.method),
                same_run_as: None,
                trace: b.trace.clone(),
                decode_ms: b.decode_ms,
            },
            right: SideReport {
                spec: crate::job::method_spec::format(&a.trace.method),
                same_run_as: None,
                trace: a.trace.clone(),
                decode_ms: a.decode_ms,
            },
            reference: known.then(|| self.reference_report()),
            left_vs_reference: known.then(|| self.against_reference(Side::Baseline)),
            right_vs_reference: known.then(|| self.against_reference(Side::Adaptive)),
            summary: CompareSummary {
                video: self.video.clone(),
                ..CompareSummary::of_traces(&b.trace, &a.trace, self.psnr_db.unwrap_or(f64::NAN))
            },
        };
        let mut v = serde_json::to_value(&report)?;
        if let Some(summary) = v.get_mut("summary").and_then(|s| s.as_object_mut()) {
            summary.insert("ssim".into(), serde_json::json!(self.ssim));
            if !self.psnr_db.is_some_and(f64::is_finite) {
                // JSON has no NaN/∞: identical images (or a missing number) read as null.
                summary.insert("psnr_db".into(), serde_json::Value::Null);
            }
        }
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "settings".into(),
                serde_json::json!({
                    "scheduler": self.spec.scheduler.name(),
                    "steps": self.spec.steps,
                    "guidance": self.spec.guidance,
                    "delta": self.spec.method.delta(),
                    "max_skips": self.spec.method.max_skips(),
                    "early_stop": self.spec.early_stop,
                    "width": self.spec.width,
                    "height": self.spec.height,
                    "frames": self.spec.frames,
                    "motion": self.spec.motion,
                    "fps": self.fps,
                }),
            );
        }
        Ok(v)
    }

    /// The full-step reference's run: its own, or the left side's when that is it (as
    /// `adiff compare` writes it: one run, `same_run_as: left`).
    fn reference_report(&self) -> SideReport {
        let (run, same) = match &self.reference {
            Some(r) => (&r.reference, None),
            None => (&self.baseline, Some(Role::Left)),
        };
        SideReport {
            spec: crate::job::method_spec::format(&run.trace.method),
            same_run_as: same,
            trace: run.trace.clone(),
            decode_ms: run.decode_ms,
        }
    }

    /// One side against the full-step reference.
    fn against_reference(&self, side: Side) -> CompareSummary {
        let run = match side {
            Side::Baseline => &self.baseline,
            Side::Adaptive => &self.adaptive,
        };
        let measured = |reference: &SideResult, c: &Comparison| CompareSummary {
            ssim: c.ssim,
            video: c.video.clone(),
            ..CompareSummary::of_traces(&reference.trace, &run.trace, c.psnr_db)
        };
        match (&self.reference, side) {
            (Some(r), Side::Baseline) => measured(&r.reference, &r.left),
            (Some(r), Side::Adaptive) => measured(&r.reference, &r.right),
            // The left side is the reference: itself exactly, and the main comparison.
            (None, Side::Baseline) => CompareSummary {
                ssim: Some(1.0),
                ..CompareSummary::of_traces(&run.trace, &run.trace, f64::INFINITY)
            },
            (None, Side::Adaptive) => CompareSummary {
                ssim: self.ssim,
                video: self.video.clone(),
                ..CompareSummary::of_traces(
                    &self.baseline.trace,
                    &run.trace,
                    self.psnr_db.unwrap_or(f64::NAN),
                )
            },
        }
    }

    /// Both traces as CSV, with a leading `side` column.
    pub fn trace_csv(&self) -> String {
        let mut out = String::new();
        for (i, r) in [&self.baseline, &self.adaptive].into_iter().enumerate() {
            let csv = r.trace.steps_csv();
            for (j, line) in csv.lines().enumerate() {
                if j == 0 {
                    if i == 0 {
                        out.push_str("side,");
                        out.push_str(line);
                        out.push('\n');
                    }
                    continue;
                }
                out.push_str(r.side.name());
                out.push(',');
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The comparison picture.
    pub fn composite(&self) -> Result<RgbImage> {
        compose::composite(&CompositeInput {
            spec: &self.spec,
            model: &short_model(&self.model),
            baseline: &self.baseline,
            adaptive: &self.adaptive,
            psnr_db: self.psnr_db,
            ssim: self.ssim,
        })
    }

    /// The filmstrip picture of a clip.
    pub fn filmstrip(&self) -> Result<RgbImage> {
        super::filmstrip::filmstrip(&super::filmstrip::FilmstripInput {
            spec: &self.spec,
            model: &short_model(&self.model),
            baseline: &self.baseline,
            adaptive: &self.adaptive,
            psnr_db: self.psnr_db,
            ssim: self.ssim,
            video: self.video.as_ref(),
        })
    }

    /// Whether the result is a clip.
    pub fn is_clip(&self) -> bool {
        !self.baseline.frames.is_empty() && !self.adaptive.frames.is_empty()
    }

    /// Write one export to `path` (a folder for [`ExportKind::Frames`]).
    pub fn write(&self, kind: ExportKind, path: &Path) -> Result<()> {
        if kind.clip_only() && !self.is_clip() {
            anyhow::bail!(
                "the result is an image, not a clip: a clip export needs a model that makes video (add a motion module, or pick a video model)"
            );
        }
        match kind {
            ExportKind::ClipGif => {
                let pairs: Vec<RgbImage> = self
                    .baseline
                    .frames
                    .iter()
                    .zip(self.adaptive.frames.iter())
                    .map(|(l, r)| crate::output::clip::side_by_side(l, r))
                    .collect();
                let bytes = crate::output::clip::gif_bytes(&pairs, self.fps)?;
                crate::output::write_atomic(path, &bytes)
            }
            ExportKind::Filmstrip => {
                let img = self.filmstrip()?;
                let json = serde_json::to_string(&self.report_json()?)?;
                write_png(
                    path,
                    &img,
                    &[(PARAMETERS_KEY, &self.parameters(None)), (TRACE_KEY, &json)],
                )
            }
            ExportKind::Frames => {
                crate::output::clip::write_sides(path, &self.baseline.frames, &self.adaptive.frames)
            }
            ExportKind::Comparison => {
                let img = self.composite()?;
                let json = serde_json::to_string(&self.report_json()?)?;
                write_png(
                    path,
                    &img,
                    &[(PARAMETERS_KEY, &self.parameters(None)), (TRACE_KEY, &json)],
                )
            }
            ExportKind::Image(side) => {
                let r = self.side(side);
                let json = serde_json::to_string(&SideReport {
                    spec: String::new(),
                    same_run_as: None,
                    trace: r.trace.clone(),
                    decode_ms: r.decode_ms,
                })?;
                write_png(
                    path,
                    &r.image,
                    &[
                        (PARAMETERS_KEY, &self.parameters(Some(side))),
                        (TRACE_KEY, &json),
                    ],
                )
            }
            ExportKind::TraceJson => {
                let text = serde_json::to_string_pretty(&self.report_json()?)?;
                crate::output::write_atomic(path, text.as_bytes())
            }
            ExportKind::TraceCsv => crate::output::write_atomic(path, self.trace_csv().as_bytes()),
        }
    }

    /// Write one export into `dir` under its default name; returns the path.
    pub fn write_into(&self, kind: ExportKind, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the export folder {}", dir.display()))?;
        let path = dir.join(kind.file_name(&self.stem(), &self.spec));
        self.write(kind, &path)?;
        Ok(path)
    }
}

/// The model origin without the cache path, for labels.
pub(super) fn short_model(origin: &str) -> String {
    let s = origin.split(" (cache ").next().unwrap_or(origin);
    match Path::new(s).file_name() {
        Some(name) if s.contains('/') && !s.contains(' ') => name.to_string_lossy().into_owned(),
        _ => s.to_string(),
    }
}

/// A1111 readers split on ", " and ": ": keep those out of values.
fn sanitize(v: &str) -> String {
    short_model(v).replace(", ", " ").replace(": ", " ")
}

/// Write an RGB PNG with text chunks: `tEXt` for Latin-1 text, `iTXt` (UTF-8) otherwise.
pub fn write_png(path: &Path, img: &RgbImage, chunks: &[(&str, &str)]) -> Result<()> {
    crate::output::write_atomic_with(path, |f| {
        let w = std::io::BufWriter::new(f);
        let mut enc = png::Encoder::new(w, img.width(), img.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        for (key, text) in chunks {
            let latin1 = text.chars().all(|c| (c as u32) < 256 && c != '\0');
            if latin1 {
                enc.add_text_chunk(key.to_string(), text.to_string())?;
            } else {
                enc.add_itxt_chunk(key.to_string(), text.to_string())?;
            }
        }
        let mut writer = enc
            .write_header()
            .with_context(|| format!("cannot encode {}", path.display()))?;
        writer.write_image_data(img.as_raw())?;
        writer.finish()?;
        Ok(())
    })
}

/// Read the text chunks (tEXt, zTXt, iTXt) of a PNG, in file order per kind.
pub fn read_text_chunks(path: &Path) -> Result<Vec<(String, String)>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_ignore_text_chunk(false);
    let mut reader = dec.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    reader.next_frame(&mut buf)?;
    reader.finish()?;
    let info = reader.info();
    let mut out = vec![];
    for c in &info.uncompressed_latin1_text {
        out.push((c.keyword.clone(), c.text.clone()));
    }
    for c in &info.compressed_latin1_text {
        let mut c = c.clone();
        c.decompress_text()?;
        out.push((c.keyword.clone(), c.get_text()?));
    }
    for c in &info.utf8_text {
        let mut c = c.clone();
        c.decompress_text()?;
        out.push((c.keyword.clone(), c.get_text()?));
    }
    Ok(out)
}
