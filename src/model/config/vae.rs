//! `vae/config.json` (diffusers `AutoencoderKL`), checked and resolved into [`VaeConfig`].

use super::*;

fn d_vae_channels() -> Vec<usize> {
    vec![64]
}
fn d_in3() -> usize {
    3
}
fn d_scaling() -> f64 {
    0.18215
}
fn d_vae_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_vae_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}

/// `vae/config.json` (diffusers `AutoencoderKL`).
#[derive(Debug, Clone, Deserialize)]
pub struct VaeJson {
    #[serde(default = "d_in3")]
    pub in_channels: usize,
    #[serde(default = "d_in3")]
    pub out_channels: usize,
    #[serde(default = "d_vae_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_vae_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_vae_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_one_usize")]
    pub layers_per_block: usize,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_in4")]
    pub latent_channels: usize,
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default)]
    pub latents_mean: Option<Value>,
    #[serde(default)]
    pub latents_std: Option<Value>,
    #[serde(default = "d_true")]
    pub force_upcast: bool,
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
}

/// The resolved VAE configuration.
#[derive(Debug, Clone)]
pub struct VaeConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// What candle's `AutoEncoderKL` is built from.
    pub candle: AutoEncoderKLConfig,
    /// Latents are multiplied by this after encoding and divided by it before decoding.
    pub scaling_factor: f64,
    /// diffusers runs this VAE in f32 even in an f16 pipeline.
    pub force_upcast: bool,
}

impl VaeConfig {
    /// Parse and resolve `vae/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let json: VaeJson = read_json(path)?;
        Self::from_json(&json, path)
    }

    /// Resolve a parsed config; `file` is named in errors.
    pub fn from_json(j: &VaeJson, file: &Path) -> Result<Self> {
        let n = block_count(file, &j.block_out_channels)?;
        require_value(file, "act_fn", &j.act_fn, "silu")?;
        require_all(
            file,
            "down_block_types",
            &j.down_block_types,
            n,
            "DownEncoderBlock2D",
        )?;
        require_all(
            file,
            "up_block_types",
            &j.up_block_types,
            n,
            "UpDecoderBlock2D",
        )?;
        if !j.mid_block_add_attention {
            return Err(unsupported(
                file,
                "mid_block_add_attention",
                "false is not implemented",
            ));
        }
        if j.shift_factor.is_some_and(|s| s != 0.0) {
            return Err(unsupported(
                file,
                "shift_factor",
                "a non-zero shift is not implemented",
            ));
        }
        if is_set(j.latents_mean.as_ref()) || is_set(j.latents_std.as_ref()) {
            return Err(unsupported(
                file,
                "latents_mean/latents_std",
                "per-channel latent statistics are not implemented",
            ));
        }
        let groups = norm_groups(file, j.norm_num_groups, &j.block_out_channels)?;
        Ok(Self {
            in_channels: j.in_channels,
            out_channels: j.out_channels,
            candle: AutoEncoderKLConfig {
                block_out_channels: j.block_out_channels.clone(),
                layers_per_block: j.layers_per_block,
                latent_channels: j.latent_channels,
                norm_num_groups: groups,
                use_quant_conv: j.use_quant_conv,
                use_post_quant_conv: j.use_post_quant_conv,
            },
            scaling_factor: j.scaling_factor,
            force_upcast: j.force_upcast,
        })
    }

    /// The spatial factor between image and latent: `2^(blocks - 1)` (8 for SD).
    pub fn downscale_factor(&self) -> usize {
        1 << (self.candle.block_out_channels.len() - 1)
    }

    /// Latent channels.
    pub fn latent_channels(&self) -> usize {
        self.candle.latent_channels
    }
}
