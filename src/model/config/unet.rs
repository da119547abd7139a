//! `unet/config.json` (diffusers `UNet2DConditionModel`), checked and resolved into the
//! block-by-block [`UNetConfig`] the UNet is built from.

use super::*;

/// Stable Diffusion 1.5's `unet/config.json` (runwayml / stable-diffusion-v1-5).
pub const SD15_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;

fn d_down_blocks() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn d_up_blocks() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn d_mid_block() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_unet_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn d_layers2() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn d_one_f64() -> f64 {
    1.0
}
fn d_cross_dim() -> PerBlock<usize> {
    PerBlock::One(1280)
}
fn d_transformer_layers() -> Value {
    Value::from(1)
}
fn d_head_dim() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn d_default() -> String {
    "default".into()
}
fn d_positional() -> String {
    "positional".into()
}
fn d_kernel3() -> usize {
    3
}
fn d_only_cross() -> Value {
    Value::Bool(false)
}

/// `unet/config.json` as diffusers writes it (the fields that matter here).
#[derive(Debug, Clone, Deserialize)]
pub struct UNetJson {
    /// Latent side length the model was trained at.
    #[serde(default)]
    pub sample_size: Option<PerBlock<usize>>,
    #[serde(default = "d_in4")]
    pub in_channels: usize,
    #[serde(default = "d_in4")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "d_down_blocks")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid_block")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_up_blocks")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_only_cross")]
    pub only_cross_attention: Value,
    #[serde(default = "d_unet_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers2")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "d_one_usize")]
    pub downsample_padding: usize,
    #[serde(default = "d_one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "d_eps5")]
    pub norm_eps: f64,
    #[serde(default = "d_cross_dim")]
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "d_transformer_layers")]
    pub transformer_layers_per_block: Value,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<Value>,
    #[serde(default)]
    pub encoder_hid_dim: Option<Value>,
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<Value>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default)]
    pub upcast_attention: Option<bool>,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default = "d_kernel3")]
    pub conv_in_kernel: usize,
    #[serde(default = "d_kernel3")]
    pub conv_out_kernel: usize,
    #[serde(default = "d_default")]
    pub attention_type: String,
    #[serde(default)]
    pub class_embeddings_concat: bool,
    #[serde(default)]
    pub mid_block_only_cross_attention: Option<bool>,
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    #[serde(default = "d_one_f64")]
    pub resnet_out_scale_factor: f64,
}

/// How one UNet block is built.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetBlock {
    /// Output channels of the block.
    pub out_channels: usize,
    /// Resnet layers (down blocks; up blocks use one more).
    pub layers: usize,
    /// `Some(depth)`: each resnet is followed by a transformer of `depth` layers.
    pub cross_attn: Option<usize>,
    /// Attention heads of those transformers.
    pub heads: usize,
    /// Width of the encoder states fed to cross-attention.
    pub cross_attention_dim: usize,
}

/// SDXL's added conditioning (`addition_embed_type: "text_time"`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextTimeConfig {
    /// Sinusoidal width per time id (256 for SDXL).
    pub time_embed_dim: usize,
    /// Input width of `add_embedding` (pooled text width + 6 × time_embed_dim).
    pub input_dim: usize,
}

/// The resolved UNet configuration the model is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Channels out.
    pub out_channels: usize,
    /// Trained latent size (height, width), if the config says.
    pub sample_size: Option<(usize, usize)>,
    /// `2x - 1` on the input.
    pub center_input_sample: bool,
    /// Sinusoid order of the time projection.
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the time projection.
    pub freq_shift: f64,
    /// Down blocks, top (full resolution) first.
    pub down: Vec<UNetBlock>,
    /// Up blocks, in execution order (lowest resolution first).
    pub up: Vec<UNetBlock>,
    /// Mid block transformer depth, heads and cross-attention width.
    pub mid: UNetBlock,
    /// Width of the time embedding.
    pub time_embed_dim: usize,
    /// Downsampler padding.
    pub downsample_padding: usize,
    /// Output scale of the mid block resnets.
    pub mid_block_scale_factor: f64,
    /// Group-norm groups.
    pub norm_num_groups: usize,
    /// Group-norm epsilon.
    pub norm_eps: f64,
    /// Linear (true) or 1×1 conv projections in the transformers.
    pub use_linear_projection: bool,
    /// Compute attention scores in f32 even when running in f16.
    pub upcast_attention: bool,
    /// SDXL added conditioning.
    pub text_time: Option<TextTimeConfig>,
}

