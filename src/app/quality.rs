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
    // (Frames too small for SSIM's 11×11 window are compared as the grids are below.)
    if let Ok(video) = VideoQuality::of(&baseline.frames, &adaptive.frames) {
        return Ok(Comparison {
            psnr_db: video.psnr_clip_db(),
            ssim: video.ssim_mean.is_finite().then_some(video.ssim_mean),
            diff,
            video: Some(video),
            frame_diffs: frame_diffs(baseline, adaptive),
        });
    }
    let (b, a) = (&baseline.image, &adaptive.image);
    Ok(Comparison {
        psnr_db: crate::metrics::psnr(a, b)?,
        ssim: crate::metrics::ssim(a, b).ok(),
        diff,
        video: None,
        frame_diffs: frame_diffs(baseline, adaptive),
    })
}

/// A clip's differences frame by frame (none for an image).
fn frame_diffs(baseline: &SideResult, adaptive: &SideResult) -> Vec<Arc<RgbImage>> {
    baseline
        .frames
        .iter()
        .zip(adaptive.frames.iter())
        .map(|(b, a)| Arc::new(difference(b, a)))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::{Method, RunTrace};

    fn side(frames: Vec<RgbImage>) -> SideResult {
        SideResult {
            side: super::super::protocol::Side::Baseline,
            image: crate::output::clip::filmstrip(&frames),
            frames: Arc::new(frames),
            trace: RunTrace {
                method: Method::BASELINE,
                scheduler: "ddim".into(),
                budget: 1,
                guidance: 7.5,
                early_stop: None,
                stopped_early_at: None,
                unet_calls: 1,
                unet_macs: None,
                unet_cost: None,
                steps_run: 1,
                elapsed_ms: 1.0,
                steps: vec![],
            },
            decode_ms: 0.0,
            model: "m".into(),
            computed_at: std::time::Instant::now(),
        }
    }

    fn frame(size: u32, v: u8) -> RgbImage {
        RgbImage::from_pixel(size, size, image::Rgb([v, 100, 100]))
    }

    #[test]
    fn a_clip_is_compared_frame_by_frame() {
        let b = side(vec![frame(16, 10), frame(16, 20), frame(16, 30)]);
        let a = side(vec![frame(16, 10), frame(16, 24), frame(16, 30)]);
        let c = compare(&b, &a).unwrap();
        let v = c.video.as_ref().unwrap();
        assert_eq!(v.frames, 3);
        assert!(v.psnr_per_frame_db[0].is_infinite() && v.psnr_per_frame_db[1].is_finite());
        assert_eq!(v.worst_frame, 1);
        assert_eq!(c.psnr_db, v.psnr_clip_db());
        assert_eq!(c.frame_diffs.len(), 3);
        assert_eq!(c.frame_diffs[1].get_pixel(3, 3).0, [4, 0, 0]);
        assert_eq!(c.frame_diffs[2].get_pixel(3, 3).0, [0, 0, 0]);
        // Frames too small for SSIM: compared as grids, each frame's difference kept.
        let b = side(vec![frame(8, 10), frame(8, 20)]);
        let a = side(vec![frame(8, 10), frame(8, 24)]);
        let c = compare(&b, &a).unwrap();
        assert!(c.video.is_none() && c.psnr_db.is_finite());
        assert_eq!(c.frame_diffs.len(), 2);
    }
}
