//! UNet weights in the original (LDM) layout — the `model.diffusion_model.*` part of a
//! single-file checkpoint — renamed to diffusers' `UNet2DConditionModel` names.
//!
//! The names follow CompVis' / Stability AI's `openaimodel.py` (`input_blocks`,
//! `middle_block`, `output_blocks`, `time_embed`, `label_emb`, `out`); the renaming is held to
//! diffusers' own `single_file_utils.convert_ldm_unet_checkpoint` on the SD 1.x, SD 2.x and
//! SDXL block layouts (`tools/reference/make_unet_keymap.py` →
//! `tests/fixtures/single-file/unet_keymap.json`). Like [`super::ldm_vae`], it relabels a
//! validated file's entries; no tensor is copied.

/// diffusers' name of a resnet's layer.
fn resnet_layer(parts: &[&str]) -> Vec<String> {
    let (head, tail): (&str, &[&str]) = match parts {
        ["in_layers", "0", tail @ ..] => ("norm1", tail),
        ["in_layers", "2", tail @ ..] => ("conv1", tail),
        ["emb_layers", "1", tail @ ..] => ("time_emb_proj", tail),
        ["out_layers", "0", tail @ ..] => ("norm2", tail),
        ["out_layers", "3", tail @ ..] => ("conv2", tail),
        ["skip_connection", tail @ ..] => ("conv_shortcut", tail),
        _ => return parts.iter().map(|s| s.to_string()).collect(),
    };
    std::iter::once(head.to_string())
        .chain(tail.iter().map(|s| s.to_string()))
        .collect()
}

/// diffusers' name of an original-layout UNet tensor (without `model.diffusion_model.`);
/// `layers` is the number of resnets per down block (`layers_per_block`). `None` for a name
/// of no known part.
pub fn diffusers_name(ldm: &str, layers: usize) -> Option<String> {
    let parts: Vec<&str> = ldm.split('.').collect();
    let per = layers + 1;
    let num = |s: &str| s.parse::<usize>().ok();
    let join = |head: String, tail: Vec<String>| {
        std::iter::once(head)
            .chain(tail)
            .collect::<Vec<_>>()
            .join(".")
    };
    let rest = |tail: &[&str]| tail.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Some(match parts.as_slice() {
        ["time_embed", "0", tail @ ..] => join("time_embedding.linear_1".into(), rest(tail)),
        ["time_embed", "2", tail @ ..] => join("time_embedding.linear_2".into(), rest(tail)),
        ["label_emb", "0", "0", tail @ ..] => join("add_embedding.linear_1".into(), rest(tail)),
        ["label_emb", "0", "2", tail @ ..] => join("add_embedding.linear_2".into(), rest(tail)),
        ["out", "0", tail @ ..] => join("conv_norm_out".into(), rest(tail)),
        ["out", "2", tail @ ..] => join("conv_out".into(), rest(tail)),
        ["input_blocks", "0", "0", tail @ ..] => join("conv_in".into(), rest(tail)),
        ["input_blocks", n, "0", "op", tail @ ..] => {
            let n = num(n)?;
            (n % per == 0).then_some(())?;
            join(
                format!("down_blocks.{}.downsamplers.0.conv", n / per - 1),
                rest(tail),
            )
        }
        ["input_blocks", n, k, tail @ ..] => {
            let n = num(n)?.checked_sub(1)?;
            let (i, j) = (n / per, n % per);
            match *k {
                "0" => join(format!("down_blocks.{i}.resnets.{j}"), resnet_layer(tail)),
                "1" => join(format!("down_blocks.{i}.attentions.{j}"), rest(tail)),
                _ => return None,
            }
        }
        ["middle_block", "0", tail @ ..] => join("mid_block.resnets.0".into(), resnet_layer(tail)),
        ["middle_block", "1", tail @ ..] => join("mid_block.attentions.0".into(), rest(tail)),
        ["middle_block", "2", tail @ ..] => join("mid_block.resnets.1".into(), resnet_layer(tail)),
        ["output_blocks", n, k, tail @ ..] => {
            let n = num(n)?;
            let (i, j) = (n / per, n % per);
            match (*k, tail.first()) {
                ("0", _) => join(format!("up_blocks.{i}.resnets.{j}"), resnet_layer(tail)),
                ("1" | "2", Some(&"conv")) => {
                    join(format!("up_blocks.{i}.upsamplers.0"), rest(tail))
                }
                ("1", _) => join(format!("up_blocks.{i}.attentions.{j}"), rest(tail)),
                _ => return None,
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Every name of the SD 1.x, SD 2.x and SDXL layouts is renamed as diffusers'
    /// `convert_ldm_unet_checkpoint` renames it.
    #[test]
    fn names_match_diffusers_on_every_family_layout() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/single-file/unet_keymap.json");
        let map: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for family in ["sd1", "sd2", "sdxl"] {
            let layers = map[family]["layers_per_block"].as_u64().unwrap() as usize;
            let names = map[family]["names"].as_array().unwrap();
            assert!(names.len() > 600, "{family}: {}", names.len());
            for pair in names {
                let (ldm, want) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
                assert_eq!(
                    diffusers_name(ldm, layers).as_deref(),
                    Some(want),
                    "{family}: {ldm}"
                );
            }
        }
    }

    #[test]
    fn unknown_names_are_none() {
        for name in [
            "model_ema.decay",
            "input_blocks.x.0.weight",
            "output_blocks.3.4.conv.weight",
            "input_blocks.4.0.op.weight",
        ] {
            assert_eq!(diffusers_name(name, 2), None, "{name}");
        }
    }
}
