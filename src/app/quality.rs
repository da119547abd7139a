//! Adaptive against baseline once both are done: PSNR, SSIM and the difference image; for
//! a clip, frame by frame as well.

use super::protocol::{Comparison, SideResult};
use crate::pipeline::VideoQuality;
use image::RgbImage;
use std::sync::Arc;

/// PSNR (and SSIM when the metric exists) plus the difference image; a clip's numbers are
/// over its frames (the grids' gaps would count as agreeing pixels), with each frame's
/// difference.
pub(super) fn compare(baseline: &SideResult, adaptive: &SideResult) -> anyhow::Result<Comparison> {
    let diff = Arc::new(difference(&baseline.image, &adaptive.image));
    if !baseline.frames.is_empty() {
        let video = VideoQuality::of(&baseline.frames, &adaptive.frames)?;
        let frame_diffs = baseline
            .frames
            .iter()
            .zip(adaptive.frames.iter())
            .map(|(b, a)| Arc::new(difference(b, a)))
            .collect();
        return Ok(Comparison {
            psnr_db: video.psnr_clip_db(),
            ssim: video.ssim_mean.is_finite().then_some(video.ssim_mean),
            diff,
            video: Some(video),
            frame_diffs,
        });
    }
    let (b, a) = (&baseline.image, &adaptive.image);
    Ok(Comparison {
        psnr_db: crate::metrics::psnr(a, b)?,
        ssim: crate::metrics::ssim(a, b).ok(),
        diff,
        video: None,
        frame_diffs: vec![],
    })
}

/// |adaptive − baseline| per pixel and channel.
fn difference(baseline: &RgbImage, adaptive: &RgbImage) -> RgbImage {
    RgbImage::from_fn(baseline.width(), baseline.height(), |x, y| {
        let a = adaptive.get_pixel(x, y).0;
        let b = baseline.get_pixel(x, y).0;
        image::Rgb([
            a[0].abs_diff(b[0]),
            a[1].abs_diff(b[1]),
            a[2].abs_diff(b[2]),
        ])
    })
}
