//! Will a run fit in this machine's memory? An estimate from the image size, the model's
//! configs and its weight files, made before anything is loaded, so that a size no machine
//! can hold is refused in a moment instead of after minutes of swapping.
//!
//! The estimate is deliberately simple and on the safe side for real models: the weights
//! (their files' sizes, doubled for half-precision files, which the CPU runs in f32) plus
//! the larger of the VAE decoder's full-resolution activations (three f32 maps as wide as
//! its second block, which is upsampled into full resolution: 256 channels for Stable
//! Diffusion, whose decoder at 512×512 measured +0.64 GB over the loaded model — this
//! gives 0.81 GB) and the UNet's (a CFG batch of two, as wide as its first block at the
//! latent size, twelve such buffers alive at once; attention is computed in blocks and
//! adds no quadratic term). The widths and the VAE's downsampling come from the folder's
//! `unet/` and `vae/` configs (a pixel-space model has no VAE and runs its UNet at full
//! size); a model whose configs cannot be read yet (a hub model not downloaded) counts as
//! Stable Diffusion.

use crate::field::{Field, FieldError, NAME};
use crate::model::ModelSource;
use anyhow::Result;
use std::path::Path;

/// What sizes a model's activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Widths {
    /// Channels of the UNet's first block.
    pub unet: u64,
    /// Pixels per latent along each side (8 for Stable Diffusion's VAE, 1 without a VAE).
    pub factor: u64,
    /// Channels of the VAE decoder at full resolution; `None` without a VAE.
    pub vae: Option<u64>,
}

impl Widths {
    /// Stable Diffusion 1.x / 2.x / SDXL.
    pub const SD: Widths = Widths {
        unet: 320,
        factor: 8,
        vae: Some(256),
    };

    /// The widths of a local pipeline folder, from its configs; Stable Diffusion's when
    /// they cannot be read.
    pub fn of(model: &ModelSource) -> Widths {
        let ModelSource::Local(dir) = model else {
            return Self::SD;
        };
        #[derive(serde::Deserialize)]
        struct Blocks {
            block_out_channels: Vec<u64>,
        }
        let channels = |component: &str| -> Option<Vec<u64>> {
            let path = dir.join(component).join("config.json");
            let v = crate::model::config::read_json::<Blocks>(&path)
                .ok()?
                .block_out_channels;
            (!v.is_empty()).then_some(v)
        };
        let Some(unet) = channels("unet") else {
            return Self::SD;
        };
        let has_vae = dir.join("vae").is_dir();
        match (has_vae, channels("vae")) {
            (false, _) => Widths {
                unet: unet[0],
                factor: 1,
                vae: None,
            },
            (true, Some(vae)) => Widths {
                unet: unet[0],
                factor: 1 << (vae.len() - 1).min(6),
                vae: Some(vae[1.min(vae.len() - 1)]),
            },
            (true, None) => Widths {
                unet: unet[0],
                ..Self::SD
            },
        }
    }
}

/// Bytes of the largest activations of a `width`×`height` run of a model of these widths;
/// a video model's UNet runs every one of the clip's `frames` in one batch (its VAE decodes
/// them one at a time).
pub fn activation_bytes(widths: Widths, width: usize, height: usize, frames: usize) -> u64 {
    let pixels = (width * height) as u64;
    let vae = widths.vae.map_or(0, |c| pixels * c * 4 * 3);
    let unet =
        pixels / (widths.factor * widths.factor) * 2 * widths.unet * 4 * 12 * frames.max(1) as u64;
    vae.max(unet)
}

/// Bytes the weights of a local pipeline folder take once loaded (0 when unknown: a hub
/// model not downloaded yet).
pub fn weight_bytes(model: &ModelSource) -> u64 {
    let ModelSource::Local(dir) = model else {
        return 0;
    };
    if dir.is_file() {
        // A single-file checkpoint: its tensors as f32.
        return crate::model::checkpoint::check_safetensors(dir).map_or(0, |f| {
            f.tensors
                .values()
                .map(|t| t.shape.iter().product::<usize>() as u64 * 4)
                .sum()
        });
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| largest_weights(&e.path()))
        .sum()
}

/// The largest weight file of a component folder (a folder may hold both an f32 file and
/// its `fp16` variant; one of them is loaded), doubled when it is half precision.
fn largest_weights(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let len = e.metadata().ok()?.len();
            name.ends_with(".safetensors")
                .then(|| if name.contains("fp16") { len * 2 } else { len })
        })
        .max()
        .unwrap_or(0)
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

/// Refuse a `width`×`height` run of `model` (a clip of `frames`; 1 for an image) that
/// needs more memory than `available`.
pub fn check_fits_in(
    model: &ModelSource,
    width: usize,
    height: usize,
    frames: usize,
    available: u64,
) -> Result<(), FieldError> {
    let widths = Widths::of(model);
    let (weights, act) = (
        weight_bytes(model),
        activation_bytes(widths, width, height, frames),
    );
    let need = weights + act;
    if need <= available {
        return Ok(());
    }
    let clip = if frames > 1 {
        format!(" and {frames} frames")
    } else {
        String::new()
    };
    let smaller = if frames > 1 {
        "a smaller size or fewer frames"
    } else {
        "a smaller size"
    };
    Err(FieldError::new(
        Field::Width,
        format!(
            "{NAME} {width} with height {height}{clip} needs about {:.1} GB of memory ({:.1} GB of weights, {:.1} GB for the largest activations) but this machine has {:.1} GB; choose {smaller}",
            gb(need),
            gb(weights),
            gb(act),
            gb(available)
        ),
    ))
}