impl UNetConfig {
    /// Parse and resolve `unet/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let json: UNetJson = read_json(path)?;
        Self::from_json(&json, path)
    }

    /// Resolve a parsed config; `file` is named in errors.
    pub fn from_json(j: &UNetJson, file: &Path) -> Result<Self> {
        let n = block_count(file, &j.block_out_channels)?;
        check_block_type_counts(j, file, n)?;
        check_implemented_kinds(j, file)?;
        check_null_options(j, file)?;
        check_disabled_features(j, file)?;
        let groups = norm_groups(file, j.norm_num_groups, &j.block_out_channels)?;
        let blocks = BlockSettings::resolve(j, file, n)?;
        let down = blocks.down_blocks(&j.down_block_types, file)?;
        let up = blocks.up_blocks(&j.up_block_types, file)?;
        let mid = blocks.mid_block(file)?;
        let time_embed_dim = j.time_embedding_dim.unwrap_or(j.block_out_channels[0] * 4);
        let text_time = text_time_config(j, file)?;
        let sample_size = latent_sample_size(j, file)?;
        Ok(Self {
            in_channels: j.in_channels,
            out_channels: j.out_channels,
            sample_size,
            center_input_sample: j.center_input_sample,
            flip_sin_to_cos: j.flip_sin_to_cos,
            freq_shift: j.freq_shift,
            down,
            up,
            mid,
            time_embed_dim,
            downsample_padding: j.downsample_padding,
            mid_block_scale_factor: j.mid_block_scale_factor,
            norm_num_groups: groups,
            norm_eps: j.norm_eps,
            use_linear_projection: j.use_linear_projection,
            upcast_attention: j.upcast_attention.unwrap_or(false),
            text_time,
        })
    }

    /// Width of the encoder states the UNet expects (that of the first cross-attention block).
    pub fn context_dim(&self) -> usize {
        self.down
            .iter()
            .find(|b| b.cross_attn.is_some())
            .unwrap_or(&self.mid)
            .cross_attention_dim
    }
}

/// `down_block_types` and `up_block_types` must name one type per block.
fn check_block_type_counts(j: &UNetJson, file: &Path, n: usize) -> Result<()> {
    for (field, types) in [
        ("down_block_types", &j.down_block_types),
        ("up_block_types", &j.up_block_types),
    ] {
        if types.len() != n {
            return Err(unsupported(
                file,
                field,
                format!("has {} entries but block_out_channels has {n}", types.len()),
            ));
        }
    }
    Ok(())
}

/// The named choices (activation, time embedding, attention, mid block) of which one
/// value each is implemented.
fn check_implemented_kinds(j: &UNetJson, file: &Path) -> Result<()> {
    require_value(file, "act_fn", &j.act_fn, "silu")?;
    require_value(
        file,
        "resnet_time_scale_shift",
        &j.resnet_time_scale_shift,
        "default",
    )?;
    require_value(
        file,
        "time_embedding_type",
        &j.time_embedding_type,
        "positional",
    )?;
    require_value(file, "attention_type", &j.attention_type, "default")?;
    match j.mid_block_type.as_deref() {
        Some("UNetMidBlock2DCrossAttn") => Ok(()),
        other => Err(unsupported(
            file,
            "mid_block_type",
            format!("{other:?} (only UNetMidBlock2DCrossAttn is implemented)"),
        )),
    }
}

/// The optional extras (class and encoder-hidden conditioning, LCM, extra activations)
/// implemented only as absent (`null`).
fn check_null_options(j: &UNetJson, file: &Path) -> Result<()> {
    require_null(file, "class_embed_type", j.class_embed_type.is_some())?;
    require_null(
        file,
        "num_class_embeds",
        is_set(j.num_class_embeds.as_ref()),
    )?;
    require_null(file, "encoder_hid_dim", is_set(j.encoder_hid_dim.as_ref()))?;
    require_null(
        file,
        "time_cond_proj_dim (LCM-distilled UNet)",
        j.time_cond_proj_dim.is_some(),
    )?;
    require_null(file, "timestep_post_act", j.timestep_post_act.is_some())?;
    require_null(
        file,
        "cross_attention_norm",
        j.cross_attention_norm.is_some(),
    )?;
    require_null(
        file,
        "reverse_transformer_layers_per_block",
        is_set(j.reverse_transformer_layers_per_block.as_ref()),
    )?;
    match &j.time_embedding_act_fn {
        Some(act) => Err(unsupported(
            file,
            "time_embedding_act_fn",
            format!("'{act}' (only null is implemented)"),
        )),
        None => Ok(()),
    }
}

