//! The exported comparison picture, drawn on the CPU: both images with labels, the key
//! numbers and the per-step curves. Text is rendered with `ab_glyph` and egui's bundled
//! fonts, so the composite looks the same on every machine and needs no GPU.

use super::names::SideNames;
use super::protocol::SideResult;
pub(super) use super::raster::fill_rect;
use super::raster::{blend, dashed, disc, segment};
use crate::job::Job;
use crate::sampler::{Decision, StepRecord};
use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use anyhow::Result;
use image::{Rgb, RgbImage};

/// Colours shared by the app's plots and the exported picture.
pub mod palette {
    /// The baseline's curves.
    pub const BASELINE: [u8; 3] = [110, 160, 255];
    /// The adaptive side's curves.
    pub const ADAPTIVE: [u8; 3] = [255, 150, 50];
    /// The threshold line δ·d.
    pub const THRESHOLD: [u8; 3] = [230, 90, 220];
    /// Steps that called the noise predictor (the test said so).
    pub const COMPUTED: [u8; 3] = [80, 160, 255];
    /// Steps that reused the previous prediction.
    pub const REUSED: [u8; 3] = [70, 205, 110];
    /// Steps forced to compute by C_max.
    pub const FORCED: [u8; 3] = [240, 70, 70];
    /// Steps whose prediction a method forecast (no call).
    pub const FORECAST: [u8; 3] = [190, 120, 235];
    /// Warm-up steps.
    pub const WARMUP: [u8; 3] = [150, 150, 150];
    /// Partial calls (DeepCache's shallow branch).
    pub const PARTIAL: [u8; 3] = [240, 200, 60];
}

/// The colour of a decision marker.
pub fn decision_color(d: Decision) -> [u8; 3] {
    match d {
        Decision::Warmup => palette::WARMUP,
        Decision::Computed => palette::COMPUTED,
        Decision::Reused => palette::REUSED,
        Decision::Forecast => palette::FORECAST,
        Decision::Forced => palette::FORCED,
        Decision::Partial => palette::PARTIAL,
    }
}

/// A1111-style sampler name.
pub fn sampler_name(s: crate::sampler::SchedulerKind) -> &'static str {
    match s {
        crate::sampler::SchedulerKind::Ddim => "DDIM",
        crate::sampler::SchedulerKind::Euler => "Euler",
        crate::sampler::SchedulerKind::DpmPlusPlus => "DPM++ 2M",
    }
}

pub(super) const BG: [u8; 3] = [22, 24, 28];
pub(super) const PANEL: [u8; 3] = [32, 35, 41];
pub(super) const TEXT: [u8; 3] = [235, 235, 235];
pub(super) const DIM: [u8; 3] = [160, 165, 175];
const GRID: [u8; 3] = [55, 60, 68];

/// Text rendering with egui's bundled fonts (Ubuntu Light, Hack as fallback).
pub struct Fonts {
    main: FontRef<'static>,
    fallback: FontRef<'static>,
}

