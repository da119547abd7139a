//! Single-file checkpoints in the original (LDM) layout, as AUTOMATIC1111, Forge and ComfyUI
//! keep them: which Stable Diffusion family a file is, read from its tensor names alone.
//!
//! The prefixes are those of the original repositories (CompVis/stable-diffusion,
//! Stability-AI/stablediffusion, Stability-AI/generative-models), which diffusers'
//! `single_file_utils.infer_diffusers_model_type` also keys on.

use std::collections::BTreeSet;

use crate::model::checkpoint::CheckedFile;
use crate::model::error::ModelError;

/// The UNet's prefix in every family.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// SD 1.x's text encoder: transformers' CLIP text model (ViT-L/14).
pub const SD1_TEXT_PREFIX: &str = "cond_stage_model.transformer.";
/// SD 2.x's text encoder: OpenCLIP ViT-H/14.
pub const SD2_TEXT_PREFIX: &str = "cond_stage_model.model.";
/// SDXL's text encoders: `.0.` CLIP ViT-L/14 (base only), `.1.` OpenCLIP ViT-bigG/14.
pub const SDXL_TEXT_PREFIX: &str = "conditioner.embedders.";
/// The VAE's prefix in every family.
pub const VAE_PREFIX: &str = "first_stage_model.";

/// A Stable Diffusion family, as its single-file checkpoints are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFamily {
    /// SD 1.x (1.4, 1.5 and their fine-tunes).
    Sd1,
    /// SD 2.x (2.0, 2.1; 512 px ε-prediction or 768 px v-prediction).
    Sd2,
    /// SDXL base (two text encoders).
    SdxlBase,
    /// SDXL refiner (OpenCLIP only; not a text-to-image model on its own).
    SdxlRefiner,
}

impl CheckpointFamily {
    /// The family's name, as users know it.
    pub fn name(self) -> &'static str {
        match self {
            CheckpointFamily::Sd1 => "SD 1.x",
            CheckpointFamily::Sd2 => "SD 2.x",
            CheckpointFamily::SdxlBase => "SDXL base",
            CheckpointFamily::SdxlRefiner => "SDXL refiner",
        }
    }

    /// The diffusers pipeline class that loads the family's single files.
    pub fn pipeline_class(self) -> &'static str {
        match self {
            CheckpointFamily::Sd1 | CheckpointFamily::Sd2 => "StableDiffusionPipeline",
            CheckpointFamily::SdxlBase => "StableDiffusionXLPipeline",
            CheckpointFamily::SdxlRefiner => "StableDiffusionXLImg2ImgPipeline",
        }
    }
}

/// What a single-file checkpoint was recognised as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The family.
    pub family: CheckpointFamily,
    /// How many tensors the file holds.
    pub tensors: usize,
    /// The UNet's stored dtype (the most common one among its tensors).
    pub dtype: String,
    /// The UNet's input channels (4 for text-to-image, 9 for inpainting models).
    pub in_channels: Option<usize>,
    /// Whether the file carries its VAE.
    pub has_vae: bool,
}

impl Detected {
    /// One line: "SD 1.x checkpoint (1 131 tensors, F16, UNet input 4 channels, with its VAE)".
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} tensors", self.tensors), self.dtype.clone()];
        if let Some(c) = self.in_channels {
            parts.push(match c {
                9 => "an inpainting UNet (9 input channels)".to_string(),
                c => format!("UNet input {c} channels"),
            });
        }
        parts.push(
            if self.has_vae {
                "with its VAE"
            } else {
                "no VAE"
            }
            .into(),
        );
        format!("{} checkpoint ({})", self.family.name(), parts.join(", "))
    }
}

/// Whether `path` is named as a PyTorch pickle (`.ckpt`, `.pt`, `.pth`, `.bin`, `.pkl`),
/// which adiff never opens: loading one can run code.
pub fn is_pickle(path: &std::path::Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "ckpt" | "pt" | "pth" | "bin" | "pkl"))
}

/// The [`ModelError::Pickle`] refusal of `path` when it is a pickle (given as `kind`).
pub fn refuse_pickle(
    path: &std::path::Path,
    kind: crate::model::error::PickleKind,
) -> Result<(), ModelError> {
    if is_pickle(path) {
        return Err(ModelError::Pickle {
            path: path.to_path_buf(),
            kind,
        });
    }
    Ok(())
}

