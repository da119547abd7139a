//! A single-file checkpoint in the original (LDM) layout as pipeline [`Parts`]: the family
//! detected from its keys ([`crate::model::single_file`]), each component's entries renamed to
//! diffusers' names without reading them ([`crate::model::ldm_unet`], [`crate::model::ldm_vae`],
//! [`crate::model::ldm_text`]), configs read off the shapes ([`crate::model::infer_config`]), the built-in
//! CLIP tokenizer, and the family's published scheduler.

use std::path::Path;

use anyhow::Result;

use crate::field::{Fix, Note};
use crate::model::checkpoint::{self, CheckedFile};
use crate::model::error::ModelError;
use crate::model::infer_config::{self, Heads, TextFamily, UNetFamily};
use crate::model::parts::{Parts, TextPart, VaePart, Weights};
use crate::model::single_file::{self, CheckpointFamily, Detected};
use crate::model::tokenizer::{ClipPad, ClipTokenizer};
use crate::model::{ldm_text, ldm_unet, ldm_vae};
use crate::sampler::{PredictionType, SchedulerConfig};

/// `scheduler_config.json` of runwayml/stable-diffusion-v1-5.
pub const SD1_SCHEDULER: &str = r#"{"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "clip_sample": false, "trained_betas": null, "prediction_type": "epsilon"}"#;
/// `scheduler_config.json` of stabilityai/stable-diffusion-2-1 (768 px, v-prediction).
pub const SD2_SCHEDULER: &str = r#"{"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "clip_sample": false, "trained_betas": null, "prediction_type": "v_prediction"}"#;
/// `scheduler_config.json` of stabilityai/stable-diffusion-xl-base-1.0.
pub const SDXL_SCHEDULER: &str = r#"{"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "interpolation_type": "linear", "sample_max_value": 1.0, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "clip_sample": false, "timestep_spacing": "leading", "trained_betas": null, "use_karras_sigmas": false, "prediction_type": "epsilon"}"#;

/// One text encoder of a family: where it sits and how it is read.
struct TextSlot {
    prefix: &'static str,
    open_clip: bool,
    family: TextFamily,
    pad: ClipPad,
}

const CLIP_L: TextFamily = TextFamily {
    activation: "quick_gelu",
    drop_last: 0,
    projection: false,
};

fn text_slots(family: CheckpointFamily) -> Vec<TextSlot> {
    match family {
        CheckpointFamily::Sd1 => vec![TextSlot {
            prefix: single_file::SD1_TEXT_PREFIX,
            open_clip: false,
            family: CLIP_L,
            pad: ClipPad::EndOfText,
        }],
        // SD 2.x runs OpenCLIP's penultimate layer: the last is never used.
        CheckpointFamily::Sd2 => vec![TextSlot {
            prefix: single_file::SD2_TEXT_PREFIX,
            open_clip: true,
            family: TextFamily {
                activation: "gelu",
                drop_last: 1,
                projection: false,
            },
            pad: ClipPad::Exclamation,
        }],
        CheckpointFamily::SdxlBase | CheckpointFamily::SdxlRefiner => vec![
            TextSlot {
                prefix: "conditioner.embedders.0.transformer.",
                open_clip: false,
                family: CLIP_L,
                pad: ClipPad::EndOfText,
            },
            TextSlot {
                prefix: "conditioner.embedders.1.model.",
                open_clip: true,
                family: TextFamily {
                    activation: "gelu",
                    drop_last: 0,
                    projection: true,
                },
                pad: ClipPad::Exclamation,
            },
        ],
    }
}