impl Fonts {
    /// Load the bundled fonts.
    pub fn new() -> Result<Self> {
        Ok(Self {
            main: FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT)?,
            fallback: FontRef::try_from_slice(epaint_default_fonts::HACK_REGULAR)?,
        })
    }

    fn font_for(&self, ch: char) -> &FontRef<'static> {
        if self.main.glyph_id(ch).0 != 0 {
            &self.main
        } else {
            &self.fallback
        }
    }

    /// Width of `text` at `size` pixels.
    pub fn width(&self, text: &str, size: f32) -> f32 {
        let mut w = 0.0;
        for ch in text.chars() {
            let f = self.font_for(ch);
            w += f.as_scaled(PxScale::from(size)).h_advance(f.glyph_id(ch));
        }
        w
    }

    /// Draw `text` with its top-left corner at (x, y); returns the width drawn.
    pub fn draw(
        &self,
        img: &mut RgbImage,
        x: f32,
        y: f32,
        size: f32,
        color: [u8; 3],
        text: &str,
    ) -> f32 {
        let ascent = self.main.as_scaled(PxScale::from(size)).ascent();
        let mut pen = x;
        for ch in text.chars() {
            let f = self.font_for(ch);
            let scaled = f.as_scaled(PxScale::from(size));
            let id = f.glyph_id(ch);
            let glyph = id.with_scale_and_position(size, point(pen, y + ascent));
            if let Some(outlined) = f.outline_glyph(glyph) {
                let b = outlined.px_bounds();
                outlined.draw(|gx, gy, c| {
                    blend(
                        img,
                        b.min.x as i32 + gx as i32,
                        b.min.y as i32 + gy as i32,
                        color,
                        c,
                    );
                });
            }
            pen += scaled.h_advance(id);
        }
        pen - x
    }

    /// Draw `text` cut to `max_w` pixels (with an ellipsis).
    pub fn draw_clipped(
        &self,
        img: &mut RgbImage,
        (x, y): (f32, f32),
        size: f32,
        color: [u8; 3],
        text: &str,
        max_w: f32,
    ) {
        if self.width(text, size) <= max_w {
            self.draw(img, x, y, size, color, text);
            return;
        }
        let mut s = String::new();
        for ch in text.chars() {
            s.push(ch);
            if self.width(&format!("{s}…"), size) > max_w {
                s.pop();
                break;
            }
        }
        self.draw(img, x, y, size, color, &format!("{s}…"));
    }
}

/// How a series is drawn.
#[derive(Clone, Copy)]
enum Style {
    Line,
    Dashed,
    Markers,
}

struct Series {
    name: String,
    color: [u8; 3],
    /// Half the line width, pixels.
    width: f32,
    style: Style,
    /// (x, y, marker colour override)
    points: Vec<(f64, f64, Option<[u8; 3]>)>,
}

struct PlotSpec<'a> {
    title: &'a str,
    log_y: bool,
    x_max: f64,
    series: Vec<Series>,
    /// Extra legend entries (colour, label), e.g. the decision colours.
    legend_extra: Vec<([u8; 3], &'a str)>,
}