/// Refuse a `width`×`height` run of `model` (a clip of `frames`; 1 for an image) that
/// cannot fit in this machine's memory.
pub fn check_fits(model: &ModelSource, width: usize, height: usize, frames: usize) -> Result<()> {
    match crate::proc_info::memory_total_bytes() {
        Some(total) => Ok(check_fits_in(model, width, height, frames, total)?),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_diffusion_sizes_fit_and_absurd_ones_do_not() {
        let m = ModelSource::Local("/nonexistent".into());
        let gib = 1u64 << 30;
        assert!(check_fits_in(&m, 512, 512, 1, 8 * gib).is_ok());
        assert!(check_fits_in(&m, 1024, 1024, 1, 8 * gib).is_ok());
        let e = check_fits_in(&m, 8192, 8192, 1, 24 * gib).unwrap_err();
        assert_eq!(e.field, Field::Width);
        assert!(
            e.worded("--width")
                .starts_with("--width 8192 with height 8192 needs about 206"),
            "{e}"
        );
        // A clip's UNet activations grow with its frames: 64 frames at 512² do not fit in
        // 4 GiB although one image does.
        assert!(check_fits_in(&m, 512, 512, 1, 4 * gib).is_ok());
        let e = check_fits_in(&m, 512, 512, 64, 4 * gib).unwrap_err();
        assert!(
            e.worded("--width")
                .contains("512 and 64 frames needs about"),
            "{e}"
        );
        assert!(
            e.worded("--width")
                .ends_with("a smaller size or fewer frames"),
            "{e}"
        );
        // At 256²: one frame's UNet term (32² latents × CFG 2 × 320 channels × 12 f32
        // buffers) is below the VAE's, sixteen frames' is above it (the VAE decodes one
        // frame at a time).
        let unet_one = 32 * 32 * 2 * 320 * 4 * 12;
        assert_eq!(activation_bytes(Widths::SD, 256, 256, 16), 16 * unet_one);
        assert!(activation_bytes(Widths::SD, 256, 256, 1) > unet_one);
        // The estimate at 512×512 is above the measured 0.64 GB, not wildly so.
        let act = activation_bytes(Widths::SD, 512, 512, 1) as f64 / 1e9;
        assert!((0.64..1.0).contains(&act), "{act}");
    }

    #[test]
    fn widths_come_from_the_folder_configs() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tiny = ModelSource::Local(repo.join("tests/fixtures/tiny-sd"));
        // unet (32, 64); vae (16, 16, 16, 32): factor 8, 16 channels at full size.
        assert_eq!(
            Widths::of(&tiny),
            Widths {
                unet: 32,
                factor: 8,
                vae: Some(16)
            }
        );
        // Pixel space: the UNet (16, 32, 64) runs at full size, no VAE.
        let shapes = ModelSource::Local(repo.join("assets/models/shapes"));
        let w = Widths::of(&shapes);
        assert_eq!(
            w,
            Widths {
                unet: 16,
                factor: 1,
                vae: None
            }
        );
        assert_eq!(
            activation_bytes(w, 64, 64, 1),
            64 * 64 * 2 * 16 * 4 * 12,
            "the UNet's buffers at full size"
        );
        // Unknown folders count as Stable Diffusion.
        assert_eq!(
            Widths::of(&ModelSource::Local("/nonexistent".into())),
            Widths::SD
        );
        // The tiny pipeline at 4096² needs far less than Stable Diffusion would.
        let gib = 1u64 << 30;
        assert!(check_fits_in(&tiny, 4096, 4096, 1, 8 * gib).is_ok());
        let m = ModelSource::Local("/nonexistent".into());
        assert!(check_fits_in(&m, 4096, 4096, 1, 8 * gib).is_err());
    }

    #[test]
    fn the_weights_of_a_folder_count_the_loaded_variant() {
        let dir = tempfile::tempdir().unwrap();
        let unet = dir.path().join("unet");
        std::fs::create_dir(&unet).unwrap();
        std::fs::write(
            unet.join("diffusion_pytorch_model.fp16.safetensors"),
            vec![0u8; 100],
        )
        .unwrap();
        std::fs::write(unet.join("config.json"), b"{}").unwrap();
        let vae = dir.path().join("vae");
        std::fs::create_dir(&vae).unwrap();
        std::fs::write(
            vae.join("diffusion_pytorch_model.safetensors"),
            vec![0u8; 30],
        )
        .unwrap();
        assert_eq!(weight_bytes(&ModelSource::Local(dir.path().into())), 230);
    }
}
