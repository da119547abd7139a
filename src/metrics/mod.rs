//! Image quality metrics comparing an adaptive output with its baseline, and CLIP alignment
//! of an image with its prompt.
//!
//! * [`psnr()`] — PSNR on the 0–255 scale (the AdaptiveDiffusion paper's convention).
//! * [`ssim()`] — SSIM with the standard 11×11 Gaussian window (σ = 1.5), scikit-image's
//!   convention.
//! * [`clip`] — CLIP alignment (raw cosine, CLIPScore and `(cos + 1)/2`) with candle's CLIP.
//!
//! PSNR and SSIM are pinned against scikit-image, and the CLIP model against transformers'
//! `CLIPModel`, by `tests/metrics_reference.rs` (fixtures from
//! `tools/reference/make_metrics_reference.py`).

pub mod clip;
pub mod psnr;
pub mod ssim;

pub use clip::{ClipAlignment, ClipScorer, ClipSource};
pub use psnr::{psnr, psnr_text};
pub use ssim::ssim;