/// The parts of the single-file checkpoint `path`; `vae`: a VAE file used instead of the
/// checkpoint's own (required when it has none); `prediction`: what the UNet predicts
/// when the user says (else the family's default, or `v` when the file is marked `v_pred`).
pub fn parts(path: &Path, vae: Option<&Path>, prediction: Option<PredictionType>) -> Result<Parts> {
    single_file::refuse_pickle(path, crate::model::error::PickleKind::Model)?;
    let file = checkpoint::check_safetensors(path)?;
    let found = single_file::detect(&file)?;
    refuse_unsupported(path, &found)?;
    let family = found.family;
    let text = text_parts(&file, family)?;
    let marked_v = file.tensors.contains_key("v_pred");
    let (schedule, defaults) = family_defaults(family, marked_v, prediction)?;
    let unet = unet_names(&file)?;
    let unet_config = infer_config::unet(
        &unet,
        UNetFamily {
            pooled: text.get(1).and_then(|t| t.config.projection_dim),
            ..defaults.unet
        },
    )?;
    let vae = vae_part(&file, &found, vae, defaults.scaling)?;
    let mut notes = vec![Note::new(format!(
        "{}: {}",
        path.display(),
        found.describe()
    ))];
    if family == CheckpointFamily::Sd2 && prediction.is_none() && !marked_v {
        notes.push(
            Note::new("SD 2.x: v-prediction at 768×768 assumed (the 2.0 / 2.1 768-px models)")
                .with_fix(Fix::EpsilonPrediction),
        );
    }
    Ok(Parts {
        origin: path.display().to_string(),
        unet_file: path.to_path_buf(),
        unet_config,
        video: None,
        motion: None,
        unet: Weights::plain(vec![unet]),
        vae: Some(vae),
        text,
        schedule,
        force_zeros_for_empty_prompt: matches!(family, CheckpointFamily::SdxlBase),
        notes,
    })
}

/// The text encoders of a family's checkpoint, renamed, configured and with the built-in
/// tokenizer padded the family's way.
fn text_parts(file: &CheckedFile, family: CheckpointFamily) -> Result<Vec<TextPart>> {
    let mut text = vec![];
    for slot in text_slots(family) {
        let renamed = if slot.open_clip {
            ldm_text::open_clip_names(file, slot.prefix)?
        } else {
            ldm_text::clip_names(file, slot.prefix)?
        };
        let config = infer_config::clip(&renamed, slot.family)?;
        let mut tokenizer = ClipTokenizer::builtin(slot.pad)?;
        tokenizer.clamp_max_len(config.max_position_embeddings);
        text.push(TextPart {
            config,
            config_file: file.path.clone(),
            weights: Weights::plain(vec![renamed]),
            tokenizer,
        });
    }
    Ok(text)
}

/// What a family decides that the tensors do not say.
struct FamilyDefaults {
    /// The UNet's heads, native size and attention upcast (`pooled` filled in later).
    unet: UNetFamily,
    /// The VAE's latent scaling factor.
    scaling: f64,
}

/// The family's published scheduler (v-prediction when the file is marked `v_pred` or
/// the user says) and its other defaults. SD 2.x: the 768-px models predict v, the 512-px
/// base ε.
fn family_defaults(
    family: CheckpointFamily,
    marked_v: bool,
    prediction: Option<PredictionType>,
) -> Result<(SchedulerConfig, FamilyDefaults)> {
    let (scheduler, sample_size, scaling, heads) = match family {
        CheckpointFamily::Sd1 => (SD1_SCHEDULER, 64, 0.18215, Heads::Fixed(8)),
        CheckpointFamily::Sd2 => (SD2_SCHEDULER, 96, 0.18215, Heads::Width(64)),
        _ => (SDXL_SCHEDULER, 128, 0.13025, Heads::Width(64)),
    };
    let mut schedule = SchedulerConfig::from_json(scheduler)?;
    if marked_v {
        schedule.prediction_type = PredictionType::VPrediction;
    }
    if let Some(p) = prediction {
        schedule.prediction_type = p;
    }
    let sd2 = family == CheckpointFamily::Sd2;
    let sample_size = if sd2 && schedule.prediction_type == PredictionType::Epsilon {
        64
    } else {
        sample_size
    };
    let defaults = FamilyDefaults {
        unet: UNetFamily {
            heads,
            sample_size,
            upcast_attention: sd2,
            pooled: None,
        },
        scaling,
    };
    Ok((schedule, defaults))
}

/// The checkpoint's own VAE, or the `--vae` file instead; one of them must exist.
fn vae_part(
    file: &CheckedFile,
    found: &Detected,
    vae: Option<&Path>,
    scaling: f64,
) -> Result<VaePart> {
    let renamed = match (vae, found.has_vae) {
        (Some(v), _) => crate::model::parts::read_vae_file(v)?,
        (None, true) => ldm_vae::to_diffusers(file, single_file::VAE_PREFIX)?,
        (None, false) => {
            return Err(ModelError::NoVae {
                path: file.path.clone(),
            }
            .into());
        }
    };
    let config = infer_config::vae(
        &renamed,
        infer_config::VaeFamily {
            scaling_factor: scaling,
            force_upcast: true,
            groups: 32,
        },
    )?;
    Ok(VaePart {
        config,
        weights: Weights::plain(vec![renamed]),
    })
}

