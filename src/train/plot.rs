//! The loss curve as a PNG (drawn with the `image` crate; no text: the axes are described
//! where the plot is shown). x: step (linear, 0 … last step), y: log10 loss with a grid
//! line at every power of ten and lighter lines at 2× and 5×.

use std::path::Path;

use anyhow::Result;
use image::{Rgb, RgbImage};

const W: u32 = 640;
const H: u32 = 360;
const PAD: i64 = 24;

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
    let n = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for i in 0..=n {
        let x = x0 + (x1 - x0) * i / n;
        let y = y0 + (y1 - y0) * i / n;
        for (dx, dy) in [(0, 0), (0, 1)] {
            let (px, py) = (x + dx, y + dy);
            if px >= 0 && py >= 0 && px < W as i64 && py < H as i64 {
                img.put_pixel(px as u32, py as u32, c);
            }
        }
    }
}

/// Draw `(step, loss)` points to `path` (atomically).
pub fn loss_plot(points: &[(usize, f64)], path: &Path) -> Result<()> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.1 > 0.0 && p.1.is_finite())
        .map(|&(s, l)| (s as f64, l.log10()))
        .collect();
    if pts.is_empty() {
        return Ok(());
    }
    let xmax = pts.iter().map(|p| p.0).fold(1.0, f64::max);
    let ylo = pts
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .floor();
    let yhi = pts
        .iter()
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max)
        .ceil();
    let yhi = if yhi <= ylo { ylo + 1.0 } else { yhi };
    let px = |x: f64| PAD + ((x / xmax) * (W as i64 - 2 * PAD) as f64) as i64;
    let py =
        |y: f64| H as i64 - PAD - (((y - ylo) / (yhi - ylo)) * (H as i64 - 2 * PAD) as f64) as i64;
    let mut decade = ylo;
    while decade <= yhi {
        line(
            &mut img,
            (PAD, py(decade)),
            (W as i64 - PAD, py(decade)),
            Rgb([170, 170, 170]),
        );
        for m in [2f64, 5.0] {
            let y = decade + m.log10();
            if y < yhi {
                line(
                    &mut img,
                    (PAD, py(y)),
                    (W as i64 - PAD, py(y)),
                    Rgb([225, 225, 225]),
                );
            }
        }
        decade += 1.0;
    }
    line(
        &mut img,
        (PAD, H as i64 - PAD),
        (W as i64 - PAD, H as i64 - PAD),
        Rgb([0, 0, 0]),
    );
    line(&mut img, (PAD, PAD), (PAD, H as i64 - PAD), Rgb([0, 0, 0]));
    for w in pts.windows(2) {
        line(
            &mut img,
            (px(w[0].0), py(w[0].1)),
            (px(w[1].0), py(w[1].1)),
            Rgb([200, 40, 40]),
        );
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)?;
    crate::output::write_atomic(path, &bytes.into_inner())
}
