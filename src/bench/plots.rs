//! Plots of a benchmark as standalone SVG (and the skip heat-map also as PNG), written
//! without a plotting dependency: speedup vs PSNR per δ, noise-predictor calls vs prompt
//! complexity, and the per-step skip pattern.

use super::plan::BASELINE;
use super::records::RunRow;
use super::summary::GroupSummary;
use std::fmt::Write as _;

const W: f64 = 680.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
/// Series colours (colour-blind friendly, Okabe–Ito).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
];

/// One series of points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y, label)`.
    pub points: Vec<(f64, f64, Option<String>)>,
    /// Join the points with a line (in the given order).
    pub line: bool,
    /// Colour index into [`PALETTE`] (default: the series index).
    pub color: Option<usize>,
    /// Marker shape.
    pub marker: Marker,
}

/// Point markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Marker {
    /// A disc.
    #[default]
    Circle,
    /// A square.
    Square,
    /// An upward triangle.
    Triangle,
    /// A diamond.
    Diamond,
}

impl Marker {
    /// The markers in order, for cycling.
    pub const ALL: [Marker; 4] = [
        Marker::Circle,
        Marker::Square,
        Marker::Triangle,
        Marker::Diamond,
    ];

    fn svg(self, x: f64, y: f64, color: &str, opacity: f64) -> String {
        let r = 4.5;
        match self {
            Marker::Circle => format!(
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{color}" fill-opacity="{opacity}"/>"#
            ),
            Marker::Square => format!(
                r#"<rect x="{:.1}" y="{:.1}" width="{}" height="{}" fill="{color}" fill-opacity="{opacity}"/>"#,
                x - r * 0.85,
                y - r * 0.85,
                r * 1.7,
                r * 1.7
            ),
            Marker::Triangle => format!(
                r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{color}" fill-opacity="{opacity}"/>"#,
                x,
                y - r,
                x - r,
                y + r * 0.8,
                x + r,
                y + r * 0.8
            ),
            Marker::Diamond => format!(
                r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{color}" fill-opacity="{opacity}"/>"#,
                x,
                y - r,
                x + r,
                y,
                x,
                y + r,
                x - r,
                y
            ),
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// "Nice" tick values covering `[lo, hi]`.
pub fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).ceil() * step;
    let mut v = Vec::new();
    let mut t = start;
    while t <= hi + step * 1e-9 {
        v.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    v
}

fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

fn range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let v: Vec<f64> = vals.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let pad = if hi > lo {
        (hi - lo) * 0.08
    } else {
        lo.abs().max(1.0) * 0.1
    };
    Some((lo - pad, hi + pad))
}

/// A scatter/line chart. `note` is printed under the title (e.g. why a plot is empty).
pub fn xy_plot(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    note: Option<&str>,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
"#,
        (LEFT + W - RIGHT) / 2.0,
        esc(title)
    );
    if let Some(n) = note {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="36" text-anchor="middle" fill="#555">{}</text>"##,
            (LEFT + W - RIGHT) / 2.0,
            esc(n)
        );
    }
    let xr = range(series.iter().flat_map(|se| se.points.iter().map(|p| p.0)));
    let yr = range(series.iter().flat_map(|se| se.points.iter().map(|p| p.1)));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 12.0,
        esc(xlabel)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(ylabel)
    );
    let (Some((x0, x1)), Some((y0, y1))) = (xr, yr) else {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#999">no data</text></svg>"##,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
        return s;
    };
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
    for t in ticks(x0, x1, 6) {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#eee"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(t),
            TOP,
            TOP + ph,
            TOP + ph + 16.0,
            fmt_tick(t)
        );
    }
    for t in ticks(y0, y1, 6) {
        let _ = writeln!(
            s,
            r##"<line x1="{1}" y1="{0:.1}" x2="{2}" y2="{0:.1}" stroke="#eee"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##,
            py(t),
            LEFT,
            LEFT + pw,
            LEFT - 6.0,
            py(t) + 4.0,
            fmt_tick(t)
        );
    }
    for (i, se) in series.iter().enumerate() {
        let c = PALETTE[se.color.unwrap_or(i) % PALETTE.len()];
        let pts: Vec<&(f64, f64, Option<String>)> = se
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        if se.line && pts.len() > 1 {
            let d: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="1.5"/>"#,
                d.join(" ")
            );
        }
        for p in &pts {
            let _ = writeln!(s, "{}", se.marker.svg(px(p.0), py(p.1), c, 0.8));
            if let Some(l) = &p.2 {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="{c}">{}</text>"#,
                    px(p.0) + 6.0,
                    py(p.1) - 6.0,
                    esc(l)
                );
            }
        }
        let ly = TOP + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"{}<text x="{}" y="{}">{}</text>"#,
            se.marker.svg(W - RIGHT + 16.0, ly, c, 1.0),
            W - RIGHT + 26.0,
            ly + 4.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Which speedup a plot's x axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeedupAxis {
    /// Baseline loop time / loop time.
    Wall,
    /// Baseline multiply-accumulates / multiply-accumulates (the work, partial calls
    /// included).
    Macs,
}