fn nice_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-2..1e4).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn draw_plot(img: &mut RgbImage, fonts: &Fonts, rect: (i32, i32, i32, i32), p: &PlotSpec<'_>) {
    let (x, y, w, h) = rect;
    fill_rect(img, x, y, w, h, PANEL);
    fonts.draw(img, x as f32 + 10.0, y as f32 + 6.0, 17.0, TEXT, p.title);
    // Legend, right-aligned on the title row.
    let mut entries: Vec<([u8; 3], String)> = p
        .series
        .iter()
        .filter(|s| !s.name.is_empty())
        .map(|s| (s.color, s.name.clone()))
        .collect();
    entries.extend(p.legend_extra.iter().map(|(c, l)| (*c, l.to_string())));
    let mut lx = (x + w) as f32 - 10.0;
    for (c, label) in entries.iter().rev() {
        let tw = fonts.width(label, 14.0);
        lx -= tw;
        fonts.draw(img, lx, y as f32 + 8.0, 14.0, DIM, label);
        disc(img, (lx - 9.0, y as f32 + 17.0), 4.0, *c);
        lx -= 26.0;
    }
    let (px0, py0) = (x + 70, y + 32);
    let (pw, ph) = (w - 70 - 16, h - 32 - 26);
    let tf = |v: f64| if p.log_y { v.log10() } else { v };
    let vals: Vec<f64> = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.1))
        .filter(|v| v.is_finite() && (!p.log_y || *v > 0.0))
        .map(tf)
        .collect();
    let (mut lo, mut hi) = vals
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if !p.log_y {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    let pad = (hi - lo) * 0.06;
    // Linear axes that start at 0 stay at 0.
    let (lo, hi) = (if !p.log_y && lo == 0.0 { 0.0 } else { lo - pad }, hi + pad);
    let x_max = p.x_max.max(1.0);
    let sx = |v: f64| px0 as f32 + (v / x_max) as f32 * pw as f32;
    let sy = |v: f64| py0 as f32 + ((hi - tf(v)) / (hi - lo)) as f32 * ph as f32;
    // Grid and tick labels: whole decades on log axes spanning two or more, else 5 ticks.
    let decades: Vec<f64> = (lo.ceil() as i32..=hi.floor() as i32)
        .map(f64::from)
        .collect();
    let ticks: Vec<f64> = if p.log_y && decades.len() >= 2 {
        decades
    } else {
        (0..=4).map(|i| lo + (hi - lo) * i as f64 / 4.0).collect()
    };
    for t in ticks {
        let yy = py0 as f32 + ((hi - t) / (hi - lo)) as f32 * ph as f32;
        segment(img, (px0 as f32, yy), ((px0 + pw) as f32, yy), 0.4, GRID);
        let label = if p.log_y {
            nice_num(10f64.powf(t))
        } else {
            nice_num(t)
        };
        let tw = fonts.width(&label, 13.0);
        fonts.draw(img, px0 as f32 - tw - 6.0, yy - 8.0, 13.0, DIM, &label);
    }
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0, 200.0, 500.0]
        .into_iter()
        .find(|s| x_max / s <= 12.0)
        .unwrap_or(1000.0);
    let mut v = 0.0;
    while v <= x_max + 1e-9 {
        let xx = sx(v);
        segment(img, (xx, py0 as f32), (xx, (py0 + ph) as f32), 0.3, GRID);
        let label = format!("{v:.0} %");
        let tw = fonts.width(&label, 13.0);
        fonts.draw(
            img,
            xx - tw / 2.0,
            (py0 + ph) as f32 + 4.0,
            13.0,
            DIM,
            &label,
        );
        v += step;
    }
    for s in &p.series {
        let pts: Vec<(f32, f32, Option<[u8; 3]>)> = s
            .points
            .iter()
            .filter(|q| q.1.is_finite() && (!p.log_y || q.1 > 0.0))
            .map(|q| (sx(q.0), sy(q.1), q.2))
            .collect();
        match s.style {
            Style::Line => {
                for w2 in pts.windows(2) {
                    segment(
                        img,
                        (w2[0].0, w2[0].1),
                        (w2[1].0, w2[1].1),
                        s.width,
                        s.color,
                    );
                }
            }
            Style::Dashed => {
                let mut phase = 0.0;
                for w2 in pts.windows(2) {
                    dashed(
                        img,
                        (w2[0].0, w2[0].1),
                        (w2[1].0, w2[1].1),
                        1.0,
                        s.color,
                        &mut phase,
                    );
                }
            }
            Style::Markers => {
                for q in &pts {
                    disc(img, (q.0, q.1), 4.0, q.2.unwrap_or(s.color));
                }
            }
        }
    }
}

/// Where step `index` of a run of `n` steps sits in the schedule, in percent: the
/// composite's x axis, so that runs of different step counts line up.
fn schedule_percent(index: f64, n: usize) -> f64 {
    100.0 * (index + 1.0) / n.max(1) as f64
}

/// The curves of a run: d_k per step, at its position in the schedule.
fn d_points(r: &SideResult) -> Vec<(f64, f64, Option<[u8; 3]>)> {
    let n = r.trace.budget;
    r.trace
        .steps
        .iter()
        .filter_map(|s| s.d.map(|d| (schedule_percent(s.index as f64, n), d, None)))
        .collect()
}

/// The third-order test values, plotted at the step they decide (index + 1), with the
/// decision of that step as marker colour.
pub fn test_points(steps: &[StepRecord]) -> Vec<(f64, f64, f64, Decision)> {
    steps
        .iter()
        .filter_map(|r| {
            let next = steps.get(r.index + 1)?;
            Some((
                (r.index + 1) as f64,
                r.third_order?,
                r.threshold.unwrap_or(f64::NAN),
                next.decision,
            ))
        })
        .collect()
}

