//! Text-encoder weights in the original layouts, renamed to transformers' `CLIPTextModel`
//! names: SD 1.x's `cond_stage_model.transformer.*` (already transformers' names under a
//! prefix) and OpenCLIP's `cond_stage_model.model.*` (SD 2.x; SDXL's second encoder under
//! `conditioner.embedders.1.model.*`), whose fused `attn.in_proj_weight` / `in_proj_bias`
//! become q/k/v slices of the same bytes. Held to diffusers' `convert_ldm_clip_checkpoint`
//! and `convert_open_clip_checkpoint` (`tools/reference/make_text_encoder_ldm.py`).
//! OpenCLIP's `text_projection` is stored transposed relative to transformers and is left
//! out: relabelling cannot transpose (SDXL's pooled projection will need a copy).

use crate::model::checkpoint::{CheckedFile, TensorInfo, dtype_size};
use crate::model::error::ModelError;

/// The entries under `prefix` with the prefix removed (SD 1.x: transformers' own names).
pub fn clip_names(file: &CheckedFile, prefix: &str) -> Result<CheckedFile, ModelError> {
    file.relabel("text encoder", |key, info| {
        Ok(key
            .strip_prefix(prefix)
            .map(|name| (name.to_string(), info.clone()))
            .into_iter()
            .collect())
    })
}

/// transformers' name of an OpenCLIP tensor (after the prefix), for the names that map
/// one to one; the fused q/k/v and the text projection are handled by [`open_clip_names`].
fn open_clip_name(name: &str) -> Option<String> {
    Some(match name {
        "positional_embedding" => "text_model.embeddings.position_embedding.weight".into(),
        "token_embedding.weight" => "text_model.embeddings.token_embedding.weight".into(),
        "ln_final.weight" => "text_model.final_layer_norm.weight".into(),
        "ln_final.bias" => "text_model.final_layer_norm.bias".into(),
        _ => {
            let rest = name.strip_prefix("transformer.resblocks.")?;
            let (layer, rest) = rest.split_once('.')?;
            layer.parse::<usize>().ok()?;
            let (module, param) = rest.rsplit_once('.')?;
            let module = match module {
                "ln_1" => "layer_norm1",
                "ln_2" => "layer_norm2",
                "mlp.c_fc" => "mlp.fc1",
                "mlp.c_proj" => "mlp.fc2",
                "attn.out_proj" => "self_attn.out_proj",
                _ => return None,
            };
            format!("text_model.encoder.layers.{layer}.{module}.{param}")
        }
    })
}

/// The OpenCLIP entries under `prefix` renamed to transformers' names; each fused
/// `in_proj` becomes three entries pointing at its thirds.
pub fn open_clip_names(file: &CheckedFile, prefix: &str) -> Result<CheckedFile, ModelError> {
    let corrupt = |reason: String| ModelError::CorruptWeights {
        path: file.path.clone(),
        reason,
    };
    file.relabel("text encoder", |key, info| {
        let Some(name) = key.strip_prefix(prefix) else {
            return Ok(vec![]);
        };
        if let Some(new) = open_clip_name(name) {
            return Ok(vec![(new, info.clone())]);
        }
        if name == "text_projection" && info.shape.len() == 2 {
            // Stored (width, projection): a matrix applied as x·P, where the
            // transformers layer holds Pᵀ.
            return Ok(vec![(
                "text_projection.weight".to_string(),
                TensorInfo {
                    shape: vec![info.shape[1], info.shape[0]],
                    transposed: true,
                    ..info.clone()
                },
            )]);
        }
        let fused = name
            .strip_prefix("transformer.resblocks.")
            .and_then(|r| r.split_once(".attn.in_proj_"));
        let Some((layer, param)) = fused else {
            // text_projection, logit_scale, attn_mask: not part of the text model.
            return Ok(vec![]);
        };
        let rows = info.shape.first().copied().unwrap_or(0);
        if rows % 3 != 0 || rows == 0 {
            return Err(corrupt(format!(
                "{key} has {rows} rows, not three equal q/k/v parts"
            )));
        }
        let part_shape: Vec<usize> = std::iter::once(rows / 3)
            .chain(info.shape.iter().skip(1).copied())
            .collect();
        let size = dtype_size(&info.dtype)
            .ok_or_else(|| corrupt(format!("{key} has an unknown dtype {}", info.dtype)))?;
        let part_bytes = part_shape.iter().product::<usize>() as u64 * size;
        Ok(["q", "k", "v"]
            .iter()
            .enumerate()
            .map(|(i, qkv)| {
                (
                    format!("text_model.encoder.layers.{layer}.self_attn.{qkv}_proj.{param}"),
                    TensorInfo {
                        dtype: info.dtype.clone(),
                        shape: part_shape.clone(),
                        file_offset: info.file_offset + i as u64 * part_bytes,
                        transposed: false,
                    },
                )
            })
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::{check_safetensors, var_builder};
    use candle_core::{DType, Device};

    use crate::model::single_file_fixture as fixture;

    /// Every tensor diffusers' converters produce is read, equal, from the renamed file.
    #[test]
    fn renamed_text_encoders_read_what_diffusers_converts() {
        let ldm = check_safetensors(&fixture("text_encoders_ldm.safetensors")).unwrap();
        let want = candle_core::safetensors::load(
            fixture("text_encoders_diffusers.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let renamed = [
            (
                "sd1.",
                clip_names(&ldm, "cond_stage_model.transformer.").unwrap(),
            ),
            (
                "sd2.",
                open_clip_names(&ldm, "cond_stage_model.model.").unwrap(),
            ),
        ];
        for (tag, file) in renamed {
            let expected: Vec<&String> = want.keys().filter(|k| k.starts_with(tag)).collect();
            let projection = file.tensors.contains_key("text_projection.weight");
            assert_eq!(projection, tag == "sd2.", "{tag}");
            assert_eq!(
                file.tensors.len(),
                expected.len() + usize::from(projection),
                "{tag}"
            );
            let vb = var_builder(&[file], DType::F32, &Device::Cpu).unwrap();
            for key in expected {
                let t = &want[key];
                let name = &key[tag.len()..];
                let got = vb
                    .get(t.dims(), name)
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
                let diff = (&got - t).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{key}");
            }
            if projection {
                // Read back as the transpose of what the file stores.
                let stored = candle_core::safetensors::load(&ldm.path, &Device::Cpu).unwrap()
                    ["cond_stage_model.model.text_projection"]
                    .clone();
                let got = vb.get((32, 32), "text_projection.weight").unwrap();
                let diff = (&got - stored.t().unwrap()).unwrap().abs().unwrap();
                assert_eq!(diff.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
            }
        }
    }

    #[test]
    fn a_fused_projection_that_does_not_split_in_three_is_named() {
        let mut ldm = check_safetensors(&fixture("text_encoders_ldm.safetensors")).unwrap();
        let key = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias";
        ldm.tensors.get_mut(key).unwrap().shape = vec![95];
        let msg = open_clip_names(&ldm, "cond_stage_model.model.")
            .unwrap_err()
            .to_string();
        assert!(msg.contains(key) && msg.contains("95 rows"), "{msg}");
    }
}