/// Speedup against mean PSNR (y), every setting of every method, one series per scheduler
/// (a line through them when the settings are a δ sweep of one method).
pub fn speedup_vs_psnr(groups: &[GroupSummary], axis: SpeedupAxis) -> String {
    let mut series: Vec<Series> = Vec::new();
    let mut identical_only = false;
    let sweep = groups
        .iter()
        .filter(|g| g.setting != BASELINE)
        .all(|g| g.setting.starts_with("delta"));
    let labels = super::labels::Labels::of_groups(groups);
    for g in groups.iter().filter(|g| g.setting != BASELINE) {
        let x = match axis {
            SpeedupAxis::Wall => g.speedup,
            SpeedupAxis::Macs => g.macs_speedup,
        };
        let (Some(sp), Some(p)) = (x, g.psnr_db.mean) else {
            identical_only |= g.identical > 0;
            continue;
        };
        let label = labels.get(&g.setting).to_string();
        let label = if g.pareto {
            format!("{label} ★")
        } else {
            label
        };
        match series.iter_mut().find(|s| s.name == g.scheduler) {
            Some(s) => s.points.push((sp, p, Some(label))),
            None => {
                let k = series.len();
                series.push(Series {
                    name: g.scheduler.clone(),
                    points: vec![(sp, p, Some(label))],
                    line: sweep,
                    color: Some(k),
                    marker: Marker::ALL[k % Marker::ALL.len()],
                })
            }
        }
    }
    let note = if identical_only {
        Some(
            "settings whose images all equal the baseline (PSNR = ∞) are not drawn; ★ Pareto front",
        )
    } else {
        Some("mean PSNR vs the full-step baseline; ★ Pareto front")
    };
    let (title, x_label) = match axis {
        SpeedupAxis::Wall => (
            "Speedup vs PSNR",
            "speedup (baseline loop time / loop time)",
        ),
        SpeedupAxis::Macs => (
            "Work saved vs PSNR",
            "speedup in UNet multiply-accumulates (baseline / run)",
        ),
    };
    xy_plot(title, x_label, "PSNR vs baseline (dB)", &series, note)
}

