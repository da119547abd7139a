//! A video model's clip as files: an animated GIF (looping), a filmstrip (the frames in a
//! grid, one image), and one PNG per frame.

use anyhow::{Context, Result, bail};
use image::{Delay, Frame, RgbImage, RgbaImage};
use std::path::Path;

/// The frames as a looping animated GIF at `fps` frames per second.
pub fn gif_bytes(frames: &[RgbImage], fps: f64) -> Result<Vec<u8>> {
    if frames.is_empty() {
        bail!("a clip with no frames cannot be written as a GIF");
    }
    if !(fps.is_finite() && fps > 0.0) {
        bail!("the frame rate must be a positive number (got {fps})");
    }
    let mut bytes = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new_with_speed(&mut bytes, 10);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite)
            .context("cannot encode the GIF")?;
        // GIF delays are whole hundredths of a second.
        let delay = Delay::from_numer_denom_ms((100_000.0 / fps).round() as u32, 100);
        for f in frames {
            let rgba: RgbaImage = image::DynamicImage::ImageRgb8(f.clone()).to_rgba8();
            enc.encode_frame(Frame::from_parts(rgba, 0, 0, delay))
                .context("cannot encode the GIF")?;
        }
    }
    Ok(bytes)
}

/// Columns of the filmstrip of `n` frames: as square as the count allows.
fn columns(n: usize) -> usize {
    ((n as f64).sqrt().ceil() as usize).max(1)
}

/// The frames in a grid, row by row, edge to edge (unfilled cells dark): one picture of the
/// whole clip, from which [`split`] gets the frames back. PSNR between two such grids of
/// full rows is the PSNR of the clips.
pub fn filmstrip(frames: &[RgbImage]) -> RgbImage {
    let Some(first) = frames.first() else {
        return RgbImage::new(1, 1);
    };
    let cols = columns(frames.len()) as u32;
    let rows = (frames.len() as u32).div_ceil(cols);
    let (w, h) = first.dimensions();
    let mut out = RgbImage::from_pixel(cols * w, rows * h, image::Rgb([24, 24, 24]));
    for (i, f) in frames.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        image::imageops::replace(&mut out, f, (c * w) as i64, (r * h) as i64);
    }
    out
}

/// The `n` frames of a [`filmstrip`].
pub fn split(strip: &RgbImage, n: usize) -> Result<Vec<RgbImage>> {
    let cols = columns(n);
    let rows = n.div_ceil(cols);
    let (sw, sh) = strip.dimensions();
    if n == 0 || !(sw as usize).is_multiple_of(cols) || !(sh as usize).is_multiple_of(rows) {
        bail!("a {sw}x{sh} image is not a filmstrip of {n} frames");
    }
    let (w, h) = (sw / cols as u32, sh / rows as u32);
    Ok((0..n)
        .map(|i| {
            let (c, r) = ((i % cols) as u32, (i / cols) as u32);
            image::imageops::crop_imm(strip, c * w, r * h, w, h).to_image()
        })
        .collect())
}

/// Write each frame as `dir/frame_000.png`, … (the folder is created; each file atomically).
pub fn write_frames(dir: &Path, frames: &[RgbImage]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (i, f) in frames.iter().enumerate() {
        super::write_png(&dir.join(format!("frame_{i:03}.png")), f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: u8) -> RgbImage {
        RgbImage::from_pixel(4, 3, image::Rgb([v, 255 - v, 7]))
    }

    #[test]
    fn a_gif_loops_and_holds_every_frame() {
        let frames: Vec<RgbImage> = (0..5).map(|i| frame(i * 50)).collect();
        let bytes = gif_bytes(&frames, 8.0).unwrap();
        use image::AnimationDecoder;
        let dec = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
        let got: Vec<_> = dec.into_frames().collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 5);
        let (num, den) = got[0].delay().numer_denom_ms();
        assert_eq!(num / den, 120, "8 fps → 12 hundredths");
        // The colours survive the palette (few colours per frame).
        assert_eq!(got[3].buffer().get_pixel(1, 1).0[..3], [150, 105, 7]);
        // NETSCAPE loop extension: loops forever.
        assert!(bytes.windows(11).any(|w| w == b"NETSCAPE2.0"));
        assert!(gif_bytes(&[], 8.0).is_err() && gif_bytes(&frames, 0.0).is_err());
    }

    #[test]
    fn the_filmstrip_is_a_grid_of_the_frames() {
        let frames: Vec<RgbImage> = (0..5).map(|i| frame(i * 50)).collect();
        let strip = filmstrip(&frames);
        // 5 frames: 3 columns × 2 rows of 4×3, the last cell dark.
        assert_eq!(strip.dimensions(), (3 * 4, 2 * 3));
        assert_eq!(strip.get_pixel(4, 0).0, [50, 205, 7]);
        assert_eq!(strip.get_pixel(4, 3).0, [200, 55, 7]);
        assert_eq!(strip.get_pixel(9, 4).0, [24, 24, 24]);
        assert_eq!(split(&strip, 5).unwrap(), frames);
        assert!(split(&RgbImage::new(13, 6), 5).is_err() && split(&strip, 0).is_err());
    }
}