/// The architecture switches implemented only in their default setting.
fn check_disabled_features(j: &UNetJson, file: &Path) -> Result<()> {
    require_false(file, "dual_cross_attention", j.dual_cross_attention)?;
    require_false(file, "class_embeddings_concat", j.class_embeddings_concat)?;
    require_false(file, "resnet_skip_time_act", j.resnet_skip_time_act)?;
    if j.resnet_out_scale_factor != 1.0 {
        return Err(unsupported(
            file,
            "resnet_out_scale_factor",
            "only 1.0 is implemented",
        ));
    }
    require_false(
        file,
        "mid_block_only_cross_attention",
        j.mid_block_only_cross_attention == Some(true),
    )?;
    let only_cross = match &j.only_cross_attention {
        Value::Bool(b) => *b,
        Value::Array(a) => a.iter().any(|v| v.as_bool() != Some(false)),
        _ => true,
    };
    require_false(file, "only_cross_attention", only_cross)?;
    if j.conv_in_kernel != 3 || j.conv_out_kernel != 3 {
        return Err(unsupported(
            file,
            "conv_in_kernel/conv_out_kernel",
            "only 3 is implemented",
        ));
    }
    Ok(())
}

/// `transformer_layers_per_block`: one depth for every block, or one per block.
fn transformer_depths(value: &Value, n: usize, file: &Path) -> Result<Vec<usize>> {
    match value {
        Value::Number(x) => {
            let d = x.as_u64().ok_or_else(|| {
                unsupported(
                    file,
                    "transformer_layers_per_block",
                    "is not a positive integer",
                )
            })?;
            Ok(vec![d as usize; n])
        }
        Value::Array(a) if a.len() == n => a
            .iter()
            .map(|v| v.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                unsupported(
                    file,
                    "transformer_layers_per_block",
                    "nested per-layer lists are not implemented",
                )
            }),
        _ => Err(unsupported(
            file,
            "transformer_layers_per_block",
            format!("expected an integer or a list of {n} integers"),
        )),
    }
}

/// The two block types one side of the UNet is built from, as `*_block_types` names them.
struct BlockKinds {
    /// `down` or `up`.
    side: &'static str,
    /// The type whose resnets are each followed by a transformer.
    cross_attn: &'static str,
    /// The type with resnets only.
    plain: &'static str,
}

const DOWN_KINDS: BlockKinds = BlockKinds {
    side: "down",
    cross_attn: "CrossAttnDownBlock2D",
    plain: "DownBlock2D",
};

const UP_KINDS: BlockKinds = BlockKinds {
    side: "up",
    cross_attn: "CrossAttnUpBlock2D",
    plain: "UpBlock2D",
};

/// The per-block settings of the UNet, one entry per block, top (full resolution) first.
struct BlockSettings {
    out_channels: Vec<usize>,
    layers: Vec<usize>,
    cross_attention_dims: Vec<usize>,
    heads: Vec<usize>,
    transformer_depths: Vec<usize>,
}

impl BlockSettings {
    /// Resolve the one-or-per-block fields for `n` blocks.
    fn resolve(j: &UNetJson, file: &Path, n: usize) -> Result<Self> {
        let layers = j.layers_per_block.resolve(n, file, "layers_per_block")?;
        let cross_attention_dims = j
            .cross_attention_dim
            .resolve(n, file, "cross_attention_dim")?;
        // diffusers: `num_attention_heads = num_attention_heads or attention_head_dim` — the
        // historical `attention_head_dim` field holds the number of heads.
        let heads = match &j.num_attention_heads {
            Some(h) => h.resolve(n, file, "num_attention_heads")?,
            None => j
                .attention_head_dim
                .resolve(n, file, "attention_head_dim")?,
        };
        let transformer_depths = transformer_depths(&j.transformer_layers_per_block, n, file)?;
        Ok(Self {
            out_channels: j.block_out_channels.clone(),
            layers,
            cross_attention_dims,
            heads,
            transformer_depths,
        })
    }

