//! The networks: the image UNet ([`unet`]), ModelScope's video UNet ([`unet3d`]),
//! AnimateDiff's motion modules ([`motion`]), the VAE decoder ([`vae`]), the CLIP text
//! encoder and tokenizer ([`text_encoder`], [`tokenizer`]), their multiply-accumulate counts
//! ([`macs`]) and a clip's two tensor layouts ([`clip_layout`]).

pub mod clip_layout;
pub mod macs;
pub mod motion;
pub mod text_encoder;
pub mod tokenizer;
pub mod unet;
pub mod unet3d;
pub mod vae;
