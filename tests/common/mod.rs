//! What the integration tests share: the repository's paths and running the `adiff` binary
//! (offline, without the user's log settings).
#![allow(dead_code)] // each test file uses its own part of it

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tiny random-weight diffusers pipeline (`tests/fixtures/tiny-sd`).
pub fn tiny_sd() -> PathBuf {
    root().join("tests/fixtures/tiny-sd")
}

/// Run `adiff ARGS` with the hub offline and `ADIFF_LOG` unset.
pub fn adiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("ADIFF_LOG")
        .output()
        .expect("run adiff")
}

/// A path as an argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test paths")
}

/// The largest absolute value of an f32 tensor.
pub fn max_abs(t: &candle_core::Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// `max |a − b| / max |b|`, in f64: how far a run's latents are from a reference's.
pub fn rel_err(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    use candle_core::DType;
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let diff: f64 = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    let scale: f64 = b.abs().unwrap().max(0).unwrap().to_scalar().unwrap();
    diff / scale
}

/// The fixtures folder, `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// What a run wrote to stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
