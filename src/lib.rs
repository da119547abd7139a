//! Adaptive Diffusion: training-free adaptive inference for text-to-image diffusion.
//!
//! * [`sampler`] — model-agnostic denoising loop, schedulers, skip policies, early stop and
//!   the per-step trace.
//! * [`model`] — noise predictors (Stable Diffusion through candle-transformers) and weight
//!   resolution.
//! * [`cli`] — the `adiff` command line.

pub mod cli;
pub mod metrics;
pub mod model;
pub mod output;
pub mod overhead;
pub mod pipeline;
pub mod sampler;
