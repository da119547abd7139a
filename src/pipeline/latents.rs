//! Initial latents from a safetensors file (instead of seeded noise).

use crate::field::{Field, FieldError, NAME};
use crate::model::StableDiffusion;
use crate::sampler::noise::SplitMix64;
use crate::sampler::noise_motion::NoiseMotion;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use std::path::Path;

fn problem(text: String) -> anyhow::Error {
    FieldError::new(Field::InitLatents, text).into()
}

/// Mix a clip's independent noise `(1, C, F, H, W)` with noise all frames share:
/// `√share·ε_shared + √(1−share)·ε_f` (still N(0, 1) per value); the shared part is drawn
/// from `seed` on its own stream — with `pyramid > 0` as multi-resolution noise
/// ([`crate::sampler::noise::add_pyramid`], as the module was trained), and with a
/// `motion`, moving across the frames: drawn on [`NoiseMotion::canvas`] and each frame's
/// window cut from it ([`crate::sampler::noise_motion`]).
pub fn mix_shared(
    noise: &Tensor,
    share: f64,
    seed: u64,
    motion: Option<NoiseMotion>,
    pyramid: f64,
) -> Result<Tensor> {
    let dims = noise.dims().to_vec();
    anyhow::ensure!(dims.len() == 5, "shared noise is for clips, got {dims:?}");
    let (c, frames, h, w) = (dims[1], dims[2], dims[3], dims[4]);
    let motion = motion.unwrap_or(NoiseMotion::STILL);
    let (ch, cw) = motion.canvas((h, w));
    let mut canvas = SplitMix64::new(seed ^ SHARED_STREAM).normals(c * ch * cw);
    if pyramid > 0.0 {
        let mut grids = SplitMix64::new(seed ^ PYRAMID_STREAM);
        crate::sampler::noise::add_pyramid(&mut canvas, (c, ch, cw), pyramid, || {
            grids.normals(1)[0] as f64
        });
    }
    // Frame-major windows, laid out as (1, C, F, H, W).
    let windows = motion.frames(&canvas, c, (h, w), frames);
    let plane = h * w;
    let mut shared = Vec::with_capacity(c * frames * plane);
    for k in 0..c {
        for win in &windows {
            shared.extend_from_slice(&win[k * plane..(k + 1) * plane]);
        }
    }
    let shared = Tensor::from_vec(shared, dims, noise.device())?;
    let share = share.clamp(0.0, 1.0);
    Ok(((noise * (1.0 - share).sqrt())? + shared.affine(share.sqrt(), 0.0)?)?)
}

/// Keeps the pyramid's grids apart from the shared noise's draws.
const PYRAMID_STREAM: u64 = 0x9a1d_0000_0000_0002;

/// Keeps the shared noise's draws apart from the clip's own.
const SHARED_STREAM: u64 = 0x5ba2_ed00_0000_0001;

/// Read the f32 NCHW tensor `latents` from a safetensors file.
pub fn read_latents(path: &Path) -> Result<Tensor> {
    let shown = path.display();
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        problem(format!(
            "cannot read {NAME} {shown} (expected a safetensors file): {e}"
        ))
    })?;
    let Some(x) = tensors.get("latents") else {
        let mut names: Vec<_> = tensors.keys().cloned().collect();
        names.sort();
        return Err(problem(format!(
            "{shown} has no tensor named 'latents' (found: {})",
            names.join(", ")
        )));
    };
    if !matches!(x.rank(), 4 | 5) || x.dim(0)? != 1 {
        return Err(problem(format!(
            "{shown}: 'latents' must be a (1, C, H, W) tensor (an image) or (1, C, F, H, W) (a clip), got shape {:?}",
            x.dims()
        )));
    }
    if x.dtype() != DType::F32 {
        return Err(problem(format!(
            "{shown}: 'latents' is {:?}; give f32 latents",
            x.dtype()
        )));
    }
    Ok(x.clone())
}

