//! The device a pipeline runs on (the best available, or the CPU, with why a GPU build runs
//! on the CPU) and its default dtype.

use candle_core::{DType, Device};

/// The best available device: CUDA, then Metal (when built with those features), else
/// the CPU. A GPU backend that is compiled in but cannot open a device (no GPU, no driver,
/// the driver stub of a CUDA build) falls back to the CPU, and the second value says why,
/// for the caller to show.
pub fn best_device_noted() -> (Device, Option<String>) {
    let mut why = vec![];
    if candle_core::utils::cuda_is_available() {
        match Device::new_cuda(0) {
            Ok(d) => return (d, None),
            Err(e) => why.push(format!(
                "CUDA device 0 could not be opened ({})",
                one_line(&e)
            )),
        }
    }
    if candle_core::utils::metal_is_available() {
        match Device::new_metal(0) {
            Ok(d) => return (d, None),
            Err(e) => why.push(format!(
                "Metal device 0 could not be opened ({})",
                one_line(&e)
            )),
        }
    }
    let note = (!why.is_empty()).then(|| format!("{}: running on the CPU", why.join("; ")));
    (Device::Cpu, note)
}

fn one_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// The CPU when `cpu`, else [`best_device_noted`]: the device and why a GPU build runs on
/// the CPU, if it does (for the caller to show).
pub fn device(cpu: bool) -> (Device, Option<String>) {
    if cpu {
        (Device::Cpu, None)
    } else {
        best_device_noted()
    }
}

/// The UNet dtype used on a device: f32 on the CPU, f16 on accelerators.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    }
}