/// Noise-predictor calls per adaptive run against the prompt's complexity (or its grade).
pub fn steps_vs_complexity(rows: &[RunRow]) -> String {
    let use_complexity = rows.iter().any(|r| r.complexity.is_some());
    let use_grade = !use_complexity && rows.iter().any(|r| r.grade.is_some());
    let labels = super::labels::Labels::of_rows(rows);
    // colour by setting, marker by scheduler
    let mut settings: Vec<String> = Vec::new();
    let mut schedulers: Vec<String> = Vec::new();
    let mut series: Vec<Series> = Vec::new();
    for r in rows.iter().filter(|r| r.setting != BASELINE) {
        let x = if use_complexity {
            r.complexity
        } else if use_grade {
            r.grade.map(f64::from)
        } else {
            Some(r.prompt_index as f64)
        };
        let Some(x) = x else { continue };
        if !settings.contains(&r.setting) {
            settings.push(r.setting.clone());
        }
        if !schedulers.contains(&r.scheduler) {
            schedulers.push(r.scheduler.clone());
        }
        let ci = settings.iter().position(|s| *s == r.setting).unwrap_or(0);
        let mi = schedulers
            .iter()
            .position(|s| *s == r.scheduler)
            .unwrap_or(0);
        let name = format!("{} {}", r.scheduler, labels.get(&r.setting));
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push((x, r.unet_calls as f64, None)),
            None => series.push(Series {
                name,
                points: vec![(x, r.unet_calls as f64, None)],
                line: false,
                color: Some(ci),
                marker: Marker::ALL[mi % Marker::ALL.len()],
            }),
        }
    }
    let xlabel = if use_complexity {
        "prompt complexity score (0–1)"
    } else if use_grade {
        "prompt grade"
    } else {
        "prompt index (no complexity scores in runs.csv)"
    };
    xy_plot(
        "Noise-predictor calls vs prompt complexity",
        xlabel,
        "noise-predictor calls (NFE)",
        &series,
        None,
    )
}

/// Per-step cell colours of the skip heat-map.
fn cell_rgb(c: char) -> [u8; 3] {
    match c {
        'W' => [150, 150, 150],
        'C' => [0, 84, 147],
        'F' => [213, 94, 0],
        'S' => [240, 228, 66],
        'P' => [204, 121, 167],
        _ => [255, 255, 255],
    }
}

/// Rows of the heat-map: per adaptive run when there are at most `max_rows` of them,
/// otherwise one row per scheduler × setting with the skip frequency per step.
/// One labelled row of heat-map cells.
type HeatRow = (String, Vec<[u8; 3]>);

