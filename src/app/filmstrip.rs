//! The exported filmstrip of a clip comparison: the prompt and settings, then each side's
//! frames in rows (left side above, right side below) under the side's method title and
//! counts, each right-side frame with its PSNR, and the key numbers at the foot. Drawn on
//! the CPU with the comparison picture's fonts and colours.

use super::compose::{
    BG, DIM, Fonts, PANEL, TEXT, fill_rect, fit, key_numbers, method_settings, palette,
    sampler_name,
};
use super::names::SideNames;
use super::protocol::SideResult;
use crate::job::Job;
use crate::pipeline::VideoQuality;
use anyhow::{Result, bail};
use image::RgbImage;

/// Everything the filmstrip shows.
pub struct FilmstripInput<'a> {
    /// The job's settings.
    pub spec: &'a Job,
    /// Model name.
    pub model: &'a str,
    /// The left side.
    pub baseline: &'a SideResult,
    /// The right side.
    pub adaptive: &'a SideResult,
    /// PSNR over the clip, dB.
    pub psnr_db: Option<f64>,
    /// Mean SSIM over the frames.
    pub ssim: Option<f64>,
    /// The clip's quality frame by frame.
    pub video: Option<&'a VideoQuality>,
}

/// Where things go, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    frames: usize,
    cols: u32,
    rows: u32,
    cell: u32,
    width: u32,
}

impl Layout {
    const MARGIN: u32 = 24;
    const GAP: u32 = 6;
    const HEADER_H: u32 = 112;
    /// A side's title and counts above its frames.
    const TITLE_H: u32 = 52;
    /// The label under each frame.
    const LABEL_H: u32 = 20;
    const FOOTER_H: u32 = 70;
    /// At most this many frames in a row.
    const MAX_COLS: usize = 8;
    /// The narrowest picture (the text lines need it).
    const MIN_WIDTH: u32 = 960;

    /// The layout of `frames` frames of `w × h`: small frames enlarged pixel for pixel to
    /// at least 128 px, large ones shrunk to 256.
    fn of(frames: usize, (w, h): (u32, u32)) -> Self {
        let side = w.max(h).max(1);
        let cell = if side < 128 {
            side * 128u32.div_ceil(side)
        } else {
            side.min(256)
        };
        let cols = frames.clamp(1, Self::MAX_COLS) as u32;
        let rows = (frames.max(1) as u32).div_ceil(cols);
        let grid = cols * cell + (cols - 1) * Self::GAP;
        Self {
            frames,
            cols,
            rows,
            cell,
            width: (grid + 2 * Self::MARGIN).max(Self::MIN_WIDTH),
        }
    }

    /// Height of one side's block: its title and its rows of frames with their labels.
    fn side_h(&self) -> u32 {
        Self::TITLE_H + self.rows * (self.cell + Self::LABEL_H + Self::GAP)
    }

    fn height(&self) -> u32 {
        Self::HEADER_H + 2 * self.side_h() + Self::FOOTER_H
    }

    /// Top-left corner of frame `i` of the side whose block starts at `y0`.
    fn frame_at(&self, i: usize, y0: u32) -> (u32, u32) {
        let (c, r) = (i as u32 % self.cols, i as u32 / self.cols);
        (
            Self::MARGIN + c * (self.cell + Self::GAP),
            y0 + Self::TITLE_H + r * (self.cell + Self::LABEL_H + Self::GAP),
        )
    }
}

/// Render the filmstrip of a clip comparison.
pub fn filmstrip(input: &FilmstripInput<'_>) -> Result<RgbImage> {
    let (b, a) = (input.baseline, input.adaptive);
    let n = b.frames.len().min(a.frames.len());
    if n == 0 {
        bail!("the result is an image, not a clip: a filmstrip needs a video model's frames");
    }
    let fonts = Fonts::new()?;
    let layout = Layout::of(n, b.frames[0].dimensions());
    let mut img = RgbImage::from_pixel(layout.width, layout.height(), image::Rgb(BG));
    header(&mut img, &fonts, &layout, input);
    let names = SideNames::new(&input.spec.reference, &input.spec.method);
    let sides = [
        (b, &names.left, &input.spec.reference, palette::BASELINE),
        (a, &names.right, &input.spec.method, palette::ADAPTIVE),
    ];
    let text_w = (layout.width - 2 * Layout::MARGIN) as f32;
    for (k, (r, name, method, color)) in sides.into_iter().enumerate() {
        let y0 = Layout::HEADER_H + k as u32 * layout.side_h();
        let title = match method_settings(method) {
            m if m.is_empty() => format!("{name} (every step)"),
            m => format!("{name}: {m}"),
        };
        let mx = Layout::MARGIN as f32;
        fonts.draw_clipped(&mut img, (mx, y0 as f32), 21.0, color, &title, text_w);
        let stats = format!(
            "{} / {} predictor calls · {} steps run · {:.0} ms loop + {:.0} ms decode · {n} frames",
            r.trace.unet_calls, r.trace.budget, r.trace.steps_run, r.trace.elapsed_ms, r.decode_ms
        );
        fonts.draw_clipped(&mut img, (mx, y0 as f32 + 27.0), 14.0, DIM, &stats, text_w);
        for (i, frame) in r.frames.iter().take(n).enumerate() {
            let (x, y) = layout.frame_at(i, y0);
            let c = layout.cell;
            fill_rect(&mut img, x as i32, y as i32, c as i32, c as i32, PANEL);
            let shown = fit(frame, c);
            let (ox, oy) = (x + (c - shown.width()) / 2, y + (c - shown.height()) / 2);
            image::imageops::replace(&mut img, &shown, ox as i64, oy as i64);
            let label = match (k, input.video) {
                (1, Some(v)) => match v.psnr_per_frame_db.get(i) {
                    Some(db) => format!("{i} · {}", crate::metrics::psnr_text(*db)),
                    None => i.to_string(),
                },
                _ => i.to_string(),
            };
            fonts.draw_clipped(
                &mut img,
                (x as f32 + 2.0, (y + c + 2) as f32),
                13.0,
                DIM,
                &label,
                c as f32,
            );
        }
    }
    footer(&mut img, &fonts, &layout, input);
    Ok(img)
}

