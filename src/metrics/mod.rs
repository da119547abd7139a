//! Image quality metrics comparing an adaptive output with its baseline.

pub mod psnr;

pub use psnr::psnr;