/// Latents to start from must be finite and of the size of the scheduler's initial noise
/// (scaled by its σ, whose values stay within about 6σ): anything far beyond cannot give a
/// finite image.
pub fn check_values(x: &Tensor, path: &Path, init_sigma: f64) -> Result<()> {
    let shown = path.display();
    let x = x.to_dtype(DType::F64)?.flatten_all()?;
    let finite = x.sqr()?.sum_all()?.to_scalar::<f64>()?.is_finite();
    if !finite {
        return Err(problem(format!(
            "{shown} holds values that are not finite numbers (NaN or ∞)"
        )));
    }
    let largest = x.abs()?.max(0)?.to_scalar::<f64>()?;
    let bound = 100.0 * init_sigma;
    if largest > bound {
        return Err(problem(format!(
            "{shown} holds values up to {largest:e}, beyond {bound:e} = 100 × the scheduler's initial noise σ ({init_sigma:.4}; noise at σ stays within about 6σ): pass latents already scaled by σ"
        )));
    }
    Ok(())
}

/// The image size of latents `x` from `path`: the requested one, which must match the
/// latents' shape, or the one the shape gives.
pub fn check_shape(
    sd: &StableDiffusion,
    x: &Tensor,
    path: &Path,
    width: Option<usize>,
    height: Option<usize>,
    frames: Option<usize>,
) -> Result<(usize, usize)> {
    let scale = sd.vae_scale();
    let dims = x.dims().to_vec();
    let rank = if sd.is_video() { 5 } else { 4 };
    if dims.len() != rank {
        let layout = if sd.is_video() {
            "[batch, channels, frames, height, width] (a video model's clip)"
        } else {
            "[batch, channels, height, width]"
        };
        return Err(problem(format!(
            "{} has shape {dims:?} but this model's latents are {layout}",
            path.display()
        )));
    }
    let size = (
        width.unwrap_or(dims[rank - 1] * scale),
        height.unwrap_or(dims[rank - 2] * scale),
    );
    let frames = if sd.is_video() {
        Some(frames.unwrap_or(dims[2]))
    } else {
        frames
    };
    let want = sd.latent_dims(size.0, size.1, frames)?;
    if dims != want {
        let what = match frames {
            Some(f) => format!("a {}x{} clip of {f} frames", size.0, size.1),
            None => format!("a {}x{} image", size.0, size.1),
        };
        return Err(problem(format!(
            "{} has shape {dims:?} but {what} with this model needs {want:?}; give a matching size and frame count, or other latents",
            path.display(),
        )));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame `f`'s channel-0 plane of a `(1, C, F, H, W)` clip.
    fn plane(x: &Tensor, f: usize) -> Vec<f32> {
        x.narrow(2, f, 1)
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Variance of the means of `k × k` blocks of a `(s, s)` plane.
    fn block_mean_variance(p: &[f32], s: usize, k: usize) -> f64 {
        let means: Vec<f32> = (0..s / k)
            .flat_map(|by| (0..s / k).map(move |bx| (by, bx)))
            .map(|(by, bx)| {
                let mut sum = 0.0;
                for y in 0..k {
                    for x in 0..k {
                        sum += p[(by * k + y) * s + bx * k + x];
                    }
                }
                sum / (k * k) as f32
            })
            .collect();
        crate::sampler::noise::variance(&means)
    }

    #[test]
    fn shared_pyramid_noise_has_its_power_in_large_blobs_and_still_moves() {
        let own = crate::sampler::noise::gaussian(3, &[1, 3, 4, 32, 32], &Device::Cpu).unwrap();
        let right = Some(NoiseMotion::Shift { dx: 12, dy: 0 });
        let plain = mix_shared(&own, 1.0, 5, right, 0.0).unwrap();
        let pyramid = mix_shared(&own, 1.0, 5, right, 0.9).unwrap();
        let (p0, p3) = (plane(&pyramid, 0), plane(&pyramid, 3));
        // Unit variance either way; the pyramid's 8×8 block means vary ≳ 10× more.
        for x in [&plain, &pyramid] {
            let v = crate::sampler::noise::variance(&plane(x, 0));
            assert!((0.7..1.3).contains(&v), "{v}");
        }
        let (w, p) = (
            block_mean_variance(&plane(&plain, 0), 32, 8),
            block_mean_variance(&p0, 32, 8),
        );
        assert!(p > 10.0 * w, "pyramid {p}, white {w}");
        // The whole canvas moves: frame 0's (y, x) is the last frame's (y, x + 12).
        for y in 0..32 {
            assert_eq!(&p0[y * 32..y * 32 + 20], &p3[y * 32 + 12..(y + 1) * 32]);
        }
        // Without motion or pyramid, the shared part is the one draw of every frame.
        let still = mix_shared(&own, 1.0, 5, None, 0.0).unwrap();
        assert_eq!(plane(&still, 0), plane(&still, 3));
    }
}
