//! transformers' `CLIPImageProcessor` steps — shortest side to the model size with
//! Pillow's bicubic filter (emulated bit for bit: 8-bit fixed-point separable passes),
//! centre crop, `x/255`, `(x − mean)/std` in f32.

use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use image::RgbImage;
use serde_json::Value;

/// transformers' `OPENAI_CLIP_MEAN` (written as transformers writes it).
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// transformers' `OPENAI_CLIP_STD`.
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The `CLIPImageProcessor` settings: resize the shortest side, centre crop, normalise.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPreprocess {
    /// The shortest side after resizing.
    pub shortest_edge: usize,
    /// Crop (width, height).
    pub crop: (usize, usize),
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
    /// The rescale factor (1/255).
    pub rescale: f64,
}

impl Default for ClipPreprocess {
    /// `openai/clip-vit-base-patch32`'s processor: 224, bicubic, crop 224.
    fn default() -> Self {
        Self::square(224)
    }
}

pub(super) fn size_field(v: Option<&Value>, keys: &[&str]) -> Option<usize> {
    let v = v?;
    if let Some(n) = v.as_u64() {
        return Some(n as usize);
    }
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_u64))
        .map(|n| n as usize)
}

impl ClipPreprocess {
    /// Resize to `side` and crop `side × side` with the OpenAI mean/std.
    pub fn square(side: usize) -> Self {
        Self {
            shortest_edge: side,
            crop: (side, side),
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
            rescale: 1.0 / 255.0,
        }
    }

    /// Read a `preprocessor_config.json` (old integer and new dict forms of `size` and
    /// `crop_size`). Only the bicubic filter (`resample` 3) is implemented.
    pub fn from_file(path: &Path, image_size: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let j: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        if let Some(r) = j.get("resample").and_then(Value::as_u64)
            && r != 3
        {
            bail!(
                "{}: resample {r} is not implemented (only 3, bicubic)",
                path.display()
            );
        }
        let mut p = Self::square(image_size);
        if let Some(s) = size_field(j.get("size"), &["shortest_edge"]) {
            p.shortest_edge = s;
        }
        if let Some(c) = j.get("crop_size") {
            let w = size_field(Some(c), &["width"]).unwrap_or(image_size);
            let h = size_field(Some(c), &["height"]).unwrap_or(image_size);
            p.crop = (w, h);
        }
        let triple = |key: &str| -> Option<[f32; 3]> {
            let a = j.get(key)?.as_array()?;
            (a.len() == 3).then(|| {
                [
                    a[0].as_f64().unwrap_or(0.0) as f32,
                    a[1].as_f64().unwrap_or(0.0) as f32,
                    a[2].as_f64().unwrap_or(1.0) as f32,
                ]
            })
        };
        if let Some(m) = triple("image_mean") {
            p.mean = m;
        }
        if let Some(s) = triple("image_std") {
            p.std = s;
        }
        if let Some(r) = j.get("rescale_factor").and_then(Value::as_f64) {
            p.rescale = r;
        }
        Ok(p)
    }

    /// The resized size (width, height) for an input size: transformers'
    /// `get_resize_output_image_size(default_to_square=False)`.
    pub fn resized_size(&self, w: usize, h: usize) -> (usize, usize) {
        let (short, long) = if w <= h { (w, h) } else { (h, w) };
        if short == self.shortest_edge {
            return (w, h);
        }
        let new_long = ((self.shortest_edge * long) as f64 / short as f64) as usize;
        if w <= h {
            (self.shortest_edge, new_long)
        } else {
            (new_long, self.shortest_edge)
        }
    }

    /// Resize (Pillow bicubic) and centre-crop: the 8-bit stage of the processor.
    pub fn resize_crop(&self, img: &RgbImage) -> Result<RgbImage> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            bail!("cannot score an empty image");
        }
        let (rw, rh) = self.resized_size(w, h);
        let resized = pil_bicubic_resize(img, rw, rh);
        let (cw, ch) = self.crop;
        if cw > rw || ch > rh {
            bail!("CLIP crop {cw}x{ch} is larger than the resized image {rw}x{rh}");
        }
        let top = (rh - ch) / 2;
        let left = (rw - cw) / 2;
        Ok(
            image::imageops::crop_imm(&resized, left as u32, top as u32, cw as u32, ch as u32)
                .to_image(),
        )
    }

    /// The normalised `(1, 3, H, W)` f32 tensor of an already resized and cropped image.
    pub fn normalize(&self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0f32; 3 * w * h];
        for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
            for c in 0..3 {
                // transformers: float64 x·(1/255) → float32, then (x − mean)/std in float32
                let x = (f64::from(p[c]) * self.rescale) as f32;
                data[c * w * h + i] = (x - self.mean[c]) / self.std[c];
            }
        }
        Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
    }

    /// The whole processor: `pixel_values` of one image.
    pub fn pixel_values(&self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        self.normalize(&self.resize_crop(img)?, device)
    }
}

/// Pillow's bits of fixed-point precision in 8-bit resampling.
pub(super) const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel (a = −0.5).
pub(super) fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole input range: per
/// output pixel the first input index, the tap count and the fixed-point taps.
pub(super) fn pil_coeffs(
    in_size: usize,
    out_size: usize,
) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate towards zero
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kv) in k.iter_mut().enumerate().take(xmax) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kv = w;
            ww += w;
        }
        for (x, kv) in k.iter().enumerate().take(xmax) {
            let v = if ww != 0.0 { kv / ww } else { *kv };
            let f = v * f64::from(1u32 << PRECISION_BITS);
            kk[xx * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    (bounds, kk, ksize)
}

pub(super) fn clip8(ss: i64) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `Image.resize((w, h), Image.BICUBIC)` of Pillow on an RGB image, bit for bit: a
/// horizontal then a vertical 8-bit fixed-point pass (each skipped when its size is
/// unchanged).
pub fn pil_bicubic_resize(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let mut cur: Vec<u8> = img.as_raw().clone();
    let mut cur_w = in_w;
    if out_w != in_w {
        let (bounds, kk, ksize) = pil_coeffs(in_w, out_w);
        let mut out = vec![0u8; out_w * in_h * 3];
        for y in 0..in_h {
            for (xx, &(xmin, xmax)) in bounds.iter().enumerate() {
                let k = &kk[xx * ksize..xx * ksize + xmax];
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, &kv) in k.iter().enumerate() {
                        ss += i64::from(cur[(y * in_w + xmin + x) * 3 + c]) * i64::from(kv);
                    }
                    out[(y * out_w + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = out;
        cur_w = out_w;
    }
    if out_h != in_h {
        let (bounds, kk, ksize) = pil_coeffs(in_h, out_h);
        let mut out = vec![0u8; cur_w * out_h * 3];
        for (yy, &(ymin, ymax)) in bounds.iter().enumerate() {
            let k = &kk[yy * ksize..yy * ksize + ymax];
            for x in 0..cur_w {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (y, &kv) in k.iter().enumerate() {
                        ss += i64::from(cur[((ymin + y) * cur_w + x) * 3 + c]) * i64::from(kv);
                    }
                    out[(yy * cur_w + x) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = out;
    }
    RgbImage::from_raw(cur_w as u32, out_h as u32, cur).expect("buffer size matches")
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------