/// The title, the prompt and the line of settings.
fn header(img: &mut RgbImage, fonts: &Fonts, layout: &Layout, input: &FilmstripInput<'_>) {
    let spec = input.spec;
    let mx = Layout::MARGIN as f32;
    let tw = (layout.width - 2 * Layout::MARGIN) as f32;
    let names = SideNames::new(&spec.reference, &spec.method);
    fonts.draw_clipped(
        img,
        (mx, 14.0),
        28.0,
        TEXT,
        &format!(
            "Adaptive Diffusion: {} · clip of {} frames",
            names.versus(),
            layout.frames
        ),
        tw,
    );
    fonts.draw_clipped(
        img,
        (mx, 52.0),
        18.0,
        TEXT,
        &format!("“{}”", spec.prompt),
        tw,
    );
    let f = &input.baseline.frames[0];
    let line = format!(
        "{} · {} · {} steps · CFG {} · seed {} · {}×{} per frame",
        input.model,
        sampler_name(spec.scheduler),
        spec.steps,
        spec.guidance,
        spec.seed,
        f.width(),
        f.height()
    );
    fonts.draw_clipped(img, (mx, 80.0), 15.0, DIM, &line, tw);
}

/// The key numbers and the per-frame PSNR summary.
fn footer(img: &mut RgbImage, fonts: &Fonts, layout: &Layout, input: &FilmstripInput<'_>) {
    let y = (layout.height() - Layout::FOOTER_H + 8) as f32;
    let mx = Layout::MARGIN as f32;
    let tw = (layout.width - 2 * Layout::MARGIN) as f32;
    let names = SideNames::new(&input.spec.reference, &input.spec.method);
    let key = format!(
        "{}: {}",
        names.versus(),
        key_numbers(input.baseline, input.adaptive, input.psnr_db, input.ssim)
    );
    fonts.draw_clipped(img, (mx, y), 17.0, TEXT, &key, tw);
    if let Some(v) = input.video {
        let line = format!(
            "PSNR per frame: mean {}, worst {} (frame {}) · SSIM mean {:.4}",
            crate::metrics::psnr_text(v.psnr_mean_db),
            crate::metrics::psnr_text(v.psnr_worst_db),
            v.worst_frame,
            v.ssim_mean
        );
        fonts.draw_clipped(img, (mx, y + 26.0), 15.0, DIM, &line, tw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_are_enlarged_and_rows_hold_eight() {
        let l = Layout::of(8, (32, 32));
        assert_eq!((l.cols, l.rows, l.cell), (8, 1, 128));
        assert_eq!(l.width, 8 * 128 + 7 * Layout::GAP + 2 * Layout::MARGIN);
        let l = Layout::of(16, (64, 48));
        assert_eq!((l.cols, l.rows, l.cell), (8, 2, 128));
        // Large frames shrink to 256; few frames keep the text's width.
        let l = Layout::of(3, (512, 512));
        assert_eq!(
            (l.cols, l.rows, l.cell, l.width),
            (3, 1, 256, Layout::MIN_WIDTH)
        );
        // Frame 9 of 16: second row, second column, below the side's title.
        let l = Layout::of(16, (32, 32));
        let (x, y) = l.frame_at(9, 500);
        assert_eq!(x, Layout::MARGIN + 128 + Layout::GAP);
        assert_eq!(
            y,
            500 + Layout::TITLE_H + 128 + Layout::LABEL_H + Layout::GAP
        );
        assert!(l.height() > Layout::HEADER_H + 2 * 2 * 128);
    }
}