/// The settings of a method as the pictures show them (`δ 0.01 · C_max 4`; empty for the
/// baseline): the method's own description.
pub fn method_settings(method: &crate::sampler::Method) -> String {
    method.describe()
}

/// The title of a method's side: `Adaptive`, `Fewer steps`, `ucache`, …
pub fn method_title(method: &crate::sampler::Method) -> &'static str {
    method.def().short()
}

/// Everything the composite shows.
pub struct CompositeInput<'a> {
    /// The settings of the job.
    pub spec: &'a Job,
    /// Model origin.
    pub model: &'a str,
    /// The baseline.
    pub baseline: &'a SideResult,
    /// The adaptive run.
    pub adaptive: &'a SideResult,
    /// PSNR, dB.
    pub psnr_db: Option<f64>,
    /// SSIM.
    pub ssim: Option<f64>,
}

pub(super) fn fit(img: &RgbImage, target: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale = target as f32 / w.max(h) as f32;
    let (nw, nh) = (
        ((w as f32 * scale).round() as u32).max(1),
        ((h as f32 * scale).round() as u32).max(1),
    );
    let filter = if scale >= 2.0 {
        image::imageops::FilterType::Nearest
    } else {
        image::imageops::FilterType::Triangle
    };
    image::imageops::resize(img, nw, nh, filter)
}

/// How `reference / value` reads in words: `1.29× faster` when the ratio is above 1,
/// `1.29× slower` (the inverse) when below, and `same` within half a percent, so that a
/// slower method never reads as "0.78× faster".
pub fn ratio_words(ratio: f64, better: &str, worse: &str, same: &str) -> String {
    if !ratio.is_finite() || ratio <= 0.0 {
        return same.to_string();
    }
    if ratio >= 1.005 {
        format!("{ratio:.2}× {better}")
    } else if ratio <= 1.0 / 1.005 {
        format!("{:.2}× {worse}", 1.0 / ratio)
    } else {
        same.to_string()
    }
}

/// The right side's calls and loop time against the left side's, in words
/// (`2.00× fewer predictor calls · 1.29× slower loop`).
pub fn speed_words(base: &SideResult, adapt: &SideResult) -> String {
    let nfe = base.trace.unet_calls as f64 / adapt.trace.unet_calls.max(1) as f64;
    let wall = base.trace.elapsed_ms / adapt.trace.elapsed_ms.max(1e-9);
    let mut s = format!(
        "{} · {}",
        ratio_words(
            nfe,
            "fewer predictor calls",
            "more predictor calls",
            "as many predictor calls"
        ),
        ratio_words(wall, "faster loop", "slower loop", "same loop time")
    );
    // Partial calls (DeepCache, T-GATE) save work without saving calls: say how much.
    if let (Some(b), Some(a)) = (base.trace.unet_macs, adapt.trace.unet_macs)
        && a > 0
    {
        let work = b as f64 / a as f64;
        if (work - nfe).abs() > 0.005 {
            s.push_str(" · ");
            s.push_str(&ratio_words(work, "less work", "more work", "as much work"));
        }
    }
    s
}

/// One line of key numbers.
pub fn key_numbers(
    base: &SideResult,
    adapt: &SideResult,
    psnr: Option<f64>,
    ssim: Option<f64>,
) -> String {
    let mut s = speed_words(base, adapt);
    if let Some(p) = psnr {
        if p.is_finite() {
            s.push_str(&format!(" · PSNR {p:.2} dB"));
        } else {
            s.push_str(" · PSNR ∞ (identical)");
        }
    }
    if let Some(v) = ssim {
        s.push_str(&format!(" · SSIM {v:.4}"));
    }
    s
}

