//! Cheap live previews: a linear projection of the 4 latent channels to RGB (the
//! well-known approximate factors for the SD 1.x/2.x and SDXL VAEs), at latent resolution.
//! This is the only app module besides the worker that touches candle.

use anyhow::{Result, bail};
use candle_core::{DType, Device, Tensor};
use image::RgbImage;

/// Latent channel → RGB factors of the SD 1.x / 2.x VAE (rows: latent channels).
const SD_FACTORS: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// Latent channel → RGB factors of the SDXL VAE.
const SDXL_FACTORS: [[f32; 3]; 4] = [
    [0.3920, 0.4054, 0.4549],
    [-0.2634, -0.0196, 0.0653],
    [0.0568, 0.1687, -0.0755],
    [-0.3112, -0.2359, -0.2076],
];

/// Project `(1, C, h, w)` latents (scaled as the UNet sees them) to an `w × h` RGB image.
/// With 4 channels the VAE's approximate factors are used; other channel counts show the
/// first three channels, normalised.
pub fn latent_preview(latents: &Tensor, sdxl: bool) -> Result<RgbImage> {
    let x = latents.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let x = match x.rank() {
        4 => x.get(0)?,
        3 => x,
        r => bail!("expected (1, C, h, w) latents, got rank {r}"),
    };
    let (c, h, w) = x.dims3()?;
    let data = x.flatten_all()?.to_vec1::<f32>()?;
    Ok(project(
        &data,
        c,
        h,
        w,
        if sdxl { &SDXL_FACTORS } else { &SD_FACTORS },
    ))
}

/// Project a clip's `(1, C, frames, h, w)` latents to one `w × h` RGB image per frame, as
/// [`latent_preview`] does for an image.
pub fn latent_preview_frames(latents: &Tensor, sdxl: bool) -> Result<Vec<RgbImage>> {
    let x = latents.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    if x.rank() != 5 {
        bail!(
            "expected (1, C, frames, h, w) latents, got rank {}",
            x.rank()
        );
    }
    let x = x.get(0)?;
    let (c, f, h, w) = x.dims4()?;
    let factors = if sdxl { &SDXL_FACTORS } else { &SD_FACTORS };
    (0..f)
        .map(|i| {
            let data = x.narrow(1, i, 1)?.flatten_all()?.to_vec1::<f32>()?;
            Ok(project(&data, c, h, w, factors))
        })
        .collect()
}

/// The projection on a plain `C × h × w` buffer.
pub fn project(data: &[f32], c: usize, h: usize, w: usize, factors: &[[f32; 3]; 4]) -> RgbImage {
    let plane = h * w;
    let to_u8 = |v: f32| (((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
    if c == 4 {
        RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let i = y as usize * w + x as usize;
            let mut rgb = [0f32; 3];
            for (ch, f) in factors.iter().enumerate() {
                let v = data[ch * plane + i];
                for k in 0..3 {
                    rgb[k] += v * f[k];
                }
            }
            image::Rgb(rgb.map(to_u8))
        })
    } else {
        let shown = c.min(3);
        let scale = data
            .iter()
            .take(shown * plane)
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(1e-6);
        RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let i = y as usize * w + x as usize;
            let mut rgb = [0f32; 3];
            for (k, v) in rgb.iter_mut().enumerate() {
                *v = data[k.min(shown.saturating_sub(1)) * plane + i] / scale;
            }
            image::Rgb(rgb.map(to_u8))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_of_a_constant_latent() {
        // Channel 0 = 1, others 0 → RGB = factors of channel 0 mapped from [-1, 1].
        let (h, w) = (2, 3);
        let mut data = vec![0f32; 4 * h * w];
        data[..h * w].fill(1.0);
        let img = project(&data, 4, h, w, &SD_FACTORS);
        assert_eq!(img.dimensions(), (3, 2));
        let expect = SD_FACTORS[0].map(|f| (((f + 1.0) * 0.5) * 255.0).round() as u8);
        assert!(img.pixels().all(|p| p.0 == expect));
    }

    #[test]
    fn preview_from_a_tensor() {
        let t = Tensor::zeros((1, 4, 8, 5), DType::F32, &Device::Cpu).unwrap();
        let img = latent_preview(&t, false).unwrap();
        assert_eq!(img.dimensions(), (5, 8));
        assert!(img.pixels().all(|p| p.0 == [128, 128, 128]));
        let t = Tensor::ones((1, 16, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(latent_preview(&t, true).unwrap().dimensions(), (4, 4));
    }

    #[test]
    fn a_clip_previews_frame_by_frame() {
        // Frame 1 has channel 0 = 1, frames 0 and 2 are zero.
        let mut data = vec![0f32; 4 * 3 * 2 * 5];
        for y in 0..2 {
            for x in 0..5 {
                data[10 + y * 5 + x] = 1.0; // channel 0, frame 1
            }
        }
        let t = Tensor::from_vec(data, (1, 4, 3, 2, 5), &Device::Cpu).unwrap();
        let frames = latent_preview_frames(&t, false).unwrap();
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f.dimensions() == (5, 2)));
        let lit = SD_FACTORS[0].map(|f| (((f + 1.0) * 0.5) * 255.0).round() as u8);
        assert!(frames[1].pixels().all(|p| p.0 == lit));
        assert!(frames[0].pixels().all(|p| p.0 == [128, 128, 128]));
        assert!(frames[2].pixels().all(|p| p.0 == [128, 128, 128]));
        assert!(
            latent_preview_frames(
                &Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap(),
                false
            )
            .is_err()
        );
    }
}
