//! Peak signal-to-noise ratio on 8-bit images (the 0–255 convention of the
//! AdaptiveDiffusion paper).

use anyhow::{Result, bail};
use image::RgbImage;

/// PSNR in dB between two images of the same size; `f64::INFINITY` when identical.
pub fn psnr(a: &RgbImage, b: &RgbImage) -> Result<f64> {
    if a.dimensions() != b.dimensions() {
        bail!(
            "cannot compare images of different sizes ({:?} vs {:?})",
            a.dimensions(),
            b.dimensions()
        );
    }
    let n = a.as_raw().len();
    if n == 0 {
        bail!("cannot compare empty images");
    }
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum();
    let mse = se / n as f64;
    Ok(if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    })
}

/// A PSNR for people: `"31.42 dB"`, or `"identical"` for identical images (∞).
pub fn psnr_text(db: f64) -> String {
    if db.is_infinite() && db > 0.0 {
        "identical".into()
    } else {
        format!("{db:.2} dB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images_read_as_identical() {
        assert_eq!(psnr_text(f64::INFINITY), "identical");
        assert_eq!(psnr_text(31.4159), "31.42 dB");
    }

    #[test]
    fn known_values() {
        let a = RgbImage::from_pixel(4, 4, image::Rgb([100, 100, 100]));
        let mut b = a.clone();
        assert!(psnr(&a, &b).unwrap().is_infinite());
        // every channel off by 10 → MSE 100 → 10·log10(65025/100) = 28.1308 dB
        for p in b.pixels_mut() {
            p.0 = [110, 110, 110];
        }
        assert!((psnr(&a, &b).unwrap() - 28.130_803_6).abs() < 1e-6);
        let c = RgbImage::new(2, 2);
        assert!(psnr(&a, &c).is_err());
    }
}
