//! Where weights come from and how they are read: model sources ([`source`]), the hub
//! cache and downloads ([`hub`]), safetensors validation and reading ([`checkpoint`]), single-file
//! (original-layout) checkpoints ([`single_file`], [`ldm_pipeline`], [`ldm_unet`],
//! [`ldm_vae`], [`ldm_text`], [`infer_config`]) and LoRA / LyCORIS merges ([`lora`],
//! [`lora_update`]).

pub mod checkpoint;
pub mod hub;
pub mod infer_config;
pub mod ldm_pipeline;
pub mod ldm_text;
pub mod ldm_unet;
pub mod ldm_vae;
pub mod lora;
pub mod lora_update;
pub mod single_file;
pub mod source;
