//! UNet weights in the original (LDM) layout — the `model.diffusion_model.*` part of a
//! single-file checkpoint — renamed to diffusers' `UNet2DConditionModel` names.
//!
//! The names follow CompVis' / Stability AI's `openaimodel.py` (`input_blocks`,
//! `middle_block`, `output_blocks`, `time_embed`, `label_emb`, `out`); the renaming is held to
//! diffusers' own `single_file_utils.convert_ldm_unet_checkpoint` on the SD 1.x, SD 2.x and
//! SDXL block layouts (`tools/reference/make_unet_keymap.py` →
//! `tests/fixtures/single-file/unet_keymap.json`). Like [`crate::model::ldm_vae`], it relabels a
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

/// A kohya LoRA module stem that names a UNet layer in the original layout, as SDXL
/// trainers write them (`input_blocks_4_1_transformer_blocks_0_attn1_to_k`), as the
/// diffusers module path with underscores (`down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k`);
/// `None` when it names no block layer.
pub fn kohya_stem(stem: &str, layers: usize) -> Option<String> {
    let (head, rest) = ["input_blocks", "middle_block", "output_blocks"]
        .iter()
        .find_map(|h| Some((*h, stem.strip_prefix(h)?.strip_prefix('_')?)))?;
    let mut parts = rest.splitn(if head == "middle_block" { 2 } else { 3 }, '_');
    let n = if head == "middle_block" {
        None
    } else {
        Some(parts.next()?.parse::<usize>().ok()?)
    };
    let k: usize = parts.next()?.parse().ok()?;
    let tail = parts.next().unwrap_or("");
    let block = match n {
        Some(n) => format!("{head}.{n}.{k}"),
        None => format!("{head}.{k}"),
    };
    let dotted = match tail {
        "in_layers_0" | "in_layers_2" | "emb_layers_1" | "out_layers_0" | "out_layers_3" => {
            let (a, b) = tail.rsplit_once('_')?;
            Some(format!("{a}.{b}"))
        }
        "skip_connection" | "op" | "conv" | "" => Some(tail.to_string()),
        _ => None,
    };
    match dotted {
        Some(d) => {
            let ldm = [block.as_str(), d.as_str(), "weight"]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(".");
            let name = diffusers_name(&ldm, layers)?;
            Some(name.strip_suffix(".weight")?.replace('.', "_"))
        }
        None => {
            // A layer inside an attention block: the block moves, the layer's path stays.
            let name = diffusers_name(&format!("{block}.x.weight"), layers)?;
            let prefix = name.strip_suffix("x.weight")?;
            Some(format!("{}{tail}", prefix.replace('.', "_")))
        }
    }
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
    fn kohya_stems_in_the_original_layout_name_diffusers_modules() {
        for (stem, want) in [
            (
                "input_blocks_4_1_transformer_blocks_0_attn1_to_k",
                Some("down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k"),
            ),
            (
                "output_blocks_2_1_proj_in",
                Some("up_blocks_0_attentions_2_proj_in"),
            ),
            (
                "middle_block_1_transformer_blocks_0_ff_net_0_proj",
                Some("mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj"),
            ),
            (
                "middle_block_2_in_layers_2",
                Some("mid_block_resnets_1_conv1"),
            ),
            (
                "input_blocks_3_0_op",
                Some("down_blocks_0_downsamplers_0_conv"),
            ),
            (
                "output_blocks_5_2_conv",
                Some("up_blocks_1_upsamplers_0_conv"),
            ),
            ("input_blocks_0_0", Some("conv_in")),
            ("down_blocks_0_attentions_0_proj_in", None),
            ("input_blocks_x_1_proj_in", None),
        ] {
            assert_eq!(kohya_stem(stem, 2).as_deref(), want, "{stem}");
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