/// Render the comparison picture.
pub fn composite(input: &CompositeInput<'_>) -> Result<RgbImage> {
    let fonts = Fonts::new()?;
    let layout = Layout::of(input.baseline);
    let mut img = RgbImage::from_pixel(layout.width, layout.height, Rgb(BG));
    draw_header(&mut img, &fonts, &layout, input);
    draw_sides(&mut img, &fonts, &layout, input);
    fonts.draw(
        &mut img,
        Layout::MARGIN as f32,
        layout.y_numbers() as f32,
        20.0,
        TEXT,
        &key_numbers(input.baseline, input.adaptive, input.psnr_db, input.ssim),
    );
    draw_plots(&mut img, &fonts, &layout, input);
    draw_footer(&mut img, &fonts, &layout);
    Ok(img)
}

/// Where the composite's sections go, top to bottom: the header (title, prompt, settings),
/// the two sides' labels, their images, the key numbers, the plots and the footer.
struct Layout {
    /// Side of each image's square panel.
    side: u32,
    /// Width of the picture.
    width: u32,
    /// Height of the picture.
    height: u32,
}

impl Layout {
    /// Margin around and between the columns.
    const MARGIN: u32 = 24;
    const HEADER_H: u32 = 118;
    const LABEL_H: u32 = 54;
    /// From the bottom of the images to the top of the key numbers.
    const NUMBERS_GAP: u32 = 10;
    /// From the top of the key numbers to the top of the first plot.
    const NUMBERS_H: u32 = 34;
    const PLOT_H: u32 = 190;
    const PLOTS: u32 = 3;
    /// Space below each plot.
    const PLOT_GAP: u32 = 12;
    const FOOTER_H: u32 = 34;

    /// The layout for images the size of the baseline's.
    fn of(baseline: &SideResult) -> Self {
        let side = baseline
            .image
            .width()
            .max(baseline.image.height())
            .clamp(448, 640);
        let height = Self::HEADER_H
            + Self::LABEL_H
            + side
            + Self::NUMBERS_GAP
            + Self::NUMBERS_H
            + Self::PLOTS * (Self::PLOT_H + Self::PLOT_GAP)
            + Self::FOOTER_H;
        Self {
            side,
            width: 2 * side + 3 * Self::MARGIN,
            height,
        }
    }

    /// Top of the images.
    fn y_images(&self) -> u32 {
        Self::HEADER_H + Self::LABEL_H
    }

    /// Top of the key-numbers line.
    fn y_numbers(&self) -> u32 {
        self.y_images() + self.side + Self::NUMBERS_GAP
    }

    /// Top of the first plot.
    fn y_plots(&self) -> u32 {
        self.y_numbers() + Self::NUMBERS_H
    }

    /// Width of the text lines and plots (all but the margins).
    fn inner_width(&self) -> u32 {
        self.width - 2 * Self::MARGIN
    }
}

/// The title, the prompt and the line of settings.
fn draw_header(img: &mut RgbImage, fonts: &Fonts, layout: &Layout, input: &CompositeInput<'_>) {
    let spec = input.spec;
    let mx = Layout::MARGIN as f32;
    let names = SideNames::new(&spec.reference, &spec.method);
    fonts.draw(
        img,
        mx,
        14.0,
        28.0,
        TEXT,
        &format!("Adaptive Diffusion: {}", names.versus()),
    );
    let tw = layout.inner_width() as f32;
    fonts.draw_clipped(
        img,
        (mx, 52.0),
        18.0,
        TEXT,
        &format!("“{}”", spec.prompt),
        tw,
    );
    let b = &input.baseline.image;
    let size = format!("{}×{}", b.width(), b.height());
    let mut line = format!(
        "{} · {} · {} steps · CFG {} · seed {} · {}",
        input.model,
        sampler_name(spec.scheduler),
        spec.steps,
        spec.guidance,
        spec.seed,
        size,
    );
    let method = method_settings(&spec.method);
    if !method.is_empty() {
        line.push_str(&format!(" · {method}"));
    }
    if let Some(es) = &spec.early_stop {
        line.push_str(&format!(" · early stop τ {}", es.tau));
    }
    if !spec.negative.is_empty() {
        line.push_str(&format!(" · negative: {}", spec.negative));
    }
    fonts.draw_clipped(img, (mx, 80.0), 15.0, DIM, &line, tw);
}

