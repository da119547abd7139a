//! The VAE decode — one frame at a time, checked for NaN and ∞, decoded again in f32 when a
//! half-precision decode overflows — and the decoded tensors as RGB images.

use super::*;

use anyhow::{Context, Result, bail, ensure};
use candle_core::{DType, Device, Tensor};

use crate::model::config::VaeConfig;
use crate::model::error::ModelError;
use crate::model::vae::VaeDecoder;

/// How many values of `t` are NaN or ±∞ (counted on the host, in f32).
pub(super) fn non_finite_count(t: &Tensor) -> Result<usize> {
    let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(crate::model::checkpoint::count_non_finite_f32(&values))
}

/// Video latents `(b, c, f, h, w)` as the batch of their frames `(b·f, c, h, w)`, frame
/// order kept; image latents as they are.
pub(super) fn frames_as_batch(latents: &Tensor) -> Result<Tensor> {
    if latents.rank() != 5 {
        return Ok(latents.clone());
    }
    Ok(crate::model::clip_layout::to_frames(latents)?)
}

impl StableDiffusion {
    /// Decode latents: divide by the scaling factor and run the VAE decoder. Returns the
    /// raw decoder output (`(batch, 3, H, W)`, f32, about −1…1). In pixel space the
    /// latents are the image: returned as f32.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(self.decode_noted(latents)?.0)
    }

    /// [`Self::decode`], checked: an image with NaN or ∞ is an error naming the VAE, except
    /// that a VAE running below f32 whose decode overflowed decodes again in f32 (as
    /// diffusers' `force_upcast`), and the second value says so.
    pub fn decode_noted(&self, latents: &Tensor) -> Result<(Tensor, Option<String>)> {
        let Some((vae, config)) = &self.vae else {
            return Ok((frames_as_batch(latents)?.to_dtype(DType::F32)?, None));
        };
        let z = (frames_as_batch(latents)?.to_dtype(DType::F32)? / config.scaling_factor)?;
        // One frame at a time: a clip's decode in one batch would hold every frame's
        // full-resolution activations at once.
        let decode = |vae: &VaeDecoder, dtype: DType| -> Result<Tensor> {
            let frames = (0..z.dim(0)?)
                .map(|i| {
                    Ok(vae
                        .decode(&z.narrow(0, i, 1)?.to_dtype(dtype)?)?
                        .to_dtype(DType::F32)?)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&frames, 0)?)
        };
        let out = decode(vae, self.vae_dtype)?;
        let bad = non_finite_count(&out)?;
        if bad == 0 {
            return Ok((out, None));
        }
        if let Some(weights) = &self.vae_upcast {
            let vae32 = VaeDecoder::new(weights.var_builder(DType::F32, &self.device)?, config)?;
            let out = decode(&vae32, DType::F32)?;
            if non_finite_count(&out)? == 0 {
                let note = format!(
                    "the VAE decode overflowed in {:?} ({bad} values NaN or ∞); it was decoded again in f32, as diffusers' force_upcast does",
                    self.vae_dtype
                );
                return Ok((out, Some(note)));
            }
        }
        bail!(
            "the VAE decode produced {bad} of {} values that are not finite numbers (NaN or ∞) from finite latents: the VAE weights ({}) are broken",
            out.elem_count(),
            self.vae_origin
        )
    }

    /// diffusers' postprocess of the first image: `(x / 2 + 0.5).clamp(0, 1)`, ×255, rounded.
    pub fn to_rgb(&self, decoded: &Tensor) -> Result<image::RgbImage> {
        to_rgb(decoded)
    }

    /// Every image of a decoded batch (a clip's frames, in order), as [`Self::to_rgb`].
    pub fn to_frames(&self, decoded: &Tensor) -> Result<Vec<image::RgbImage>> {
        (0..decoded.dim(0)?)
            .map(|i| to_rgb(&decoded.narrow(0, i, 1)?))
            .collect()
    }
}

/// `(1, latent_channels, height / f, width / f)`, with a clear error when the size is not a
/// multiple of the VAE factor `f`.
pub fn latent_shape(
    vae: &VaeConfig,
    width: usize,
    height: usize,
) -> Result<(usize, usize, usize, usize)> {
    let f = vae.downscale_factor();
    for (what, value) in [("width", width), ("height", height)] {
        if value == 0 || value % f != 0 {
            return Err(ModelError::BadImageSize {
                what,
                value,
                factor: f,
            }
            .into());
        }
    }
    Ok((1, vae.latent_channels(), height / f, width / f))
}

/// diffusers' `VaeImageProcessor.postprocess(output_type="pil")` for the first image of a
/// decoded batch.
pub fn to_rgb(decoded: &Tensor) -> Result<image::RgbImage> {
    let img = decoded.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let img = match img.rank() {
        4 => img.get(0)?,
        3 => img,
        r => bail!("expected a (batch, 3, H, W) or (3, H, W) image tensor, got rank {r}"),
    };
    let (c, h, w) = img.dims3()?;
    ensure!(c == 3, "expected 3 image channels, got {c}");
    let pixels = ((img / 2.0)? + 0.5)?
        .clamp(0f32, 1f32)?
        .affine(255.0, 0.0)?
        .round()?
        .permute((1, 2, 0))?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bytes: Vec<u8> = pixels.into_iter().map(|v| v as u8).collect();
    image::RgbImage::from_raw(w as u32, h as u32, bytes).context("image buffer size mismatch")
}