fn heat_rows(rows: &[RunRow], max_rows: usize) -> (Vec<HeatRow>, bool) {
    let labels = super::labels::Labels::of_rows(rows);
    let mut adaptive: Vec<&RunRow> = rows.iter().filter(|r| r.setting != BASELINE).collect();
    let mut sch_order: Vec<&str> = Vec::new();
    for r in &adaptive {
        if !sch_order.contains(&r.scheduler.as_str()) {
            sch_order.push(&r.scheduler);
        }
    }
    adaptive.sort_by(|a, b| {
        let rank = |r: &RunRow| sch_order.iter().position(|s| *s == r.scheduler);
        rank(a)
            .cmp(&rank(b))
            .then(a.delta.unwrap_or(0.0).total_cmp(&b.delta.unwrap_or(0.0)))
            .then(a.setting.cmp(&b.setting))
            .then(a.prompt_index.cmp(&b.prompt_index))
            .then(a.seed.cmp(&b.seed))
    });
    if adaptive.len() <= max_rows {
        let out = adaptive
            .iter()
            .map(|r| {
                (
                    format!(
                        "p{} s{} {} {}",
                        r.prompt_index,
                        r.seed,
                        r.scheduler,
                        labels.get(&r.setting)
                    ),
                    r.pattern.chars().map(cell_rgb).collect(),
                )
            })
            .collect();
        return (out, false);
    }
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in &adaptive {
        let k = (r.scheduler.clone(), r.setting.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let out = keys
        .into_iter()
        .map(|(sch, set)| {
            let rs: Vec<&&RunRow> = adaptive
                .iter()
                .filter(|r| r.scheduler == sch && r.setting == set)
                .collect();
            let n = rs.iter().map(|r| r.pattern.len()).max().unwrap_or(0);
            let cells = (0..n)
                .map(|i| {
                    let (mut skip, mut total) = (0usize, 0usize);
                    for r in &rs {
                        if let Some(c) = r.pattern.chars().nth(i) {
                            total += 1;
                            skip += usize::from(c == 'S');
                        }
                    }
                    let f = if total == 0 {
                        0.0
                    } else {
                        skip as f64 / total as f64
                    };
                    let (a, b) = (cell_rgb('C'), cell_rgb('S'));
                    [0, 1, 2].map(|k| (a[k] as f64 + (b[k] as f64 - a[k] as f64) * f).round() as u8)
                })
                .collect();
            (
                format!("{sch} {} ({} runs)", labels.get(&set), rs.len()),
                cells,
            )
        })
        .collect();
    (out, true)
}

/// The per-step skip pattern as SVG.
pub fn skip_heatmap_svg(rows: &[RunRow]) -> String {
    let (hr, freq) = heat_rows(rows, 300);
    let steps = hr.iter().map(|r| r.1.len()).max().unwrap_or(0).max(1);
    let cw = (520.0 / steps as f64).clamp(3.0, 16.0);
    let ch = 12.0;
    let label_w = 230.0;
    let w = label_w + cw * steps as f64 + 20.0;
    let h = 70.0 + ch * hr.len() as f64 + 30.0;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="10">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14" font-weight="bold">Per-step skip pattern</text>
"#
    );
    let legend = if freq {
        "colour: share of runs that skipped the step (blue: none, yellow: all)".to_string()
    } else {
        "grey: warm-up · blue: computed · orange: forced · yellow: skipped (prediction reused) · white: not run".to_string()
    };
    let _ = writeln!(
        s,
        r##"<text x="10" y="34" fill="#444">{}</text>"##,
        esc(&legend)
    );
    for j in (0..steps).step_by(5) {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="52" text-anchor="middle" fill="#444">{j}</text>"##,
            label_w + cw * (j as f64 + 0.5)
        );
    }
    for (i, (label, cells)) in hr.iter().enumerate() {
        let y = 55.0 + ch * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_w - 6.0,
            y + ch - 3.0,
            esc(label)
        );
        for (j, c) in cells.iter().enumerate() {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{y:.1}" width="{cw:.1}" height="{ch}" fill="#{:02x}{:02x}{:02x}" stroke="#fff" stroke-width="0.5"/>"##,
                label_w + cw * j as f64,
                c[0],
                c[1],
                c[2]
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">step</text></svg>"#,
        label_w + cw * steps as f64 / 2.0,
        h - 10.0
    );
    s
}

/// The per-step skip pattern as a PNG raster (no labels; rows as in the SVG).
pub fn skip_heatmap_png(rows: &[RunRow]) -> image::RgbImage {
    let (hr, _) = heat_rows(rows, 300);
    let steps = hr.iter().map(|r| r.1.len()).max().unwrap_or(0).max(1) as u32;
    let cw = (600 / steps).clamp(3, 16);
    let ch = 8u32;
    let mut img = image::RgbImage::from_pixel(
        cw * steps,
        (ch * hr.len() as u32).max(1),
        image::Rgb([255, 255, 255]),
    );
    for (i, (_, cells)) in hr.iter().enumerate() {
        for (j, c) in cells.iter().enumerate() {
            for dy in 0..ch - 1 {
                for dx in 0..cw - 1 {
                    img.put_pixel(j as u32 * cw + dx, i as u32 * ch + dy, image::Rgb(*c));
                }
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.93, 2.41, 6);
        assert!(
            t.first().unwrap() >= &0.93 && t.last().unwrap() <= &2.41,
            "{t:?}"
        );
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(fmt_tick(20.0), "20");
    }

    #[test]
    fn empty_plot_is_valid_svg() {
        let s = xy_plot("t", "x", "y", &[], None);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("no data"));
    }
}
