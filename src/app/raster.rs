//! Anti-aliased drawing on an RGB image for the exported pictures: blended pixels, line
//! segments, dashed lines, discs.

use image::{Rgb, RgbImage};

pub(super) fn blend(img: &mut RgbImage, x: i32, y: i32, color: [u8; 3], alpha: f32) {
    if x < 0 || y < 0 || x >= img.width() as i32 || y >= img.height() as i32 {
        return;
    }
    let a = alpha.clamp(0.0, 1.0);
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (v, c) in p.0.iter_mut().zip(color) {
        *v = (*v as f32 * (1.0 - a) + c as f32 * a).round() as u8;
    }
}

pub(super) fn fill_rect(img: &mut RgbImage, x: i32, y: i32, w: i32, h: i32, color: [u8; 3]) {
    for yy in y.max(0)..(y + h).min(img.height() as i32) {
        for xx in x.max(0)..(x + w).min(img.width() as i32) {
            img.put_pixel(xx as u32, yy as u32, Rgb(color));
        }
    }
}

/// An anti-aliased segment of width `2r`.
pub(super) fn segment(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), r: f32, color: [u8; 3]) {
    let (x0, x1) = (a.0.min(b.0) - r - 1.0, a.0.max(b.0) + r + 1.0);
    let (y0, y1) = (a.1.min(b.1) - r - 1.0, a.1.max(b.1) + r + 1.0);
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = (dx * dx + dy * dy).max(1e-9);
    for y in y0.floor() as i32..=y1.ceil() as i32 {
        for x in x0.floor() as i32..=x1.ceil() as i32 {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let t = (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0);
            let (cx, cy) = (a.0 + t * dx - px, a.1 + t * dy - py);
            let d = (cx * cx + cy * cy).sqrt();
            let cov = (r + 0.5 - d).clamp(0.0, 1.0);
            if cov > 0.0 {
                blend(img, x, y, color, cov);
            }
        }
    }
}

pub(super) fn dashed(
    img: &mut RgbImage,
    a: (f32, f32),
    b: (f32, f32),
    r: f32,
    color: [u8; 3],
    phase: &mut f32,
) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len = (dx * dx + dy * dy).sqrt();
    if len < 1e-6 {
        return;
    }
    let (on, off) = (7.0, 5.0);
    let mut t = 0.0;
    while t < len {
        let in_dash = *phase < on;
        let left = if in_dash {
            on - *phase
        } else {
            on + off - *phase
        };
        let step = left.min(len - t);
        if in_dash {
            let p0 = (a.0 + dx * t / len, a.1 + dy * t / len);
            let p1 = (a.0 + dx * (t + step) / len, a.1 + dy * (t + step) / len);
            segment(img, p0, p1, r, color);
        }
        t += step;
        *phase = (*phase + step) % (on + off);
    }
}

pub(super) fn disc(img: &mut RgbImage, c: (f32, f32), r: f32, color: [u8; 3]) {
    for y in (c.1 - r - 1.0).floor() as i32..=(c.1 + r + 1.0).ceil() as i32 {
        for x in (c.0 - r - 1.0).floor() as i32..=(c.0 + r + 1.0).ceil() as i32 {
            let d = ((x as f32 + 0.5 - c.0).powi(2) + (y as f32 + 0.5 - c.1).powi(2)).sqrt();
            blend(img, x, y, color, (r + 0.5 - d).clamp(0.0, 1.0));
        }
    }
}