    /// Block `i` of one side, of type `kind`, built from the settings of block `r`.
    fn block(
        &self,
        file: &Path,
        kinds: &BlockKinds,
        i: usize,
        kind: &str,
        r: usize,
    ) -> Result<UNetBlock> {
        let cross_attn = if kind == kinds.cross_attn {
            Some(self.transformer_depths[r])
        } else if kind == kinds.plain {
            None
        } else {
            return Err(unsupported(
                file,
                &format!("{}_block_types[{i}]", kinds.side),
                format!(
                    "'{kind}' (only {} and {} are implemented)",
                    kinds.cross_attn, kinds.plain
                ),
            ));
        };
        let (out_channels, heads) = (self.out_channels[r], self.heads[r]);
        if cross_attn.is_some() && !heads_divide(heads, out_channels) {
            return Err(unsupported(
                file,
                "attention_head_dim",
                format!(
                    "{heads} heads do not divide {out_channels} channels of {} block {i}",
                    kinds.side
                ),
            ));
        }
        Ok(UNetBlock {
            out_channels,
            layers: self.layers[r],
            cross_attn,
            heads,
            cross_attention_dim: self.cross_attention_dims[r],
        })
    }

    /// The down blocks from `down_block_types`, top first.
    fn down_blocks(&self, types: &[String], file: &Path) -> Result<Vec<UNetBlock>> {
        let block = |(i, kind): (usize, &String)| self.block(file, &DOWN_KINDS, i, kind, i);
        types.iter().enumerate().map(block).collect()
    }

    /// The up blocks from `up_block_types`, in execution order: up block `i` mirrors down
    /// block `n - 1 - i` and has one resnet more.
    fn up_blocks(&self, types: &[String], file: &Path) -> Result<Vec<UNetBlock>> {
        let last = self.out_channels.len() - 1;
        let block = |(i, kind): (usize, &String)| {
            let b = self.block(file, &UP_KINDS, i, kind, last - i)?;
            Ok(UNetBlock {
                layers: b.layers + 1,
                ..b
            })
        };
        types.iter().enumerate().map(block).collect()
    }

    /// The mid block: one attention between two resnets, with the lowest block's settings.
    fn mid_block(&self, file: &Path) -> Result<UNetBlock> {
        let last = self.out_channels.len() - 1;
        let mid = UNetBlock {
            out_channels: self.out_channels[last],
            layers: 1,
            cross_attn: Some(self.transformer_depths[last]),
            heads: self.heads[last],
            cross_attention_dim: self.cross_attention_dims[last],
        };
        if !heads_divide(mid.heads, mid.out_channels) {
            return Err(unsupported(
                file,
                "attention_head_dim",
                "the mid block heads do not divide its channels",
            ));
        }
        Ok(mid)
    }
}

/// SDXL's added conditioning (`addition_embed_type: "text_time"`) and its two widths.
fn text_time_config(j: &UNetJson, file: &Path) -> Result<Option<TextTimeConfig>> {
    match j.addition_embed_type.as_deref() {
        None => Ok(None),
        Some("text_time") => {
            let time_embed_dim = j.addition_time_embed_dim.ok_or_else(|| {
                unsupported(
                    file,
                    "addition_time_embed_dim",
                    "is required with addition_embed_type \"text_time\"",
                )
            })?;
            let input_dim = j.projection_class_embeddings_input_dim.ok_or_else(|| {
                unsupported(
                    file,
                    "projection_class_embeddings_input_dim",
                    "is required with addition_embed_type \"text_time\"",
                )
            })?;
            Ok(Some(TextTimeConfig {
                time_embed_dim,
                input_dim,
            }))
        }
        Some(other) => Err(unsupported(
            file,
            "addition_embed_type",
            format!("'{other}' (only null and \"text_time\" are implemented)"),
        )),
    }
}

/// `sample_size` as (height, width): one side for a square, or `[h, w]`.
fn latent_sample_size(j: &UNetJson, file: &Path) -> Result<Option<(usize, usize)>> {
    match &j.sample_size {
        None => Ok(None),
        Some(PerBlock::One(s)) => Ok(Some((*s, *s))),
        Some(PerBlock::Each(v)) if v.len() == 2 => Ok(Some((v[0], v[1]))),
        Some(PerBlock::Each(_)) => Err(unsupported(
            file,
            "sample_size",
            "expected an integer or [h, w]",
        )),
    }
}
