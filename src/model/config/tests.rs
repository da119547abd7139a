use super::*;

fn unet(json: &str) -> Result<UNetConfig> {
    let j: UNetJson = serde_json::from_str(json).unwrap();
    UNetConfig::from_json(&j, Path::new("unet/config.json"))
}

const SD15_UNET: &str = r#"{
  "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
  "out_channels": 4, "sample_size": 64,
  "up_block_types": ["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"]
}"#;

#[test]
fn sd15_unet_resolves() {
    let c = unet(SD15_UNET).unwrap();
    assert_eq!(c.down.len(), 4);
    assert_eq!(c.down[0].cross_attn, Some(1));
    assert_eq!(c.down[3].cross_attn, None);
    assert_eq!(c.down[0].heads, 8);
    assert_eq!(c.up[0].out_channels, 1280);
    assert_eq!(c.up[0].cross_attn, None);
    assert_eq!(c.up[3].out_channels, 320);
    assert_eq!(c.up[3].layers, 3);
    assert_eq!(c.time_embed_dim, 1280);
    assert_eq!(c.context_dim(), 768);
    assert_eq!(c.sample_size, Some((64, 64)));
    assert!(c.text_time.is_none());
}

#[test]
fn sdxl_unet_resolves_text_time() {
    let c = unet(
        r#"{"addition_embed_type": "text_time", "addition_time_embed_dim": 256,
        "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280],
        "cross_attention_dim": 2048,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "projection_class_embeddings_input_dim": 2816, "transformer_layers_per_block": [1, 2, 10],
        "use_linear_projection": true, "sample_size": 128}"#,
    )
    .unwrap();
    assert_eq!(c.mid.cross_attn, Some(10));
    assert_eq!(c.mid.heads, 20);
    assert_eq!(c.up[0].cross_attn, Some(10));
    assert_eq!(c.up[1].cross_attn, Some(2));
    assert_eq!(
        c.text_time,
        Some(TextTimeConfig {
            time_embed_dim: 256,
            input_dim: 2816
        })
    );
}

#[test]
fn unsupported_fields_are_named() {
    let msg = format!("{:#}", unet(r#"{"down_block_types": ["SimpleCrossAttnDownBlock2D","DownBlock2D","DownBlock2D","DownBlock2D"]}"#).unwrap_err());
    assert!(msg.contains("down_block_types[0]"), "{msg}");
    let msg = format!(
        "{:#}",
        unet(r#"{"addition_embed_type": "image"}"#).unwrap_err()
    );
    assert!(msg.contains("addition_embed_type"), "{msg}");
    let msg = format!("{:#}", unet(r#"{"time_cond_proj_dim": 256}"#).unwrap_err());
    assert!(msg.contains("time_cond_proj_dim"), "{msg}");
    let msg = format!("{:#}", unet(r#"{"layers_per_block": [1, 2]}"#).unwrap_err());
    assert!(msg.contains("layers_per_block"), "{msg}");
}

#[test]
fn clip_activation_and_projection() {
    let j: ClipJson = serde_json::from_str(
        r#"{"hidden_act": "gelu", "hidden_size": 1280, "num_attention_heads": 20,
            "architectures": ["CLIPTextModelWithProjection"], "projection_dim": 1280}"#,
    )
    .unwrap();
    let c = ClipConfig::from_json(&j, Path::new("c.json")).unwrap();
    assert_eq!(c.activation, ClipActivation::Gelu);
    assert_eq!(c.projection_dim, Some(1280));
    let j: ClipJson = serde_json::from_str(r#"{"hidden_act": "relu"}"#).unwrap();
    let msg = format!(
        "{:#}",
        ClipConfig::from_json(&j, Path::new("c.json")).unwrap_err()
    );
    assert!(msg.contains("hidden_act"), "{msg}");
}

#[test]
fn vae_defaults_and_factor() {
    let j: VaeJson = serde_json::from_str(
        r#"{"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
        "down_block_types": ["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"]}"#,
    )
    .unwrap();
    let c = VaeConfig::from_json(&j, Path::new("vae/config.json")).unwrap();
    assert_eq!(c.downscale_factor(), 8);
    assert_eq!(c.scaling_factor, 0.18215);
    assert!(c.candle.use_quant_conv && c.candle.use_post_quant_conv);
}