/// Refiners and inpainting models: named, not half-loaded.
fn refuse_unsupported(path: &Path, found: &Detected) -> Result<(), ModelError> {
    let unsupported = |field: &str, reason: String| ModelError::Unsupported {
        file: path.to_path_buf(),
        field: field.into(),
        reason,
    };
    if found.family == CheckpointFamily::SdxlRefiner {
        return Err(unsupported(
            "family",
            "an SDXL refiner checkpoint (refiners are not supported yet; load the SDXL base model)"
                .into(),
        ));
    }
    match found.in_channels {
        Some(9) => Err(unsupported(
            "UNet input channels",
            "9: an inpainting checkpoint; inpainting is not supported yet".into(),
        )),
        _ => Ok(()),
    }
}

/// The UNet's entries under diffusers' names.
fn unet_names(file: &CheckedFile) -> Result<CheckedFile, ModelError> {
    let prefix = single_file::UNET_PREFIX;
    // Layers per block: input_blocks 1..=layers are the first block's.
    let layers = file
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.strip_prefix("input_blocks."))
        .filter(|rest| rest.contains(".0.op.") || rest.contains(".0.conv."))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .min()
        .map_or(2, |first_down| first_down - 1);
    file.relabel("UNet", |key, info| {
        Ok(key
            .strip_prefix(prefix)
            .and_then(|ldm| ldm_unet::diffusers_name(ldm, layers))
            .map(|name| (name, info.clone()))
            .into_iter()
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::single_file_fixture as fixture;

    #[test]
    fn sd2_files_predict_v_at_768_unless_told() {
        let v = parts(&fixture("tiny-sd2.safetensors"), None, None).unwrap();
        assert_eq!(v.schedule.prediction_type, PredictionType::VPrediction);
        assert_eq!(v.unet_config.sample_size, Some((96, 96)));
        assert!(v.unet_config.upcast_attention);
        assert!(
            v.notes
                .iter()
                .any(|n| n.fix == Some(Fix::EpsilonPrediction))
        );
        // 24 resblocks in the file, 23 used; OpenCLIP's gelu.
        assert_eq!(v.text[0].config.num_hidden_layers, 23);
        let eps = parts(
            &fixture("tiny-sd2.safetensors"),
            None,
            Some(PredictionType::Epsilon),
        )
        .unwrap();
        assert_eq!(eps.schedule.prediction_type, PredictionType::Epsilon);
        assert_eq!(eps.unet_config.sample_size, Some((64, 64)));
        assert_eq!(eps.notes.len(), 1, "{:?}", eps.notes);
    }

    #[test]
    fn sdxl_files_read_both_encoders_and_the_added_conditioning() {
        let p = parts(&fixture("tiny-sdxl.safetensors"), None, None).unwrap();
        assert!(p.is_sdxl() && p.force_zeros_for_empty_prompt);
        assert_eq!(p.unet_config.sample_size, Some((128, 128)));
        let (te1, te2) = (&p.text[0].config, &p.text[1].config);
        assert_eq!((te1.hidden_size, te2.hidden_size), (16, 24));
        assert_eq!((te1.projection_dim, te2.projection_dim), (None, Some(20)));
        let tt = p.unet_config.text_time.as_ref().unwrap();
        assert_eq!((tt.time_embed_dim, tt.input_dim), (8, 20 + 6 * 8));
        assert_eq!(p.unet_config.context_dim(), 16 + 24);
        assert_eq!(p.vae.as_ref().unwrap().config.scaling_factor, 0.13025);
        assert_eq!(
            p.schedule.timestep_spacing,
            Some(crate::sampler::schedule::TimestepSpacing::Leading)
        );
    }

    #[test]
    fn a_file_marked_v_pred_predicts_v() {
        let dir = tempfile::tempdir().unwrap();
        let mut tensors = candle_core::safetensors::load(
            fixture("tiny-sd1.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let plain = parts(&fixture("tiny-sd1.safetensors"), None, None).unwrap();
        assert_eq!(plain.schedule.prediction_type, PredictionType::Epsilon);
        // The marker some v-prediction fine-tunes carry: an empty tensor named v_pred.
        let marker =
            candle_core::Tensor::zeros(0, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        tensors.insert("v_pred".into(), marker);
        let marked = dir.path().join("marked.safetensors");
        candle_core::safetensors::save(&tensors, &marked).unwrap();
        let p = parts(&marked, None, None).unwrap();
        assert_eq!(p.schedule.prediction_type, PredictionType::VPrediction);
    }
}
