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

/// Write both sides' frames as `dir/left/frame_000.png`, … and `dir/right/…`, all or
/// nothing: they are written into a hidden folder beside `dir`, which then takes `dir`'s
/// place (an earlier `dir` is replaced only once every frame is written).
pub fn write_sides(dir: &Path, left: &[RgbImage], right: &[RgbImage]) -> Result<()> {
    let name = dir
        .file_name()
        .with_context(|| format!("{} names no folder", dir.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let id = std::process::id();
    let staged = parent.join(format!(".{name}.partial-{id}"));
    let _ = std::fs::remove_dir_all(&staged);
    let written = write_frames(&staged.join("left"), left)
        .and_then(|()| write_frames(&staged.join("right"), right));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{id}"));
    let had_old = dir.exists();
    if had_old && let Err(e) = std::fs::rename(dir, &old) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e).with_context(|| format!("cannot replace {}", dir.display()));
    }
    if let Err(e) = std::fs::rename(&staged, dir) {
        if had_old {
            let _ = std::fs::rename(&old, dir);
        }
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e).with_context(|| format!("cannot write {}", dir.display()));
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Images smaller than this (e.g. the built-in model's 32×32) are enlarged by an integer
/// factor, pixel for pixel, in the side-by-side picture so that they can be seen.
const MIN_SIDE_BY_SIDE: u32 = 256;

/// Put two images side by side (baseline left) with a gap; small images are enlarged by
/// an integer factor with nearest-neighbour sampling (every model pixel stays visible).
pub fn side_by_side(left: &RgbImage, right: &RgbImage) -> RgbImage {
    let smallest = left
        .width()
        .min(left.height())
        .min(right.width())
        .min(right.height())
        .max(1);
    let factor = MIN_SIDE_BY_SIDE.div_ceil(smallest).max(1);
    let enlarge = |img: &RgbImage| {
        if factor == 1 {
            img.clone()
        } else {
            image::imageops::resize(
                img,
                img.width() * factor,
                img.height() * factor,
                image::imageops::FilterType::Nearest,
            )
        }
    };
    let (left, right) = (&enlarge(left), &enlarge(right));
    let gap = (left.width() / 32).max(4);
    let w = left.width() + gap + right.width();
    let h = left.height().max(right.height());
    let mut img = RgbImage::from_pixel(w, h, image::Rgb([24, 24, 24]));
    image::imageops::replace(&mut img, left, 0, 0);
    image::imageops::replace(&mut img, right, (left.width() + gap) as i64, 0);
    img
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
    fn both_sides_frames_are_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("frames");
        let frames: Vec<RgbImage> = (0..3).map(|i| frame(i * 50)).collect();
        write_sides(&out, &frames, &frames[..2]).unwrap();
        assert!(out.join("left/frame_002.png").is_file());
        assert!(out.join("right/frame_001.png").is_file());
        assert!(!out.join("right/frame_002.png").exists());
        // Again, over the first: replaced, nothing staged left behind.
        write_sides(&out, &frames[..1], &frames[..1]).unwrap();
        assert!(!out.join("left/frame_001.png").exists());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["frames".to_string()]);
        // A frame that cannot be written (an empty image) after the left side's were:
        // the earlier folder stays as it was, and nothing staged is left behind.
        let bad = [RgbImage::new(0, 0)];
        assert!(write_sides(&out, &frames, &bad).is_err());
        assert!(out.join("left/frame_000.png").is_file());
        assert!(!out.join("left/frame_001.png").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
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