/// Each side's column: its title, its counts and times, and its image centred on a panel.
fn draw_sides(img: &mut RgbImage, fonts: &Fonts, layout: &Layout, input: &CompositeInput<'_>) {
    let (side, header_h, y_img) = (layout.side, Layout::HEADER_H, layout.y_images());
    let spec = input.spec;
    let names = SideNames::new(&spec.reference, &spec.method);
    let title = |name: &str, method: &crate::sampler::Method| match method_settings(method) {
        m if m.is_empty() => format!("{name} (every step)"),
        m => format!("{name}: {m}"),
    };
    for (i, (r, title, color)) in [
        (
            input.baseline,
            title(&names.left, &spec.reference),
            palette::BASELINE,
        ),
        (
            input.adaptive,
            title(&names.right, &spec.method),
            palette::ADAPTIVE,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let x0 = Layout::MARGIN + i as u32 * (side + Layout::MARGIN);
        fonts.draw(img, x0 as f32, header_h as f32, 20.0, color, &title);
        let stats = format!(
            "{} / {} predictor calls · {} steps run · {:.0} ms loop + {:.0} ms decode",
            r.trace.unet_calls, r.trace.budget, r.trace.steps_run, r.trace.elapsed_ms, r.decode_ms
        );
        fonts.draw_clipped(
            img,
            (x0 as f32, header_h as f32 + 27.0),
            14.0,
            DIM,
            &stats,
            side as f32,
        );
        let shown = fit(&r.image, side);
        let ox = x0 + (side - shown.width()) / 2;
        let oy = y_img + (side - shown.height()) / 2;
        fill_rect(
            img,
            x0 as i32,
            y_img as i32,
            side as i32,
            side as i32,
            PANEL,
        );
        image::imageops::replace(img, &shown, ox as i64, oy as i64);
    }
}

/// The three plots, one under the other below the key numbers.
fn draw_plots(img: &mut RgbImage, fonts: &Fonts, layout: &Layout, input: &CompositeInput<'_>) {
    let (b, a) = (input.baseline, input.adaptive);
    // x: the position in the schedule, 0–100 %.
    let x_max = 100.0;
    let names = SideNames::new(&input.spec.reference, &input.spec.method);
    let specs = [
        latent_change_plot(&names, b, a, x_max),
        third_order_plot(a, x_max),
        predictor_time_plot(&names, b, a, x_max),
    ];
    let (pw, ph) = (layout.inner_width() as i32, Layout::PLOT_H as i32);
    let mut py = layout.y_plots() as i32;
    for p in &specs {
        draw_plot(img, fonts, (Layout::MARGIN as i32, py, pw, ph), p);
        py += ph + Layout::PLOT_GAP as i32;
    }
}

/// The baseline's and the adaptive side's curves of one quantity (the baseline wider, so
/// that the adaptive curve drawn over it shows where they agree).
fn side_curves(
    names: &SideNames,
    baseline: Vec<(f64, f64, Option<[u8; 3]>)>,
    adaptive: Vec<(f64, f64, Option<[u8; 3]>)>,
) -> [Series; 2] {
    [
        Series {
            name: names.left.clone(),
            color: palette::BASELINE,
            width: 2.2,
            style: Style::Line,
            points: baseline,
        },
        Series {
            name: names.right.clone(),
            color: palette::ADAPTIVE,
            width: 1.1,
            style: Style::Line,
            points: adaptive,
        },
    ]
}

/// d_k of both sides.
fn latent_change_plot(
    names: &SideNames,
    b: &SideResult,
    a: &SideResult,
    x_max: f64,
) -> PlotSpec<'static> {
    PlotSpec {
        title: "Latent change d_k = mean |x_k − x_(k−1)| (log scale)",
        log_y: true,
        x_max,
        series: side_curves(names, d_points(b), d_points(a)).into(),
        legend_extra: vec![],
    }
}

