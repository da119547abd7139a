//! Will a run fit in this machine's memory? An estimate from the image size and the weight
//! files, made before anything is loaded, so that a size no machine can hold is refused in
//! a moment instead of after minutes of swapping.
//!
//! The estimate is deliberately simple and on the safe side for real models: the weights
//! (their files' sizes, doubled for half-precision files, which the CPU runs in f32) plus
//! the larger of the VAE decoder's full-resolution activations (three 256-channel f32
//! maps: Stable Diffusion's decoder at 512×512 measured +0.64 GB over the loaded model,
//! this gives 0.81 GB) and the UNet's (a CFG batch of two, 320 channels at 1/8 of the size,
//! twelve such buffers alive at once; attention is computed in blocks and adds no
//! quadratic term).

use crate::field::{Field, FieldError, NAME};
use crate::model::ModelSource;
use anyhow::Result;
use std::path::Path;

/// Bytes of the largest activations of a `width`×`height` run.
pub fn activation_bytes(width: usize, height: usize) -> u64 {
    let pixels = (width * height) as u64;
    let vae = pixels * 256 * 4 * 3;
    let unet = pixels / 64 * 2 * 320 * 4 * 12;
    vae.max(unet)
}

/// Bytes the weights of a local pipeline folder take once loaded (0 when unknown: a hub
/// model not downloaded yet).
pub fn weight_bytes(model: &ModelSource) -> u64 {
    let ModelSource::Local(dir) = model else {
        return 0;
    };
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

/// Refuse a `width`×`height` run of `model` that needs more memory than `available`.
pub fn check_fits_in(
    model: &ModelSource,
    width: usize,
    height: usize,
    available: u64,
) -> Result<(), FieldError> {
    let (weights, act) = (weight_bytes(model), activation_bytes(width, height));
    let need = weights + act;
    if need <= available {
        return Ok(());
    }
    Err(FieldError::new(
        Field::Width,
        format!(
            "{NAME} {width} with height {height} needs about {:.1} GB of memory ({:.1} GB of weights, {:.1} GB for the largest activations) but this machine has {:.1} GB; choose a smaller size",
            gb(need),
            gb(weights),
            gb(act),
            gb(available)
        ),
    ))
}

/// Refuse a `width`×`height` run of `model` that cannot fit in this machine's memory.
pub fn check_fits(model: &ModelSource, width: usize, height: usize) -> Result<()> {
    match crate::proc_info::memory_total_bytes() {
        Some(total) => Ok(check_fits_in(model, width, height, total)?),
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
        assert!(check_fits_in(&m, 512, 512, 8 * gib).is_ok());
        assert!(check_fits_in(&m, 1024, 1024, 8 * gib).is_ok());
        let e = check_fits_in(&m, 8192, 8192, 24 * gib).unwrap_err();
        assert_eq!(e.field, Field::Width);
        assert!(
            e.worded("--width")
                .starts_with("--width 8192 with height 8192 needs about 206"),
            "{e}"
        );
        // The estimate at 512×512 is above the measured 0.64 GB, not wildly so.
        let act = activation_bytes(512, 512) as f64 / 1e9;
        assert!((0.64..1.0).contains(&act), "{act}");
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
