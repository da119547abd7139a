//! Structural similarity (SSIM, Wang et al. 2004) with the standard Gaussian window.
//!
//! The convention is scikit-image's `structural_similarity(a, b, gaussian_weights=True,
//! sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=2)`: an 11×11
//! Gaussian window (σ = 1.5, truncated at 3.5 σ), `K1 = 0.01`, `K2 = 0.03`, local statistics
//! filtered with mirror ("reflect", half-sample symmetric) borders, the SSIM map cropped by
//! the window radius on every side, averaged, then averaged over the R, G and B channels.
//! `tests/metrics_reference.rs` pins it against scikit-image on committed image pairs.

use anyhow::{Result, bail};
use image::RgbImage;

/// σ of the Gaussian window.
pub const SIGMA: f64 = 1.5;
/// The window radius: `int(3.5 σ + 0.5)` = 5, so the window is 11 × 11.
pub const RADIUS: usize = 5;
/// Side of the window.
pub const WINDOW: usize = 2 * RADIUS + 1;
const K1: f64 = 0.01;
const K2: f64 = 0.03;
const DATA_RANGE: f64 = 255.0;

/// The normalised 1-D Gaussian taps (scipy's `_gaussian_kernel1d`).
fn kernel() -> [f64; WINDOW] {
    let mut k = [0.0; WINDOW];
    for (i, v) in k.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *v = (-0.5 / (SIGMA * SIGMA) * x * x).exp();
    }
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// Index `i` (may be out of range) mirrored into `0..n` the way scipy's `reflect` mode does
/// (`d c b a | a b c d | d c b a`).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let mut m = i.rem_euclid(period);
    if m >= n {
        m = period - 1 - m;
    }
    m as usize
}

/// Separable Gaussian filter of a `w × h` plane (rows first along x, then along y).
fn filter(src: &[f64], w: usize, h: usize, k: &[f64; WINDOW]) -> Vec<f64> {
    // scipy filters axis 0 (rows, i.e. along y) first, then axis 1; the order only changes
    // rounding in the last bits.
    let mut tmp = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for (j, kv) in k.iter().enumerate() {
                let yy = reflect(y as isize + j as isize - RADIUS as isize, h);
                s += kv * src[yy * w + x];
            }
            tmp[y * w + x] = s;
        }
    }
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        let row = &tmp[y * w..(y + 1) * w];
        for x in 0..w {
            let mut s = 0.0;
            for (j, kv) in k.iter().enumerate() {
                let xx = reflect(x as isize + j as isize - RADIUS as isize, w);
                s += kv * row[xx];
            }
            out[y * w + x] = s;
        }
    }
    out
}

/// Mean SSIM of one channel plane.
fn ssim_plane(a: &[f64], b: &[f64], w: usize, h: usize) -> f64 {
    let k = kernel();
    let prod = |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(x, y)| x * y).collect() };
    let ux = filter(a, w, h, &k);
    let uy = filter(b, w, h, &k);
    let uxx = filter(&prod(a, a), w, h, &k);
    let uyy = filter(&prod(b, b), w, h, &k);
    let uxy = filter(&prod(a, b), w, h, &k);
    let c1 = (K1 * DATA_RANGE).powi(2);
    let c2 = (K2 * DATA_RANGE).powi(2);
    let mut sum = 0.0;
    let mut n = 0usize;
    for y in RADIUS..h - RADIUS {
        for x in RADIUS..w - RADIUS {
            let i = y * w + x;
            let (mx, my) = (ux[i], uy[i]);
            let vx = uxx[i] - mx * mx;
            let vy = uyy[i] - my * my;
            let vxy = uxy[i] - mx * my;
            let a1 = 2.0 * mx * my + c1;
            let a2 = 2.0 * vxy + c2;
            let b1 = mx * mx + my * my + c1;
            let b2 = vx + vy + c2;
            sum += a1 * a2 / (b1 * b2);
            n += 1;
        }
    }
    sum / n as f64
}

/// Mean SSIM over R, G and B of two 8-bit images of the same size (1 when identical).
/// Both sides must be at least 11 pixels (the window).
pub fn ssim(a: &RgbImage, b: &RgbImage) -> Result<f64> {
    if a.dimensions() != b.dimensions() {
        bail!(
            "cannot compare images of different sizes ({:?} vs {:?})",
            a.dimensions(),
            b.dimensions()
        );
    }
    let (w, h) = (a.width() as usize, a.height() as usize);
    if w < WINDOW || h < WINDOW {
        bail!("SSIM needs images of at least {WINDOW}x{WINDOW} pixels (got {w}x{h})");
    }
    let plane = |img: &RgbImage, c: usize| -> Vec<f64> {
        img.as_raw()
            .chunks_exact(3)
            .map(|p| f64::from(p[c]))
            .collect()
    };
    let total: f64 = (0..3)
        .map(|c| ssim_plane(&plane(a, c), &plane(b, c), w, h))
        .sum();
    Ok(total / 3.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_scipy() {
        // scipy 'reflect' on n = 3: 2 2 1 0 | 0 1 2 | 2 1 0 | 0 ...
        let got: Vec<usize> = (-4..7).map(|i| reflect(i, 3)).collect();
        assert_eq!(got, vec![2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]);
        assert_eq!(reflect(-1, 1), 0);
    }

    #[test]
    fn kernel_is_normalised_and_symmetric() {
        let k = kernel();
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        for i in 0..WINDOW {
            assert_eq!(k[i], k[WINDOW - 1 - i]);
        }
    }

    #[test]
    fn identical_is_one_and_sizes_checked() {
        let a = RgbImage::from_fn(16, 12, |x, y| image::Rgb([x as u8 * 9, y as u8 * 13, 7]));
        assert!((ssim(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        let mut b = a.clone();
        b.get_pixel_mut(3, 3).0 = [255, 0, 255];
        let s = ssim(&a, &b).unwrap();
        assert!(s < 1.0 && s > 0.5, "{s}");
        assert!(ssim(&a, &RgbImage::new(16, 13)).is_err());
        let tiny = RgbImage::new(10, 20);
        assert!(
            ssim(&tiny, &tiny)
                .unwrap_err()
                .to_string()
                .contains("11x11")
        );
    }
}