/// The adaptive side's third-order test values against the threshold, each marked with
/// the decision it made.
fn third_order_plot(a: &SideResult, x_max: f64) -> PlotSpec<'static> {
    let n = a.trace.budget;
    let tests: Vec<_> = test_points(&a.trace.steps)
        .into_iter()
        .map(|t| (schedule_percent(t.0, n), t.1, t.2, t.3))
        .collect();
    PlotSpec {
        title: "Third-order test at the step it decides: skip when value ≤ δ·d_(k−1)",
        log_y: true,
        x_max,
        series: vec![
            Series {
                name: "third-order".into(),
                color: palette::ADAPTIVE,
                width: 1.1,
                style: Style::Line,
                points: tests.iter().map(|t| (t.0, t.1, None)).collect(),
            },
            Series {
                name: "threshold δ·d".into(),
                color: palette::THRESHOLD,
                width: 1.1,
                style: Style::Dashed,
                points: tests.iter().map(|t| (t.0, t.2, None)).collect(),
            },
            Series {
                name: String::new(),
                color: palette::COMPUTED,
                width: 1.1,
                style: Style::Markers,
                points: tests
                    .iter()
                    .map(|t| (t.0, t.1, Some(decision_color(t.3))))
                    .collect(),
            },
        ],
        legend_extra: vec![
            (palette::COMPUTED, "computed"),
            (palette::REUSED, "reused"),
            (palette::FORECAST, "forecast"),
            (palette::FORCED, "forced"),
        ],
    }
}

/// Noise-predictor time per step of both sides, the adaptive side's marked by decision.
fn predictor_time_plot(
    names: &SideNames,
    b: &SideResult,
    a: &SideResult,
    x_max: f64,
) -> PlotSpec<'static> {
    let ms = |r: &SideResult| -> Vec<_> {
        let n = r.trace.budget;
        r.trace
            .steps
            .iter()
            .map(|s| (schedule_percent(s.index as f64, n), s.predictor_ms, None))
            .collect()
    };
    let n = a.trace.budget;
    let [baseline, adaptive] = side_curves(names, ms(b), ms(a));
    let decisions = Series {
        name: String::new(),
        color: palette::ADAPTIVE,
        width: 1.1,
        style: Style::Markers,
        points: a
            .trace
            .steps
            .iter()
            .map(|r| {
                (
                    schedule_percent(r.index as f64, n),
                    r.predictor_ms,
                    Some(decision_color(r.decision)),
                )
            })
            .collect(),
    };
    PlotSpec {
        title: "Noise-predictor time per step (ms; 0 = reused)",
        log_y: false,
        x_max,
        series: vec![baseline, adaptive, decisions],
        legend_extra: vec![],
    }
}

/// The version and where the settings and traces are stored.
fn draw_footer(img: &mut RgbImage, fonts: &Fonts, layout: &Layout) {
    fonts.draw(
        img,
        Layout::MARGIN as f32,
        (layout.height - Layout::FOOTER_H + 8) as f32,
        13.0,
        DIM,
        &format!(
            "adiff {} · x axis: % of the schedule · settings and both traces are stored in this PNG's text chunks (parameters, adiff_trace)",
            env!("CARGO_PKG_VERSION")
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::ratio_words;

    #[test]
    fn ratios_read_as_faster_slower_or_same() {
        let w = |r| ratio_words(r, "faster loop", "slower loop", "same loop time");
        assert_eq!(w(2.0), "2.00× faster loop");
        assert_eq!(w(1033.0 / 1331.0), "1.29× slower loop");
        assert_eq!(w(1.0), "same loop time");
        assert_eq!(w(1.004), "same loop time");
        assert_eq!(w(f64::NAN), "same loop time");
    }
}