/// Whether a file is named `*.safetensors` (any case).
pub fn is_safetensors(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Recognise the family of a checked safetensors file from its tensor names.
pub fn detect(file: &CheckedFile) -> Result<Detected, ModelError> {
    let has = |prefix: &str| file.tensors.keys().any(|k| k.starts_with(prefix));
    let text = if has(SD1_TEXT_PREFIX) {
        Some(CheckpointFamily::Sd1)
    } else if has(SD2_TEXT_PREFIX) {
        Some(CheckpointFamily::Sd2)
    } else if has(&format!("{SDXL_TEXT_PREFIX}1.")) {
        Some(CheckpointFamily::SdxlBase)
    } else if has(&format!("{SDXL_TEXT_PREFIX}0.model.")) {
        Some(CheckpointFamily::SdxlRefiner)
    } else {
        None
    };
    let (Some(family), true) = (text, has(UNET_PREFIX)) else {
        return Err(ModelError::UnknownCheckpoint {
            path: file.path.clone(),
            found: top_prefixes(file),
            hint: hint(file),
        });
    };
    let mut dtypes: Vec<(usize, &str)> = vec![];
    for info in file
        .tensors
        .iter()
        .filter(|(k, _)| k.starts_with(UNET_PREFIX))
        .map(|(_, i)| i)
    {
        match dtypes.iter_mut().find(|(_, d)| *d == info.dtype) {
            Some((n, _)) => *n += 1,
            None => dtypes.push((1, &info.dtype)),
        }
    }
    let dtype = dtypes
        .iter()
        .max_by_key(|(n, _)| *n)
        .map_or_else(String::new, |(_, d)| d.to_string());
    let in_channels = file
        .tensors
        .get(&format!("{UNET_PREFIX}input_blocks.0.0.weight"))
        .and_then(|i| i.shape.get(1).copied());
    Ok(Detected {
        family,
        tensors: file.tensors.len(),
        dtype,
        in_channels,
        has_vae: has(VAE_PREFIX),
    })
}

/// The first two dotted parts of the file's names, at most six, for an error message.
pub(crate) fn top_prefixes(file: &CheckedFile) -> String {
    let prefixes: BTreeSet<String> = file
        .tensors
        .keys()
        .map(|k| {
            let mut parts = k.splitn(3, '.');
            let a = parts.next().unwrap_or_default();
            match parts.next() {
                Some(b) if parts.next().is_some() => format!("{a}.{b}.*"),
                _ => format!("{a}.*"),
            }
        })
        .collect();
    if prefixes.is_empty() {
        return "no tensors at all".into();
    }
    let shown: Vec<&str> = prefixes.iter().take(6).map(String::as_str).collect();
    let more = prefixes.len().saturating_sub(shown.len());
    let mut s = format!("its names start with {}", shown.join(", "));
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

/// What a safetensors file is, for a front end that is handed one (a dropped file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// A single-file checkpoint, described.
    Checkpoint(String),
    /// A LoRA (kohya, PEFT or LyCORIS names).
    Lora,
    /// A VAE on its own (original or diffusers layout).
    Vae,
}

fn looks_like_lora(file: &CheckedFile) -> bool {
    file.tensors.keys().any(|k| {
        k.starts_with("lora_")
            || k.contains(".lora_down.")
            || k.contains(".lora_A.")
            || k.contains(".lora.down.")
            || k.contains(".hada_w1_a")
            || k.contains(".lokr_w")
    })
}

/// Tell a checkpoint, a LoRA and a VAE apart by their keys (the header only is read); the
/// error says what the file is not.
pub fn classify(path: &std::path::Path) -> anyhow::Result<FileKind> {
    refuse_pickle(path, crate::model::error::PickleKind::Model)?;
    let file = crate::model::checkpoint::check_safetensors(path)?;
    if looks_like_lora(&file) {
        return Ok(FileKind::Lora);
    }
    match detect(&file) {
        Ok(found) => Ok(FileKind::Checkpoint(found.describe())),
        Err(_) if crate::model::ldm_vae::as_diffusers(&file).is_ok() => Ok(FileKind::Vae),
        Err(not_a_checkpoint) => Err(not_a_checkpoint.into()),
    }
}

/// What the file looks like instead, when that is clear.
fn hint(file: &CheckedFile) -> String {
    let any = |f: &dyn Fn(&str) -> bool| file.tensors.keys().any(|k| f(k));
    if looks_like_lora(file) {
        "; it looks like a LoRA, which is applied on top of a checkpoint, not loaded as one".into()
    } else if any(&|k| k.starts_with("encoder.") || k.starts_with("decoder.")) {
        "; it looks like a VAE on its own, not a whole checkpoint".into()
    } else if any(&|k| k.starts_with("down_blocks.") || k.starts_with("conv_in.")) {
        "; it looks like one diffusers component (a UNet or VAE file): pass the pipeline folder that holds it".into()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::TensorInfo;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn file(names: &[(&str, &str, &[usize])]) -> CheckedFile {
        let tensors: BTreeMap<String, TensorInfo> = names
            .iter()
            .map(|(n, d, s)| {
                (
                    n.to_string(),
                    TensorInfo {
                        dtype: d.to_string(),
                        shape: s.to_vec(),
                        file_offset: 0,
                        transposed: false,
                    },
                )
            })
            .collect();
        CheckedFile {
            path: PathBuf::from("m.safetensors"),
            tensors,
            metadata: Default::default(),
        }
    }

    const UNET_IN: &str = "model.diffusion_model.input_blocks.0.0.weight";
    const UNET_OUT: &str = "model.diffusion_model.out.2.weight";

    #[test]
    fn families_are_told_apart_by_their_text_encoders() {
        let cases: [(&str, CheckpointFamily); 4] = [
            (
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                CheckpointFamily::Sd1,
            ),
            (
                "cond_stage_model.model.token_embedding.weight",
                CheckpointFamily::Sd2,
            ),
            (
                "conditioner.embedders.1.model.token_embedding.weight",
                CheckpointFamily::SdxlBase,
            ),
            (
                "conditioner.embedders.0.model.token_embedding.weight",
                CheckpointFamily::SdxlRefiner,
            ),
        ];
        for (text_key, family) in cases {
            let f = file(&[
                (UNET_IN, "F16", &[320, 4, 3, 3]),
                (UNET_OUT, "F16", &[4, 320, 3, 3]),
                ("model.diffusion_model.time_embed.0.bias", "F32", &[1280]),
                (text_key, "F32", &[49408, 768]),
                (
                    "first_stage_model.decoder.conv_out.weight",
                    "F16",
                    &[3, 128, 3, 3],
                ),
            ]);
            let d = detect(&f).unwrap();
            assert_eq!(d.family, family, "{text_key}");
            assert_eq!(d.tensors, 5);
            assert_eq!(d.dtype, "F16");
            assert_eq!(d.in_channels, Some(4));
            assert!(d.has_vae);
        }
    }

    #[test]
    fn the_description_names_what_was_found() {
        let f = file(&[
            (UNET_IN, "BF16", &[320, 9, 3, 3]),
            (
                "cond_stage_model.transformer.text_model.final_layer_norm.weight",
                "F32",
                &[768],
            ),
        ]);
        assert_eq!(
            detect(&f).unwrap().describe(),
            "SD 1.x checkpoint (2 tensors, BF16, an inpainting UNet (9 input channels), no VAE)"
        );
    }

    #[test]
    fn unknown_files_name_the_prefixes_and_what_they_look_like() {
        let lora = file(&[
            (
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                "F16",
                &[4, 320],
            ),
            (
                "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha",
                "F16",
                &[],
            ),
        ]);
        let msg = detect(&lora).unwrap_err().to_string();
        for want in [
            "model.diffusion_model.",
            "cond_stage_model.transformer.",
            "cond_stage_model.model.",
            "conditioner.embedders.",
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.*",
            "looks like a LoRA",
        ] {
            assert!(msg.contains(want), "{want} not in {msg}");
        }
        let vae = file(&[("decoder.conv_out.weight", "F32", &[3, 128, 3, 3])]);
        let msg = detect(&vae).unwrap_err().to_string();
        assert!(msg.contains("a VAE on its own"), "{msg}");
        // A UNet without a known text encoder is not guessed at.
        let unet_only = file(&[(UNET_IN, "F16", &[320, 4, 3, 3])]);
        let msg = detect(&unet_only).unwrap_err().to_string();
        assert!(msg.contains("model.diffusion_model.*"), "{msg}");
        let empty = file(&[]);
        assert!(
            detect(&empty)
                .unwrap_err()
                .to_string()
                .contains("no tensors at all")
        );
    }
}
