//! Adaptive against baseline once both are done: PSNR, SSIM and the difference image.

use super::protocol::Comparison;
use image::RgbImage;
use std::sync::Arc;

/// PSNR (and SSIM when the metric exists) plus the difference image.
pub(super) fn compare(baseline: &RgbImage, adaptive: &RgbImage) -> anyhow::Result<Comparison> {
    let psnr_db = crate::metrics::psnr(adaptive, baseline)?;
    let ssim = ssim(adaptive, baseline);
    let diff = RgbImage::from_fn(baseline.width(), baseline.height(), |x, y| {
        let a = adaptive.get_pixel(x, y).0;
        let b = baseline.get_pixel(x, y).0;
        image::Rgb([
            a[0].abs_diff(b[0]),
            a[1].abs_diff(b[1]),
            a[2].abs_diff(b[2]),
        ])
    });
    Ok(Comparison {
        psnr_db,
        ssim,
        diff: Arc::new(diff),
    })
}

/// SSIM of the adaptive image against the baseline (`None` when it cannot be computed,
/// e.g. for images smaller than the 11×11 window).
fn ssim(adaptive: &RgbImage, baseline: &RgbImage) -> Option<f64> {
    crate::metrics::ssim(adaptive, baseline).ok()
}
