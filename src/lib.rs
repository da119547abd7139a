//! Adaptive Diffusion: training-free adaptive inference for text-to-image diffusion.
//!
//! * [`sampler`] — model-agnostic denoising loop, schedulers, skip policies, early stop and
//!   the per-step trace.
//! * [`model`] — noise predictors (Stable Diffusion through candle-transformers) and weight
//!   resolution.
//! * [`complexity`] — prompt-complexity scorers (Ollama, heuristic) and the step budget.
//! * [`metrics`] — PSNR, SSIM and CLIP alignment.
//! * [`bench`](mod@bench) — `adiff bench` / `adiff calibrate`: prompt sets, runner, reports.
//! * [`shapes`] — the procedural world of the built-in model: renderer, captions, checker.
//! * [`train`] — training the built-in shapes model (candle autograd) and exporting it.
//! * [`cli`] — the `adiff` command line.
//! * `app` — the eframe desktop app (feature `gui`, on by default).

#[cfg(feature = "gui")]
pub mod app;
pub mod bench;
pub mod cli;
pub mod complexity;
pub mod field;
pub mod input_path;
pub mod job;
pub mod malloc_tuning;
pub mod metrics;
pub mod model;
pub mod output;
pub mod overhead;
pub mod pipeline;
pub mod proc_info;
pub mod sampler;
pub mod shapes;
pub mod train;
pub mod unet_call;
